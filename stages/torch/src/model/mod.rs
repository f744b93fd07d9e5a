//! The CLIP model: open_clip's `CLIP` with a timm ConvNeXt image tower, in tch.
//!
//! - [`ClipConfig`] (from `tureen_stages::model`, re-exported) holds every number that
//!   shapes the model, with presets matching open_clip (`convnext_atto` ..
//!   `convnext_xxlarge`) and `convnext_atto_64`, the small model of tests and
//!   benchmarks.
//! - [`Clip`] registers its parameters in a `tch::nn::VarStore` under open_clip's
//!   `state_dict` names (`visual.trunk.stages.2.blocks.7.mlp.fc1.weight`,
//!   `transformer.resblocks.0.attn.in_proj_weight`, `logit_scale`, ...), so the store's
//!   variables are a checkpoint as-is. open_clip's `attn_mask` is a non-persistent
//!   buffer and is not part of the checkpoint here either.
//!
//! ```no_run
//! use tureen_torch::model::{Clip, ClipConfig};
//! let cfg = ClipConfig::preset("convnext_atto_64").unwrap();
//! let vs = tch::nn::VarStore::new(tch::Device::Cpu);
//! let model = Clip::new(&vs.root(), &cfg);
//! let images = tch::Tensor::zeros([2, 3, 64, 64], (tch::Kind::Float, tch::Device::Cpu));
//! let tokens = tch::Tensor::zeros([2, 32], (tch::Kind::Int64, tch::Device::Cpu));
//! let loss = model.loss(&images, &tokens, true);
//! ```

pub mod amp;
mod clip;
mod convnext;
mod init;
mod recompute;
mod text;

pub use clip::{clip_loss, clip_loss_rows, normalize, Clip, Recompute, ShapeError};
pub use tureen_stages::model::{
    config_from_json, default_init_logit_scale, ClipConfig, ConfigError, MlpKind, ProjKind,
    TextConfig, VisionConfig, PRESETS,
};
