//! [`run_job`]: submit, record, wait, retry, cancel.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::cli::{self, SlurmCli};
use super::error::EndedJob;
use super::job::{JobEvent, JobOutcome, SlurmJobSpec};
use super::options::SlurmOptions;
use super::record::JobRecord;
use super::script::{self, log_name, parse_sentinel, sentinel_name, Sentinel};
use super::state::Disposition;
use super::SlurmError;

/// Runs `spec` on Slurm and waits for its exit code, re-attaching to a job an earlier
/// tureen left running in the same directory. `cancel` is checked several times a
/// second; when it is set, the job is cancelled with `scancel` and
/// [`SlurmError::Interrupted`] returned. `observer` hears of submissions, state changes
/// and retries (e.g. to log them).
///
/// `Ok` means the stage ran to an exit code (see [`JobOutcome::success`]); failures are
/// retried up to `spec.retries` times first.
pub fn run_job(
    spec: &SlurmJobSpec,
    options: &SlurmOptions,
    cancel: &AtomicBool,
    observer: &mut dyn FnMut(&JobEvent),
) -> Result<JobOutcome, SlurmError> {
    std::fs::create_dir_all(&spec.dir).map_err(|e| SlurmError::io(&spec.dir, e))?;
    let cli = options.cli();
    let max_attempts = spec.retries.saturating_add(1);

    let mut pending = None;
    let mut reattached = false;
    let mut previous_jobs = Vec::new();
    let mut attempt = 1;
    if let Some(rec) = pending_job(&spec.dir)? {
        observer(&JobEvent::Reattached {
            job_id: rec.job_id.clone(),
            job_name: rec.job_name.clone(),
            attempt: rec.attempt,
        });
        attempt = rec.attempt;
        previous_jobs = rec.previous_jobs.clone();
        reattached = true;
        pending = Some(rec);
    }

    loop {
        let (mut record, just_reattached) = match pending.take() {
            Some(rec) => (rec, true),
            None => (
                submit(spec, options, &cli, attempt, &previous_jobs, observer)?,
                false,
            ),
        };
        let end = match wait(spec, options, &cli, &record, cancel, observer) {
            Ok(end) => end,
            Err(err) => {
                if matches!(err, SlurmError::Interrupted { .. }) {
                    finish(&mut record, &spec.dir)?;
                }
                return Err(err);
            }
        };
        let log_path = spec.dir.join(log_name(&record.job_id));
        let why = match end {
            AttemptEnd::Exited(sentinel) => {
                if sentinel.exit_code == 0 || attempt >= max_attempts {
                    finish(&mut record, &spec.dir)?;
                    return Ok(JobOutcome {
                        job_id: record.job_id.clone(),
                        job_name: record.job_name.clone(),
                        exit_code: sentinel.exit_code,
                        nodes: sentinel.nodes,
                        log_path,
                        attempts: attempt,
                        previous_jobs,
                        reattached,
                    });
                }
                format!("exit code {}", sentinel.exit_code)
            }
            AttemptEnd::Died {
                state,
                reason,
                disposition,
            } => {
                let ended = |attempts| {
                    Box::new(EndedJob {
                        job_id: record.job_id.clone(),
                        job_name: record.job_name.clone(),
                        state: state.clone(),
                        reason: reason.clone(),
                        sentinel: spec.dir.join(sentinel_name(&record.job_id)),
                        log: log_path.clone(),
                        attempts,
                    })
                };
                if disposition == Disposition::Cancelled {
                    let err = SlurmError::CancelledOutside(ended(attempt));
                    finish(&mut record, &spec.dir)?;
                    return Err(err);
                }
                // A job an earlier tureen submitted that the controller no longer knows
                // (purged, or the controller's state was reset): nobody saw it fail, so
                // submitting it again does not use up a retry.
                if just_reattached && state == UNKNOWN_STATE {
                    observer(&JobEvent::Retrying {
                        failed_job: record.job_id.clone(),
                        attempt,
                        why: "the controller no longer knows the job".to_string(),
                    });
                    previous_jobs.push(record.job_id.clone());
                    finish(&mut record, &spec.dir)?;
                    continue;
                }
                if attempt >= max_attempts {
                    let err = SlurmError::JobDied(ended(attempt));
                    finish(&mut record, &spec.dir)?;
                    return Err(err);
                }
                if reason.is_empty() {
                    format!("ended {state} without an exit code")
                } else {
                    format!("ended {state} ({reason}) without an exit code")
                }
            }
        };
        previous_jobs.push(record.job_id.clone());
        finish(&mut record, &spec.dir)?;
        attempt += 1;
        observer(&JobEvent::Retrying {
            failed_job: record.job_id.clone(),
            attempt,
            why,
        });
    }
}

