//! `kind: rewind`: continue another stage's run from one of its checkpoints with new
//! settings (batch size, lr, augmentation, drop path), as the model card's rewind of
//! intervals 231-256 at batch 95,744 and lr 2e-3.
//!
//! The schedule is recomputed for the new batch size (total steps = steps per interval x
//! `intervals`) and entered at `k x steps per interval` for a checkpoint after interval
//! k, so the lr jumps at the restart, exactly as open_clip's `--resume` with a new batch
//! size. AdamW's betas, eps and weight decay and its step count come from the
//! checkpoint; only the lr follows the new schedule. `checkpoints` holds the intervals
//! trained here (k+1..intervals).
//!
//! `from` may also be an open_clip `epoch_N.pt` (the `checkpoints` of an `open_clip`
//! stage): weights from its state dict, AdamW's moments from its `optimizer` state
//! mapped to parameter names through open_clip's parameter groups (see
//! `tureen_torch::checkpoint::open_clip`); `model:` is then required. `optimizer:
//! fresh` starts AdamW from zero moments with this stage's `beta1`, `beta2`, `eps` and
//! `weight_decay` instead (required for a checkpoint without optimizer state).
//!
//! ```yaml
//! rewind:
//!   kind: rewind
//!   inputs: {from: core.checkpoints[2], data: synth.dataset}
//!   params:
//!     data: {shards: "train/{000000..000007}.tar", augment: {scale: [0.3, 1.0], re_prob: 0.4}}
//!     batch_size: 96
//!     samples_per_interval: 1024
//!     intervals: 4
//!     lr: 2.0e-3
//!     warmup: 10
//! ```

use tureen_engine::kind::estimate::{EstimateInputs, StageEstimate};
use tureen_engine::kind::{OutputDecl, ParamError, StageDecl, StageKind};

use crate::train::params::{self, Mode};

/// The name of the kind in pipeline files.
pub const NAME: &str = "rewind";

/// The `rewind` kind as the engine sees it (params, outputs, estimate); the training
/// runs in the `tureen-torch` worker.
pub struct RewindKind;

impl StageKind for RewindKind {
    fn name(&self) -> &'static str {
        NAME
    }

    fn code_version(&self) -> &'static str {
        // 2: ConvNeXt blocks with timm's conv_mlp run their MLP as 1x1 convolutions, as timm does.
        // 3: gradient accumulation sums per-micro-batch local losses (as data-parallel
        // ranks do); portable numerics (`numerics: portable`) pin the CPU kernels.
        "rewind-3"
    }

    fn validate(&self, decl: &StageDecl<'_>) -> Result<(), ParamError> {
        params::validate(decl, Mode::Rewind)
    }

    fn outputs(&self, decl: &StageDecl<'_>) -> Vec<OutputDecl> {
        params::outputs(decl, Mode::Rewind)
    }

    fn estimate(
        &self,
        decl: &StageDecl<'_>,
        inputs: &EstimateInputs<'_>,
    ) -> Result<Option<StageEstimate>, ParamError> {
        crate::plan::estimate_rewind(decl, inputs)
    }

    fn worker(&self, _decl: &StageDecl<'_>) -> Option<&'static str> {
        Some(super::TORCH_WORKER)
    }

    /// Ranks train one stage data-parallel (`tureen_torch::dist`).
    fn data_parallel(&self) -> bool {
        true
    }
}
