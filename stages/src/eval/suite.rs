//! One evaluation run as configured by an `eval` stage's params: load a checkpoint,
//! run zero-shot classification and/or retrieval, return the metrics JSON. Shared by
//! the `eval` kind and the greedy soup's held-out scorer.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use serde::Deserialize;
use serde_json::{json, Value};

use super::dataset::EvalSource;
use super::{retrieval, zeroshot};
use crate::model::ClipConfig;
use crate::tokenizer::TokenizerSpec;

/// The params of an eval stage.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvalParams {
    /// Zero-shot classification set: an image folder or a shard pattern with `.cls`.
    #[serde(default)]
    pub data: Option<String>,
    /// Class names file, one per line, in label order.
    #[serde(default)]
    pub classnames: Option<String>,
    /// Prompt templates file, one per line, `{c}` (or `{}`) = class name.
    #[serde(default)]
    pub templates: Option<String>,
    /// Retrieval set: shards with `.txt` holding one caption per line.
    #[serde(default)]
    pub retrieval: Option<String>,
    #[serde(default)]
    pub tokenizer: TokenizerSpec,
    /// Model config (preset name or object); default: the one embedded in the checkpoint.
    #[serde(default)]
    pub model: Option<Value>,
    #[serde(default = "default_batch_size")]
    pub batch_size: usize,
    #[serde(default = "default_workers")]
    pub workers: usize,
    #[serde(default = "default_device")]
    pub device: String,
}

fn default_batch_size() -> usize {
    64
}
fn default_workers() -> usize {
    2
}
fn default_device() -> String {
    "auto".into()
}

impl EvalParams {
    /// Parses and checks params; errors name the param.
    pub fn from_params(params: &serde_json::Map<String, Value>) -> Result<Self, String> {
        let parsed: EvalParams = serde_json::from_value(Value::Object(params.clone()))
            .map_err(|e| format!("params: {e}"))?;
        if parsed.data.is_none() && parsed.retrieval.is_none() {
            return Err("params: give `data` (zero-shot classification) and/or `retrieval`".into());
        }
        if parsed.data.is_some() {
            if parsed.classnames.is_none() {
                return Err(
                    "params.classnames: required with `data` (a file with one class name per line)"
                        .into(),
                );
            }
            if parsed.templates.is_none() {
                return Err(
                    "params.templates: required with `data` (a file with one template per line)"
                        .into(),
                );
            }
        }
        if parsed.batch_size == 0 {
            return Err("params.batch_size: must be at least 1".into());
        }
        parse_device(&parsed.device)?;
        if let Some(model) = &parsed.model {
            crate::model::config_from_json(model).map_err(|e| format!("params.{e}"))?;
        }
        Ok(parsed)
    }
}

/// `auto` (CUDA when available), `cpu`, `cuda` or `cuda:N`.
pub fn parse_device(name: &str) -> Result<tch::Device, String> {
    match name {
        "auto" => Ok(tch::Device::cuda_if_available()),
        "cpu" => Ok(tch::Device::Cpu),
        "cuda" => Ok(tch::Device::Cuda(0)),
        other => match other.strip_prefix("cuda:").and_then(|n| n.parse().ok()) {
            Some(n) => Ok(tch::Device::Cuda(n)),
            None => Err(format!(
                "params.device: expected auto, cpu, cuda or cuda:N, got {other:?}"
            )),
        },
    }
}

/// The weights file of a model input: the file itself, or `model.safetensors` inside a
/// training-checkpoint directory.
pub fn weights_path(path: &Path) -> PathBuf {
    if path.is_dir() {
        path.join(crate::checkpoint::MODEL_FILE)
    } else {
        path.to_path_buf()
    }
}

/// Runs the configured evaluations of the checkpoint at `model_path`; returns the
/// metrics JSON. `log` receives one human-readable line per result.
pub fn evaluate(
    params: &EvalParams,
    model_path: &Path,
    base_dir: &Path,
    device: tch::Device,
    log: &mut dyn FnMut(&str),
) -> anyhow::Result<Value> {
    let cfg: Option<ClipConfig> = match &params.model {
        Some(value) => {
            Some(crate::model::config_from_json(value).map_err(|e| anyhow::anyhow!("params.{e}"))?)
        }
        None => None,
    };
    let (_vs, model) = crate::checkpoint::load_model(model_path, cfg.as_ref(), device)
        .with_context(|| format!("loading model {}", model_path.display()))?;
    let cfg = model.config().clone();
    let tokenizer = params.tokenizer.build(base_dir)?;
    anyhow::ensure!(
        tokenizer.vocab_size() as i64 <= cfg.text.vocab_size,
        "tokenizer has {} ids but the model's text vocab_size is {}",
        tokenizer.vocab_size(),
        cfg.text.vocab_size
    );
    let context = cfg.text.context_length as usize;
    let image_size = cfg.vision.image_size as u32;
    let mut report = serde_json::Map::new();
    if let Some(data) = &params.data {
        let names = zeroshot::read_lines(
            &base_dir.join(params.classnames.as_deref().unwrap_or_default()),
            "class names",
        )?;
        let templates = zeroshot::read_lines(
            &base_dir.join(params.templates.as_deref().unwrap_or_default()),
            "templates",
        )?;
        let classifier = zeroshot::classifier(&model, &tokenizer, context, &names, &templates);
        let source = EvalSource::detect(data, base_dir);
        if let EvalSource::ImageFolder(root) = &source {
            let folders = super::dataset::list_image_folder(root)?.classes;
            anyhow::ensure!(
                folders.len() == names.len(),
                "{} has {} class folders but {} lists {} class names",
                root.display(),
                folders.len(),
                params.classnames.as_deref().unwrap_or_default(),
                names.len()
            );
        }
        let m = zeroshot::evaluate(
            &model,
            &classifier,
            &source,
            image_size,
            params.batch_size,
            params.workers,
        )
        .with_context(|| format!("zero-shot evaluation on {data}"))?;
        log(&format!(
            "zero-shot {data}: top-1 {:.4}, top-5 {:.4}, mean per-class recall {:.4} ({} images, {} classes)",
            m.top1, m.top5, m.mean_per_class_recall, m.samples, names.len()
        ));
        let mut section = serde_json::to_value(m)?;
        section["classes"] = json!(names.len());
        report.insert("zeroshot".into(), section);
    }
    if let Some(shards) = &params.retrieval {
        let source = EvalSource::WebDataset {
            shards: shards.clone(),
            base_dir: base_dir.to_path_buf(),
        };
        let m = retrieval::evaluate(
            &model,
            &tokenizer,
            context,
            &source,
            image_size,
            params.batch_size,
            params.workers,
        )
        .with_context(|| format!("retrieval evaluation on {shards}"))?;
        log(&format!(
            "retrieval {shards}: image->text R@1/5/10 {:.4}/{:.4}/{:.4}, text->image R@1/5/10 {:.4}/{:.4}/{:.4}",
            m.image_to_text_r1, m.image_to_text_r5, m.image_to_text_r10, m.text_to_image_r1, m.text_to_image_r5, m.text_to_image_r10
        ));
        report.insert("retrieval".into(), serde_json::to_value(m)?);
    }
    Ok(Value::Object(report))
}
