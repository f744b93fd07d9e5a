//! Data-parallel stages as a pipeline declares them (`resources.tasks_per_node`,
//! `nodes`): the world size is checked when the pipeline loads (exit 2 naming
//! `file:line:column`, nothing runs).

mod engine_common;

use engine_common::{both, Workspace};

/// A tiny `train` stage on synthetic data with `extra` params and `resources`.
fn train_stage(extra: &str, resources: &str) -> String {
    format!(
        "tureen: 1\nstages:\n  core:\n    kind: train\n    params:\n      model: convnext_atto_64\n      data: synthetic\n      batch_size: 12\n      samples_per_interval: 36\n      intervals: 1\n      lr: 1.0e-3\n{extra}    resources: {resources}\n"
    )
}

/// `tureen run p.yaml` on `yaml` is refused with exit 2 and nothing written; its output.
fn refused(yaml: &str) -> String {
    let ws = Workspace::new();
    ws.write("p.yaml", yaml);
    let out = ws.tureen(&["run", "p.yaml"]);
    let text = both(&out);
    assert_eq!(out.status.code(), Some(2), "expected exit 2:\n{text}");
    assert!(!ws.store().exists(), "{text}");
    text
}

#[test]
fn a_global_batch_that_does_not_divide_by_the_world_size_is_refused_naming_both() {
    let text = refused(&train_stage("", "{tasks_per_node: 5}"));
    assert!(
        text.contains("p.yaml:8:7: ")
            && text.contains("batch_size: 12 does not divide by the world size 5"),
        "{text}"
    );
    // Two nodes of 4 GPUs: 8 ranks by default (one per GPU).
    let text = refused(&train_stage("", "{nodes: 2, gpus: 4}"));
    assert!(
        text.contains("12 does not divide by the world size 8"),
        "{text}"
    );
}

#[test]
fn a_per_rank_batch_that_does_not_divide_by_micro_batch_is_refused_naming_both() {
    let text = refused(&train_stage("      micro_batch: 4\n", "{tasks_per_node: 2}"));
    assert!(
        text.contains("p.yaml:12:7: ")
            && text.contains(
                "micro_batch: the per-rank batch 6 (batch_size 12 / world size 2) does not divide by micro_batch 4"
            ),
        "{text}"
    );
}

#[test]
fn several_processes_for_a_kind_that_is_not_data_parallel_are_refused() {
    let text = refused(
        "tureen: 1\nstages:\n  s:\n    kind: command\n    cmd: echo hi > o.txt\n    outs: [o.txt]\n    resources: {tasks_per_node: 2}\n",
    );
    assert!(
        text.contains("p.yaml:7:5: ")
            && text.contains("kind `command` is not data-parallel")
            && text.contains("data-parallel kinds: ")
            && text.contains("rewind")
            && text.contains("train"),
        "{text}"
    );
    let text = refused(&train_stage("", "{tasks_per_node: 0}"));
    assert!(
        text.contains("`resources.tasks_per_node` must be at least 1"),
        "{text}"
    );
}

/// A CLIP small enough that 3 ranks train it in seconds on 2 cores.
const MODEL: &str = "{embed_dim: 16, init_logit_scale: 2.659260036932778, vision: {timm_model_name: null, depths: [1, 1], dims: [8, 16], mlp: conv1x1, mlp_ratio: 2, kernel_size: 7, ls_init_value: 0.5, norm_eps: 1.0e-6, drop_path: 0.2, image_size: 16, patch_size: 4, proj: linear, proj_bias: false}, text: {context_length: 8, vocab_size: 64, width: 16, heads: 2, layers: 1, mlp_ratio: 2, norm_eps: 1.0e-5}}";

/// The params every training stage here shares: intervals of 3 steps at batch 12.
fn common_params(intervals: u64) -> String {
    format!(
        "      data: synthetic\n      samples_per_interval: 36\n      intervals: {intervals}\n      lr: 2.0e-3\n      warmup: 2\n      grad_clip_norm: 1.0\n      seed: 5\n      device: cpu\n      threads: 1\n      log_every: 1\n      collective_timeout_s: 20.0\n      rendezvous_timeout_s: 30.0\n"
    )
}

