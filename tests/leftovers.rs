//! Nothing is left behind: a SIGKILLed `tureen run`, `soup` or `store add` leaves temp
//! files and work directories whose pid is dead, which the next run, `store add`,
//! `soup` to the same path, `verify` and `gc` remove; no process of a command stage
//! outlives a SIGKILLed tureen; and a training run keeps no second copy of its
//! checkpoints once it ended.

mod engine_common;

use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use engine_common::{assert_store_consistent, Workspace};
use tureen_artifacts::safetensors::{write_file, Dtype};

/// Entries of `<store>/tmp` (sorted names).
fn tmp_entries(store: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(store.join("tmp"))
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// A pseudo-random delay in `[lo, hi)` milliseconds (from the clock: kills land at
/// different points each run).
fn random_delay(lo: u64, hi: u64) -> Duration {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos() as u64;
    Duration::from_millis(lo + nanos % (hi - lo))
}

fn kill9(child: &mut Child) {
    // SAFETY: SIGKILL to our own child.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGKILL) };
    let _ = child.wait();
}

/// Pids of live processes whose command line contains `marker`.
fn processes_with(marker: &str) -> Vec<u32> {
    let live = engine_common::live_processes().into_iter();
    live.filter(|p| p.cmdline.contains(marker))
        .map(|p| p.pid)
        .collect()
}

fn wait_until(timeout: Duration, mut done: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if done() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    done()
}

/// Four command stages in a chain; each starts grandchildren named `marker` (one in
/// the background, one in a session of its own) and works for a moment.
fn command_dag(marker: &str) -> String {
    let stage = |name: &str, dep: Option<&str>| {
        let input = dep
            .map(|d| format!("    inputs: {{prev: {d}.o}}\n"))
            .unwrap_or_default();
        format!(
            "  {name}:
    kind: command
{input}    cmd: |
      sh -c 'sleep 300' {marker}-bg &
      setsid sh -c 'sleep 300' {marker}-session &
      sleep 0.3
      echo {name} > ${{outs.o}}
    outs: {{o: {name}.txt}}
"
        )
    };
    format!(
        "tureen: 1\nstages:\n{}{}{}{}",
        stage("a", None),
        stage("b", Some("a")),
        stage("c", Some("b")),
        stage("d", Some("c"))
    )
}

#[test]
fn killed_runs_of_command_dags_leave_no_process_and_the_next_run_no_temp() {
    let ws = Workspace::new();
    let marker = format!("tureen-leftover-{}", std::process::id());
    ws.write("p.yaml", &command_dag(&marker));
    for round in 0..5 {
        let mut run = ws
            .cmd(&[
                "run", "p.yaml", "--plain", "--force", "a", "--force", "b", "--force", "c",
                "--force", "d",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(random_delay(150, 1300));
        kill9(&mut run);
        assert!(
            wait_until(Duration::from_secs(5), || processes_with(&marker)
                .is_empty()),
            "round {round}: processes of the stages outlived tureen: {:?}",
            processes_with(&marker)
        );
    }
    ws.ok(&["run", "p.yaml", "--plain"]);
    assert_eq!(tmp_entries(&ws.store()), Vec::<String>::new());
    assert!(
        processes_with(&marker).is_empty(),
        "a finished stage leaves nothing running"
    );
    assert_store_consistent(&ws.store());
}

/// A file big enough that copying it takes a while.
fn big_file(path: &Path, mib: usize) {
    let bytes: Vec<u8> = (0..mib << 20).map(|i| (i % 251) as u8).collect();
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn a_killed_store_add_leaves_a_temp_object_that_verify_reports_and_removes() {
    let ws = Workspace::new();
    big_file(&ws.path().join("big.bin"), 256);
    ws.ok(&["store", "ls"]); // creates the store
    let mut left = Vec::new();
    for _ in 0..20 {
        let mut add = ws
            .cmd(&["store", "add", "big.bin"])
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(random_delay(5, 120));
        kill9(&mut add);
        left = tmp_entries(&ws.store());
        if !left.is_empty() {
            break;
        }
        let _ = std::fs::remove_dir_all(ws.store().join("objects"));
    }
    assert!(
        !left.is_empty(),
        "no kill landed while the object was being written"
    );
    assert!(left[0].starts_with(".object."), "{left:?}");
    let out = ws.ok(&["store", "verify"]);
    assert!(out.contains("left by a process that died"), "{out}");
    assert!(out.contains(&left[0]), "{out}");
    assert_eq!(tmp_entries(&ws.store()), Vec::<String>::new());
}

#[test]
fn a_killed_store_add_leaves_nothing_after_the_next_store_add() {
    let ws = Workspace::new();
    ws.ok(&["store", "ls"]);
    // What a killed `store add` leaves: a temp object of a pid that no longer runs.
    let dead = {
        let mut c = std::process::Command::new("true").spawn().unwrap();
        c.wait().unwrap();
        c.id()
    };
    let host = tureen_artifacts::stale::host();
    let temp = ws
        .store()
        .join(format!("tmp/.object.{dead}@{host}.0.1.tmp"));
    std::fs::write(&temp, b"half an object").unwrap();
    ws.write("small.txt", "hello");
    ws.ok(&["store", "add", "small.txt"]);
    assert_eq!(tmp_entries(&ws.store()), Vec::<String>::new());
}

fn checkpoint(path: &Path, value: f32) {
    let data: Vec<u8> = std::iter::repeat_n(value.to_le_bytes(), 24 << 20)
        .flatten()
        .collect();
    write_file(path, &[("w", Dtype::F32, &[24 << 20], &data)], None).unwrap();
}

#[test]
fn a_killed_soup_leaves_a_temp_that_the_next_soup_to_the_same_path_removes() {
    let ws = Workspace::new();
    checkpoint(&ws.path().join("a.safetensors"), 1.0);
    checkpoint(&ws.path().join("b.safetensors"), 3.0);
    let soup = [
        "soup",
        "a.safetensors",
        "b.safetensors",
        "-o",
        "out/soup.safetensors",
    ];
    std::fs::create_dir_all(ws.path().join("out")).unwrap();
    let temps = || -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(ws.path().join("out"))
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".tmp"))
            .collect();
        v.sort();
        v
    };
    let mut left = Vec::new();
    for _ in 0..20 {
        let mut run = ws
            .cmd(&soup)
            .env_remove("TUREEN_STORE")
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(random_delay(20, 400));
        kill9(&mut run);
        left = temps();
        if !left.is_empty() {
            break;
        }
    }
    assert!(
        !left.is_empty(),
        "no kill landed while the soup was being written"
    );
    assert!(left[0].starts_with(".soup.safetensors."), "{left:?}");
    ws.ok(&soup);
    assert_eq!(temps(), Vec::<String>::new());
    assert!(ws.exists("out/soup.safetensors"));
}

/// A train stage and a rewind of its first checkpoint (a tree input), tiny.
fn train_and_rewind() -> &'static str {
    "tureen: 1
stages:
  core:
    kind: train
    params:
      model:
        preset: convnext_atto_64
        embed_dim: 16
        vision: {timm_model_name: null, depths: [1, 1, 1, 1], dims: [8, 16, 24, 32], image_size: 32}
        text: {vocab_size: 259, width: 16, heads: 2, layers: 1, context_length: 8}
      data: synthetic
      batch_size: 8
      samples_per_interval: 16
      intervals: 2
      lr: 1.0e-3
  again:
    kind: rewind
    inputs: {from: \"core.checkpoints[0]\"}
    params:
      data: synthetic
      batch_size: 8
      samples_per_interval: 16
      intervals: 2
      lr: 1.0e-3
"
}

#[test]
fn a_training_run_keeps_no_second_copy_of_its_checkpoints() {
    let ws = Workspace::new();
    ws.write("p.yaml", train_and_rewind());
    ws.ok(&["run", "p.yaml", "--plain"]);
    assert_eq!(tmp_entries(&ws.store()), Vec::<String>::new());
    // gc keeps what the runs reference and finds nothing else to keep in tmp/.
    ws.ok(&["store", "gc"]);
    assert_store_consistent(&ws.store());
}
