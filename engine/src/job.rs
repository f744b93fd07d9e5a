//! One resolved stage, ready to execute anywhere that sees the store: [`StageJob`].
//!
//! The local executor runs [`execute`] on a thread; the Slurm executor writes the job
//! to a file and runs `tureen stage-exec --job FILE` inside an allocation, which calls
//! the same [`execute`] and writes a [`JobResult`] next to it. Nothing in a job refers
//! to the pipeline file: it carries every resolved param and input digest, so a
//! compute node never re-parses or re-validates the pipeline.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{LineWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context as _;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use tureen_artifacts::{Digest, Store};

use crate::cache::{self, ArtifactRecord, OutputRecord};
use crate::clock::now_rfc3339;
use crate::journal::{artifact_path, StoreJournal};
use crate::key::Fingerprint;
use crate::kind::{
    Artifact, InputValue, KindRegistry, OutputDecl, OutputShape, Produced, Runner, StageLog,
    StageWork,
};
use tureen_artifacts::store::lock::FileLock;
use crate::rank::Rank;

mod follower;
mod leader;

pub use follower::rank_path;

/// Everything needed to execute one stage, serializable (the `stage-exec` job file).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StageJob {
    /// The run this execution belongs to.
    pub run_id: String,
    /// The stage's name.
    pub stage: String,
    /// Its kind.
    pub kind: String,
    /// Where the kind's work runs (tureen, or a worker program).
    #[serde(default)]
    pub runner: Runner,
    /// The stage's cache key (BLAKE3 of the fingerprint).
    pub key: Digest,
    /// What the key was computed from.
    pub fingerprint: Fingerprint,
    /// The resolved params (the fingerprint's).
    pub params: Map<String, Value>,
    /// The resolved inputs, by name.
    pub inputs: BTreeMap<String, JobInput>,
    /// Declared outputs: name and whether it is a series.
    pub outputs: Vec<JobOutput>,
    /// The store (absolute).
    pub store: PathBuf,
    /// The pipeline's directory (absolute); command stages run here.
    pub workspace: PathBuf,
    /// The declared environment (the fingerprint's).
    pub env: BTreeMap<String, String>,
    /// GPU ids handed out locally (empty on Slurm, where the allocation decides).
    pub gpus: Vec<u32>,
    /// Log file of this stage in this run (`<run_dir>/<stage>.log`), appended to: the
    /// kind's lines plus tureen's own `== tureen:` lines.
    pub log: PathBuf,
    /// Metrics file of this stage in this run (`<run_dir>/<stage>.metrics.jsonl`), one
    /// JSON object a line; created on the first metric, so absent if none was logged.
    pub metrics: PathBuf,
    /// TensorBoard event directory for this stage's metrics (`None`: none written).
    pub tensorboard: Option<PathBuf>,
    /// Attempts to make (1 + retries).
    pub attempts: u32,
    /// `false` for replays: run even if the action cache has the key, and do not
    /// record the result in the cache.
    pub use_cache: bool,
    /// `--force`: run even if another process completes the same key meanwhile.
    #[serde(default)]
    pub force: bool,
}

/// A declared output.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobOutput {
    /// Its name.
    pub name: String,
    /// Whether it is a series.
    pub series: bool,
}

/// The run a [`StageJob`] is made for: where its files go and how it treats the cache.
#[derive(Debug, Clone)]
pub struct JobRun<'a> {
    /// The run's id.
    pub run_id: &'a str,
    /// `<store>/runs/<run-id>/`: logs, metrics, job files.
    pub run_dir: &'a Path,
    /// The store (absolute).
    pub store: &'a Path,
    /// The pipeline's directory (absolute).
    pub workspace: &'a Path,
    /// `false` for replays: run even if cached, and record nothing in the cache.
    pub use_cache: bool,
    /// Write TensorBoard events under `<run_dir>/tensorboard/<stage>/`.
    pub tensorboard: bool,
}

/// The stage a [`StageJob`] executes, resolved.
#[derive(Debug, Clone)]
pub struct JobStage {
    /// The stage's name.
    pub name: String,
    /// Its cache key and what it was computed from (kind, params, env, input digests).
    pub key: Digest,
    /// What the key was computed from.
    pub fingerprint: Fingerprint,
    /// Where its work runs.
    pub runner: Runner,
    /// The resolved inputs.
    pub inputs: BTreeMap<String, JobInput>,
    /// The declared outputs.
    pub outputs: Vec<JobOutput>,
    /// Attempts to make (1 + retries).
    pub attempts: u32,
    /// Run even if another process completes the same key meanwhile.
    pub force: bool,
}

