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
    /// `tureen` and each kind's code version.
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

/// Finds a run by id or unique prefix; `latest` (or `last`) is the newest run.
pub fn find_run(store: &Path, id: &str) -> anyhow::Result<String> {
    let ids = list_runs(store);
    if matches!(id, "latest" | "last") {
        return ids
            .into_iter()
            .next()
            .ok_or_else(|| anyhow::anyhow!("no runs recorded in {}", store.display()));
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
    fn civil_dates_are_right() {
        assert_eq!(civil(0), (1970, 1, 1, 0, 0, 0));
        assert_eq!(civil(1_700_000_000), (2023, 11, 14, 22, 13, 20));
    }
}