/// A pipeline with one `train` stage `core` of `intervals` on `tasks` local ranks
/// (`micro` its micro-batch, if any), and `rest` appended.
fn core_pipeline(intervals: u64, tasks: u32, micro: Option<u64>, rest: &str) -> String {
    let micro = micro
        .map(|m| format!("      micro_batch: {m}\n"))
        .unwrap_or_default();
    format!(
        "tureen: 1\nstages:\n  core:\n    kind: train\n    params:\n      model: {MODEL}\n      batch_size: 12\n{micro}{}    resources: {{tasks_per_node: {tasks}}}\n{rest}",
        common_params(intervals)
    )
}

/// The newest run's directory in `ws`'s store.
fn run_dir(ws: &Workspace) -> std::path::PathBuf {
    let ids = engine_common::runs(&ws.store());
    ws.store().join("runs").join(ids.first().expect("a run"))
}

/// The bytes of the final checkpoint of stage `name` as the workspace has it.
fn final_bytes(ws: &Workspace, name: &str) -> Vec<u8> {
    let path = ws.path().join("outputs").join(name).join("final.safetensors");
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// (step, loss, lr) of every metrics record of `stage` in the newest run.
fn steps(ws: &Workspace, stage: &str) -> Vec<(u64, f64, f64)> {
    let path = run_dir(ws).join(format!("{stage}.metrics.jsonl"));
    std::fs::read_to_string(&path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|r| Some((r["step"].as_u64()?, r["loss"].as_f64()?, r["lr"].as_f64()?)))
        .collect()
}

#[test]
fn tureen_run_launches_two_local_ranks_that_equal_one_process_and_replay_the_same() {
    let two = Workspace::new();
    two.write("p.yaml", &core_pipeline(2, 2, None, ""));
    two.ok(&["run", "p.yaml", "--plain"]);
    let one = Workspace::new();
    one.write("p.yaml", &core_pipeline(2, 1, Some(6), ""));
    one.ok(&["run", "p.yaml", "--plain"]);

    // Bit-identical to one process whose micro-batches are the ranks' shares.
    assert_eq!(final_bytes(&two, "core"), final_bytes(&one, "core"));
    let (a, b) = (steps(&two, "core"), steps(&one, "core"));
    assert_eq!(a.len(), 6);
    assert_eq!(a, b);
    // Rank 1 kept its own log in the run's directory.
    let rank1 = std::fs::read_to_string(run_dir(&two).join("core.rank1.log")).unwrap();
    assert!(rank1.contains("rank 1 of 2"), "{rank1}");
    // The two runs have different keys (world 2 and 1), and the replay launches 2 ranks.
    let replay = two.ok(&["replay", "latest", "--plain"]);
    assert!(replay.contains("core: same"), "{replay}");
    let replayed = std::fs::read_to_string(run_dir(&two).join("core.rank1.log"));
    assert!(replayed.is_ok_and(|l| l.contains("rank 1 of 2")));
}

/// Pids of the rank-`rank` worker processes whose command line mentions `needle`.
fn ranks_with(needle: &str, rank: u32) -> Vec<u32> {
    let want = format!("RANK={rank}");
    let live = engine_common::live_processes().into_iter();
    live.filter(|p| p.cmdline.contains(needle) && p.has_env(&want))
        .map(|p| p.pid)
        .collect()
}

fn kill(pid: u32, signal: &str) {
    let ok = std::process::Command::new("kill")
        .args(["-s", signal, &pid.to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill -s {signal} {pid}");
}

/// Enough intervals after the first that rank 0 cannot finish while a test reacts.
const INTERVALS: u64 = 6;

/// The final checkpoint of an uninterrupted 2-rank run of `core_pipeline(INTERVALS, ..)`.
fn uninterrupted_final() -> Vec<u8> {
    let whole = Workspace::new();
    whole.write("p.yaml", &core_pipeline(INTERVALS, 2, None, ""));
    whole.ok(&["run", "p.yaml", "--plain"]);
    final_bytes(&whole, "core")
}

/// `tureen run p.yaml --plain` in `ws`, its output piped.
fn spawn_run(ws: &Workspace) -> std::process::Child {
    ws.cmd(&["run", "p.yaml", "--plain"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap()
}

/// Waits until `ws`'s running 2-rank `core` has committed interval 1, then freezes
/// (SIGSTOP) rank 1: rank 0 then gets no further than its next collective, however
/// fast the machine. Returns rank 1's pid.
fn freeze_rank_1_after_the_first_checkpoint(ws: &Workspace) -> u32 {
    let store = ws.store().display().to_string();
    let start = std::time::Instant::now();
    let log = || {
        engine_common::runs(&ws.store())
            .first()
            .and_then(|id| std::fs::read_to_string(ws.store().join("runs").join(id).join("core.log")).ok())
            .unwrap_or_default()
    };
    while !log().contains("checkpoint interval 1:") {
        assert!(start.elapsed().as_secs() < 120, "no checkpoint:\n{}", log());
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    let rank1 = ranks_with(&store, 1);
    assert_eq!(rank1.len(), 1, "rank 1's process: {rank1:?}");
    kill(rank1[0], "STOP");
    assert!(
        !log().contains(&format!("checkpoint interval {INTERVALS}:")),
        "rank 0 finished before rank 1 could be stopped:\n{}",
        log()
    );
    rank1[0]
}

/// The 2-rank `core` (with `rest` appended to its stage) run while its rank 1 is
/// frozen after the first checkpoint and then killed: the uninterrupted run's final
/// bytes, the workspace, `tureen run`'s output and how long it took after the kill.
fn run_losing_rank_1(rest: &str) -> (Vec<u8>, Workspace, std::process::Output, std::time::Duration) {
    let whole = uninterrupted_final();
    let ws = Workspace::new();
    ws.write("p.yaml", &core_pipeline(INTERVALS, 2, None, rest));
    let run = spawn_run(&ws);
    let rank1 = freeze_rank_1_after_the_first_checkpoint(&ws);
    kill(rank1, "KILL");
    let killed_at = std::time::Instant::now();
    let out = run.wait_with_output().unwrap();
    (whole, ws, out, killed_at.elapsed())
}

#[test]
fn a_killed_rank_fails_the_run_naming_it_and_a_rerun_resumes_to_the_same_bytes() {
    let (whole, ws, out, took) = run_losing_rank_1("");
    let text = both(&out);
    assert!(took.as_secs() < 25, "{took:?}");
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("core: FAILED") && text.contains("rank 1 of 2 failed (signal: 9 (SIGKILL))"),
        "{text}"
    );
    let store = ws.store().display().to_string();
    assert!(ranks_with(&store, 0).is_empty(), "rank 0 outlived the run");

    // Re-run: both ranks resume from what rank 0 committed and end as if never stopped.
    let rerun = ws.ok(&["run", "p.yaml", "--plain"]);
    assert!(rerun.contains("resumed from"), "{rerun}");
    assert_eq!(final_bytes(&ws, "core"), whole);
}

#[test]
fn with_retries_a_lost_rank_relaunches_every_rank_and_the_run_ends_with_the_uninterrupted_bytes() {
    let (whole, ws, out, _) = run_losing_rank_1("    retries: 1\n");
    let text = both(&out);
    assert!(out.status.success(), "the retry did not save the run:\n{text}");

    // Attempt 1 lost rank 1; attempt 2 was both ranks, resuming from rank 0's commit.
    let log = std::fs::read_to_string(run_dir(&ws).join("core.log")).unwrap();
    assert!(
        log.contains("== tureen: relaunching all 2 ranks (attempt 2/2) after: rank 1 of 2 failed (signal: 9 (SIGKILL))"),
        "{log}"
    );
    let rank1 = std::fs::read_to_string(run_dir(&ws).join("core.rank1.log")).unwrap();
    assert!(rank1.contains("resuming from committed checkpoint"), "{rank1}");
    let store = ws.store().display().to_string();
    assert!(ranks_with(&store, 0).is_empty() && ranks_with(&store, 1).is_empty());
    assert_eq!(final_bytes(&ws, "core"), whole);
    let record = engine_common::record(&ws.store(), &engine_common::runs(&ws.store())[0]);
    let core = record["stages"].as_array().unwrap().iter().find(|s| s["name"] == "core");
    assert_eq!(core.and_then(|s| s["attempts"].as_u64()), Some(2), "{record}");
}

#[test]
fn a_hung_rank_fails_the_run_within_the_collective_timeout_naming_it() {
    const TIMEOUT_S: u64 = 4;
    let ws = Workspace::new();
    ws.write(
        "p.yaml",
        &core_pipeline(INTERVALS, 2, None, "").replace(
            "collective_timeout_s: 20.0",
            &format!("collective_timeout_s: {TIMEOUT_S}.0"),
        ),
    );
    let run = spawn_run(&ws);
    // Stopped, never killed by the test: alive to the kernel, silent to its peers.
    freeze_rank_1_after_the_first_checkpoint(&ws);
    let stopped_at = std::time::Instant::now();
    let out = run.wait_with_output().unwrap();
    let took = stopped_at.elapsed();
    let text = both(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    // The collective timeout, the heartbeat diagnosis and the launcher's grace for the
    // other ranks: bounded, and nowhere near a hang.
    assert!(took.as_secs() < TIMEOUT_S + 25, "took {took:?}:\n{text}");
    assert!(text.contains("core: FAILED"), "{text}");
    assert!(text.contains("peer rank 1 has stopped"), "the hung rank is not named:\n{text}");
    let store = ws.store().display().to_string();
    assert!(ranks_with(&store, 1).is_empty(), "the stopped rank outlived the run");
}

#[test]
fn a_rewind_of_a_two_rank_core_follows_the_recomputed_schedule_at_one_and_three_ranks() {
    // From the checkpoint after interval 2, at batch 18 (divisible by 1, 2 and 3). One
    // process in micro-batches of 6 draws the drop-path masks the 3 ranks draw.
    let rewind = |name: &str, tasks: u32, micro: &str| {
        format!(
            "  {name}:\n    kind: rewind\n    inputs: {{from: \"core.checkpoints[1]\"}}\n    params:\n      batch_size: 18\n{micro}{}    resources: {{tasks_per_node: {tasks}}}\n",
            common_params(3).replace("lr: 2.0e-3", "lr: 4.0e-3")
        )
    };
    let rest = rewind("one", 1, "      micro_batch: 6\n") + &rewind("three", 3, "");
    let ws = Workspace::new();
    ws.write("p.yaml", &core_pipeline(3, 2, None, &rest));
    ws.ok(&["run", "p.yaml", "--plain", "-j", "1"]);
    let (one, three) = (steps(&ws, "one"), steps(&ws, "three"));
    // 36 samples per interval at batch 18: 2 steps, the schedule entered at 2 x 2.
    let numbers: Vec<u64> = one.iter().map(|s| s.0).collect();
    assert_eq!(numbers, vec![5, 6]);
    assert_eq!(three.len(), 2);
    for (&(step, loss, lr), &(s3, l3, lr3)) in one.iter().zip(&three) {
        assert_eq!((step, lr), (s3, lr3));
        assert!((loss - l3).abs() <= 1e-5 * loss.abs(), "step {step}: {loss} vs {l3}");
    }
    let log = std::fs::read_to_string(run_dir(&ws).join("three.rank2.log")).unwrap();
    assert!(log.contains("rank 2 of 3"), "{log}");
}
