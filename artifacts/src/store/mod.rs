//! The content-addressed store.
//!
//! Layout (shared with the engine, see the project brief):
//!
//! ```text
//! <store>/objects/<hex[0..2]>/<hex[2..]>   immutable objects, read-only files, named by BLAKE3
//! <store>/tmp/                             temp files for atomic writes (same filesystem)
//! <store>/pins                             one digest per line (roots for gc)
//! <store>/runs/ cache/ journal/ locks/     the engine's; gc scans runs/, cache/, journal/
//! <store>/statcache.json, statcache.log   (path, size, mtime, ctime, inode, dev) -> digest: snapshot + log
//! ```
//!
//! Every object is written to a temp file under `tmp/`, fsynced, made read-only and renamed
//! into place, so a crash never leaves a partial object visible under `objects/`.
//! Objects are either *files* (any bytes) or *trees* (a directory, stored as a canonical JSON
//! manifest of relative path -> file digest; see [`Tree`]).

pub mod lock;
mod statcache;
mod tree;

use std::collections::{BTreeSet, HashMap};
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use rayon::prelude::*;

use crate::digest::HashingWriter;
use crate::fsutil;
use crate::writeback::Writeback;
use crate::Digest;
use lock::FileLock;
pub use statcache::StatCacheSnapshot;
use statcache::{FileStamp, Margin, StatCache};
pub use tree::{is_safe_relative_path, join_relative, Tree, TREE_MAGIC};

/// Errors from store operations. Each names the path or digest involved.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// An I/O operation failed.
    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        /// What was being done ("read", "create", "rename"...).
        action: &'static str,
        /// The file or directory involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The digest names no object in this store.
    #[error("object {digest} is not in the store {}", root.display())]
    NotFound {
        /// The missing object.
        digest: Digest,
        /// The store searched.
        root: PathBuf,
    },
    /// Something other than a regular file or directory (symlink, socket, device...).
    #[error("{}: not a regular file or directory (symlinks and special files are not stored)", path.display())]
    UnsupportedFileType {
        /// The offending path.
        path: PathBuf,
    },
    /// A file or directory name that is not valid UTF-8 cannot be recorded in a tree.
    #[error("{}: file name is not valid UTF-8", path.display())]
    NonUtf8Path {
        /// The offending path.
        path: PathBuf,
    },
    /// A tree object that is not a valid manifest, or lists a missing member.
    #[error("tree object {digest}: {reason}")]
    BadTree {
        /// The tree object.
        digest: Digest,
        /// What is wrong with it.
        reason: String,
    },
    /// `materialize` never overwrites a directory.
    #[error("{} already exists; remove it first", path.display())]
    DestinationExists {
        /// The destination that exists.
        path: PathBuf,
    },
    /// A committed temp object whose content does not hash to the digest claimed for it.
    #[error("temp object {} hashes to {actual}, not the claimed {claimed}", path.display())]
    DigestMismatch {
        /// The temp file.
        path: PathBuf,
        /// What the caller claimed.
        claimed: Digest,
        /// What the bytes hash to.
        actual: Digest,
    },
    /// The pins file contains a line that is not a digest.
    #[error("{}:{line}: not a digest: {text:?}", path.display())]
    BadPinsLine {
        /// The pins file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// The line's text.
        text: String,
    },
    /// Another process holds the store lock that this operation needs exclusively.
    #[error("the store {} is in use by another tureen process (lock {}); try again when it finishes", root.display(), lock.display())]
    Busy {
        /// The store's root directory.
        root: PathBuf,
        /// The lock file the other process holds.
        lock: PathBuf,
    },
}

type Result<T, E = StoreError> = std::result::Result<T, E>;

/// `<root>/objects/<first two hex digits>/<the other 62>`.
fn object_path(root: &Path, digest: &Digest) -> PathBuf {
    let hex = digest.to_hex();
    root.join("objects").join(&hex[..2]).join(&hex[2..])
}

/// Builds a closure that wraps an `io::Error` with what was done to which path.
fn io_err(action: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(io::Error) -> StoreError {
    let path = path.into();
    move |source| StoreError::Io {
        action,
        path,
        source,
    }
}

/// What kind of object a digest names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ObjectKind {
    /// Opaque bytes.
    File,
    /// A directory manifest ([`Tree`]).
    Tree,
}

impl std::fmt::Display for ObjectKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ObjectKind::File => "file",
            ObjectKind::Tree => "tree",
        })
    }
}

/// One line of [`Store::list`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ObjectInfo {
    /// The object's name.
    pub digest: Digest,
    /// Its size in bytes (for a tree: the manifest's size).
    pub size: u64,
    /// File or tree.
    pub kind: ObjectKind,
}

/// How [`Store::materialize`] placed a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// Shared extents (copy-on-write): instant, and edits can never reach the object.
    Reflink,
    /// A hard link to the read-only object (only when not running as root, since root
    /// ignores permission bits).
    Hardlink,
    /// A byte-for-byte copy, when neither of the above is possible.
    Copy,
}

/// One problem found by [`Store::verify`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VerifyProblem {
    /// The object's bytes hash to something other than its name (bit rot, tampering).
    Mismatch {
        /// The object's name.
        digest: Digest,
        /// What its bytes hash to now.
        actual: Digest,
        /// The object file.
        path: PathBuf,
    },
    /// The object could not be read.
    Unreadable {
        /// The object's name.
        digest: Digest,
        /// The object file.
        path: PathBuf,
        /// The error, as text.
        error: String,
    },
    /// A tree lists a member that is not in the store.
    MissingMember {
        /// The tree object.
        tree: Digest,
        /// The member's relative path.
        member: String,
        /// The member's digest.
        digest: Digest,
    },
    /// A file under `objects/` whose name is not a digest.
    StrayFile {
        /// The file.
        path: PathBuf,
    },
}

