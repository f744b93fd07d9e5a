//! Evaluation: zero-shot classification and image<->text retrieval (as in
//! CLIP_benchmark), and the greedy soup of the Model Soups paper.
//!
//! - [`metrics`] (from `tureen_stages`): top-1/top-5/mean per-class recall and
//!   recall@1/5/10 from score matrices.
//! - [`dataset`]: evaluation images from an image-folder layout (one folder per class,
//!   folders in sorted order = class index) or from webdataset shards.
//! - [`zeroshot`]: the zero-shot classifier (templates x class names) and its metrics.
//! - [`retrieval`]: retrieval over a webdataset whose `.txt` holds one caption per line.
//! - [`suite`]: one configured evaluation of a checkpoint (the `eval` stage's work).
//! - [`greedy`]: greedy soups, scored by any held-out evaluation.
//!
//! Everything is written against [`Encoder`], implemented by the CLIP model, so the
//! logic is testable with any embedding function.

pub mod dataset;
pub mod greedy;
pub mod retrieval;
pub mod suite;
pub mod zeroshot;

use tch::{Device, Tensor};

pub use tureen_stages::eval::{metrics, ClassificationMetrics, RetrievalMetrics};

/// What evaluation needs from a model: image and text embeddings (not necessarily
/// normalised; evaluation L2-normalises them), in inference mode.
pub trait Encoder {
    /// `[B, 3, H, W]` float images -> `[B, D]` embeddings.
    fn encode_image(&self, images: &Tensor) -> Tensor;
    /// `[B, context]` int64 tokens -> `[B, D]` embeddings.
    fn encode_text(&self, tokens: &Tensor) -> Tensor;
    /// Where inputs must be placed.
    fn device(&self) -> Device;
}

impl Encoder for crate::model::Clip {
    fn encode_image(&self, images: &Tensor) -> Tensor {
        tch::no_grad(|| crate::model::Clip::encode_image(self, images, false))
    }
    fn encode_text(&self, tokens: &Tensor) -> Tensor {
        tch::no_grad(|| crate::model::Clip::encode_text(self, tokens))
    }
    fn device(&self) -> Device {
        self.logit_scale().device()
    }
}

/// Rows scaled to unit L2 norm (float32).
pub fn l2_normalize(x: &Tensor) -> Tensor {
    let x = x.to_kind(tch::Kind::Float);
    let norm = x
        .norm_scalaropt_dim(2, [-1i64].as_slice(), true)
        .clamp_min(1e-12);
    x / norm
}

/// A 2-D float tensor as a row-major `Vec<f32>` on the CPU.
pub(crate) fn to_vec_f32(x: &Tensor) -> Vec<f32> {
    let x = x
        .to_device(Device::Cpu)
        .to_kind(tch::Kind::Float)
        .contiguous()
        .view([-1]);
    Vec::<f32>::try_from(&x).expect("a float tensor converts to Vec<f32>")
}
