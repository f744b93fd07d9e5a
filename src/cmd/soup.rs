//! `tureen soup`: average checkpoints into a soup (see `tureen_artifacts::soup`).

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{bail, Context};
use tureen_artifacts::safetensors::Dtype;
use tureen_artifacts::soup::config::SoupConfig;
use tureen_artifacts::soup::{
    soup_files, Accumulate, IntPolicy, KeyPolicy, SoupOptions, SoupReport,
};
use tureen_artifacts::{Digest, Store};

use super::ckpt_args::OutputPath;
use super::Global;

/// Average checkpoints into a soup.
///
/// Inputs are any mix of .safetensors files, sharded checkpoints (a directory or its
/// *.safetensors.index.json), checkpoint directories (model.safetensors) and torch.save
/// files (.pt, .pth, .bin; read without executing their pickles). Numerics: float32 accumulation with one fused multiply-add per input in the order given,
/// one division by the float32 sum of the weights, one round-to-nearest-even to the output
/// dtype; bit-identical to mergekit 0.1.5 `linear` (and, for uniform weights, to a plain
/// float32 sum divided by N). With `--store DIR` (or TUREEN_STORE) the output is also added
/// to the store. The inputs' digests (provenance) come from the store's stat cache, or
/// that of an existing `.tureen` in the current directory, when it knows them.
#[derive(clap::Args, Debug)]
#[command(
    after_help = "Examples:\n  tureen soup a.safetensors b.safetensors c.safetensors -o soup.safetensors\n  tureen soup a.safetensors b.safetensors -o soup.safetensors --weights 0.3,0.7 --out-dtype bf16\n  tureen soup epoch_31.pt epoch_32.pt hf-model/ -o soup.safetensors   # any mix of formats\n  tureen soup a.pt b.pt -o out_dir/ --out-shard-size 5GB   # shards + model.safetensors.index.json\n  tureen soup --config soup.yaml -o soup.safetensors   # mergekit linear config"
)]
pub struct Args {
    /// Input checkpoints (any format, see above), in accumulation order.
    #[arg(
        value_name = "CHECKPOINT",
        required_unless_present = "config",
        conflicts_with = "config"
    )]
    pub inputs: Vec<PathBuf>,
    /// Output file (written to a temp file and renamed when complete). A directory (or a
    /// path ending in `/`) means DIR/model.safetensors; with --out-shard-size, the
    /// directory of shards (new or empty).
    #[arg(short, long, value_name = "FILE")]
    pub output: PathBuf,
    #[command(flatten)]
    pub source: super::ckpt_args::SourceArgs,
    /// Write shards of at most SIZE of tensor data each (5GB, 500M, 2GiB...) and
    /// model.safetensors.index.json, as mergekit does.
    #[arg(long, value_name = "SIZE", value_parser = super::ckpt_args::parse_size)]
    pub out_shard_size: Option<u64>,
    /// One weight per input, comma-separated (default: uniform). Divided by their sum.
    #[arg(
        long,
        value_name = "W1,W2,...",
        value_delimiter = ',',
        allow_hyphen_values = true,
        conflicts_with = "config"
    )]
    pub weights: Option<Vec<String>>,
    /// Output dtype of averaged tensors (default: the input dtype; f32 with --accumulate f64).
    #[arg(long, value_name = "DTYPE", value_parser = parse_dtype)]
    pub out_dtype: Option<Dtype>,
    /// What to do when inputs have different tensor names.
    #[arg(long, value_enum, default_value_t = KeysArg::Strict)]
    pub keys: KeysArg,
    /// What to do with integer/bool tensors (never averaged).
    #[arg(long, value_enum, default_value_t = IntPolicyArg::RequireEqual)]
    pub int_policy: IntPolicyArg,
    /// Accumulator precision: f32 (mergekit) or f64 (timm's avg_checkpoints: float32 out).
    #[arg(long, value_enum, default_value_t = AccumulateArg::F32)]
    pub accumulate: AccumulateArg,
    /// A mergekit YAML config with `merge_method: linear` (models, weights, dtype, out_dtype).
    #[arg(long, value_name = "YAML")]
    pub config: Option<PathBuf>,
    /// Write no `__metadata__` (no provenance): the file is then byte-identical to what
    /// `safetensors.torch.save_file` writes for the same tensors.
    #[arg(long)]
    pub no_metadata: bool,
    /// Do not fsync the output before renaming it into place: still all-or-nothing, but a
    /// power loss right after may lose it. For slow disks.
    #[arg(long)]
    pub no_fsync: bool,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum KeysArg {
    /// All inputs must have the same tensor names.
    Strict,
    /// Keep only names present in every input.
    Intersection,
    /// Keep every name; average each over the inputs that have it.
    Union,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum IntPolicyArg {
    /// Integer tensors must be identical in all inputs; copied.
    RequireEqual,
    /// Take the first input's integer tensors.
    First,
    /// Any integer tensor is an error.
    Error,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum AccumulateArg {
    /// float32 FMA accumulation (mergekit 0.1.5 linear).
    F32,
    /// float64 accumulation (timm avg_checkpoints).
    F64,
}

fn parse_dtype(s: &str) -> Result<Dtype, String> {
    match s.to_ascii_lowercase().as_str() {
        "bf16" | "bfloat16" => Ok(Dtype::BF16),
        "f16" | "fp16" | "float16" | "half" => Ok(Dtype::F16),
        "f32" | "fp32" | "float32" => Ok(Dtype::F32),
        "f64" | "fp64" | "float64" => Ok(Dtype::F64),
        _ => Err(format!(
            "unknown dtype {s:?} (expected bf16, f16, f32 or f64)"
        )),
    }
}

fn parse_weights(items: &[String]) -> anyhow::Result<Vec<f64>> {
    items
        .iter()
        .enumerate()
        .map(|(i, s)| {
            s.trim()
                .parse::<f64>()
                .with_context(|| format!("--weights: item {} ({s:?}) is not a number", i + 1))
        })
        .collect()
}

pub fn run(args: Args, global: &Global) -> anyhow::Result<ExitCode> {
    let mut opts = soup_options(&args);
    let (inputs, weights) = inputs_and_weights(&args, &mut opts)?;
    let output = OutputPath::resolve(&args.output, args.out_shard_size.is_some())?;
    let stores = Stores::open(global)?;
    let digest_cache = stores.digest_cache();
    let stamps: Vec<Option<std::fs::Metadata>> = inputs
        .iter()
        .map(|p| std::fs::metadata(p).ok().filter(|m| is_one_file(p, m)))
        .collect();
    if let (Some(cache), true) = (digest_cache, opts.provenance) {
        opts.input_digests = inputs
            .iter()
            .zip(&stamps)
            .map(|(p, stamp)| stamp.as_ref().and_then(|_| cache.cached_file_digest(p)))
            .collect::<Option<Vec<_>>>();
    }

    let bar = progress_bar(global);
    let high_water = AtomicU64::new(0);
    let on_progress = |done: u64, total: u64| {
        if let Some(bar) = &bar {
            let prev = high_water.fetch_max(done, Ordering::Relaxed);
            if done > prev {
                bar.set_length(total);
                bar.set_position(done);
            }
        }
    };
    let started = std::time::Instant::now();
    let result = soup_files(
        &inputs,
        weights.as_deref(),
        &output.path,
        &opts,
        Some(&on_progress),
    );
    if let Some(bar) = &bar {
        bar.finish_and_clear();
    }
    let report = result?;
    let output = output.keep();
    let elapsed = started.elapsed();
    if let Some(cache) = digest_cache {
        for ((path, before), digest) in inputs.iter().zip(&stamps).zip(&report.input_digests) {
            if let Some(before) = before {
                cache.remember_file_digest(path, before, *digest);
            }
        }
    }

    let stored = match &stores.store {
        Some(store) if output.is_dir() => Some(store.add_dir(&output)),
        Some(store) => Some(store.add_file(&output)),
        None => None,
    }
    .transpose()
    .with_context(|| format!("adding {} to the store", output.display()))?;
    if !global.quiet {
        print_summary(&output, &report, elapsed, stored);
    }
    if !report.non_finite_inherited.is_empty() {
        tureen_engine::eprintln_lossy!(
            "warning: {} tensor(s) hold infinities or NaNs because an input does ({}); they are averaged as IEEE arithmetic says",
            report.non_finite_inherited.len(),
            report.non_finite_inherited.iter().take(5).cloned().collect::<Vec<_>>().join(", ")
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// The soup's options as the flags give them (a `--config` may change some later).
fn soup_options(args: &Args) -> SoupOptions {
    SoupOptions {
        keys: match args.keys {
            KeysArg::Strict => KeyPolicy::Strict,
            KeysArg::Intersection => KeyPolicy::Intersection,
            KeysArg::Union => KeyPolicy::Union,
        },
        int_policy: match args.int_policy {
            IntPolicyArg::RequireEqual => IntPolicy::RequireEqual,
            IntPolicyArg::First => IntPolicy::First,
            IntPolicyArg::Error => IntPolicy::Error,
        },
        accumulate: match args.accumulate {
            AccumulateArg::F32 => Accumulate::F32,
            AccumulateArg::F64 => Accumulate::F64,
        },
        provenance: !args.no_metadata,
        fsync: !args.no_fsync,
        source: args.source.options(),
        out_shard_size: args.out_shard_size,
        ..SoupOptions::default()
    }
}

/// The ingredients and their weights, from the command line or a mergekit `--config`
/// (which also sets dtypes in `opts`; `--accumulate f64` and `--out-dtype` still win).
/// A soup needs two or more.
fn inputs_and_weights(
    args: &Args,
    opts: &mut SoupOptions,
) -> anyhow::Result<(Vec<PathBuf>, Option<Vec<f64>>)> {
    let (inputs, weights) = match &args.config {
        Some(path) => {
            let cfg = SoupConfig::from_file(path)?;
            cfg.apply(opts);
            if matches!(args.accumulate, AccumulateArg::F64) {
                opts.accumulate = Accumulate::F64;
            }
            (cfg.inputs, Some(cfg.weights))
        }
        None => (
            args.inputs.clone(),
            args.weights.as_deref().map(parse_weights).transpose()?,
        ),
    };
    if args.out_dtype.is_some() {
        opts.out_dtype = args.out_dtype;
    }
    match inputs.len() {
        0 => bail!("no input checkpoints given"),
        1 => bail!(
            "only one checkpoint given ({}): a soup averages two or more; to rewrite one checkpoint as safetensors use `tureen convert`",
            inputs[0].display()
        ),
        _ => {}
    }
    Ok((inputs, weights))
}

/// The stores a soup touches: the one it is added to, or else one that only lends its
/// stat cache.
struct Stores {
    /// `--store` (or TUREEN_STORE) given explicitly: the soup goes into the store too.
    store: Option<Store>,
    /// Without one, an existing `.tureen` here (which gets no soup added).
    here: Option<Store>,
}

impl Stores {
    fn open(global: &Global) -> anyhow::Result<Stores> {
        let store = match &global.store {
            Some(dir) => Some(
                Store::open(dir).with_context(|| format!("opening the store {}", dir.display()))?,
            ),
            None => None,
        };
        let here = match &store {
            Some(_) => None,
            None => {
                let dir = global.store_dir();
                dir.is_dir().then(|| Store::open(&dir)).transpose()?
            }
        };
        Ok(Stores { store, here })
    }

    /// Where the ingredients' digests (provenance) come from: a checkpoint souped
    /// before, hashed by `store hash` or written by a run is then not read twice;
    /// otherwise the soup hashes the inputs while it averages them.
    fn digest_cache(&self) -> Option<&Store> {
        self.store.as_ref().or(self.here.as_ref())
    }
}

/// A progress bar on a terminal, unless `--quiet`.
fn progress_bar(global: &Global) -> Option<indicatif::ProgressBar> {
    (!global.quiet && std::io::stderr().is_terminal()).then(|| {
        let bar = indicatif::ProgressBar::new(0);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{spinner} soup [{bar:40}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
            )
            .expect("valid template")
            .progress_chars("=> "),
        );
        bar
    })
}

/// What was averaged, copied, left out and stored.
fn print_summary(
    output: &Path,
    report: &SoupReport,
    elapsed: std::time::Duration,
    stored: Option<Digest>,
) {
    println!(
        "{}: {} tensors averaged, {} copied, {} in {:.2}s ({})",
        output.display(),
        report.averaged,
        report.copied,
        super::store::human_bytes(report.output_bytes),
        elapsed.as_secs_f64(),
        report.numerics
    );
    if !report.dropped.is_empty() {
        println!(
            "left out {} tensors missing from some inputs (--keys intersection)",
            report.dropped.len()
        );
    }
    if !report.partial.is_empty() {
        println!(
            "averaged {} tensors over only the inputs that have them (--keys union)",
            report.partial.len()
        );
    }
    if let Some(d) = stored {
        println!("stored as {d}");
    }
}

/// Whether the stat cache may hold `path`'s digest: a regular file that is the whole
/// checkpoint. A shard index is one file, but its digest covers its shards, whose
/// changes would not change the index's stamp.
fn is_one_file(path: &Path, meta: &std::fs::Metadata) -> bool {
    meta.is_file() && !path.to_string_lossy().ends_with(".json")
}
