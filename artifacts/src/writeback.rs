//! Early writeback for large files written out of order: the file is divided into fixed
//! windows, and as soon as every byte of a window has been written, the kernel is asked to
//! start writing that window to disk. Disk writes then overlap with producing the rest of
//! the file, and the final `fsync` only waits for the last few windows instead of the whole
//! file. To keep dirty memory bounded on disks slower than the producer, the writer that
//! completes a window also waits for the window completed `max_in_flight` windows earlier.
//!
//! This is an optimization only: the final `fsync` (and the rename after it) is still what
//! makes the file durable, since `sync_file_range` flushes neither metadata nor the disk's
//! cache. On systems without `sync_file_range` nothing is started early.
//!
//! One catch makes errors matter: waiting on a range consumes the file's pending writeback
//! error as far as a later `fsync` on the same descriptor is concerned, so errors seen here
//! are kept and must be checked with [`Writeback::take_error`] before trusting the `fsync`.

use std::collections::VecDeque;
use std::fs::File;
use std::io;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;

/// Default window: large enough that the syscalls cost nothing, small enough that the tail
/// left for the final `fsync` is short.
pub const DEFAULT_WINDOW: u64 = 64 << 20;

/// Default number of windows whose writeback may be in flight (512 MiB at the default
/// window) before the producer waits for the oldest.
pub const DEFAULT_MAX_IN_FLIGHT: usize = 8;

/// Tracks which windows of a file are completely written and starts their writeback.
/// All methods take `&self` and may be called from many threads at once.
#[derive(Debug)]
pub struct Writeback {
    window: u64,
    len: u64,
    filled: Vec<AtomicU64>,
    in_flight: Mutex<VecDeque<usize>>,
    max_in_flight: usize,
    started: AtomicUsize,
    error: Mutex<Option<io::Error>>,
}

impl Writeback {
    /// A tracker for a file of `len` bytes, with the default window and in-flight bound.
    pub fn new(len: u64) -> Writeback {
        Writeback::with_window(len, DEFAULT_WINDOW, DEFAULT_MAX_IN_FLIGHT)
    }

    /// A tracker with an explicit window size (bytes, at least 1) and in-flight bound (at
    /// least 1).
    pub fn with_window(len: u64, window: u64, max_in_flight: usize) -> Writeback {
        let window = window.max(1);
        Writeback {
            window,
            len,
            filled: (0..len.div_ceil(window))
                .map(|_| AtomicU64::new(0))
                .collect(),
            in_flight: Mutex::new(VecDeque::new()),
            max_in_flight: max_in_flight.max(1),
            started: AtomicUsize::new(0),
            error: Mutex::new(None),
        }
    }

    /// Records that `[offset, offset + len)` of `file` has been written, and starts the
    /// writeback of every window this completes. Each byte must be recorded once: a range
    /// recorded twice would keep its window from ever completing (harmless, only slower).
    pub fn wrote(&self, file: &File, offset: u64, len: u64) {
        let end = offset.saturating_add(len).min(self.len);
        let mut at = offset;
        while at < end {
            let k = (at / self.window) as usize;
            let (start, stop) = self.window_range(k);
            let n = end.min(stop) - at;
            let filled = self.filled[k].fetch_add(n, Ordering::AcqRel) + n;
            if filled == stop - start {
                self.complete(file, k);
            }
            at += n;
        }
    }

    /// How many windows have had their writeback started.
    #[cfg(test)]
    pub fn windows_started(&self) -> usize {
        self.started.load(Ordering::Relaxed)
    }

    /// Number of windows the file is divided into.
    #[cfg(test)]
    pub fn windows(&self) -> usize {
        self.filled.len()
    }

    /// The first error a writeback request reported, if any. A caller about to `fsync`
    /// must treat it as that `fsync`'s failure (see the module docs).
    pub fn take_error(&self) -> Option<io::Error> {
        self.error.lock().ok()?.take()
    }

    fn window_range(&self, k: usize) -> (u64, u64) {
        let start = k as u64 * self.window;
        (start, (start + self.window).min(self.len))
    }

