//! An `eval` stage in a pipeline: a dataset made by `tureen data synth` in a command
//! stage, a checkpoint file, and the metrics JSON as the stage's output.

use std::process::Command;

use tureen_torch::checkpoint;
use tureen_torch::model::{config_from_json, Clip};

const PIPELINE: &str = r#"
tureen: 1
stages:
  synth:
    kind: command
    cmd: tureen -q data synth --out ${outs.data} --shards 1 --per-shard 4 --size 64 --zeroshot-per-class 1 --retrieval 4
    outs: {data: synth}
  evaluate:
    kind: eval
    inputs: {model: model.safetensors, data: synth.data}
    params:
      data: zeroshot/images
      classnames: zeroshot/classnames.txt
      templates: zeroshot/templates.txt
      retrieval: retrieval/000000.tar
      batch_size: 16
      device: cpu
"#;

#[test]
fn an_eval_stage_writes_its_metrics_artifact() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("pipeline.yaml"), PIPELINE).unwrap();
    let cfg = config_from_json(
        &serde_json::json!({"preset": "convnext_atto_64", "text": {"vocab_size": 259}}),
    )
    .unwrap();
    tch::manual_seed(0);
    let vs = tch::nn::VarStore::new(tch::Device::Cpu);
    let _model = Clip::new(&vs.root(), &cfg);
    checkpoint::save_weights(&dir.path().join("model.safetensors"), &vs, &cfg).unwrap();

    let out = Command::new(env!("CARGO_BIN_EXE_tureen"))
        .args(["run", "pipeline.yaml"])
        .current_dir(dir.path())
        .env("TUREEN_STORE", dir.path().join(".tureen"))
        .output()
        .unwrap();
    let log = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "tureen run failed:\n{log}");
    let metrics: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("outputs/evaluate/metrics.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(metrics["zeroshot"]["samples"], 24);
    assert!(metrics["zeroshot"]["top1"].as_f64().is_some());
    assert_eq!(metrics["retrieval"]["texts"], 20);
}

#[test]
fn an_eval_stage_without_a_model_input_fails_validation() {
    let dir = tempfile::tempdir().unwrap();
    let text = PIPELINE.replace(
        "inputs: {model: model.safetensors, data: synth.data}",
        "inputs: {data: synth.data}",
    );
    std::fs::write(dir.path().join("pipeline.yaml"), text).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_tureen"))
        .args(["run", "pipeline.yaml"])
        .current_dir(dir.path())
        .env("TUREEN_STORE", dir.path().join(".tureen"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("inputs.model"), "{stderr}");
}