/// The job an earlier, interrupted `run_job` left in `dir` (submitted, outcome not yet
/// collected), if any: the next [`run_job`] on `dir` re-attaches to it.
pub fn pending_job(dir: &Path) -> Result<Option<JobRecord>, SlurmError> {
    Ok(JobRecord::load(dir)?.filter(|r| !r.finished))
}

/// The state name used when no Slurm command knows the job any more.
const UNKNOWN_STATE: &str = "UNKNOWN";

fn finish(record: &mut JobRecord, dir: &Path) -> Result<(), SlurmError> {
    record.finished = true;
    record.store(dir).map(|_| ())
}

/// Writes the script, submits it and records the job id before anyone relies on it.
pub(crate) fn submit(
    spec: &SlurmJobSpec,
    options: &SlurmOptions,
    cli: &SlurmCli,
    attempt: u32,
    previous_jobs: &[String],
    observer: &mut dyn FnMut(&JobEvent),
) -> Result<JobRecord, SlurmError> {
    let args = spec.sbatch_args(&options.settings)?;
    let sbatch_command = cli::display("sbatch", &args);
    let text = script::build(&script::ScriptSpec {
        dir: &spec.dir,
        command: &spec.command,
        env: &spec.env,
        nodes: spec.resources.step_nodes,
        tasks_per_node: spec.resources.tasks_per_node,
        cpus_per_task: spec.resources.cpus_per_task,
        attempt,
        sbatch_command: &sbatch_command,
    })?;
    // Kept for people (to read, or resubmit by hand); sbatch reads it from stdin.
    let script_path = spec.dir.join(format!("slurm-attempt-{attempt}.sh"));
    std::fs::write(&script_path, &text).map_err(|e| SlurmError::io(&script_path, e))?;

    let job_id = cli.submit(&args, &text)?;
    let record = JobRecord {
        job_id: job_id.clone(),
        job_name: spec.job_name(),
        attempt,
        submitted_at: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
        finished: false,
        previous_jobs: previous_jobs.to_vec(),
    };
    if let Err(err) = record.store(&spec.dir) {
        // Without a record nobody could re-attach to this job: do not leave it running.
        let _ = cli.cancel(&job_id);
        return Err(err);
    }
    observer(&JobEvent::Submitted {
        job_id,
        job_name: record.job_name.clone(),
        attempt,
        log: spec.dir.join(log_name(&record.job_id)),
    });
    Ok(record)
}

/// How one attempt ended.
enum AttemptEnd {
    /// The sentinel appeared.
    Exited(Sentinel),
    /// The job ended (or vanished) without one.
    Died {
        state: String,
        reason: String,
        disposition: Disposition,
    },
}

