//! `tureen convert`: rewrite a checkpoint as safetensors (see
//! `tureen_artifacts::convert`).

use std::path::PathBuf;
use std::process::ExitCode;

use tureen_artifacts::convert::{convert, ConvertOptions};

use super::ckpt_args::{parse_size, OutputPath, SourceArgs};
use super::Global;

/// Rewrite a checkpoint as safetensors, tensor bytes unchanged.
///
/// Reads a torch.save file (.pt, .pth, .bin; its pickle is interpreted with an
/// allow-list, never executed), a sharded checkpoint or a safetensors file, and writes
/// safetensors whose `__metadata__` records the input's BLAKE3, format and, for
/// torch.save files, the key path of the state dict.
#[derive(clap::Args, Debug)]
#[command(
    after_help = "Examples:\n  tureen convert epoch_32.pt -o epoch_32.safetensors\n  tureen convert open_clip_pytorch_model.bin -o model/   # model/model.safetensors\n  tureen convert big.pt -o sharded/ --out-shard-size 5GB\n  tureen convert ema.pt --key model_ema -o ema.safetensors"
)]
pub struct Args {
    /// The checkpoint to convert.
    #[arg(value_name = "CHECKPOINT")]
    pub input: PathBuf,
    /// Output file; a directory (or a path ending in `/`) means DIR/model.safetensors;
    /// with --out-shard-size, the directory of shards (new or empty).
    #[arg(short, long, value_name = "FILE")]
    pub output: PathBuf,
    #[command(flatten)]
    pub source: SourceArgs,
    /// Write shards of at most SIZE of tensor data each, and an index.
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub out_shard_size: Option<u64>,
    /// Write no `__metadata__` (no provenance).
    #[arg(long)]
    pub no_metadata: bool,
    /// Do not fsync the output before renaming it into place.
    #[arg(long)]
    pub no_fsync: bool,
}

pub fn run(args: Args, global: &Global) -> anyhow::Result<ExitCode> {
    let output = OutputPath::resolve(&args.output, args.out_shard_size.is_some())?;
    let opts = ConvertOptions {
        source: args.source.options(),
        out_shard_size: args.out_shard_size,
        provenance: !args.no_metadata,
        fsync: !args.no_fsync,
    };
    let started = std::time::Instant::now();
    let report = convert(&args.input, &output.path, &opts)?;
    let output = output.keep();
    if !global.quiet {
        println!(
            "{}: {} tensors, {} in {:.2}s (from {}, {})",
            output.display(),
            report.tensors,
            super::store::human_bytes(report.output_bytes),
            started.elapsed().as_secs_f64(),
            args.input.display(),
            report.input_digest
        );
    }
    Ok(ExitCode::SUCCESS)
}
