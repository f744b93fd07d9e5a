//! Compute and storage estimates for `tureen plan`, from a [`ClipConfig`] and a stage's
//! params: forward MACs per sample of both towers, training FLOPs, checkpoint sizes.
//!
//! # How FLOPs are counted
//!
//! Forward multiply-accumulates (MACs) follow fvcore's `FlopCountAnalysis` convention,
//! the one open_clip's model profiles and the LAION model cards report ("GMACs"):
//!
//! - convolutions: `output elements x (in_channels / groups) x kernel area`;
//! - linear layers and matmuls: `rows x in x out`, including the attention score
//!   (`q k^T`) and value (`a v`) matmuls of every text layer;
//! - LayerNorm: 5 per element; global average pooling: 1 per element;
//! - activations, residual adds, layer scale, softmax and embedding lookups: free.
//!
//! At 256 px this gives 198.09 GMACs for the convnext_xxlarge image tower and 23.57 for
//! its text tower, the card's figures. A FLOP is half a MAC, so the forward pass costs
//! `2 x MACs` FLOPs. Training costs `3 x` the forward (the backward pass computes
//! gradients for both activations and weights, about twice the forward), plus the
//! contrastive logits (`2 x global batch x embed_dim` MACs per sample, forward).
//! Gradient checkpointing recomputes the forward once more on the hardware; that is
//! not counted (model FLOPs, as in MFU).

use serde::Serialize;
use tureen_engine::kind::estimate::{
    EstimateDetail, EstimateInputs, OutputSize, StageEstimate, UpstreamOutput, Work,
};
use tureen_engine::kind::{ParamError, Select, StageDecl};

use crate::model::{config_from_json, ClipConfig, ProjKind};
use crate::train::{steps_per_interval, StepRounding};

/// The model a stage trains or produces, as far as planning needs it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModelSummary {
    /// A preset name, or `custom`.
    pub name: String,
    /// Parameters in all.
    pub params: u64,
    /// Parameters of the image tower.
    pub image_params: u64,
    /// Parameters of the text tower.
    pub text_params: u64,
    /// Square input resolution in pixels.
    pub image_size: u64,
    /// Forward multiply-accumulates per sample of the image tower (convolutions,
    /// linears, norms as 5 per element, pooling as 1 per element: fvcore's convention,
    /// which open_clip's model profiles and the model cards use).
    pub image_macs: u64,
    /// Forward multiply-accumulates per sample of the text tower, same convention,
    /// including the attention score and value matmuls.
    pub text_macs: u64,
    /// Joint embedding width (the contrastive logits cost `2 x batch x embed_dim`
    /// MACs per sample).
    pub embed_dim: u64,
    /// Bytes of one checkpoint of this model: weights plus optimizer state.
    pub checkpoint_bytes: u64,
    /// Bytes of the weights alone (what a soup writes).
    pub weights_bytes: u64,
}

/// The training work of a train or rewind stage.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TrainWork {
    /// Global batch size.
    pub batch: u64,
    /// Processes that train the stage together (`nodes x tasks_per_node` of a
    /// data-parallel stage; 1 for a single process).
    pub world: u32,
    /// Rows of each global batch one rank trains on (`batch / world`).
    pub per_rank_batch: u64,
    /// Samples per checkpoint interval as declared.
    pub samples_per_interval: u64,
    /// Optimizer steps per interval (derived from samples and batch).
    pub steps_per_interval: u64,
    /// Intervals of the whole schedule (the lr schedule spans all of them).
    pub intervals: u64,
    /// First interval this stage runs, 1-based (a rewind starts past 1).
    pub first_interval: u64,
    /// Last interval this stage runs, 1-based, inclusive.
    pub last_interval: u64,
    /// Steps this stage runs.
    pub steps: u64,
    /// Samples this stage trains on (`steps x batch`).
    pub samples: u64,
    /// Steps of the whole lr schedule (`steps_per_interval x intervals`).
    pub schedule_steps: u64,
    /// Warmup steps of the lr schedule.
    pub warmup: u64,
    /// Base learning rate.
    pub lr: f64,
    /// Training FLOPs per sample: 3 x the forward FLOPs (forward, then a backward of
    /// about twice the forward), plus the contrastive logits.
    pub flops_per_sample: f64,
    /// The interval after which element 0 of the stage's checkpoint series is saved
    /// (1 when the first checkpoint follows interval 1), so a downstream reference
    /// `stage.checkpoints[i]` is the checkpoint after interval `checkpoints_from + i`.
    pub checkpoints_from: u64,
}

