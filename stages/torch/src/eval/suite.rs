//! One evaluation run as configured by an `eval` stage's params: load a checkpoint,
//! run zero-shot classification and/or retrieval, return the metrics JSON. Shared by
//! the `eval` kind and the greedy soup's held-out scorer.

use std::path::Path;

use anyhow::Context as _;
use serde_json::{json, Value};
use tureen_stages::eval::EvalParams;

use super::dataset::EvalSource;
use super::{retrieval, zeroshot};
use crate::model::ClipConfig;

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
