//! Evaluation metrics on hand-made scores and embeddings with known answers.

use tch::{Device, Tensor};
use tureen_torch::eval::metrics::{classification, retrieval, MetricsError};
use tureen_torch::eval::zeroshot::{classifier, fill_template};
use tureen_torch::eval::Encoder;
use tureen_torch::tokenizer::{ByteTokenizer, Tokenizer};

#[test]
fn top1_top5_and_per_class_recall_on_known_scores() {
    // 6 classes; 4 samples.
    let scores = [
        // label 0: ranked 1st
        9.0, 1.0, 2.0, 3.0, 4.0, 5.0, //
        // label 1: ranked 3rd (9 > 8 > 7)
        9.0, 7.0, 8.0, 0.0, 0.0, 0.0, //
        // label 2: ranked 6th (last)
        1.0, 2.0, 0.0, 3.0, 4.0, 5.0, //
        // label 0: ranked 2nd
        5.0, 6.0, 1.0, 1.0, 1.0, 1.0,
    ];
    let m = classification(&scores, 6, &[0, 1, 2, 0]).unwrap();
    assert_eq!(m.top1, 0.25);
    assert_eq!(m.top5, 0.75);
    // class 0: 1/2, class 1: 0/1, class 2: 0/1 -> mean over the 3 present classes
    assert!((m.mean_per_class_recall - (0.5 / 3.0)).abs() < 1e-12);
    assert_eq!(m.samples, 4);
}

#[test]
fn ties_rank_the_earlier_class_first() {
    let m = classification(&[1.0, 1.0], 2, &[1]).unwrap();
    assert_eq!(m.top1, 0.0);
    let m = classification(&[1.0, 1.0], 2, &[0]).unwrap();
    assert_eq!(m.top1, 1.0);
}

#[test]
fn bad_labels_and_shapes_are_errors() {
    assert_eq!(
        classification(&[0.0, 1.0], 2, &[2]).unwrap_err(),
        MetricsError::Label {
            sample: 0,
            label: 2,
            classes: 2
        }
    );
    assert!(classification(&[0.0, 1.0, 2.0], 2, &[0]).is_err());
}

#[test]
fn retrieval_counts_a_hit_when_any_caption_of_an_image_is_in_the_top_k() {
    // 12 images, 13 captions: image 0 has captions 0 and 12, image i has caption i.
    let images = 12;
    let mut text_image: Vec<usize> = (0..12).collect();
    text_image.push(0);
    let mut scores = vec![0f32; text_image.len() * images];
    for (t, &i) in text_image.iter().enumerate() {
        for j in 0..images {
            // Every caption prefers image (i + 1) % 12, then its own image.
            scores[t * images + j] = if j == (i + 1) % images {
                3.0
            } else if j == i {
                2.0
            } else {
                -(j as f32)
            };
        }
    }
    // Caption 12 (image 0) points at image 0 first.
    for j in 0..images {
        scores[12 * images + j] = if j == 0 { 5.0 } else { -(j as f32) };
    }
    let m = retrieval(&scores, images, &text_image).unwrap();
    // text->image: caption 12 hits at 1; the others rank their image 2nd.
    assert!((m.text_to_image_r1 - 1.0 / 13.0).abs() < 1e-12);
    assert_eq!(m.text_to_image_r5, 1.0);
    // image->text: image 0's best caption is 12 (score 5, top of its column); every
    // other image i is scored 3.0 by caption i-1 and 2.0 by its own caption i, so its
    // caption ranks 2nd.
    assert!((m.image_to_text_r1 - 1.0 / 12.0).abs() < 1e-12);
    assert_eq!(m.image_to_text_r5, 1.0);
    assert_eq!(m.image_to_text_r10, 1.0);
    assert_eq!((m.images, m.texts), (12, 13));
}

#[test]
fn retrieval_at_10_misses_when_the_match_ranks_eleventh() {
    let images = 11;
    // One caption for each image; every caption scores its own image lowest.
    let text_image: Vec<usize> = (0..images).collect();
    let scores: Vec<f32> = (0..images * images)
        .map(|k| if k % images == k / images { -1.0 } else { 1.0 })
        .collect();
    let m = retrieval(&scores, images, &text_image).unwrap();
    assert_eq!(m.text_to_image_r10, 0.0);
    assert_eq!(m.image_to_text_r10, 0.0);
}

#[test]
fn an_image_without_captions_is_an_error() {
    assert!(retrieval(&[1.0, 2.0], 2, &[0]).is_err());
}

/// Embeds text by the byte tokens' histogram over a few letters: "red" and "blue"
/// captions separate cleanly.
struct LetterEncoder;

impl Encoder for LetterEncoder {
    fn encode_image(&self, images: &Tensor) -> Tensor {
        images.mean_dim([2i64, 3].as_slice(), false, tch::Kind::Float)
    }
    fn encode_text(&self, tokens: &Tensor) -> Tensor {
        let letters = [b'r' as i64 + 1, b'b' as i64 + 1, b'l' as i64 + 1];
        let cols: Vec<Tensor> = letters
            .iter()
            .map(|&id| {
                tokens.eq(id).to_kind(tch::Kind::Float).sum_dim_intlist(
                    [1i64].as_slice(),
                    false,
                    tch::Kind::Float,
                )
            })
            .collect();
        Tensor::stack(&cols, 1)
    }
    fn device(&self) -> Device {
        Device::Cpu
    }
}

#[test]
fn zero_shot_weights_are_normalised_means_of_normalised_template_embeddings() {
    let tok = Tokenizer::Byte(ByteTokenizer);
    let names = vec!["red".to_string(), "blue".to_string()];
    let templates = vec!["a {c}".to_string(), "{c} rr".to_string()];
    let w = classifier(&LetterEncoder, &tok, 16, &names, &templates);
    assert_eq!(w.size(), [2, 3]);
    let norms = w
        .square()
        .sum_dim_intlist([1i64].as_slice(), false, tch::Kind::Float);
    assert!(norms.allclose(
        &Tensor::ones([2], (tch::Kind::Float, Device::Cpu)),
        1e-6,
        1e-6,
        false
    ));
    // "a red": (r=1,b=0,l=0) -> [1,0,0]; "red rr": (3,0,0) -> [1,0,0]; mean [1,0,0].
    let red = Vec::<f32>::try_from(w.get(0)).unwrap();
    assert!((red[0] - 1.0).abs() < 1e-6 && red[1].abs() < 1e-6);
    // "a blue": (0,1,1)/sqrt2; "blue rr": (2,1,1)/sqrt6; mean then normalise.
    let a = [0.0, 1.0 / 2f32.sqrt(), 1.0 / 2f32.sqrt()];
    let b = [2.0 / 6f32.sqrt(), 1.0 / 6f32.sqrt(), 1.0 / 6f32.sqrt()];
    let mean: Vec<f32> = (0..3).map(|i| (a[i] + b[i]) / 2.0).collect();
    let n = mean.iter().map(|x| x * x).sum::<f32>().sqrt();
    let blue = Vec::<f32>::try_from(w.get(1)).unwrap();
    for i in 0..3 {
        assert!((blue[i] - mean[i] / n).abs() < 1e-6, "{blue:?}");
    }
}

#[test]
fn templates_accept_both_placeholder_spellings() {
    assert_eq!(
        fill_template("a photo of a {c}.", "cat"),
        "a photo of a cat."
    );
    assert_eq!(
        fill_template("a {} in the wild", "cat"),
        "a cat in the wild"
    );
}
