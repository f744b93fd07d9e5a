//! c10d's key-value stores, where ranks meet: a `TCPStore` served by rank 0, or a
//! `FileStore` on a shared path. Also each rank's heartbeat counter in it, which tells
//! after a failed collective which peer stopped.

use std::ffi::{c_char, c_int, CString};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use super::ffi;

/// A failed shim call: its status code and libtorch's message.
#[derive(Debug, Clone)]
pub(crate) struct ShimError {
    pub status: c_int,
    pub message: String,
}

impl ShimError {
    pub fn timed_out(&self) -> bool {
        self.status == ffi::TIMEOUT
    }
}

/// Calls `f` with an error slot and turns a nonzero status into a [`ShimError`].
pub(crate) fn call(f: impl FnOnce(*mut *mut c_char) -> c_int) -> Result<(), ShimError> {
    let mut err: *mut c_char = std::ptr::null_mut();
    let status = f(&mut err);
    if status == ffi::OK {
        return Ok(());
    }
    // SAFETY: on failure the shim stored a message it allocated (or left null).
    let message = unsafe { ffi::take_error(err) };
    Err(ShimError { status, message })
}

fn c_string(s: &str) -> Result<CString, ShimError> {
    CString::new(s).map_err(|_| ShimError {
        status: ffi::UNSUPPORTED,
        message: format!("{s:?} contains a NUL byte"),
    })
}

struct Raw(*mut ffi::Store);

// SAFETY: c10d's TCPStore serialises its client operations with a mutex and FileStore
// locks its file; the pointer is freed once, when the last `Arc` drops.
unsafe impl Send for Raw {}
unsafe impl Sync for Raw {}

impl Drop for Raw {
    fn drop(&mut self) {
        // SAFETY: created by the shim, freed only here.
        unsafe { ffi::tureen_store_free(self.0) }
    }
}

/// A handle on a store; clones share it (the heartbeat thread holds one).
#[derive(Clone)]
pub struct Store {
    raw: Arc<Raw>,
}

impl Store {
    /// Serves (`server`) or connects to a TCPStore at `host:port`; a client retries
    /// until `timeout`.
    pub(crate) fn tcp(
        host: &str,
        port: u16,
        server: bool,
        timeout: Duration,
    ) -> Result<Store, ShimError> {
        let host = c_string(host)?;
        let mut out = std::ptr::null_mut();
        // SAFETY: valid C string and out-pointer for the duration of the call.
        call(|err| unsafe {
            ffi::tureen_store_tcp(
                host.as_ptr(),
                port,
                server as c_int,
                millis(timeout),
                &mut out,
                err,
            )
        })?;
        Ok(Store {
            raw: Arc::new(Raw(out)),
        })
    }

    /// A FileStore at `path` shared by `world` ranks.
    pub(crate) fn file(path: &Path, world: u32, timeout: Duration) -> Result<Store, ShimError> {
        let path = c_string(&path.to_string_lossy())?;
        let mut out = std::ptr::null_mut();
        // SAFETY: as in `tcp`.
        call(|err| unsafe {
            ffi::tureen_store_file(
                path.as_ptr(),
                world as c_int,
                millis(timeout),
                &mut out,
                err,
            )
        })?;
        Ok(Store {
            raw: Arc::new(Raw(out)),
        })
    }

    pub(crate) fn raw(&self) -> *mut ffi::Store {
        self.raw.0
    }

    pub(crate) fn set_timeout(&self, timeout: Duration) -> Result<(), ShimError> {
        // SAFETY: live store.
        call(|err| unsafe { ffi::tureen_store_set_timeout(self.raw(), millis(timeout), err) })
    }

    /// Adds `delta` to the counter `key` (0 reads it) and returns the new value.
    pub(crate) fn add(&self, key: &str, delta: i64) -> Result<i64, ShimError> {
        let key = c_string(key)?;
        let mut value = 0i64;
        // SAFETY: live store, valid key and out-pointer.
        call(|err| unsafe {
            ffi::tureen_store_add(self.raw(), key.as_ptr(), delta, &mut value, err)
        })?;
        Ok(value)
    }

