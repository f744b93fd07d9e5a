// tureen's bridge to libtorch's c10d (the communication layer under torch.distributed
// and DDP) and to autograd's backward with given output gradients, for the Rust module
// `tureen_torch::dist`. Compiled by stages/torch/build.rs against the libtorch tch links.
//
// The interface is plain C. No C++ exception crosses it: every call returns 0, or a
// nonzero `tureen_status` and a malloc'd message in *err (freed with tureen_free).
// Tensors are tch's `C_tensor`, i.e. `at::Tensor*`.

#include <torch/csrc/autograd/autograd.h>
#include <torch/csrc/distributed/c10d/FileStore.hpp>
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#include <torch/csrc/distributed/c10d/exception.h>
#ifdef TUREEN_NCCL
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

namespace {

using Millis = std::chrono::milliseconds;

// Kept in step with `ffi::Status` in ffi.rs.
enum Status : int { kOk = 0, kFailed = 1, kTimeout = 2, kNetwork = 3, kUnsupported = 4 };

int fail(char** err, int status, const char* message) {
  *err = strdup(message);
  return status;
}

// Runs f, turning any exception into a status and message.
template <typename F>
int guarded(char** err, F&& f) {
  try {
    f();
    return kOk;
  } catch (const c10::DistNetworkError& e) {
    // Covers c10d's TimeoutError and SocketError (store connect, peer gone).
    const char* m = e.what_without_backtrace();
    bool timeout = dynamic_cast<const c10d::TimeoutError*>(&e) != nullptr ||
        std::strstr(m, "imed out") != nullptr;
    return fail(err, timeout ? kTimeout : kNetwork, m);
  } catch (const c10::Error& e) {
    const char* m = e.what_without_backtrace();
    return fail(err, std::strstr(m, "imed out") ? kTimeout : kFailed, m);
  } catch (const std::exception& e) {
    const char* m = e.what();
    return fail(err, std::strstr(m, "imed out") ? kTimeout : kFailed, m);
  } catch (...) {
    return fail(err, kFailed, "unknown C++ exception");
  }
}

}  // namespace