impl StageJob {
    /// The job that executes `stage` in `run`. Params, kind and environment are the
    /// fingerprint's: what the key says is exactly what runs.
    pub fn new(stage: JobStage, run: &JobRun<'_>) -> StageJob {
        let file = |ext: &str| run.run_dir.join(format!("{}.{ext}", stage.name));
        StageJob {
            run_id: run.run_id.to_string(),
            kind: stage.fingerprint.kind.clone(),
            runner: stage.runner,
            key: stage.key,
            params: stage.fingerprint.params.clone(),
            env: stage.fingerprint.env.clone(),
            fingerprint: stage.fingerprint,
            inputs: stage.inputs,
            outputs: stage.outputs,
            store: run.store.to_path_buf(),
            workspace: run.workspace.to_path_buf(),
            gpus: Vec::new(),
            log: file("log"),
            metrics: file("metrics.jsonl"),
            tensorboard: run
                .tensorboard
                .then(|| run.run_dir.join("tensorboard").join(&stage.name)),
            attempts: stage.attempts,
            use_cache: run.use_cache,
            force: stage.force,
            stage: stage.name,
        }
    }
}

/// A resolved input: artifacts by digest. Workspace files carry their path (they are
/// read where they are, not copied into the store).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum JobInput {
    /// A series of artifacts.
    Series(Vec<JobArtifact>),
    /// One artifact.
    One(JobArtifact),
}

/// One input artifact of a job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobArtifact {
    /// Its digest.
    pub digest: Digest,
    /// Whether it is a tree (directory).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub tree: bool,
    /// For workspace files: where it is (read in place).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<PathBuf>,
}

/// How a job ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobStatus {
    /// The stage ran and its outputs are stored.
    Ran,
    /// Another process completed the same key while this one waited for its lock.
    Cached,
    /// Every attempt failed.
    Failed,
    /// Stopped by the cancel flag.
    Cancelled,
}

/// The result of [`execute`] (`<job>.result.json` for `stage-exec`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobResult {
    /// How it ended.
    pub status: JobStatus,
    /// The stored outputs (empty unless it ran or was cached).
    pub outputs: BTreeMap<String, OutputRecord>,
    /// The last attempt's error.
    pub error: Option<String>,
    /// Attempts made (0 when restored from the cache without running).
    pub attempts: u32,
    /// When it started (RFC 3339).
    pub started: String,
    /// When it ended (RFC 3339).
    pub ended: String,
    /// Wall-clock seconds from start to end, all attempts included.
    pub seconds: f64,
    /// Checkpoints the stage resumed from (committed by an interrupted earlier attempt).
    pub resumed_from: usize,
}

/// What the executing stage tells its observer (the progress display). A worker
/// process sends them as JSON lines (`{"line": "..."}`, `{"progress": [3, 10]}`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobEvent {
    /// Waiting for another process that holds the key's lock.
    Waiting(String),
    /// Attempt N starts.
    Attempt(u32),
    /// A line of the stage's log.
    Line(String),
    /// Progress: done of total (0: unknown).
    Progress(u64, u64),
}

impl StageJob {
    /// Reads a job file.
    pub fn read(path: &Path) -> anyhow::Result<StageJob> {
        let bytes = std::fs::read(path)
            .with_context(|| format!("cannot read job file {}", path.display()))?;
        serde_json::from_slice(&bytes)
            .with_context(|| format!("{}: not a tureen stage job", path.display()))
    }

    /// Writes the job file atomically.
    pub fn write(&self, path: &Path) -> anyhow::Result<()> {
        let bytes = serde_json::to_vec_pretty(self)?;
        tureen_artifacts::fsutil::write_atomic(path, &bytes)
            .with_context(|| format!("cannot write {}", path.display()))
    }
}

