//! Run records: `<store>/runs/<run-id>.json`, one per `tureen run`.
//!
//! A record is written when a run starts (status `running`) and rewritten atomically
//! when it ends, so a run killed with `kill -9` still leaves a record saying so.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use tureen_artifacts::Digest;

use crate::key::Fingerprint;

/// The whole record of one run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunRecord {
    pub run_id: String,
    /// The pipeline file (absolute) and its `blake3:` digest.
    pub pipeline: PathBuf,
    pub pipeline_digest: String,
    /// `running`, `succeeded`, `failed` or `interrupted`.
    pub status: String,
    /// Top-level params after `-P` overrides, and the overrides as given.
    pub params: Map<String, Value>,
    pub overrides: Vec<String>,
    /// The command line options that shape the run (`--force`, `--only`, replay...).
    pub options: Value,
    pub started: String,
    pub ended: Option<String>,
    pub host: String,
    pub user: String,
    /// The store the run used (absolute; absent in records written before it was kept).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store: Option<PathBuf>,
    /// `tureen` and each kind's code version; the build (`tureen.git`, `tureen.build`,
    /// `libtorch`) when the command line supplies it.
    pub tools: BTreeMap<String, String>,
    /// Stages in execution order.
    pub stages: Vec<StageRecord>,
}

/// One stage of a run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StageRecord {
    pub name: String,
    pub kind: String,
    /// `ran`, `cached`, `failed`, `skipped` (an upstream failed), `cancelled`.
    pub status: String,
    pub key: Option<Digest>,
    /// Why it ran (differences from the last record), or why it was cached.
    pub why: Vec<String>,
    pub fingerprint: Option<Fingerprint>,
    /// Input name -> references as written and the resolved artifacts (what a replay
    /// hands the stage again).
    pub inputs: BTreeMap<String, RecordedInput>,
    pub outputs: BTreeMap<String, crate::cache::OutputRecord>,
    pub started: Option<String>,
    pub ended: Option<String>,
    pub seconds: Option<f64>,
    pub attempts: u32,
    pub executor: String,
    /// Exit status of the stage (0 on success).
    pub exit_status: Option<i32>,
    pub error: Option<String>,
    /// Log file of the stage, relative to the store.
    pub log: Option<String>,
}

/// One input of a recorded stage.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RecordedInput {
    /// The reference(s) as written in the pipeline.
    #[serde(rename = "ref")]
    pub refs: String,
    pub artifacts: crate::job::JobInput,
}

impl RunRecord {
    pub fn path(store: &Path, run_id: &str) -> PathBuf {
        store.join("runs").join(format!("{run_id}.json"))
    }

    pub fn write(&self, store: &Path) -> std::io::Result<()> {
        let path = RunRecord::path(store, &self.run_id);
        std::fs::create_dir_all(path.parent().expect("runs dir"))?;
        let bytes = serde_json::to_vec_pretty(self).expect("records serialize");
        // Atomic (temp file + rename: a reader or a killed tureen never sees half a
        // record) but not fsynced: a record is a log, not a result, and two fsyncs
        // would dominate a no-op run. Cache entries, which are results, are fsynced.
        let dir = path.parent().expect("runs dir");
        let tmp = tureen_artifacts::fsutil::unique_temp_path(dir, &format!("{}.json", self.run_id));
        let written = std::fs::write(&tmp, &bytes).and_then(|()| std::fs::rename(&tmp, &path));
        if written.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        written
    }

    pub fn read(path: &Path) -> anyhow::Result<RunRecord> {
        let bytes = std::fs::read(path)
            .map_err(|e| anyhow::anyhow!("cannot read run record {}: {e}", path.display()))?;
        serde_json::from_slice(&bytes)
            .map_err(|e| anyhow::anyhow!("{}: not a tureen run record: {e}", path.display()))
    }

    pub fn stage(&self, name: &str) -> Option<&StageRecord> {
        self.stages.iter().find(|s| s.name == name)
    }
}

/// Run ids, newest first (ids start with a UTC timestamp, so names sort by time).
pub fn list_runs(store: &Path) -> Vec<String> {
    let mut ids: Vec<String> = std::fs::read_dir(store.join("runs"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            name.strip_suffix(".json").map(str::to_string)
        })
        .collect();
    ids.sort_unstable_by(|a, b| b.cmp(a));
    ids
}

