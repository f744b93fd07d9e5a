//! [`ProcessGroup`]: the ranks of one stage joined through a store, and the collectives
//! over them, each bounded by the group's timeout. A failure names the operation, this
//! rank and the peer that failed (found from the ranks' heartbeats).

use std::ffi::{c_int, CString};
use std::fmt;
use std::time::{Duration, Instant};

use tch::{Kind, Tensor};
use tureen_engine::kind::Rank;

use super::ffi;
use super::rendezvous::{Rendezvous, StoreAddress};
use super::store::{call, liveness, millis, Heartbeat, Liveness, ShimError, Store};

/// Which c10d process group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// `ProcessGroupGloo`: CPU tensors.
    Gloo,
    /// `ProcessGroupNCCL`: CUDA tensors.
    Nccl,
}

impl Backend {
    /// `auto|gloo|nccl`, given whether the model runs on CUDA.
    pub fn choose(spec: &str, cuda: bool) -> Result<Backend, String> {
        match (spec, cuda) {
            ("auto", true) | ("nccl", _) => Ok(Backend::Nccl),
            ("auto", false) | ("gloo", _) => Ok(Backend::Gloo),
            (other, _) => Err(format!(
                "backend: expected auto, gloo or nccl, got `{other}`"
            )),
        }
    }

    /// Whether this build has the NCCL process group (built with the CUDA headers).
    pub fn nccl_built() -> bool {
        // SAFETY: a constant query.
        unsafe { ffi::tureen_has_nccl() != 0 }
    }
}

/// A collective or rendezvous step, for error messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// Meeting the other ranks at the store.
    Rendezvous,
    /// [`ProcessGroup::all_reduce_sum`].
    AllReduce,
    /// [`ProcessGroup::all_gather`] (and [`ProcessGroup::all_gather_i64`]).
    AllGather,
    /// [`ProcessGroup::reduce_scatter_sum`].
    ReduceScatter,
    /// [`ProcessGroup::broadcast`].
    Broadcast,
    /// [`ProcessGroup::barrier`].
    Barrier,
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Op::Rendezvous => "rendezvous",
            Op::AllReduce => "all-reduce",
            Op::AllGather => "all-gather",
            Op::ReduceScatter => "reduce-scatter",
            Op::Broadcast => "broadcast",
            Op::Barrier => "barrier",
        })
    }
}

/// Which other rank a failure is down to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Peer {
    /// These ranks stopped (their heartbeat did not move).
    Stopped(Vec<u32>),
    /// Every other rank is alive: one of them did not take part in time.
    AllAlive,
    /// Rank 0, which serves the rendezvous store, is gone or frozen.
    StoreHost,
    /// Not applicable (e.g. a local error).
    Unknown,
}

impl fmt::Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Peer::Stopped(r) if r.len() == 1 => {
                write!(f, "peer rank {} has stopped (its heartbeat ended)", r[0])
            }
            Peer::Stopped(r) => {
                let list: Vec<String> = r.iter().map(u32::to_string).collect();
                write!(f, "peer ranks {} have stopped (their heartbeats ended)", list.join(", "))
            }
            Peer::AllAlive => f.write_str(
                "every peer is alive (heartbeats move), so one stalled and did not take part in time",
            ),
            Peer::StoreHost => f.write_str(
                "peer rank 0, which serves the rendezvous store, has stopped or does not answer",
            ),
            Peer::Unknown => f.write_str("peer unknown"),
        }
    }
}

/// Errors of the communication layer.
#[derive(Debug, thiserror::Error)]
pub enum DistError {
    /// A collective failed or timed out in c10d.
    #[error("{op} failed on {rank}{}: {peer}: {message}", if *.timed_out { " (timed out)" } else { "" })]
    Failed {
        /// The collective.
        op: Op,
        /// This rank.
        rank: Rank,
        /// Which other rank the failure is down to, from the heartbeats.
        peer: Peer,
        /// Whether it ran into the group's timeout (rather than failing outright).
        timed_out: bool,
        /// c10d's message.
        message: String,
    },
    /// The ranks could not meet: the store is unreachable, a rank did not arrive in
    /// time, or the ranks disagree on the stage they run.
    #[error("rendezvous of {rank} at {store}: {message}")]
    Rendezvous {
        /// This rank.
        rank: Rank,
        /// The store's address (`tcp://HOST:PORT` or `file:///PATH`).
        store: String,
        /// What went wrong.
        message: String,
    },
    /// `give_up` said to stop while this rank waited for the others.
    #[error("{rank}: cancelled while waiting for the other ranks")]
    Cancelled {
        /// This rank.
        rank: Rank,
    },
    /// A call the group cannot make (a non-contiguous tensor, shapes that do not
    /// divide, a backend this build lacks); a bug in the caller, not in a peer.
    #[error("{0}")]
    Usage(String),
}