/// What a CLIP stage's estimate carries for the stages downstream and for the plan's
/// renderer (the [`StageEstimate::detail`] of train, rewind, soup and eval stages).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ClipEstimate {
    /// The model the stage trains or produces; `None` when tureen has no config for it
    /// (an `open_clip` stage whose `extra_args` name another `--model`).
    pub model: Option<ModelSummary>,
    /// Present for stages that train.
    pub train: Option<TrainWork>,
}

impl ClipEstimate {
    /// The CLIP detail of `estimate`, if it has one.
    pub fn of(estimate: &StageEstimate) -> Option<&ClipEstimate> {
        estimate.detail::<ClipEstimate>()
    }

    /// The estimate with this CLIP detail: `flops` in all, `outputs` and `notes`.
    pub(crate) fn into_estimate(
        self,
        flops: f64,
        outputs: Vec<OutputSize>,
        notes: Vec<String>,
    ) -> StageEstimate {
        StageEstimate {
            work: self.train.as_ref().map(|t| Work {
                steps: t.steps,
                samples: t.samples,
            }),
            flops,
            outputs,
            notes,
            detail: Some(EstimateDetail::new(self)),
        }
    }
}

/// The model of the first upstream whose estimate has one.
fn upstream_model(inputs: &EstimateInputs<'_>) -> Option<ModelSummary> {
    inputs
        .all()
        .find_map(|u: &UpstreamOutput<'_>| u.estimate.and_then(ClipEstimate::of))
        .and_then(|c| c.model.clone())
}

/// Forward multiply-accumulates per sample of each tower.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ForwardMacs {
    /// The image tower and its projection head ([`image_macs`]).
    pub image: u64,
    /// The text tower and its projection.
    pub text: u64,
}

impl ForwardMacs {
    /// Both towers together: one sample's forward pass, without the logits.
    pub fn total(&self) -> u64 {
        self.image + self.text
    }
}

/// fvcore's count for a LayerNorm over `elements` values (normalize, scale, shift).
fn layer_norm_macs(elements: u64) -> u64 {
    5 * elements
}

/// Forward MACs per sample of the ConvNeXt image tower and its projection head.
pub fn image_macs(cfg: &ClipConfig) -> u64 {
    let v = &cfg.vision;
    let u = |x: i64| x.max(0) as u64;
    let mut side = u(v.image_size / v.patch_size);
    let d0 = u(v.dims[0]);
    // Stem: patch_size x patch_size conv with stride patch_size, then LayerNorm.
    let mut macs = side * side * d0 * 3 * u(v.patch_size * v.patch_size);
    macs += layer_norm_macs(side * side * d0);
    let mut prev = d0;
    for (i, (&depth, &dim)) in v.depths.iter().zip(&v.dims).enumerate() {
        let d = u(dim);
        if i > 0 {
            // Downsample: LayerNorm at the old resolution, then a 2x2 stride-2 conv.
            macs += layer_norm_macs(side * side * prev);
            side /= 2;
            macs += side * side * d * prev * 4;
        }
        let positions = side * side;
        let hidden = u(v.mlp_ratio) * d;
        let block = positions * d * u(v.kernel_size * v.kernel_size) // depthwise conv
            + layer_norm_macs(positions * d)
            + positions * d * hidden // fc1 (Linear or 1x1 conv: same arithmetic)
            + positions * hidden * d; // fc2
        macs += u(depth) * block;
        prev = d;
    }
    // Head: global average pool, LayerNorm on the pooled vector, projection.
    macs += side * side * prev + layer_norm_macs(prev);
    let e = u(cfg.embed_dim);
    macs += match v.proj {
        ProjKind::Linear => prev * e,
        ProjKind::Mlp => prev * 2 * e + 2 * e * e,
    };
    macs
}

