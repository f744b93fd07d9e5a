//! Model soups: the weighted average of checkpoints, streamed tensor by tensor.
//!
//! [`soup_files`] memory-maps every input, validates that they fit together, computes the
//! output layout up front, and then averages chunks of every tensor on all rayon threads,
//! writing each chunk straight to its final offset in the output file. Peak private memory is
//! a few buffers per thread, whatever the model size; the output appears (atomically) only
//! when complete.
//!
//! # Numerics
//!
//! Per element, in float32 (see [`kernel`](self) docs): `acc = +0`, then for each input in
//! the order given `acc = fma(x_i, w_i, acc)`, then `acc / sum(w)` (the float32 sum of the
//! weights, left to right), rounded once to the output dtype (round to nearest even). This is
//! bit-identical to mergekit 0.1.5's `linear` merge and, for uniform weights, to
//! `naive_avg.py`. Float64 inputs accumulate in float64 (as mergekit does).
//! [`Accumulate::F64`] is timm's `avg_checkpoints`: float64 accumulation, float32 output
//! (values clamped to the float32 range).
//!
//! Integer, bool and 8-bit float tensors are never averaged: see [`IntPolicy`].

pub mod config;
mod kernel;
pub(crate) mod output;
pub(crate) mod plan;
mod provenance;
pub(crate) mod run;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use rayon::prelude::*;

use crate::checkpoint::{Checkpoint, CheckpointError, OpenOptions};
use crate::safetensors::{Dtype, SafetensorsError};
use crate::Digest;
use output::Output;

/// Which tensor names the soup contains when the inputs disagree.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum KeyPolicy {
    /// Every input must have exactly the same tensor names (default).
    #[default]
    Strict,
    /// Only names present in every input; the others are left out.
    Intersection,
    /// Every name present in any input; each tensor is averaged over the inputs that have
    /// it, with their weights renormalized to those inputs.
    Union,
}

/// What to do with tensors that are not floating point (integers, bool, 8-bit floats).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IntPolicy {
    /// They must be byte-identical in every input that has them, and are copied (default).
    #[default]
    RequireEqual,
    /// Copied from the first input that has them, differences ignored.
    First,
    /// Any such tensor is an error.
    Error,
}

/// The accumulator precision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Accumulate {
    /// float32 FMA accumulation (float64 for float64 inputs): mergekit 0.1.5 `linear`.
    #[default]
    F32,
    /// float64 accumulation, float32 output unless `out_dtype` says otherwise: timm's
    /// `avg_checkpoints`.
    F64,
}

/// How a soup is made. `Default` is the mergekit-compatible configuration.
#[derive(Debug, Clone)]
pub struct SoupOptions {
    /// Output dtype of averaged tensors. `None`: the input dtype (float32 in
    /// [`Accumulate::F64`] mode, like timm). Must be F16, BF16, F32 or F64.
    pub out_dtype: Option<Dtype>,
    /// Tensor name policy.
    pub keys: KeyPolicy,
    /// Non-float tensor policy.
    pub int_policy: IntPolicy,
    /// Accumulator precision.
    pub accumulate: Accumulate,
    /// Round every input element through this dtype before averaging (mergekit's `dtype:`
    /// option). Float types only. `None`: use inputs as stored.
    pub input_cast: Option<Dtype>,
    /// Divide by the sum of the weights (default). `false` gives a plain weighted sum.
    pub normalize: bool,
    /// Write provenance into `__metadata__` (default). `false` writes no `__metadata__` at
    /// all, which makes the file byte-identical to `safetensors.torch.save_file`'s output
    /// of the same tensors.
    pub provenance: bool,
    /// Extra `__metadata__` entries (ignored without provenance).
    pub extra_metadata: BTreeMap<String, String>,
    /// The inputs' digests if the caller already knows them (e.g. from the store); else
    /// they are computed while the soup runs, when `provenance` is on.
    pub input_digests: Option<Vec<Digest>>,
    /// How provenance names each input (`"file"` in `tureen.soup.ingredients`); default:
    /// the path as given. Pipelines pass store-independent labels so the same soup has
    /// the same bytes in every store.
    pub input_labels: Option<Vec<String>>,
    /// fsync the output before renaming it into place (default). `false` keeps the
    /// all-or-nothing rename but not durability across a power loss.
    pub fsync: bool,
    /// Elements per parallel work item (a tuning knob; results do not depend on it).
    pub chunk_elems: usize,
    /// How `torch.save` inputs are read (where the state dict is, DDP prefix).
    pub source: OpenOptions,
    /// Write a sharded checkpoint (a directory of shards of at most this many bytes of
    /// tensor data, and `model.safetensors.index.json`) instead of one file.
    pub out_shard_size: Option<u64>,
}

