//! Gradient checkpointing (`torch.utils.checkpoint`, which tch lacks) for a tower that is
//! a chain of segments (stem, each ConvNeXt block, each text residual block, head).
//!
//! [`forward`] runs the chain without autograd and keeps only each segment's input and
//! the drop-path generator's state before it; [`backward`] walks the chain backwards,
//! re-running each segment from its saved input with autograd on and back-propagating
//! the gradient of its output into the parameters and its input. The recomputed
//! segment runs the same ops on the same input with the same generator state, so its
//! output, its drop-path masks and the gradients are those of the pass that kept every
//! activation (bit for bit on the CPU); memory holds one segment's activations at a
//! time plus the segment inputs.

use rand_chacha::ChaCha8Rng;
use tch::Tensor;

/// A tower as a chain: `forward(x) = segment(n-1, ... segment(0, x))`.
pub(crate) trait Chain {
    fn segments(&self) -> usize;
    /// Segment `i` on `x` in training mode, drawing drop-path masks from `rng`.
    fn segment(&self, i: usize, x: &Tensor, rng: Option<&mut ChaCha8Rng>) -> Tensor;
}

/// The whole chain with autograd as usual (every activation kept).
pub(crate) fn run(chain: &dyn Chain, input: &Tensor, mut rng: Option<ChaCha8Rng>) -> Tensor {
    let mut x = input.shallow_clone();
    for i in 0..chain.segments() {
        x = chain.segment(i, &x, rng.as_mut());
    }
    x
}

/// What [`backward`] needs to recompute a chain: each segment's input and generator.
pub struct Tape {
    inputs: Vec<(Tensor, Option<ChaCha8Rng>)>,
}

/// The chain's output, computed without autograd, and its [`Tape`].
pub(crate) fn forward(
    chain: &dyn Chain,
    input: &Tensor,
    mut rng: Option<ChaCha8Rng>,
) -> (Tensor, Tape) {
    tch::no_grad(|| {
        let mut inputs = Vec::with_capacity(chain.segments());
        let mut x = input.shallow_clone();
        for i in 0..chain.segments() {
            inputs.push((x.shallow_clone(), rng.clone()));
            x = chain.segment(i, &x, rng.as_mut());
        }
        (x, Tape { inputs })
    })
}

/// Back-propagates `grad` (of the chain's output, possibly in a wider dtype than the
/// output) through the chain recorded in `tape`, accumulating parameter gradients.
pub(crate) fn backward(chain: &dyn Chain, tape: Tape, grad: &Tensor) -> Result<(), String> {
    let mut grad = grad.shallow_clone();
    let mut inputs = tape.inputs;
    for i in (0..chain.segments()).rev() {
        let (saved, mut rng) = inputs
            .pop()
            .ok_or("recompute: the tape is shorter than the chain")?;
        // The chain's own input (images, token ids) needs no gradient.
        let x = match i {
            0 => saved,
            _ => saved.detach().set_requires_grad(true),
        };
        let y = chain.segment(i, &x, rng.as_mut());
        // The last segment's output may be bf16 while its gradient is float32: back-
        // propagate through the same cast the loss applied.
        let y = match y.kind() == grad.kind() {
            true => y,
            false => y.to_kind(grad.kind()),
        };
        if i > 0 {
            grad = crate::autograd::backward_capturing(&[&y], &[&grad], &x)?;
        } else {
            crate::autograd::backward(&[&y], &[&grad])?;
        }
    }
    Ok(())
}
