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
use crate::machine::MachineInfo;
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
    /// The machine the recorded output was made on, and the one the replay ran on
    /// (`None` where no machine file was written, e.g. by an older tureen).
    pub recorded_machine: Option<MachineInfo>,
    /// The machine this replay ran the stage on (`None` where the stage wrote none).
    pub machine: Option<MachineInfo>,
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
            recorded_machine: recorded_machine(&store, s, &key),
            machine: MachineInfo::read(&MachineInfo::path_for_log(&log)),
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
                let diffs = output_differences(&store, &s.outputs, &r.outputs);
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
                world: fp.world,
            },
        ),
        _ => Runner::InProcess,
    }
}

/// How each output of the replay differs from the record: per differing artifact (the
/// first and the last of a series), by how much ([`crate::replay_diff`]).
fn output_differences(
    store: &Store,
    recorded: &BTreeMap<String, OutputRecord>,
    replayed: &BTreeMap<String, OutputRecord>,
) -> Vec<String> {
    let mut diffs = Vec::new();
    for (name, rec) in recorded {
        let Some(got) = replayed.get(name) else {
            diffs.push(format!("{name}: not produced"));
            continue;
        };
        let (a, b) = (rec.artifacts(), got.artifacts());
        if a.len() != b.len() {
            diffs.push(format!(
                "{name}: recorded {} replayed {}",
                rec.summary(),
                got.summary()
            ));
            continue;
        }
        let differing: Vec<usize> = (0..a.len())
            .filter(|&i| a[i].digest != b[i].digest)
            .collect();
        if differing.is_empty() {
            continue;
        }
        let series = matches!(rec, OutputRecord::Series { .. });
        if series {
            diffs.push(format!("{name}: {} of {} differ", differing.len(), a.len()));
        }
        let shown = [differing.first(), differing.last()];
        let mut seen = Vec::new();
        for &i in shown.into_iter().flatten() {
            if seen.contains(&i) {
                continue;
            }
            seen.push(i);
            let what = if series {
                format!("{name}[{i}]")
            } else {
                name.clone()
            };
            diffs.push(format!(
                "{what}: recorded {} replayed {}",
                a[i].digest, b[i].digest
            ));
            diffs.extend(crate::replay_diff::describe(store, &what, &a[i], &b[i]));
        }
    }
    diffs
}

/// The machine file of the run that made the recorded outputs: the stage's own log's,
/// or for a stage that was cached, that of the run that filled the cache entry.
fn recorded_machine(
    store: &Store,
    s: &record::StageRecord,
    key: &tureen_artifacts::Digest,
) -> Option<MachineInfo> {
    if let Some(m) = &s.machine {
        return Some(m.clone());
    }
    let own = s
        .log
        .as_ref()
        .map(|log| MachineInfo::path_for_log(&store.root().join(log)));
    if let Some(m) = own.as_deref().and_then(MachineInfo::read) {
        return Some(m);
    }
    let entry = crate::cache::lookup(store, key)?;
    let log = store
        .root()
        .join("runs")
        .join(&entry.run_id)
        .join(format!("{}.log", s.name));
    MachineInfo::read(&MachineInfo::path_for_log(&log))
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
        world: fp.world,
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
