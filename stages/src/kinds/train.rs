//! `kind: train`: train a CLIP model from scratch (or resume this stage's own last
//! checkpoint after an interruption). See [`crate::train::params`] for the params; the
//! training itself runs in the [`super::TORCH_WORKER`].
//!
//! ```yaml
//! core:
//!   kind: train
//!   inputs: {data: synth.dataset}
//!   params:
//!     model: {preset: convnext_atto_64, text: {vocab_size: 259}}
//!     data: {shards: "train/{000000..000007}.tar", augment: {scale: [0.33, 1.0], re_prob: 0.35}}
//!     batch_size: 64
//!     samples_per_interval: 1024
//!     intervals: 4
//!     lr: 1.0e-3
//!     warmup: 10
//!     grad_clip_norm: 5.0
//! ```

use tureen_engine::kind::estimate::{EstimateInputs, StageEstimate};
use tureen_engine::kind::{OutputDecl, ParamError, StageDecl, StageKind};

use crate::train::params::{self, Mode};

/// The name of the kind in pipeline files.
pub const NAME: &str = "train";

/// The `train` kind as the engine sees it (params, outputs, estimate); the training
/// runs in the `tureen-torch` worker.
pub struct TrainKind;

impl StageKind for TrainKind {
    fn name(&self) -> &'static str {
        NAME
    }

    fn code_version(&self) -> &'static str {
        // 2: ConvNeXt blocks with timm's conv_mlp run their MLP as 1x1 convolutions, as timm does.
        // 3: gradient accumulation sums per-micro-batch local losses (as data-parallel
        // ranks do); portable numerics (`numerics: portable`) pin the CPU kernels.
        "train-3"
    }

    fn validate(&self, decl: &StageDecl<'_>) -> Result<(), ParamError> {
        params::validate(decl, Mode::Train)
    }

    fn outputs(&self, decl: &StageDecl<'_>) -> Vec<OutputDecl> {
        params::outputs(decl, Mode::Train)
    }

    fn estimate(
        &self,
        decl: &StageDecl<'_>,
        inputs: &EstimateInputs<'_>,
    ) -> Result<Option<StageEstimate>, ParamError> {
        crate::plan::estimate_train(decl, inputs)
    }

    fn worker(&self, _decl: &StageDecl<'_>) -> Option<&'static str> {
        Some(super::TORCH_WORKER)
    }

    /// Ranks train one stage data-parallel (`tureen_torch::dist`).
    fn data_parallel(&self) -> bool {
        true
    }
}