/// Executes `job`: takes the key's lock, re-checks the action cache (another run may
/// have finished it), runs the kind with retries, ingests the outputs and records
/// them in the action cache. Failures are results, not errors; `Err` means the job
/// could not even be attempted (bad job, unreadable store).
pub fn execute(
    job: &StageJob,
    registry: &KindRegistry,
    cancel: &AtomicBool,
    observer: &mut (dyn FnMut(JobEvent) + Send),
) -> anyhow::Result<JobResult> {
    execute_as(job, registry, Rank::SOLE, cancel, observer)
}

/// [`execute`] as one of several processes running a data-parallel stage together
/// (`rank`, from the launcher's variables). Rank 0 does what [`execute`] does, with one
/// attempt when there are several ranks (a failed rank fails them all; retrying is
/// relaunching them, which resumes from the journal). The other ranks run the kind
/// without lock, cache or ingest, reading the journal rank 0 commits to
/// (`follower::execute`). For kinds that are not [`crate::kind::StageKind::data_parallel`]
/// the rank is ignored.
pub fn execute_as(
    job: &StageJob,
    registry: &KindRegistry,
    rank: Rank,
    cancel: &AtomicBool,
    observer: &mut (dyn FnMut(JobEvent) + Send),
) -> anyhow::Result<JobResult> {
    let started = now_rfc3339();
    let clock = Instant::now();
    let store = Store::open(&job.store)?;
    // Keeps `gc` from collecting what this stage stores before it is referenced.
    let _gc_guard = store.lock_shared()?;
    // What killed runs left in `tmp/` (their pids are dead) goes now.
    store.remove_stale_temps();
    let work = registered_work(job, registry)?;
    let finish = |status, outputs, error: Option<String>, attempts, resumed_from| JobResult {
        status,
        outputs,
        error,
        attempts,
        started: started.clone(),
        ended: now_rfc3339(),
        seconds: clock.elapsed().as_secs_f64(),
        resumed_from,
    };
    let data_parallel = registry.get(&job.kind).is_some_and(|k| k.data_parallel());
    let rank = if data_parallel { rank } else { Rank::SOLE };
    if !rank.is_leader() {
        return follower::execute(job, &store, work.as_ref(), rank, cancel, observer, finish);
    }
    let attempts = if rank.world > 1 {
        1
    } else {
        job.attempts.max(1)
    };

    let Some(_lock) = lock_stage_key(&store, job, cancel, observer)? else {
        return Ok(finish(
            JobStatus::Cancelled,
            BTreeMap::new(),
            Some("interrupted".into()),
            0,
            0,
        ));
    };
    if job.use_cache && !job.force {
        if let Some(entry) = cache::lookup(&store, &job.key) {
            return Ok(finish(JobStatus::Cached, entry.outputs, None, 0, 0));
        }
    }

    let scratch = Scratch::create(&store, &job.key)?;
    let inputs = resolve_inputs(&store, scratch.path(), job)?;
    if let Some(dir) = job.log.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let mut log = FileLog::open(job, observer)?;
    let leader = leader::Leader {
        job,
        store: &store,
        work: work.as_ref(),
        inputs: &inputs,
        scratch: scratch.path(),
        cancel,
        rank,
    };
    let mut last_error = None;
    let mut resumed_from = 0;
    for attempt in 1..=attempts {
        if cancel.load(Ordering::Relaxed) {
            break;
        }
        let tried = leader.attempt(attempt, attempts, &mut log)?;
        resumed_from = tried.resumed_from;
        match tried.outputs {
            Ok(outputs) => {
                leader.succeed(&outputs, tried.journal, &mut log, clock)?;
                return Ok(finish(JobStatus::Ran, outputs, None, attempt, resumed_from));
            }
            Err(e) => {
                let msg = format!("{e:#}");
                log.line(&format!("== tureen: attempt {attempt} failed: {msg}"));
                last_error = Some(msg);
                if cancel.load(Ordering::Relaxed) {
                    break;
                }
            }
        }
    }
    log.flush();
    if cancel.load(Ordering::Relaxed) {
        return Ok(finish(
            JobStatus::Cancelled,
            BTreeMap::new(),
            Some(last_error.unwrap_or_else(|| "interrupted".into())),
            attempts,
            resumed_from,
        ));
    }
    Ok(finish(
        JobStatus::Failed,
        BTreeMap::new(),
        last_error,
        attempts,
        resumed_from,
    ))
}

