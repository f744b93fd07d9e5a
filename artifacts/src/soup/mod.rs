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

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use rayon::prelude::*;

use crate::safetensors::{
    Dtype, Layout, SafetensorsError, SafetensorsFile, SafetensorsWriter, TensorSpec,
};
use crate::Digest;
use kernel::{Accum, FloatJob};

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
}

/// Why a soup could not be made. Every variant names the files and tensors involved.
#[derive(Debug, thiserror::Error)]
pub enum SoupError {
    /// An input or the output is not a valid safetensors file or cannot be read/written.
    #[error(transparent)]
    Safetensors(#[from] SafetensorsError),
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

/// Lists at most this many offending tensors in one error message.
const MAX_LISTED: usize = 20;

/// One output tensor and how to produce it.
enum Plan {
    Average {
        inputs: Vec<usize>,
        in_dtype: Dtype,
        out_dtype: Dtype,
        numel: u64,
        wide: bool,
    },
    Copy {
        input: usize,
        nbytes: u64,
    },
}

/// Makes a soup of `inputs` into `output`.
///
/// * `weights`: one finite weight per input (any scale: they are divided by their sum), or
///   `None` for a uniform average. With `opts.normalize` the sum must not be zero.
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
    check_weights(&weights, inputs.len(), opts.normalize)?;
    check_options(opts)?;
    if let Some(d) = &opts.input_digests {
        if d.len() != inputs.len() {
            return Err(SoupError::Options(format!(
                "{} input digests given for {} inputs",
                d.len(),
                inputs.len()
            )));
        }
    }

    let files: Vec<SafetensorsFile> = inputs
        .iter()
        .map(SafetensorsFile::open)
        .collect::<Result<_, _>>()?;
    let (plans, mut report) = plan(&files, opts)?;

    let numerics = numerics_label(opts);
    report.numerics = numerics.clone();
    report.weights = weights.clone();
    let hash_inputs = opts.provenance && opts.input_digests.is_none();
    let placeholder = vec![Digest::from_bytes([0; 32]); files.len()];
    let digests_for_header = opts.input_digests.as_ref().unwrap_or(&placeholder);
    let metadata = opts
        .provenance
        .then(|| provenance(inputs, digests_for_header, &weights, &numerics, opts));

    let specs: Vec<TensorSpec> = plans
        .iter()
        .map(|(name, plan)| {
            let first = match plan {
                Plan::Average { inputs, .. } => inputs[0],
                Plan::Copy { input, .. } => *input,
            };
            let info = files[first].get(name).expect("planned tensors exist");
            let dtype = match plan {
                Plan::Average { out_dtype, .. } => *out_dtype,
                Plan::Copy { .. } => info.dtype,
            };
            TensorSpec {
                name: name.clone(),
                dtype,
                shape: info.shape.clone(),
            }
        })
        .collect();
    let layout = Layout::new(output, specs, metadata.as_ref())?;
    let total = layout.total_len();
    let mut writer = SafetensorsWriter::create(output, layout)?;
    writer.set_durable(opts.fsync);

    // Where each plan's tensor goes: its index in the layout and its offset in the file.
    let placement: Vec<(usize, u64)> = {
        let starts: Vec<u64> = writer.layout().tensors().map(|(_, b, _)| b).collect();
        plans
            .iter()
            .map(|(name, _)| {
                let index = writer
                    .layout()
                    .index_of(name)
                    .expect("planned tensors are in the layout");
                (index, starts[index])
            })
            .collect()
    };

    // Work items: (plan index, element or byte range). Chunks are independent, so any
    // schedule gives the same bytes. They are listed in output file order: each rayon
    // thread works through a contiguous run of them, so the output fills window by window
    // and the writer can send finished windows to disk while the rest is computed.
    let chunk = opts.chunk_elems.max(1) as u64;
    let mut items: Vec<(usize, u64, u64)> = Vec::new();
    let mut file_order: Vec<usize> = (0..plans.len()).collect();
    file_order.sort_by_key(|&i| placement[i].1);
    for i in file_order {
        let plan = &plans[i].1;
        let len = match plan {
            Plan::Average { numel, .. } => *numel,
            Plan::Copy { nbytes, .. } => *nbytes,
        };
        let step = match plan {
            Plan::Average { .. } => chunk,
            Plan::Copy { .. } => chunk * 4,
        };
        let mut start = 0;
        while start < len {
            let end = (start + step).min(len);
            items.push((i, start, end));
            start = end;
        }
    }
    let done = AtomicU64::new(0);
    let written = &writer;
    let run_items = || {
        items
            .par_iter()
            .try_for_each_init(Vec::<u8>::new, |buf, &(i, start, end)| {
                let (name, plan) = &plans[i];
                let index = placement[i].0;
                let bytes = match plan {
                    Plan::Copy { input, .. } => {
                        let f = &files[*input];
                        let data = f.data(f.get(name).expect("planned"));
                        written.write_at(index, start, &data[start as usize..end as usize])?;
                        end - start
                    }
                    Plan::Average {
                        inputs: which,
                        in_dtype,
                        out_dtype,
                        wide,
                        ..
                    } => {
                        let in_size = in_dtype.size() as u64;
                        let slices: Vec<&[u8]> = which
                            .iter()
                            .map(|&k| {
                                let f = &files[k];
                                &f.data(f.get(name).expect("planned"))
                                    [(start * in_size) as usize..(end * in_size) as usize]
                            })
                            .collect();
                        let w: Vec<f64> = which.iter().map(|&k| weights[k]).collect();
                        buf.resize(((end - start) as usize) * out_dtype.size(), 0);
                        if *wide {
                            average::<f64>(&slices, &w, *in_dtype, *out_dtype, opts, buf);
                        } else {
                            average::<f32>(&slices, &w, *in_dtype, *out_dtype, opts, buf);
                        }
                        written.write_at(index, start * out_dtype.size() as u64, buf)?;
                        buf.len() as u64
                    }
                };
                let so_far = done.fetch_add(bytes, Ordering::Relaxed) + bytes;
                if let Some(p) = progress {
                    p(so_far, total);
                }
                Ok::<(), SafetensorsError>(())
            })
    };
    let hash = || -> Vec<Digest> {
        if hash_inputs {
            files
                .par_iter()
                .map(|f| Digest::of_slice_parallel(f.bytes()))
                .collect()
        } else {
            opts.input_digests.clone().unwrap_or_default()
        }
    };
    let (digests, result) = rayon::join(hash, run_items);
    result?;
    if hash_inputs {
        let meta = provenance(inputs, &digests, &weights, &numerics, opts);
        writer.replace_metadata(&meta)?;
    }
    report.output_bytes = total;
    report.input_digests = digests;
    writer.finish()?;
    Ok(report)
}

/// Averages one chunk with accumulator type `A`.
fn average<A: Accum>(
    slices: &[&[u8]],
    weights: &[f64],
    in_dtype: Dtype,
    out_dtype: Dtype,
    opts: &SoupOptions,
    out: &mut [u8],
) {
    let w: Vec<A> = weights.iter().map(|&x| A::from_f64(x)).collect();
    // The denominator is the sum of the weights in the accumulator type, left to right.
    // (fma(x, 1, acc) is exactly one rounded addition.)
    let den = opts.normalize.then(|| {
        w.iter()
            .fold(A::ZERO, |acc, &x| A::fma(x, A::from_f64(1.0), acc))
    });
    let job = FloatJob {
        inputs: slices,
        weights: &w,
        in_dtype,
        cast: opts.input_cast.filter(|&c| c != in_dtype),
        den,
        out_dtype,
        clamp_f32: opts.accumulate == Accumulate::F64,
    };
    kernel::run(&job, out);
}

fn check_weights(weights: &[f64], n: usize, normalize: bool) -> Result<(), SoupError> {
    if weights.len() != n {
        return Err(SoupError::Weights(format!(
            "{} weights given for {n} input checkpoints",
            weights.len()
        )));
    }
    for (i, w) in weights.iter().enumerate() {
        if !w.is_finite() {
            return Err(SoupError::Weights(format!(
                "weight {} (for input {}) is {w}; weights must be finite",
                i + 1,
                i + 1
            )));
        }
    }
    if normalize {
        let sum32: f32 = weights.iter().map(|&w| w as f32).sum();
        let sum64: f64 = weights.iter().sum();
        if sum32 == 0.0 || sum64 == 0.0 || !sum32.is_finite() {
            return Err(SoupError::Weights(format!("weights {weights:?} sum to {sum32}; the soup divides by their sum, which must be finite and non-zero")));
        }
    }
    Ok(())
}

fn check_options(opts: &SoupOptions) -> Result<(), SoupError> {
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
    Ok(())
}

/// Resolves tensor names, checks compatibility, and decides how to produce each tensor.
fn plan(
    files: &[SafetensorsFile],
    opts: &SoupOptions,
) -> Result<(Vec<(String, Plan)>, SoupReport), SoupError> {
    let mut report = SoupReport::default();
    let all: BTreeSet<&str> = files
        .iter()
        .flat_map(|f| f.tensors().iter().map(|t| t.name.as_str()))
        .collect();
    if opts.keys == KeyPolicy::Strict {
        let mut lines = Vec::new();
        for f in files {
            let missing: Vec<&str> = all.iter().copied().filter(|n| f.get(n).is_none()).collect();
            if !missing.is_empty() {
                lines.push(format!(
                    "  {} lacks {} tensor(s): {}",
                    f.path().display(),
                    missing.len(),
                    list(&missing)
                ));
            }
        }
        if !lines.is_empty() {
            return Err(SoupError::KeyMismatch(lines.join("\n")));
        }
    }
    let mut plans = Vec::new();
    let mut problems = Vec::new();
    for name in all {
        let present: Vec<usize> = (0..files.len())
            .filter(|&i| files[i].get(name).is_some())
            .collect();
        if present.len() < files.len() {
            match opts.keys {
                KeyPolicy::Intersection => {
                    report.dropped.push(name.to_string());
                    continue;
                }
                KeyPolicy::Union => report.partial.push(name.to_string()),
                KeyPolicy::Strict => unreachable!("checked above"),
            }
        }
        let first = files[present[0]].get(name).expect("present");
        let mut ok = true;
        for &i in &present[1..] {
            let t = files[i].get(name).expect("present");
            if t.shape != first.shape || t.dtype != first.dtype {
                problems.push(format!(
                    "  {name:?}: {} {:?} in {} but {} {:?} in {}",
                    first.dtype,
                    first.shape,
                    files[present[0]].path().display(),
                    t.dtype,
                    t.shape,
                    files[i].path().display()
                ));
                ok = false;
                break;
            }
        }
        if !ok {
            continue;
        }
        if first.dtype.is_averageable_float() {
            let wide = opts.accumulate == Accumulate::F64
                || first.dtype == Dtype::F64
                || opts.input_cast == Some(Dtype::F64);
            let default_out = match opts.accumulate {
                Accumulate::F64 => Dtype::F32,
                Accumulate::F32 => opts.input_cast.unwrap_or(first.dtype),
            };
            plans.push((
                name.to_string(),
                Plan::Average {
                    inputs: present,
                    in_dtype: first.dtype,
                    out_dtype: opts.out_dtype.unwrap_or(default_out),
                    numel: first.numel(),
                    wide,
                },
            ));
            report.averaged += 1;
            continue;
        }
        let source = &files[present[0]];
        match opts.int_policy {
            IntPolicy::Error => {
                return Err(SoupError::IntForbidden {
                    tensor: name.to_string(),
                    dtype: first.dtype,
                    path: source.path().to_path_buf(),
                })
            }
            IntPolicy::RequireEqual => {
                let reference = source.data(first);
                for &i in &present[1..] {
                    let other = &files[i];
                    if other.data(other.get(name).expect("present")) != reference {
                        return Err(SoupError::IntMismatch {
                            tensor: name.to_string(),
                            dtype: first.dtype,
                            first: source.path().to_path_buf(),
                            other: other.path().to_path_buf(),
                        });
                    }
                }
            }
            IntPolicy::First => {}
        }
        plans.push((
            name.to_string(),
            Plan::Copy {
                input: present[0],
                nbytes: first.nbytes(),
            },
        ));
        report.copied += 1;
    }
    if !problems.is_empty() {
        let n = problems.len();
        let mut text = problems
            .into_iter()
            .take(MAX_LISTED)
            .collect::<Vec<_>>()
            .join("\n");
        if n > MAX_LISTED {
            text.push_str(&format!("\n  ... and {} more", n - MAX_LISTED));
        }
        return Err(SoupError::Incompatible(text));
    }
    Ok((plans, report))
}

fn list(names: &[&str]) -> String {
    let mut s = names
        .iter()
        .take(MAX_LISTED)
        .map(|n| format!("{n:?}"))
        .collect::<Vec<_>>()
        .join(", ");
    if names.len() > MAX_LISTED {
        s.push_str(&format!(", ... and {} more", names.len() - MAX_LISTED));
    }
    s
}

/// The numerics mode as recorded in the output's metadata.
fn numerics_label(opts: &SoupOptions) -> String {
    let mut s = match opts.accumulate {
        Accumulate::F32 => "f32-fma-sequential".to_string(),
        Accumulate::F64 => "f64-fma-sequential".to_string(),
    };
    if let Some(c) = opts.input_cast {
        s.push_str(&format!(",inputs-cast-to-{c}"));
    }
    s.push_str(if opts.normalize {
        ",divide-by-weight-sum"
    } else {
        ",no-normalize"
    });
    if opts.accumulate == Accumulate::F64 {
        s.push_str(",clamp-f32");
    }
    s.push_str(",round-nearest-even-once");
    s
}

fn provenance(
    inputs: &[PathBuf],
    digests: &[Digest],
    weights: &[f64],
    numerics: &str,
    opts: &SoupOptions,
) -> BTreeMap<String, String> {
    let mut m = opts.extra_metadata.clone();
    m.insert("format".into(), "pt".into());
    let labels: Vec<String> = match &opts.input_labels {
        Some(labels) => labels.clone(),
        None => inputs.iter().map(|p| p.display().to_string()).collect(),
    };
    let ingredients: Vec<serde_json::Value> = labels
        .iter()
        .zip(digests)
        .zip(weights)
        .map(|((label, d), w)| serde_json::json!({"file": label, "blake3": d.to_string(), "weight": w}))
        .collect();
    m.insert(
        "tureen.soup.ingredients".into(),
        serde_json::Value::Array(ingredients).to_string(),
    );
    m.insert(
        "tureen.soup.weights".into(),
        serde_json::to_string(weights).expect("finite floats serialize"),
    );
    m.insert("tureen.soup.numerics".into(), numerics.to_string());
    m.insert(
        "tureen.soup.out_dtype".into(),
        opts.out_dtype
            .map(|d| d.to_string())
            .unwrap_or_else(|| "input".into()),
    );
    m.insert(
        "tureen.soup.keys".into(),
        format!("{:?}", opts.keys).to_lowercase(),
    );
    m.insert(
        "tureen.soup.int_policy".into(),
        match opts.int_policy {
            IntPolicy::RequireEqual => "require-equal",
            IntPolicy::First => "first",
            IntPolicy::Error => "error",
        }
        .into(),
    );
    m.insert("tureen.version".into(), env!("CARGO_PKG_VERSION").into());
    m
}

#[cfg(test)]
mod tests;