impl std::fmt::Display for VerifyProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            VerifyProblem::Mismatch {
                digest,
                actual,
                path,
            } => {
                write!(
                    f,
                    "{digest}: CORRUPT, content hashes to {actual} ({})",
                    path.display()
                )
            }
            VerifyProblem::Unreadable {
                digest,
                path,
                error,
            } => {
                write!(f, "{digest}: UNREADABLE ({}): {error}", path.display())
            }
            VerifyProblem::MissingMember {
                tree,
                member,
                digest,
            } => {
                write!(f, "{tree}: tree member {member:?} ({digest}) is missing")
            }
            VerifyProblem::StrayFile { path } => {
                write!(
                    f,
                    "{}: stray file in objects/ (name is not a digest)",
                    path.display()
                )
            }
        }
    }
}

/// The result of [`Store::verify`].
#[derive(Debug, Clone, Default)]
pub struct VerifyReport {
    /// Objects rehashed.
    pub checked: usize,
    /// Bytes rehashed.
    pub bytes: u64,
    /// Everything wrong, sorted by digest/path. Empty means the store is sound.
    pub problems: Vec<VerifyProblem>,
    /// Temp files and scratch directories of dead writers that verify removed from
    /// `tmp/` (leftovers of killed processes, not damage).
    pub stale_removed: Vec<PathBuf>,
}

/// Options for [`Store::gc`].
#[derive(Debug, Clone, Default)]
pub struct GcOptions {
    /// Report what would be removed without removing anything.
    pub dry_run: bool,
}

/// The result of [`Store::gc`].
#[derive(Debug, Clone, Default)]
pub struct GcReport {
    /// Objects kept (reachable from a root).
    pub kept: usize,
    /// Objects removed (or that would be, in a dry run), with their sizes.
    pub removed: Vec<(Digest, u64)>,
    /// Total bytes freed (or that would be).
    pub freed_bytes: u64,
    /// Entries of `tmp/` removed: temp files and scratch directories of dead writers,
    /// anything older than a day, and `tmp/trees/` of older tureen versions.
    pub stale_temps_removed: usize,
}

/// The stat cache's name for `path`: canonical, so `../ckpts/a` and `/work/ckpts/a` (or a
/// symlink to it) share one entry. The parent directory's canonical form is remembered
/// in `dirs`, so a run that checks thousands of files in a few directories resolves each
/// directory once. (The entry's stamp holds the inode and device, so even a name that a
/// renamed directory no longer resolves to can only miss, never give a wrong digest.)
fn stat_cache_key(
    path: &Path,
    is_link: bool,
    dirs: &mut HashMap<PathBuf, PathBuf>,
) -> Option<PathBuf> {
    let whole = || {
        fs::canonicalize(path)
            .or_else(|_| std::path::absolute(path))
            .ok()
    };
    let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
        return whole();
    };
    if is_link {
        return whole();
    }
    if let Some(dir) = dirs.get(parent) {
        return Some(dir.join(name));
    }
    let dir = fs::canonicalize(if parent.as_os_str().is_empty() {
        Path::new(".")
    } else {
        parent
    })
    .ok()?;
    let key = dir.join(name);
    dirs.insert(parent.to_path_buf(), dir);
    Some(key)
}

/// Whether the file at `key` still has the stamp and the content it had when `r` was
/// taken (stamp checked before and after hashing, so a write meanwhile is noticed).
fn still_holds(key: &Path, r: &Recent) -> bool {
    let same_stamp = || fs::metadata(key).is_ok_and(|m| FileStamp::of(&m) == r.stamp);
    same_stamp() && Digest::of_file(key).is_ok_and(|d| d == r.digest) && same_stamp()
}

/// What `stat` says of `path` (following a symbolic link), and whether it is one: one
/// system call for a path that is not a link.
fn stat(path: &Path) -> io::Result<(fs::Metadata, bool)> {
    let meta = fs::symlink_metadata(path)?;
    if meta.file_type().is_symlink() {
        Ok((fs::metadata(path)?, true))
    } else {
        Ok((meta, false))
    }
}

/// The stat cache and the canonical directories its keys are made from.
#[derive(Debug, Default)]
struct StatState {
    cache: StatCache,
    dirs: HashMap<PathBuf, PathBuf>,
    /// Each device's settle margin, asked of the file system once.
    margins: HashMap<u64, Margin>,
    /// Digests of files hashed too soon after they were written to be cached as they
    /// are, by stat-cache key; [`Store::settle_and_flush_stat_cache`] confirms them.
    recent: HashMap<PathBuf, Recent>,
}

/// A digest not yet trusted: the file was modified within its margin of being hashed.
#[derive(Debug)]
struct Recent {
    stamp: FileStamp,
    digest: Digest,
    margin: Margin,
}

/// Files larger than this hashed just after being written are not confirmed later:
/// rehashing them at the end of a run would cost more than it saves.
const RECENT_MAX_BYTES: u64 = 16 << 20;
/// At most this many unconfirmed digests are kept (memory stays bounded).
const RECENT_MAX_FILES: usize = 1 << 20;

/// A content-addressed store rooted at a directory. Cheap to open; safe to share between
/// threads (`&Store` methods) and between processes (all writes are atomic renames).
#[derive(Debug)]
pub struct Store {
    root: PathBuf,
    stat: Mutex<StatState>,
}

