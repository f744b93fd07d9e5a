//! Running a pipeline: keys in dependency order, cache hits restored, the rest executed
//! in parallel within the declared resources, everything recorded.
//!
//! A stage's key needs its inputs' digests, and an upstream stage's output digests are
//! only known once it ran or was found in the cache. So keys are computed as the run
//! goes, each stage once all its upstreams are done; a re-run upstream that produced the
//! same bytes leaves the downstream key unchanged (early cutoff).
//!
//! The pieces, one module each: `state` (where each stage is; decided, failed and
//! finished in one place each), `inputs` (fingerprints), `pool` (local resources),
//! `workspace` (outputs at their paths), `why` (explanations), `launch` (a stage's job on
//! its thread), [`preflight`] (what a run checks before it touches anything) and
//! [`StoreDir`] (the store's indexes, read ahead while the pipeline loads).

mod inputs;
mod launch;
mod pool;
mod preflight;
mod state;
mod store_dir;
mod why;
mod workspace;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use anyhow::Context as _;
use serde_json::json;
use tureen_artifacts::{Digest, Store};

use crate::job::JobEvent;
use crate::kind::KindRegistry;
use crate::pipeline::Pipeline;
use crate::progress::{Mode, Progress};
use crate::record::{self, RunRecord, RunStatus};
use launch::Msg;
use pool::Pool;
use state::{Lookup, RunState, State};
pub use store_dir::StoreDir;

pub use pool::{detect_gpus, machine_cpus, machine_memory};
pub use preflight::preflight;

/// How to run.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Stages to run even if cached.
    pub force: Vec<String>,
    /// Run only these stages and their ancestors (empty: all).
    pub only: Vec<String>,
    /// Plan only: say what would run and why; execute nothing, write nothing.
    pub dry_run: bool,
    /// Maximum number of stages running at once.
    pub jobs: usize,
    /// GPU ids to hand out (`None`: from `TUREEN_GPUS`, `CUDA_VISIBLE_DEVICES`, or
    /// `nvidia-smi -L`, asked only when a stage needs a GPU).
    pub gpus: Option<Vec<u32>>,
    /// Ignore the action cache entirely and do not write it (replays).
    pub no_cache: bool,
    /// `-P` overrides as given (recorded).
    pub overrides: Vec<String>,
    /// How progress is shown.
    pub progress: Mode,
    /// This tureen binary (command stages get it as `$TUREEN`; Slurm jobs run it; worker
    /// programs such as `tureen-torch` are looked for beside it).
    pub tureen_exe: PathBuf,
    /// Recorded in the run record as the reason for the run (e.g. `replay of X`).
    pub purpose: Option<String>,
    /// Lines of a failed stage's log to print.
    pub tail_lines: usize,
    /// More entries for the record's `tools` (the command line's build: git commit,
    /// profile, libtorch).
    pub tools: BTreeMap<String, String>,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            force: Vec::new(),
            only: Vec::new(),
            dry_run: false,
            jobs: default_jobs(),
            gpus: None,
            no_cache: false,
            overrides: Vec::new(),
            progress: Mode::Auto,
            tureen_exe: std::env::current_exe().unwrap_or_else(|_| PathBuf::from("tureen")),
            purpose: None,
            tail_lines: 20,
            tools: BTreeMap::new(),
        }
    }
}

/// Stages at once by default: one per CPU.
pub fn default_jobs() -> usize {
    machine_cpus() as usize
}

/// What a stage will do / did, for plans and `status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Up to date: restored from the cache.
    Cached,
    /// Runs (or would run), with the reasons.
    Run(Vec<String>),
    /// Would run because an upstream runs; its key is not known yet.
    Blocked(String),
    /// Failed (or could not be keyed), with the error.
    Failed(String),
    /// Not run because an upstream failed or the run was interrupted.
    Skipped(String),
    /// Not selected by `--only`.
    Excluded,
}

/// One line of a plan.
#[derive(Debug, Clone)]
pub struct PlanLine {
    /// The stage.
    pub stage: String,
    /// Its kind.
    pub kind: String,
    /// What it does.
    pub decision: Decision,
    /// Its key, when known.
    pub key: Option<Digest>,
}

/// The result of [`run`].
#[derive(Debug)]
pub struct RunOutcome {
    /// `None` for dry runs (nothing is written).
    pub record: Option<RunRecord>,
    /// What each stage did (or would do).
    pub plan: Vec<PlanLine>,
    /// Every selected stage ran or was cached (for a dry run: every key is known).
    pub succeeded: bool,
    /// The run was stopped by the cancel flag.
    pub interrupted: bool,
}

