//! [`run_job`] against the real single-node test cluster of `scripts/slurm/up.sh`.
//!
//! The cluster is found through `TUREEN_TEST_SLURM_CONF` (its slurm.conf; scripts/test.sh
//! sets it after starting the cluster). Without it these tests fail under CI (`CI=true`)
//! and are skipped, with a note, elsewhere. Jobs run small shell commands in place of
//! `tureen stage-exec`, so every path of the executor is exercised in seconds.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use super::run::submit;
use super::*;

/// Tests that take the node down must not run while other tests have jobs on it.
static NODE: RwLock<()> = RwLock::new(());

fn cluster() -> Option<PathBuf> {
    match std::env::var_os("TUREEN_TEST_SLURM_CONF") {
        Some(conf) => Some(PathBuf::from(conf)),
        None if std::env::var("CI").is_ok_and(|v| v == "true") => {
            panic!("TUREEN_TEST_SLURM_CONF is not set under CI: scripts/test.sh must start the test cluster (scripts/slurm/up.sh)")
        }
        None => {
            eprintln!(
                "skipped (no cluster): run scripts/slurm/up.sh and `. /tmp/tureen-slurm/env` first"
            );
            None
        }
    }
}

fn options(conf: PathBuf) -> SlurmOptions {
    SlurmOptions {
        slurm_conf: Some(conf),
        poll_interval: Duration::from_millis(100),
        query_interval: Duration::from_millis(300),
        sentinel_grace: Duration::from_millis(800),
        cancel_timeout: Duration::from_secs(30),
        ..Default::default()
    }
}

fn spec(dir: &std::path::Path, stage: &str, script: &str) -> SlurmJobSpec {
    SlurmJobSpec {
        run_id: "unit".into(),
        stage: stage.into(),
        dir: dir.to_path_buf(),
        command: vec!["/bin/sh".into(), "-c".into(), script.into()],
        env: BTreeMap::new(),
        resources: SlurmResources::default(),
        retries: 0,
    }
}