impl Store {
    /// Opens the store at `root`, creating its directory layout if missing. The root is
    /// made absolute so the `Store` keeps working if the process changes directory.
    pub fn open(root: impl AsRef<Path>) -> Result<Store> {
        let root = root.as_ref();
        let root = std::path::absolute(root).map_err(io_err("resolve", root))?;
        for sub in ["objects", "tmp", "runs", "cache", "journal", "locks"] {
            let dir = root.join(sub);
            fs::create_dir_all(&dir).map_err(io_err("create directory", &dir))?;
        }
        Ok(Store {
            root,
            stat: Mutex::new(StatState::default()),
        })
    }

    /// Reads the stat cache of the store at `root` (made absolute as [`Store::open`]
    /// does) now, e.g. on a thread of its own while the caller does other work, for
    /// [`Store::adopt_stat_cache`].
    pub fn read_stat_cache(root: &Path) -> StatCacheSnapshot {
        let root = std::path::absolute(root).unwrap_or_else(|_| root.to_path_buf());
        StatCacheSnapshot::read(&root)
    }

    /// Uses `snapshot` as the stat cache read from disk, instead of reading it at the
    /// first lookup. Ignored if it is another store's, or if this store read its own
    /// already.
    pub fn adopt_stat_cache(&self, snapshot: StatCacheSnapshot) {
        if snapshot.root != self.root {
            return;
        }
        if let Ok(mut state) = self.stat.lock() {
            state.cache.adopt(snapshot.entries);
        }
    }

    /// The store's root directory (absolute).
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `<store>/tmp`: temp files for atomic writes live here (same filesystem as objects).
    pub fn tmp_dir(&self) -> PathBuf {
        self.root.join("tmp")
    }

    /// Where the object named `digest` lives (whether or not it exists):
    /// `<store>/objects/<hex[0..2]>/<hex[2..]>`.
    pub fn object_path(&self, digest: &Digest) -> PathBuf {
        object_path(&self.root, digest)
    }

    /// Whether the object is present.
    pub fn contains(&self, digest: &Digest) -> bool {
        Store::contains_at(&self.root, digest)
    }

    /// Whether the store at `root` (absolute, as [`Store::open`] makes it) holds the
    /// object, as [`Store::contains`] answers: for a reader without a `Store`, such as
    /// a thread checking cache entries ahead of a run.
    pub fn contains_at(root: &Path, digest: &Digest) -> bool {
        object_path(root, digest).is_file()
    }

    /// Errors with [`StoreError::NotFound`] unless the object is present.
    fn require(&self, digest: &Digest) -> Result<PathBuf> {
        let path = self.object_path(digest);
        if path.is_file() {
            Ok(path)
        } else {
            Err(StoreError::NotFound {
                digest: *digest,
                root: self.root.clone(),
            })
        }
    }

    // ----- adding objects -------------------------------------------------------------

    /// Copies a file into the store and returns its digest. The file is hashed while it is
    /// copied (large files through a memory map, hashed on all threads); if the stat cache
    /// already knows the file and the object exists, nothing is copied at all.
    pub fn add_file(&self, path: &Path) -> Result<Digest> {
        let (meta, is_link) = stat(path).map_err(io_err("stat", path))?;
        if !meta.is_file() {
            return Err(StoreError::UnsupportedFileType {
                path: path.to_path_buf(),
            });
        }
        if let Some(digest) = self.cached_digest(path, &meta, is_link) {
            if self.contains(&digest) {
                return Ok(digest);
            }
        }
        let src = File::open(path).map_err(io_err("open", path))?;
        let mut temp = self.open_temp()?;
        copy_hashing(&src, meta.len(), &mut temp.writer).map_err(io_err("copy", path))?;
        let digest = temp.writer.digest();
        temp.commit_as(digest)?;
        self.remember(path, &meta, is_link, digest);
        Ok(digest)
    }

    /// Stores an in-memory byte string (e.g. a small JSON document) and returns its digest.
    pub fn add_bytes(&self, bytes: &[u8]) -> Result<Digest> {
        let digest = Digest::of_bytes(bytes);
        if self.contains(&digest) {
            return Ok(digest);
        }
        let mut temp = self.open_temp()?;
        temp.write_all(bytes)
            .map_err(io_err("write", temp.path()))?;
        temp.commit_as(digest)
    }

    /// Moves a file into the store: renamed into place when it is on the store's filesystem,
    /// else copied and then removed. Afterwards `path` no longer exists. Use this for
    /// outputs a stage just wrote (a multi-GB checkpoint is never copied). The caller must
    /// not write to the file any more.
    pub fn ingest(&self, path: &Path) -> Result<Digest> {
        let meta = fs::symlink_metadata(path).map_err(io_err("stat", path))?;
        if !meta.is_file() {
            return Err(StoreError::UnsupportedFileType {
                path: path.to_path_buf(),
            });
        }
        let file = File::open(path).map_err(io_err("open", path))?;
        // Whoever wrote the file may not have synced it; the object must be durable
        // before its name is.
        file.sync_all().map_err(io_err("fsync", path))?;
        let digest = Digest::of_open_file(&file).map_err(io_err("hash", path))?;
        drop(file);
        let dest = self.object_path(&digest);
        if dest.is_file() {
            fs::remove_file(path).map_err(io_err("remove", path))?;
            return Ok(digest);
        }
        let shard = fsutil::parent_dir(&dest).to_path_buf();
        fs::create_dir_all(&shard).map_err(io_err("create directory", &shard))?;
        fsutil::set_mode(path, 0o444).map_err(io_err("make read-only", path))?;
        match fs::rename(path, &dest) {
            Ok(()) => {
                fsutil::sync_dir(&shard).map_err(io_err("fsync", &shard))?;
                Ok(digest)
            }
            Err(e) if e.raw_os_error() == Some(libc::EXDEV) => {
                let copied = self.add_file(path)?;
                if copied != digest {
                    return Err(StoreError::DigestMismatch {
                        path: path.to_path_buf(),
                        claimed: digest,
                        actual: copied,
                    });
                }
                fs::remove_file(path).map_err(io_err("remove", path))?;
                Ok(digest)
            }
            Err(e) => {
                let _ = fsutil::set_mode(path, 0o644);
                Err(io_err("rename into the store", path)(e))
            }
        }
    }