/// How a group is set up.
#[derive(Debug, Clone)]
pub struct GroupOptions {
    /// The c10d process group to build.
    pub backend: Backend,
    /// Where this rank's tensors live (its GPU for NCCL).
    pub device: tch::Device,
    /// Bound on every collective (and the barrier while rank 0 writes a checkpoint).
    pub timeout: Duration,
    /// Bound on the rendezvous: reaching the store and every rank arriving.
    pub rendezvous_timeout: Duration,
    /// What the ranks must agree on to train together (the stage's cache key): a rank
    /// started with another job file is refused instead of computing garbage.
    pub identity: String,
    /// The network interface gloo binds (`GLOO_SOCKET_IFNAME`); `None`: the hostname's.
    pub interface: Option<String>,
}

/// The ranks of one stage, joined. Collectives must be called in the same order on
/// every rank, from one thread.
pub struct ProcessGroup {
    raw: *mut ffi::Group,
    store: Store,
    rank: Rank,
    backend: Backend,
    device: tch::Device,
    timeout: Duration,
    _heartbeat: Heartbeat,
}

// SAFETY: the group is used from one thread at a time (it is not Sync); c10d's process
// groups may be moved between threads.
unsafe impl Send for ProcessGroup {}

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        // SAFETY: created by the shim, freed once.
        unsafe { ffi::tureen_group_free(self.raw) }
    }
}

/// How often a waiting rank looks at the store and at `give_up`.
const POLL: Duration = Duration::from_millis(50);
/// One connection attempt of a rank other than 0, between looks at `give_up`.
const CONNECT_TRY: Duration = Duration::from_secs(2);

impl ProcessGroup {
    /// Meets the other ranks at `rv` and builds the process group. Bounded by
    /// `opts.rendezvous_timeout`; `give_up` (checked between attempts) cancels.
    pub fn join(
        rv: &Rendezvous,
        opts: &GroupOptions,
        give_up: &dyn Fn() -> bool,
    ) -> Result<ProcessGroup, DistError> {
        let rank = rv.rank;
        let fail = |message: String| DistError::Rendezvous {
            rank,
            store: rv.store.to_string(),
            message,
        };
        if opts.backend == Backend::Nccl && !Backend::nccl_built() {
            return Err(DistError::Usage(
                "backend nccl: this tureen-torch was built without NCCL (build it after \
                 scripts/setup-venv.sh installed the CUDA header wheels)"
                    .into(),
            ));
        }
        let deadline = Instant::now() + opts.rendezvous_timeout;
        let store = connect(rv, deadline, give_up).map_err(|e| match e {
            Waited::GaveUp => DistError::Cancelled { rank },
            Waited::Failed(m) => fail(m),
        })?;
        store
            .set_timeout(opts.rendezvous_timeout)
            .map_err(|e| fail(e.message))?;
        arrive(&store, rank, &opts.identity, deadline, give_up).map_err(|e| match e {
            Waited::GaveUp => DistError::Cancelled { rank },
            Waited::Failed(m) => fail(m),
        })?;
        let raw = new_group(&store, rank, opts).map_err(|e| fail(e.message))?;
        let heartbeat = Heartbeat::start(&store, rank.rank);
        Ok(ProcessGroup {
            raw,
            store,
            rank,
            backend: opts.backend,
            device: opts.device,
            timeout: opts.timeout,
            _heartbeat: heartbeat,
        })
    }

    /// This process's place in the group.
    pub fn rank(&self) -> Rank {
        self.rank
    }

    /// The c10d backend the group runs on.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Where this rank's tensors must live for the collectives.
    pub fn device(&self) -> tch::Device {
        self.device
    }

    /// The bound on each collective ([`GroupOptions::timeout`]).
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// A shim failure of `op`, with the peer found from the heartbeats.
    fn failed(&self, op: Op, e: ShimError) -> DistError {
        let peer = match liveness(&self.store, self.rank.world, self.rank.rank) {
            Liveness::StoreLost if self.rank.rank != 0 => Peer::StoreHost,
            Liveness::StoreLost => Peer::Unknown,
            Liveness::Stopped(r) if r.is_empty() => Peer::AllAlive,
            Liveness::Stopped(r) => Peer::Stopped(r),
        };
        DistError::Failed {
            op,
            rank: self.rank,
            peer,
            timed_out: e.timed_out(),
            message: e.message,
        }
    }

    fn usage(&self, op: Op, what: &str) -> DistError {
        DistError::Usage(format!("{op} on {}: {what}", self.rank))
    }

