//! The `open_clip` stage kind with the real `open_clip_train.main`: 2 short epochs on the
//! CPU (fp32, a tiny ConvNeXt CLIP through `local-dir:`) on `tureen data synth` shards,
//! killed after its first epoch and resumed; its two epoch checkpoints souped and the
//! soup evaluated; the first epoch rewound by tureen from open_clip's optimizer state.
//! The soup's tensors are bit-identical to torch.load + float32 average + cast in Python,
//! and the AdamW moments tureen maps to parameter names equal open_clip's own mapping.
//!
//! Needs the repo's `.venv` (scripts/setup-venv.sh: torch, open_clip, webdataset,
//! braceexpand, pandas); fails with a clear message when it is missing unless
//! `TUREEN_SKIP_PARITY=1`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

mod common;
use common::assert_same_tensors;

use tureen_stages::train::{Mode, TrainParams};
use tureen_torch::checkpoint::open_clip::OpenClipCheckpoint;
use tureen_torch::checkpoint::tensor_file;
use tureen_torch::model::{config_from_json, Clip};
use tureen_torch::train::{Start, Trainer};

use common::OPEN_CLIP_MODEL as MODEL;

fn pipeline(python: &Path, vocab: &Path) -> String {
    format!(
        r#"
tureen: 1
params:
  model: {MODEL}
stages:
{core}  soup:
    kind: soup
    inputs: {{checkpoints: core.checkpoints}}
  eval_soup:
    kind: eval
    inputs: {{model: soup.soup, data: synth.data}}
    params:
      data: zeroshot/images
      classnames: zeroshot/classnames.txt
      templates: zeroshot/templates.txt
      retrieval: retrieval/000000.tar
      tokenizer: {{kind: bpe, vocab: {vocab}}}
      model: ${{params.model}}
      batch_size: 16
      device: cpu
  rewind:
    kind: rewind
    inputs: {{from: core.final, data: synth.data}}
    params:
      model: ${{params.model}}
      data: {{shards: "train/{{000000..000001}}.tar", tokenizer: {{kind: bpe, vocab: {vocab}}}, workers: 1}}
      batch_size: 16
      samples_per_interval: 32
      intervals: 3
      lr: 1.0e-3
      device: cpu
"#,
        core = common::open_clip_stages(python, ""),
        vocab = vocab.display(),
    )
}

fn tureen_in(dir: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_tureen"));
    c.args(args)
        .current_dir(dir)
        .env("TUREEN_STORE", dir.join(".tureen"));
    c
}

fn ok(out: Output) -> String {
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "tureen failed:\n{text}");
    text
}

/// Checkpoints committed so far by a running stage (its journal), if it has one.
fn journal_commits(store: &Path) -> Option<usize> {
    let dir = store.join("journal");
    std::fs::read_dir(dir).ok()?.flatten().find_map(|e| {
        let v: serde_json::Value = serde_json::from_slice(&std::fs::read(e.path()).ok()?).ok()?;
        (v["stage"] == "core").then(|| v["committed"].as_array().map_or(0, Vec::len))
    })
}