    /// Adds a directory: every regular file below it (recursively) is added, then a tree
    /// manifest listing relative path -> digest is stored; its digest is returned. The
    /// result depends only on relative paths and file contents (not on order, times or
    /// permissions). Symlinks and special files are an error; empty directories are not
    /// recorded.
    pub fn add_dir(&self, path: &Path) -> Result<Digest> {
        let mut files = Vec::new();
        collect_files(path, String::new(), &mut files)?;
        let digests: Vec<Result<(String, Digest)>> = files
            .into_par_iter()
            .map(|(rel, abs)| self.add_file(&abs).map(|d| (rel, d)))
            .collect();
        let mut tree = Tree::new();
        for entry in digests {
            let (rel, d) = entry?;
            tree.files.insert(rel, d);
        }
        self.add_bytes(&tree.to_bytes())
    }

    /// Creates an empty temp file under `<store>/tmp` for a writer that produces an object
    /// itself (e.g. a checkpoint or a soup). Bytes written through its [`Write`] impl are
    /// hashed on the fly; if you write through [`TempObject::file`] instead (positional
    /// writes, memory maps), [`TempObject::commit`] rehashes the file. Dropped without a
    /// commit, the temp file is deleted.
    pub fn open_temp(&self) -> Result<TempObject> {
        let tmp = self.tmp_dir();
        let path = fsutil::unique_temp_path(&tmp, "object");
        let file = fsutil::create_new(&path).map_err(io_err("create", &path))?;
        Ok(TempObject {
            writer: HashingWriter::new(file),
            path,
            objects: self.root.join("objects"),
            positional: false,
            committed: false,
        })
    }

    // ----- reading objects ------------------------------------------------------------

    /// Whether the object is a file or a tree.
    pub fn kind(&self, digest: &Digest) -> Result<ObjectKind> {
        let path = self.require(digest)?;
        kind_of(&path)
    }

    /// Reads a tree object. Errors if the object is missing or is not a tree.
    pub fn read_tree(&self, digest: &Digest) -> Result<Tree> {
        let path = self.require(digest)?;
        let bytes = fs::read(&path).map_err(io_err("read", &path))?;
        Tree::parse(&bytes).ok_or_else(|| StoreError::BadTree {
            digest: *digest,
            reason: "not a tree manifest".into(),
        })
    }

    /// Opens an object for reading.
    pub fn open_object(&self, digest: &Digest) -> Result<File> {
        let path = self.require(digest)?;
        File::open(&path).map_err(io_err("open", &path))
    }

    /// Places a copy of the object at `dest`: a file object becomes a file, a tree object a
    /// directory with all its members. Files are reflinked when the filesystem can, else
    /// hard-linked (the object is read-only, and hard links are only used when not running
    /// as root, because root ignores permission bits), else copied. Materialized files are
    /// read-only, so an edit cannot reach the object through them.
    ///
    /// Atomic: everything is assembled under a temp name next to `dest` and renamed at the
    /// end. An existing file at `dest` is replaced; an existing directory is an error.
    pub fn materialize(&self, digest: &Digest, dest: &Path) -> Result<Placement> {
        let src = self.require(digest)?;
        if dest.is_dir() {
            return Err(StoreError::DestinationExists {
                path: dest.to_path_buf(),
            });
        }
        let dir = fsutil::parent_dir(dest);
        fs::create_dir_all(dir).map_err(io_err("create directory", dir))?;
        let stem = dest
            .file_name()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        fsutil::remove_stale_temps_once(dir);
        let temp = fsutil::unique_temp_path(dir, &stem);
        let result = (|| match kind_of(&src)? {
            ObjectKind::File => place_file(&src, &temp),
            ObjectKind::Tree => {
                let tree = self.read_tree(digest)?;
                fs::create_dir(&temp).map_err(io_err("create directory", &temp))?;
                let mut placement = Placement::Reflink;
                for (rel, member) in &tree.files {
                    let member_src = self.object_path(member);
                    if !member_src.is_file() {
                        return Err(StoreError::BadTree {
                            digest: *digest,
                            reason: format!("member {rel:?} ({member}) is not in the store"),
                        });
                    }
                    let target = tree::join_relative(&temp, rel);
                    let parent = fsutil::parent_dir(&target);
                    fs::create_dir_all(parent).map_err(io_err("create directory", parent))?;
                    placement = weakest(placement, place_file(&member_src, &target)?);
                }
                Ok(placement)
            }
        })();
        let placement = match result {
            Ok(p) => p,
            Err(e) => {
                let _ = fsutil::remove_all(&temp);
                return Err(e);
            }
        };
        if let Err(e) = fs::rename(&temp, dest) {
            let _ = fsutil::remove_all(&temp);
            return Err(io_err("rename into place", dest)(e));
        }
        // Not fsynced: a materialized copy is derived from the store, which is durable.
        // After a crash, a copy whose rename or data was lost shows another size or
        // mtime, so the stat cache does not vouch for it and the next run restores it.
        // Its digest is known: the next run need not hash the copy to find it unchanged.
        if let Ok((meta, is_link)) = stat(dest) {
            if meta.is_file() {
                self.remember(dest, &meta, is_link, *digest);
            }
        }
        Ok(placement)
    }