/// The work of `job`'s kind, as registered in this program.
fn registered_work(job: &StageJob, registry: &KindRegistry) -> anyhow::Result<Arc<dyn StageWork>> {
    registry
        .work(&job.kind)
        .cloned()
        .ok_or_else(|| match &job.runner {
            Runner::Worker(program) => anyhow::anyhow!(
                "stage `{}`: kind `{}` runs in `{program}`, not in this program",
                job.stage,
                job.kind
            ),
            Runner::InProcess => anyhow::anyhow!(
                "stage `{}`: kind `{}` is not registered in this program",
                job.stage,
                job.kind
            ),
        })
}

/// Takes the exclusive lock of the stage's key, telling `observer` whom it waits for;
/// `None` when interrupted while waiting.
fn lock_stage_key(
    store: &Store,
    job: &StageJob,
    cancel: &AtomicBool,
    observer: &mut (dyn FnMut(JobEvent) + Send),
) -> anyhow::Result<Option<FileLock>> {
    let lock_path = store.lock_path(&format!("{}.lock", job.key.to_hex()));
    let note = crate::host::lock_note();
    FileLock::exclusive_waiting(&lock_path, &note, cancel, |holder| {
        observer(JobEvent::Waiting(format!(
            "waiting for {holder} (same stage key)"
        )));
    })
    .with_context(|| format!("cannot take the stage's lock {}", lock_path.display()))
}

/// A job's private scratch directory under `<store>/tmp` (`views-<key>.<pid>@<host>`):
/// input trees and checkpoint views live here while the job runs. Created by the first
/// view put there (most jobs, every command stage's among them, need none, and a
/// directory made and removed per stage is inode churn that slows a first run of small
/// stages), removed when the job ends; if the process is killed, by the next process
/// that finds its pid dead.
pub(crate) struct Scratch(PathBuf);

impl Scratch {
    pub(crate) fn create(store: &Store, key: &Digest) -> anyhow::Result<Scratch> {
        let dir = store.tmp_dir().join(format!(
            "views-{}.{}",
            &key.to_hex()[..16],
            tureen_artifacts::stale::owner_token()
        ));
        tureen_artifacts::fsutil::remove_all(&dir)
            .with_context(|| format!("cannot remove the old {}", dir.display()))?;
        Ok(Scratch(dir))
    }

    pub(crate) fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = tureen_artifacts::fsutil::remove_all(&self.0);
    }
}

pub(crate) fn resolve_inputs(
    store: &Store,
    views: &Path,
    job: &StageJob,
) -> anyhow::Result<BTreeMap<String, InputValue>> {
    let one = |a: &JobArtifact| -> anyhow::Result<Artifact> {
        let path = match &a.path {
            Some(p) => p.clone(),
            None => artifact_path(store, views, &a.digest, a.tree).with_context(|| {
                format!("stage `{}`: input {} is not available", job.stage, a.digest)
            })?,
        };
        Ok(Artifact {
            digest: a.digest,
            path,
        })
    };
    let mut out = BTreeMap::new();
    for (name, input) in &job.inputs {
        let value = match input {
            JobInput::One(a) => InputValue::One(one(a)?),
            JobInput::Series(items) => {
                InputValue::Series(items.iter().map(one).collect::<anyhow::Result<_>>()?)
            }
        };
        out.insert(name.clone(), value);
    }
    Ok(out)
}

/// Ingests what the kind produced and checks it against the declared outputs.
fn store_outputs(
    store: &Store,
    job: &StageJob,
    produced: BTreeMap<String, Produced>,
    journal: &StoreJournal<'_>,
) -> anyhow::Result<BTreeMap<String, OutputRecord>> {
    let mut out = BTreeMap::new();
    for decl in &job.outputs {
        let p = produced.get(&decl.name).ok_or_else(|| {
            anyhow::anyhow!(
                "the stage did not produce its declared output `{}`",
                decl.name
            )
        })?;
        let record = match (p, decl.series) {
            (Produced::Series(items), true) => OutputRecord::Series {
                series: items
                    .iter()
                    .map(|i| store_one(store, &decl.name, i, journal))
                    .collect::<anyhow::Result<_>>()?,
            },
            (Produced::Series(_), false) => anyhow::bail!(
                "output `{}` is declared as one artifact but a series was produced",
                decl.name
            ),
            (other, true) => OutputRecord::Series {
                series: vec![store_one(store, &decl.name, other, journal)?],
            },
            (other, false) => OutputRecord::One(store_one(store, &decl.name, other, journal)?),
        };
        out.insert(decl.name.clone(), record);
    }
    Ok(out)
}

