//! A data-parallel stage on this machine: `world` worker processes started as torchrun
//! would start them (`RANK`, `WORLD_SIZE`, `LOCAL_RANK`, `MASTER_ADDR=127.0.0.1`, a free
//! `MASTER_PORT`), each CUDA rank seeing its own GPUs of the stage's allocation.
//!
//! Rank 0 is the stage (its events, log, result); ranks 1.. write `<stage>.rank<r>.log`
//! and their own result files. When a rank exits with a failure the others get
//! [`PEER_GRACE`] to notice on their own (a killed peer closes its sockets, a stalled
//! one trips the collective timeout), then SIGINT, then SIGKILL: the stage always ends,
//! naming the rank that failed first. A failed attempt relaunches every rank (the
//! ranks resume from what rank 0 committed), up to the stage's attempts.

use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::Context as _;

use super::{die_with_parent, forward_lines, job_path, parse_event, worker_command, STOP_GRACE};
use crate::job::{rank_path, JobEvent, JobResult, JobStatus, StageJob};
use crate::rank::Rank;

/// How long the other ranks may take to end by themselves after one failed.
const PEER_GRACE: Duration = Duration::from_secs(10);

/// Runs `job` as `job.fingerprint.world` ranks of `exe`, relaunching all of them after
/// a failed attempt; rank 0's result is the stage's.
pub(super) fn run(
    job: &StageJob,
    exe: &Path,
    cancel: &AtomicBool,
    observer: &mut (dyn FnMut(JobEvent) + Send),
) -> anyhow::Result<JobResult> {
    let attempts = job.attempts.max(1);
    let clock = Instant::now();
    let started = crate::clock::now_rfc3339();
    let mut attempt = 1;
    loop {
        let mut result = launch(job, exe, attempt, cancel, observer)?;
        result.attempts = attempt;
        result.started = started.clone();
        result.seconds = clock.elapsed().as_secs_f64();
        let failed = result.status == JobStatus::Failed;
        if !failed || attempt >= attempts || cancel.load(Ordering::Relaxed) {
            return Ok(result);
        }
        attempt += 1;
        note(
            job,
            &format!(
                "== tureen: relaunching all {} ranks (attempt {attempt}/{attempts}) after: {}",
                job.fingerprint.world,
                result.error.as_deref().unwrap_or("a failure")
            ),
        );
    }
}

/// A line of tureen's own in the stage's log (between launches: no rank writes it then).
fn note(job: &StageJob, line: &str) {
    use std::io::Write as _;
    if let Ok(mut f) = OpenOptions::new().create(true).append(true).open(&job.log) {
        let _ = writeln!(f, "{line}");
    }
}

/// The ranks of one attempt; any still running when this is dropped (an error while
/// starting them) are killed and reaped.
struct Ranks {
    children: Vec<Child>,
    exited: Vec<Option<ExitStatus>>,
}