fn slurm(conf: &std::path::Path, args: &[&str]) -> String {
    let out = Command::new(args[0])
        .args(&args[1..])
        .env("SLURM_CONF", conf)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs `run_job` on a thread, calling `on_running(job_id)` once the job is RUNNING.
fn run_with(
    spec: SlurmJobSpec,
    options: SlurmOptions,
    cancel: Arc<AtomicBool>,
    on_running: impl Fn(&str) + Send + 'static,
) -> (Result<JobOutcome, SlurmError>, Vec<JobEvent>) {
    std::thread::spawn(move || {
        let mut events = Vec::new();
        let mut fired = false;
        let result = run_job(&spec, &options, &cancel, &mut |e| {
            if let JobEvent::State { job_id, state, .. } = e {
                if state == "RUNNING" && !fired {
                    fired = true;
                    on_running(job_id);
                }
            }
            events.push(e.clone());
        });
        (result, events)
    })
    .join()
    .unwrap()
}

#[test]
fn job_runs_under_its_name_and_reports_exit_code_nodes_and_log() {
    let Some(conf) = cluster() else { return };
    let _node = NODE.read().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let mut events = Vec::new();
    let outcome = run_job(
        &spec(dir.path(), "hello", "echo hello from $SLURM_JOB_NAME"),
        &options(conf.clone()),
        &AtomicBool::new(false),
        &mut |e| events.push(e.clone()),
    )
    .unwrap();
    assert!(outcome.success(), "{outcome:?}");
    assert_eq!(outcome.job_name, "tureen-unit-hello");
    assert_eq!(outcome.attempts, 1);
    assert!(!outcome.nodes.is_empty());
    let log = std::fs::read_to_string(&outcome.log_path).unwrap();
    assert!(log.contains("hello from tureen-unit-hello"), "{log}");
    assert!(
        matches!(&events[0], JobEvent::Submitted { job_id, .. } if *job_id == outcome.job_id),
        "{events:?}"
    );
    // The controller knows the job by its name.
    let shown = slurm(&conf, &["scontrol", "show", "job", "-o", &outcome.job_id]);
    assert!(shown.contains("JobName=tureen-unit-hello"), "{shown}");
    // The record is closed, so a later run submits afresh.
    assert!(JobRecord::load(dir.path()).unwrap().unwrap().finished);
}

#[test]
fn failing_stage_is_retried_until_it_succeeds() {
    let Some(conf) = cluster() else { return };
    let _node = NODE.read().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let mut s = spec(
        dir.path(),
        "flaky",
        "echo attempt $TUREEN_SLURM_ATTEMPT; [ \"$TUREEN_SLURM_ATTEMPT\" -ge 2 ]",
    );
    s.retries = 2;
    let mut events = Vec::new();
    let outcome = run_job(&s, &options(conf), &AtomicBool::new(false), &mut |e| {
        events.push(e.clone())
    })
    .unwrap();
    assert!(outcome.success());
    assert_eq!(outcome.attempts, 2);
    assert_eq!(outcome.previous_jobs.len(), 1);
    assert!(
        events.iter().any(
            |e| matches!(e, JobEvent::Retrying { attempt: 2, why, .. } if why == "exit code 1")
        ),
        "{events:?}"
    );
}

#[test]
fn failing_stage_reports_its_exit_code_once_retries_are_used_up() {
    let Some(conf) = cluster() else { return };
    let _node = NODE.read().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let mut s = spec(dir.path(), "broken", "echo no luck >&2; exit 3");
    s.retries = 1;
    let outcome = run_job(&s, &options(conf), &AtomicBool::new(false), &mut |_| {}).unwrap();
    assert_eq!(outcome.exit_code, 3);
    assert_eq!(outcome.attempts, 2);
    assert!(std::fs::read_to_string(&outcome.log_path)
        .unwrap()
        .contains("no luck"));
}

#[test]
fn interrupt_cancels_the_job_with_scancel() {
    let Some(conf) = cluster() else { return };
    let _node = NODE.read().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let cancel = Arc::new(AtomicBool::new(false));
    let flag = cancel.clone();
    let started = Instant::now();
    let (result, _) = run_with(
        spec(dir.path(), "long", "sleep 120"),
        options(conf.clone()),
        cancel,
        move |_| flag.store(true, Ordering::SeqCst),
    );
    let err = result.unwrap_err();
    let SlurmError::Interrupted {
        job_id,
        final_state,
        ..
    } = &err
    else {
        panic!("{err}")
    };
    assert_eq!(final_state.as_deref(), Some("CANCELLED"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(60));
    let shown = slurm(&conf, &["scontrol", "show", "job", "-o", job_id]);
    assert!(shown.contains("JobState=CANCELLED"), "{shown}");
    assert!(JobRecord::load(dir.path()).unwrap().unwrap().finished);
}

#[test]
fn job_cancelled_outside_tureen_is_reported_not_retried() {
    let Some(conf) = cluster() else { return };
    let _node = NODE.read().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let mut s = spec(dir.path(), "victim", "sleep 120");
    s.retries = 3;
    let c = conf.clone();
    let (result, events) = run_with(
        s,
        options(conf),
        Arc::new(AtomicBool::new(false)),
        move |job_id| {
            slurm(&c, &["scancel", job_id]);
        },
    );
    let err = result.unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, SlurmError::CancelledOutside(_)), "{msg}");
    assert!(
        msg.contains("cancelled outside tureen") && msg.contains("CANCELLED"),
        "{msg}"
    );
    assert!(
        !events
            .iter()
            .any(|e| matches!(e, JobEvent::Retrying { .. })),
        "{events:?}"
    );
}

#[test]
fn node_failure_is_retried_on_a_fresh_job() {
    let Some(conf) = cluster() else { return };
    let _node = NODE.write().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let mut s = spec(
        dir.path(),
        "unlucky",
        "[ \"$TUREEN_SLURM_ATTEMPT\" -ge 2 ] || sleep 120",
    );
    s.retries = 1;
    let c = conf.clone();
    let (result, events) = run_with(
        s,
        options(conf),
        Arc::new(AtomicBool::new(false)),
        move |_| {
            let node = slurm(&c, &["sinfo", "-h", "-N", "-o", "%N"]);
            let node = node.lines().next().unwrap().trim().to_string();
            slurm(
                &c,
                &[
                    "scontrol",
                    "update",
                    &format!("NodeName={node}"),
                    "State=DOWN",
                    "Reason=tureen-test",
                ],
            );
            // The test node's slurmd re-registers at once (ReturnToService=2); make sure.
            let _ = Command::new("scontrol")
                .args(["update", &format!("NodeName={node}"), "State=RESUME"])
                .env("SLURM_CONF", &c)
                .output();
        },
    );
    let outcome = result.unwrap();
    assert!(outcome.success(), "{outcome:?}");
    assert_eq!(outcome.attempts, 2);
    assert!(
        events
            .iter()
            .any(|e| matches!(e, JobEvent::Retrying { why, .. } if why.contains("NODE_FAIL"))),
        "{events:?}"
    );
}

