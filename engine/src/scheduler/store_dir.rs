//! The store a run uses, and its indexes read ahead: the action cache's log and the stat
//! cache, parsed on a thread of their own while the caller loads the pipeline, and then
//! the log's entries checked (decoded, their objects found) until the run needs them.
//! Loading the pipeline keeps only one core busy; in a no-op run of 10,000 stages that
//! parsing was some 7% of the time (perf), and the checks a `stat` per stage more.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use tureen_artifacts::store::StatCacheSnapshot;
use tureen_artifacts::Store;

use crate::cache::{ActionCache, LogSnapshot};

/// Below this size of the cache log (some 250 entries) the indexes are read when first
/// needed: reading ahead pays only when parsing costs more than starting a thread, and
/// this is a safe bound for that, not a measured break-even.
const READ_AHEAD_MIN_LOG_BYTES: u64 = 64 << 10;

/// The directory of the store a run uses, with its indexes perhaps being read.
#[derive(Debug)]
pub struct StoreDir {
    dir: PathBuf,
    reading: Option<Reading>,
}

/// The thread reading a store's indexes, and the flag that tells it the run needs them.
#[derive(Debug)]
struct Reading {
    thread: JoinHandle<(LogSnapshot, StatCacheSnapshot)>,
    needed: Arc<AtomicBool>,
}

impl StoreDir {
    /// The store at `dir`; its indexes are read when a lookup first needs them.
    pub fn at(dir: &Path) -> StoreDir {
        StoreDir {
            dir: dir.to_path_buf(),
            reading: None,
        }
    }

    /// The store at `dir`, its indexes read from now on, on a thread of their own (if
    /// there is a store there whose cache log is big enough to be worth a thread).
    pub fn read_ahead(dir: &Path) -> StoreDir {
        let log_len = std::fs::metadata(crate::cache::log_path(dir)).map_or(0, |m| m.len());
        if log_len < READ_AHEAD_MIN_LOG_BYTES {
            return StoreDir::at(dir);
        }
        StoreDir::reading(dir)
    }

    /// The store at `dir`, its indexes being read on a thread of their own.
    fn reading(dir: &Path) -> StoreDir {
        let path = dir.to_path_buf();
        let needed = Arc::new(AtomicBool::new(false));
        let stop = Arc::clone(&needed);
        let reading = std::thread::Builder::new()
            .name("store-indexes".into())
            .spawn(move || {
                let mut log = LogSnapshot::read(&path);
                let stat = Store::read_stat_cache(&path);
                log.check_entries(&stop);
                (log, stat)
            })
            .ok()
            .map(|thread| Reading { thread, needed });
        StoreDir {
            dir: dir.to_path_buf(),
            reading,
        }
    }

    /// The store's directory.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// `store`'s action cache, with what was read ahead (if it is this store's) handed
    /// to it and to `store`'s stat cache.
    pub(crate) fn action_cache(self, store: &Store) -> ActionCache<'_> {
        let read = self.reading.map(|r| {
            r.needed.store(true, Ordering::Relaxed);
            r.thread.join()
        });
        match read {
            Some(Ok((log, stat))) => {
                store.adopt_stat_cache(stat);
                ActionCache::with_log(store, log)
            }
            _ => ActionCache::new(store),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::cache::{self, ArtifactRecord, CacheEntry, OutputRecord};
    use crate::key::{Fingerprint, KEY_FORMAT};

    /// A store at `dir` holding one object and one cache entry naming it; its key.
    fn store_with_one_entry(dir: &Path) -> (Store, tureen_artifacts::Digest) {
        let store = Store::open(dir).unwrap();
        let digest = store.add_bytes(b"output").unwrap();
        let fingerprint = Fingerprint {
            format: KEY_FORMAT,
            kind: "command".into(),
            code_version: "1".into(),
            params: serde_json::Map::new(),
            inputs: BTreeMap::new(),
            deps: vec![],
            env: BTreeMap::new(),
            world: 1,
        };
        let output = OutputRecord::One(ArtifactRecord {
            digest,
            tree: false,
            file_name: Some("o.txt".into()),
        });
        let entry = CacheEntry {
            key: fingerprint.key(),
            stage: "s".into(),
            kind: "command".into(),
            run_id: "r".into(),
            created: "2026-01-01T00:00:00.000Z".into(),
            fingerprint,
            outputs: BTreeMap::from([("o".to_string(), output)]),
        };
        cache::insert(&store, &entry).unwrap();
        (store, entry.key)
    }

    #[test]
    fn lookups_see_the_indexes_as_they_were_read_ahead_and_only_for_their_own_store() {
        let dir = tempfile::tempdir().unwrap();
        let (a, key) = store_with_one_entry(&dir.path().join("a"));
        let (b, _) = store_with_one_entry(&dir.path().join("b"));
        let forget_entries = |store: &Store| {
            std::fs::remove_dir_all(store.root().join("cache")).unwrap();
            std::fs::create_dir(store.root().join("cache")).unwrap();
        };
        // What was read of `a` does not answer for `b`, which reads its own.
        let cache_of_b = StoreDir::reading(a.root()).action_cache(&b);
        forget_entries(&b);
        assert!(cache_of_b.outputs(&key).is_none());
        // Once read ahead, `a`'s entry is found from its log alone: its files may go.
        let cache_of_a = StoreDir::reading(a.root()).action_cache(&a);
        forget_entries(&a);
        assert!(cache_of_a.outputs(&key).is_some());
        let lazy = StoreDir::at(a.root()).action_cache(&a);
        assert!(lazy.outputs(&key).is_none());
    }

    #[test]
    fn entries_are_checked_ahead_until_the_run_needs_them_and_incomplete_ones_are_left_to_the_lookup(
    ) {
        let dir = tempfile::tempdir().unwrap();
        let (store, key) = store_with_one_entry(dir.path());
        // Checked ahead: the entry is answered from what was checked.
        let mut checked = LogSnapshot::read(store.root());
        checked.check_entries(&AtomicBool::new(false));
        assert!(ActionCache::with_log(&store, checked)
            .outputs(&key)
            .is_some());
        // Told it is needed at once, the reader checks nothing; the lookup does it all.
        let mut unchecked = LogSnapshot::read(store.root());
        unchecked.check_entries(&AtomicBool::new(true));
        let cache = ActionCache::with_log(&store, unchecked);
        assert!(cache.outputs(&key).is_some());
        // An entry whose object is gone is not kept as complete: its lookup misses.
        tureen_artifacts::fsutil::remove_all(&store.root().join("objects")).unwrap();
        let mut gone = LogSnapshot::read(store.root());
        gone.check_entries(&AtomicBool::new(false));
        assert!(ActionCache::with_log(&store, gone).outputs(&key).is_none());
    }

    #[test]
    fn only_a_big_cache_log_is_worth_a_thread() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = store_with_one_entry(dir.path());
        assert!(StoreDir::read_ahead(store.root()).reading.is_none());
        let log = crate::cache::log_path(store.root());
        let line = std::fs::read(&log).unwrap();
        let copies = READ_AHEAD_MIN_LOG_BYTES as usize / line.len() + 1;
        std::fs::write(&log, line.repeat(copies)).unwrap();
        assert!(StoreDir::read_ahead(store.root()).reading.is_some());
    }
}
