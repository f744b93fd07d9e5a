//! Per-key locks that wait, and are never stale.
//!
//! A lock is an `flock(2)` on `<store>/locks/<name>.lock`. The kernel drops it when the
//! holder exits for any reason, `kill -9` included, so a lock file left behind by a dead
//! process is simply free: there is nothing stale to detect or clean up. The holder
//! writes its pid and host into the file so a waiting run can say whom it waits for.
//!
//! Locks guard *work*, not reads: a stage takes its key's lock before running and
//! checks the action cache again once it holds it, so two `tureen run` on one store run
//! each stage once and the second one picks up the first one's result.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// A held lock; released on drop.
#[derive(Debug)]
pub struct KeyLock {
    file: File,
    path: PathBuf,
}

impl KeyLock {
    /// Takes the lock at `path` without waiting; `Ok(None)` when someone holds it.
    pub fn try_acquire(path: &Path) -> std::io::Result<Option<KeyLock>> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        // SAFETY: flock on an fd we own; no memory is shared with the kernel.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc != 0 {
            let err = std::io::Error::last_os_error();
            if err.raw_os_error() == Some(libc::EWOULDBLOCK) {
                return Ok(None);
            }
            return Err(err);
        }
        file.set_len(0)?;
        file.rewind()?;
        let _ = writeln!(
            file,
            "pid {} on {}",
            std::process::id(),
            crate::record::hostname()
        );
        Ok(Some(KeyLock {
            file,
            path: path.to_path_buf(),
        }))
    }

    /// Waits for the lock at `path`, polling so that `cancel` is honoured. `waiting` is
    /// called once, with the holder's description, if the lock is not free at once.
    pub fn acquire(
        path: &Path,
        cancel: &AtomicBool,
        mut waiting: impl FnMut(&str),
    ) -> std::io::Result<Option<KeyLock>> {
        let mut told = false;
        let mut delay = Duration::from_millis(5);
        let start = Instant::now();
        loop {
            if let Some(lock) = KeyLock::try_acquire(path)? {
                return Ok(Some(lock));
            }
            if cancel.load(Ordering::Relaxed) {
                return Ok(None);
            }
            if !told && start.elapsed() > Duration::from_millis(50) {
                told = true;
                waiting(&holder(path));
            }
            std::thread::sleep(delay);
            delay = (delay * 2).min(Duration::from_millis(100));
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for KeyLock {
    fn drop(&mut self) {
        // SAFETY: unlocking our own fd. Closing it would release the lock too; being
        // explicit keeps the release at this point even if the File were leaked.
        unsafe {
            libc::flock(self.file.as_raw_fd(), libc::LOCK_UN);
        }
    }
}

/// Who holds the lock at `path`, as written by the holder.
pub fn holder(path: &Path) -> String {
    let mut s = String::new();
    match File::open(path).and_then(|mut f| f.read_to_string(&mut s)) {
        Ok(_) if !s.trim().is_empty() => s.trim().to_string(),
        _ => "another process".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_holder_waits_until_the_first_releases() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("locks/k.lock");
        let first = KeyLock::try_acquire(&p).unwrap().unwrap();
        assert!(KeyLock::try_acquire(&p).unwrap().is_none());
        drop(first);
        assert!(KeyLock::try_acquire(&p).unwrap().is_some());
    }

    #[test]
    fn cancel_stops_waiting() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("k.lock");
        let _held = KeyLock::try_acquire(&p).unwrap().unwrap();
        let cancel = AtomicBool::new(true);
        assert!(KeyLock::acquire(&p, &cancel, |_| {}).unwrap().is_none());
    }
}