    // ----- hashing with the stat cache ------------------------------------------------

    /// The digest of any file, using the stat cache: a file whose (size, mtime, ctime,
    /// inode, device) are unchanged since it was last hashed is not read again. The file
    /// is not added to the store.
    pub fn hash_file_cached(&self, path: &Path) -> Result<Digest> {
        let (meta, is_link) = stat(path).map_err(io_err("stat", path))?;
        if !meta.is_file() {
            return Err(StoreError::UnsupportedFileType {
                path: path.to_path_buf(),
            });
        }
        self.hash_stat_file_cached(path, &meta, is_link)
    }

    /// [`Store::hash_file_cached`] of a regular file the caller has just stat'ed without
    /// following links (`meta`, from [`fs::symlink_metadata`]): one `stat` fewer.
    pub fn hash_regular_file_cached(&self, path: &Path, meta: &fs::Metadata) -> Result<Digest> {
        if !meta.file_type().is_file() {
            return Err(StoreError::UnsupportedFileType {
                path: path.to_path_buf(),
            });
        }
        self.hash_stat_file_cached(path, meta, false)
    }

    fn hash_stat_file_cached(
        &self,
        path: &Path,
        meta: &fs::Metadata,
        is_link: bool,
    ) -> Result<Digest> {
        if let Some(d) = self.cached_digest(path, meta, is_link) {
            return Ok(d);
        }
        let digest = Digest::of_file(path).map_err(io_err("hash", path))?;
        self.remember(path, meta, is_link, digest);
        Ok(digest)
    }

    /// The digest the stat cache holds for `path` as it is now (same size, times, inode),
    /// without hashing anything.
    pub fn cached_file_digest(&self, path: &Path) -> Option<Digest> {
        let (meta, is_link) = stat(path).ok()?;
        self.cached_digest(path, &meta, is_link)
    }

    /// Records `digest` for `path`, computed by the caller from the file as it was when
    /// `before` was taken: nothing is recorded if the file has changed since.
    pub fn remember_file_digest(&self, path: &Path, before: &fs::Metadata, digest: Digest) {
        let Ok((now, is_link)) = stat(path) else {
            return;
        };
        if FileStamp::of(&now) == FileStamp::of(before) {
            self.remember(path, &now, is_link, digest);
        }
    }

    fn cached_digest(&self, path: &Path, meta: &fs::Metadata, is_link: bool) -> Option<Digest> {
        let mut state = self.stat.lock().ok()?;
        let StatState { cache, dirs, .. } = &mut *state;
        let key = stat_cache_key(path, is_link, dirs)?;
        cache.lookup(&self.root, &key, &FileStamp::of(meta))
    }

    /// Records a digest in the stat cache, persisted at the next flush (at the latest
    /// when the store is dropped). The digest of a file modified too recently to trust
    /// its stamp is kept aside for [`Store::settle_and_flush_stat_cache`] instead.
    fn remember(&self, path: &Path, meta: &fs::Metadata, is_link: bool, digest: Digest) {
        let stamp = FileStamp::of(meta);
        let Ok(mut state) = self.stat.lock() else {
            return;
        };
        use std::os::unix::fs::MetadataExt as _;
        let StatState {
            cache,
            dirs,
            margins,
            recent,
        } = &mut *state;
        let Some(key) = stat_cache_key(path, is_link, dirs) else {
            return;
        };
        let margin = *margins
            .entry(meta.dev())
            .or_insert_with(|| Margin::of_filesystem(&key));
        if stamp.is_settled(margin) {
            cache.insert(key, stamp, digest);
        } else if stamp.size() <= RECENT_MAX_BYTES && recent.len() < RECENT_MAX_FILES {
            let r = Recent {
                stamp,
                digest,
                margin,
            };
            recent.insert(key, r);
        }
    }

    /// Persists the digests learnt since the last flush. Failures are ignored: the cache
    /// only saves time.
    pub fn flush_stat_cache(&self) {
        if let Ok(mut state) = self.stat.lock() {
            let _ = state.cache.flush(&self.root);
        }
    }

    /// Like [`Store::flush_stat_cache`], but first confirms the digests of files that
    /// were hashed just after being written (a run's own outputs): once a file's margin
    /// has passed, a file whose stamp is unchanged and whose content hashes the same
    /// again is cached, as if it had been hashed then. On file systems with fine
    /// timestamps this waits out the margin (at most 50 ms) so that the next run finds
    /// every output cached; elsewhere, files still within their margin are left out.
    pub fn settle_and_flush_stat_cache(&self) {
        let Ok(mut state) = self.stat.lock() else {
            return;
        };
        let recent = std::mem::take(&mut state.recent);
        let wait = recent
            .values()
            .filter(|r| r.margin.is_short())
            .map(|r| r.margin.remaining(&r.stamp))
            .max();
        if let Some(wait) = wait {
            std::thread::sleep(wait);
        }
        for (key, r) in recent {
            if r.stamp.is_settled(r.margin) && still_holds(&key, &r) {
                state.cache.insert(key, r.stamp, r.digest);
            }
        }
        let _ = state.cache.flush(&self.root);
    }

    // ----- pins ---------------------------------------------------------------------

    /// The pins file: one digest per line, roots for [`Store::gc`].
    pub fn pins_path(&self) -> PathBuf {
        self.root.join("pins")
    }