/// Runs (or, with `dry_run`, plans) the pipeline against the store.
pub fn run(
    pipeline: &Pipeline,
    registry: &KindRegistry,
    store_dir: StoreDir,
    opts: &RunOptions,
    cancel: &AtomicBool,
) -> anyhow::Result<RunOutcome> {
    let force = stage_mask(pipeline, &opts.force, "--force")?;
    let only = stage_mask(pipeline, &opts.only, "--only")?;
    let selected = if opts.only.is_empty() {
        vec![true; pipeline.stages.len()]
    } else {
        let only: Vec<usize> = (0..only.len()).filter(|&i| only[i]).collect();
        pipeline.with_ancestors(&only)
    };
    // A dry run must not create a store: plan against an empty scratch one instead.
    let scratch;
    let store_root = if opts.dry_run && !store_dir.path().join("objects").is_dir() {
        scratch = tempfile::tempdir()?;
        scratch.path().to_path_buf()
    } else {
        store_dir.path().to_path_buf()
    };
    let store = Store::open(&store_root)
        .with_context(|| format!("cannot open the store {}", store_root.display()))?;
    if !opts.dry_run {
        // What killed runs left in `tmp/` (their pids are dead) goes now, even when
        // every stage turns out to be cached.
        store.remove_stale_temps();
    }
    let mut run = RunState::new(
        pipeline,
        registry,
        store_dir.action_cache(&store),
        opts,
        &selected,
        force,
        record::new_run_id(),
    );
    if opts.dry_run {
        return Ok(plan(&mut run));
    }
    // Objects a run creates are unreferenced until its cache entries and record are
    // written: keep `tureen store gc` out until the run ends.
    let _gc_guard = store
        .lock_shared()
        .context("cannot take the store's shared lock")?;
    execute(run, cancel)
}

/// `names` as a membership mask over the stages; an unknown name is an error with a
/// suggestion.
fn stage_mask(pipeline: &Pipeline, names: &[String], flag: &str) -> anyhow::Result<Vec<bool>> {
    let mut mask = vec![false; pipeline.stages.len()];
    for name in names {
        let i = pipeline.stage_index(name).ok_or_else(|| {
            let all = pipeline.stages.iter().map(|s| s.name.as_str());
            let hint = crate::diag::suggest(name, all)
                .map(|h| format!(" (did you mean `{h}`?)"))
                .unwrap_or_default();
            anyhow::anyhow!(
                "{flag} {name}: no such stage in {}{hint}",
                pipeline.file.display()
            )
        })?;
        mask[i] = true;
    }
    Ok(mask)
}

/// The dry run: each stage decided as the run would, in dependency order, until an
/// upstream that would run makes its key unknowable. Writes nothing.
fn plan(run: &mut RunState<'_>) -> RunOutcome {
    let p = run.pipeline;
    let mut lines = Vec::new();
    for i in run.order.clone() {
        let stage = &p.stages[i];
        let line = |decision, key| PlanLine {
            stage: stage.name.clone(),
            kind: stage.kind.clone(),
            decision,
            key,
        };
        if matches!(run.states[i], State::Excluded) {
            lines.push(line(Decision::Excluded, None));
            continue;
        }
        let blocked: Vec<&str> = stage
            .upstream
            .iter()
            .filter(|&&u| !matches!(run.states[u], State::Done(_)))
            .map(|&u| p.stages[u].name.as_str())
            .collect();
        // Stages that would run stay `Waiting`: their downstreams are blocked by them.
        if !blocked.is_empty() {
            lines.push(line(Decision::Blocked(format!("upstream {} will run (may still be cached afterwards if its outputs do not change)", blocked.join(", "))), None));
            continue;
        }
        let (decision, key) = match run.look_up(i) {
            Err(e) => (Decision::Failed(format!("{e:#}")), None),
            Ok(Lookup {
                key,
                hit: Some(outputs),
                ..
            }) => {
                run.states[i] = State::Done(outputs);
                (Decision::Cached, Some(key))
            }
            Ok(Lookup { key, fp, .. }) => (Decision::Run(run.why(i, &fp)), Some(key)),
        };
        lines.push(line(decision, key));
    }
    let succeeded = !lines
        .iter()
        .any(|l| matches!(l.decision, Decision::Failed(_)));
    RunOutcome {
        record: None,
        plan: lines,
        succeeded,
        interrupted: false,
    }
}

