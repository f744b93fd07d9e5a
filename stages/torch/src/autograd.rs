//! What tch's autograd API lacks: `torch.autograd.backward(outputs, grad_tensors)`,
//! through the shim of [`crate::dist`].

use std::ffi::c_int;

use tch::Tensor;

use crate::dist::ffi;

/// Back-propagates `grads` (one per output, same shapes) from `outputs`, accumulating
/// into the leaves' gradients exactly as `loss.backward()` does from a scalar.
pub fn backward(outputs: &[&Tensor], grads: &[&Tensor]) -> Result<(), String> {
    if outputs.len() != grads.len() {
        return Err(format!(
            "backward: {} outputs but {} gradients",
            outputs.len(),
            grads.len()
        ));
    }
    let outs: Vec<_> = outputs.iter().map(|t| ffi::raw(t)).collect();
    let gs: Vec<_> = grads.iter().map(|t| ffi::raw(t)).collect();
    let mut err = std::ptr::null_mut();
    // SAFETY: the tensors outlive the call; the shim only reads them.
    let status =
        unsafe { ffi::tureen_backward(outs.as_ptr(), gs.as_ptr(), outs.len() as c_int, &mut err) };
    match status {
        ffi::OK => Ok(()),
        // SAFETY: the shim left its message in `err`.
        _ => Err(format!("backward: {}", unsafe { ffi::take_error(err) })),
    }
}

/// [`backward`], returning also the gradient that reached `input` (a leaf that
/// requires grad) exactly as autograd delivered it, before accumulation into its
/// `.grad` re-lays it out: what the layer below would receive in one uninterrupted
/// backward pass, so recomputed segments chain to the same bits.
pub fn backward_capturing(
    outputs: &[&Tensor],
    grads: &[&Tensor],
    input: &Tensor,
) -> Result<Tensor, String> {
    if outputs.len() != grads.len() {
        return Err(format!(
            "backward: {} outputs but {} gradients",
            outputs.len(),
            grads.len()
        ));
    }
    let outs: Vec<_> = outputs.iter().map(|t| ffi::raw(t)).collect();
    let gs: Vec<_> = grads.iter().map(|t| ffi::raw(t)).collect();
    let mut captured = std::ptr::null_mut();
    let mut err = std::ptr::null_mut();
    // SAFETY: the tensors outlive the call; on success the shim returns a new tensor
    // that the returned `Tensor` owns.
    let status = unsafe {
        ffi::tureen_backward_capture(
            outs.as_ptr(),
            gs.as_ptr(),
            outs.len() as c_int,
            ffi::raw(input),
            &mut captured,
            &mut err,
        )
    };
    match status {
        ffi::OK => Ok(unsafe { Tensor::from_ptr(captured) }),
        // SAFETY: the shim left its message in `err`.
        _ => Err(format!("backward: {}", unsafe { ffi::take_error(err) })),
    }
}
