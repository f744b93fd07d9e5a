//! The params of the `train` and `rewind` stage kinds, their validation and their
//! declared outputs.

use std::path::Path;

use serde::Deserialize;
use serde_json::{Map, Value};
use tureen_engine::kind::{OutputDecl, OutputShape, ParamError, StageDecl};

use super::{AdamWConfig, Precision, StepRounding, TrainConfig};
use crate::data::DataParams;
use crate::model::{config_from_json, ClipConfig};

/// The params of `kind: train` (and, with [`Mode::Rewind`] rules, `kind: rewind`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainParams {
    /// A preset name, `{preset: ..., <overrides>}` or a full model config. Optional for
    /// `rewind` (the checkpoint's config is used).
    pub model: Option<Value>,
    /// The webdataset (see [`DataParams`]), or the string `synthetic` for random
    /// tensors (benchmarks and smoke tests; no data input needed).
    pub data: Value,
    /// Global batch: samples per optimizer step, over all ranks; at least 2.
    pub batch_size: u64,
    /// Samples per forward/backward pass: smaller than the per-rank batch, gradients
    /// accumulate exactly (a data-parallel run needs it to divide the per-rank batch);
    /// absent: the whole per-rank batch.
    pub micro_batch: Option<u64>,
    /// Samples per checkpoint interval; each interval ends with a checkpoint.
    pub samples_per_interval: u64,
    /// Intervals of the whole schedule; a rewind counts the ones before its checkpoint
    /// too and trains the rest.
    pub intervals: u64,
    /// Peak learning rate (after warmup; cosine decay to zero at the end); positive.
    pub lr: f64,
    /// Linear warmup, in optimizer steps (default 0).
    #[serde(default)]
    pub warmup: u64,
    /// AdamW's beta1 (default 0.9).
    pub beta1: Option<f64>,
    /// AdamW's beta2 (default 0.98).
    pub beta2: Option<f64>,
    /// AdamW's eps (default 1e-6).
    pub eps: Option<f64>,
    /// AdamW's decoupled weight decay (default 0.2), on weights of 2+ dimensions only.
    pub weight_decay: Option<f64>,
    /// Gradient-norm clipping; absent or null: none.
    pub grad_clip_norm: Option<f64>,
    /// Base seed of weights, data order, augmentation and stochastic depth (default 0).
    #[serde(default)]
    pub seed: u64,
    /// Where to train: `auto` (default), `cpu`, `cuda` or `cuda:N` (see
    /// [`crate::device::DeviceSpec`]).
    #[serde(default = "default_device")]
    pub device: String,
    /// Precision of the forward/backward pass (default `auto`: bf16 on CUDA, fp32 on
    /// the CPU).
    #[serde(default = "default_precision")]
    pub precision: Precision,
    /// libtorch intra-op threads on the CPU (default: 2 with portable numerics,
    /// libtorch's choice with native ones).
    pub threads: Option<i32>,
    /// How the CPU numerics are pinned ([`crate::numerics`]; default portable).
    #[serde(default)]
    pub numerics: crate::numerics::Numerics,
    /// A metrics record every this many steps, and at every interval's end (default 10).
    #[serde(default = "default_log_every")]
    pub log_every: u64,
    /// How `samples_per_interval / batch_size` becomes whole steps (default `ceil`, as
    /// open_clip).
    #[serde(default)]
    pub step_rounding: StepRounding,
    /// Rewind only: `checkpoint` (default: AdamW's moments, step and hyper-parameters
    /// come from the checkpoint) or `fresh` (zero moments, step 0, this stage's betas,
    /// eps and weight decay; needed for a checkpoint without optimizer state).
    pub optimizer: Option<String>,
    /// Recompute each ConvNeXt block and text residual block in the backward pass
    /// instead of keeping its activations (open_clip's `--grad-checkpointing`): less
    /// memory, about one more forward pass of time, the same gradients.
    #[serde(default)]
    pub grad_checkpointing: bool,
    /// The process group of a data-parallel run: `auto` (NCCL on CUDA, gloo on the
    /// CPU), `gloo` or `nccl`.
    #[serde(default = "default_backend")]
    pub backend: String,
    /// Bound on each collective of a data-parallel run, in seconds: a rank that stops
    /// or stalls fails the others within it. It also bounds the wait of ranks 1.. while
    /// rank 0 writes a checkpoint.
    #[serde(default = "default_collective_timeout")]
    pub collective_timeout_s: f64,
    /// Bound on the rendezvous of a data-parallel run (every rank reaching rank 0's
    /// store), in seconds.
    #[serde(default = "default_rendezvous_timeout")]
    pub rendezvous_timeout_s: f64,
}