/// Forward MACs per sample of the text transformer, over the full context (open_clip
/// pads every caption to `context_length` tokens) and the projection of the pooled
/// end-of-text token.
pub fn text_macs(cfg: &ClipConfig) -> u64 {
    let t = &cfg.text;
    let u = |x: i64| x.max(0) as u64;
    let (n, w) = (u(t.context_length), u(t.width));
    let hidden = u(t.mlp_ratio) * w;
    let layer = layer_norm_macs(n * w) // ln_1
        + n * w * 3 * w // in_proj (q, k, v)
        + 2 * n * n * w // q k^T and attn v, over all heads
        + n * w * w // out_proj
        + layer_norm_macs(n * w) // ln_2
        + 2 * n * w * hidden; // c_fc, c_proj
    u(t.layers) * layer + layer_norm_macs(n * w) + w * u(cfg.embed_dim)
}

/// Forward MACs per sample of both towers.
pub fn forward_macs(cfg: &ClipConfig) -> ForwardMacs {
    ForwardMacs {
        image: image_macs(cfg),
        text: text_macs(cfg),
    }
}

/// MACs per sample of the contrastive logits in the forward pass: each image against
/// every caption of the global batch and each caption against every image.
pub fn logits_macs_per_sample(cfg: &ClipConfig, global_batch: u64) -> u64 {
    2 * global_batch * cfg.embed_dim.max(0) as u64
}

/// Training FLOPs per sample: `3 x 2 x (forward MACs + logits MACs)`.
pub fn train_flops_per_sample(cfg: &ClipConfig, global_batch: u64) -> f64 {
    let macs = forward_macs(cfg).total() + logits_macs_per_sample(cfg, global_batch);
    6.0 * macs as f64
}

/// Bytes per stored parameter: float32 master weights (bf16 autocast computes in bf16
/// but keeps and saves float32 weights, as open_clip does).
pub const WEIGHT_BYTES: u64 = 4;
/// AdamW keeps two float32 moments per parameter (`exp_avg`, `exp_avg_sq`).
pub const ADAMW_STATE_BYTES: u64 = 8;

/// The planning summary of a model config.
pub fn model_summary(cfg: &ClipConfig, name: &str) -> ModelSummary {
    let macs = forward_macs(cfg);
    let params = cfg.num_params();
    ModelSummary {
        name: name.to_string(),
        params,
        image_params: cfg.vision_params(),
        text_params: cfg.text_params(),
        image_size: cfg.vision.image_size.max(0) as u64,
        image_macs: macs.image,
        text_macs: macs.text,
        embed_dim: cfg.embed_dim.max(0) as u64,
        checkpoint_bytes: params * (WEIGHT_BYTES + ADAMW_STATE_BYTES),
        weights_bytes: params * WEIGHT_BYTES,
    }
}

/// The stage's `step_rounding` param (`ceil`, open_clip's and the default, or `floor`).
fn step_rounding(params: &Params) -> Result<StepRounding, ParamError> {
    match params.get("step_rounding") {
        None | Some(serde_json::Value::Null) => Ok(StepRounding::default()),
        Some(v) => serde_json::from_value(v.clone()).map_err(|_| {
            ParamError::param(
                "step_rounding",
                format!("expected `ceil` or `floor`, got {v}"),
            )
        }),
    }
}

// ----- reading params -------------------------------------------------------------

type Params = serde_json::Map<String, serde_json::Value>;

fn param_u64(params: &Params, key: &str) -> Result<Option<u64>, ParamError> {
    match params.get(key) {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(v) => v
            .as_u64()
            .or_else(|| {
                v.as_f64()
                    .filter(|f| f.fract() == 0.0 && *f >= 0.0)
                    .map(|f| f as u64)
            })
            .map(Some)
            .ok_or_else(|| {
                ParamError::param(key, format!("expected a non-negative integer, got {v}"))
            }),
    }
}

fn param_f64(params: &Params, key: &str) -> Result<Option<f64>, ParamError> {
    match params.get(key) {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(v) => v
            .as_f64()
            .map(Some)
            .ok_or_else(|| ParamError::param(key, format!("expected a number, got {v}"))),
    }
}

fn required<T>(value: Option<T>, key: &str) -> Result<T, ParamError> {
    value.ok_or_else(|| ParamError::param(key, "required"))
}

