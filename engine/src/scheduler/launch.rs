//! A started stage's job on its own thread (here, in its worker program, or on Slurm),
//! and what the scheduler does with the result it sends back.

use std::collections::BTreeMap;
use std::sync::atomic::AtomicBool;
use std::sync::mpsc;
use std::thread::Scope;

use anyhow::Context as _;

use super::pool::Pool;
use super::state::RunState;
use super::tail;
use crate::job::{JobEvent, JobResult, JobStatus, StageJob};
use crate::pipeline::Executor;
use crate::progress::Progress;
use crate::record::StageStatus;

/// What a stage's thread tells the scheduler.
pub(super) enum Msg {
    /// Something to show while it runs.
    Event(usize, JobEvent),
    /// It ended (`Err`: it could not even be attempted).
    Done(usize, anyhow::Result<JobResult>),
}

/// Starts `job`, the job of stage `i`, on a thread of `scope`.
pub(super) fn start<'scope, 'env: 'scope>(
    scope: &'scope Scope<'scope, 'env>,
    run: &RunState<'env>,
    i: usize,
    job: StageJob,
    progress: &mut Progress,
    cancel: &'env AtomicBool,
    tx: mpsc::Sender<Msg>,
) -> anyhow::Result<()> {
    let stage = &run.pipeline.stages[i];
    std::fs::create_dir_all(&run.run_dir)
        .with_context(|| format!("cannot create {}", run.run_dir.display()))?;
    let why = run.records[i]
        .as_ref()
        .map(|s| s.why.join("; "))
        .unwrap_or_default();
    progress.started(&stage.name, &format!("running ({why})"));
    let slurm = (stage.executor == Executor::Slurm).then(|| {
        (
            run.pipeline.slurm.clone(),
            stage.resources.clone(),
            stage.retries,
        )
    });
    let exe = run.opts.tureen_exe.clone();
    let registry = run.registry;
    scope.spawn(move || {
        let events = tx.clone();
        let mut observer = move |e: JobEvent| {
            let _ = events.send(Msg::Event(i, e));
        };
        let result = match slurm {
            None => crate::worker::execute_here(&job, registry, &exe, cancel, &mut observer),
            // The Slurm job runs tureen itself, or the stage's worker program.
            Some((options, resources, retries)) => {
                crate::worker::program_for(&job, &exe).and_then(|worker| {
                    let program = worker.as_deref().unwrap_or(&exe);
                    crate::slurm_dispatch::run(
                        &job,
                        &options,
                        &resources,
                        retries,
                        program,
                        cancel,
                        &mut observer,
                    )
                })
            }
        };
        let _ = tx.send(Msg::Done(i, result));
    });
    Ok(())
}

/// Stage `i` ended with `result`: its resources go back, its outputs into the workspace,
/// and the run hears how it went.
pub(super) fn finish(
    run: &mut RunState<'_>,
    pool: &mut Pool,
    progress: &mut Progress,
    i: usize,
    result: anyhow::Result<JobResult>,
) {
    let secs = run.stopped(i, pool);
    let name = run.pipeline.stages[i].name.clone();
    let result = result.unwrap_or_else(|e| not_attempted(e, secs));
    match result.status {
        JobStatus::Ran | JobStatus::Cached => {
            let status = if result.status == JobStatus::Ran {
                StageStatus::Ran
            } else {
                StageStatus::Cached
            };
            let note = done_note(&result);
            match run.succeeded(i, status, result.attempts, result.outputs) {
                Ok(()) => progress.finished(&name, &format!("{name}: done in {secs:.2}s{note}")),
                Err(e) => progress.finished(&name, &format!("{name}: FAILED: {e:#}")),
            }
        }
        JobStatus::Failed | JobStatus::Cancelled => {
            let cancelled = result.status == JobStatus::Cancelled;
            let rec = run.records[i]
                .as_mut()
                .expect("started stages have records");
            rec.attempts = result.attempts;
            rec.status = if cancelled {
                StageStatus::Cancelled
            } else {
                StageStatus::Failed
            };
            rec.exit_status = Some(1);
            rec.error = result.error.clone();
            let mut msg = format!(
                "{name}: {} after {secs:.2}s: {}",
                if cancelled { "INTERRUPTED" } else { "FAILED" },
                result.error.as_deref().unwrap_or("unknown error")
            );
            if !cancelled {
                let log = run.run_dir.join(format!("{name}.log"));
                let tail = tail(&log, run.opts.tail_lines);
                if !tail.is_empty() {
                    msg.push_str(&format!(
                        "\n--- last lines of {} ---\n{tail}",
                        log.display()
                    ));
                }
            }
            progress.finished(&name, &msg);
            run.mark_failed(i);
        }
    }
}

/// The result of a job that could not even be attempted.
fn not_attempted(e: anyhow::Error, secs: f64) -> JobResult {
    let now = crate::clock::now_rfc3339();
    JobResult {
        status: JobStatus::Failed,
        outputs: BTreeMap::new(),
        error: Some(format!("{e:#}")),
        attempts: 0,
        started: now.clone(),
        ended: now,
        seconds: secs,
        resumed_from: 0,
    }
}

/// What is worth saying after "done in 1.2s".
fn done_note(result: &JobResult) -> String {
    match (result.status, result.attempts, result.resumed_from) {
        (JobStatus::Cached, ..) => " (finished meanwhile by another run)".to_string(),
        (_, a, _) if a > 1 => format!(" after {a} attempts"),
        (_, _, r) if r > 0 => format!(" (resumed from {r} checkpoint(s))"),
        _ => String::new(),
    }
}
