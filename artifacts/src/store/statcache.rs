//! The stat cache: (path, size, mtime, ctime, inode, device) -> digest, so that hashing a
//! file nobody touched since it was last hashed costs one `stat`.
//!
//! On disk it is a snapshot, `<store>/statcache.json`, and an append-only log of the
//! entries learnt since, `<store>/statcache.log` (one JSON entry a line). A process
//! keeps what it learns in memory and persists it once, when it flushes (a `tureen
//! run` flushes when it ends, not once per stage): it appends its new entries to the log,
//! or, when the log has grown as large as the snapshot, folds everything into a new
//! snapshot and empties the log. Writing is therefore proportional to what a run learnt,
//! amortized, however large the cache. Flushes take `<store>/locks/statcache.lock`, so
//! concurrent processes never lose each other's entries to a compaction.

use std::collections::HashMap;
use std::fs::{Metadata, OpenOptions};
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::lock::FileLock;
use crate::fsutil;
use crate::Digest;

/// What a file looked like when it was hashed. Any change to any field means "rehash".
/// ctime is included because it changes on every write and cannot be set by `touch`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct FileStamp {
    size: u64,
    mtime_ns: i64,
    ctime_ns: i64,
    ino: u64,
    dev: u64,
}

impl FileStamp {
    pub(crate) fn of(meta: &Metadata) -> FileStamp {
        FileStamp {
            size: meta.len(),
            mtime_ns: meta.mtime() * 1_000_000_000 + meta.mtime_nsec(),
            ctime_ns: meta.ctime() * 1_000_000_000 + meta.ctime_nsec(),
            ino: meta.ino(),
            dev: meta.dev(),
        }
    }

    /// Whether any later write is sure to change this stamp. A file modified within
    /// `margin` of now may be modified again within the same timestamp tick without its
    /// stamp changing ("racily clean", as git calls it), so its digest is not cached as is.
    pub(crate) fn is_settled(&self, margin: Margin) -> bool {
        self.age_ns() > margin.0
    }

    /// Nanoseconds since the file was last modified (negative for a future mtime).
    fn age_ns(&self) -> i64 {
        now_ns() - self.mtime_ns
    }

    /// The file's size in bytes.
    pub(crate) fn size(&self) -> u64 {
        self.size
    }
}

fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

/// How long after a write a file's timestamps may still not show the next write: the
/// file system's timestamp granularity, with room to spare.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Margin(i64);

impl Margin {
    /// File systems whose timestamps come from the local kernel's clock, kept in
    /// nanoseconds and advanced at least once a scheduler tick (at most 10 ms): a file
    /// 50 ms old has a stamp that any later write changes.
    const LOCAL_CLOCK: Margin = Margin(50_000_000);
    /// Anything else (NFS, FUSE, FAT's 2-second mtimes, a server's clock): two seconds.
    const UNKNOWN: Margin = Margin(2_000_000_000);

    /// The margin for files on the file system holding `path`.
    pub(crate) fn of_filesystem(path: &Path) -> Margin {
        // `statfs`'s f_type magic numbers (linux/magic.h) of file systems with
        // nanosecond timestamps from the kernel's clock.
        const LOCAL: [i64; 7] = [
            0xEF53,      // ext2/3/4
            0x5846_5342, // xfs
            0x9123_683E, // btrfs
            0x0102_1994, // tmpfs
            0x794C_7630, // overlayfs (its upper layer is one of these)
            0x2FC1_2FC1, // zfs
            0xF2F5_2010, // f2fs
        ];
        use std::os::unix::ffi::OsStrExt;
        let Ok(c_path) = std::ffi::CString::new(path.as_os_str().as_bytes()) else {
            return Margin::UNKNOWN;
        };
        let mut buf = std::mem::MaybeUninit::<libc::statfs>::uninit();
        // SAFETY: `c_path` is a valid NUL-terminated string and `buf` is large enough
        // for the kernel to fill; it is read only when the call succeeds.
        let ok = unsafe { libc::statfs(c_path.as_ptr(), buf.as_mut_ptr()) } == 0;
        if !ok {
            return Margin::UNKNOWN;
        }
        // SAFETY: the call succeeded, so the kernel initialized `buf`.
        // f_type is i64 on x86-64 Linux but narrower on other targets.
        #[allow(clippy::unnecessary_cast)]
        let f_type = unsafe { buf.assume_init() }.f_type as i64;
        if LOCAL.contains(&f_type) {
            Margin::LOCAL_CLOCK
        } else {
            Margin::UNKNOWN
        }
    }

