//! Stages that run in another program ([`crate::kind::StageKind::worker`]): training and
//! evaluation run in `tureen-torch`, which links libtorch, so that `tureen` itself does
//! not and starts in milliseconds.
//!
//! Both sides of that seam live here. The engine calls [`run`]: it writes the
//! [`StageJob`] next to the stage's log, starts `WORKER stage-exec --job FILE --result
//! FILE --events`, turns the worker's JSON-lines events into [`JobEvent`]s, passes a
//! cancel on as SIGINT, and reads the [`JobResult`] the worker wrote. The worker's
//! `stage-exec` calls [`serve`], which is also what a Slurm job runs.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::Context as _;

use crate::job::{self, JobEvent, JobResult, JobStatus, StageJob};
use crate::kind::{KindRegistry, Runner};

mod ranks;

/// How long a worker may take to stop after SIGINT before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(30);

/// Finds the worker program `name`: next to the running tureen (where `cargo build`
/// and an install put it), else on `PATH`.
pub fn locate(name: &str, tureen_exe: &Path) -> Result<PathBuf, String> {
    let beside = tureen_exe.parent().map(|dir| dir.join(name));
    let on_path = std::env::var_os("PATH")
        .map(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join(name))
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    beside
        .into_iter()
        .chain(on_path)
        .find(|p| p.is_file())
        .ok_or_else(|| {
            format!(
                "this stage runs in `{name}`, which is neither next to {} nor on PATH \
                 (`cargo build --release` builds it beside tureen)",
                tureen_exe.display()
            )
        })
}

/// The worker program that executes `job` (found beside `tureen_exe`), or `None` when
/// its kind runs in tureen's own process.
pub fn program_for(job: &StageJob, tureen_exe: &Path) -> anyhow::Result<Option<PathBuf>> {
    match &job.runner {
        Runner::InProcess => Ok(None),
        Runner::Worker(name) => locate(name, tureen_exe)
            .map(Some)
            .map_err(|e| anyhow::anyhow!("stage `{}` (kind {}): {e}", job.stage, job.kind)),
    }
}

/// Executes `job` on this machine where its kind runs: in this process, or in the
/// kind's worker program (found beside `tureen_exe`). A data-parallel stage of several
/// ranks runs as that many processes of its worker (of `tureen stage-exec` for a kind
/// that runs in tureen).
pub fn execute_here(
    job: &StageJob,
    registry: &KindRegistry,
    tureen_exe: &Path,
    cancel: &AtomicBool,
    observer: &mut (dyn FnMut(JobEvent) + Send),
) -> anyhow::Result<JobResult> {
    match program_for(job, tureen_exe)? {
        None if job.fingerprint.world > 1 => ranks::run(job, tureen_exe, cancel, observer),
        None => job::execute(job, registry, cancel, observer),
        Some(exe) => run(job, &exe, cancel, observer),
    }
}

/// Where [`run`] writes `job`'s job file: beside the stage's log in the run directory.
pub fn job_path(job: &StageJob) -> PathBuf {
    job.log.with_extension("job.json")
}

/// `exe stage-exec --job JOB --result RESULT [--events]`, its stdin closed and (for
/// events) its stdout and stderr piped.
fn worker_command(exe: &Path, job_file: &Path, result_file: &Path, events: bool) -> Command {
    let mut command = Command::new(exe);
    command
        .arg("stage-exec")
        .arg("--job")
        .arg(job_file)
        .arg("--result")
        .arg(result_file)
        .stdin(Stdio::null());
    if events {
        command
            .arg("--events")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
    }
    command
}

/// Runs `job` in the worker program `exe` and waits for its result (as its
/// `fingerprint.world` ranks when that is more than 1).
pub fn run(
    job: &StageJob,
    exe: &Path,
    cancel: &AtomicBool,
    observer: &mut (dyn FnMut(JobEvent) + Send),
) -> anyhow::Result<JobResult> {
    if job.fingerprint.world > 1 {
        return ranks::run(job, exe, cancel, observer);
    }
    let job_file = job_path(job);
    let result_file = crate::slurm_dispatch::result_path(&job_file);
    job.write(&job_file)?;
    let _ = std::fs::remove_file(&result_file);

    let mut command = worker_command(exe, &job_file, &result_file, true);
    // The worker sees only the GPUs handed to this stage, as `cuda:0`, `cuda:1`, ...
    // (a stage that asked for none inherits tureen's environment).
    if !job.gpus.is_empty() {
        let ids: Vec<String> = job.gpus.iter().map(u32::to_string).collect();
        command.env("CUDA_VISIBLE_DEVICES", ids.join(","));
    }
    die_with_parent(&mut command);
    let mut child = command
        .spawn()
        .with_context(|| format!("cannot start {}", exe.display()))?;
    let stdout = child.stdout.take().expect("stdout is piped");
    let stderr = child.stderr.take().expect("stderr is piped");

    let (tx, rx) = mpsc::channel::<JobEvent>();
    let status = std::thread::scope(|scope| -> anyhow::Result<std::process::ExitStatus> {
        let events = tx.clone();
        scope.spawn(move || forward_lines(stdout, &events, parse_event));
        scope.spawn(move || forward_lines(stderr, &tx, JobEvent::Line));
        let mut interrupted: Option<Instant> = None;
        loop {
            match rx.recv_timeout(Duration::from_millis(100)) {
                Ok(event) => observer(event),
                // Both pipes closed: the worker has exited (or closed them); reap it.
                Err(mpsc::RecvTimeoutError::Disconnected) => return Ok(child.wait()?),
                Err(mpsc::RecvTimeoutError::Timeout) => {}
            }
            if cancel.load(Ordering::Relaxed) {
                match interrupted {
                    None => {
                        // The worker stops its stage cleanly and still writes a result.
                        // SAFETY: kill(2) on our own child's pid.
                        unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGINT) };
                        interrupted = Some(Instant::now());
                    }
                    Some(at) if at.elapsed() > STOP_GRACE => {
                        let _ = child.kill();
                    }
                    Some(_) => {}
                }
            }
        }
    })?;

    let bytes = std::fs::read(&result_file).with_context(|| {
        format!(
            "{} {status} without writing a result; see {}",
            exe.display(),
            job.log.display()
        )
    })?;
    serde_json::from_slice(&bytes)
        .with_context(|| format!("{}: not a stage result", result_file.display()))
}

