//! One training step's gradients (`Trainer::compute_gradients`): with one pass over the
//! batch they are `loss.backward()`'s; gradient checkpointing gives the same bits; and
//! micro-batches (each its local loss, as data-parallel ranks compute it) give the
//! full batch's gradient.

mod torch_common;

use std::collections::BTreeMap;

use tch::nn::VarStore;
use tch::{Device, Tensor};
use tureen_torch::model::{ClipConfig, MlpKind};
use tureen_torch::train::data::DataSource;
use tureen_torch::train::{
    AdamWConfig, Precision, Start, StepRounding, SyntheticSource, TrainConfig, Trainer,
};

fn model(mlp: MlpKind, drop_path: f64) -> ClipConfig {
    torch_common::tiny_clip(2, 2, mlp, 4, drop_path)
}

fn config(model: ClipConfig, micro_batch: Option<u64>) -> TrainConfig {
    TrainConfig {
        model,
        batch_size: 8,
        micro_batch,
        samples_per_interval: 16,
        step_rounding: StepRounding::Ceil,
        intervals: 1,
        lr: 1e-3,
        warmup: 0,
        optimizer: AdamWConfig::default(),
        grad_clip_norm: None,
        seed: 11,
        precision: Precision::Fp32,
        log_every: 1,
    }
}

fn batch(cfg: &TrainConfig) -> (Tensor, Tensor) {
    let mut source = SyntheticSource {
        seed: cfg.seed,
        image_size: cfg.model.vision.image_size,
        context_length: cfg.model.text.context_length,
        vocab_size: cfg.model.text.vocab_size,
        fixed: false,
    };
    let mut it = source.interval(0, cfg.batch_size).unwrap();
    it.next().unwrap().unwrap()
}

fn named_grads(vs: &VarStore) -> BTreeMap<String, Tensor> {
    vs.variables()
        .into_iter()
        .map(|(name, t)| (name, t.grad().copy()))
        .collect()
}

/// The loss and every parameter's gradient after one step's passes.
fn gradients(cfg: &TrainConfig, checkpointing: bool) -> (f64, BTreeMap<String, Tensor>) {
    let mut t = Trainer::new(cfg.clone(), Device::Cpu, &Start::Fresh).unwrap();
    t.grad_checkpointing = checkpointing;
    let (images, tokens) = batch(cfg);
    let loss = t.compute_gradients(&images, &tokens).unwrap();
    (loss, named_grads(&t.vs))
}

fn assert_bit_identical(a: &BTreeMap<String, Tensor>, b: &BTreeMap<String, Tensor>) {
    assert_eq!(a.len(), b.len());
    for (name, ga) in a {
        let gb = &b[name];
        let same = ga.size() == gb.size() && ga.eq_tensor(gb).all().int64_value(&[]) == 1;
        let diff = (ga - gb).abs().max().double_value(&[]);
        assert!(same, "{name}: gradients differ (max |diff| {diff:e})");
    }
}

#[test]
fn one_pass_over_the_batch_gives_the_gradients_of_loss_backward() {
    let cfg = config(model(MlpKind::Conv1x1, 0.0), None);
    let (loss, grads) = gradients(&cfg, false);

    // The same weights (same seed), the batch loss back-propagated directly.
    let t = Trainer::new(cfg.clone(), Device::Cpu, &Start::Fresh).unwrap();
    let (images, tokens) = batch(&cfg);
    let direct = t.model.loss(&images, &tokens, true);
    direct.backward();
    assert_eq!(loss, direct.double_value(&[]));
    assert_bit_identical(&grads, &named_grads(&t.vs));
}

#[test]
fn gradient_checkpointing_gives_bit_identical_gradients() {
    for mlp in [MlpKind::Conv1x1, MlpKind::Linear] {
        // Drop path on: the recomputed blocks must draw the same masks.
        for micro in [None, Some(3)] {
            let cfg = config(model(mlp, 0.3), micro);
            let (loss, plain) = gradients(&cfg, false);
            let (loss_ckpt, ckpt) = gradients(&cfg, true);
            assert_eq!(loss, loss_ckpt, "{mlp:?} micro {micro:?}");
            assert_bit_identical(&plain, &ckpt);
        }
    }
}

#[test]
fn micro_batches_of_local_losses_give_the_full_batch_gradient() {
    let cfg = config(model(MlpKind::Conv1x1, 0.0), None);
    let (full_loss, full) = gradients(&cfg, false);
    for micro in [4, 3, 1] {
        let (loss, accum) = gradients(&config(cfg.model.clone(), Some(micro)), false);
        assert!(
            (loss - full_loss).abs() < 1e-6 * full_loss.abs(),
            "micro {micro}: {loss} vs {full_loss}"
        );
        for (name, g) in &full {
            let scale = g.abs().max().double_value(&[]).max(1e-12);
            let diff = (g - &accum[name]).abs().max().double_value(&[]);
            assert!(
                diff <= 1e-5 * scale,
                "micro {micro}, {name}: max |diff| {diff:e} of {scale:e}"
            );
        }
    }
}

#[test]
fn logit_scale_gets_one_batch_worth_of_gradient() {
    // With micro-batches, logit_scale's gradient is the batch's, not one per micro-batch.
    let cfg = config(model(MlpKind::Conv1x1, 0.0), None);
    let (_, full) = gradients(&cfg, false);
    let (_, accum) = gradients(&config(cfg.model.clone(), Some(2)), false);
    let (a, b) = (
        full["logit_scale"].double_value(&[]),
        accum["logit_scale"].double_value(&[]),
    );
    assert!((a - b).abs() <= 1e-5 * a.abs(), "{a} vs {b}");
}