/// The model config named by `params.model` (preset name, preset + overrides, or a
/// full config) and the name to print for it.
pub fn model_from_params(params: &Params) -> Result<(ClipConfig, String), ParamError> {
    let value = params
        .get("model")
        .ok_or_else(|| ParamError::param("model", "required"))?;
    let cfg = config_from_json(value).map_err(crate::params::model_error)?;
    let name = match value {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Object(m) => match m.get("preset").and_then(|p| p.as_str()) {
            Some(p) => format!("{p} (modified)"),
            None => "custom".to_string(),
        },
        _ => "custom".to_string(),
    };
    Ok((cfg, name))
}

impl TrainWork {
    /// The same work shared out among `world` ranks.
    fn on_ranks(self, world: u32) -> TrainWork {
        let world = world.max(1);
        TrainWork {
            world,
            per_rank_batch: self.batch / u64::from(world),
            ..self
        }
    }
}

/// The schedule and work of a training run over intervals `first..=last` (1-based).
#[allow(clippy::too_many_arguments)]
fn train_work(
    cfg: &ClipConfig,
    batch: u64,
    samples_per_interval: u64,
    rounding: StepRounding,
    intervals: u64,
    first: u64,
    warmup: u64,
    lr: f64,
) -> TrainWork {
    let spi = steps_per_interval(samples_per_interval, batch, rounding);
    let run_intervals = intervals + 1 - first;
    let steps = spi * run_intervals;
    TrainWork {
        batch,
        world: 1,
        per_rank_batch: batch,
        samples_per_interval,
        steps_per_interval: spi,
        intervals,
        first_interval: first,
        last_interval: intervals,
        steps,
        samples: steps * batch,
        schedule_steps: spi * intervals,
        warmup,
        lr,
        flops_per_sample: train_flops_per_sample(cfg, batch),
        checkpoints_from: first,
    }
}

/// The estimate of a stage that trains `cfg` (`name`) for `work`: its checkpoints and FLOPs.
pub(crate) fn train_estimate(cfg: &ClipConfig, name: &str, work: TrainWork) -> StageEstimate {
    let model = model_summary(cfg, name);
    let run_intervals = work.last_interval + 1 - work.first_interval;
    let outputs = vec![OutputSize {
        name: "checkpoints".into(),
        count: run_intervals,
        bytes_each: model.checkpoint_bytes,
    }];
    let flops = work.flops_per_sample * work.samples as f64;
    let notes = vec![format!(
        "checkpoint = params x ({WEIGHT_BYTES} B float32 weights + {ADAMW_STATE_BYTES} B AdamW moments), plus a few kB of state"
    )];
    ClipEstimate {
        model: Some(model),
        train: Some(work),
    }
    .into_estimate(flops, outputs, notes)
}

/// Estimate of a `train` stage. Params read (those of
/// [`TrainParams`](crate::train::TrainParams)): `model`, `batch_size`,
/// `samples_per_interval`, `intervals` (required), `warmup` (default 0), `lr`,
/// `step_rounding` (default `ceil`).
pub fn estimate_train(
    decl: &StageDecl<'_>,
    _inputs: &EstimateInputs<'_>,
) -> Result<Option<StageEstimate>, ParamError> {
    train_estimate_from(decl.params, decl.world).map(Some)
}

fn train_estimate_from(params: &Params, world: u32) -> Result<StageEstimate, ParamError> {
    let (cfg, name) = model_from_params(params)?;
    let batch = required(param_u64(params, "batch_size")?, "batch_size")?;
    let spi = required(
        param_u64(params, "samples_per_interval")?,
        "samples_per_interval",
    )?;
    let intervals = required(param_u64(params, "intervals")?, "intervals")?;
    if batch == 0 || spi == 0 || intervals == 0 {
        return Err(ParamError::params(
            "batch_size, samples_per_interval and intervals must be positive",
        ));
    }
    let warmup = param_u64(params, "warmup")?.unwrap_or(0);
    let lr = param_f64(params, "lr")?.unwrap_or(0.0);
    let work = train_work(
        &cfg,
        batch,
        spi,
        step_rounding(params)?,
        intervals,
        1,
        warmup,
        lr,
    )
    .on_ranks(world);
    Ok(train_estimate(&cfg, &name, work))
}