    /// Whether waiting out this margin is cheap enough to do before a process exits.
    pub(crate) fn is_short(self) -> bool {
        self <= Margin::LOCAL_CLOCK
    }

    /// How long until a file with `stamp` is settled (zero if it is).
    pub(crate) fn remaining(self, stamp: &FileStamp) -> std::time::Duration {
        let left = self.0 - stamp.age_ns();
        if left < 0 {
            return std::time::Duration::ZERO;
        }
        // A millisecond more, so the file is settled by the time the wait ends.
        std::time::Duration::from_nanos(left as u64 + 1_000_000)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct Entry {
    stamp: FileStamp,
    digest: Digest,
}

/// One line of the log.
#[derive(Debug, Serialize, Deserialize)]
struct LogLine {
    path: PathBuf,
    #[serde(flatten)]
    entry: Entry,
}

/// The snapshot file's layout.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Snapshot {
    entries: HashMap<PathBuf, Entry>,
}

/// The cache of one process: what is on disk (read on the first lookup) plus what it
/// learnt. A process that only adds entries (a worker ingesting its outputs) never reads
/// the cache.
#[derive(Debug, Default)]
pub(crate) struct StatCache {
    /// Everything known, once read.
    entries: Option<HashMap<PathBuf, Entry>>,
    /// Entries learnt since the last flush, in order.
    pending: Vec<LogLine>,
}

/// Where the cache of the store at `root` lives.
struct Files {
    snapshot: PathBuf,
    log: PathBuf,
    lock: PathBuf,
}

impl Files {
    fn of(root: &Path) -> Files {
        Files {
            snapshot: root.join("statcache.json"),
            log: root.join("statcache.log"),
            lock: root.join("locks").join("statcache.lock"),
        }
    }
}

/// The snapshot and log of the store at `root`. Missing or unreadable files, and lines
/// that do not parse, are simply absent entries: it is only a cache.
fn read(root: &Path) -> HashMap<PathBuf, Entry> {
    let files = Files::of(root);
    let mut entries = std::fs::read(&files.snapshot)
        .ok()
        .and_then(|bytes| serde_json::from_slice::<Snapshot>(&bytes).ok())
        .unwrap_or_default()
        .entries;
    if let Ok(text) = std::fs::read_to_string(&files.log) {
        for line in text.lines() {
            if let Ok(l) = serde_json::from_str::<LogLine>(line) {
                entries.insert(l.path, l.entry);
            }
        }
    }
    entries
}

/// A store's stat cache as read from its files, ahead of a first lookup (see
/// [`super::Store::read_stat_cache`]).
#[derive(Debug)]
pub struct StatCacheSnapshot {
    pub(super) root: PathBuf,
    pub(super) entries: HashMap<PathBuf, Entry>,
}

impl StatCacheSnapshot {
    pub(super) fn read(root: &Path) -> StatCacheSnapshot {
        StatCacheSnapshot {
            root: root.to_path_buf(),
            entries: read(root),
        }
    }
}

impl StatCache {
    /// Takes `entries`, read from disk (now by a first lookup, or ahead of time), as the
    /// cache's, with what was learnt meanwhile on top; nothing if it has them already.
    pub(crate) fn adopt(&mut self, mut entries: HashMap<PathBuf, Entry>) {
        if self.entries.is_none() {
            for l in &self.pending {
                entries.insert(l.path.clone(), l.entry.clone());
            }
            self.entries = Some(entries);
        }
    }

    /// The digest recorded for `path` if the file still has `stamp`.
    pub(crate) fn lookup(&mut self, root: &Path, path: &Path, stamp: &FileStamp) -> Option<Digest> {
        if self.entries.is_none() {
            self.adopt(read(root));
        }
        self.entries
            .as_ref()?
            .get(path)
            .filter(|e| e.stamp == *stamp)
            .map(|e| e.digest)
    }

