//! Where a model sits on the step axis of the training run it came from, found from the
//! store alone (a job carries digests, not the pipeline).
//!
//! TensorBoard draws each run against one x axis, the step. A training checkpoint
//! (a tree with a `state.json`) knows its own step and samples seen. A rewind continues
//! its parent from one of the parent's checkpoints at another batch size, so its own
//! step count is not the parent's: on the parent's axis it branches at the step of the
//! checkpoint it started from and advances one step per optimizer step from there
//! (`samples since the branch / its batch size`). Which stage produced an artifact, and
//! from what, is in the action cache (`<store>/cache/*.json`: outputs and input
//! digests); a stage's `final` model sits where its last checkpoint does, and a model
//! made from others (a soup) where the latest of them does.

use std::collections::HashMap;

use serde::Deserialize;
use tureen_artifacts::store::ObjectKind;
use tureen_artifacts::{Digest, Store};

use crate::cache::{CacheEntry, OutputRecord};
use crate::key::InputDigests;

/// The input through which a stage continues another's checkpoint (`rewind`).
pub const BRANCH_INPUT: &str = "from";

/// The checkpoint file of a training checkpoint directory.
const STATE_FILE: &str = "state.json";

/// Lineage chains longer than this are not followed (a guard, not a limit in practice).
const MAX_DEPTH: usize = 16;

/// A point on a training run's step axis.
#[derive(Debug, Clone, PartialEq)]
pub struct Position {
    /// The stage that produced the model (whose TensorBoard run it belongs to), when the
    /// store knows it.
    pub stage: Option<String>,
    /// The step on the axis of the run it descends from.
    pub step: f64,
    /// Samples seen up to that step on the same axis.
    pub samples: f64,
}

/// The part of a checkpoint's `state.json` that places it.
#[derive(Debug, Clone, Copy, Deserialize)]
struct CheckpointState {
    step: f64,
    samples_seen: f64,
    batch_size: f64,
}

/// Looks artifacts up in one store's action cache (read on first need).
pub struct Lineage<'s> {
    store: &'s Store,
    entries: Option<Vec<CacheEntry>>,
    /// Digest -> (entry, output name).
    producers: HashMap<Digest, (usize, String)>,
}

