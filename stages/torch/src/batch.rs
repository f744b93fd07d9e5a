//! A loader [`Batch`] as tensors.

use tch::Tensor;
use tureen_stages::data::Batch;

/// The tensors of a [`Batch`] (copies, on the CPU).
pub trait BatchTensors {
    /// `[B, 3, S, S]` float32 images.
    fn image_tensor(&self) -> Tensor;
    /// `[B, context_length]` int64 token ids.
    fn token_tensor(&self) -> Tensor;
    /// `[B]` int64 labels, when the batch has them.
    fn label_tensor(&self) -> Option<Tensor>;
}

impl BatchTensors for Batch {
    fn image_tensor(&self) -> Tensor {
        let s = self.image_size as i64;
        Tensor::from_slice(&self.images).view([self.len() as i64, 3, s, s])
    }

    fn token_tensor(&self) -> Tensor {
        Tensor::from_slice(&self.tokens).view([self.len() as i64, self.context_length as i64])
    }

    fn label_tensor(&self) -> Option<Tensor> {
        self.labels.as_deref().map(Tensor::from_slice)
    }
}