    /// The pinned digests, sorted.
    pub fn pins(&self) -> Result<BTreeSet<Digest>> {
        let path = self.pins_path();
        let text = match fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(BTreeSet::new()),
            Err(e) => return Err(io_err("read", &path)(e)),
        };
        let mut pins = BTreeSet::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let d = line
                .parse::<Digest>()
                .map_err(|_| StoreError::BadPinsLine {
                    path: path.clone(),
                    line: i + 1,
                    text: line.to_string(),
                })?;
            pins.insert(d);
        }
        Ok(pins)
    }

    /// Pins an object so gc keeps it (and, for a tree, its members). Returns whether it
    /// was newly pinned. The object must exist.
    pub fn pin(&self, digest: &Digest) -> Result<bool> {
        self.require(digest)?;
        let _lock = self.lock("pins.lock", FileLock::exclusive)?;
        let mut pins = self.pins()?;
        let added = pins.insert(*digest);
        if added {
            self.write_pins(&pins)?;
        }
        Ok(added)
    }

    /// Unpins an object. Returns whether it was pinned.
    pub fn unpin(&self, digest: &Digest) -> Result<bool> {
        let _lock = self.lock("pins.lock", FileLock::exclusive)?;
        let mut pins = self.pins()?;
        let removed = pins.remove(digest);
        if removed {
            self.write_pins(&pins)?;
        }
        Ok(removed)
    }

    fn write_pins(&self, pins: &BTreeSet<Digest>) -> Result<()> {
        let mut text = String::new();
        for d in pins {
            text.push_str(&d.to_string());
            text.push('\n');
        }
        let path = self.pins_path();
        fsutil::write_atomic(&path, text.as_bytes()).map_err(io_err("write", &path))
    }

    // ----- listing, verification, garbage collection ---------------------------------

    /// Every object, sorted by digest. Files under `objects/` whose names are not digests
    /// are skipped (see [`Store::verify`], which reports them).
    pub fn list(&self) -> Result<Vec<ObjectInfo>> {
        let mut out = Vec::new();
        for (digest, path) in self.object_files()?.objects {
            let meta = fs::metadata(&path).map_err(io_err("stat", &path))?;
            out.push(ObjectInfo {
                digest,
                size: meta.len(),
                kind: kind_of(&path)?,
            });
        }
        Ok(out)
    }

    /// (digest, path) of every object, sorted, plus stray files.
    fn object_files(&self) -> Result<ObjectFiles> {
        let objects = self.root.join("objects");
        let mut found = Vec::new();
        let mut stray = Vec::new();
        for shard in read_dir_sorted(&objects)? {
            let shard_name = shard
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            if !shard.is_dir() {
                stray.push(shard);
                continue;
            }
            for file in read_dir_sorted(&shard)? {
                let name = file
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                match Digest::from_hex(&format!("{shard_name}{name}")) {
                    Ok(d) if file.is_file() => found.push((d, file)),
                    _ => stray.push(file),
                }
            }
        }
        found.sort();
        Ok(ObjectFiles {
            objects: found,
            stray,
        })
    }

    /// Rehashes every object (in parallel) and checks that tree members exist. The report
    /// lists every problem; an empty `problems` list means the store is sound.
    pub fn verify(&self) -> Result<VerifyReport> {
        let stale_removed = self.remove_stale_temps();
        let ObjectFiles { objects, stray } = self.object_files()?;
        let results: Vec<(u64, Vec<VerifyProblem>)> = objects
            .par_iter()
            .map(|(digest, path)| {
                let mut problems = Vec::new();
                let size = fs::metadata(path).map(|m| m.len()).unwrap_or(0);
                match Digest::of_file(path) {
                    Err(e) => problems.push(VerifyProblem::Unreadable {
                        digest: *digest,
                        path: path.clone(),
                        error: e.to_string(),
                    }),
                    Ok(actual) if actual != *digest => problems.push(VerifyProblem::Mismatch {
                        digest: *digest,
                        actual,
                        path: path.clone(),
                    }),
                    Ok(_) => {
                        if let Ok(Some(tree)) = read_tree_at(path) {
                            for (member, d) in &tree.files {
                                if !self.contains(d) {
                                    problems.push(VerifyProblem::MissingMember {
                                        tree: *digest,
                                        member: member.clone(),
                                        digest: *d,
                                    });
                                }
                            }
                        }
                    }
                }
                (size, problems)
            })
            .collect();
        let mut report = VerifyReport {
            checked: objects.len(),
            stale_removed,
            ..Default::default()
        };
        for (size, problems) in results {
            report.bytes += size;
            report.problems.extend(problems);
        }
        report.problems.extend(
            stray
                .into_iter()
                .map(|path| VerifyProblem::StrayFile { path }),
        );
        Ok(report)
    }

    /// The gc roots: every `blake3:<hex>` string in any file under `runs/`, `cache/` and
    /// `journal/` (whatever their format), plus the pins.
    pub fn roots(&self) -> Result<BTreeSet<Digest>> {
        let mut roots = self.pins()?;
        for sub in ["runs", "cache", "journal"] {
            let mut files = Vec::new();
            walk_files(&self.root.join(sub), &mut files)?;
            for f in files {
                let bytes = fs::read(&f).map_err(io_err("read", &f))?;
                roots.extend(Digest::find_all(&String::from_utf8_lossy(&bytes)));
            }
        }
        Ok(roots)
    }

    /// Removes every object not reachable from [`Store::roots`] (tree members of kept trees
    /// are kept, recursively), and temp files older than a day. Takes the store's
    /// exclusive lock, so it fails with [`StoreError::Busy`] while a process holds
    /// [`Store::lock_shared`] (the engine does, during a run).
    pub fn gc(&self, opts: &GcOptions) -> Result<GcReport> {
        let lock_path = self.lock_path("store.lock");
        let _lock = FileLock::try_exclusive(&lock_path)
            .map_err(io_err("lock", &lock_path))?
            .ok_or_else(|| StoreError::Busy {
                root: self.root.clone(),
                lock: lock_path.clone(),
            })?;
        let mut keep = BTreeSet::new();
        let mut queue: Vec<Digest> = self.roots()?.into_iter().collect();
        while let Some(d) = queue.pop() {
            if !keep.insert(d) {
                continue;
            }
            let path = self.object_path(&d);
            if let Ok(Some(tree)) = read_tree_at(&path) {
                queue.extend(tree.files.values().copied().filter(|m| !keep.contains(m)));
            }
        }
        let mut report = GcReport::default();
        for (digest, path) in self.object_files()?.objects {
            if keep.contains(&digest) {
                report.kept += 1;
                continue;
            }
            let size = fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
            if !opts.dry_run {
                fs::remove_file(&path).map_err(io_err("remove", &path))?;
            }
            report.freed_bytes += size;
            report.removed.push((digest, size));
        }
        if !opts.dry_run {
            report.stale_temps_removed += self.remove_stale_temps().len();
            // Trees materialized by tureen versions that kept them; no run holds the
            // store now (the lock above), so nothing reads them.
            let trees = self.tmp_dir().join("trees");
            if trees.is_dir() && fsutil::remove_all(&trees).is_ok() {
                report.stale_temps_removed += 1;
            }
        }
        let day = std::time::Duration::from_secs(24 * 3600);
        for temp in read_dir_sorted(&self.tmp_dir())? {
            let old = fs::metadata(&temp)
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age > day);
            if old {
                if !opts.dry_run {
                    let _ = fsutil::remove_all(&temp);
                }
                report.stale_temps_removed += 1;
            }
        }
        Ok(report)
    }

    /// Removes what dead processes left in `tmp/` (temp objects, work directories; see
    /// [`crate::stale`]) and returns the removed paths. Safe while other processes
    /// work: a live writer's entries, and other hosts', are never touched.
    pub fn remove_stale_temps(&self) -> Vec<PathBuf> {
        crate::stale::remove_stale(&self.tmp_dir(), "")
    }

    /// Takes the store-wide lock in shared mode (blocking). Hold it while creating objects
    /// that are not referenced yet (e.g. for the length of a pipeline run): `gc` cannot
    /// start until every shared holder has dropped its guard.
    pub fn lock_shared(&self) -> Result<FileLock> {
        self.lock("store.lock", FileLock::shared)
    }

    /// `<store>/locks/<name>`: where the lock called `name` lives (the engine keeps its
    /// per-key work locks there too).
    pub fn lock_path(&self, name: &str) -> PathBuf {
        self.root.join("locks").join(name)
    }

    fn lock(&self, name: &str, take: fn(&Path) -> io::Result<FileLock>) -> Result<FileLock> {
        let path = self.lock_path(name);
        take(&path).map_err(io_err("lock", &path))
    }
}

