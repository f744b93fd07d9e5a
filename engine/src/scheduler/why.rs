//! Why a stage runs: its fingerprint against the one in its last successful record
//! (`param lr: 0.001 -> 0.002`, `dependency data.csv changed`, `never ran`).

use std::path::PathBuf;

use serde_json::{Map, Value};

use crate::key::Fingerprint;
use crate::pipeline::Stage;
use crate::record::{self, RunRecord};

/// Earlier run records of one pipeline, newest first, read on first need (a run where
/// everything is cached never reads them).
pub(super) struct History {
    store: PathBuf,
    pipeline: PathBuf,
    records: Option<Vec<RunRecord>>,
}

/// How far back explanations look.
const LOOK_BACK: usize = 200;

impl History {
    pub fn new(store: PathBuf, pipeline: PathBuf) -> History {
        History {
            store,
            pipeline,
            records: None,
        }
    }

    fn records(&mut self) -> &[RunRecord] {
        let (store, pipeline) = (&self.store, &self.pipeline);
        self.records.get_or_insert_with(|| {
            record::list_runs(store)
                .into_iter()
                .take(LOOK_BACK)
                .filter_map(|id| RunRecord::read(&RunRecord::path(store, &id)).ok())
                .filter(|r| &r.pipeline == pipeline)
                .collect()
        })
    }

    /// What changed for `stage` (fingerprint `fp`) since its last successful record.
    /// `params` are the pipeline's top-level params now. With nothing changed, a stage
    /// that is not `forced` is said to have lost its cache entry.
    pub fn changes(
        &mut self,
        stage: &Stage,
        fp: &Fingerprint,
        params: &Map<String, Value>,
        forced: bool,
    ) -> Vec<String> {
        let last = self.records().iter().find_map(|r| {
            let s = r
                .stages
                .iter()
                .find(|s| s.name == stage.name && s.status.succeeded())?;
            Some((r.run_id.clone(), s.fingerprint.clone()?, r.params.clone()))
        });
        let Some((run, old, old_params)) = last else {
            return vec!["never ran (no earlier record)".to_string()];
        };
        let mut diff = Vec::new();
        for name in &stage.param_refs {
            let (now, then) = (params.get(name), old_params.get(name));
            if now != then {
                let show = |v: Option<&Value>| {
                    v.map(|v| v.to_string()).unwrap_or_else(|| "(unset)".into())
                };
                diff.push(format!("param {name}: {} -> {}", show(then), show(now)));
            }
        }
        let stage_diff = fp.diff(&old);
        if diff.is_empty() {
            diff = stage_diff;
        } else {
            // Stage params that only changed through the top-level ones are
            // consequences, not causes.
            diff.extend(stage_diff.into_iter().filter(|d| !d.starts_with("param ")));
        }
        if diff.is_empty() && !forced {
            diff.push(format!("no complete cache entry (same inputs as run {run}; outputs removed or the run did not finish)"));
        }
        diff
    }
}
