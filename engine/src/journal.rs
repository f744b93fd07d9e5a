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
    /// The job's scratch directory for read-only views of committed trees.
    views: PathBuf,
    path: PathBuf,
    file: JournalFile,
}

impl<'s> StoreJournal<'s> {
    /// Opens (or starts) the journal of `key`. A journal that cannot be parsed is
    /// ignored (treated as empty), never fatal: it only saves work. Committed trees are
    /// handed to the stage as views under `views` (the job's scratch directory, removed
    /// with it), so the store never keeps a second copy of a checkpoint.
    pub fn open(store: &'s Store, views: &Path, key: &Digest, stage: &str) -> StoreJournal<'s> {
        let path = journal_path(store.root(), key);
        let mut file: JournalFile = std::fs::read(&path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        // Keep only commits whose objects survived (e.g. not garbage-collected).
        file.committed.retain(|a| store.contains(&a.digest));
        file.key = key.to_string();
        file.stage = stage.to_string();
        StoreJournal {
            store,
            views: views.to_path_buf(),
            path,
            file,
        }
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
            path: committed_path(self.store, &self.views, &digest, tree)?,
        })
    }

    fn committed(&self) -> Vec<Artifact> {
        self.file
            .committed
            .iter()
            .filter_map(|a| {
                let path = committed_path(self.store, &self.views, &a.digest, a.tree).ok()?;
                Some(Artifact {
                    digest: a.digest,
                    path,
                })
            })
            .collect()
    }
}

/// A read-only path for an input artifact: a file object is its object file; a tree is
/// materialized (reflinks, read-only hard links or copies, see [`Store::materialize`])
/// under `views/<hex>`, the job's scratch directory, which goes when the job ends.
pub fn artifact_path(
    store: &Store,
    views: &Path,
    digest: &Digest,
    tree: bool,
) -> anyhow::Result<PathBuf> {
    if !tree {
        return Ok(store.object_path(digest));
    }
    let dir = views.join(digest.to_hex());
    if !dir.is_dir() {
        store.materialize(digest, &dir)?;
    }
    Ok(dir)
}

/// A path for a committed checkpoint: a file object is its object file; a tree is a
/// directory of symlinks to its member objects under `views/committed-<hex>` (no bytes
/// copied: a training stage commits hundreds of checkpoints, and only its own trainer
/// reads them, to resume and to copy the final weights).
fn committed_path(
    store: &Store,
    views: &Path,
    digest: &Digest,
    tree: bool,
) -> anyhow::Result<PathBuf> {
    if !tree {
        return Ok(store.object_path(digest));
    }
    let dir = views.join(format!("committed-{}", digest.to_hex()));
    if dir.is_dir() {
        return Ok(dir);
    }
    let manifest = store.read_tree(digest)?;
    let temp = views.join(format!(".committed-{}.tmp", digest.to_hex()));
    let _ = std::fs::remove_dir_all(&temp);
    for (rel, member) in &manifest.files {
        let link = tureen_artifacts::store::join_relative(&temp, rel);
        if let Some(parent) = link.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::os::unix::fs::symlink(store.object_path(member), &link)?;
    }
    std::fs::create_dir_all(&temp)?;
    std::fs::rename(&temp, &dir)?;
    Ok(dir)
}