fn store_one(
    store: &Store,
    output: &str,
    p: &Produced,
    journal: &StoreJournal<'_>,
) -> anyhow::Result<ArtifactRecord> {
    match p {
        Produced::Path(path) => {
            let file_name = path.file_name().map(|n| n.to_string_lossy().into_owned());
            let meta = std::fs::metadata(path).with_context(|| {
                format!(
                    "output `{output}`: the stage did not produce {}",
                    path.display()
                )
            })?;
            if meta.is_dir() {
                let digest = store
                    .add_dir(path)
                    .with_context(|| format!("output `{output}`"))?;
                Ok(ArtifactRecord {
                    digest,
                    tree: true,
                    file_name,
                })
            } else {
                let digest = store
                    .ingest(path)
                    .with_context(|| format!("output `{output}`"))?;
                Ok(ArtifactRecord {
                    digest,
                    tree: false,
                    file_name,
                })
            }
        }
        Produced::Stored(digest) => {
            let digest = *digest;
            if let Some(rec) = journal.records().iter().find(|r| r.digest == digest) {
                return Ok(rec.clone());
            }
            let kind = store
                .kind(&digest)
                .with_context(|| format!("output `{output}`"))?;
            Ok(ArtifactRecord {
                digest,
                tree: kind == tureen_artifacts::store::ObjectKind::Tree,
                file_name: None,
            })
        }
        Produced::Series(_) => anyhow::bail!("output `{output}`: a series cannot contain a series"),
    }
}

/// The stage's log file (plus metrics as JSON lines and TensorBoard events), echoing
/// lines to the observer for the progress display.
///
/// Every metrics record reaches its files as soon as it is logged (one write per JSON
/// line, one flush per TensorBoard event), so `tensorboard --logdir` and `tureen logs -f`
/// follow a running stage. TensorBoard's x axis is the step, placed on the axis of the
/// run the stage descends from ([`crate::lineage`]): a stage continuing a checkpoint
/// (`inputs.from`, a rewind) branches at that checkpoint's step, and a record without a
/// step of its own (an eval's result) sits at the step of the model the stage read, in
/// that model's TensorBoard run, so evaluations of successive checkpoints form a curve.
pub(crate) struct FileLog<'o> {
    file: LineWriter<File>,
    metrics_path: PathBuf,
    metrics: Option<File>,
    tensorboard_dir: Option<PathBuf>,
    /// Event writers by directory (the stage's own, or its model's run).
    tensorboard: BTreeMap<PathBuf, crate::tensorboard::EventWriter>,
    /// Resolved on the first record that needs it (it reads the action cache).
    axis: Option<StepAxis>,
    store: PathBuf,
    inputs: BTreeMap<String, JobInput>,
    batch_size: Option<f64>,
    stage: String,
    observer: &'o mut (dyn FnMut(JobEvent) + Send),
}

/// Where a stage's records go on TensorBoard's step axis.
#[derive(Debug, Clone, PartialEq)]
enum StepAxis {
    /// At their own `step`.
    Own,
    /// A stage continuing the checkpoint at `branch`, one step per `batch` samples.
    Branch {
        branch: crate::lineage::Position,
        batch: f64,
    },
    /// Records without a step at the position of the model the stage read.
    Model(crate::lineage::Position),
}

impl StepAxis {
    /// The axis of a stage with these inputs (`batch`: its `batch_size` param).
    fn resolve(store: &Store, inputs: &BTreeMap<String, JobInput>, batch: Option<f64>) -> StepAxis {
        let mut lineage = crate::lineage::Lineage::new(store);
        if let (Some(JobInput::One(from)), Some(batch)) =
            (inputs.get(crate::lineage::BRANCH_INPUT), batch)
        {
            if let Some(branch) = lineage.branch(&from.digest) {
                return StepAxis::Branch { branch, batch };
            }
        }
        let latest = inputs
            .values()
            .filter_map(|i| match i {
                JobInput::One(a) => lineage.position(&a.digest),
                JobInput::Series(_) => None,
            })
            .max_by(|a, b| a.step.total_cmp(&b.step));
        latest.map_or(StepAxis::Own, StepAxis::Model)
    }