impl Default for SoupOptions {
    fn default() -> Self {
        SoupOptions {
            out_dtype: None,
            keys: KeyPolicy::Strict,
            int_policy: IntPolicy::RequireEqual,
            accumulate: Accumulate::F32,
            input_cast: None,
            normalize: true,
            provenance: true,
            extra_metadata: BTreeMap::new(),
            input_digests: None,
            input_labels: None,
            fsync: true,
            chunk_elems: 1 << 18,
            source: OpenOptions::default(),
            out_shard_size: None,
        }
    }
}

/// What [`soup_files`] did.
#[derive(Debug, Clone, Default)]
pub struct SoupReport {
    /// BLAKE3 of each input (empty when provenance was off and no digests were given).
    pub input_digests: Vec<Digest>,
    /// The weights used (1.0 each for a uniform soup).
    pub weights: Vec<f64>,
    /// Number of float tensors averaged.
    pub averaged: usize,
    /// Number of non-float tensors copied.
    pub copied: usize,
    /// Tensors averaged over only some inputs ([`KeyPolicy::Union`]).
    pub partial: Vec<String>,
    /// Tensors left out ([`KeyPolicy::Intersection`]).
    pub dropped: Vec<String>,
    /// Size of the output file.
    pub output_bytes: u64,
    /// The numerics mode, as recorded in the metadata.
    pub numerics: String,
    /// Tensors with infinities or NaNs in the result where an input already had them.
    pub non_finite_inherited: Vec<String>,
}