impl Drop for Store {
    /// A store persists its stat cache once, when it is done with (not once per file).
    fn drop(&mut self) {
        self.flush_stat_cache();
    }
}

/// What `objects/` holds: objects named by digest (sorted) and files that are not.
struct ObjectFiles {
    objects: Vec<(Digest, PathBuf)>,
    stray: Vec<PathBuf>,
}

/// A temp file under `<store>/tmp` that becomes an object when committed (see
/// [`Store::open_temp`]). Deleted on drop unless committed.
#[derive(Debug)]
pub struct TempObject {
    writer: HashingWriter<File>,
    path: PathBuf,
    objects: PathBuf,
    positional: bool,
    committed: bool,
}

impl TempObject {
    /// The temp file's path (under `<store>/tmp`, same filesystem as the objects).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The underlying file, for positional writes (`pwrite`, `set_len`, memory maps).
    /// Using it means [`TempObject::commit`] rehashes the file instead of trusting the
    /// streaming hash.
    pub fn file(&mut self) -> &File {
        self.positional = true;
        self.writer.get_ref()
    }

    /// Makes the temp file an object and returns its digest: fsync, read-only, rename into
    /// `objects/`. If the object already exists, the temp file is just removed.
    pub fn commit(self) -> Result<Digest> {
        let digest = if self.positional {
            Digest::of_open_file(self.writer.get_ref()).map_err(io_err("hash", &self.path))?
        } else {
            self.writer.digest()
        };
        self.commit_as(digest)
    }

    /// Like [`TempObject::commit`] when the caller already knows the digest of what it
    /// wrote (e.g. it hashed while writing in its own way). The digest is trusted here;
    /// `tureen store verify` would report a lie as corruption.
    pub fn commit_as(mut self, digest: Digest) -> Result<Digest> {
        let file = self.writer.get_ref();
        file.sync_all().map_err(io_err("fsync", &self.path))?;
        let hex = digest.to_hex();
        let shard = self.objects.join(&hex[..2]);
        let dest = shard.join(&hex[2..]);
        if dest.is_file() {
            fs::remove_file(&self.path).map_err(io_err("remove", &self.path))?;
        } else {
            fs::create_dir_all(&shard).map_err(io_err("create directory", &shard))?;
            fsutil::set_mode(&self.path, 0o444).map_err(io_err("make read-only", &self.path))?;
            fs::rename(&self.path, &dest).map_err(io_err("rename into the store", &dest))?;
            fsutil::sync_dir(&shard).map_err(io_err("fsync", &shard))?;
        }
        self.committed = true;
        Ok(digest)
    }
}

impl Write for TempObject {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.writer.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.writer.flush()
    }
}

