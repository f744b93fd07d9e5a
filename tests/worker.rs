//! `tureen` links no libtorch: stages that need it (`train`, `rewind`, `eval`, greedy
//! `soup`) run in the `tureen-torch` worker, one process per stage. These tests pin down
//! that seam: what links what, what happens when the worker is missing, and that the
//! worker stops with tureen (Ctrl-C, SIGKILL) instead of outliving it.

mod engine_common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use engine_common::{both, Workspace};

/// A pipeline of one `train` stage on synthetic data.
fn train_pipeline(batch_size: u32, samples_per_interval: u32, intervals: u32) -> String {
    format!(
        "tureen: 1
stages:
  core:
    kind: train
    params:
      model: convnext_atto_64
      data: synthetic
      batch_size: {batch_size}
      samples_per_interval: {samples_per_interval}
      intervals: {intervals}
      lr: 1.0e-3
      threads: 1
"
    )
}

/// A train stage long enough to be interrupted (minutes if left alone).
fn long_train() -> String {
    train_pipeline(8, 64, 200)
}

/// Pids of live `tureen-torch` processes working for the store under `dir`.
fn workers_for(dir: &Path) -> Vec<u32> {
    let needle = dir.display().to_string();
    let live = engine_common::live_processes().into_iter();
    live.filter(|p| p.cmdline.contains("tureen-torch") && p.cmdline.contains(&needle))
        .map(|p| p.pid)
        .collect()
}

fn wait_until(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Starts `tureen run` on [`long_train`] and waits until its worker is training.
fn start_long_train(ws: &Workspace) -> Child {
    ws.write("p.yaml", &long_train());
    let child = ws
        .cmd(&["run", "p.yaml", "--plain"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_until("the worker to start", Duration::from_secs(60), || {
        !workers_for(ws.path()).is_empty()
    });
    child
}

#[test]
fn tureen_links_no_libtorch_and_the_worker_does() {
    let needed = |exe: &str| {
        let out = Command::new("ldd").arg(exe).output().expect("ldd");
        assert!(out.status.success(), "ldd {exe}: {}", both(&out));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let tureen = needed(env!("CARGO_BIN_EXE_tureen"));
    assert!(
        !tureen.contains("libtorch"),
        "tureen links libtorch:\n{tureen}"
    );
    assert!(!tureen.contains("libc10"), "tureen links libc10:\n{tureen}");
    let worker = needed(env!("CARGO_BIN_EXE_tureen-torch"));
    assert!(worker.contains("libtorch_cpu"), "{worker}");
}

#[test]
fn a_torch_stage_without_the_worker_fails_naming_it() {
    let ws = Workspace::new();
    // A copy of tureen alone in a directory: no tureen-torch beside it or on PATH.
    let bin = ws.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::copy(env!("CARGO_BIN_EXE_tureen"), bin.join("tureen")).unwrap();
    ws.write("p.yaml", &long_train());
    let out = Command::new(bin.join("tureen"))
        .args(["run", "p.yaml", "--plain"])
        .current_dir(ws.path())
        .env("TUREEN_STORE", ws.store())
        .env("PATH", "/usr/bin:/bin")
        .output()
        .unwrap();
    let text = both(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("core"), "{text}");
    assert!(text.contains("`tureen-torch`"), "{text}");
    assert!(text.contains("neither next to"), "{text}");
}

#[test]
fn ctrl_c_stops_the_worker_and_the_run_is_recorded_as_interrupted() {
    let ws = Workspace::new();
    let mut child = start_long_train(&ws);
    // SIGINT to tureen alone (not its process group): tureen must pass it on.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGINT) };
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "tureen did not stop"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(!status.success(), "an interrupted run is not a success");
    wait_until("the worker to exit", Duration::from_secs(10), || {
        workers_for(ws.path()).is_empty()
    });
    let runs = ws.ok(&["runs"]);
    assert!(runs.contains("interrupted"), "{runs}");
}

#[test]
fn a_killed_tureen_takes_its_worker_with_it() {
    let ws = Workspace::new();
    let mut child = start_long_train(&ws);
    child.kill().unwrap(); // SIGKILL: no chance to stop the worker itself
    child.wait().unwrap();
    wait_until(
        "the orphaned worker to die",
        Duration::from_secs(10),
        || workers_for(ws.path()).is_empty(),
    );
}

#[test]
fn piping_output_into_head_ends_quietly() {
    let ws = Workspace::new();
    // Enough stages that `dag` writes far more than a pipe holds after `head` exits.
    let items: Vec<String> = (0..4000).map(|i| format!("s{i}")).collect();
    ws.write(
        "p.yaml",
        &format!(
            "tureen: 1\nstages:\n  echo:\n    kind: command\n    foreach: [{}]\n    cmd: echo ${{item}} > out-${{item}}.txt\n    outs:\n      - out-${{item}}.txt\n",
            items.join(", ")
        ),
    );
    let out = Command::new("bash")
        .args([
            "-c",
            &format!(
                "set -o pipefail; '{}' dag p.yaml | head -n 1",
                env!("CARGO_BIN_EXE_tureen")
            ),
        ])
        .current_dir(ws.path())
        .env("TUREEN_STORE", ws.store())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(!stderr.contains("Broken pipe"), "{stderr}");
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 1);
    // Killed by SIGPIPE, as `cat` would be: 128 + 13.
    assert_eq!(out.status.code(), Some(141), "{stderr}");
}

#[test]
fn replay_runs_torch_stages_in_the_worker_and_finds_them_the_same() {
    let ws = Workspace::new();
    ws.write("p.yaml", &train_pipeline(4, 8, 2));
    ws.ok(&["run", "p.yaml", "--plain"]);
    let replay = ws.ok(&["replay", "latest", "--plain"]);
    let core = replay
        .lines()
        .find(|l| l.starts_with("core "))
        .unwrap_or_else(|| panic!("no row for core:\n{replay}"));
    assert!(core.contains("same"), "{replay}");
    assert!(replay.contains("1 same, 0 diverged"), "{replay}");
}