    fn complete(&self, file: &File, k: usize) {
        let (start, stop) = self.window_range(k);
        self.started.fetch_add(1, Ordering::Relaxed);
        self.record(sys::start(file, start, stop - start));
        let oldest = match self.in_flight.lock() {
            Ok(mut queue) => {
                queue.push_back(k);
                (queue.len() > self.max_in_flight)
                    .then(|| queue.pop_front())
                    .flatten()
            }
            Err(_) => None,
        };
        if let Some(j) = oldest {
            let (start, stop) = self.window_range(j);
            self.record(sys::wait(file, start, stop - start));
        }
    }

    fn record(&self, result: io::Result<()>) {
        if let Err(e) = result {
            if let Ok(mut slot) = self.error.lock() {
                slot.get_or_insert(e);
            }
        }
    }
}

#[cfg(any(target_os = "linux", target_os = "android"))]
mod sys {
    //! Range writeback through `sync_file_range(2)`.

    use std::fs::File;
    use std::io;
    use std::os::fd::AsRawFd;

    fn sync_file_range(file: &File, offset: u64, len: u64, flags: libc::c_uint) -> io::Result<()> {
        // SAFETY: a plain syscall on a descriptor that `file` keeps open; no memory is
        // passed to the kernel.
        let rc = unsafe {
            libc::sync_file_range(
                file.as_raw_fd(),
                offset as libc::off64_t,
                len as libc::off64_t,
                flags,
            )
        };
        if rc == 0 {
            return Ok(());
        }
        let err = io::Error::last_os_error();
        match err.raw_os_error() {
            // Not supported by this filesystem (or a pipe, or a special file): the final
            // fsync does all the work, as on other systems.
            Some(libc::ENOSYS) | Some(libc::EINVAL) | Some(libc::ESPIPE) => Ok(()),
            _ => Err(err),
        }
    }

    /// Starts writeback of dirty pages in the range without waiting for it.
    pub(super) fn start(file: &File, offset: u64, len: u64) -> io::Result<()> {
        sync_file_range(file, offset, len, libc::SYNC_FILE_RANGE_WRITE)
    }

    /// Waits until the range is written back (starting whatever is not yet under way).
    pub(super) fn wait(file: &File, offset: u64, len: u64) -> io::Result<()> {
        sync_file_range(
            file,
            offset,
            len,
            libc::SYNC_FILE_RANGE_WAIT_BEFORE
                | libc::SYNC_FILE_RANGE_WRITE
                | libc::SYNC_FILE_RANGE_WAIT_AFTER,
        )
    }
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
mod sys {
    //! No range writeback on this system: the final `fsync` does all of it.

    use std::fs::File;
    use std::io;

    pub(super) fn start(_file: &File, _offset: u64, _len: u64) -> io::Result<()> {
        Ok(())
    }

    pub(super) fn wait(_file: &File, _offset: u64, _len: u64) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::FileExt;

    #[test]
    fn each_window_starts_once_when_its_last_byte_is_written() {
        let dir = tempfile::tempdir().unwrap();
        let file = File::create(dir.path().join("f")).unwrap();
        let wb = Writeback::with_window(25, 10, 1);
        assert_eq!(wb.windows(), 3);
        // Out of order, straddling window boundaries.
        for (at, len) in [(5u64, 10u64), (20, 5), (0, 5)] {
            file.write_all_at(&vec![1; len as usize], at).unwrap();
            wb.wrote(&file, at, len);
        }
        // Window 0 ([0,10)) and window 2 ([20,25)) are complete; window 1 lacks [15,20).
        assert_eq!(wb.windows_started(), 2);
        file.write_all_at(&[1; 5], 15).unwrap();
        wb.wrote(&file, 15, 5);
        assert_eq!(wb.windows_started(), 3);
        assert!(wb.take_error().is_none());
    }

    #[test]
    fn concurrent_writers_complete_every_window_exactly_once() {
        let dir = tempfile::tempdir().unwrap();
        let file = File::create(dir.path().join("f")).unwrap();
        let len = 1000u64;
        let wb = Writeback::with_window(len, 64, 2);
        std::thread::scope(|s| {
            for t in 0..4u64 {
                let (file, wb) = (&file, &wb);
                s.spawn(move || {
                    // Thread t writes every 4th 7-byte piece.
                    let mut at = t * 7;
                    while at < len {
                        let n = 7.min(len - at);
                        file.write_all_at(&vec![t as u8; n as usize], at).unwrap();
                        wb.wrote(file, at, n);
                        at += 28;
                    }
                });
            }
        });
        assert_eq!(wb.windows_started(), wb.windows());
        assert!(wb.take_error().is_none());
    }
}
