//! The stat cache: (path, size, mtime, ctime, inode, device) -> digest, so that hashing a
//! file nobody touched since it was last hashed costs one `stat`.

use std::collections::HashMap;
use std::fs::Metadata;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::Digest;

/// What a file looked like when it was hashed. Any change to any field means "rehash".
/// ctime is included because it changes on every write and cannot be set by `touch`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
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

    /// A file modified within the last two seconds may be modified again within the same
    /// timestamp tick without its stamp changing ("racily clean", as git calls it); such
    /// files are hashed but not cached.
    pub(crate) fn is_settled(&self) -> bool {
        let now_ns = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as i64)
            .unwrap_or(0);
        now_ns - self.mtime_ns > 2_000_000_000
    }
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub(crate) struct Entry {
    stamp: FileStamp,
    digest: Digest,
}

/// The in-memory cache; persisted as `<store>/statcache.json`.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
pub(crate) struct StatCache {
    entries: HashMap<PathBuf, Entry>,
}

impl StatCache {
    /// Loads the cache; a missing or unreadable file is an empty cache (it is only a cache).
    pub(crate) fn load(path: &Path) -> StatCache {
        std::fs::read(path)
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .unwrap_or_default()
    }

    pub(crate) fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("stat cache serializes")
    }

    pub(crate) fn lookup(&self, path: &Path, stamp: &FileStamp) -> Option<Digest> {
        self.entries
            .get(path)
            .filter(|e| e.stamp == *stamp)
            .map(|e| e.digest)
    }

    pub(crate) fn insert(&mut self, path: PathBuf, stamp: FileStamp, digest: Digest) {
        self.entries.insert(path, Entry { stamp, digest });
    }
}
