//! What the `train` and `rewind` stage kinds share: their params, and one `run` that
//! wires a [`Trainer`] to the stage context (data input, journal, log, cancel flag).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::Ordering;

use anyhow::Context as _;
use serde::Deserialize;
use serde_json::{Map, Value};
use tureen_engine::kind::{InputValue, OutputDecl, OutputShape, Produced, StageContext, StageDecl};

use super::data::{DataSource, LoaderSource, SyntheticSource};
use super::trainer::{
    resolve_device, Precision, Start, TrainConfig, TrainError, TrainHooks, Trainer,
};
use super::{AdamWConfig, StepRounding};
use crate::checkpoint::{TrainCheckpoint, MODEL_FILE};
use crate::data::DataParams;
use crate::model::{config_from_json, ClipConfig};

/// The params of `kind: train` (and, with [`RewindOverrides`] rules, `kind: rewind`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainParams {
    /// A preset name, `{preset: ..., <overrides>}` or a full model config. Optional for
    /// `rewind` (the checkpoint's config is used).
    pub model: Option<Value>,
    /// The webdataset (see [`DataParams`]), or the string `synthetic` for random
    /// tensors (benchmarks and smoke tests; no data input needed).
    pub data: Value,
    pub batch_size: u64,
    pub micro_batch: Option<u64>,
    pub samples_per_interval: u64,
    pub intervals: u64,
    pub lr: f64,
    #[serde(default)]
    pub warmup: u64,
    pub beta1: Option<f64>,
    pub beta2: Option<f64>,
    pub eps: Option<f64>,
    pub weight_decay: Option<f64>,
    /// Gradient-norm clipping; absent or null: none.
    pub grad_clip_norm: Option<f64>,
    #[serde(default)]
    pub seed: u64,
    #[serde(default = "default_device")]
    pub device: String,
    #[serde(default = "default_precision")]
    pub precision: Precision,
    /// libtorch intra-op threads on the CPU (default: libtorch's choice).
    pub threads: Option<i32>,
    #[serde(default = "default_log_every")]
    pub log_every: u64,
    #[serde(default)]
    pub step_rounding: StepRounding,
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
    Train,
    Rewind,
}

impl TrainParams {
    pub fn from_params(params: &Map<String, Value>, mode: Mode) -> Result<TrainParams, String> {
        let p: TrainParams = serde_json::from_value(Value::Object(params.clone()))
            .map_err(|e| format!("params: {e}"))?;
        if mode == Mode::Train && p.model.is_none() {
            return Err(
                "params.model: required (a preset such as convnext_atto_64, or a config)".into(),
            );
        }
        if mode == Mode::Rewind {
            for (name, v) in [
                ("beta1", p.beta1),
                ("beta2", p.beta2),
                ("eps", p.eps),
                ("weight_decay", p.weight_decay),
            ] {
                if v.is_some() {
                    return Err(format!(
                        "params.{name}: a rewind takes AdamW's betas, eps and weight decay from the checkpoint"
                    ));
                }
            }
        }
        if let Some(m) = &p.model {
            config_from_json(m).map_err(|e| format!("params.{e}"))?;
        }
        p.data_spec()?;
        resolve_device_syntax(&p.device)?;
        if let Some(t) = p.threads {
            if t < 1 {
                return Err("params.threads: must be at least 1".into());
            }
        }
        Ok(p)
    }