/// Why a soup could not be made. Every variant names the files and tensors involved.
#[derive(Debug, thiserror::Error)]
pub enum SoupError {
    /// The output cannot be written (or a safetensors input read).
    #[error(transparent)]
    Safetensors(#[from] SafetensorsError),
    /// An input checkpoint cannot be read.
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    /// Results that are not finite although every input was: the weights or values
    /// overflow the accumulator or the output dtype.
    #[error("the soup of tensor(s) {0} has infinities or NaNs where every input is finite (the weighted sum overflows float32 or the output dtype); nothing was written")]
    NonFinite(String),
    /// No inputs.
    #[error("a soup needs at least one input checkpoint")]
    NoInputs,
    /// Bad weights (count, non-finite, zero sum).
    #[error("invalid weights: {0}")]
    Weights(String),
    /// Bad options.
    #[error("invalid soup options: {0}")]
    Options(String),
    /// Inputs with different tensor names under [`KeyPolicy::Strict`].
    #[error("inputs have different tensors (use --keys intersection or --keys union to allow this):\n{0}")]
    KeyMismatch(String),
    /// Tensors whose shapes or dtypes differ between inputs.
    #[error("incompatible tensors:\n{0}")]
    Incompatible(String),
    /// A non-float tensor that differs between inputs under [`IntPolicy::RequireEqual`].
    #[error("non-float tensor {tensor:?} ({dtype}) differs between {} and {}; integer tensors are never averaged (use --int-policy first to take the first input's)", first.display(), other.display())]
    IntMismatch {
        /// The tensor.
        tensor: String,
        /// Its dtype.
        dtype: Dtype,
        /// The first input having it.
        first: PathBuf,
        /// An input where it differs.
        other: PathBuf,
    },
    /// A non-float tensor under [`IntPolicy::Error`].
    #[error("tensor {tensor:?} in {} is {dtype}, not floating point, and --int-policy error forbids it", path.display())]
    IntForbidden {
        /// The tensor.
        tensor: String,
        /// Its dtype.
        dtype: Dtype,
        /// The input.
        path: PathBuf,
    },
    /// A mergekit-style YAML config that cannot be used.
    #[error("{}: {message}", path.display())]
    Config {
        /// The config file.
        path: PathBuf,
        /// What is wrong (with line and column where known).
        message: String,
    },
}

/// Makes a soup of `inputs` into `output`.
///
/// * `inputs`: checkpoints in any format [`Checkpoint::open`] reads (`.safetensors`,
///   sharded directories or indexes, `torch.save` files), mixed freely; `opts.source`
///   says how to read `torch.save` files.
/// * `weights`: one finite weight per input (any scale: they are divided by their sum), or
///   `None` for a uniform average. With `opts.normalize` the sum must not be zero.
/// * `output`: a safetensors file, or with `opts.out_shard_size` a directory of shards.
/// * `progress`: called from worker threads with (bytes of output done, total bytes).
///
/// On error nothing is left at `output` (a pre-existing file there is untouched).
pub fn soup_files(
    inputs: &[PathBuf],
    weights: Option<&[f64]>,
    output: &Path,
    opts: &SoupOptions,
    progress: Option<&(dyn Fn(u64, u64) + Sync)>,
) -> Result<SoupReport, SoupError> {
    if inputs.is_empty() {
        return Err(SoupError::NoInputs);
    }
    let weights: Vec<f64> = match weights {
        Some(w) => w.to_vec(),
        None => vec![1.0; inputs.len()],
    };
    check_weights(&weights, inputs.len(), opts)?;
    check_options(opts, inputs.len())?;

    let files: Vec<Checkpoint> = inputs
        .iter()
        .map(|p| Checkpoint::open(p, &opts.source))
        .collect::<Result<_, _>>()?;
    let (plans, mut report) = plan::plan(&files, opts)?;
    report.numerics = provenance::numerics_label(opts);
    report.weights = weights.clone();

    // Digests not known yet are placeholders in the header, filled in once the inputs
    // are hashed (alongside the averaging).
    let hash_inputs = opts.provenance && opts.input_digests.is_none();
    let placeholder = vec![Digest::from_bytes([0; 32]); files.len()];
    let header_digests = opts.input_digests.as_ref().unwrap_or(&placeholder);
    let meta = |digests: &[Digest]| {
        provenance::provenance(inputs, digests, &weights, &report.numerics, opts)
    };
    let metadata = opts.provenance.then(|| meta(header_digests));
    let mut out = Output::create(
        output,
        plan::specs(&plans, &files),
        metadata.as_ref(),
        opts.out_shard_size,
        opts.fsync,
    )?;
    let job = run::Job {
        files: &files,
        plans: &plans,
        weights: &weights,
        opts,
    };
    let hash = || -> Vec<Digest> {
        match &opts.input_digests {
            Some(known) => known.clone(),
            None if hash_inputs => files.par_iter().map(Checkpoint::digest).collect(),
            None => Vec::new(),
        }
    };
    let (digests, outcome) = rayon::join(hash, || run::execute(&job, &out, progress));
    let non_finite = outcome?;
    if !non_finite.new.is_empty() {
        let names: Vec<&str> = non_finite.new.iter().map(String::as_str).collect();
        return Err(SoupError::NonFinite(plan::list(&names)));
    }
    if hash_inputs {
        out.replace_metadata(&meta(&digests))?;
    }
    report.non_finite_inherited = non_finite.inherited;
    report.output_bytes = out.total_len();
    report.input_digests = digests;
    out.finish()?;
    Ok(report)
}

/// Weights are checked in the precision the soup computes in: float32 (mergekit's
/// arithmetic), unless accumulating in float64. Each weight is rounded to that type (the
/// usual relative error of 2^-24); a non-zero weight that would be subnormal, zero or
/// infinite there is refused, as is a sum of weights that would be, since the result
/// would be garbage. Only the ratios of the weights matter, so scaling them all up fixes
/// it.
fn check_weights(weights: &[f64], n: usize, opts: &SoupOptions) -> Result<(), SoupError> {
    if weights.len() != n {
        return Err(SoupError::Weights(format!(
            "{} weights given for {n} input checkpoints",
            weights.len()
        )));
    }
    let in_f32 = opts.accumulate == Accumulate::F32;
    for (i, w) in weights.iter().enumerate() {
        if !w.is_finite() {
            return Err(SoupError::Weights(format!(
                "weight {} (for input {}) is {w}; weights must be finite",
                i + 1,
                i + 1
            )));
        }
        let w32 = *w as f32;
        if in_f32 && *w != 0.0 && !w32.is_normal() {
            return Err(SoupError::Weights(format!(
                "weight {} ({w}) becomes {w32:e} in float32, the precision the soup computes in, and loses its value; only the ratios of the weights matter, so scale them all together",
                i + 1
            )));
        }
    }
    if opts.normalize {
        let sum32: f32 = weights.iter().map(|&w| w as f32).sum();
        let sum64: f64 = weights.iter().sum();
        if sum32 == 0.0 || sum64 == 0.0 || !sum32.is_finite() {
            return Err(SoupError::Weights(format!("weights {weights:?} sum to {sum32}; the soup divides by their sum, which must be finite and non-zero")));
        }
        if in_f32 && !sum32.is_normal() {
            return Err(SoupError::Weights(format!("weights {weights:?} sum to {sum32:e} in float32, too small to divide by without losing precision; scale them all together")));
        }
    }
    Ok(())
}

fn check_options(opts: &SoupOptions, inputs: usize) -> Result<(), SoupError> {
    for (what, d) in [
        ("output dtype", opts.out_dtype),
        ("input cast dtype", opts.input_cast),
    ] {
        if let Some(d) = d {
            if !d.is_averageable_float() {
                return Err(SoupError::Options(format!(
                    "{what} {d} is not one of F16, BF16, F32, F64"
                )));
            }
        }
    }
    if let Some(d) = &opts.input_digests {
        if d.len() != inputs {
            return Err(SoupError::Options(format!(
                "{} input digests given for {inputs} inputs",
                d.len()
            )));
        }
    }
    if opts.out_shard_size == Some(0) {
        return Err(SoupError::Options(
            "the shard size must be at least 1 byte".into(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests;
