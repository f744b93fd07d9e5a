//! `train` and `rewind` stages driven by `tureen run`: the recipe end to end on a tiny
//! synthetic dataset (train -> rewind -> soup -> eval), and a train stage killed with
//! SIGKILL mid-interval that, re-run, ends with the same final checkpoint as an
//! uninterrupted run.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// A tiny model (byte tokenizer: vocab 259) on 32 px crops of 64 px synthetic images.
const MODEL: &str = r#"{embed_dim: 16, init_logit_scale: 2.6592600369644165,
      vision: {timm_model_name: null, depths: [1, 1], dims: [16, 32], mlp: conv1x1, mlp_ratio: 4,
               kernel_size: 7, ls_init_value: 1.0e-6, norm_eps: 1.0e-6, drop_path: 0.1,
               image_size: 32, patch_size: 4, proj: linear, proj_bias: false},
      text: {context_length: 16, vocab_size: 259, width: 32, heads: 2, layers: 1, mlp_ratio: 4, norm_eps: 1.0e-5}}"#;

fn pipeline(intervals: u64, samples_per_interval: u64, with_rest: bool) -> String {
    let model = MODEL.split_whitespace().collect::<Vec<_>>().join(" ");
    let mut p = format!(
        r#"
tureen: 1
stages:
  synth:
    kind: command
    cmd: tureen -q data synth --out ${{outs.data}} --shards 2 --per-shard 32 --size 64 --zeroshot-per-class 1 --retrieval 4
    outs: {{data: synth}}
  core:
    kind: train
    inputs: {{data: synth.data}}
    params:
      model: {model}
      data: {{shards: "train/{{000000..000001}}.tar", shuffle_buffer: 16, workers: 1, augment: {{scale: [0.33, 1.0], re_prob: 0.35}}}}
      batch_size: 8
      samples_per_interval: {samples_per_interval}
      intervals: {intervals}
      lr: 1.0e-3
      warmup: 2
      grad_clip_norm: 5.0
      device: cpu
      threads: 1
      log_every: 1
"#
    );
    if with_rest {
        p.push_str(&format!(
            r#"
  rewind:
    kind: rewind
    inputs:
      from: core.checkpoints[1]
      data: synth.data
    params:
      data: {{shards: "train/{{000000..000001}}.tar", shuffle_buffer: 16, workers: 1, augment: {{scale: [0.3, 1.0], re_prob: 0.4}}}}
      batch_size: 12
      samples_per_interval: 32
      intervals: 3
      lr: 2.0e-3
      warmup: 2
      grad_clip_norm: 5.0
      device: cpu
      threads: 1
  soup:
    kind: soup
    inputs: {{checkpoints: [core.final, rewind.final]}}
  evaluate:
    kind: eval
    inputs: {{model: soup.soup, data: synth.data}}
    params:
      data: zeroshot/images
      classnames: zeroshot/classnames.txt
      templates: zeroshot/templates.txt
      retrieval: retrieval/000000.tar
      batch_size: 16
      device: cpu
      model: {model}
"#
        ));
    }
    p
}

fn tureen(dir: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_tureen"));
    c.args(args)
        .current_dir(dir)
        .env("TUREEN_STORE", dir.join(".tureen"));
    c
}

fn log(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn run_ok(dir: &Path) -> String {
    let out = tureen(dir, &["run", "pipeline.yaml", "--plain"])
        .output()
        .unwrap();
    assert!(out.status.success(), "tureen run failed:\n{}", log(&out));
    log(&out)
}

fn final_weights(dir: &Path, stage: &str) -> Vec<u8> {
    let p = dir.join(format!("outputs/{stage}/final.safetensors"));
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

#[test]
fn train_rewind_soup_eval_runs_end_to_end_on_synthetic_data() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("pipeline.yaml"), pipeline(3, 32, true)).unwrap();
    run_ok(dir.path());
    let metrics: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("outputs/evaluate/metrics.json")).unwrap(),
    )
    .unwrap();
    assert!(metrics["zeroshot"]["top1"].as_f64().is_some(), "{metrics}");
    // Rewind weights differ from the core run's (new batch, lr, augmentation).
    assert!(final_weights(dir.path(), "core") != final_weights(dir.path(), "rewind"));
    // A second run is fully cached.
    let second = run_ok(dir.path());
    assert!(
        !second.contains("step "),
        "nothing should train again:\n{second}"
    );
}

fn journal_commits(store: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(store.join("journal")) else {
        return 0;
    };
    entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        // Not the temp file of an atomic write in progress: it names a commit the
        // journal does not hold until the rename.
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .filter_map(|p| std::fs::read_to_string(p).ok())
        .map(|text| text.matches("blake3:").count())
        .max()
        .unwrap_or(0)
}

#[test]
fn a_train_stage_killed_mid_interval_resumes_to_the_same_final_checkpoint() {
    // 4 intervals of 60 steps: an interval takes far longer than the 10 ms polling
    // below, so the kill lands inside interval 2 however fast the machine is.
    let text = pipeline(4, 480, false);
    let whole = tempfile::tempdir().unwrap();
    std::fs::write(whole.path().join("pipeline.yaml"), &text).unwrap();
    run_ok(whole.path());

    let killed = tempfile::tempdir().unwrap();
    std::fs::write(killed.path().join("pipeline.yaml"), &text).unwrap();
    let mut child = tureen(killed.path(), &["run", "pipeline.yaml", "--plain"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while journal_commits(&killed.path().join(".tureen")) < 1 {
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "no checkpoint committed in time"
        );
        assert!(
            child.try_wait().unwrap().is_none(),
            "the run ended before it could be killed"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    child.kill().unwrap(); // SIGKILL, early in interval 2
    child.wait().unwrap();
    let commits = journal_commits(&killed.path().join(".tureen"));
    assert!(
        (1..4).contains(&commits),
        "killed after {commits} checkpoints"
    );

    let rerun = run_ok(killed.path());
    assert!(
        rerun.contains("resumed from"),
        "the re-run should resume from the journal:\n{rerun}"
    );
    let a: PathBuf = whole.path().to_path_buf();
    assert!(
        final_weights(&a, "core") == final_weights(killed.path(), "core"),
        "final checkpoints differ"
    );
}