impl Drop for Ranks {
    fn drop(&mut self) {
        for (child, exited) in self.children.iter_mut().zip(&self.exited) {
            if exited.is_none() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

impl Ranks {
    fn running(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.children.len()).filter(|&r| self.exited[r].is_none())
    }

    /// Reaps the ranks that exited since the last look; the ranks newly failed.
    fn reap(&mut self) -> Vec<usize> {
        let mut failed = Vec::new();
        for r in 0..self.children.len() {
            if self.exited[r].is_some() {
                continue;
            }
            if let Ok(Some(status)) = self.children[r].try_wait() {
                self.exited[r] = Some(status);
                if !status.success() {
                    failed.push(r);
                }
            }
        }
        failed
    }

    /// Sends `signal` to every rank still running, then SIGCONT: a rank that was
    /// stopped (SIGSTOP, a debugger let go of) acts on it now instead of after
    /// [`STOP_GRACE`].
    fn signal_running(&mut self, signal: libc::c_int) {
        let running: Vec<usize> = self.running().collect();
        for r in running {
            let pid = self.children[r].id() as libc::pid_t;
            // SAFETY: kill(2) on our own, not yet reaped, child's pid.
            unsafe {
                libc::kill(pid, signal);
                libc::kill(pid, libc::SIGCONT);
            }
        }
    }
}

/// One launch of every rank, until all have exited.
fn launch(
    job: &StageJob,
    exe: &Path,
    attempt: u32,
    cancel: &AtomicBool,
    observer: &mut (dyn FnMut(JobEvent) + Send),
) -> anyhow::Result<JobResult> {
    let world = job.fingerprint.world;
    let job_file = job_path(job);
    let result_file = crate::slurm_dispatch::result_path(&job_file);
    job.write(&job_file)?;
    let results: Vec<PathBuf> = (0..world)
        .map(|r| result_of(&result_file, r, world))
        .collect();
    for path in &results {
        let _ = std::fs::remove_file(path);
    }
    let port = free_port()?;
    let mut ranks = Ranks {
        children: Vec::new(),
        exited: Vec::new(),
    };
    for r in 0..world {
        let mut command = rank_command(job, exe, &job_file, &result_file, r, port)?;
        let child = command
            .spawn()
            .with_context(|| format!("cannot start rank {r} of {world}: {}", exe.display()))?;
        ranks.children.push(child);
        ranks.exited.push(None);
    }
    let stdout = ranks.children[0].stdout.take().expect("stdout is piped");
    let stderr = ranks.children[0].stderr.take().expect("stderr is piped");

    let (tx, rx) = mpsc::channel::<JobEvent>();
    let first_failure = std::thread::scope(|scope| {
        let events = tx.clone();
        scope.spawn(move || forward_lines(stdout, &events, parse_event));
        scope.spawn(move || forward_lines(stderr, &tx, JobEvent::Line));
        let forward = |e: JobEvent| match e {
            // Rank 0 makes one attempt per launch; the launches are the attempts.
            JobEvent::Attempt(_) => JobEvent::Attempt(attempt),
            e => e,
        };
        let first_failure = supervise(&mut ranks, cancel, &rx, &mut |e| observer(forward(e)));
        // The pipes close when rank 0 has exited; what it printed last still counts.
        while let Ok(e) = rx.recv_timeout(Duration::from_secs(5)) {
            observer(forward(e));
        }
        first_failure
    });
    Ok(outcome(job, &ranks, first_failure, &results, cancel))
}

/// Waits for every rank to exit, stopping the rest once one failed (or on cancel).
/// Returns the rank that failed first, if any.
fn supervise(
    ranks: &mut Ranks,
    cancel: &AtomicBool,
    events: &mpsc::Receiver<JobEvent>,
    observer: &mut dyn FnMut(JobEvent),
) -> Option<usize> {
    let mut first_failure = None;
    let mut failed_at: Option<Instant> = None;
    let mut interrupted: Option<Instant> = None;
    while ranks.running().next().is_some() {
        match events.recv_timeout(Duration::from_millis(100)) {
            Ok(e) => observer(e),
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                std::thread::sleep(Duration::from_millis(100))
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
        }
        let failed = ranks.reap();
        if first_failure.is_none() {
            // Of ranks seen failing together, one killed by a signal is the cause.
            let signalled = |&&r: &&usize| ranks.exited[r].is_some_and(|s| s.code().is_none());
            first_failure = failed.iter().find(signalled).or(failed.first()).copied();
            if first_failure.is_some() {
                failed_at = Some(Instant::now());
            }
        }
        let stop = cancel.load(Ordering::Relaxed)
            || failed_at.is_some_and(|at| at.elapsed() > PEER_GRACE);
        match interrupted {
            None if stop => {
                ranks.signal_running(libc::SIGINT);
                interrupted = Some(Instant::now());
            }
            Some(at) if at.elapsed() > STOP_GRACE => ranks.signal_running(libc::SIGKILL),
            _ => {}
        }
    }
    first_failure
}

/// The stage's result from what the ranks left: rank 0's result, with the rank that
/// failed first named when the attempt failed.
fn outcome(
    job: &StageJob,
    ranks: &Ranks,
    first_failure: Option<usize>,
    results: &[PathBuf],
    cancel: &AtomicBool,
) -> JobResult {
    let world = results.len();
    let read = |r: usize| -> Option<JobResult> {
        serde_json::from_slice(&std::fs::read(&results[r]).ok()?).ok()
    };
    let exit = |r: usize| match ranks.exited[r] {
        Some(s) => s.to_string(),
        None => "no exit status".into(),
    };
    let leader = read(0);
    if let Some(res) = &leader {
        if matches!(res.status, JobStatus::Ran | JobStatus::Cached) {
            return res.clone();
        }
        if res.status == JobStatus::Cancelled && cancel.load(Ordering::Relaxed) {
            return res.clone();
        }
    }
    let culprit = first_failure.unwrap_or(0);
    let mut error = format!("rank {culprit} of {world} failed ({})", exit(culprit));
    if culprit > 0 {
        let own = read(culprit).and_then(|r| r.error);
        if let Some(e) = own {
            error.push_str(&format!(": {e}"));
        }
        error.push_str(&format!(
            "; its log: {}",
            rank_path(&job.log, rank(culprit, world)).display()
        ));
    }
    match leader.as_ref().and_then(|r| r.error.as_deref()) {
        Some(e) if culprit > 0 => error.push_str(&format!("; rank 0: {e}")),
        Some(e) => error.push_str(&format!(": {e}")),
        None if culprit > 0 => {
            error.push_str(&format!("; rank 0 {} without a result", exit(0)))
        }
        None => error.push_str(" without writing a result"),
    }
    let now = crate::clock::now_rfc3339();
    JobResult {
        status: JobStatus::Failed,
        outputs: Default::default(),
        error: Some(error),
        attempts: 1,
        started: now.clone(),
        ended: now,
        seconds: 0.0,
        resumed_from: leader.map_or(0, |r| r.resumed_from),
    }
}

fn rank(r: usize, world: usize) -> Rank {
    Rank {
        rank: r as u32,
        world: world as u32,
        local: r as u32,
    }
}

/// Where rank `r` writes its result (rank 0: the stage's result file).
fn result_of(result_file: &Path, r: u32, world: u32) -> PathBuf {
    match r {
        0 => result_file.to_path_buf(),
        r => rank_path(
            result_file,
            Rank {
                rank: r,
                world,
                local: r,
            },
        ),
    }
}

/// The command of rank `r`: rank 0 reports events on its pipes; the others append
/// what they print (a crash's last words) to their own log.
fn rank_command(
    job: &StageJob,
    exe: &Path,
    job_file: &Path,
    result_file: &Path,
    r: u32,
    port: u16,
) -> anyhow::Result<Command> {
    let world = job.fingerprint.world;
    let mut command = worker_command(exe, job_file, result_file, r == 0);
    command
        .env("RANK", r.to_string())
        .env("WORLD_SIZE", world.to_string())
        .env("LOCAL_RANK", r.to_string())
        .env("MASTER_ADDR", "127.0.0.1")
        .env("MASTER_PORT", port.to_string());
    if let Some(ids) = gpus_of_rank(&job.gpus, r, world) {
        command.env("CUDA_VISIBLE_DEVICES", ids);
    }
    if r > 0 {
        let log = rank_path(&job.log, rank(r as usize, world as usize));
        if let Some(dir) = log.parent() {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .with_context(|| format!("cannot open {}", log.display()))?;
        command.stdout(Stdio::null()).stderr(file);
    }
    die_with_parent(&mut command);
    Ok(command)
}

/// `CUDA_VISIBLE_DEVICES` of rank `r` of `world`: an equal contiguous share of the
/// stage's GPU ids (one each with the default `tasks_per_node`), or with fewer GPUs
/// than ranks, GPU `r mod n`. `None` for a stage that asked for no GPU.
fn gpus_of_rank(gpus: &[u32], r: u32, world: u32) -> Option<String> {
    if gpus.is_empty() {
        return None;
    }
    let (n, r, world) = (gpus.len(), r as usize, world as usize);
    let ids: &[u32] = if n >= world {
        let each = n / world;
        &gpus[r * each..(r + 1) * each]
    } else {
        std::slice::from_ref(&gpus[r % n])
    };
    let ids: Vec<String> = ids.iter().map(u32::to_string).collect();
    Some(ids.join(","))
}

/// A port no one listens on now, for rank 0's store. Another process could take it
/// before rank 0 binds it; then rank 0 fails to listen and the attempt fails clearly.
fn free_port() -> anyhow::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")
        .context("cannot find a free port for the ranks' rendezvous")?;
    Ok(listener.local_addr()?.port())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_rank_sees_its_own_share_of_the_stages_gpus() {
        let ids = |gpus: &[u32], world| {
            (0..world)
                .map(|r| gpus_of_rank(gpus, r, world))
                .collect::<Vec<_>>()
        };
        assert_eq!(ids(&[], 2), vec![None, None]);
        assert_eq!(
            ids(&[4, 5, 6, 7], 4),
            ["4", "5", "6", "7"].map(|s| Some(s.to_string()))
        );
        assert_eq!(
            ids(&[4, 5, 6, 7], 2),
            ["4,5", "6,7"].map(|s| Some(s.to_string()))
        );
        assert_eq!(
            ids(&[3], 2),
            ["3", "3"].map(|s| Some(s.to_string()))
        );
    }

    #[test]
    fn rank_results_sit_beside_the_stages() {
        let p = Path::new("/r/core.job.result.json");
        assert_eq!(result_of(p, 0, 2), p);
        assert_eq!(
            result_of(p, 1, 2),
            Path::new("/r/core.job.result.rank1.json")
        );
    }
}
