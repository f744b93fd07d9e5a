//! The CLIP model's configuration: every number that shapes open_clip's `CLIP` with a
//! timm ConvNeXt image tower, with presets matching open_clip (`convnext_atto` ..
//! `convnext_xxlarge`) and `convnext_atto_64`, the small model of tests and benchmarks.
//!
//! Numbers only: validating a pipeline, counting parameters
//! ([`ClipConfig::num_params`], without allocating) and planning FLOPs need no libtorch.
//! The network itself is `tureen_torch::model::Clip`.

mod config;

pub use config::{
    config_from_json, default_init_logit_scale, ClipConfig, ConfigError, MlpKind, ProjKind,
    TextConfig, VisionConfig, PRESETS,
};
