//! The eval stage's work end to end: a checkpoint and a synthetic dataset in, metrics
//! JSON out. `TUREEN_LONG_TESTS=1` also trains a tiny CLIP for a few minutes on the
//! synthetic data and checks zero-shot accuracy is well above chance.

use std::path::Path;
use std::process::Command;

use tureen_stages::eval::EvalParams;
use tureen_torch::batch::BatchTensors;
use tureen_torch::checkpoint;
use tureen_torch::data::{AugmentConfig, Loader, LoaderConfig, Transform};
use tureen_torch::eval::dataset::EvalSource;
use tureen_torch::eval::suite::evaluate;
use tureen_torch::eval::zeroshot;
use tureen_torch::model::{config_from_json, Clip, ClipConfig};
use tureen_torch::tokenizer::{ByteTokenizer, Tokenizer};

fn synth(out: &Path, shards: usize, per_shard: usize, per_class: usize) {
    let status = Command::new(env!("CARGO_BIN_EXE_tureen"))
        .args(["-q", "data", "synth", "--size", "64", "--seed", "3"])
        .args([
            "--shards",
            &shards.to_string(),
            "--per-shard",
            &per_shard.to_string(),
        ])
        .args([
            "--zeroshot-per-class",
            &per_class.to_string(),
            "--retrieval",
            "12",
            "--out",
        ])
        .arg(out)
        .status()
        .unwrap();
    assert!(status.success());
}

/// The small test model with a byte-tokenizer-sized vocabulary.
fn tiny_config() -> ClipConfig {
    config_from_json(
        &serde_json::json!({"preset": "convnext_atto_64", "text": {"vocab_size": 259}}),
    )
    .unwrap()
}

fn params(extra: serde_json::Value) -> EvalParams {
    let mut value = serde_json::json!({
        "data": "zeroshot/images",
        "classnames": "zeroshot/classnames.txt",
        "templates": "zeroshot/templates.txt",
        "retrieval": "retrieval/000000.tar",
        "batch_size": 16,
        "device": "cpu",
    });
    value
        .as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    EvalParams::from_params(value.as_object().unwrap()).unwrap()
}

#[test]
fn eval_reports_zero_shot_and_retrieval_metrics_for_a_checkpoint() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("d");
    synth(&data, 1, 4, 2);
    let cfg = tiny_config();
    tch::manual_seed(0);
    let vs = tch::nn::VarStore::new(tch::Device::Cpu);
    let _model = Clip::new(&vs.root(), &cfg);
    let weights = tmp.path().join("model.safetensors");
    checkpoint::save_weights(&weights, &vs, &cfg).unwrap();

    let mut lines = Vec::new();
    let metrics = evaluate(
        &params(serde_json::json!({})),
        &weights,
        &data,
        tch::Device::Cpu,
        &mut |l| lines.push(l.to_string()),
    )
    .unwrap();
    let zs = &metrics["zeroshot"];
    assert_eq!(zs["samples"], 48);
    assert_eq!(zs["classes"], 24);
    for key in ["top1", "top5", "mean_per_class_recall"] {
        let v = zs[key].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&v), "{key} = {v}");
    }
    assert!(zs["top5"].as_f64().unwrap() >= zs["top1"].as_f64().unwrap());
    let r = &metrics["retrieval"];
    assert_eq!(
        (r["images"].as_u64(), r["texts"].as_u64()),
        (Some(12), Some(60))
    );
    for dir in ["image_to_text", "text_to_image"] {
        let (r1, r5, r10) = (
            r[format!("{dir}_r1")].as_f64().unwrap(),
            r[format!("{dir}_r5")].as_f64().unwrap(),
            r[format!("{dir}_r10")].as_f64().unwrap(),
        );
        assert!(
            r1 <= r5 && r5 <= r10 && r10 <= 1.0,
            "{dir}: {r1} {r5} {r10}"
        );
    }
    assert_eq!(lines.len(), 2, "{lines:?}");
    // Evaluation is deterministic.
    let again = evaluate(
        &params(serde_json::json!({})),
        &weights,
        &data,
        tch::Device::Cpu,
        &mut |_| {},
    )
    .unwrap();
    assert_eq!(metrics, again);
}

