//! The C interface of `shim.cpp`. Every function returns a [`Status`] code; on failure
//! it stores a `malloc`'d message in `err`, which [`take_error`] frees.

use std::ffi::{c_char, c_int, CStr};

use tch::Tensor;
use torch_sys::C_tensor;

#[repr(C)]
pub struct Store {
    _private: [u8; 0],
}

#[repr(C)]
pub struct Group {
    _private: [u8; 0],
}

/// `Status` in shim.cpp.
pub const OK: c_int = 0;
pub const TIMEOUT: c_int = 2;
pub const UNSUPPORTED: c_int = 4;

extern "C" {
    pub fn tureen_free(p: *mut std::ffi::c_void);
    pub fn tureen_has_nccl() -> c_int;
    pub fn tureen_store_tcp(
        host: *const c_char,
        port: u16,
        is_server: c_int,
        timeout_ms: i64,
        out: *mut *mut Store,
        err: *mut *mut c_char,
    ) -> c_int;
    pub fn tureen_store_file(
        path: *const c_char,
        world: c_int,
        timeout_ms: i64,
        out: *mut *mut Store,
        err: *mut *mut c_char,
    ) -> c_int;
    pub fn tureen_store_free(s: *mut Store);
    pub fn tureen_store_set_timeout(s: *mut Store, timeout_ms: i64, err: *mut *mut c_char)
        -> c_int;
    pub fn tureen_store_add(
        s: *mut Store,
        key: *const c_char,
        delta: i64,
        value: *mut i64,
        err: *mut *mut c_char,
    ) -> c_int;
    pub fn tureen_store_set(
        s: *mut Store,
        key: *const c_char,
        data: *const u8,
        len: usize,
        err: *mut *mut c_char,
    ) -> c_int;
    pub fn tureen_store_get(
        s: *mut Store,
        key: *const c_char,
        data: *mut *mut u8,
        len: *mut usize,
        err: *mut *mut c_char,
    ) -> c_int;
    #[allow(clippy::too_many_arguments)]
    pub fn tureen_group_new(
        s: *mut Store,
        prefix: *const c_char,
        backend: c_int,
        rank: c_int,
        world: c_int,
        timeout_ms: i64,
        interface: *const c_char,
        out: *mut *mut Group,
        err: *mut *mut c_char,
    ) -> c_int;
    pub fn tureen_group_free(g: *mut Group);
    pub fn tureen_allreduce_sum(
        g: *mut Group,
        tensors: *const *mut C_tensor,
        n: c_int,
        err: *mut *mut c_char,
    ) -> c_int;
    pub fn tureen_allgather(
        g: *mut Group,
        out: *mut C_tensor,
        input: *mut C_tensor,
        err: *mut *mut c_char,
    ) -> c_int;
    pub fn tureen_reduce_scatter_sum(
        g: *mut Group,
        out: *mut C_tensor,
        input: *mut C_tensor,
        err: *mut *mut c_char,
    ) -> c_int;
    pub fn tureen_broadcast(
        g: *mut Group,
        t: *mut C_tensor,
        root: c_int,
        err: *mut *mut c_char,
    ) -> c_int;
    pub fn tureen_barrier(g: *mut Group, err: *mut *mut c_char) -> c_int;
    pub fn tureen_backward(
        outputs: *const *mut C_tensor,
        grads: *const *mut C_tensor,
        n: c_int,
        err: *mut *mut c_char,
    ) -> c_int;
    pub fn tureen_backward_capture(
        outputs: *const *mut C_tensor,
        grads: *const *mut C_tensor,
        n: c_int,
        input: *mut C_tensor,
        captured: *mut *mut C_tensor,
        err: *mut *mut c_char,
    ) -> c_int;
}

/// Takes and frees the message a failed call left in `err`.
///
/// # Safety
/// `err` must be null or a string the shim allocated and nothing else frees.
pub unsafe fn take_error(err: *mut c_char) -> String {
    if err.is_null() {
        return "no message".into();
    }
    let message = CStr::from_ptr(err).to_string_lossy().into_owned();
    tureen_free(err.cast());
    message
}

/// The shim's view of a tensor. tch's `Tensor` owns a `C_tensor` (`at::Tensor*`); the
/// shim reads through it for the duration of a call and never frees it.
pub fn raw(t: &Tensor) -> *mut C_tensor {
    t.as_ptr() as *mut C_tensor
}