    /// The step of `record` on this axis, and the stage whose TensorBoard run it
    /// belongs to when that is another stage's.
    fn place<'a>(&'a self, record: &Value) -> (i64, Option<&'a str>) {
        let own = record.get("step").and_then(Value::as_i64);
        match (self, own) {
            (StepAxis::Branch { branch, batch }, Some(step)) => {
                match record.get("samples").and_then(Value::as_f64) {
                    Some(samples) => (
                        (branch.step + (samples - branch.samples) / batch).round() as i64,
                        None,
                    ),
                    None => (step, None),
                }
            }
            (StepAxis::Model(at), None) => (at.step.round() as i64, at.stage.as_deref()),
            (_, step) => (step.unwrap_or(0), None),
        }
    }
}

impl<'o> FileLog<'o> {
    pub(crate) fn open(
        job: &StageJob,
        observer: &'o mut (dyn FnMut(JobEvent) + Send),
    ) -> anyhow::Result<FileLog<'o>> {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&job.log)
            .with_context(|| format!("cannot open log {}", job.log.display()))?;
        Ok(FileLog {
            file: LineWriter::new(file),
            metrics_path: job.metrics.clone(),
            metrics: None,
            tensorboard_dir: job.tensorboard.clone(),
            tensorboard: BTreeMap::new(),
            axis: None,
            store: job.store.clone(),
            inputs: job.inputs.clone(),
            batch_size: job
                .params
                .get("batch_size")
                .and_then(Value::as_f64)
                .filter(|b| *b > 0.0),
            stage: job.stage.clone(),
            observer,
        })
    }

    fn observer_event(&mut self, e: JobEvent) {
        (self.observer)(e);
    }

    pub(crate) fn flush(&mut self) {
        let _ = self.file.flush();
        for tb in self.tensorboard.values_mut() {
            let _ = tb.flush();
        }
    }

    /// Writes `record` as one TensorBoard event and flushes it.
    fn tensorboard_event(&mut self, record: &Value) {
        let Some(own_dir) = self.tensorboard_dir.clone() else {
            return;
        };
        if self.axis.is_none() {
            let axis = match Store::open(&self.store) {
                Ok(store) => StepAxis::resolve(&store, &self.inputs, self.batch_size),
                Err(_) => StepAxis::Own,
            };
            self.axis = Some(axis);
        }
        let axis = self.axis.as_ref().expect("resolved above");
        let (step, run) = axis.place(record);
        let dir = match (run, own_dir.parent()) {
            (Some(stage), Some(parent)) => parent.join(stage),
            _ => own_dir,
        };
        if !self.tensorboard.contains_key(&dir) {
            match crate::tensorboard::EventWriter::create(&dir) {
                Ok(w) => {
                    self.tensorboard.insert(dir.clone(), w);
                }
                Err(e) => {
                    let _ = writeln!(
                        self.file,
                        "== tureen: cannot write TensorBoard events for {}: {e}",
                        self.stage
                    );
                    self.tensorboard_dir = None;
                    return;
                }
            }
        }
        let tb = self.tensorboard.get_mut(&dir).expect("inserted above");
        let wall_time = crate::tensorboard::now_wall_time();
        if tb.add_record_at("", record, step, wall_time).is_ok() {
            let _ = tb.flush();
        }
    }
}

impl StageLog for FileLog<'_> {
    fn line(&mut self, line: &str) {
        let _ = writeln!(self.file, "{line}");
        (self.observer)(JobEvent::Line(line.to_string()));
    }

    fn metrics(&mut self, record: &Value) {
        if self.metrics.is_none() {
            self.metrics = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.metrics_path)
                .ok();
        }
        if let Some(f) = self.metrics.as_mut() {
            // One write per line: a reader never sees half a record that is complete.
            let _ = f.write_all(format!("{record}\n").as_bytes());
        }
        self.tensorboard_event(record);
    }

    fn progress(&mut self, done: u64, total: u64) {
        (self.observer)(JobEvent::Progress(done, total));
    }
}

/// The shape a declared output has in a job.
pub fn job_outputs(decls: &[OutputDecl]) -> Vec<JobOutput> {
    decls
        .iter()
        .map(|d| JobOutput {
            name: d.name.clone(),
            series: d.shape == OutputShape::Series,
        })
        .collect()
}

