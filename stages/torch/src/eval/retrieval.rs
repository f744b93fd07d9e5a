//! Image<->text retrieval over a webdataset whose `.txt` members hold one caption per
//! line (several captions per image, as in COCO/Flickr30k).

use tch::Tensor;

use super::dataset::{for_each_batch, EvalSource};
use super::metrics::{retrieval, RetrievalMetrics};
use super::{l2_normalize, to_vec_f32, Encoder};
use crate::tokenizer::Tokenizer;

/// Recall@1/5/10 in both directions on `source`.
pub fn evaluate(
    encoder: &dyn Encoder,
    tokenizer: &Tokenizer,
    context_length: usize,
    source: &EvalSource,
    image_size: u32,
    batch_size: usize,
    workers: usize,
) -> anyhow::Result<RetrievalMetrics> {
    let mut image_features: Vec<Tensor> = Vec::new();
    let mut text_features: Vec<Tensor> = Vec::new();
    let mut text_image: Vec<usize> = Vec::new();
    let mut images = 0usize;
    for_each_batch(source, image_size, batch_size, workers, |batch| {
        image_features.push(l2_normalize(
            &encoder.encode_image(&batch.images.to_device(encoder.device())),
        ));
        let mut ids: Vec<i64> = Vec::new();
        let mut captions = 0i64;
        for (i, text) in batch.texts.iter().enumerate() {
            let lines: Vec<&str> = text
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .collect();
            anyhow::ensure!(
                !lines.is_empty(),
                "retrieval image {} has no caption",
                images + i
            );
            for line in lines {
                ids.extend(tokenizer.encode(line, context_length));
                text_image.push(images + i);
                captions += 1;
            }
        }
        images += batch.texts.len();
        let tokens = Tensor::from_slice(&ids)
            .view([captions, context_length as i64])
            .to_device(encoder.device());
        text_features.push(l2_normalize(&encoder.encode_text(&tokens)));
        Ok(())
    })?;
    let images_t = Tensor::cat(&image_features, 0);
    let texts_t = Tensor::cat(&text_features, 0);
    let scores = to_vec_f32(&texts_t.matmul(&images_t.tr()));
    Ok(retrieval(&scores, images, &text_image)?)
}