/// Runs the pipeline and kills tureen (and so its trainer) once the first epoch is
/// committed; returns that epoch's digest.
fn run_and_kill_after_first_epoch(dir: &Path) -> String {
    let mut child = tureen_in(dir, &["-q", "run", "pipeline.yaml"])
        .spawn()
        .unwrap();
    let started = Instant::now();
    let store = dir.join(".tureen");
    while journal_commits(&store).unwrap_or(0) < 1 {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the run ended before epoch 1 was committed"
        );
        assert!(
            started.elapsed() < Duration::from_secs(900),
            "no epoch committed in 15 minutes"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(
        journal_commits(&store),
        Some(1),
        "killed while training epoch 2"
    );
    let journal = std::fs::read_dir(store.join("journal"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap();
    let v: serde_json::Value =
        serde_json::from_slice(&std::fs::read(journal.path()).unwrap()).unwrap();
    v["committed"][0]["digest"].as_str().unwrap().to_string()
}

fn object(store: &Path, digest: &str) -> PathBuf {
    let hex = digest.strip_prefix("blake3:").unwrap();
    store.join("objects").join(&hex[..2]).join(&hex[2..])
}

fn python_ok(py: &Path, args: &[&str]) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/open_clip/reference.py");
    let out = Command::new(py).arg(script).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "reference.py {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn open_clip_trains_resumes_and_its_checkpoints_soup_evaluate_and_rewind() {
    let Some(py) = common::venv_python("the open_clip stage test") else {
        return;
    };
    let vocab = common::open_clip_vocab(&py);
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("pipeline.yaml"), pipeline(&py, &vocab)).unwrap();

    let first = run_and_kill_after_first_epoch(d);
    ok(tureen_in(d, &["-q", "run", "pipeline.yaml"])
        .output()
        .unwrap());
    let record: serde_json::Value =
        serde_json::from_str(&ok(tureen_in(d, &["show", "latest", "--json"])
            .output()
            .unwrap()))
        .unwrap();
    let store = d.join(".tureen");
    let run = record["run_id"].as_str().unwrap();
    let log = std::fs::read_to_string(store.join("runs").join(run).join("core.log")).unwrap();
    assert!(
        log.contains("resuming open_clip from committed epoch 1"),
        "{log}"
    );
    assert!(log.contains("--resume latest"), "{log}");
    let core = common::stage_record(&record, "core");
    let series: Vec<String> = core["outputs"]["checkpoints"]["series"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["digest"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(series.len(), 2, "{core}");
    assert_eq!(series[0], first, "the resumed run kept the first epoch");
    let epochs: Vec<PathBuf> = series.iter().map(|s| object(&store, s)).collect();

    // The soup equals torch's float32 average of the two epoch files.
    let reference = d.join("reference.safetensors");
    python_ok(
        &py,
        &[
            "soup",
            reference.to_str().unwrap(),
            "1,1",
            epochs[0].to_str().unwrap(),
            epochs[1].to_str().unwrap(),
        ],
    );
    assert_same_tensors(&d.join("outputs/soup/soup.safetensors"), &reference);

    let metrics: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(d.join("outputs/eval_soup/metrics.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(metrics["zeroshot"]["samples"], 48);
    assert!(metrics["retrieval"]["image_to_text_r1"].as_f64().is_some());
    assert!(d.join("outputs/rewind/final.safetensors").is_file());

    // AdamW's moments, mapped to names through open_clip's parameter groups.
    let cfg = config_from_json(&serde_json::from_str(MODEL).unwrap()).unwrap();
    let model_dir = d.join("model");
    std::fs::create_dir(&model_dir).unwrap();
    let oc = serde_json::json!({"model_cfg": cfg.open_clip_kwargs().unwrap()});
    std::fs::write(model_dir.join("open_clip_config.json"), oc.to_string()).unwrap();
    let moments = d.join("moments.safetensors");
    python_ok(
        &py,
        &[
            "moments",
            epochs[0].to_str().unwrap(),
            model_dir.to_str().unwrap(),
            moments.to_str().unwrap(),
        ],
    );
    let vs = tch::nn::VarStore::new(tch::Device::Cpu);
    let _model = Clip::new(&vs.root(), &cfg);
    let trainable: Vec<String> = vs
        .variables()
        .into_iter()
        .filter(|(_, t)| t.requires_grad())
        .map(|(name, _)| name)
        .collect();
    let ours = OpenClipCheckpoint::read(&epochs[0], &trainable).unwrap();
    let opt = ours.optimizer.expect("open_clip saved its optimizer");
    assert_eq!(ours.epoch, 1);
    assert_eq!(opt.step, 4, "64 samples / batch 16 = 4 steps in epoch 1");
    assert_eq!((opt.config.beta2, opt.config.weight_decay), (0.98, 0.2));
    let theirs = tensor_file::read(&moments).unwrap().tensors;
    assert_eq!(opt.moments.len(), theirs.len());
    for (name, t) in &theirs {
        assert!(
            opt.moments[name].equal(t),
            "{name} maps to another parameter's moments"
        );
    }

    // Without optimizer state a rewind needs `optimizer: fresh`.
    let bare = d.join("bare.pt");
    python_ok(
        &py,
        &["strip", epochs[0].to_str().unwrap(), bare.to_str().unwrap()],
    );
    let params = serde_json::json!({
        "model": serde_json::from_str::<serde_json::Value>(MODEL).unwrap(),
        "data": "synthetic", "batch_size": 16, "samples_per_interval": 64, "intervals": 2,
        "lr": 1e-3, "optimizer": "fresh", "beta2": 0.95,
    });
    let p = TrainParams::from_params(params.as_object().unwrap(), Mode::Rewind).unwrap();
    let config = p.config(cfg.clone());
    let start = Start::Rewind(bare.clone());
    let err = Trainer::new(config.clone(), tch::Device::Cpu, &start)
        .err()
        .unwrap();
    assert!(err.to_string().contains("optimizer: fresh"), "{err}");
    let t = Trainer::new(config, tch::Device::Cpu, &Start::RewindFresh(bare)).unwrap();
    assert_eq!((t.interval, t.step, t.optimizer.step), (1, 4, 0));
    assert_eq!(
        t.optimizer.config.beta2, 0.95,
        "the stage's own AdamW settings"
    );
}
