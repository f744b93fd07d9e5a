//! The action cache: `<store>/cache/<key-hex>.json` maps a stage key to the digests
//! of the outputs it produced. Separate from the content store (objects are shared
//! between entries and outlive them until `gc`). Every entry is also appended to the
//! cache's log (the private `log` module), which a run reads once through
//! [`ActionCache`] instead of opening one file per stage.

mod log;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, OnceLock};

use serde::{Deserialize, Serialize};
use tureen_artifacts::{Digest, Store};

use crate::key::Fingerprint;

/// One stored artifact: its digest, whether it is a tree (directory), and the file
/// name it had when produced (used to name it when materialized).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArtifactRecord {
    /// BLAKE3 digest of the object in the content store.
    pub digest: Digest,
    /// `true` when the object is a directory tree (stored with `add_dir`), `false`
    /// for a single file. Left out of the JSON when `false`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub tree: bool,
    /// The produced path's last component, e.g. `model.safetensors`; its extension
    /// names the materialized copy under `outputs/`. `None` when no path was seen:
    /// an object the stage handed over already stored, and not through its journal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_name: Option<String>,
}

/// A stage output: one artifact or a series.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum OutputRecord {
    /// An output declared as a series (e.g. checkpoints), in production order;
    /// written as `{"series": [...]}`.
    Series {
        /// The artifacts, first produced first.
        series: Vec<ArtifactRecord>,
    },
    /// An output declared as a single artifact; written as the bare record.
    One(ArtifactRecord),
}

impl OutputRecord {
    /// Every artifact of the output: the single one, or the whole series in order.
    pub fn artifacts(&self) -> &[ArtifactRecord] {
        match self {
            OutputRecord::Series { series } => series,
            OutputRecord::One(a) => std::slice::from_ref(a),
        }
    }

    /// A short form for tables: the digest, or `N artifacts`.
    pub fn summary(&self) -> String {
        match self {
            OutputRecord::One(a) => a.digest.to_string(),
            OutputRecord::Series { series } => format!("series of {}", series.len()),
        }
    }
}

/// What a completed stage left in the cache.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CacheEntry {
    /// The stage key this entry is filed under; [`lookup`] treats an entry whose key
    /// differs from its file name as a miss.
    pub key: Digest,
    /// Name of the stage that produced it, in the run that wrote the entry.
    pub stage: String,
    /// The stage's kind, as written in the pipeline (`train`, `soup`, ...).
    pub kind: String,
    /// Id of the run whose execution produced the outputs.
    pub run_id: String,
    /// When the entry was written: UTC, RFC 3339 with milliseconds.
    pub created: String,
    /// What the key was computed from, kept so later runs can say what changed.
    pub fingerprint: Fingerprint,
    /// The stage's outputs by declared name.
    pub outputs: BTreeMap<String, OutputRecord>,
}

/// Path of the entry for `key` under the store root `store`:
/// `<store>/cache/<key-hex>.json`. The file need not exist.
pub fn entry_path(store: &Path, key: &Digest) -> PathBuf {
    store.join("cache").join(format!("{}.json", key.to_hex()))
}

/// The entry for `key` if there is one and every object it names is still in the store
/// (an entry whose objects were garbage-collected is a miss, not an error). Reads the
/// entry's own file, so it sees an entry the moment it is inserted.
pub fn lookup(store: &Store, key: &Digest) -> Option<CacheEntry> {
    let bytes = std::fs::read(entry_path(store.root(), key)).ok()?;
    let entry: CacheEntry = serde_json::from_slice(&bytes).ok()?;
    if entry.key != *key || !complete(store.root(), &entry.outputs) {
        return None;
    }
    Some(entry)
}

/// Writes the entry atomically (a reader sees the old entry, none, or the whole new one),
/// then appends it to the cache's log.
pub fn insert(store: &Store, entry: &CacheEntry) -> std::io::Result<()> {
    let path = entry_path(store.root(), &entry.key);
    std::fs::create_dir_all(path.parent().expect("cache dir"))?;
    let bytes = serde_json::to_vec_pretty(entry).expect("entries serialize");
    tureen_artifacts::fsutil::write_atomic(&path, &bytes)?;
    // The log only saves later runs the file's reading: a failed append costs them that.
    let _ = log::append(store.root(), &log_line(entry));
    Ok(())
}

/// Rewrites the cache's log with the last line of each key whose entry file still
/// exists (`tureen store gc` does, before it looks for the objects to keep). Returns
/// the lines dropped.
pub fn compact_log(store: &Store) -> std::io::Result<usize> {
    log::compact(store.root(), |key, _| {
        entry_path(store.root(), key).is_file()
    })
    .map_err(|e| {
        let path = log::path(store.root());
        std::io::Error::new(e.kind(), format!("{}: {e}", path.display()))
    })
}

/// What the log keeps of an entry: what a lookup needs (the fingerprint, five times
/// larger, stays in the entry's file).
#[derive(Serialize, Deserialize)]
struct Hit<Outputs> {
    key: Digest,
    outputs: Outputs,
}

