//! Mixed precision the way torch's autocast does it, done by hand: matmuls and
//! convolutions run in a lower-precision kind (bf16) while norms, softmax and the loss
//! stay in float32 and the master weights stay float32.
//!
//! tch exposes libtorch's autocast switch but not its dtype (which defaults to fp16 on
//! CUDA), so the model casts explicitly. The setting is per thread and scoped by
//! [`autocast`].

use std::cell::Cell;

use tch::{Kind, Tensor};

thread_local! {
    static COMPUTE: Cell<Option<Kind>> = const { Cell::new(None) };
}

/// Runs `f` with matmuls/convolutions of the model in `kind` (`None`: full precision).
pub fn autocast<T>(kind: Option<Kind>, f: impl FnOnce() -> T) -> T {
    let previous = COMPUTE.with(|c| c.replace(kind));
    struct Restore(Option<Kind>);
    impl Drop for Restore {
        fn drop(&mut self) {
            COMPUTE.with(|c| c.set(self.0));
        }
    }
    let _restore = Restore(previous);
    f()
}

/// The lower-precision kind in effect, if any.
pub fn compute_kind() -> Option<Kind> {
    COMPUTE.with(|c| c.get())
}

/// `t` in the compute kind (a no-op outside [`autocast`]).
pub fn cast(t: &Tensor) -> Tensor {
    match compute_kind() {
        Some(k) if t.kind() != k => t.to_kind(k),
        _ => t.shallow_clone(),
    }
}

/// `t` in float32 when autocast is on (inputs of norms and losses).
pub fn full(t: &Tensor) -> Tensor {
    match compute_kind() {
        Some(_) if t.kind() != Kind::Float => t.to_kind(Kind::Float),
        _ => t.shallow_clone(),
    }
}