    /// Sums each tensor in place across ranks (all started before any is waited for).
    /// Tensors must be contiguous.
    pub fn all_reduce_sum(&self, tensors: &[&Tensor]) -> Result<(), DistError> {
        if tensors.iter().any(|t| !t.is_contiguous()) {
            return Err(self.usage(Op::AllReduce, "tensors must be contiguous"));
        }
        let ptrs: Vec<_> = tensors.iter().map(|t| ffi::raw(t)).collect();
        // SAFETY: live group; the tensors outlive the call.
        call(|err| unsafe {
            ffi::tureen_allreduce_sum(self.raw, ptrs.as_ptr(), ptrs.len() as c_int, err)
        })
        .map_err(|e| self.failed(Op::AllReduce, e))
    }

    /// Every rank's `input` concatenated along dim 0 in rank order (same shape on
    /// every rank).
    pub fn all_gather(&self, input: &Tensor) -> Result<Tensor, DistError> {
        let input = input.contiguous();
        let mut size = input.size();
        if size.is_empty() {
            return Err(self.usage(Op::AllGather, "a scalar cannot be gathered along dim 0"));
        }
        size[0] *= self.rank.world as i64;
        let out = Tensor::empty(size.as_slice(), (input.kind(), input.device()));
        // SAFETY: live group; both tensors outlive the call.
        call(|err| unsafe {
            ffi::tureen_allgather(self.raw, ffi::raw(&out), ffi::raw(&input), err)
        })
        .map_err(|e| self.failed(Op::AllGather, e))?;
        Ok(out)
    }

    /// This rank's slice (dim 0, rank order) of the sum over ranks of `input`, whose
    /// first dimension divides by the world size.
    pub fn reduce_scatter_sum(&self, input: &Tensor) -> Result<Tensor, DistError> {
        let input = input.contiguous();
        let mut size = input.size();
        let w = self.rank.world as i64;
        if size.is_empty() || size[0] % w != 0 {
            return Err(self.usage(
                Op::ReduceScatter,
                &format!("dim 0 of {size:?} does not divide by the world size {w}"),
            ));
        }
        size[0] /= w;
        let out = Tensor::empty(size.as_slice(), (input.kind(), input.device()));
        // SAFETY: live group; both tensors outlive the call.
        call(|err| unsafe {
            ffi::tureen_reduce_scatter_sum(self.raw, ffi::raw(&out), ffi::raw(&input), err)
        })
        .map_err(|e| self.failed(Op::ReduceScatter, e))?;
        Ok(out)
    }

    /// Overwrites `tensor` (contiguous) on every rank with rank `root`'s.
    pub fn broadcast(&self, tensor: &Tensor, root: u32) -> Result<(), DistError> {
        if !tensor.is_contiguous() || root >= self.rank.world {
            return Err(self.usage(
                Op::Broadcast,
                "a contiguous tensor and a root below the world size",
            ));
        }
        // SAFETY: live group; the tensor outlives the call.
        call(|err| unsafe { ffi::tureen_broadcast(self.raw, ffi::raw(tensor), root as c_int, err) })
            .map_err(|e| self.failed(Op::Broadcast, e))
    }

    /// Waits until every rank got here.
    pub fn barrier(&self) -> Result<(), DistError> {
        // SAFETY: live group.
        call(|err| unsafe { ffi::tureen_barrier(self.raw, err) })
            .map_err(|e| self.failed(Op::Barrier, e))
    }

    /// Every rank's `values` (same length), rank after rank: for agreeing on small
    /// facts such as where a run resumes.
    pub fn all_gather_i64(&self, values: &[i64]) -> Result<Vec<i64>, DistError> {
        let t = Tensor::from_slice(values)
            .to_kind(Kind::Int64)
            .to_device(self.device);
        let all = self.all_gather(&t)?.to_device(tch::Device::Cpu);
        Vec::<i64>::try_from(&all.view(-1)).map_err(|e| self.usage(Op::AllGather, &e.to_string()))
    }
}

enum Waited {
    GaveUp,
    Failed(String),
}

