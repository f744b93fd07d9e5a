//! A CLIP small enough that tests train it in milliseconds per step (the training and
//! data-parallel tests).
#![allow(dead_code)] // each test file uses its own subset

use tureen_torch::model::{ClipConfig, MlpKind, ProjKind, TextConfig, VisionConfig};

/// Two ConvNeXt stages of `depth` blocks (8 and 16 channels, 16 px images) and `layers`
/// text blocks of width 16, with MLPs `mlp_ratio` wide.
pub fn tiny_clip(
    depth: i64,
    layers: i64,
    mlp: MlpKind,
    mlp_ratio: i64,
    drop_path: f64,
) -> ClipConfig {
    ClipConfig {
        embed_dim: 16,
        vision: VisionConfig {
            timm_model_name: None,
            depths: vec![depth, depth],
            dims: vec![8, 16],
            mlp,
            mlp_ratio,
            kernel_size: 7,
            ls_init_value: Some(0.5),
            norm_eps: 1e-6,
            drop_path,
            image_size: 16,
            patch_size: 4,
            proj: ProjKind::Linear,
            proj_bias: false,
        },
        text: TextConfig {
            context_length: 8,
            vocab_size: 64,
            width: 16,
            heads: 2,
            layers,
            mlp_ratio,
            norm_eps: 1e-5,
        },
        init_logit_scale: (1.0f64 / 0.07).ln(),
    }
}