/// The real run: decide what is ready, start what fits, wait for news; until nothing
/// is left to do.
fn execute(mut run: RunState<'_>, cancel: &AtomicBool) -> anyhow::Result<RunOutcome> {
    let opts = run.opts;
    let mut progress = Progress::new(opts.progress);
    let mut record = run_record(&run);
    record
        .write(run.store.root())
        .context("cannot write the run record")?;
    let mut pool = Pool::new(opts);
    let (tx, rx) = mpsc::channel::<Msg>();
    std::thread::scope(|scope| -> anyhow::Result<()> {
        loop {
            decide_ready(&mut run, &mut progress);
            let cancelled = cancel.load(Ordering::Relaxed);
            if !cancelled {
                let startable = run.take_startable(&mut pool, |stage, msg| {
                    progress.error(&format!("{}: FAILED: {msg}", stage.name));
                });
                for (i, job) in startable {
                    launch::start(scope, &run, i, job, &mut progress, cancel, tx.clone())?;
                }
            }
            if run.is_idle(cancelled) {
                break;
            }
            match rx.recv_timeout(Duration::from_millis(200)) {
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
                Ok(Msg::Event(i, e)) => show_event(&run, &mut progress, i, e),
                Ok(Msg::Done(i, result)) => {
                    launch::finish(&mut run, &mut pool, &mut progress, i, result)
                }
            }
        }
        Ok(())
    })?;
    progress.clear();

    let interrupted = cancel.load(Ordering::Relaxed);
    let failed = run.failed;
    // This run's outputs were hashed just after they were written; confirmed now, the
    // next run finds them in the stat cache instead of hashing them again.
    run.store.settle_and_flush_stat_cache();
    let store_root = run.store.root().to_path_buf();
    let (stages, plan) = run.into_records(interrupted);
    record.stages = stages;
    record.status = match (interrupted, failed) {
        (true, _) => RunStatus::Interrupted,
        (false, true) => RunStatus::Failed,
        (false, false) => RunStatus::Succeeded,
    };
    record.ended = Some(crate::clock::now_rfc3339());
    record
        .write(&store_root)
        .context("cannot write the run record")?;
    Ok(RunOutcome {
        succeeded: !failed && !interrupted,
        interrupted,
        record: Some(record),
        plan,
    })
}

/// Every ready stage keyed and looked up: restored from the cache, or queued to run.
fn decide_ready(run: &mut RunState<'_>, progress: &mut Progress) {
    progress.hold();
    while let Some(i) = run.next_ready() {
        progress.release_if_due();
        let name = &run.pipeline.stages[i].name;
        match run.look_up(i) {
            Err(e) => {
                let msg = format!("{e:#}");
                progress.error(&format!("{name}: FAILED before running: {msg}"));
                run.fail(i, msg);
            }
            Ok(mut look) => match look.hit.take() {
                Some(outputs) => match run.restore(i, look, outputs) {
                    Ok(()) => progress.println(&format!("{name}: cached")),
                    Err(e) => progress.error(&format!("{name}: FAILED: {e:#}")),
                },
                None => {
                    let why = run.why(i, &look.fp);
                    run.queue(i, look, why);
                }
            },
        }
    }
    progress.release();
}

fn show_event(run: &RunState<'_>, progress: &mut Progress, i: usize, e: JobEvent) {
    let name = &run.pipeline.stages[i].name;
    match e {
        JobEvent::Line(l) => progress.message(name, &l),
        JobEvent::Progress(d, t) => progress.fraction(name, d, t),
        JobEvent::Waiting(w) => progress.println(&format!("{name}: {w}")),
        JobEvent::Attempt(a) if a > 1 => {
            progress.println(&format!("{name}: retrying (attempt {a})"))
        }
        JobEvent::Attempt(_) => {}
    }
}

/// The record of a run that starts now.
fn run_record(run: &RunState<'_>) -> RunRecord {
    let opts = run.opts;
    RunRecord {
        run_id: run.run_id.clone(),
        pipeline: state::pipeline_path(run.pipeline),
        pipeline_digest: run.pipeline.source_digest.clone(),
        status: RunStatus::Running,
        params: run.pipeline.params.clone(),
        overrides: opts.overrides.clone(),
        options: json!({
            "force": opts.force, "only": opts.only, "jobs": opts.jobs, "no_cache": opts.no_cache,
            "purpose": opts.purpose,
        }),
        started: crate::clock::now_rfc3339(),
        ended: None,
        host: crate::host::hostname(),
        user: crate::host::username(),
        store: Some(run.store.root().to_path_buf()),
        tools: record::tools(run.registry)
            .into_iter()
            .chain(opts.tools.clone())
            .collect(),
        stages: Vec::new(),
    }
}

/// The last `n` lines of a log file.
pub fn tail(path: &Path, n: usize) -> String {
    let Ok(text) = std::fs::read_to_string(path) else {
        return String::new();
    };
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