#[cfg(test)]
pub(super) mod tests {
    use std::sync::atomic::AtomicBool;
    use std::sync::Arc;

    use super::*;
    use crate::kind::{ParamError, StageContext, StageDecl, StageKind, StageWork};

    /// Writes three checkpoints through the journal; crashes after the first one
    /// while `crash` is set.
    pub(super) struct Checkpointing {
        pub(super) crash: AtomicBool,
    }

    impl StageKind for Checkpointing {
        fn name(&self) -> &'static str {
            "ckpt"
        }
        fn code_version(&self) -> &'static str {
            "1"
        }
        fn validate(&self, _: &StageDecl<'_>) -> Result<(), ParamError> {
            Ok(())
        }
        fn outputs(&self, _: &StageDecl<'_>) -> Vec<OutputDecl> {
            vec![OutputDecl {
                name: "checkpoints".into(),
                shape: OutputShape::Series,
                len: Some(3),
            }]
        }
    }

    impl StageWork for Checkpointing {
        fn run(&self, ctx: &mut StageContext<'_>) -> anyhow::Result<BTreeMap<String, Produced>> {
            let start = ctx.journal.committed().len();
            for step in start..3 {
                let path = ctx.work_dir.join(format!("step-{step}.bin"));
                std::fs::write(&path, format!("weights after step {step}"))?;
                ctx.journal.commit(&path)?;
                if self.crash.swap(false, Ordering::SeqCst) {
                    anyhow::bail!("simulated crash after step {step}");
                }
            }
            let all = ctx
                .journal
                .committed()
                .into_iter()
                .map(|a| Produced::Stored(a.digest))
                .collect();
            Ok(BTreeMap::from([(
                "checkpoints".to_string(),
                Produced::Series(all),
            )]))
        }
    }

    fn job(store: &Path) -> StageJob {
        let fingerprint = Fingerprint {
            format: 1,
            kind: "ckpt".into(),
            code_version: "1".into(),
            params: Map::new(),
            inputs: BTreeMap::new(),
            deps: Vec::new(),
            env: BTreeMap::new(),
            world: 1,
        };
        let stage = JobStage {
            name: "train".into(),
            key: fingerprint.key(),
            fingerprint,
            runner: Runner::InProcess,
            inputs: BTreeMap::new(),
            outputs: vec![JobOutput {
                name: "checkpoints".into(),
                series: true,
            }],
            attempts: 1,
            force: false,
        };
        let run = JobRun {
            run_id: "r",
            run_dir: store,
            store,
            workspace: store,
            use_cache: true,
            tensorboard: false,
        };
        StageJob::new(stage, &run)
    }

    #[test]
    fn a_rerun_after_a_crash_resumes_from_the_committed_checkpoints() {
        let dir = tempfile::tempdir().unwrap();
        let store = dir.path().join("store");
        let mut registry = KindRegistry::new();
        registry.register_with_work(Arc::new(Checkpointing {
            crash: AtomicBool::new(true),
        }));
        let cancel = AtomicBool::new(false);
        let job = job(&store);

        let first = execute(&job, &registry, &cancel, &mut |_| {}).unwrap();
        assert_eq!(first.status, JobStatus::Failed);
        let journal = crate::journal::journal_path(&store, &job.key);
        assert!(journal.is_file(), "the committed checkpoint is journaled");

        let second = execute(&job, &registry, &cancel, &mut |_| {}).unwrap();
        assert_eq!(second.status, JobStatus::Ran);
        assert_eq!(second.resumed_from, 1);
        let series = second.outputs["checkpoints"].artifacts().to_vec();
        assert_eq!(series.len(), 3);
        let s = Store::open(&store).unwrap();
        let first_bytes = std::fs::read(s.object_path(&series[0].digest)).unwrap();
        assert_eq!(first_bytes, b"weights after step 0");
        assert!(
            !journal.exists(),
            "the journal is dropped once the stage completes"
        );
        assert!(cache::lookup(&s, &job.key).is_some());

        // A third execution is a cache hit.
        let third = execute(&job, &registry, &cancel, &mut |_| {}).unwrap();
        assert_eq!(third.status, JobStatus::Cached);
    }
}