/// Estimate of a `rewind` stage restarting from one checkpoint of an upstream train
/// (or rewind) stage, its input `from` (e.g. `core.checkpoints[229]`, the checkpoint
/// after interval 230). The model and, where this stage does not set them,
/// `samples_per_interval`, `intervals`, `warmup`, `lr` and `batch_size` come from the
/// upstream's estimate.
pub fn estimate_rewind(
    decl: &StageDecl<'_>,
    inputs: &EstimateInputs<'_>,
) -> Result<Option<StageEstimate>, ParamError> {
    rewind_estimate_from(decl.params, decl.world, inputs, "from").map(Some)
}

fn rewind_estimate_from(
    params: &Params,
    world: u32,
    inputs: &EstimateInputs<'_>,
    input: &str,
) -> Result<StageEstimate, ParamError> {
    let err = |m: String| ParamError::input(input, m);
    let from = match inputs.get(input) {
        [one] => one,
        [] => return Err(err("expected a checkpoint of another stage".into())),
        _ => return Err(err("expected one checkpoint".into())),
    };
    let upstream = from.estimate.ok_or_else(|| {
        err(format!(
            "stage `{}` ({}) has no estimate to rewind from",
            from.stage, from.kind
        ))
    })?;
    let Some(ClipEstimate {
        model,
        train: Some(up),
    }) = ClipEstimate::of(upstream)
    else {
        return Err(err(format!(
            "stage `{}` does not train a model",
            from.stage
        )));
    };
    let model = model.as_ref().ok_or_else(|| {
        err(format!(
            "stage `{}` trains a model tureen has no config for; give this stage `model:`",
            from.stage
        ))
    })?;
    let series_len = up.last_interval + 1 - up.first_interval;
    let index = match from.select {
        Select::Index(i) if i >= 0 => i as u64,
        Select::Index(i) => (series_len as i64 + i).max(0) as u64,
        _ => {
            return Err(err(format!(
                "expected one checkpoint, e.g. `{}.{}[230]`",
                from.stage, from.output
            )))
        }
    };
    // The checkpoint after interval k; the rewind runs k+1 ..= intervals.
    let resumed_after = up.checkpoints_from + index;
    let (cfg, name) = match params.get("model") {
        Some(_) => model_from_params(params)?,
        None => model_from_name(model)?,
    };
    let batch = required(
        param_u64(params, "batch_size")?.or(Some(up.batch)),
        "batch_size",
    )?;
    let spi = param_u64(params, "samples_per_interval")?.unwrap_or(up.samples_per_interval);
    let intervals = param_u64(params, "intervals")?.unwrap_or(up.intervals);
    if resumed_after >= intervals {
        return Err(err(format!(
            "the checkpoint after interval {resumed_after} leaves nothing of {intervals} intervals to redo"
        )));
    }
    let warmup = param_u64(params, "warmup")?.unwrap_or(up.warmup);
    let lr = param_f64(params, "lr")?.unwrap_or(up.lr);
    let work = train_work(
        &cfg,
        batch,
        spi,
        step_rounding(params)?,
        intervals,
        resumed_after + 1,
        warmup,
        lr,
    )
    .on_ranks(world);
    Ok(train_estimate(&cfg, &name, work))
}

/// The config of an upstream model summary (by preset name).
fn model_from_name(model: &ModelSummary) -> Result<(ClipConfig, String), ParamError> {
    ClipConfig::preset(&model.name)
        .map(|cfg| (cfg, model.name.clone()))
        .ok_or_else(|| {
            ParamError::param(
                "model",
                format!(
                    "required (the upstream model `{}` is not a preset)",
                    model.name
                ),
            )
        })
}

/// Estimate of a soup: one weights file of the ingredients' model, in the dtype of
/// `params.out_dtype` (default: the ingredients', float32 for trained checkpoints).
/// `None` when no ingredient has an estimate (e.g. files from outside the pipeline).
pub fn estimate_soup(
    decl: &StageDecl<'_>,
    inputs: &EstimateInputs<'_>,
) -> Result<Option<StageEstimate>, ParamError> {
    let Some(model) = upstream_model(inputs) else {
        return Ok(None);
    };
    let bytes_per_param = match decl.params.get("out_dtype").and_then(|d| d.as_str()) {
        Some("bfloat16" | "float16") => 2,
        Some("float64") => 8,
        _ => WEIGHT_BYTES,
    };
    let ingredients = inputs.all().count() as u64;
    let weights_bytes = model.params * bytes_per_param;
    let flops = (2 * ingredients * model.params) as f64; // a multiply-add per parameter and ingredient
    let outputs = vec![OutputSize {
        name: "soup".into(),
        count: 1,
        bytes_each: weights_bytes,
    }];
    let model = ModelSummary {
        weights_bytes,
        ..model
    };
    Ok(Some(
        ClipEstimate {
            model: Some(model),
            train: None,
        }
        .into_estimate(flops, outputs, vec![]),
    ))
}

