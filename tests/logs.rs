//! `tureen logs [RUN] STAGE [-f]` (issue 13, item 6): a stage's log, printed or followed
//! while the run goes; for a stage restored from the cache, the log of the run that
//! computed it.

mod engine_common;

use std::process::Stdio;
use std::time::{Duration, Instant};

use engine_common::Workspace;

const PIPELINE: &str = r#"
tureen: 1
stages:
  talk:
    kind: command
    cmd: 'for i in 1 2 3 4 5; do echo "line $i"; sleep 0.3; done; echo done > ${outs.x}'
    outs: {x: talk.txt}
"#;

#[test]
fn follow_prints_a_running_stage_until_the_run_ends() {
    let ws = Workspace::new();
    ws.write("p.yaml", PIPELINE);
    let mut run = ws
        .cmd(&["run", "p.yaml", "--plain"])
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while engine_common::runs(&ws.store()).is_empty() {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the run did not start"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let follow = ws.cmd(&["logs", "-f", "talk"]).output().unwrap();
    assert!(run.wait().unwrap().success());
    assert!(follow.status.success(), "{}", engine_common::both(&follow));
    let text = String::from_utf8_lossy(&follow.stdout);
    for i in 1..=5 {
        assert!(
            text.contains(&format!("line {i}\n")),
            "line {i} missing:\n{text}"
        );
    }
    assert!(
        text.contains("succeeded"),
        "followed to the stage's end:\n{text}"
    );
}

#[test]
fn a_cached_stage_shows_the_log_of_the_run_that_computed_it() {
    let ws = Workspace::new();
    ws.write("p.yaml", PIPELINE);
    ws.ok(&["run", "p.yaml"]);
    let first = engine_common::runs(&ws.store())[0].clone();
    ws.ok(&["run", "p.yaml"]);
    let text = ws.ok(&["logs", "latest", "talk"]);
    assert!(text.contains("line 5"), "{text}");
    assert_eq!(text, ws.ok(&["logs", &first, "talk"]));

    let out = ws.tureen(&["logs", "latest", "tlak"]);
    assert_eq!(out.status.code(), Some(1));
    let err = engine_common::both(&out);
    assert!(err.contains("did you mean `talk`"), "{err}");
}

/// A CLIP small enough that 2 ranks train it in seconds on 2 cores (as in
/// tests/dist_pipeline.rs).
const MODEL: &str = "{embed_dim: 16, init_logit_scale: 2.659260036932778, vision: {timm_model_name: null, depths: [1, 1], dims: [8, 16], mlp: conv1x1, mlp_ratio: 2, kernel_size: 7, ls_init_value: 0.5, norm_eps: 1.0e-6, drop_path: 0.2, image_size: 16, patch_size: 4, proj: linear, proj_bias: false}, text: {context_length: 8, vocab_size: 64, width: 16, heads: 2, layers: 1, mlp_ratio: 2, norm_eps: 1.0e-5}}";

/// A `train` stage of 2 local ranks (one interval of 3 steps) and a one-process stage.
fn ranked_pipeline() -> String {
    format!(
        "tureen: 1\nstages:\n  core:\n    kind: train\n    params:\n      model: {MODEL}\n      batch_size: 12\n      data: synthetic\n      samples_per_interval: 36\n      intervals: 1\n      lr: 2.0e-3\n      seed: 5\n      device: cpu\n      threads: 1\n      log_every: 1\n      collective_timeout_s: 20.0\n      rendezvous_timeout_s: 30.0\n    resources: {{tasks_per_node: 2}}\n  note:\n    kind: command\n    cmd: echo one > ${{outs.x}}\n    outs: {{x: note.txt}}\n"
    )
}

/// Runs `tureen logs ARGS`, expecting exit 1; its stderr.
fn refused(ws: &Workspace, args: &[&str]) -> String {
    let out = ws.tureen(args);
    assert_eq!(out.status.code(), Some(1), "{}", engine_common::both(&out));
    assert!(out.stdout.is_empty(), "nothing printed on stdout");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn rank_n_prints_or_follows_that_rank_s_log_and_names_the_ranks_there_are() {
    let ws = Workspace::new();
    ws.write("p.yaml", &ranked_pipeline());
    let mut run = ws
        .cmd(&["run", "p.yaml", "--plain"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while engine_common::runs(&ws.store()).is_empty() {
        assert!(start.elapsed() < Duration::from_secs(30), "the run did not start");
        std::thread::sleep(Duration::from_millis(10));
    }
    let followed = ws.cmd(&["logs", "-f", "--rank", "1", "core"]).output().unwrap();
    assert!(run.wait().unwrap().success());
    assert!(followed.status.success(), "{}", engine_common::both(&followed));

    // Rank 1's own file, beside the stage's log in the run's directory.
    let id = engine_common::runs(&ws.store())[0].clone();
    let dir = ws.store().join("runs").join(&id);
    let rank1 = std::fs::read_to_string(dir.join("core.rank1.log")).unwrap();
    assert!(rank1.contains("rank 1 of 2"), "{rank1}");
    assert_eq!(String::from_utf8_lossy(&followed.stdout), rank1, "followed to its end");
    let printed = ws.tureen(&["logs", "core", "--rank", "1"]);
    assert!(printed.status.success());
    assert_eq!(String::from_utf8_lossy(&printed.stdout), rank1);
    // Rank 0 is the stage's own log.
    let rank0 = ws.tureen(&["logs", &id, "core", "--rank", "0"]).stdout;
    let stage = ws.tureen(&["logs", &id, "core"]).stdout;
    assert_eq!(rank0, stage);
    assert_eq!(rank0, std::fs::read(dir.join("core.log")).unwrap());
    assert_ne!(String::from_utf8_lossy(&rank0), rank1);

    let err = refused(&ws, &["logs", "core", "--rank", "2"]);
    assert!(
        err.contains(&format!("stage `core` of run {id} has no rank 2: it ran as 2 ranks, 0 to 1")),
        "{err}"
    );
    let err = refused(&ws, &["logs", "-f", "note", "--rank", "1"]);
    assert!(
        err.contains("stage `note`") && err.contains("ran as one process, so it has no ranks"),
        "{err}"
    );

    // Restored from the cache: the ranks of the run that computed it.
    ws.ok(&["run", "p.yaml"]);
    assert_eq!(engine_common::status_of(&ws.store(), "core"), "cached");
    let cached = ws.tureen(&["logs", "latest", "core", "--rank", "1"]);
    assert_eq!(String::from_utf8_lossy(&cached.stdout), rank1);
}
