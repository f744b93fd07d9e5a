//! Metrics as in CLIP_benchmark, on plain score matrices (row-major `f32`).
//!
//! Ranking: an item's rank is the number of items scored strictly higher, plus the
//! number scored equal that come earlier in index order (a stable descending sort), so
//! ties never depend on the sort implementation.

use serde::Serialize;

/// Zero-shot classification metrics, as fractions in [0, 1].
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ClassificationMetrics {
    /// Fraction of samples whose label has the highest score.
    pub top1: f64,
    /// Fraction whose label is among the 5 highest scores (all classes if fewer than 5).
    pub top5: f64,
    /// Recall averaged over the classes that occur in the labels (balanced accuracy).
    pub mean_per_class_recall: f64,
    /// Number of samples scored.
    pub samples: usize,
}

/// Image<->text retrieval recall@k, as fractions in [0, 1].
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct RetrievalMetrics {
    /// Fraction of images with one of their captions among the 1 best-scored texts.
    pub image_to_text_r1: f64,
    /// Fraction of images with one of their captions among the 5 best-scored texts.
    pub image_to_text_r5: f64,
    /// Fraction of images with one of their captions among the 10 best-scored texts.
    pub image_to_text_r10: f64,
    /// Fraction of captions whose image is the best-scored image.
    pub text_to_image_r1: f64,
    /// Fraction of captions whose image is among the 5 best-scored images.
    pub text_to_image_r5: f64,
    /// Fraction of captions whose image is among the 10 best-scored images.
    pub text_to_image_r10: f64,
    /// Number of images scored.
    pub images: usize,
    /// Captions scored (each belongs to one image).
    pub texts: usize,
}

/// Errors in metric inputs (shapes, label ranges).
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum MetricsError {
    /// The scores do not form the stated matrix, or captions and images do not match up
    /// (a caption naming a missing image, an image without captions).
    #[error("{0}")]
    Shape(String),
    /// A class label outside the classes scored.
    #[error("label {label} of sample {sample} is outside 0..{classes}")]
    Label {
        /// The sample's index (its row of the scores).
        sample: usize,
        /// Its label.
        label: i64,
        /// The number of classes (columns of the scores).
        classes: usize,
    },
}

/// The 0-based rank of column `target` within `row`.
fn rank_of(row: &[f32], target: usize) -> usize {
    let t = row[target];
    row.iter()
        .enumerate()
        .filter(|&(j, &v)| v > t || (v == t && j < target))
        .count()
}

/// Classification metrics from `scores` (`samples x classes`, higher = more likely).
pub fn classification(
    scores: &[f32],
    classes: usize,
    labels: &[i64],
) -> Result<ClassificationMetrics, MetricsError> {
    if classes == 0 || scores.len() != labels.len() * classes {
        return Err(MetricsError::Shape(format!(
            "{} scores do not form {} rows of {classes} classes",
            scores.len(),
            labels.len()
        )));
    }
    let k5 = classes.min(5);
    let (mut top1, mut top5) = (0usize, 0usize);
    let mut per_class = vec![(0usize, 0usize); classes]; // (correct, total)
    for (sample, (&label, row)) in labels.iter().zip(scores.chunks_exact(classes)).enumerate() {
        if label < 0 || label as usize >= classes {
            return Err(MetricsError::Label {
                sample,
                label,
                classes,
            });
        }
        let rank = rank_of(row, label as usize);
        top1 += usize::from(rank == 0);
        top5 += usize::from(rank < k5);
        let entry = &mut per_class[label as usize];
        entry.0 += usize::from(rank == 0);
        entry.1 += 1;
    }
    let n = labels.len();
    let present: Vec<f64> = per_class
        .iter()
        .filter(|(_, total)| *total > 0)
        .map(|&(c, t)| c as f64 / t as f64)
        .collect();
    let frac = |x: usize| if n == 0 { 0.0 } else { x as f64 / n as f64 };
    Ok(ClassificationMetrics {
        top1: frac(top1),
        top5: frac(top5),
        mean_per_class_recall: if present.is_empty() {
            0.0
        } else {
            present.iter().sum::<f64>() / present.len() as f64
        },
        samples: n,
    })
}

/// Retrieval metrics from `scores` (`texts x images`, higher = more similar) where
/// caption `t` belongs to image `text_image[t]`. An image may have several captions;
/// every image must have at least one.
pub fn retrieval(
    scores: &[f32],
    images: usize,
    text_image: &[usize],
) -> Result<RetrievalMetrics, MetricsError> {
    let texts = text_image.len();
    if images == 0 || scores.len() != texts * images {
        return Err(MetricsError::Shape(format!(
            "{} scores do not form {texts} rows of {images} images",
            scores.len()
        )));
    }
    if let Some((t, &i)) = text_image.iter().enumerate().find(|(_, &i)| i >= images) {
        return Err(MetricsError::Shape(format!(
            "caption {t} points to image {i} of {images}"
        )));
    }
    let ks = [1usize, 5, 10];
    // text -> image: rank of the caption's image in its row.
    let mut t2i = [0usize; 3];
    for (t, row) in scores.chunks_exact(images).enumerate() {
        let rank = rank_of(row, text_image[t]);
        for (hits, k) in t2i.iter_mut().zip(ks) {
            *hits += usize::from(rank < k);
        }
    }
    // image -> text: best rank among the image's captions in its column.
    let mut best_rank = vec![usize::MAX; images];
    let mut column = vec![0f32; texts];
    for image in 0..images {
        for (t, value) in column.iter_mut().enumerate() {
            *value = scores[t * images + image];
        }
        for (t, _) in text_image.iter().enumerate().filter(|(_, &i)| i == image) {
            best_rank[image] = best_rank[image].min(rank_of(&column, t));
        }
    }
    if let Some(image) = best_rank.iter().position(|&r| r == usize::MAX) {
        return Err(MetricsError::Shape(format!("image {image} has no caption")));
    }
    let mut i2t = [0usize; 3];
    for &rank in &best_rank {
        for (hits, k) in i2t.iter_mut().zip(ks) {
            *hits += usize::from(rank < k);
        }
    }
    let frac = |hits: usize, n: usize| hits as f64 / n.max(1) as f64;
    Ok(RetrievalMetrics {
        image_to_text_r1: frac(i2t[0], images),
        image_to_text_r5: frac(i2t[1], images),
        image_to_text_r10: frac(i2t[2], images),
        text_to_image_r1: frac(t2i[0], texts),
        text_to_image_r5: frac(t2i[1], texts),
        text_to_image_r10: frac(t2i[2], texts),
        images,
        texts,
    })
}