    pub(crate) fn set(&self, key: &str, value: &[u8]) -> Result<(), ShimError> {
        let key = c_string(key)?;
        // SAFETY: live store; `value` outlives the call.
        call(|err| unsafe {
            ffi::tureen_store_set(self.raw(), key.as_ptr(), value.as_ptr(), value.len(), err)
        })
    }

    /// The value of `key`, waiting for it up to the store's timeout.
    pub(crate) fn get(&self, key: &str) -> Result<Vec<u8>, ShimError> {
        let key = c_string(key)?;
        let mut data: *mut u8 = std::ptr::null_mut();
        let mut len = 0usize;
        // SAFETY: live store, valid out-pointers.
        call(|err| unsafe {
            ffi::tureen_store_get(self.raw(), key.as_ptr(), &mut data, &mut len, err)
        })?;
        // SAFETY: on success the shim returned a malloc'd buffer of `len` bytes.
        let value = unsafe { std::slice::from_raw_parts(data, len).to_vec() };
        unsafe { ffi::tureen_free(data.cast()) };
        Ok(value)
    }
}

pub(crate) fn millis(d: Duration) -> i64 {
    d.as_millis().min(i64::MAX as u128) as i64
}

/// How often each rank bumps its heartbeat counter.
pub const HEARTBEAT: Duration = Duration::from_secs(1);

fn heartbeat_key(rank: u32) -> String {
    format!("tureen/heartbeat/{rank}")
}

/// A thread bumping this rank's counter every [`HEARTBEAT`] until dropped.
pub struct Heartbeat {
    stop: Arc<AtomicBool>,
}

impl Heartbeat {
    pub fn start(store: &Store, rank: u32) -> Heartbeat {
        let stop = Arc::new(AtomicBool::new(false));
        let (store, flag) = (store.clone(), stop.clone());
        let spawned = std::thread::Builder::new()
            .name("tureen-dist-heartbeat".into())
            .spawn(move || {
                while !flag.load(Ordering::Relaxed) {
                    // A store that went away (rank 0 died) ends the heartbeat; the next
                    // collective reports it.
                    if store.add(&heartbeat_key(rank), 1).is_err() {
                        return;
                    }
                    std::thread::sleep(HEARTBEAT);
                }
            });
        if spawned.is_err() {
            stop.store(true, Ordering::Relaxed);
        }
        Heartbeat { stop }
    }
}

impl Drop for Heartbeat {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// What the heartbeats say after a failure, seen from rank `me`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Liveness {
    /// Ranks whose counter did not move over a few heartbeats (empty: all alive).
    Stopped(Vec<u32>),
    /// The store cannot be read: rank 0, which serves it, is gone or frozen.
    StoreLost,
}

/// Reads every rank's heartbeat twice, a few periods apart, in a thread bounded by a
/// deadline (a frozen store server must not freeze the diagnosis too).
pub fn liveness(store: &Store, world: u32, me: u32) -> Liveness {
    let store = store.clone();
    let (tx, rx) = mpsc::channel();
    let spawned = std::thread::Builder::new()
        .name("tureen-dist-liveness".into())
        .spawn(move || {
            let read = |store: &Store| -> Result<Vec<i64>, ShimError> {
                (0..world)
                    .map(|r| store.add(&heartbeat_key(r), 0))
                    .collect()
            };
            let first = read(&store);
            std::thread::sleep(HEARTBEAT * 5 / 2);
            let _ = tx.send(first.and_then(|a| Ok((a, read(&store)?))));
        });
    if spawned.is_err() {
        return Liveness::StoreLost;
    }
    match rx.recv_timeout(HEARTBEAT * 6) {
        Ok(Ok((before, after))) => Liveness::Stopped(
            (0..world)
                .filter(|&r| r != me && before[r as usize] == after[r as usize])
                .collect(),
        ),
        _ => Liveness::StoreLost,
    }
}