#[test]
fn a_webdataset_with_labels_evaluates_like_the_image_folder() {
    // The same class images packed as a webdataset (png + cls) give the same metrics.
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("d");
    synth(&data, 1, 4, 1);
    let items = tureen_torch::eval::dataset::list_image_folder(&data.join("zeroshot/images"))
        .unwrap()
        .items;
    let file = std::fs::File::create(data.join("zs.tar")).unwrap();
    let mut builder = tar::Builder::new(file);
    for (i, (path, label)) in items.iter().enumerate() {
        for (ext, bytes) in [
            ("png", std::fs::read(path).unwrap()),
            ("cls", label.to_string().into_bytes()),
        ] {
            let mut header = tar::Header::new_ustar();
            header.set_size(bytes.len() as u64);
            header.set_mode(0o644);
            builder
                .append_data(&mut header, format!("{i:05}.{ext}"), &bytes[..])
                .unwrap();
        }
    }
    builder.finish().unwrap();
    drop(builder);
    let cfg = tiny_config();
    tch::manual_seed(1);
    let vs = tch::nn::VarStore::new(tch::Device::Cpu);
    let _model = Clip::new(&vs.root(), &cfg);
    let weights = tmp.path().join("m.safetensors");
    checkpoint::save_weights(&weights, &vs, &cfg).unwrap();
    let folder = evaluate(
        &params(serde_json::json!({"retrieval": null})),
        &weights,
        &data,
        tch::Device::Cpu,
        &mut |_| {},
    )
    .unwrap();
    let shards = evaluate(
        &params(serde_json::json!({"retrieval": null, "data": "zs.tar"})),
        &weights,
        &data,
        tch::Device::Cpu,
        &mut |_| {},
    )
    .unwrap();
    assert_eq!(folder["zeroshot"], shards["zeroshot"]);
    assert!(folder.get("retrieval").is_none());
}

#[test]
fn class_names_must_match_the_class_folders() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("d");
    synth(&data, 1, 4, 1);
    let names = std::fs::read_to_string(data.join("zeroshot/classnames.txt")).unwrap();
    let short: Vec<&str> = names.lines().take(23).collect();
    std::fs::write(data.join("short.txt"), short.join("\n")).unwrap();
    let cfg = tiny_config();
    let vs = tch::nn::VarStore::new(tch::Device::Cpu);
    let _model = Clip::new(&vs.root(), &cfg);
    let weights = tmp.path().join("m.safetensors");
    checkpoint::save_weights(&weights, &vs, &cfg).unwrap();
    let p = params(serde_json::json!({"classnames": "short.txt", "retrieval": null}));
    let err = evaluate(&p, &weights, &data, tch::Device::Cpu, &mut |_| {}).unwrap_err();
    let text = format!("{err:#}");
    assert!(
        text.contains("24 class folders") && text.contains("short.txt"),
        "{text}"
    );
}

#[test]
fn bad_params_name_the_param() {
    let err =
        EvalParams::from_params(serde_json::json!({"data": "x"}).as_object().unwrap()).unwrap_err();
    assert!(err.to_string().contains("classnames"), "{err}");
    let err = EvalParams::from_params(
        serde_json::json!({"retrieval": "r.tar", "device": "tpu"})
            .as_object()
            .unwrap(),
    )
    .unwrap_err();
    assert!(err.to_string().contains("device"), "{err}");
    let err = EvalParams::from_params(
        serde_json::json!({"retrieval": "r.tar", "bogus": 1})
            .as_object()
            .unwrap(),
    )
    .unwrap_err();
    assert!(err.to_string().contains("bogus"), "{err}");
}