/// Rank 0 serves the store; the others connect, retrying until the deadline.
fn connect(
    rv: &Rendezvous,
    deadline: Instant,
    give_up: &dyn Fn() -> bool,
) -> Result<Store, Waited> {
    let rank = rv.rank;
    match &rv.store {
        StoreAddress::File(path) => {
            let left = deadline.saturating_duration_since(Instant::now());
            Store::file(path, rank.world, left).map_err(|e| Waited::Failed(e.message))
        }
        StoreAddress::Tcp { host, port } if rank.rank == 0 => {
            let left = deadline.saturating_duration_since(Instant::now());
            Store::tcp(host, *port, true, left).map_err(|e| {
                Waited::Failed(format!(
                    "rank 0 cannot serve the store on port {port}: {}",
                    e.message
                ))
            })
        }
        StoreAddress::Tcp { host, port } => loop {
            if give_up() {
                return Err(Waited::GaveUp);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            // Until rank 0 listens, probe with a plain connection: c10d's client logs
            // every failed attempt with a C++ backtrace.
            let unreachable = |why: &str| {
                Waited::Failed(format!(
                    "cannot reach rank 0's store at {host}:{port} within the rendezvous \
                     timeout (is rank 0 running, and are MASTER_ADDR/MASTER_PORT right?): {why}"
                ))
            };
            if !listening(host, *port, left.min(CONNECT_TRY)) {
                if Instant::now() >= deadline {
                    return Err(unreachable("nothing accepts connections there"));
                }
                std::thread::sleep(POLL);
                continue;
            }
            match Store::tcp(host, *port, false, left.min(CONNECT_TRY)) {
                Ok(store) => return Ok(store),
                Err(e) if Instant::now() >= deadline => return Err(unreachable(&e.message)),
                Err(_) => {}
            }
        },
    }
}

/// Whether something accepts connections at `host:port` (tried for up to `within`).
fn listening(host: &str, port: u16, within: Duration) -> bool {
    use std::net::{TcpStream, ToSocketAddrs};
    let Ok(addrs) = (host, port).to_socket_addrs() else {
        return false;
    };
    let within = within.max(Duration::from_millis(10));
    addrs
        .into_iter()
        .any(|a| TcpStream::connect_timeout(&a, within).is_ok())
}

/// Announces this rank and waits until all have arrived; checks they run the same job.
fn arrive(
    store: &Store,
    rank: Rank,
    identity: &str,
    deadline: Instant,
    give_up: &dyn Fn() -> bool,
) -> Result<(), Waited> {
    let failed = |e: ShimError| Waited::Failed(e.message);
    store
        .set(
            &format!("tureen/identity/{}", rank.rank),
            identity.as_bytes(),
        )
        .map_err(failed)?;
    store
        .add(&format!("tureen/arrived/{}", rank.rank), 1)
        .map_err(failed)?;
    let mut arrived = store.add("tureen/arrived", 1).map_err(failed)?;
    while arrived < rank.world as i64 {
        if give_up() {
            return Err(Waited::GaveUp);
        }
        if Instant::now() >= deadline {
            let missing: Vec<String> = (0..rank.world)
                .filter(|r| store.add(&format!("tureen/arrived/{r}"), 0).unwrap_or(0) == 0)
                .map(|r| r.to_string())
                .collect();
            return Err(Waited::Failed(format!(
                "{arrived} of {} ranks arrived within the rendezvous timeout; missing: rank {}",
                rank.world,
                missing.join(", ")
            )));
        }
        std::thread::sleep(POLL);
        arrived = store.add("tureen/arrived", 0).map_err(failed)?;
    }
    // Rank 0 compares everyone's identity with its own, the others theirs with rank 0's.
    let others: Vec<u32> = match rank.rank {
        0 => (1..rank.world).collect(),
        _ => vec![0],
    };
    let mut mismatch = None;
    for other in others {
        let theirs = store
            .get(&format!("tureen/identity/{other}"))
            .map_err(failed)?;
        if theirs != identity.as_bytes() {
            mismatch = Some(format!(
                "{rank} runs `{identity}` but rank {other} runs `{}`: the ranks were started \
                 with different jobs",
                String::from_utf8_lossy(&theirs)
            ));
            break;
        }
    }
    // Rank 0 keeps serving the store until every rank has read its identity, so that a
    // refusal reaches them as a refusal, not as a lost connection.
    if rank.rank == 0 {
        while store.add("tureen/checked", 0).map_err(failed)? < rank.world as i64 - 1
            && Instant::now() < deadline
            && !give_up()
        {
            std::thread::sleep(POLL);
        }
    } else {
        store.add("tureen/checked", 1).map_err(failed)?;
    }
    match mismatch {
        Some(m) => Err(Waited::Failed(m)),
        None => Ok(()),
    }
}

fn new_group(store: &Store, rank: Rank, opts: &GroupOptions) -> Result<*mut ffi::Group, ShimError> {
    let prefix = CString::new("tureen/pg").expect("no NUL");
    let interface =
        CString::new(opts.interface.clone().unwrap_or_default()).map_err(|_| ShimError {
            status: ffi::UNSUPPORTED,
            message: "GLOO_SOCKET_IFNAME contains a NUL byte".into(),
        })?;
    let backend = match opts.backend {
        Backend::Gloo => 0,
        Backend::Nccl => 1,
    };
    let mut out = std::ptr::null_mut();
    // SAFETY: live store, valid C strings and out-pointer.
    call(|err| unsafe {
        ffi::tureen_group_new(
            store.raw(),
            prefix.as_ptr(),
            backend,
            rank.rank as c_int,
            rank.world as c_int,
            millis(opts.timeout),
            interface.as_ptr(),
            &mut out,
            err,
        )
    })?;
    Ok(out)
}