/// Estimate of an `eval` stage: the text tower runs once per (class, template) pair to
/// build the zero-shot classifier, the image tower once per image. Class and template
/// counts are the line counts of `params.classnames` / `params.templates`; the image
/// count is the number of image files under `params.data` when that is a directory
/// here. Counts that cannot be known are left out and said so in a note.
pub fn estimate_eval(
    decl: &StageDecl<'_>,
    inputs: &EstimateInputs<'_>,
) -> Result<Option<StageEstimate>, ParamError> {
    let Some(model) = upstream_model(inputs) else {
        return Ok(None);
    };
    let path = |key: &str| {
        decl.params
            .get(key)
            .and_then(|v| v.as_str())
            .map(|p| inputs.workspace.join(p))
    };
    let lines = |key: &str| {
        let text = std::fs::read_to_string(path(key)?).ok()?;
        Some(text.lines().filter(|l| !l.trim().is_empty()).count() as u64)
    };
    let mut flops = 0.0;
    let mut notes = Vec::new();
    match (lines("classnames"), lines("templates")) {
        (Some(c), Some(t)) => {
            flops += 2.0 * (c * t) as f64 * model.text_macs as f64;
            notes.push(format!(
                "zero-shot classifier of {c} classes x {t} templates through the text tower"
            ));
        }
        _ => notes.push(
            "classifier text embeddings not counted (class or template file not readable here)"
                .into(),
        ),
    }
    match path("data")
        .filter(|p| p.is_dir())
        .map(|p| count_images(&p))
    {
        Some(n) => flops += 2.0 * n as f64 * model.image_macs as f64,
        None => {
            notes.push("image forward passes not counted (`data` is not a directory here)".into())
        }
    }
    Ok(Some(
        ClipEstimate {
            model: Some(model),
            train: None,
        }
        .into_estimate(flops, vec![], notes),
    ))
}

/// Image files under `dir`, recursively (the image-folder layout of ImageNet's val set).
fn count_images(dir: &std::path::Path) -> u64 {
    let mut n = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().and_then(|x| x.to_str()).is_some_and(|x| {
                matches!(
                    x.to_ascii_lowercase().as_str(),
                    "jpg" | "jpeg" | "png" | "webp"
                )
            }) {
                n += 1;
            }
        }
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    fn preset(name: &str) -> ClipConfig {
        ClipConfig::preset(name).unwrap()
    }

    #[test]
    fn xxlarge_macs_match_the_model_card() {
        // Card: image 198.09 GMACs, text 23.57 GMACs, total 221.66 at 256 px.
        let m = forward_macs(&preset("convnext_xxlarge"));
        assert_eq!(m.image, 198_091_422_720);
        assert_eq!(format!("{:.2}", m.image as f64 / 1e9), "198.09");
        assert_eq!(format!("{:.2}", m.text as f64 / 1e9), "23.57");
        assert_eq!(format!("{:.2}", m.total() as f64 / 1e9), "221.66");
    }

    #[test]
    fn xxlarge_320_image_macs_match_the_card() {
        // Card row convnext_xxlarge_320: image 309.52 GMACs.
        let m = forward_macs(&preset("convnext_xxlarge_320"));
        assert_eq!(format!("{:.2}", m.image as f64 / 1e9), "309.52");
    }

    #[test]
    fn training_flops_are_six_times_forward_macs_plus_logits() {
        let cfg = preset("convnext_xxlarge");
        let f = train_flops_per_sample(&cfg, 81_920);
        let expected = 6.0 * (forward_macs(&cfg).total() + 2 * 81_920 * 1024) as f64;
        assert_eq!(f, expected);
        assert!((f / 1e12 - 1.331).abs() < 0.001, "{f}");
    }
}