fn default_backend() -> String {
    "auto".into()
}
fn default_collective_timeout() -> f64 {
    1800.0
}
fn default_rendezvous_timeout() -> f64 {
    600.0
}

fn default_device() -> String {
    "auto".into()
}
fn default_precision() -> Precision {
    Precision::Auto
}
fn default_log_every() -> u64 {
    10
}

/// Which of the two kinds is running.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `kind: train`: from fresh weights (`model` required).
    Train,
    /// `kind: rewind`: from the `from` checkpoint.
    Rewind,
}

impl TrainParams {
    /// Reads and checks the params of a stage of kind `mode`.
    pub fn from_params(params: &Map<String, Value>, mode: Mode) -> Result<TrainParams, ParamError> {
        // First, so a bad `numerics` or `threads` gets a message that names it.
        crate::numerics::NumericsSetting::from_params(params)?;
        let p: TrainParams = crate::params::deserialize(params)?;
        if mode == Mode::Train && p.model.is_none() {
            return Err(ParamError::param(
                "model",
                "required (a preset such as convnext_atto_64, or a config)",
            ));
        }
        match (mode, p.optimizer.as_deref()) {
            (_, None) | (Mode::Rewind, Some("checkpoint" | "fresh")) => {}
            (Mode::Train, Some(_)) => {
                return Err(ParamError::param(
                    "optimizer",
                    "only a rewind takes `optimizer` (checkpoint or fresh)",
                ))
            }
            (Mode::Rewind, Some(other)) => {
                return Err(ParamError::param(
                    "optimizer",
                    format!("expected `checkpoint` (AdamW state from the checkpoint) or `fresh`, got `{other}`"),
                ))
            }
        }
        if mode == Mode::Rewind && !p.fresh_optimizer() {
            for (name, v) in [
                ("beta1", p.beta1),
                ("beta2", p.beta2),
                ("eps", p.eps),
                ("weight_decay", p.weight_decay),
            ] {
                if v.is_some() {
                    return Err(ParamError::param(
                        name,
                        "a rewind takes AdamW's betas, eps and weight decay from the checkpoint (unless `optimizer: fresh`)",
                    ));
                }
            }
        }
        if let Some(m) = &p.model {
            config_from_json(m).map_err(crate::params::model_error)?;
        }
        p.data_spec()?;
        crate::device::check(&p.device)?;
        if !["auto", "gloo", "nccl"].contains(&p.backend.as_str()) {
            return Err(ParamError::param(
                "backend",
                format!("expected auto, gloo or nccl, got `{}`", p.backend),
            ));
        }
        for (name, v) in [
            ("collective_timeout_s", p.collective_timeout_s),
            ("rendezvous_timeout_s", p.rendezvous_timeout_s),
        ] {
            if !(v > 0.0 && v.is_finite() && v < 1e9) {
                return Err(ParamError::param(name, "must be a positive number of seconds"));
            }
        }
        Ok(p)
    }

    /// Whether a rewind starts AdamW afresh (`optimizer: fresh`).
    pub fn fresh_optimizer(&self) -> bool {
        self.optimizer.as_deref() == Some("fresh")
    }

