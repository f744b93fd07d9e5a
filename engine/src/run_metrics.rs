//! The numbers a run produced: every numeric field of its stages' JSON outputs (an
//! eval's `metrics`) and the last loss each training stage logged, for `tureen runs`,
//! `show`, `diff` and `report`.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Serialize;
use serde_json::Value;
use tureen_artifacts::Digest;

use crate::record::{list_runs, RunRecord, StageRecord, StageStatus};

/// Which run executed each stage key: a stage a run restored from the cache has its
/// logs and metrics in the run that computed it.
#[derive(Debug, Clone, Default)]
pub struct RanBy(std::collections::HashMap<Digest, String>);

impl RanBy {
    /// Reads every record of the store once.
    pub fn scan(store: &Path) -> RanBy {
        let mut map = std::collections::HashMap::new();
        // Oldest first, so the newest run that ran a key wins.
        for id in list_runs(store).into_iter().rev() {
            let Ok(rec) = RunRecord::read(&RunRecord::path(store, &id)) else {
                continue;
            };
            for s in rec.stages.iter().filter(|s| s.status == StageStatus::Ran) {
                if let Some(key) = s.key {
                    map.insert(key, id.clone());
                }
            }
        }
        RanBy(map)
    }

    /// The run whose files (log, metrics) belong to `stage` of `rec`.
    pub fn run_of<'a>(&'a self, rec: &'a RunRecord, stage: &StageRecord) -> &'a str {
        match (stage.status, stage.key) {
            (StageStatus::Cached, Some(key)) => {
                self.0.get(&key).map_or(rec.run_id.as_str(), String::as_str)
            }
            _ => rec.run_id.as_str(),
        }
    }
}

/// The numbers of one stage: metric name (`zeroshot.top1`, `loss`) -> value.
pub type StageMetrics = BTreeMap<String, f64>;

/// The numbers a run produced, by stage: every numeric field of a stage's JSON outputs
/// (an eval's `metrics`: `zeroshot.top1`, `retrieval.image_to_text_r1`, ...), and the
/// last `loss` a training stage logged (`<stage>.metrics.jsonl`).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct RunMetrics {
    /// Stage name -> its numbers (stages without any are absent).
    pub stages: BTreeMap<String, StageMetrics>,
}

/// JSON outputs larger than this are data, not metrics.
const MAX_METRICS_FILE: u64 = 1 << 20;

impl RunMetrics {
    /// Reads the metrics of `rec` from `store`; missing or unreadable files give no
    /// metrics rather than an error (a listing must not fail on one odd run).
    pub fn read(store: &Path, rec: &RunRecord, ran_by: &RanBy) -> RunMetrics {
        let mut stages = BTreeMap::new();
        for s in &rec.stages {
            let mut m = StageMetrics::new();
            for out in s.outputs.values() {
                if let crate::cache::OutputRecord::One(a) = out {
                    if a.file_name.as_deref().is_some_and(|f| f.ends_with(".json")) && !a.tree {
                        flatten_numbers("", &read_json_object(store, &a.digest), &mut m);
                    }
                }
            }
            let log = store
                .join("runs")
                .join(ran_by.run_of(rec, s))
                .join(format!("{}.metrics.jsonl", s.name));
            if let Some(loss) = last_logged(&log, "loss") {
                m.insert("loss".into(), loss);
            }
            if !m.is_empty() {
                stages.insert(s.name.clone(), m);
            }
        }
        RunMetrics { stages }
    }

    /// What a listing shows of a run: the zero-shot top-1 of every eval of a whole model
    /// (not of one checkpoint of a series) and the final loss of every training stage,
    /// as (`eval_soup top-1`, value) in stage order.
    pub fn headline(&self, rec: &RunRecord) -> Vec<(String, f64)> {
        let mut out = Vec::new();
        for s in &rec.stages {
            let Some(m) = self.stages.get(&s.name) else {
                continue;
            };
            let of_a_checkpoint = s.inputs.values().any(|i| i.refs.contains('['));
            if let Some(top1) = m.get("zeroshot.top1").filter(|_| !of_a_checkpoint) {
                out.push((format!("{} top-1", s.name), *top1));
            }
            if let Some(loss) = m.get("loss") {
                out.push((format!("{} loss", s.name), *loss));
            }
        }
        out
    }
}