/// Finds a run by id or unique prefix; `latest` (or `last`) is the newest run and
/// `latest~N` the one N runs before it, as git's `HEAD~N`.
pub fn find_run(store: &Path, id: &str) -> anyhow::Result<String> {
    let ids = list_runs(store);
    if let Some(back) = runs_back(id)? {
        if ids.is_empty() {
            anyhow::bail!("no runs recorded in {}", store.display());
        }
        return ids.get(back).cloned().ok_or_else(|| {
            anyhow::anyhow!(
                "`{id}`: only {} run(s) are recorded in {}",
                ids.len(),
                store.display()
            )
        });
    }
    let matches: Vec<&String> = ids.iter().filter(|r| r.starts_with(id)).collect();
    match matches.as_slice() {
        [one] => Ok((*one).clone()),
        [] => anyhow::bail!("no run `{id}` in {} (see `tureen runs`)", store.display()),
        many => anyhow::bail!(
            "`{id}` matches {} runs: {}",
            many.len(),
            many.iter()
                .take(5)
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// `latest` -> 0, `latest~2` -> 2 (also `last`); `None` for anything else.
fn runs_back(id: &str) -> anyhow::Result<Option<usize>> {
    let (name, back) = id.split_once('~').unwrap_or((id, "0"));
    if !matches!(name, "latest" | "last") {
        return Ok(None);
    }
    let back = if back.is_empty() { "1" } else { back };
    back.parse()
        .map(Some)
        .map_err(|_| anyhow::anyhow!("`{id}`: expected `{name}~N` with N a number of runs back"))
}

/// The most recent record of `stage` in runs of the pipeline file `pipeline`, with its
/// run id (used to explain why a stage runs again).
pub fn last_stage_record(
    store: &Path,
    pipeline: &Path,
    stage: &str,
    skip_run: Option<&str>,
) -> Option<(String, StageRecord)> {
    for id in list_runs(store).into_iter().take(200) {
        if Some(id.as_str()) == skip_run {
            continue;
        }
        let Ok(rec) = RunRecord::read(&RunRecord::path(store, &id)) else {
            continue;
        };
        if rec.pipeline != pipeline {
            continue;
        }
        if let Some(s) = rec.stages.into_iter().find(|s| {
            s.name == stage
                && s.fingerprint.is_some()
                && matches!(s.status.as_str(), "ran" | "cached")
        }) {
            return Some((id, s));
        }
    }
    None
}

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
            for s in rec.stages.iter().filter(|s| s.status == "ran") {
                if let Some(key) = s.key {
                    map.insert(key, id.clone());
                }
            }
        }
        RanBy(map)
    }

    /// The run whose files (log, metrics) belong to `stage` of `rec`.
    pub fn run_of<'a>(&'a self, rec: &'a RunRecord, stage: &StageRecord) -> &'a str {
        match (stage.status.as_str(), stage.key) {
            ("cached", Some(key)) => self.0.get(&key).map_or(rec.run_id.as_str(), String::as_str),
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

/// This machine's host name.
pub fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most buf.len() bytes into our buffer.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc == 0 {
        let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
        String::from_utf8_lossy(&buf[..end]).into_owned()
    } else {
        "unknown".to_string()
    }
}

pub fn username() -> String {
    std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| "unknown".to_string())
}

/// Now, as `2026-11-22T22:41:07.123Z`.
pub fn now_rfc3339() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let (y, mo, d, h, mi, s) = civil(now.as_secs());
    format!(
        "{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{:03}Z",
        now.subsec_millis()
    )
}

/// A new run id: `20261122-224107.123-<6 hex>`: UTC time to the millisecond, so ids sort
/// in start order (`latest` depends on it; runs often start within one second), then
/// randomness so two runs started in the same millisecond still differ.
pub fn new_run_id() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let (y, mo, d, h, mi, s) = civil(now.as_secs());
    let noise = blake3::hash(
        format!(
            "{}-{}-{:?}",
            std::process::id(),
            now.as_nanos(),
            std::thread::current().id()
        )
        .as_bytes(),
    );
    format!(
        "{y:04}{mo:02}{d:02}-{h:02}{mi:02}{s:02}.{:03}-{}",
        now.subsec_millis(),
        &noise.to_hex()[..6]
    )
}

/// Seconds since the epoch -> (year, month, day, hour, minute, second) in UTC.
fn civil(secs: u64) -> (i64, u32, u32, u32, u32, u32) {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Howard Hinnant's days-to-civil algorithm.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (
        y,
        m,
        d,
        (rem / 3600) as u32,
        (rem % 3600 / 60) as u32,
        (rem % 60) as u32,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

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
            status: "ran".into(),
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
            executor: "local".into(),
            exit_status: Some(0),
            error: None,
            log: None,
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
            status: "succeeded".into(),
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

    #[test]
    fn latest_tilde_counts_runs_back() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("runs")).unwrap();
        for id in ["20260101-000000.000-aaaaaa", "20260102-000000.000-bbbbbb"] {
            std::fs::write(dir.path().join(format!("runs/{id}.json")), "{}").unwrap();
        }
        let find = |id: &str| find_run(dir.path(), id).map_err(|e| e.to_string());
        assert_eq!(find("latest").unwrap(), "20260102-000000.000-bbbbbb");
        assert_eq!(find("latest~1").unwrap(), "20260101-000000.000-aaaaaa");
        assert_eq!(find("last~").unwrap(), "20260101-000000.000-aaaaaa");
        assert!(find("latest~2").unwrap_err().contains("only 2 run(s)"));
        assert!(find("latest~x").unwrap_err().contains("latest~N"));
    }

    #[test]
    fn civil_dates_are_right() {
        assert_eq!(civil(0), (1970, 1, 1, 0, 0, 0));
        assert_eq!(civil(1_700_000_000), (2023, 11, 14, 22, 13, 20));
    }
}