/// One event per line of `pipe` into `events`, until the pipe closes.
fn forward_lines(
    pipe: impl Read,
    events: &mpsc::Sender<JobEvent>,
    to_event: impl Fn(String) -> JobEvent,
) {
    for line in BufReader::new(pipe).lines() {
        let Ok(line) = line else { break };
        if events.send(to_event(line)).is_err() {
            break;
        }
    }
}

/// A line of the worker's stdout: an event, or (from a library that prints) plain text.
fn parse_event(line: String) -> JobEvent {
    serde_json::from_str(&line).unwrap_or(JobEvent::Line(line))
}

/// A worker must not outlive the tureen that started it (killed with SIGKILL, say):
/// it would hold the stage's lock and keep computing for nobody.
fn die_with_parent(command: &mut Command) {
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::process::CommandExt;
        // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
        unsafe {
            command.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = command;
}

/// What `stage-exec` was asked to do.
#[derive(Debug, Clone)]
pub struct ServeArgs {
    /// The [`StageJob`] file to execute (`--job`), as the engine or Slurm executor
    /// wrote it.
    pub job: PathBuf,
    /// Default: `<job>.result.json` beside the job.
    pub result: Option<PathBuf>,
    /// Print events as JSON lines (for [`run`]) instead of plain log lines (Slurm logs).
    pub events: bool,
}

/// `stage-exec`: executes the job file with the kinds of `registry`, writes its
/// result, and says whether the stage succeeded.
pub fn serve(args: &ServeArgs, registry: &KindRegistry) -> anyhow::Result<bool> {
    let mut job = StageJob::read(&args.job)?;
    // On Slurm the allocation decides the GPUs (the engine hands out none there).
    if job.gpus.is_empty() {
        job.gpus = crate::slurm::allocated_gpus().unwrap_or_default();
    }
    // One of several ranks of a data-parallel stage when a launcher (torchrun, srun)
    // says so.
    let rank = crate::rank::Rank::from_env()
        .map_err(|e| anyhow::anyhow!("stage {}: launcher variable {e}", job.stage))?;
    check_world(&job, rank)?;
    let cancel = crate::interrupt::install();
    let events = args.events;
    let mut observer = |e: JobEvent| {
        if events {
            println!("{}", serde_json::to_string(&e).expect("events serialize"));
        } else if let JobEvent::Line(l) = e {
            println!("{l}");
        }
    };
    let result = job::execute_as(&job, registry, rank, cancel, &mut observer)?;
    let path = args
        .result
        .clone()
        .unwrap_or_else(|| crate::slurm_dispatch::result_path(&args.job));
    // Every rank is started with the same arguments; rank 0's result is the stage's.
    let path = match rank.is_leader() {
        true => path,
        false => job::rank_path(&path, rank),
    };
    let bytes = serde_json::to_vec_pretty(&result)?;
    tureen_artifacts::fsutil::write_atomic(&path, &bytes)?;
    match result.status {
        JobStatus::Ran | JobStatus::Cached => Ok(true),
        JobStatus::Failed | JobStatus::Cancelled => {
            crate::eprintln_lossy!("stage {}: {}", job.stage, result.error.unwrap_or_default());
            Ok(false)
        }
    }
}

/// A stage planned for W ranks (its key says so) runs only as W ranks. A job planned
/// for one process may still be started by a site's own launcher as any number.
fn check_world(job: &StageJob, rank: crate::rank::Rank) -> anyhow::Result<()> {
    let planned = job.fingerprint.world;
    if planned > 1 && rank.world != planned {
        anyhow::bail!(
            "stage {}: planned for {planned} ranks (resources: nodes x tasks_per_node), \
             but the launcher started {} (WORLD_SIZE or SLURM_NTASKS)",
            job.stage,
            rank.world
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_travel_as_json_lines_and_plain_text_becomes_a_log_line() {
        for e in [
            JobEvent::Line("step 3 loss 2.1".into()),
            JobEvent::Progress(3, 10),
            JobEvent::Waiting("waiting for pid 7".into()),
            JobEvent::Attempt(2),
        ] {
            let wire = serde_json::to_string(&e).unwrap();
            assert!(!wire.contains('\n'));
            assert_eq!(parse_event(wire), e);
        }
        assert_eq!(
            parse_event("[W CPUAllocator.cpp] a libtorch warning".into()),
            JobEvent::Line("[W CPUAllocator.cpp] a libtorch warning".into())
        );
    }

    #[test]
    fn a_missing_worker_is_named_with_where_it_was_looked_for() {
        let dir = tempfile::tempdir().unwrap();
        let err = locate("tureen-no-such-worker", &dir.path().join("tureen")).unwrap_err();
        assert!(err.contains("`tureen-no-such-worker`"), "{err}");
        assert!(err.contains(&dir.path().display().to_string()), "{err}");
        std::fs::write(dir.path().join("tureen-no-such-worker"), "").unwrap();
        assert_eq!(
            locate("tureen-no-such-worker", &dir.path().join("tureen")).unwrap(),
            dir.path().join("tureen-no-such-worker")
        );
    }
}
