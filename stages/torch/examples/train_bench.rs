//! Training throughput of tureen's CLIP on random tensors, the counterpart of
//! `oc_train_bench.py` (used by bench/train/run.sh).
//!
//! `train_bench [BATCH] [THREADS] [STEPS] [PRESET] [fp32|bf16] [cpu|cuda] [native|portable]`
//! Prints `params N` and `loss L samples/s S`.

use std::time::Instant;

use tch::Device;
use tureen_stages::numerics::{Numerics, NumericsSetting};
use tureen_torch::model::ClipConfig;
use tureen_torch::train::{
    AdamWConfig, DataSource, Precision, Start, StepRounding, SyntheticSource, TrainConfig, Trainer,
};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |i: usize, d: &str| args.get(i).cloned().unwrap_or_else(|| d.to_string());
    let batch: u64 = arg(1, "64").parse().expect("BATCH");
    let threads: i32 = arg(2, "2").parse().expect("THREADS");
    let steps: u64 = arg(3, "10").parse().expect("STEPS");
    let preset = arg(4, "convnext_atto_64");
    let precision = match arg(5, "fp32").as_str() {
        "bf16" => Precision::Bf16,
        _ => Precision::Fp32,
    };
    let device = match arg(6, "cpu").as_str() {
        "cuda" => Device::Cuda(0),
        _ => Device::Cpu,
    };
    let numerics = match arg(7, "native").as_str() {
        "portable" => Numerics::Portable,
        _ => Numerics::Native,
    };
    let setting = NumericsSetting {
        numerics,
        threads: Some(threads),
    };
    // Portable numerics re-execute this program with their pins first.
    tureen_torch::numerics::ensure_pinned(&setting).expect("pinned numerics");
    let info = tureen_torch::numerics::apply(&setting).expect("numerics");
    println!(
        "numerics {} {} threads {}",
        info.mode, info.cpu_capability, info.threads
    );
    let model = ClipConfig::preset(&preset).expect("known preset");
    println!("params {}", model.num_params());
    let warmup = 3;
    let cfg = TrainConfig {
        model,
        batch_size: batch,
        micro_batch: None,
        samples_per_interval: batch * (warmup + steps),
        step_rounding: StepRounding::Ceil,
        intervals: 1,
        lr: 1e-3,
        warmup: 0,
        optimizer: AdamWConfig {
            beta1: 0.9,
            beta2: 0.98,
            eps: 1e-6,
            weight_decay: 0.2,
        },
        grad_clip_norm: Some(5.0),
        seed: 0,
        precision,
        log_every: 1,
    };
    let mut data = SyntheticSource {
        seed: 0,
        image_size: cfg.model.vision.image_size,
        context_length: cfg.model.text.context_length,
        vocab_size: cfg.model.text.vocab_size,
        fixed: true,
    };
    let mut trainer = Trainer::new(cfg, device, &Start::Fresh).expect("trainer");
    let mut batches = data.interval(0, batch).expect("data");
    let (images, tokens) = batches.next().unwrap().unwrap();
    let (images, tokens) = (images.to_device(device), tokens.to_device(device));
    for _ in 0..warmup {
        trainer.train_step(&images, &tokens).expect("step");
    }
    let sync = || {
        if let Device::Cuda(_) = device {
            tch::Cuda::synchronize(0);
        }
    };
    sync();
    let t = Instant::now();
    let mut loss = 0.0;
    for _ in 0..steps {
        loss = trainer.train_step(&images, &tokens).expect("step");
    }
    sync();
    let dt = t.elapsed().as_secs_f64();
    println!(
        "loss {loss:.3} samples/s {:.1}",
        (steps * batch) as f64 / dt
    );
}