fn read_json_object(store: &Path, digest: &Digest) -> Value {
    let hex = digest.to_hex();
    let path = store.join("objects").join(&hex[..2]).join(&hex[2..]);
    match std::fs::metadata(&path) {
        Ok(m) if m.len() <= MAX_METRICS_FILE => std::fs::read(&path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or(Value::Null),
        _ => Value::Null,
    }
}

/// Numeric leaves of `value` as dotted names (`zeroshot.top1`).
fn flatten_numbers(prefix: &str, value: &Value, out: &mut StageMetrics) {
    match value {
        Value::Number(n) if !prefix.is_empty() => {
            if let Some(x) = n.as_f64().filter(|x| x.is_finite()) {
                out.insert(prefix.to_string(), x);
            }
        }
        Value::Object(map) => {
            for (k, v) in map {
                let name = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten_numbers(&name, v, out);
            }
        }
        _ => {}
    }
}

/// The last value of `field` in a JSON-lines metrics log.
fn last_logged(path: &Path, field: &str) -> Option<f64> {
    let text = std::fs::read_to_string(path).ok()?;
    text.lines().rev().find_map(|line| {
        serde_json::from_str::<Value>(line)
            .ok()?
            .get(field)?
            .as_f64()
            .filter(|x| x.is_finite())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::RecordedInput;
    use serde_json::Map;

    #[test]
    fn metrics_are_json_outputs_and_the_last_logged_loss() {
        let dir = tempfile::tempdir().unwrap();
        let store = tureen_artifacts::Store::open(dir.path()).unwrap();
        let digest = store
            .add_bytes(br#"{"zeroshot": {"top1": 0.25, "name": "x"}, "n": 3}"#)
            .unwrap();
        let stage = |name: &str, kind: &str, refs: &str, outputs| StageRecord {
            name: name.into(),
            kind: kind.into(),
            status: StageStatus::Ran,
            key: None,
            why: vec![],
            fingerprint: None,
            inputs: BTreeMap::from([(
                "model".to_string(),
                RecordedInput {
                    refs: refs.into(),
                    artifacts: crate::job::JobInput::Series(vec![]),
                },
            )]),
            outputs,
            started: None,
            ended: None,
            seconds: None,
            attempts: 1,
            executor: crate::pipeline::Executor::Local,
            exit_status: Some(0),
            error: None,
            log: None,
            machine: None,
        };
        let json_out = |d| {
            BTreeMap::from([(
                "metrics".to_string(),
                crate::cache::OutputRecord::One(crate::cache::ArtifactRecord {
                    digest: d,
                    tree: false,
                    file_name: Some("metrics.json".into()),
                }),
            )])
        };
        let rec = RunRecord {
            run_id: "r".into(),
            pipeline: "p.yaml".into(),
            pipeline_digest: String::new(),
            status: crate::record::RunStatus::Succeeded,
            params: Map::new(),
            overrides: vec![],
            options: Value::Null,
            started: String::new(),
            ended: None,
            host: String::new(),
            user: String::new(),
            store: None,
            tools: BTreeMap::new(),
            stages: vec![
                stage("core", "train", "", BTreeMap::new()),
                stage("eval", "eval", "core.final", json_out(digest)),
                stage("eval_mid", "eval", "core.checkpoints[1]", json_out(digest)),
            ],
        };
        std::fs::create_dir_all(dir.path().join("runs/r")).unwrap();
        std::fs::write(
            dir.path().join("runs/r/core.metrics.jsonl"),
            "{\"step\": 1, \"loss\": 3.0}\n{\"step\": 2, \"loss\": 2.5}\n{\"step\": 2}\n",
        )
        .unwrap();
        let m = RunMetrics::read(dir.path(), &rec, &RanBy::default());
        assert_eq!(
            m.stages["core"],
            BTreeMap::from([("loss".to_string(), 2.5)])
        );
        assert_eq!(
            m.stages["eval"],
            BTreeMap::from([("n".to_string(), 3.0), ("zeroshot.top1".to_string(), 0.25)])
        );
        assert_eq!(
            m.headline(&rec),
            vec![
                ("core loss".to_string(), 2.5),
                ("eval top-1".to_string(), 0.25)
            ]
        );
    }

}