/// A log line's entry, if it parses and names the key it is filed under.
fn decode(key: &Digest, json: &[u8]) -> Option<Hit<BTreeMap<String, OutputRecord>>> {
    serde_json::from_slice::<Hit<BTreeMap<_, _>>>(json)
        .ok()
        .filter(|hit| hit.key == *key)
}

/// Whether every object the outputs name is in the store at `root`.
fn complete(root: &Path, outputs: &BTreeMap<String, OutputRecord>) -> bool {
    outputs
        .values()
        .flat_map(|o| o.artifacts())
        .all(|a| Store::contains_at(root, &a.digest))
}

fn log_line(entry: &CacheEntry) -> Vec<u8> {
    let hit = Hit {
        key: entry.key,
        outputs: &entry.outputs,
    };
    log::line(
        &entry.key,
        &serde_json::to_vec(&hit).expect("entries serialize"),
    )
}

/// Where the log of the action cache of the store at `root` is.
pub fn log_path(root: &Path) -> PathBuf {
    log::path(root)
}

/// The log of a store's action cache, read ahead of a run (e.g. on a thread of its own
/// while the pipeline loads) for [`ActionCache::with_log`].
#[derive(Debug)]
pub struct LogSnapshot {
    root: PathBuf,
    log: log::Log,
    complete: Complete,
}

/// Outputs of the log's entries, by key, that were decoded and found complete (every
/// object in the store) before the run looked them up.
type Complete = HashMap<Digest, BTreeMap<String, OutputRecord>>;

impl LogSnapshot {
    /// Reads the log of the store at `root` (made absolute as `Store::open` does).
    pub fn read(root: &Path) -> LogSnapshot {
        let root = std::path::absolute(root).unwrap_or_else(|_| root.to_path_buf());
        LogSnapshot {
            log: log::Log::read(&root),
            root,
            complete: Complete::new(),
        }
    }

    /// Does the lookups' own work ahead of them, the most recent entries first, until
    /// `enough` is set or every entry is done: decodes each entry and checks that its
    /// objects are in the store. In a no-op run that was a `stat` per output and a JSON
    /// decoding per stage, on the one busy core; the pipeline's loading leaves another
    /// idle. An entry found incomplete is left to its lookup, which reads its file.
    pub fn check_entries(&mut self, enough: &AtomicBool) {
        for (key, json) in self.log.newest_first() {
            if enough.load(Ordering::Relaxed) {
                break;
            }
            let Some(hit) = decode(key, json) else {
                continue;
            };
            if complete(&self.root, &hit.outputs) {
                self.complete.insert(*key, hit.outputs);
            }
        }
    }
}

/// The action cache as one run sees it: many lookups, the log read once for all of
/// them. Entries the log lacks (written before there was a log, or whose append failed)
/// come from their files, and [`ActionCache::finish`] adds them to the log.
pub struct ActionCache<'s> {
    store: &'s Store,
    log: OnceLock<log::Log>,
    complete: Complete,
    missing: Mutex<Vec<u8>>,
}

impl<'s> ActionCache<'s> {
    /// The cache of `store`; nothing is read until the first lookup.
    pub fn new(store: &'s Store) -> ActionCache<'s> {
        ActionCache {
            store,
            log: OnceLock::new(),
            complete: Complete::new(),
            missing: Mutex::new(Vec::new()),
        }
    }

    /// The cache of `store` with its log as `log` read (and checked) it ahead of time
    /// (a log of another store is ignored).
    pub fn with_log(store: &'s Store, log: LogSnapshot) -> ActionCache<'s> {
        let mut cache = ActionCache::new(store);
        if log.root == store.root() {
            let _ = cache.log.set(log.log);
            cache.complete = log.complete;
        }
        cache
    }

    /// The store whose cache this is.
    pub fn store(&self) -> &'s Store {
        self.store
    }

    /// The outputs of `key`'s entry, if it has one whose objects are all in the store
    /// (as [`lookup`] decides).
    pub fn outputs(&self, key: &Digest) -> Option<BTreeMap<String, OutputRecord>> {
        if let Some(outputs) = self.complete.get(key) {
            return Some(outputs.clone());
        }
        let line = self
            .log
            .get_or_init(|| log::Log::read(self.store.root()))
            .get(key);
        if let Some(hit) = line.and_then(|json| decode(key, json)) {
            if complete(self.store.root(), &hit.outputs) {
                return Some(hit.outputs);
            }
            // Collected objects, or a log behind its file: the file decides.
        }
        let entry = lookup(self.store, key)?;
        if line.is_none() {
            if let Ok(mut missing) = self.missing.lock() {
                missing.extend(log_line(&entry));
            }
        }
        Some(entry.outputs)
    }

    /// Adds the entries found only in their files to the log, in one append, and
    /// compacts the log when most of it is superseded lines.
    pub fn finish(self) {
        let missing = self.missing.into_inner().unwrap_or_default();
        let _ = log::append(self.store.root(), &missing);
        if self.log.get().is_some_and(log::Log::wants_compaction) {
            let _ = compact_log(self.store);
        }
    }
}