impl Drop for TempObject {
    fn drop(&mut self) {
        if !self.committed {
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// Copies `len` bytes of `src` into `dst` (which hashes them). Large files are read through
/// a memory map in 16 MiB blocks; each block is hashed on all threads.
fn copy_hashing(src: &File, len: u64, dst: &mut HashingWriter<File>) -> io::Result<()> {
    if len < crate::digest::MMAP_THRESHOLD {
        let mut reader = src;
        let mut buf = Vec::with_capacity(len as usize);
        reader.read_to_end(&mut buf)?;
        return dst.write_all(&buf);
    }
    // SAFETY: read-only map dropped before return; see `Digest::of_open_file`.
    let map = unsafe { memmap2::Mmap::map(src)? };
    if map.len() as u64 != len {
        return Err(io::Error::other(format!(
            "the file changed size while being added ({len} -> {} bytes)",
            map.len()
        )));
    }
    let start = dst.bytes_written();
    fsutil::preallocate(dst.get_ref(), start + len)?;
    // The copy is written sequentially, so each writeback window completes in turn and
    // goes to disk while the next is copied: the fsync in `commit_as` waits only for the
    // tail. Writing and hashing each block overlap on two threads.
    let writeback = Writeback::new(start + len);
    writeback.wrote(dst.get_ref(), 0, start);
    for block in map.chunks(16 << 20) {
        let at = dst.bytes_written();
        dst.write_all_overlapped(block)?;
        writeback.wrote(dst.get_ref(), at, block.len() as u64);
    }
    // An error seen here would not be reported again by the fsync in `commit_as`.
    match writeback.take_error() {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// Places one object file at `target` (which must not exist): reflink, hard link (not as
/// root) or copy; the result is read-only.
fn place_file(src: &Path, target: &Path) -> Result<Placement> {
    let mut src_file = File::open(src).map_err(io_err("open", src))?;
    let mut dst = fsutil::create_new(target).map_err(io_err("create", target))?;
    if fsutil::reflink(&src_file, &dst).map_err(io_err("reflink", target))? {
        fsutil::set_mode(target, 0o444).map_err(io_err("make read-only", target))?;
        return Ok(Placement::Reflink);
    }
    // Root ignores permission bits, so a hard link would let it write to the object; as
    // root the copy goes into the file already made (no second inode per output).
    if !fsutil::running_as_root() {
        drop(dst);
        fs::remove_file(target).map_err(io_err("remove", target))?;
        if fs::hard_link(src, target).is_ok() {
            return Ok(Placement::Hardlink);
        }
        dst = fsutil::create_new(target).map_err(io_err("create", target))?;
    }
    io::copy(&mut src_file, &mut dst).map_err(io_err("copy to", target))?;
    fsutil::set_mode(target, 0o444).map_err(io_err("make read-only", target))?;
    Ok(Placement::Copy)
}

/// The weaker of two placements (a tree reports the least shared way any member was placed).
fn weakest(a: Placement, b: Placement) -> Placement {
    use Placement::*;
    match (a, b) {
        (Copy, _) | (_, Copy) => Copy,
        (Hardlink, _) | (_, Hardlink) => Hardlink,
        _ => Reflink,
    }
}

fn kind_of(path: &Path) -> Result<ObjectKind> {
    let mut head = [0u8; TREE_MAGIC.len()];
    let mut f = File::open(path).map_err(io_err("open", path))?;
    let mut n = 0;
    while n < head.len() {
        match f.read(&mut head[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(io_err("read", path)(e)),
        }
    }
    if n == head.len() && head == TREE_MAGIC && read_tree_at(path)?.is_some() {
        Ok(ObjectKind::Tree)
    } else {
        Ok(ObjectKind::File)
    }
}

/// Reads an object as a tree if it is one.
fn read_tree_at(path: &Path) -> Result<Option<Tree>> {
    let mut head = [0u8; TREE_MAGIC.len()];
    let mut f = File::open(path).map_err(io_err("open", path))?;
    if f.read_exact(&mut head).is_err() || head != TREE_MAGIC {
        return Ok(None);
    }
    let bytes = fs::read(path).map_err(io_err("read", path))?;
    Ok(Tree::parse(&bytes))
}

fn read_dir_sorted(dir: &Path) -> Result<Vec<PathBuf>> {
    let rd = match fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_err("list", dir)(e)),
    };
    let mut out = Vec::new();
    for entry in rd {
        out.push(entry.map_err(io_err("list", dir))?.path());
    }
    out.sort();
    Ok(out)
}

/// Every regular file below `dir` (recursively; symlinks are not followed).
fn walk_files(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    for p in read_dir_sorted(dir)? {
        let meta = fs::symlink_metadata(&p).map_err(io_err("stat", &p))?;
        if meta.is_dir() {
            walk_files(&p, out)?;
        } else if meta.is_file() {
            out.push(p);
        }
    }
    Ok(())
}

/// (relative `/`-path, absolute path) of every file below `dir`, for [`Store::add_dir`].
fn collect_files(dir: &Path, prefix: String, out: &mut Vec<(String, PathBuf)>) -> Result<()> {
    let meta = fs::symlink_metadata(dir).map_err(io_err("stat", dir))?;
    if !meta.is_dir() {
        return Err(StoreError::UnsupportedFileType {
            path: dir.to_path_buf(),
        });
    }
    for p in read_dir_sorted(dir)? {
        let name = p
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| StoreError::NonUtf8Path { path: p.clone() })?
            .to_string();
        let rel = if prefix.is_empty() {
            name
        } else {
            format!("{prefix}/{name}")
        };
        let meta = fs::symlink_metadata(&p).map_err(io_err("stat", &p))?;
        if meta.is_dir() {
            collect_files(&p, rel, out)?;
        } else if meta.is_file() {
            out.push((rel, p));
        } else {
            return Err(StoreError::UnsupportedFileType { path: p });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