fn read_sentinel(dir: &Path, job_id: &str) -> Result<Option<Sentinel>, SlurmError> {
    let path = dir.join(sentinel_name(job_id));
    match std::fs::read_to_string(&path) {
        Ok(text) => parse_sentinel(&text).map(Some).ok_or_else(|| {
            SlurmError::io(
                &path,
                std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("not an exit-code file: {text:?}"),
                ),
            )
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(SlurmError::io(path, e)),
    }
}

/// Waits for one job: its sentinel, its silent death, or the cancel flag.
fn wait(
    spec: &SlurmJobSpec,
    options: &SlurmOptions,
    cli: &SlurmCli,
    record: &JobRecord,
    cancel: &AtomicBool,
    observer: &mut dyn FnMut(&JobEvent),
) -> Result<AttemptEnd, SlurmError> {
    let job_id = record.job_id.as_str();
    let mut next_query = Instant::now();
    let mut unreachable_since: Option<Instant> = None;
    let mut ended: Option<(Instant, String, String, Disposition)> = None;
    let mut last_state = String::new();
    let mut preempted_since: Option<Instant> = None;
    loop {
        if cancel.load(Ordering::SeqCst) {
            return Err(interrupt(options, cli, record, observer));
        }
        if let Some(sentinel) = read_sentinel(&spec.dir, job_id)? {
            return Ok(AttemptEnd::Exited(sentinel));
        }
        let now = Instant::now();
        if now >= next_query {
            next_query = now + options.query_interval;
            match cli.query(job_id) {
                Ok(info) => {
                    unreachable_since = None;
                    let (state, reason, disposition) = match info {
                        Some(i) => (
                            i.state.as_str().to_string(),
                            i.reason,
                            i.state.disposition(),
                        ),
                        None => (UNKNOWN_STATE.to_string(), String::new(), Disposition::Ended),
                    };
                    if state != last_state {
                        observer(&JobEvent::State {
                            job_id: job_id.to_string(),
                            state: state.clone(),
                            reason: reason.clone(),
                        });
                        last_state = state.clone();
                    }
                    let disposition = match disposition {
                        Disposition::Preempted => {
                            let since = *preempted_since.get_or_insert(now);
                            if now.duration_since(since) < options.preempt_grace {
                                Disposition::Active
                            } else {
                                // Not requeued: retried by us, like a node failure.
                                Disposition::NodeFailure
                            }
                        }
                        other => {
                            preempted_since = None;
                            other
                        }
                    };
                    if disposition == Disposition::Active {
                        ended = None;
                    } else if ended.is_none() {
                        ended = Some((now, state, reason, disposition));
                        // Once the job has ended, look again soon rather than after a
                        // full query interval: only the sentinel grace is left to wait.
                        next_query = now + options.query_interval.min(options.sentinel_grace);
                    }
                }
                Err(err) => {
                    let since = *unreachable_since.get_or_insert(now);
                    if now.duration_since(since) >= options.controller_timeout {
                        return Err(SlurmError::ControllerUnreachable {
                            job_id: job_id.to_string(),
                            secs: now.duration_since(since).as_secs(),
                            last_error: err.to_string(),
                        });
                    }
                }
            }
        }
        if let Some((since, state, reason, disposition)) = &ended {
            if since.elapsed() >= options.sentinel_grace {
                // One last look: the job may have written it just now.
                if let Some(sentinel) = read_sentinel(&spec.dir, job_id)? {
                    return Ok(AttemptEnd::Exited(sentinel));
                }
                return Ok(AttemptEnd::Died {
                    state: state.clone(),
                    reason: reason.clone(),
                    disposition: *disposition,
                });
            }
        }
        sleep_unless_cancelled(options.poll_interval, cancel);
    }
}

/// `scancel`s the job and waits (bounded) until Slurm no longer lists it as active.
fn interrupt(
    options: &SlurmOptions,
    cli: &SlurmCli,
    record: &JobRecord,
    observer: &mut dyn FnMut(&JobEvent),
) -> SlurmError {
    let job_id = record.job_id.clone();
    observer(&JobEvent::Cancelling {
        job_id: job_id.clone(),
    });
    if let Err(err) = cli.cancel(&job_id) {
        return err;
    }
    let deadline = Instant::now() + options.cancel_timeout;
    let mut final_state = None;
    while Instant::now() < deadline {
        match cli.query(&job_id) {
            Ok(Some(info))
                if matches!(
                    info.state.disposition(),
                    Disposition::Active | Disposition::Preempted
                ) => {}
            Ok(Some(info)) => {
                final_state = Some(info.state.as_str().to_string());
                break;
            }
            Ok(None) => break,
            Err(_) => {}
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    SlurmError::Interrupted {
        job_id,
        job_name: record.job_name.clone(),
        final_state,
    }
}

/// Sleeps `total`, waking early when `cancel` is set.
fn sleep_unless_cancelled(total: Duration, cancel: &AtomicBool) {
    let step = Duration::from_millis(50);
    let deadline = Instant::now() + total;
    while !cancel.load(Ordering::SeqCst) {
        let now = Instant::now();
        if now >= deadline {
            break;
        }
        std::thread::sleep(step.min(deadline - now));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_sbatch_is_a_clear_error_and_leaves_no_record() {
        let dir = tempfile::tempdir().unwrap();
        let mut spec =
            SlurmJobSpec::stage_exec("r", "s", Path::new("/t"), &dir.path().join("job.json"));
        spec.command = vec!["/bin/true".into()];
        let options = SlurmOptions {
            bin_dir: Some(dir.path().join("no-such-bin")),
            ..Default::default()
        };
        let err = run_job(&spec, &options, &AtomicBool::new(false), &mut |_| {}).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, SlurmError::Spawn { .. }), "{msg}");
        assert!(
            msg.contains("sbatch --parsable --job-name=tureen-r-s"),
            "{msg}"
        );
        assert_eq!(JobRecord::load(dir.path()).unwrap(), None);
    }
}