/// Trains the tiny model on synthetic data for `steps` steps (batch 64, recipe-style
/// augmentation), then returns zero-shot top-1 on the held-out classification set.
#[test]
fn a_briefly_trained_tiny_clip_beats_chance_at_zero_shot() {
    if std::env::var("TUREEN_LONG_TESTS").map_or(true, |v| v != "1") {
        eprintln!("set TUREEN_LONG_TESTS=1 to run the few-minute training check");
        return;
    }
    use tureen_torch::train::{Precision, Start, TrainConfig, Trainer};
    let env = |name: &str| std::env::var(name).ok().and_then(|s| s.parse::<f64>().ok());
    let steps = env("TUREEN_SIGNAL_STEPS").unwrap_or(300.0) as u64;
    let lr = env("TUREEN_SIGNAL_LR").unwrap_or(1e-3);
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("d");
    synth(&data, 8, 512, 10);
    // Smaller than convnext_atto_64 so that a few minutes on 2 cores are enough steps.
    let cfg = config_from_json(&serde_json::json!({
        "preset": "convnext_atto_64",
        "embed_dim": 128,
        "vision": {"timm_model_name": null, "depths": [1, 1, 2, 1], "dims": [32, 64, 128, 256]},
        "text": {"vocab_size": 259, "width": 128, "heads": 2, "layers": 2},
    }))
    .unwrap();
    let batch = 64u64;
    let config = TrainConfig {
        model: cfg.clone(),
        batch_size: batch,
        micro_batch: None,
        samples_per_interval: steps * batch,
        step_rounding: Default::default(),
        intervals: 1,
        lr,
        warmup: steps / 10,
        optimizer: tureen_torch::train::AdamWConfig {
            weight_decay: 0.1,
            ..Default::default()
        },
        grad_clip_norm: Some(5.0),
        seed: 0,
        precision: Precision::Fp32,
        log_every: 10,
    };
    let mut trainer = Trainer::new(config, tch::Device::Cpu, &Start::Fresh).unwrap();
    let mut loader_cfg = LoaderConfig::new("train/{000000..000007}.tar", &data, batch as usize, 64);
    loader_cfg.context_length = cfg.text.context_length as usize;
    loader_cfg.transform = Transform::Train(AugmentConfig {
        scale: (0.6, 1.0),
        ..Default::default()
    });
    loader_cfg.samples_per_epoch = Some(steps * batch);
    let start = std::time::Instant::now();
    let mut last = 0.0;
    for (i, b) in Loader::new(loader_cfg, 0).unwrap().enumerate() {
        let b = b.unwrap();
        last = trainer
            .train_step(&b.image_tensor(), &b.token_tensor())
            .unwrap();
        if i % 25 == 0 {
            eprintln!(
                "step {i}: loss {last:.3} ({:.0} s)",
                start.elapsed().as_secs_f64()
            );
        }
    }
    let tok = Tokenizer::Byte(ByteTokenizer);
    let names = zeroshot::read_lines(&data.join("zeroshot/classnames.txt"), "class names").unwrap();
    let templates =
        zeroshot::read_lines(&data.join("zeroshot/templates.txt"), "templates").unwrap();
    let classifier = zeroshot::classifier(
        &trainer.model,
        &tok,
        cfg.text.context_length as usize,
        &names,
        &templates,
    );
    let source = EvalSource::ImageFolder(data.join("zeroshot/images"));
    let m = zeroshot::evaluate(&trainer.model, &classifier, &source, 64, 64, 2).unwrap();
    eprintln!(
        "{steps} steps in {:.0} s, final loss {last:.3}: zero-shot top-1 {:.3}, top-5 {:.3} (chance 1/24 = 0.042)",
        start.elapsed().as_secs_f64(),
        m.top1,
        m.top5
    );
    assert!(
        m.top1 > 3.0 / 24.0,
        "top-1 {} is not clearly above chance",
        m.top1
    );
}
