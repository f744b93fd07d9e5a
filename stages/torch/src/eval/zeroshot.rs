//! Zero-shot classification: a classifier built from class names x prompt templates.

use std::path::Path;

use tch::{Kind, Tensor};

use super::dataset::{for_each_batch, EvalSource};
use super::metrics::{classification, ClassificationMetrics};
use super::{l2_normalize, to_vec_f32, Encoder};
use crate::tokenizer::Tokenizer;

/// Fills a template: `{c}` or `{}` is replaced by the class name (open_clip's templates
/// use both spellings).
pub fn fill_template(template: &str, class_name: &str) -> String {
    if template.contains("{c}") {
        template.replace("{c}", class_name)
    } else {
        template.replace("{}", class_name)
    }
}

/// Reads a list file: one entry per non-empty line, surrounding whitespace trimmed.
pub fn read_lines(path: &Path, what: &str) -> anyhow::Result<Vec<String>> {
    use anyhow::Context;
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading {what} file {}", path.display()))?;
    let lines: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect();
    anyhow::ensure!(!lines.is_empty(), "{what} file {} is empty", path.display());
    Ok(lines)
}

/// The `[classes, D]` zero-shot weights: for each class, every template filled with the
/// class name is embedded and L2-normalised; the mean over templates is normalised again.
pub fn classifier(
    encoder: &dyn Encoder,
    tokenizer: &Tokenizer,
    context_length: usize,
    class_names: &[String],
    templates: &[String],
) -> Tensor {
    let rows: Vec<Tensor> = class_names
        .iter()
        .map(|name| {
            let ids: Vec<i64> = templates
                .iter()
                .flat_map(|t| tokenizer.encode(&fill_template(t, name), context_length))
                .collect();
            let tokens = Tensor::from_slice(&ids)
                .view([templates.len() as i64, context_length as i64])
                .to_device(encoder.device());
            let embeddings = l2_normalize(&encoder.encode_text(&tokens));
            l2_normalize(&embeddings.mean_dim([0i64].as_slice(), true, Kind::Float))
        })
        .collect();
    Tensor::cat(&rows, 0)
}

/// Zero-shot metrics of `encoder` on `source` (which must carry class labels).
pub fn evaluate(
    encoder: &dyn Encoder,
    classifier: &Tensor,
    source: &EvalSource,
    image_size: u32,
    batch_size: usize,
    workers: usize,
) -> anyhow::Result<ClassificationMetrics> {
    let classes = classifier.size()[0] as usize;
    let mut scores: Vec<f32> = Vec::new();
    let mut labels: Vec<i64> = Vec::new();
    let weights = classifier.to_device(encoder.device()).to_kind(Kind::Float);
    for_each_batch(source, image_size, batch_size, workers, |batch| {
        let batch_labels = batch.labels.ok_or_else(|| {
            anyhow::anyhow!("zero-shot evaluation needs class labels (`.cls` members)")
        })?;
        let features =
            l2_normalize(&encoder.encode_image(&batch.images.to_device(encoder.device())));
        scores.extend(to_vec_f32(&features.matmul(&weights.tr())));
        labels.extend(batch_labels);
        Ok(())
    })?;
    if let Some((i, l)) = labels
        .iter()
        .enumerate()
        .find(|(_, &l)| l < 0 || l as usize >= classes)
    {
        anyhow::bail!("sample {i} has label {l}, but there are {classes} class names");
    }
    Ok(classification(&scores, classes, &labels)?)
}
