//! `tureen data ...`: dataset utilities.

use std::path::PathBuf;
use std::process::ExitCode;

use tureen_stages::data::synth::{write_dataset, SynthConfig};
use tureen_stages::data::{AugmentConfig, Loader, LoaderConfig, Transform};

use super::Global;

#[derive(clap::Subcommand, Debug)]
pub enum DataCommand {
    /// Generate a deterministic synthetic image-caption dataset (webdataset shards, a
    /// zero-shot classification set and a retrieval set).
    Synth(SynthArgs),
    /// Measure the data loader alone: samples/s of decode + augment + batching.
    Bench(BenchArgs),
}

#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    /// Shard pattern (brace expansion, `pipe:`), relative to --base-dir.
    #[arg(long)]
    pub data: String,
    /// Directory the pattern is relative to.
    #[arg(long, default_value = ".")]
    pub base_dir: PathBuf,
    #[arg(long, default_value_t = 64)]
    pub batch_size: usize,
    /// Output image side.
    #[arg(long, default_value_t = 64)]
    pub size: u32,
    /// Decode threads.
    #[arg(long, default_value_t = 2)]
    pub workers: usize,
    /// Batches to time (after one warm-up batch).
    #[arg(long, default_value_t = 100)]
    pub batches: u64,
    /// Context length of the tokens.
    #[arg(long, default_value_t = 77)]
    pub context_length: usize,
}

#[derive(clap::Args, Debug)]
pub struct SynthArgs {
    /// Output directory (must not exist, or be empty).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Number of training shards.
    #[arg(long, default_value_t = 4)]
    pub shards: usize,
    /// Training samples per shard.
    #[arg(long, default_value_t = 256)]
    pub per_shard: usize,
    /// Image side in pixels.
    #[arg(long, default_value_t = 64)]
    pub size: u32,
    /// Seed: the same seed and sizes give the same bytes.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Zero-shot images per class (24 classes).
    #[arg(long, default_value_t = 10)]
    pub zeroshot_per_class: usize,
    /// Images in the retrieval set (5 captions each).
    #[arg(long, default_value_t = 100)]
    pub retrieval: usize,
}

pub fn run(command: DataCommand, global: &Global) -> anyhow::Result<ExitCode> {
    match command {
        DataCommand::Synth(args) => {
            let config = SynthConfig {
                shards: args.shards,
                per_shard: args.per_shard,
                size: args.size,
                seed: args.seed,
                zeroshot_per_class: args.zeroshot_per_class,
                retrieval: args.retrieval,
            };
            let summary = write_dataset(&args.out, &config)?;
            if !global.quiet {
                println!(
                    "wrote {}: {} training samples in {} ({} classes x {} zero-shot images, {} retrieval images)",
                    args.out.display(),
                    summary.train_samples,
                    summary.train_shards,
                    summary.classes,
                    args.zeroshot_per_class,
                    summary.retrieval_images
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        DataCommand::Bench(args) => bench(args),
    }
}

/// Times the loader with the recipe's augmentation (RandomResizedCrop scale 0.33..1,
/// random erasing 0.35), endless resampled shards, a 1000-sample shuffle buffer.
fn bench(args: BenchArgs) -> anyhow::Result<ExitCode> {
    let mut config = LoaderConfig::new(
        args.data.clone(),
        &args.base_dir,
        args.batch_size,
        args.size,
    );
    config.transform = Transform::Train(AugmentConfig {
        scale: (0.33, 1.0),
        erase_prob: 0.35,
        ..AugmentConfig::default()
    });
    config.workers = args.workers;
    config.resampled = true;
    config.context_length = args.context_length;
    // Batches waiting in the queue would be counted for free: keep it short.
    config.prefetch = 1;
    let mut loader = Loader::new(config, 0)?;
    loader
        .next()
        .transpose()?
        .ok_or_else(|| anyhow::anyhow!("no batches in {}", args.data))?;
    let start = std::time::Instant::now();
    let mut samples = 0u64;
    for _ in 0..args.batches {
        let batch = loader
            .next()
            .transpose()?
            .ok_or_else(|| anyhow::anyhow!("the loader ended early"))?;
        samples += batch.texts.len() as u64;
    }
    let seconds = start.elapsed().as_secs_f64();
    println!(
        "loader: {samples} samples in {seconds:.2} s = {:.1} samples/s (size {}, batch {}, workers {}, corrupt {})",
        samples as f64 / seconds,
        args.size,
        args.batch_size,
        args.workers,
        loader.stats().corrupt()
    );
    Ok(ExitCode::SUCCESS)
}