    fn data_spec(&self) -> Result<Option<DataParams>, String> {
        match &self.data {
            Value::String(s) if s == "synthetic" => Ok(None),
            // A bare string is a shard pattern with default loader settings.
            Value::String(s) => serde_json::from_value(serde_json::json!({ "shards": s }))
                .map(Some)
                .map_err(|e| format!("params.data: {e}")),
            v => serde_json::from_value(v.clone())
                .map(Some)
                .map_err(|e| format!("params.data: {e}")),
        }
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

fn resolve_device_syntax(spec: &str) -> Result<(), String> {
    match spec {
        "auto" | "cpu" | "cuda" => Ok(()),
        s if s
            .strip_prefix("cuda:")
            .is_some_and(|n| n.parse::<usize>().is_ok()) =>
        {
            Ok(())
        }
        s => Err(format!(
            "params.device: expected auto, cpu, cuda or cuda:N, got `{s}`"
        )),
    }
}

/// `validate` of both kinds.
pub fn validate(decl: &StageDecl<'_>, mode: Mode) -> Result<(), String> {
    let p = TrainParams::from_params(decl.params, mode)?;
    let allowed: &[&str] = match mode {
        Mode::Train => &["data"],
        Mode::Rewind => &["from", "data"],
    };
    if let Some(other) = decl.input_names.iter().find(|n| !allowed.contains(n)) {
        return Err(format!(
            "inputs.{other}: unknown input (expected {})",
            allowed.join(", ")
        ));
    }
    if mode == Mode::Rewind && !decl.input_names.contains(&"from") {
        return Err("inputs.from: required (a checkpoint, e.g. core.checkpoints[230])".into());
    }
    // Shards given as absolute paths or `pipe:` commands (LAION on object storage)
    // need no dataset directory to be relative to.
    let needs_base = p.data_spec()?.is_some_and(|d| shards_need_base_dir(&d));
    if needs_base && !decl.input_names.contains(&"data") {
        return Err(
            "inputs.data: required (the dataset directory the shard patterns are relative to)"
                .into(),
        );
    }
    if let Some(m) = &p.model {
        let cfg = config_from_json(m).map_err(|e| format!("params.{e}"))?;
        p.config(cfg).validate().map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// Whether some shard pattern is a relative path (resolved against the `data` input);
/// absolute paths and `pipe:` commands stand on their own.
fn shards_need_base_dir(d: &DataParams) -> bool {
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

struct ContextHooks<'c, 'a> {
    ctx: &'c mut StageContext<'a>,
    committed: Vec<String>,
}

impl TrainHooks for ContextHooks<'_, '_> {
    fn metrics(&mut self, record: &Value) {
        self.ctx.log.metrics(record);
        if let (Some(step), Some(loss)) = (record.get("step"), record.get("loss")) {
            let lr = record.get("lr").and_then(Value::as_f64).unwrap_or(0.0);
            let sps = record
                .get("samples_per_s")
                .and_then(Value::as_f64)
                .unwrap_or(0.0);
            self.ctx.log.line(&format!(
                "step {step} loss {loss:.5} lr {lr:.3e} {sps:.1} samples/s"
            ));
        }
    }
    fn progress(&mut self, done: u64, total: u64) {
        self.ctx.log.progress(done, total);
    }
    fn checkpoint(&mut self, interval: u64, dir: &Path) -> Result<(), String> {
        let artifact = self.ctx.journal.commit(dir).map_err(|e| format!("{e:#}"))?;
        self.ctx.log.line(&format!(
            "checkpoint interval {interval}: {}",
            artifact.digest
        ));
        // The store has it now; don't keep a second copy in the work directory.
        if dir.exists() {
            let _ = std::fs::remove_dir_all(dir);
        }
        self.committed.push(artifact.digest);
        Ok(())
    }
    fn cancelled(&self) -> bool {
        self.ctx.cancel.load(Ordering::SeqCst)
    }
}

/// `run` of both kinds.
pub fn run(ctx: &mut StageContext<'_>, mode: Mode) -> anyhow::Result<BTreeMap<String, Produced>> {
    let p = TrainParams::from_params(ctx.params, mode).map_err(anyhow::Error::msg)?;
    let device = resolve_device(&p.device).map_err(anyhow::Error::msg)?;
    if let Some(t) = p.threads {
        tch::set_num_threads(t);
    }

    // Where to start: our own latest committed checkpoint wins (resume: latest).
    let journal = ctx.journal.committed();
    let from = match (mode, ctx.inputs.get("from")) {
        (Mode::Rewind, Some(InputValue::One(a))) => Some(a.path.clone()),
        (Mode::Rewind, Some(InputValue::Series(_))) => {
            anyhow::bail!("inputs.from: expected one checkpoint (e.g. core.checkpoints[230]), got a whole series")
        }
        (Mode::Rewind, None) => anyhow::bail!("inputs.from: missing"),
        _ => None,
    };
    let start = match (journal.last(), &from) {
        (Some(last), _) => {
            ctx.log.line(&format!(
                "resuming from committed checkpoint {}",
                last.digest
            ));
            Start::Resume(last.path.clone())
        }
        (None, Some(dir)) => Start::Rewind(dir.clone()),
        (None, None) => Start::Fresh,
    };

    let model = match (&p.model, &from) {
        (Some(m), _) => config_from_json(m).map_err(|e| anyhow::anyhow!("params.{e}"))?,
        (None, Some(dir)) => TrainCheckpoint::read_state(dir)?.model,
        (None, None) => anyhow::bail!("params.model: required"),
    };
    let config = p.config(model);
    let mut data = data_source(ctx, &p, &config)?;

    let mut trainer = Trainer::new(config, device, &start)?;
    ctx.log.line(&format!(
        "{} on {:?}: {} params, batch {}, {} steps/interval, intervals {}..{}, {} precision",
        match mode {
            Mode::Train => "train",
            Mode::Rewind => "rewind",
        },
        device,
        trainer.config.model.num_params(),
        trainer.config.batch_size,
        trainer.config.steps_per_interval(),
        trainer.interval,
        trainer.config.intervals,
        if trainer.uses_bf16() { "bf16" } else { "fp32" },
    ));
    let work_dir = ctx.work_dir.to_path_buf();
    let mut hooks = ContextHooks {
        ctx,
        committed: Vec::new(),
    };
    let result = trainer.run(data.as_mut(), &work_dir, &mut hooks);
    let committed = hooks.committed;
    match result {
        Ok(_) => {}
        Err(TrainError::Cancelled(step)) => anyhow::bail!("cancelled at step {step}"),
        Err(e) => return Err(e.into()),
    }

    // Every checkpoint of this stage: the ones committed by earlier attempts, then ours.
    let last = ctx.journal.committed();
    debug_assert!(last.len() >= committed.len());
    let final_dir = last
        .last()
        .map(|a| a.path.clone())
        .context("training produced no checkpoint")?;
    let final_file = work_dir.join("final.safetensors");
    std::fs::copy(final_dir.join(MODEL_FILE), &final_file).with_context(|| {
        format!(
            "copying {} to {}",
            final_dir.join(MODEL_FILE).display(),
            final_file.display()
        )
    })?;
    let series = last
        .iter()
        .map(|a| Produced::Stored(a.digest.clone()))
        .collect();
    Ok(BTreeMap::from([
        ("checkpoints".to_string(), Produced::Series(series)),
        ("final".to_string(), Produced::Path(final_file)),
    ]))
}

fn data_source(
    ctx: &StageContext<'_>,
    p: &TrainParams,
    config: &TrainConfig,
) -> anyhow::Result<Box<dyn DataSource>> {
    let m = &config.model;
    match p.data_spec().map_err(anyhow::Error::msg)? {
        None => Ok(Box::new(SyntheticSource {
            seed: config.seed,
            image_size: m.vision.image_size,
            context_length: m.text.context_length,
            vocab_size: m.text.vocab_size,
            fixed: false,
        })),
        Some(dp) => {
            let base = match ctx.inputs.get("data") {
                Some(InputValue::One(a)) => a.path.clone(),
                Some(InputValue::Series(_)) => {
                    anyhow::bail!("inputs.data: expected one dataset directory, got a series")
                }
                None if !shards_need_base_dir(&dp) => ctx.workspace.to_path_buf(),
                None => anyhow::bail!("inputs.data: required"),
            };
            let loader = dp
                .loader_config(
                    &base,
                    config.batch_size as usize,
                    m.vision.image_size as u32,
                    m.text.context_length as usize,
                    config.seed,
                )
                .map_err(|e| anyhow::anyhow!("params.data.tokenizer: {e}"))?;
            let vocab = loader.tokenizer.vocab_size() as i64;
            let eot = loader.tokenizer.eot_id();
            if vocab > m.text.vocab_size {
                anyhow::bail!(
                    "params.model.text.vocab_size: {} is smaller than the tokenizer's vocabulary ({vocab})",
                    m.text.vocab_size
                );
            }
            if eot != vocab - 1 {
                anyhow::bail!("params.data.tokenizer: its end-of-text id ({eot}) must be its largest id (the text tower pools there)");
            }
            Ok(Box::new(LoaderSource {
                config: loader,
                steps_per_interval: config.steps_per_interval(),
            }))
        }
    }
}
