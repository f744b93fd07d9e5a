//! The checkpoint journal: `<store>/journal/<key-hex>.json` lists the artifacts a
//! running stage committed so far, in order. Each commit lands in the store before the
//! journal names it, and the journal is replaced atomically, so after a crash it names
//! only complete objects. A re-run with the same key hands them back to the stage
//! ([`CheckpointJournal::committed`]) so it can resume; the journal is removed when the
//! stage completes (its outputs then live in the action cache).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tureen_artifacts::{Digest, Store};

use crate::cache::ArtifactRecord;
use crate::kind::{Artifact, CheckpointJournal};

#[derive(Debug, Default, Serialize, Deserialize)]
struct JournalFile {
    key: String,
    stage: String,
    committed: Vec<ArtifactRecord>,
}

/// The journal of one stage key.
pub struct StoreJournal<'s> {
    store: &'s Store,
    path: PathBuf,
    file: JournalFile,
}

impl<'s> StoreJournal<'s> {
    /// Opens (or starts) the journal of `key`. A journal that cannot be parsed is
    /// ignored (treated as empty), never fatal: it only saves work.
    pub fn open(store: &'s Store, key: &Digest, stage: &str) -> StoreJournal<'s> {
        let path = journal_path(store.root(), key);
        let mut file: JournalFile = std::fs::read(&path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        // Keep only commits whose objects survived (e.g. not garbage-collected).
        file.committed.retain(|a| store.contains(&a.digest));
        file.key = key.to_string();
        file.stage = stage.to_string();
        StoreJournal { store, path, file }
    }

    /// Everything committed, as records (for the cache entry of `Produced::Stored`).
    pub fn records(&self) -> &[ArtifactRecord] {
        &self.file.committed
    }

    /// Forgets the journal (the stage completed).
    pub fn remove(self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Path of the journal for `key` under the store root `store`:
/// `<store>/journal/<key-hex>.json`. The file exists only while a stage with that key
/// is running or was interrupted.
pub fn journal_path(store: &Path, key: &Digest) -> PathBuf {
    store.join("journal").join(format!("{}.json", key.to_hex()))
}

impl CheckpointJournal for StoreJournal<'_> {
    fn commit(&mut self, path: &Path) -> anyhow::Result<Artifact> {
        let file_name = path.file_name().map(|n| n.to_string_lossy().into_owned());
        let (digest, tree) = if path.is_dir() {
            let d = self.store.add_dir(path)?;
            std::fs::remove_dir_all(path).ok();
            (d, true)
        } else {
            (self.store.ingest(path)?, false)
        };
        self.file.committed.push(ArtifactRecord {
            digest,
            tree,
            file_name,
        });
        let bytes = serde_json::to_vec_pretty(&self.file).expect("journals serialize");
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        tureen_artifacts::fsutil::write_atomic(&self.path, &bytes)?;
        Ok(Artifact {
            digest,
            path: artifact_path(self.store, &digest, tree)?,
        })
    }

    fn committed(&self) -> Vec<Artifact> {
        self.file
            .committed
            .iter()
            .filter_map(|a| {
                let path = artifact_path(self.store, &a.digest, a.tree).ok()?;
                Some(Artifact {
                    digest: a.digest,
                    path,
                })
            })
            .collect()
    }
}

/// A read-only path for an artifact: a file object is its object file; a tree is
/// materialized once under `<store>/tmp/trees/<hex>` and shared by every reader.
pub fn artifact_path(store: &Store, digest: &Digest, tree: bool) -> anyhow::Result<PathBuf> {
    if !tree {
        return Ok(store.object_path(digest));
    }
    let dir = store.tmp_dir().join("trees").join(digest.to_hex());
    if !dir.is_dir() {
        match store.materialize(digest, &dir) {
            Ok(_) => {}
            // Another stage materialized it meanwhile.
            Err(_) if dir.is_dir() => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(dir)
}