    /// The webdataset to read, or `None` for `data: synthetic`.
    pub fn data_spec(&self) -> Result<Option<DataParams>, ParamError> {
        let spec = match &self.data {
            Value::String(s) if s == "synthetic" => return Ok(None),
            // A bare string is a shard pattern with default loader settings.
            Value::String(s) => serde_json::json!({ "shards": s }),
            v => v.clone(),
        };
        serde_path_to_error::deserialize(spec)
            .map(Some)
            .map_err(|e| {
                let path = e.path().to_string();
                let field = if path == "." {
                    "data".to_string()
                } else {
                    format!("data.{path}")
                };
                ParamError::param(field, e.into_inner().to_string())
            })
    }

    fn optimizer(&self) -> AdamWConfig {
        let d = AdamWConfig::default();
        AdamWConfig {
            beta1: self.beta1.unwrap_or(d.beta1),
            beta2: self.beta2.unwrap_or(d.beta2),
            eps: self.eps.unwrap_or(d.eps),
            weight_decay: self.weight_decay.unwrap_or(d.weight_decay),
        }
    }

    /// The training config, with `model` resolved (for a rewind without `model`, the
    /// checkpoint's config with this stage's drop-path override if any).
    pub fn config(&self, model: ClipConfig) -> TrainConfig {
        TrainConfig {
            model,
            batch_size: self.batch_size,
            micro_batch: self.micro_batch,
            samples_per_interval: self.samples_per_interval,
            step_rounding: self.step_rounding,
            intervals: self.intervals,
            lr: self.lr,
            warmup: self.warmup,
            optimizer: self.optimizer(),
            grad_clip_norm: self.grad_clip_norm,
            seed: self.seed,
            precision: self.precision,
            log_every: self.log_every,
        }
    }
}

/// `validate` of both kinds.
pub fn validate(decl: &StageDecl<'_>, mode: Mode) -> Result<(), ParamError> {
    let p = TrainParams::from_params(decl.params, mode)?;
    let allowed: &[&str] = match mode {
        Mode::Train => &["data"],
        Mode::Rewind => &["from", "data"],
    };
    if let Some(other) = decl.input_names.iter().find(|n| !allowed.contains(n)) {
        return Err(ParamError::input(
            *other,
            format!("unknown input (expected {})", allowed.join(", ")),
        ));
    }
    if mode == Mode::Rewind && !decl.input_names.contains(&"from") {
        return Err(ParamError::input(
            "from",
            "required (a checkpoint, e.g. core.checkpoints[230])",
        ));
    }
    // Shards given as absolute paths or `pipe:` commands (LAION on object storage)
    // need no dataset directory to be relative to.
    let needs_base = p.data_spec()?.is_some_and(|d| shards_need_base_dir(&d));
    if needs_base && !decl.input_names.contains(&"data") {
        return Err(ParamError::input(
            "data",
            "required (the dataset directory the shard patterns are relative to)",
        ));
    }
    if let Some(m) = &p.model {
        let cfg = config_from_json(m).map_err(crate::params::model_error)?;
        p.config(cfg).validate()?;
    }
    super::config::per_rank_batch(p.batch_size, p.micro_batch, decl.world)?;
    Ok(())
}

/// Whether some shard pattern is a relative path (resolved against the `data` input);
/// absolute paths and `pipe:` commands stand on their own.
pub fn shards_need_base_dir(d: &DataParams) -> bool {
    d.data
        .split("::")
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .any(|p| !p.starts_with("pipe:") && !Path::new(p).is_absolute())
}

/// `outputs` of both kinds: `checkpoints` (one directory per interval trained by this
/// stage: `intervals` of them for `train`; for `rewind` it depends on the checkpoint it
/// starts from) and `final` (the last interval's `model.safetensors`).
pub fn outputs(decl: &StageDecl<'_>, mode: Mode) -> Vec<OutputDecl> {
    let len = match mode {
        Mode::Train => decl
            .params
            .get("intervals")
            .and_then(Value::as_u64)
            .map(|n| n as usize),
        Mode::Rewind => None,
    };
    vec![
        OutputDecl {
            name: "checkpoints".into(),
            shape: OutputShape::Series,
            len,
        },
        OutputDecl {
            name: "final".into(),
            shape: OutputShape::One,
            len: None,
        },
    ]
}
