//! `tureen replay RUN`: re-executes every stage of a recorded run, without the cache,
//! each against the inputs *recorded* for it (so one divergence does not cascade), and
//! compares every output digest with the record.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::AtomicBool;

use tureen_artifacts::Store;

use crate::cache::OutputRecord;
use crate::job::{self, JobInput, JobOutput, JobRun, JobStage, JobStatus, StageJob};
use crate::kind::{runner_for, KindRegistry, Runner, StageDecl};
use crate::progress::{Mode, Progress};
use crate::record::{self, RunRecord};

/// The verdict for one stage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Every output digest is the recorded one.
    Same,
    /// Some output differs (one line each).
    Differs(Vec<String>),
    /// The stage could not be replayed.
    Failed(String),
}

/// One row of the replay table.
#[derive(Debug, Clone)]
pub struct ReplayRow {
    /// The stage.
    pub stage: String,
    /// Same, differs or failed.
    pub verdict: Verdict,
    /// Seconds the replay took.
    pub seconds: f64,
    /// The replay's log of the stage.
    pub log: String,
}

/// Replays `rec` (every stage that ran or was cached in it), in recorded order.
/// Stages whose kind names a worker program (`tureen-torch`) run in it, found beside
/// `tureen_exe`.
pub fn replay(
    rec: &RunRecord,
    registry: &KindRegistry,
    tureen_exe: &Path,
    store_dir: &Path,
    cancel: &AtomicBool,
    mode: Mode,
) -> anyhow::Result<Vec<ReplayRow>> {
    let store = Store::open(store_dir)?;
    let workspace = rec
        .pipeline
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| ".".into());
    let replay_id = format!("{}-replay", record::new_run_id());
    let run_dir = store.root().join("runs").join(&replay_id);
    std::fs::create_dir_all(&run_dir)?;
    let mut progress = Progress::new(mode);
    let mut rows = Vec::new();
    for s in &rec.stages {
        if !s.status.succeeded() {
            continue;
        }
        if cancel.load(std::sync::atomic::Ordering::Relaxed) {
            break;
        }
        let (Some(fp), Some(key)) = (&s.fingerprint, s.key) else {
            continue;
        };
        let log = run_dir.join(format!("{}.log", s.name));
        let row = |verdict, seconds| ReplayRow {
            stage: s.name.clone(),
            verdict,
            seconds,
            log: log.display().to_string(),
        };
        // Workspace inputs must still hold the recorded bytes.
        let mut inputs = BTreeMap::new();
        let mut stale = Vec::new();
        for (name, recorded) in &s.inputs {
            if let JobInput::One(a) = &recorded.artifacts {
                if let Some(path) = &a.path {
                    match store.hash_file_cached(path) {
                        Ok(d) if d == a.digest => {}
                        Ok(_) => stale.push(format!(
                            "input {name} ({}) changed since the run",
                            path.display()
                        )),
                        Err(e) => stale.push(format!("input {name}: {e}")),
                    }
                }
            }
            inputs.insert(name.clone(), recorded.artifacts.clone());
        }
        if !stale.is_empty() {
            rows.push(row(Verdict::Failed(stale.join("; ")), 0.0));
            continue;
        }
        let outputs: Vec<JobOutput> = s
            .outputs
            .iter()
            .map(|(name, o)| JobOutput {
                name: name.clone(),
                series: matches!(o, OutputRecord::Series { .. }),
            })
            .collect();
        let stage = JobStage {
            name: s.name.clone(),
            key,
            fingerprint: fp.clone(),
            runner: recorded_runner(registry, s),
            inputs,
            outputs,
            attempts: 1,
            force: true,
        };
        let run = JobRun {
            run_id: &replay_id,
            run_dir: &run_dir,
            store: store.root(),
            workspace: &workspace,
            use_cache: false,
            tensorboard: false,
        };
        let job = StageJob::new(stage, &run);
        progress.started(&s.name, "replaying");
        let mut observer = |_e: job::JobEvent| {};
        let result = crate::worker::execute_here(&job, registry, tureen_exe, cancel, &mut observer);
        let (verdict, secs) = match result {
            Err(e) => (Verdict::Failed(format!("{e:#}")), 0.0),
            Ok(r) if r.status != JobStatus::Ran => (
                Verdict::Failed(r.error.unwrap_or_else(|| "failed".into())),
                r.seconds,
            ),
            Ok(r) => {
                let mut diffs = Vec::new();
                for (name, recorded) in &s.outputs {
                    match r.outputs.get(name) {
                        Some(got)
                            if got
                                .artifacts()
                                .iter()
                                .map(|a| a.digest)
                                .eq(recorded.artifacts().iter().map(|a| a.digest)) => {}
                        Some(got) => diffs.push(format!(
                            "{name}: recorded {} replayed {}",
                            recorded.summary(),
                            got.summary()
                        )),
                        None => diffs.push(format!("{name}: not produced")),
                    }
                }
                (
                    if diffs.is_empty() {
                        Verdict::Same
                    } else {
                        Verdict::Differs(diffs)
                    },
                    r.seconds,
                )
            }
        };
        // Leave the workspace as the recorded run left it.
        restore_workspace(&store, registry, &workspace, s);
        let word = match &verdict {
            Verdict::Same => "same",
            Verdict::Differs(_) => "differs",
            Verdict::Failed(_) => "failed",
        };
        progress.finished(&s.name, &format!("{}: {word}", s.name));
        rows.push(row(verdict, secs));
    }
    progress.clear();
    Ok(rows)
}

/// Where a recorded stage's work runs, asked of its kind as the loader does.
fn recorded_runner(registry: &KindRegistry, s: &record::StageRecord) -> Runner {
    match (registry.get(&s.kind), &s.fingerprint) {
        (Some(kind), Some(fp)) => runner_for(
            kind.as_ref(),
            &StageDecl {
                name: &s.name,
                params: &fp.params,
                input_names: s.inputs.keys().map(String::as_str).collect(),
            },
        ),
        _ => Runner::InProcess,
    }
}

fn restore_workspace(
    store: &Store,
    registry: &KindRegistry,
    workspace: &Path,
    s: &record::StageRecord,
) {
    let Some(kind) = registry.get(&s.kind) else {
        return;
    };
    let Some(fp) = &s.fingerprint else { return };
    let names: Vec<&str> = s.inputs.keys().map(String::as_str).collect();
    let decl = StageDecl {
        name: &s.name,
        params: &fp.params,
        input_names: names,
    };
    for (name, rel) in kind.workspace_paths(&decl) {
        if let Some(OutputRecord::One(a)) = s.outputs.get(&name) {
            let dest = workspace.join(rel);
            if dest.is_dir() {
                let _ = std::fs::remove_dir_all(&dest);
            } else {
                let _ = std::fs::remove_file(&dest);
            }
            let _ = store.materialize(&a.digest, &dest);
        }
    }
}