extern "C" {

struct tureen_store {
  c10::intrusive_ptr<c10d::Store> store;
};

struct tureen_group {
  c10::intrusive_ptr<c10d::Backend> backend;
  Millis timeout;
};

void tureen_free(void* p) { std::free(p); }

int tureen_has_nccl() {
#ifdef TUREEN_NCCL
  return 1;
#else
  return 0;
#endif
}

// A TCPStore at host:port; the server (rank 0) listens there, clients connect, retrying
// until `timeout_ms`. `timeout_ms` is also the store's wait timeout.
int tureen_store_tcp(const char* host, uint16_t port, int is_server, int64_t timeout_ms,
                     tureen_store** out, char** err) {
  return guarded(err, [&] {
    c10d::TCPStoreOptions o;
    o.port = port;
    o.isServer = is_server != 0;
    o.waitWorkers = false;  // tureen counts arrivals itself, between cancel checks
    o.timeout = Millis(timeout_ms);
    auto s = c10::make_intrusive<c10d::TCPStore>(std::string(host), o);
    *out = new tureen_store{s};
  });
}

// A FileStore on a path every rank sees (a shared file system).
int tureen_store_file(const char* path, int world, int64_t timeout_ms, tureen_store** out,
                      char** err) {
  return guarded(err, [&] {
    auto s = c10::make_intrusive<c10d::FileStore>(std::string(path), world);
    s->setTimeout(Millis(timeout_ms));
    *out = new tureen_store{s};
  });
}

void tureen_store_free(tureen_store* s) { delete s; }

// How long store waits (get) block.
int tureen_store_set_timeout(tureen_store* s, int64_t timeout_ms, char** err) {
  return guarded(err, [&] { s->store->setTimeout(Millis(timeout_ms)); });
}

int tureen_store_add(tureen_store* s, const char* key, int64_t delta, int64_t* value,
                     char** err) {
  return guarded(err, [&] { *value = s->store->add(std::string(key), delta); });
}

int tureen_store_set(tureen_store* s, const char* key, const uint8_t* data, size_t len,
                     char** err) {
  return guarded(err, [&] {
    s->store->set(std::string(key), std::vector<uint8_t>(data, data + len));
  });
}

// Waits (up to the store's timeout) for `key`, then returns its value in a malloc'd buffer.
int tureen_store_get(tureen_store* s, const char* key, uint8_t** data, size_t* len,
                     char** err) {
  return guarded(err, [&] {
    std::vector<uint8_t> v = s->store->get(std::string(key));
    *len = v.size();
    *data = static_cast<uint8_t*>(std::malloc(v.size() > 0 ? v.size() : 1));
    if (*data == nullptr) throw std::bad_alloc();
    if (!v.empty()) std::memcpy(*data, v.data(), v.size());
  });
}

// A process group over `store` (keys under `prefix`): gloo (backend 0) or NCCL (1).
// `interface`, when not empty, is the network interface gloo binds (GLOO_SOCKET_IFNAME).
int tureen_group_new(tureen_store* s, const char* prefix, int backend, int rank, int world,
                     int64_t timeout_ms, const char* interface, tureen_group** out,
                     char** err) {
  if (backend == 1 && !tureen_has_nccl()) {
    return fail(err, kUnsupported,
                "this tureen-torch was built without NCCL (the CUDA header wheels were "
                "missing at build time)");
  }
  return guarded(err, [&] {
    auto store = c10::make_intrusive<c10d::PrefixStore>(std::string(prefix), s->store);
    c10::intrusive_ptr<c10d::Backend> pg;
    if (backend == 0) {
      auto o = c10d::ProcessGroupGloo::Options::create(Millis(timeout_ms));
      std::string ifname(interface);
      o->devices.push_back(ifname.empty()
                               ? c10d::ProcessGroupGloo::createDefaultDevice()
                               : c10d::ProcessGroupGloo::createDeviceForInterface(ifname));
      pg = c10::make_intrusive<c10d::ProcessGroupGloo>(store, rank, world, o);
    } else {
#ifdef TUREEN_NCCL
      auto o = c10d::ProcessGroupNCCL::Options::create();
      o->timeout = Millis(timeout_ms);
      pg = c10::make_intrusive<c10d::ProcessGroupNCCL>(store, rank, world, o);
#endif
    }
    *out = new tureen_group{pg, Millis(timeout_ms)};
  });
}

void tureen_group_free(tureen_group* g) { delete g; }

// Sums each of the `n` tensors in place across ranks. All are started before any is
// waited for, so buckets travel back to back.
int tureen_allreduce_sum(tureen_group* g, at::Tensor** tensors, int n, char** err) {
  return guarded(err, [&] {
    c10d::AllreduceOptions o;
    o.reduceOp = c10d::ReduceOp::SUM;
    o.timeout = g->timeout;
    std::vector<c10::intrusive_ptr<c10d::Work>> works;
    works.reserve(n);
    for (int i = 0; i < n; ++i) {
      std::vector<at::Tensor> one{*tensors[i]};
      works.push_back(g->backend->allreduce(one, o));
    }
    for (auto& w : works) w->wait();
  });
}

// out = concatenation of every rank's `in` along dim 0, in rank order.
int tureen_allgather(tureen_group* g, at::Tensor* out, at::Tensor* in, char** err) {
  return guarded(err, [&] {
    c10d::AllgatherOptions o;
    o.timeout = g->timeout;
    g->backend->_allgather_base(*out, *in, o)->wait();
  });
}

// out = this rank's slice (dim 0) of the sum over ranks of `in`.
int tureen_reduce_scatter_sum(tureen_group* g, at::Tensor* out, at::Tensor* in, char** err) {
  return guarded(err, [&] {
    c10d::ReduceScatterOptions o;
    o.reduceOp = c10d::ReduceOp::SUM;
    o.timeout = g->timeout;
    g->backend->_reduce_scatter_base(*out, *in, o)->wait();
  });
}

int tureen_broadcast(tureen_group* g, at::Tensor* t, int root, char** err) {
  return guarded(err, [&] {
    c10d::BroadcastOptions o;
    o.rootRank = root;
    o.timeout = g->timeout;
    std::vector<at::Tensor> one{*t};
    g->backend->broadcast(one, o)->wait();
  });
}

int tureen_barrier(tureen_group* g, char** err) {
  return guarded(err, [&] {
    c10d::BarrierOptions o;
    o.timeout = g->timeout;
    g->backend->barrier(o)->wait();
  });
}

// torch.autograd.backward(outputs, grad_tensors): accumulates into the leaves' .grad.
int tureen_backward(at::Tensor** outputs, at::Tensor** grads, int n, char** err) {
  return guarded(err, [&] {
    std::vector<at::Tensor> os, gs;
    for (int i = 0; i < n; ++i) {
      os.push_back(*outputs[i]);
      gs.push_back(*grads[i]);
    }
    torch::autograd::backward(os, gs);
  });
}

// As tureen_backward, and also returns the gradient that reached `input` (a leaf) as
// autograd delivered it, before it is accumulated into input.grad (which imposes the
// input's memory layout): what the layer below `input` receives in an uninterrupted
// backward pass, strides included, so chained calls reproduce its arithmetic exactly.
int tureen_backward_capture(at::Tensor** outputs, at::Tensor** grads, int n,
                            at::Tensor* input, at::Tensor** captured, char** err) {
  return guarded(err, [&] {
    std::vector<at::Tensor> os, gs;
    for (int i = 0; i < n; ++i) {
      os.push_back(*outputs[i]);
      gs.push_back(*grads[i]);
    }
    auto seen = std::make_shared<at::Tensor>();
    auto hook = input->register_hook([seen](const at::Tensor& g) {
      *seen = g;
      return at::Tensor();
    });
    try {
      torch::autograd::backward(os, gs);
    } catch (...) {
      input->remove_hook(hook);
      throw;
    }
    input->remove_hook(hook);
    if (!seen->defined()) throw std::runtime_error("no gradient reached the input");
    *captured = new at::Tensor(*seen);
  });
}

}  // extern "C"
