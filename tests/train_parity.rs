//! Parity with open_clip: the same weights and batch give the same image features,
//! text features and loss in tureen and in `open_clip.CLIP` (float32, relative error
//! under 1e-5), in both directions (open_clip -> tureen and tureen -> open_clip with
//! `strict=True`).
//!
//! Needs the repo's `.venv` (scripts/setup-venv.sh) with torch and open_clip_torch;
//! fails with a clear message when it is missing unless `TUREEN_SKIP_PARITY=1`.

use std::path::{Path, PathBuf};
use std::process::Command;

mod common;

use tch::{Device, Kind, Tensor};
use tureen_torch::checkpoint::{self, tensor_file};
use tureen_torch::model::{clip_loss, Clip, ClipConfig, ProjKind};

fn python() -> Option<PathBuf> {
    common::venv_python("open_clip parity")
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/parity/open_clip_reference.py")
}

fn run_python(py: &Path, args: &[&str]) {
    let out = Command::new(py)
        .arg(script())
        .args(args)
        .output()
        .expect("run python");
    assert!(
        out.status.success(),
        "open_clip_reference.py {args:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn rel_err(a: &Tensor, b: &Tensor) -> f64 {
    assert_eq!(a.size(), b.size());
    let a = a.to_kind(Kind::Double);
    let b = b.to_kind(Kind::Double);
    (&a - &b).norm().double_value(&[]) / b.norm().double_value(&[]).max(1e-30)
}

/// Features and loss of `model` on `batch` (eval mode: no stochastic depth).
fn tureen_outputs(model: &Clip, images: &Tensor, tokens: &Tensor) -> (Tensor, Tensor, f64) {
    tch::no_grad(|| {
        let img = model.encode_image(images, false);
        let txt = model.encode_text(tokens);
        let loss = clip_loss(&img, &txt, model.logit_scale()).double_value(&[]);
        (img, txt, loss)
    })
}

fn check_config(cfg: &ClipConfig) {
    let Some(py) = python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let kwargs = cfg
        .open_clip_kwargs()
        .expect("a config open_clip can build");
    std::fs::write(d.join("cfg.json"), serde_json::to_vec(&kwargs).unwrap()).unwrap();
    let cfg_path = d.join("cfg.json");
    let cfg_s = cfg_path.to_str().unwrap();

    // open_clip -> tureen.
    run_python(&py, &["reference", cfg_s, d.to_str().unwrap()]);
    let batch = tensor_file::read(&d.join("batch.safetensors"))
        .unwrap()
        .tensors;
    let reference = tensor_file::read(&d.join("reference.safetensors"))
        .unwrap()
        .tensors;
    let (images, tokens) = (&batch["images"], &batch["tokens"]);
    let (_vs, model) =
        checkpoint::load_model(&d.join("open_clip.safetensors"), Some(cfg), Device::Cpu)
            .expect("open_clip weights load into tureen strictly");
    let (img, txt, loss) = tureen_outputs(&model, images, tokens);
    let e_img = rel_err(&img, &reference["image_features"]);
    let e_txt = rel_err(&txt, &reference["text_features"]);
    let ref_loss = reference["loss"].double_value(&[0]);
    let e_loss = (loss - ref_loss).abs() / ref_loss.abs();
    eprintln!("open_clip -> tureen: image {e_img:.2e}, text {e_txt:.2e}, loss {e_loss:.2e}");
    assert!(
        e_img < 1e-5,
        "image features differ from open_clip: relative error {e_img:e}"
    );
    assert!(
        e_txt < 1e-5,
        "text features differ from open_clip: relative error {e_txt:e}"
    );
    assert!(
        e_loss < 1e-5,
        "loss differs from open_clip: {loss} vs {ref_loss}"
    );

    // tureen -> open_clip (strict=True), from tureen's own initialisation.
    tch::manual_seed(7);
    let vs = tch::nn::VarStore::new(Device::Cpu);
    let ours = Clip::new(&vs.root(), cfg);
    let weights = d.join("tureen.safetensors");
    checkpoint::save_weights(&weights, &vs, cfg).unwrap();
    assert_eq!(
        checkpoint::read_config(&weights).unwrap().as_ref(),
        Some(cfg),
        "config travels in __metadata__"
    );
    let out = d.join("tureen_in_open_clip.safetensors");
    run_python(
        &py,
        &[
            "load",
            cfg_s,
            weights.to_str().unwrap(),
            d.join("batch.safetensors").to_str().unwrap(),
            out.to_str().unwrap(),
        ],
    );
    let theirs = tensor_file::read(&out).unwrap().tensors;
    let (img, txt, loss) = tureen_outputs(&ours, images, tokens);
    let e_img = rel_err(&img, &theirs["image_features"]);
    let e_txt = rel_err(&txt, &theirs["text_features"]);
    let their_loss = theirs["loss"].double_value(&[0]);
    eprintln!(
        "tureen -> open_clip: image {e_img:.2e}, text {e_txt:.2e}, loss {loss} vs {their_loss}"
    );
    assert!(
        e_img < 1e-5 && e_txt < 1e-5,
        "tureen weights give other features in open_clip: {e_img:e} {e_txt:e}"
    );
    assert!((loss - their_loss).abs() / their_loss.abs() < 1e-5);
}

#[test]
fn conv_mlp_tower_matches_open_clip_both_ways() {
    // convnext_atto (1x1-conv MLPs) at 64 px with the 256-wide text tower.
    check_config(&ClipConfig::preset("convnext_atto_64").unwrap());
}

#[test]
fn linear_mlp_tower_with_mlp_head_matches_open_clip_both_ways() {
    // convnext_tiny (Linear MLPs) at 32 px, MLP projection head with bias, small text.
    let mut cfg = ClipConfig::preset("convnext_tiny").unwrap();
    cfg.vision.image_size = 32;
    cfg.vision.proj = ProjKind::Mlp;
    cfg.vision.proj_bias = true;
    cfg.embed_dim = 128;
    cfg.text.width = 128;
    cfg.text.heads = 2;
    cfg.text.layers = 2;
    cfg.text.context_length = 16;
    cfg.text.vocab_size = 1000;
    check_config(&cfg);
}
