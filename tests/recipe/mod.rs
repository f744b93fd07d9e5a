//! The card's recipe at toy size for end-to-end tests that need real training runs
//! (TensorBoard step axes, the report): a tiny CLIP on 32 px crops, a core run of
//! `intervals` x 4 steps at batch 8, a rewind from the checkpoint after interval 2 at
//! batch 12 (3 steps per interval), a soup of the finals, and zero-shot evaluations of
//! the finals, the soup and some checkpoints (the zero-shot-over-training pattern).
#![allow(dead_code)] // each test file uses its own subset

use std::path::Path;
use std::process::{Command, Output};

const MODEL: &str = r#"{embed_dim: 16, init_logit_scale: 2.6592600369644165,
      vision: {timm_model_name: null, depths: [1, 1], dims: [16, 32], mlp: conv1x1, mlp_ratio: 4,
               kernel_size: 7, ls_init_value: 1.0e-6, norm_eps: 1.0e-6, drop_path: 0.1,
               image_size: 32, patch_size: 4, proj: linear, proj_bias: false},
      text: {context_length: 16, vocab_size: 259, width: 32, heads: 2, layers: 1, mlp_ratio: 4, norm_eps: 1.0e-5}}"#;

/// Core's steps per interval and batch; the rewind's.
pub const CORE_STEPS: u64 = 4;
pub const CORE_BATCH: u64 = 8;
pub const REWIND_STEPS: u64 = 3;
pub const REWIND_BATCH: u64 = 12;
/// The rewind continues `core.checkpoints[1]`: after interval 2, at core's step 8.
pub const BRANCH_STEP: u64 = 2 * CORE_STEPS;

/// Only `synth` and `core` (for tests that watch a training stage).
pub fn core_only(intervals: u64) -> String {
    let model = MODEL.split_whitespace().collect::<Vec<_>>().join(" ");
    format!(
        r#"
tureen: 1
params:
  intervals: {intervals}
stages:
  synth:
    kind: command
    cmd: tureen -q data synth --out ${{outs.data}} --shards 2 --per-shard 32 --size 64 --zeroshot-per-class 2 --retrieval 4
    outs: {{data: build/synth}}
  core:
    kind: train
    inputs: {{data: synth.data}}
    params:
      model: {model}
      data: {{shards: "train/{{000000..000001}}.tar", shuffle_buffer: 16, workers: 1}}
      batch_size: {CORE_BATCH}
      samples_per_interval: {}
      intervals: ${{params.intervals}}
      lr: 1.0e-3
      warmup: 2
      device: cpu
      threads: 1
      log_every: 1
"#,
        CORE_STEPS * CORE_BATCH
    )
}

/// The whole recipe: core of `intervals` (at least 3), rewind, soup, evaluations.
pub fn full(intervals: u64) -> String {
    let eval_params = r#"
    params:
      data: zeroshot/images
      classnames: zeroshot/classnames.txt
      templates: zeroshot/templates.txt
      batch_size: 16
      device: cpu"#;
    format!(
        r#"{}
  rewind:
    kind: rewind
    inputs: {{from: "core.checkpoints[1]", data: synth.data}}
    params:
      data: {{shards: "train/{{000000..000001}}.tar", shuffle_buffer: 16, workers: 1}}
      batch_size: {REWIND_BATCH}
      samples_per_interval: {}
      intervals: ${{params.intervals}}
      lr: 2.0e-3
      warmup: 2
      device: cpu
      threads: 1
      log_every: 1
  soup:
    kind: soup
    inputs: {{checkpoints: [core.final, rewind.final]}}
  eval_core:
    kind: eval
    inputs: {{model: core.final, data: synth.data}}{eval_params}
  eval_soup:
    kind: eval
    inputs: {{model: soup.soup, data: synth.data}}{eval_params}
  zeroshot:
    foreach:
      core-1: "core.checkpoints[1]"
      core-2: "core.checkpoints[2]"
      rewind-0: "rewind.checkpoints[0]"
    kind: eval
    inputs: {{model: "${{item}}", data: synth.data}}{eval_params}
"#,
        core_only(intervals),
        REWIND_STEPS * REWIND_BATCH
    )
}

/// `tureen ARGS` in `dir` with the store `dir/.tureen`.
pub fn tureen(dir: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_tureen"));
    c.args(args)
        .current_dir(dir)
        .env("TUREEN_STORE", dir.join(".tureen"));
    c
}

/// stdout and stderr together.
pub fn log(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Writes `pipeline` as `dir/pipeline.yaml` and runs it; panics with the log on failure.
pub fn run(dir: &Path, pipeline: &str) -> String {
    std::fs::write(dir.join("pipeline.yaml"), pipeline).unwrap();
    let out = tureen(dir, &["run", "pipeline.yaml", "--plain"])
        .output()
        .unwrap();
    assert!(out.status.success(), "tureen run failed:\n{}", log(&out));
    log(&out)
}
