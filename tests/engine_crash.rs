//! Crashes, interrupts and concurrent runs: `kill -9` mid-stage leaves no partial
//! object and the next run resumes at the first incomplete stage; SIGINT stops the
//! children cleanly; two runs on one store wait for each other instead of colliding.

mod engine_common;

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use engine_common::{assert_store_consistent, both, record, runs, status_of, Workspace};

fn wait_for(path: &Path, limit: Duration) {
    let start = Instant::now();
    while !path.exists() {
        assert!(
            start.elapsed() < limit,
            "timed out waiting for {}",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

const SLOW: &str = r#"
tureen: 1
stages:
  first:
    kind: command
    cmd: echo one > a.txt
    outs: [a.txt]
  slow:
    kind: command
    cmd: |
      touch slow.started
      if [ ! -f fast ]; then head -c 100000 /dev/zero > b.txt; sleep 30; fi
      echo done > b.txt
    deps: [a.txt]
    outs: [b.txt]
  last:
    kind: command
    cmd: cat b.txt a.txt > c.txt
    deps: [b.txt]
    outs: [c.txt]
"#;

#[test]
fn kill_9_mid_stage_leaves_no_partial_object_and_the_rerun_resumes() {
    let ws = Workspace::new();
    ws.write("p.yaml", SLOW);
    let mut child = ws
        .cmd(&["run", "p.yaml", "--plain"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for(&ws.path().join("slow.started"), Duration::from_secs(20));
    std::thread::sleep(Duration::from_millis(200));
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();

    let objects = assert_store_consistent(&ws.store());
    assert!(objects >= 1, "the finished stage's output should be stored");
    let killed = runs(&ws.store())[0].clone();
    assert_eq!(
        record(&ws.store(), &killed)["status"],
        "running",
        "a killed run stays marked as running"
    );
    // No cache entry claims the interrupted stage: one entry file, one line in the log.
    let cache = ws.store().join("cache");
    let entries = std::fs::read_dir(&cache)
        .unwrap()
        .filter(|e| {
            let path = e.as_ref().unwrap().path();
            path.extension().is_some_and(|x| x == "json")
        })
        .count();
    assert_eq!(entries, 1, "only `first` completed");
    let log = std::fs::read_to_string(cache.join("entries.log")).unwrap();
    assert_eq!(log.lines().count(), 1, "only `first` completed: {log}");
    assert_eq!(
        std::fs::read_dir(&cache).unwrap().count(),
        2,
        "nothing but the entry and the log in {}",
        cache.display()
    );

    ws.write("fast", "");
    ws.ok(&["run", "p.yaml"]);
    assert_eq!(status_of(&ws.store(), "first"), "cached");
    assert_eq!(status_of(&ws.store(), "slow"), "ran");
    assert_eq!(status_of(&ws.store(), "last"), "ran");
    assert_eq!(ws.read("c.txt"), "done\none\n");
    assert_store_consistent(&ws.store());
}

#[test]
fn sigint_stops_the_stage_process_group_and_records_the_interruption() {
    let ws = Workspace::new();
    ws.write(
        "p.yaml",
        r#"
tureen: 1
stages:
  wait:
    kind: command
    cmd: |
      trap 'echo term > got-term; exit 143' TERM
      touch wait.started
      sleep 30 &
      wait
    outs: [never.txt]
"#,
    );
    let child = ws
        .cmd(&["run", "p.yaml", "--plain"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for(&ws.path().join("wait.started"), Duration::from_secs(20));
    let started = Instant::now();
    // SAFETY: signalling the child we spawned.
    unsafe { libc_kill(child.id() as i32, 2) };
    let out = child.wait_with_output().unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "tureen took {:?} to stop",
        started.elapsed()
    );
    assert_eq!(out.status.code(), Some(130), "{}", both(&out));
    assert_eq!(
        ws.read("got-term"),
        "term\n",
        "the command did not receive SIGTERM"
    );
    let rec = record(&ws.store(), &runs(&ws.store())[0]);
    assert_eq!(rec["status"], "interrupted");
    assert_eq!(rec["stages"][0]["status"], "cancelled");
    assert_store_consistent(&ws.store());
}

extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, sig: i32) -> i32;
}

#[test]
fn two_runs_on_one_store_run_each_stage_once() {
    let ws = Workspace::new();
    ws.write(
        "p.yaml",
        r#"
tureen: 1
stages:
  once:
    kind: command
    cmd: echo x >> executions.log; sleep 1; echo result > out.txt
    outs: [out.txt]
"#,
    );
    let a = ws
        .cmd(&["run", "p.yaml", "--plain"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let b = ws
        .cmd(&["run", "p.yaml", "--plain"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (a, b) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
    assert!(a.status.success(), "{}", both(&a));
    assert!(b.status.success(), "{}", both(&b));
    assert_eq!(
        ws.read("executions.log"),
        "x\n",
        "the stage ran more than once"
    );
    assert_eq!(ws.read("out.txt"), "result\n");
    let texts = format!("{}{}", both(&a), both(&b));
    assert!(
        texts.contains("finished meanwhile by another run") || texts.contains("once: cached"),
        "one run should have picked up the other's result:\n{texts}"
    );
    assert_store_consistent(&ws.store());
}

#[test]
fn a_lock_left_by_a_killed_run_is_not_stale() {
    let ws = Workspace::new();
    ws.write("p.yaml", SLOW);
    let mut child = ws
        .cmd(&["run", "p.yaml", "--plain"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for(&ws.path().join("slow.started"), Duration::from_secs(20));
    child.kill().unwrap();
    child.wait().unwrap();
    // The lock file of `slow` is still there, but no one holds it.
    let locks = std::fs::read_dir(ws.store().join("locks")).unwrap().count();
    assert!(locks >= 1);
    ws.write("fast", "");
    let start = Instant::now();
    ws.ok(&["run", "p.yaml"]);
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "the re-run waited on a dead lock"
    );
}