    /// Learns `digest` for `path` with `stamp` (persisted at the next flush).
    pub(crate) fn insert(&mut self, path: PathBuf, stamp: FileStamp, digest: Digest) {
        let entry = Entry { stamp, digest };
        if let Some(entries) = self.entries.as_mut() {
            if entries
                .get(&path)
                .is_some_and(|e| e.stamp == entry.stamp && e.digest == entry.digest)
            {
                return;
            }
            entries.insert(path.clone(), entry.clone());
        }
        self.pending.push(LogLine { path, entry });
    }

    /// Persists what was learnt since the last flush (nothing to do if nothing was).
    pub(crate) fn flush(&mut self, root: &Path) -> std::io::Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let files = Files::of(root);
        let _lock = FileLock::exclusive(&files.lock)?;
        let mut text = String::new();
        for line in &self.pending {
            text.push_str(&serde_json::to_string(line).expect("log lines serialize"));
            text.push('\n');
        }
        let size = |p: &Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
        if size(&files.log) + text.len() as u64 >= size(&files.snapshot) {
            self.compact(root, &files)?;
        } else {
            let mut log = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&files.log)?;
            log.write_all(text.as_bytes())?;
        }
        self.pending.clear();
        Ok(())
    }

    /// Folds what is on disk now (other processes may have added to it) and what this
    /// process learnt into a new snapshot, and empties the log.
    fn compact(&mut self, root: &Path, files: &Files) -> std::io::Result<()> {
        let mut entries = read(root);
        for l in &self.pending {
            entries.insert(l.path.clone(), l.entry.clone());
        }
        let snapshot = Snapshot { entries };
        let bytes = serde_json::to_vec(&snapshot).expect("the stat cache serializes");
        fsutil::write_atomic(&files.snapshot, &bytes)?;
        std::fs::write(&files.log, b"")?;
        self.entries = Some(snapshot.entries);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stamp(size: u64) -> FileStamp {
        FileStamp {
            size,
            mtime_ns: 1,
            ctime_ns: 1,
            ino: 1,
            dev: 1,
        }
    }

    #[test]
    fn entries_persist_through_the_log_and_compactions() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir(root.join("locks")).unwrap();
        let d = |s: &str| Digest::of_bytes(s.as_bytes());
        // A first flush into an empty store writes a snapshot.
        let mut a = StatCache::default();
        for i in 0..10 {
            a.insert(PathBuf::from(format!("/f{i}")), stamp(i), d(&i.to_string()));
        }
        a.flush(root).unwrap();
        assert!(root.join("statcache.json").is_file());
        // A small addition goes to the log; the snapshot is not rewritten.
        let before = std::fs::read(root.join("statcache.json")).unwrap();
        let mut b = StatCache::default();
        b.insert(PathBuf::from("/new"), stamp(99), d("new"));
        b.flush(root).unwrap();
        assert_eq!(std::fs::read(root.join("statcache.json")).unwrap(), before);
        assert_eq!(
            std::fs::read_to_string(root.join("statcache.log"))
                .unwrap()
                .lines()
                .count(),
            1
        );
        let mut c = StatCache::default();
        assert_eq!(
            c.lookup(root, Path::new("/new"), &stamp(99)),
            Some(d("new"))
        );
        assert_eq!(c.lookup(root, Path::new("/f3"), &stamp(3)), Some(d("3")));
        assert_eq!(
            c.lookup(root, Path::new("/f3"), &stamp(4)),
            None,
            "stamp changed"
        );
        // Once the log is as large as the snapshot, it is folded in.
        let mut e = StatCache::default();
        for i in 0..12 {
            e.insert(PathBuf::from(format!("/g{i}")), stamp(i), d("g"));
        }
        e.flush(root).unwrap();
        assert_eq!(
            std::fs::read_to_string(root.join("statcache.log")).unwrap(),
            ""
        );
        assert_eq!(read(root).len(), 23);
        // Nothing learnt, nothing written.
        let mut g = StatCache::default();
        assert_eq!(g.lookup(root, Path::new("/g0"), &stamp(0)), Some(d("g")));
        g.insert(PathBuf::from("/g0"), stamp(0), d("g"));
        assert!(g.pending.is_empty(), "an unchanged entry is not new");
    }
}
