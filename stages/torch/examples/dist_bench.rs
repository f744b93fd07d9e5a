//! One rank (or the only process) of bench/dist/run.sh: timed training steps of
//! tureen's CLIP on one fixed random global batch, data-parallel when launched with
//! torchrun's variables (`RANK`, `WORLD_SIZE`, `MASTER_ADDR`, `MASTER_PORT`).
//!
//! `dist_bench GLOBAL_BATCH THREADS STEPS PRESET [IMAGE_SIZE] [ckpt]`
//! Prints one line: `rank R world W samples/s S step_ms T comm_ms C rss_before_kb A
//! peak_rss_kb P` (samples/s of the global batch; comm: this rank's time in
//! collectives per step; RSS: resident memory before the first step, and the peak).

use std::time::{Duration, Instant};

use tch::Device;
use tureen_engine::kind::Rank;
use tureen_torch::dist::{Backend, GroupOptions, ProcessGroup, Rendezvous};
use tureen_torch::model::ClipConfig;
use tureen_torch::train::{
    AdamWConfig, DataSource, Precision, Start, StepRounding, SyntheticSource, TrainConfig, Trainer,
};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |i: usize| args.get(i).cloned();
    let usage = "dist_bench GLOBAL_BATCH THREADS STEPS PRESET [IMAGE_SIZE] [ckpt]";
    let batch: u64 = arg(1).and_then(|a| a.parse().ok()).expect(usage);
    let threads: i32 = arg(2).and_then(|a| a.parse().ok()).expect(usage);
    let steps: u64 = arg(3).and_then(|a| a.parse().ok()).expect(usage);
    let mut model = ClipConfig::preset(&arg(4).expect(usage)).expect("known preset");
    if let Some(size) = arg(5).and_then(|a| a.parse().ok()) {
        model.vision.image_size = size;
    }
    let checkpointing = arg(6).as_deref() == Some("ckpt");
    tch::set_num_threads(threads);
    let rank = Rank::from_env().expect("launcher variables");

    // One untimed step: allocations and the process-wide thread pool settle.
    let warmup = 1;
    let cfg = TrainConfig {
        model,
        batch_size: batch,
        micro_batch: None,
        samples_per_interval: batch * (warmup + steps),
        step_rounding: StepRounding::Ceil,
        intervals: 1,
        lr: 1e-3,
        warmup: 0,
        optimizer: AdamWConfig::default(),
        grad_clip_norm: Some(5.0),
        seed: 0,
        precision: Precision::Fp32,
        log_every: 1,
    };
    let mut data = SyntheticSource {
        seed: 0,
        image_size: cfg.model.vision.image_size,
        context_length: cfg.model.text.context_length,
        vocab_size: cfg.model.text.vocab_size,
        fixed: true,
    };
    let (images, tokens) = data
        .interval(0, batch)
        .expect("data")
        .next()
        .unwrap()
        .unwrap();
    let mut trainer = Trainer::new(cfg, Device::Cpu, &Start::Fresh).expect("trainer");
    trainer.grad_checkpointing = checkpointing;
    let rows = (batch / rank.world as u64) as i64;
    let (images, tokens) = if rank.world > 1 {
        let options = GroupOptions {
            backend: Backend::Gloo,
            device: Device::Cpu,
            timeout: Duration::from_secs(300),
            rendezvous_timeout: Duration::from_secs(120),
            identity: "dist_bench".into(),
            interface: None,
        };
        let rv = Rendezvous::from_env(rank).expect("MASTER_ADDR/MASTER_PORT");
        trainer
            .join(ProcessGroup::join(&rv, &options, &|| false).expect("rendezvous"))
            .expect("join");
        let start = rank.rank as i64 * rows;
        (images.narrow(0, start, rows), tokens.narrow(0, start, rows))
    } else {
        (images, tokens)
    };
    let rss_before = rss_kb("VmRSS");
    for _ in 0..warmup {
        trainer.train_step(&images, &tokens).expect("step");
    }
    trainer.take_comm_time();
    let t = Instant::now();
    for _ in 0..steps {
        trainer.train_step(&images, &tokens).expect("step");
    }
    let dt = t.elapsed().as_secs_f64();
    let comm = trainer.take_comm_time().as_secs_f64();
    println!(
        "rank {} world {} samples/s {:.2} step_ms {:.1} comm_ms {:.2} rss_before_kb {} peak_rss_kb {}",
        rank.rank,
        rank.world,
        (steps * batch) as f64 / dt,
        1e3 * dt / steps as f64,
        1e3 * comm / steps as f64,
        rss_before,
        rss_kb("VmHWM"),
    );
}

/// A memory figure of this process from /proc/self/status (kB).
fn rss_kb(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix(field)?
                .trim_start_matches(':')
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .unwrap_or(0)
}
