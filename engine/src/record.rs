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
use crate::kind::KindRegistry;
use crate::pipeline::Executor;

/// The whole record of one run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunRecord {
    /// The run's id (see [`new_run_id`]); also the record's file name.
    pub run_id: String,
    /// The pipeline file, absolute.
    pub pipeline: PathBuf,
    /// `blake3:<hex>` of the pipeline file's text as it was loaded for this run.
    pub pipeline_digest: String,
    /// How the run went (or `running`, while it goes or when it was killed).
    pub status: RunStatus,
    /// Top-level params after `-P` overrides.
    pub params: Map<String, Value>,
    /// The `-P` overrides as given on the command line, in order.
    pub overrides: Vec<String>,
    /// The command line options that shape the run (`--force`, `--only`, replay...).
    pub options: Value,
    /// When the run started: UTC, RFC 3339 with milliseconds.
    pub started: String,
    /// When the run ended, same format; `None` while it runs or if it was killed.
    pub ended: Option<String>,
    /// Hostname of the machine `tureen run` ran on (`unknown` if it had none).
    pub host: String,
    /// The user who ran it, from `USER` or `LOGNAME`.
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

/// How a run ended, as written in its record (`"succeeded"`, ...).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunStatus {
    /// Still running, or killed before it could say otherwise.
    Running,
    /// Every selected stage ran or was cached.
    Succeeded,
    /// Some stage failed.
    Failed,
    /// Stopped by the user (SIGINT).
    Interrupted,
}

/// What happened to one stage in a run, as written in its record (`"ran"`, ...).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StageStatus {
    /// Executing (only in the record written while the run goes).
    Running,
    /// Executed; its outputs are new in the store.
    Ran,
    /// Up to date: its outputs came from the action cache.
    Cached,
    /// It failed (or could not even start).
    Failed,
    /// Not run because an upstream failed.
    Skipped,
    /// Not run, or stopped, because the run was interrupted.
    Cancelled,
}

impl StageStatus {
    /// Whether the stage has outputs in this run (it ran or was restored from the cache).
    pub fn succeeded(self) -> bool {
        matches!(self, StageStatus::Ran | StageStatus::Cached)
    }

    /// The word used in records and tables.
    pub fn as_str(self) -> &'static str {
        match self {
            StageStatus::Running => "running",
            StageStatus::Ran => "ran",
            StageStatus::Cached => "cached",
            StageStatus::Failed => "failed",
            StageStatus::Skipped => "skipped",
            StageStatus::Cancelled => "cancelled",
        }
    }
}

impl std::fmt::Display for StageStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

impl RunStatus {
    /// The word used in records and tables.
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Running => "running",
            RunStatus::Succeeded => "succeeded",
            RunStatus::Failed => "failed",
            RunStatus::Interrupted => "interrupted",
        }
    }
}

impl std::fmt::Display for RunStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

/// One stage of a run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StageRecord {
    /// The stage's name, as `--only` and `replay` take it.
    pub name: String,
    /// The stage's kind (`train`, `soup`, ...).
    pub kind: String,
    /// What happened to the stage in this run.
    pub status: StageStatus,
    /// Its cache key; `None` when it never got that far (skipped, cancelled, or failed
    /// before its inputs were resolved).
    pub key: Option<Digest>,
    /// Why it ran (differences from the last record), or why it was cached.
    pub why: Vec<String>,
    /// What `key` was computed from (`None` exactly when `key` is), which the next
    /// run diffs against to say why a stage re-runs.
    pub fingerprint: Option<Fingerprint>,
    /// Input name -> references as written and the resolved artifacts (what a replay
    /// hands the stage again).
    pub inputs: BTreeMap<String, RecordedInput>,
    /// The outputs it produced or restored, by declared name (empty unless it
    /// succeeded).
    pub outputs: BTreeMap<String, crate::cache::OutputRecord>,
    /// When it got its resources and started executing: UTC, RFC 3339 with
    /// milliseconds; `None` if it never executed (cached, skipped, ...).
    pub started: Option<String>,
    /// When its execution ended, same format; `None` if it never executed.
    pub ended: Option<String>,
    /// Wall-clock seconds from `started` to `ended`, all attempts together.
    pub seconds: Option<f64>,
    /// Attempts made; 0 when it never executed (restored from the cache, skipped, ...).
    pub attempts: u32,
    /// Which executor ran it.
    pub executor: Executor,
    /// Exit status of the stage (0 on success).
    pub exit_status: Option<i32>,
    /// What went wrong, when something did: the last attempt's error with its causes,
    /// or for a skipped stage the upstream that failed.
    pub error: Option<String>,
    /// Log file of the stage, relative to the store.
    pub log: Option<String>,
    /// The machine the stage executed on (CPU, flags, numerics), for a stage that ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub machine: Option<crate::machine::MachineInfo>,
}

