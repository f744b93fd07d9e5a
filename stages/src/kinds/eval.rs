//! `kind: eval`: zero-shot classification and image<->text retrieval of one model.
//!
//! ```yaml
//! eval_soup:
//!   kind: eval
//!   inputs: {model: soup.soup}          # a weights file (safetensors, torch.save .pt) or a checkpoint directory
//!   params:
//!     data: imagenet/val                # image folder (one folder per class) or shards
//!     classnames: data/imagenet-classnames.txt
//!     templates: data/imagenet-templates.txt
//!     retrieval: coco/{000000..000004}.tar   # optional: shards with one caption per line
//!     tokenizer: {kind: bpe, vocab: bpe_simple_vocab_16e6.txt.gz}   # default: byte
//!     model: convnext_atto_64           # default: the checkpoint's own config (required for a .pt)
//!     batch_size: 64                    # default 64
//!     workers: 2                        # decode threads, default 2
//!     device: auto                      # auto | cpu | cuda, default auto
//! ```
//!
//! Paths are relative to the `data` input when the stage has one (a dataset directory
//! produced by an earlier stage), else to the pipeline's directory. The output `metrics`
//! is a JSON file:
//! `{"zeroshot": {"top1", "top5", "mean_per_class_recall", "samples", "classes"},
//!   "retrieval": {"image_to_text_r1", ..., "text_to_image_r10", "images", "texts"}}`
//! (fractions in [0, 1]; a section is absent when its data is not configured). The same
//! numbers go to the run's metrics log.

use tureen_engine::kind::estimate::{EstimateInputs, StageEstimate};
use tureen_engine::kind::{OutputDecl, OutputShape, ParamError, StageDecl, StageKind};

use crate::eval::EvalParams;

/// The name of the kind in pipeline files.
pub const NAME: &str = "eval";

/// The `eval` kind as the engine sees it (params, outputs, estimate); the scoring
/// itself runs in the `tureen-torch` worker.
pub struct EvalKind;

impl StageKind for EvalKind {
    fn name(&self) -> &'static str {
        NAME
    }

    fn code_version(&self) -> &'static str {
        // 2: ConvNeXt blocks with timm's conv_mlp run their MLP as 1x1 convolutions, as timm does.
        // 3: portable numerics (`numerics: portable`, the default) pin the CPU kernels.
        "eval-3"
    }

    fn validate(&self, decl: &StageDecl<'_>) -> Result<(), ParamError> {
        EvalParams::from_params(decl.params)?;
        if !decl.input_names.contains(&"model") {
            return Err(ParamError::input(
                "model",
                "required (the checkpoint to evaluate)",
            ));
        }
        if let Some(other) = decl
            .input_names
            .iter()
            .find(|n| !["model", "data"].contains(n))
        {
            return Err(ParamError::input(
                *other,
                "unknown input (eval takes `model` and optionally `data`)",
            ));
        }
        Ok(())
    }

    fn outputs(&self, _decl: &StageDecl<'_>) -> Vec<OutputDecl> {
        vec![OutputDecl {
            name: "metrics".into(),
            shape: OutputShape::One,
            len: None,
        }]
    }

    /// What `tureen plan` counts for this stage (see [`crate::plan`]).
    fn estimate(
        &self,
        decl: &StageDecl<'_>,
        inputs: &EstimateInputs<'_>,
    ) -> Result<Option<StageEstimate>, ParamError> {
        crate::plan::estimate_eval(decl, inputs)
    }

    fn worker(&self, _decl: &StageDecl<'_>) -> Option<&'static str> {
        Some(super::TORCH_WORKER)
    }
}
