//! Advisory file locks under `<store>/locks/`, the one lock implementation of tureen.
//!
//! Three users share it: the store-wide lock (every run holds it shared, so `gc`, which
//! needs it exclusively, never collects objects a run has not referenced yet), the pins
//! lock, and the engine's per-key work locks, which make a second `tureen run` wait for a
//! stage another run is executing instead of running it twice.
//!
//! The locks are `flock(2)` locks taken through std's [`File::lock`] family. The kernel
//! drops them when the holder exits for any reason, `kill -9` included, so a lock file left
//! behind by a dead process is simply free: there is nothing stale to detect. A holder may
//! write a note (its pid and host) into the file so that a waiting process can say whom it
//! waits for.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{self, Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// A held lock on a file; released when dropped (or when the process dies).
#[derive(Debug)]
pub struct FileLock {
    file: File,
    path: PathBuf,
}

impl FileLock {
    /// Opens (creating it and its directory if needed) the lock file at `path`.
    fn open(path: &Path) -> io::Result<File> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
    }

    /// Waits for the lock at `path` in shared mode (many holders at once).
    pub fn shared(path: &Path) -> io::Result<FileLock> {
        let file = FileLock::open(path)?;
        file.lock_shared()?;
        Ok(FileLock {
            file,
            path: path.to_path_buf(),
        })
    }

    /// Waits for the lock at `path` in exclusive mode.
    pub fn exclusive(path: &Path) -> io::Result<FileLock> {
        let file = FileLock::open(path)?;
        file.lock()?;
        Ok(FileLock {
            file,
            path: path.to_path_buf(),
        })
    }

    /// Takes the lock at `path` exclusively without waiting; `Ok(None)` when another
    /// holder has it.
    pub fn try_exclusive(path: &Path) -> io::Result<Option<FileLock>> {
        let file = FileLock::open(path)?;
        match file.try_lock() {
            Ok(()) => Ok(Some(FileLock {
                file,
                path: path.to_path_buf(),
            })),
            Err(TryLockError::WouldBlock) => Ok(None),
            Err(TryLockError::Error(e)) => Err(e),
        }
    }

    /// Waits for the lock at `path` exclusively, polling so that `cancel` is honoured
    /// (`Ok(None)` once it is set). `waiting` is called once, with the holder's note, if
    /// the lock is not free within 50 ms. The lock file then holds `note`.
    pub fn exclusive_waiting(
        path: &Path,
        note: &str,
        cancel: &AtomicBool,
        mut waiting: impl FnMut(&str),
    ) -> io::Result<Option<FileLock>> {
        let mut told = false;
        let mut delay = Duration::from_millis(5);
        let start = Instant::now();
        loop {
            if let Some(mut lock) = FileLock::try_exclusive(path)? {
                lock.write_note(note)?;
                return Ok(Some(lock));
            }
            if cancel.load(Ordering::Relaxed) {
                return Ok(None);
            }
            if !told && start.elapsed() > Duration::from_millis(50) {
                told = true;
                waiting(&holder_note(path));
            }
            std::thread::sleep(delay);
            delay = (delay * 2).min(Duration::from_millis(100));
        }
    }

    /// Replaces the lock file's content with `note` (who holds it).
    fn write_note(&mut self, note: &str) -> io::Result<()> {
        self.file.set_len(0)?;
        self.file.rewind()?;
        writeln!(self.file, "{note}")
    }

    /// Tries to turn this lock into an exclusive one without waiting: `Ok(false)` when
    /// another process holds it (in any mode).
    pub fn try_upgrade(&self) -> io::Result<bool> {
        match self.file.try_lock() {
            Ok(()) => Ok(true),
            Err(TryLockError::WouldBlock) => Ok(false),
            Err(TryLockError::Error(e)) => Err(e),
        }
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Who holds the lock at `path`, as its holder wrote it ("another process" when it wrote
/// nothing).
pub fn holder_note(path: &Path) -> String {
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
    fn a_second_exclusive_holder_waits_until_the_first_releases() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("locks/k.lock");
        let first = FileLock::try_exclusive(&p).unwrap().unwrap();
        assert!(FileLock::try_exclusive(&p).unwrap().is_none());
        drop(first);
        assert!(FileLock::try_exclusive(&p).unwrap().is_some());
    }

    #[test]
    fn shared_holders_keep_an_exclusive_one_out() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("store.lock");
        let a = FileLock::shared(&p).unwrap();
        let b = FileLock::shared(&p).unwrap();
        assert!(FileLock::try_exclusive(&p).unwrap().is_none());
        assert!(
            !b.try_upgrade().unwrap(),
            "another shared holder is still there"
        );
        drop(a);
        assert!(b.try_upgrade().unwrap(), "the sole holder can upgrade");
        drop(b);
        assert!(FileLock::try_exclusive(&p).unwrap().is_some());
    }

    #[test]
    fn cancel_stops_waiting_and_the_holder_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("k.lock");
        let cancel = AtomicBool::new(false);
        let _held = FileLock::exclusive_waiting(&p, "pid 7 on here", &cancel, |_| {})
            .unwrap()
            .unwrap();
        assert_eq!(holder_note(&p), "pid 7 on here");
        cancel.store(true, Ordering::Relaxed);
        let waited = FileLock::exclusive_waiting(&p, "me", &cancel, |_| {});
        assert!(waited.unwrap().is_none(), "a cancelled wait gives up");
    }
}