impl<'s> Lineage<'s> {
    /// Lineage over `store`'s action cache (nothing is read until a lookup needs it).
    pub fn new(store: &'s Store) -> Lineage<'s> {
        Lineage {
            store,
            entries: None,
            producers: HashMap::new(),
        }
    }

    /// Where the model `digest` sits, or `None` if it is not (and does not descend from)
    /// a training checkpoint.
    pub fn position(&mut self, digest: &Digest) -> Option<Position> {
        self.position_at(digest, 0)
    }

    /// The branch point of a stage continuing the checkpoint `from`: where that
    /// checkpoint sits on its own run's axis.
    pub fn branch(&mut self, from: &Digest) -> Option<Position> {
        self.position(from)
    }

    fn position_at(&mut self, digest: &Digest, depth: usize) -> Option<Position> {
        if depth > MAX_DEPTH {
            return None;
        }
        let producer = self.producer(digest);
        if let Some(state) = self.checkpoint_state(digest) {
            let branch = producer
                .as_ref()
                .and_then(|e| one_input(e, BRANCH_INPUT))
                .and_then(|from| self.position_at(&from, depth + 1));
            let step = match &branch {
                Some(b) if state.batch_size > 0.0 => {
                    b.step + (state.samples_seen - b.samples) / state.batch_size
                }
                _ => state.step,
            };
            return Some(Position {
                stage: producer.map(|e| e.stage),
                step,
                samples: state.samples_seen,
            });
        }
        let entry = producer?;
        // A final model: where the stage's last checkpoint is.
        if let Some(OutputRecord::Series { series }) = entry.outputs.get("checkpoints") {
            if let Some(last) = series.last() {
                let mut p = self.position_at(&last.digest, depth + 1)?;
                p.stage = Some(entry.stage);
                return Some(p);
            }
        }
        // A model made from models: where the latest of them is.
        let inputs: Vec<Digest> = entry
            .fingerprint
            .inputs
            .values()
            .flat_map(|d| match d {
                InputDigests::One(d) => vec![*d],
                InputDigests::Series(ds) => ds.clone(),
            })
            .collect();
        let latest = inputs
            .iter()
            .filter_map(|d| self.position_at(d, depth + 1))
            .max_by(|a, b| a.step.total_cmp(&b.step))?;
        Some(Position {
            stage: Some(entry.stage),
            ..latest
        })
    }

    /// `state.json` of a checkpoint directory in the store.
    fn checkpoint_state(&self, digest: &Digest) -> Option<CheckpointState> {
        if self.store.kind(digest).ok()? != ObjectKind::Tree {
            return None;
        }
        let tree = self.store.read_tree(digest).ok()?;
        let state = tree.files.get(STATE_FILE)?;
        let bytes = std::fs::read(self.store.object_path(state)).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    /// The cache entry of the stage that produced `digest`.
    fn producer(&mut self, digest: &Digest) -> Option<CacheEntry> {
        if self.entries.is_none() {
            self.index();
        }
        let (i, _) = self.producers.get(digest)?;
        self.entries.as_ref()?.get(*i).cloned()
    }

    fn index(&mut self) {
        let dir = self.store.root().join("cache");
        let mut entries: Vec<CacheEntry> = std::fs::read_dir(&dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
            .filter_map(|e| serde_json::from_slice(&std::fs::read(e.path()).ok()?).ok())
            .collect();
        // The same artifact can come out of several entries (a stage re-run with new
        // params that gave the same bytes); the oldest one is where it came from.
        entries.sort_by(|a: &CacheEntry, b| b.created.cmp(&a.created));
        for (i, entry) in entries.iter().enumerate() {
            for (name, out) in &entry.outputs {
                for a in out.artifacts() {
                    self.producers.insert(a.digest, (i, name.clone()));
                }
            }
        }
        self.entries = Some(entries);
    }
}

fn one_input(entry: &CacheEntry, name: &str) -> Option<Digest> {
    match entry.fingerprint.inputs.get(name)? {
        InputDigests::One(d) => Some(*d),
        InputDigests::Series(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use serde_json::json;

    use super::*;
    use crate::cache::{self, ArtifactRecord};
    use crate::key::{Fingerprint, KEY_FORMAT};

    fn checkpoint(store: &Store, step: u64, samples: u64, batch: u64) -> Digest {
        let dir = tempfile::tempdir().unwrap();
        let state = json!({"step": step, "samples_seen": samples, "batch_size": batch});
        std::fs::write(dir.path().join(STATE_FILE), state.to_string()).unwrap();
        std::fs::write(dir.path().join("model.safetensors"), format!("w{step}")).unwrap();
        store.add_dir(dir.path()).unwrap()
    }

    fn record(
        store: &Store,
        stage: &str,
        inputs: Vec<(&str, InputDigests)>,
        outputs: Vec<(&str, OutputRecord)>,
    ) {
        let fingerprint = Fingerprint {
            format: KEY_FORMAT,
            kind: stage.into(),
            code_version: "1".into(),
            params: serde_json::Map::new(),
            inputs: inputs
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect(),
            deps: vec![],
            env: BTreeMap::new(),
            world: 1,
        };
        let entry = CacheEntry {
            key: fingerprint.key(),
            stage: stage.into(),
            kind: stage.into(),
            run_id: "r".into(),
            created: "2026-01-01T00:00:00.000Z".into(),
            fingerprint,
            outputs: outputs
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect(),
        };
        cache::insert(store, &entry).unwrap();
    }

    fn one(digest: Digest) -> OutputRecord {
        OutputRecord::One(ArtifactRecord {
            digest,
            tree: false,
            file_name: None,
        })
    }

    fn series(ds: &[Digest]) -> OutputRecord {
        OutputRecord::Series {
            series: ds
                .iter()
                .map(|d| ArtifactRecord {
                    digest: *d,
                    tree: true,
                    file_name: None,
                })
                .collect(),
        }
    }

    /// core: 4 checkpoints of 10 steps at batch 8; rewind from core's 3rd (step 30) at
    /// batch 4, 2 checkpoints of 12 of its own steps; a soup of the two finals.
    #[test]
    fn rewinds_finals_and_soups_sit_on_the_parents_step_axis() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let core: Vec<Digest> = (1..=4)
            .map(|k| checkpoint(&store, 10 * k, 80 * k, 8))
            .collect();
        let core_final = store.add_bytes(b"core final").unwrap();
        record(
            &store,
            "core",
            vec![],
            vec![("checkpoints", series(&core)), ("final", one(core_final))],
        );
        // Its own schedule: 3 intervals x 12 steps at the start, 36 -> 48 -> 60.
        let rewind: Vec<Digest> = [(48, 240 + 48), (60, 240 + 96)]
            .iter()
            .map(|&(step, samples)| checkpoint(&store, step, samples, 4))
            .collect();
        let rewind_final = store.add_bytes(b"rewind final").unwrap();
        record(
            &store,
            "rewind",
            vec![("from", InputDigests::One(core[2]))],
            vec![
                ("checkpoints", series(&rewind)),
                ("final", one(rewind_final)),
            ],
        );
        let soup = store.add_bytes(b"soup").unwrap();
        record(
            &store,
            "soup",
            vec![(
                "checkpoints",
                InputDigests::Series(vec![core_final, rewind_final]),
            )],
            vec![("soup", one(soup))],
        );
        let mut lineage = Lineage::new(&store);
        let at =
            |l: &mut Lineage<'_>, d: &Digest| l.position(d).map(|p| (p.stage.unwrap(), p.step));
        assert_eq!(at(&mut lineage, &core[1]), Some(("core".into(), 20.0)));
        assert_eq!(at(&mut lineage, &core_final), Some(("core".into(), 40.0)));
        // 48 samples at batch 4 after the branch at step 30: 12 steps on.
        assert_eq!(at(&mut lineage, &rewind[0]), Some(("rewind".into(), 42.0)));
        assert_eq!(
            at(&mut lineage, &rewind_final),
            Some(("rewind".into(), 54.0))
        );
        assert_eq!(at(&mut lineage, &soup), Some(("soup".into(), 54.0)));
        let unrelated = store.add_bytes(b"data").unwrap();
        assert_eq!(lineage.position(&unrelated), None);
    }
}