#[test]
fn restarted_tureen_reattaches_instead_of_resubmitting() {
    let Some(conf) = cluster() else { return };
    let _node = NODE.read().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let s = spec(dir.path(), "survivor", "sleep 1; echo done");
    let options = options(conf);
    // A first tureen submits and then "dies" before waiting.
    let record = submit(&s, &options, &options.cli(), 1, &[], &mut |_| {}).unwrap();
    assert!(!JobRecord::load(dir.path()).unwrap().unwrap().finished);
    let mut events = Vec::new();
    let outcome = run_job(&s, &options, &AtomicBool::new(false), &mut |e| {
        events.push(e.clone())
    })
    .unwrap();
    assert!(outcome.reattached && outcome.success());
    assert_eq!(outcome.job_id, record.job_id);
    assert!(
        matches!(&events[0], JobEvent::Reattached { .. }),
        "{events:?}"
    );
    assert!(
        !events
            .iter()
            .any(|e| matches!(e, JobEvent::Submitted { .. })),
        "{events:?}"
    );
}

#[test]
fn gpu_stage_gets_a_gres_gpu() {
    let Some(conf) = cluster() else { return };
    let _node = NODE.read().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let mut s = spec(dir.path(), "gpu", "echo gpus=$SLURM_JOB_GPUS");
    s.resources.gpus_per_node = 1;
    let outcome = run_job(
        &s,
        &options(conf.clone()),
        &AtomicBool::new(false),
        &mut |_| {},
    )
    .unwrap();
    assert!(outcome.success());
    let log = std::fs::read_to_string(&outcome.log_path).unwrap();
    assert!(
        log.lines().any(|l| l.starts_with("gpus=") && l.len() > 5),
        "{log}"
    );
    let shown = slurm(&conf, &["scontrol", "show", "job", "-d", &outcome.job_id]);
    assert!(shown.contains("gres:gpu:1"), "{shown}");
}

#[test]
fn unknown_partition_is_a_submission_error_with_sbatch_stderr() {
    let Some(conf) = cluster() else { return };
    let dir = tempfile::tempdir().unwrap();
    let mut options = options(conf);
    options.settings.partition = Some("no-such-partition".into());
    let err = run_job(
        &spec(dir.path(), "x", "true"),
        &options,
        &AtomicBool::new(false),
        &mut |_| {},
    )
    .unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, SlurmError::Command { .. }), "{msg}");
    assert!(
        msg.contains("sbatch")
            && msg.contains("--partition=no-such-partition")
            && msg.contains("partition"),
        "{msg}"
    );
    assert_eq!(JobRecord::load(dir.path()).unwrap(), None);
}

#[test]
fn record_of_a_job_the_controller_forgot_is_resubmitted_without_using_a_retry() {
    let Some(conf) = cluster() else { return };
    let _node = NODE.read().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    // Left by a tureen that died long ago; the controller has since purged the job.
    JobRecord {
        job_id: "987654321".into(),
        job_name: "tureen-unit-forgotten".into(),
        attempt: 1,
        submitted_at: 0,
        finished: false,
        previous_jobs: Vec::new(),
    }
    .store(dir.path())
    .unwrap();
    let s = spec(dir.path(), "forgotten", "echo again");
    let mut events = Vec::new();
    let outcome = run_job(&s, &options(conf), &AtomicBool::new(false), &mut |e| {
        events.push(e.clone())
    })
    .unwrap();
    assert!(outcome.success() && outcome.reattached);
    assert_eq!(outcome.attempts, 1, "no retry was used up (retries: 0)");
    assert_eq!(outcome.previous_jobs, ["987654321"]);
    assert!(
        events.iter().any(
            |e| matches!(e, JobEvent::Retrying { why, .. } if why.contains("no longer knows"))
        ),
        "{events:?}"
    );
}