/// One input of a recorded stage.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RecordedInput {
    /// The reference(s) as written in the pipeline.
    #[serde(rename = "ref")]
    pub refs: String,
    /// The artifacts those references resolved to in this run.
    pub artifacts: crate::job::JobInput,
}

impl RunRecord {
    /// Where the record of `run_id` lives under the store root `store`:
    /// `<store>/runs/<run-id>.json`. The file need not exist.
    pub fn path(store: &Path, run_id: &str) -> PathBuf {
        store.join("runs").join(format!("{run_id}.json"))
    }

    /// Writes the record to its [`RunRecord::path`], replacing an earlier version of
    /// it atomically (readers see the old record or the new one, never a mix).
    pub fn write(&self, store: &Path) -> std::io::Result<()> {
        let path = RunRecord::path(store, &self.run_id);
        std::fs::create_dir_all(path.parent().expect("runs dir"))?;
        // Compact: a 10,000-stage record is 12 MB pretty-printed and 40% of that is
        // indentation; `tureen show --json` prints it readably.
        // Sized for the usual 700-odd bytes a stage, so that a big record is not copied
        // at every doubling of its buffer.
        let mut bytes = Vec::with_capacity(4096 + 1024 * self.stages.len());
        serde_json::to_writer(&mut bytes, self).expect("records serialize");
        // Atomic (a reader or a killed tureen never sees half a record) but not fsynced:
        // a record is a log, not a result, and two fsyncs would dominate a no-op run.
        // Cache entries, which are results, are fsynced.
        tureen_artifacts::fsutil::replace_unsynced(&path, &bytes)
    }

    /// Reads the record at `path`; the error names the file and says whether it could
    /// not be read or is not a run record.
    pub fn read(path: &Path) -> anyhow::Result<RunRecord> {
        let bytes = std::fs::read(path)
            .map_err(|e| anyhow::anyhow!("cannot read run record {}: {e}", path.display()))?;
        serde_json::from_slice(&bytes)
            .map_err(|e| anyhow::anyhow!("{}: not a tureen run record: {e}", path.display()))
    }

    /// The record of the stage called `name`, if this run selected it.
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

/// The versions a run records: tureen's, each kind's code version, the platform.
pub fn tools(registry: &KindRegistry) -> BTreeMap<String, String> {
    let mut tools = BTreeMap::new();
    tools.insert("tureen".to_string(), env!("CARGO_PKG_VERSION").to_string());
    for name in registry.names() {
        if let Some(k) = registry.get(name) {
            tools.insert(format!("kind:{name}"), k.code_version().to_string());
        }
    }
    tools.insert(
        "os".to_string(),
        format!("{}-{}", std::env::consts::OS, std::env::consts::ARCH),
    );
    tools
}

/// A new run id: `20261122-224107.123-<6 hex>`: UTC time to the millisecond, so ids sort
/// in start order (`latest` depends on it; runs often start within one second), then
/// randomness so two runs started in the same millisecond still differ.
pub fn new_run_id() -> String {
    let now = crate::clock::since_epoch();
    let t = crate::clock::UtcTime::of(now.as_secs());
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
        "{:04}{:02}{:02}-{:02}{:02}{:02}.{:03}-{}",
        t.year,
        t.month,
        t.day,
        t.hour,
        t.minute,
        t.second,
        now.subsec_millis(),
        &noise.to_hex()[..6]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
