//! What tch's autograd API lacks: `torch.autograd.backward(outputs, grad_tensors)`,
//! through the shim of [`crate::dist`].

use std::ffi::c_int;

use tch::Tensor;

use crate::dist::ffi;

/// Back-propagates `grads` (one per output, same shapes) from `outputs`, accumulating
/// into the leaves' gradients exactly as `loss.backward()` does from a scalar.
pub fn backward(outputs: &[&Tensor], grads: &[&Tensor]) -> Result<(), String> {
    if outputs.len() != grads.len() {
        return Err(format!("backward: {} outputs but {} gradients", outputs.len(), grads.len()));
    }
    let outs: Vec<_> = outputs.iter().map(|t| ffi::raw(t)).collect();
    let gs: Vec<_> = grads.iter().map(|t| ffi::raw(t)).collect();
    let mut err = std::ptr::null_mut();
    // SAFETY: the tensors outlive the call; the shim only reads them.
    let status = unsafe { ffi::tureen_backward(outs.as_ptr(), gs.as_ptr(), outs.len() as c_int, &mut err) };
    match status {
        ffi::OK => Ok(()),
        // SAFETY: the shim left its message in `err`.
        _ => Err(format!("backward: {}", unsafe { ffi::take_error(err) })),
    }
}
