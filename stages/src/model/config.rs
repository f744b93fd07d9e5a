//! [`ClipConfig`]: every number that shapes a CLIP model, with the presets that match
//! open_clip's model configs and timm's ConvNeXt definitions.
//!
//! A config is explicit on purpose: a checkpoint embeds it as JSON, so a file alone says
//! which model it is, and nothing depends on a table of names compiled into one version
//! of tureen. Presets are only a convenient way to fill it in.

use serde::{Deserialize, Serialize};

/// How the ConvNeXt blocks implement their pointwise MLP.
///
/// timm's small ConvNeXts (atto..nano) use 1x1 convolutions (`conv_mlp=True`, weights of
/// shape `[out, in, 1, 1]`); tiny..xxlarge use `Linear` layers on channels-last tensors
/// (weights `[out, in]`). The arithmetic is the same; the checkpoint shapes differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MlpKind {
    /// `Linear` layers on channels-last tensors (tiny..xxlarge).
    Linear,
    /// 1x1 convolutions (timm's `conv_mlp=True`, atto..nano).
    Conv1x1,
}

/// How pooled image features are projected to the joint embedding (open_clip's
/// `timm_proj`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProjKind {
    /// `visual.head.proj`: one linear layer.
    Linear,
    /// `visual.head.mlp.fc1` / `fc2`: Linear(width, 2*embed), GELU, Linear(2*embed, embed).
    Mlp,
}

/// The ConvNeXt image tower (timm `ConvNeXt` wrapped by open_clip's `TimmModel`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VisionConfig {
    /// timm's model name when the numbers below equal that timm model (used to build the
    /// same model in open_clip); `null` for custom towers.
    pub timm_model_name: Option<String>,
    /// Blocks per stage.
    pub depths: Vec<i64>,
    /// Channels per stage.
    pub dims: Vec<i64>,
    /// How the blocks' pointwise MLP is built (decides the weights' shapes).
    pub mlp: MlpKind,
    /// MLP hidden width = `mlp_ratio * dim`.
    pub mlp_ratio: i64,
    /// Depthwise convolution kernel size.
    pub kernel_size: i64,
    /// Layer-scale `gamma` init value; `null` disables layer scale (no `gamma` params).
    pub ls_init_value: Option<f64>,
    /// LayerNorm epsilon of every norm in the tower.
    pub norm_eps: f64,
    /// Maximum stochastic-depth rate; block i of n gets `drop_path * i / (n - 1)`.
    pub drop_path: f64,
    /// Square input resolution in pixels.
    pub image_size: i64,
    /// Patch stem: `patch_size x patch_size` convolution with the same stride, then
    /// LayerNorm.
    pub patch_size: i64,
    /// Head: global average pool, LayerNorm, then this projection.
    pub proj: ProjKind,
    /// Whether the (last) projection layer has a bias.
    pub proj_bias: bool,
}

/// The pre-LN causal text transformer of open_clip's `CLIP`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TextConfig {
    /// Tokens per caption, padding included (open_clip: 77).
    pub context_length: i64,
    /// Token ids the embedding holds; at least the tokenizer's vocabulary (the largest
    /// id, end-of-text, is where the tower pools).
    pub vocab_size: i64,
    /// Residual stream width.
    pub width: i64,
    /// Attention heads per layer; must divide `width`.
    pub heads: i64,
    /// Transformer blocks.
    pub layers: i64,
    /// MLP hidden width = `mlp_ratio * width`.
    pub mlp_ratio: i64,
    /// LayerNorm epsilon of every norm in the tower.
    pub norm_eps: f64,
}

/// A whole CLIP model: image tower, text tower and the joint embedding width.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClipConfig {
    /// Width of the joint embedding both towers project to.
    pub embed_dim: i64,
    /// The image tower.
    pub vision: VisionConfig,
    /// The text tower.
    pub text: TextConfig,
    /// Initial value of the learned `logit_scale` (open_clip: ln(1/0.07)).
    pub init_logit_scale: f64,
}

/// An invalid [`ClipConfig`], naming the field.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("model config: {field}: {message}")]
pub struct ConfigError {
    /// The field's path in the config, e.g. `vision.depths`.
    pub field: String,
    /// What is wrong with it.
    pub message: String,
}

fn bad(field: &str, message: impl Into<String>) -> ConfigError {
    ConfigError {
        field: field.to_string(),
        message: message.into(),
    }
}

/// open_clip's initial logit scale, ln(1 / 0.07).
pub fn default_init_logit_scale() -> f64 {
    (1.0f64 / 0.07).ln()
}

/// Names accepted by [`ClipConfig::preset`], smallest first.
pub const PRESETS: &[&str] = &[
    "convnext_atto_64",
    "convnext_atto",
    "convnext_femto",
    "convnext_pico",
    "convnext_nano",
    "convnext_tiny",
    "convnext_small",
    "convnext_base",
    "convnext_base_w",
    "convnext_base_w_320",
    "convnext_large",
    "convnext_large_d",
    "convnext_large_d_320",
    "convnext_xlarge",
    "convnext_xxlarge",
    "convnext_xxlarge_320",
];

/// timm's ConvNeXt definition for a model name: (depths, dims, conv_mlp, norm_eps).
fn timm_convnext(name: &str) -> Option<(Vec<i64>, Vec<i64>, MlpKind, f64)> {
    use MlpKind::*;
    let small = [2, 2, 6, 2];
    let deep = [3, 3, 27, 3];
    let (depths, dims, mlp, eps): (&[i64], [i64; 4], MlpKind, f64) = match name {
        "convnext_atto" => (&small, [40, 80, 160, 320], Conv1x1, 1e-6),
        "convnext_femto" => (&small, [48, 96, 192, 384], Conv1x1, 1e-6),
        "convnext_pico" => (&small, [64, 128, 256, 512], Conv1x1, 1e-6),
        "convnext_nano" => (&[2, 2, 8, 2], [80, 160, 320, 640], Conv1x1, 1e-6),
        "convnext_tiny" => (&[3, 3, 9, 3], [96, 192, 384, 768], Linear, 1e-6),
        "convnext_small" => (&deep, [96, 192, 384, 768], Linear, 1e-6),
        "convnext_base" => (&deep, [128, 256, 512, 1024], Linear, 1e-6),
        "convnext_large" => (&deep, [192, 384, 768, 1536], Linear, 1e-6),
        "convnext_xlarge" => (&deep, [256, 512, 1024, 2048], Linear, 1e-6),
        "convnext_xxlarge" => (&[3, 4, 30, 3], [384, 768, 1536, 3072], Linear, 1e-5),
        _ => return None,
    };
    Some((depths.to_vec(), dims.to_vec(), mlp, eps))
}

impl VisionConfig {
    /// The timm ConvNeXt `name` as open_clip wraps it (`timm_pool: ""`, `timm_proj:
    /// linear`, drop path 0.1), at `image_size` pixels.
    pub fn timm(name: &str, image_size: i64) -> Option<VisionConfig> {
        let (depths, dims, mlp, norm_eps) = timm_convnext(name)?;
        Some(VisionConfig {
            timm_model_name: Some(name.to_string()),
            depths,
            dims,
            mlp,
            mlp_ratio: 4,
            kernel_size: 7,
            ls_init_value: Some(1e-6),
            norm_eps,
            drop_path: 0.1,
            image_size,
            patch_size: 4,
            proj: ProjKind::Linear,
            proj_bias: false,
        })
    }

    /// Channels of the last stage (the pooled feature width).
    pub fn width(&self) -> i64 {
        *self.dims.last().unwrap_or(&0)
    }

    /// Stochastic-depth rate of every block, per stage (timm: linear from 0 to
    /// `drop_path` over all blocks).
    pub fn drop_path_rates(&self) -> Vec<Vec<f64>> {
        let total: i64 = self.depths.iter().sum();
        let mut index = 0i64;
        self.depths
            .iter()
            .map(|&d| {
                (0..d)
                    .map(|_| {
                        let r = if total <= 1 {
                            0.0
                        } else {
                            self.drop_path * index as f64 / (total - 1) as f64
                        };
                        index += 1;
                        r
                    })
                    .collect()
            })
            .collect()
    }
}

impl TextConfig {
    /// open_clip's default text tower (`CLIPTextCfg`) at the given size.
    pub fn open_clip(width: i64, heads: i64, layers: i64) -> TextConfig {
        TextConfig {
            context_length: 77,
            vocab_size: 49408,
            width,
            heads,
            layers,
            mlp_ratio: 4,
            norm_eps: 1e-5,
        }
    }
}

impl ClipConfig {
    /// A named preset (see [`PRESETS`]). `convnext_tiny`.. match open_clip's
    /// `model_configs/<name>.json` exactly. open_clip ships no configs for
    /// atto..nano: those pair timm's tower at 224 px with open_clip's default 512-wide,
    /// 12-layer text tower and a 512-d embedding. `convnext_atto_64` is the small model
    /// of the tests and the training benchmark (19.3M parameters).
    pub fn preset(name: &str) -> Option<ClipConfig> {
        let (tower, image, embed, text) = match name {
            "convnext_atto_64" => {
                let text = TextConfig {
                    context_length: 32,
                    ..TextConfig::open_clip(256, 4, 4)
                };
                ("convnext_atto", 64, 256, text)
            }
            "convnext_atto" | "convnext_femto" | "convnext_pico" | "convnext_nano" => {
                (name, 224, 512, TextConfig::open_clip(512, 8, 12))
            }
            "convnext_tiny" => (name, 224, 1024, TextConfig::open_clip(512, 8, 12)),
            "convnext_small" | "convnext_base" => {
                (name, 224, 512, TextConfig::open_clip(512, 8, 12))
            }
            "convnext_base_w" => (
                "convnext_base",
                256,
                640,
                TextConfig::open_clip(640, 10, 12),
            ),
            "convnext_base_w_320" => (
                "convnext_base",
                320,
                640,
                TextConfig::open_clip(640, 10, 12),
            ),
            "convnext_large" => (name, 224, 768, TextConfig::open_clip(768, 12, 12)),
            "convnext_large_d" => (
                "convnext_large",
                256,
                768,
                TextConfig::open_clip(768, 12, 16),
            ),
            "convnext_large_d_320" => (
                "convnext_large",
                320,
                768,
                TextConfig::open_clip(768, 12, 16),
            ),
            "convnext_xlarge" => (name, 256, 1024, TextConfig::open_clip(1024, 16, 20)),
            "convnext_xxlarge" => (name, 256, 1024, TextConfig::open_clip(1024, 16, 24)),
            "convnext_xxlarge_320" => (
                "convnext_xxlarge",
                320,
                1024,
                TextConfig::open_clip(1024, 16, 24),
            ),
            _ => return None,
        };
        let mut vision = VisionConfig::timm(tower, image)?;
        if name.starts_with("convnext_large_d") {
            vision.proj = ProjKind::Mlp;
        }
        Some(ClipConfig {
            embed_dim: embed,
            vision,
            text,
            init_logit_scale: default_init_logit_scale(),
        })
    }

    /// Checks the numbers are consistent (positive sizes, heads dividing the width,
    /// a timm name only when the tower equals that timm model).
    pub fn validate(&self) -> Result<(), ConfigError> {
        let v = &self.vision;
        let t = &self.text;
        if self.embed_dim <= 0 {
            return Err(bad("embed_dim", "must be positive"));
        }
        if v.depths.is_empty() || v.depths.len() != v.dims.len() {
            return Err(bad(
                "vision.depths",
                "must be non-empty and as long as vision.dims",
            ));
        }
        if v.depths.iter().any(|&d| d <= 0) {
            return Err(bad("vision.depths", "every stage needs at least one block"));
        }
        if v.dims.iter().any(|&d| d <= 0) {
            return Err(bad("vision.dims", "must be positive"));
        }
        for (field, x) in [
            ("vision.mlp_ratio", v.mlp_ratio),
            ("vision.patch_size", v.patch_size),
            ("vision.image_size", v.image_size),
            ("text.context_length", t.context_length),
            ("text.vocab_size", t.vocab_size),
            ("text.width", t.width),
            ("text.heads", t.heads),
            ("text.layers", t.layers),
            ("text.mlp_ratio", t.mlp_ratio),
        ] {
            if x <= 0 {
                return Err(bad(field, "must be positive"));
            }
        }
        if v.kernel_size <= 0 || v.kernel_size % 2 == 0 {
            return Err(bad("vision.kernel_size", "must be a positive odd number"));
        }
        if !(0.0..1.0).contains(&v.drop_path) {
            return Err(bad("vision.drop_path", "must be in [0, 1)"));
        }
        if [v.norm_eps, t.norm_eps].iter().any(|e| e.is_nan() || *e <= 0.0) {
            return Err(bad("norm_eps", "must be positive"));
        }
        let downsampling = v.patch_size * (1 << (v.depths.len() - 1));
        if v.image_size < downsampling {
            return Err(bad(
                "vision.image_size",
                format!("must be at least {downsampling} (the tower's total stride)"),
            ));
        }
        if t.width % t.heads != 0 {
            return Err(bad(
                "text.heads",
                format!("must divide text.width ({})", t.width),
            ));
        }
        if let Some(name) = &v.timm_model_name {
            match timm_convnext(name) {
                None => {
                    return Err(bad(
                        "vision.timm_model_name",
                        format!("unknown timm ConvNeXt `{name}`"),
                    ))
                }
                Some((depths, dims, mlp, _)) => {
                    if depths != v.depths || dims != v.dims || mlp != v.mlp {
                        return Err(bad(
                            "vision.timm_model_name",
                            format!("`{name}` has depths {depths:?}, dims {dims:?}, mlp {mlp:?}; set it to null for a custom tower"),
                        ));
                    }
                }
            }
        }
        Ok(())
    }

    /// The number of trainable parameters, from the config alone (nothing allocated).
    pub fn num_params(&self) -> u64 {
        self.vision_params() + self.text_params() + 1 // logit_scale
    }

    /// Parameters of the image tower including its projection head.
    pub fn vision_params(&self) -> u64 {
        let v = &self.vision;
        let p = |x: i64| x as u64;
        let ln = |d: i64| 2 * p(d);
        let mut n = 0u64;
        // Stem: patchify conv (with bias) + LayerNorm.
        let d0 = v.dims[0];
        n += p(3 * d0 * v.patch_size * v.patch_size + d0) + ln(d0);
        let mut prev = d0;
        for (i, (&depth, &d)) in v.depths.iter().zip(&v.dims).enumerate() {
            if i > 0 {
                // Downsample: LayerNorm + 2x2 stride-2 conv with bias.
                n += ln(prev) + p(prev * d * 4 + d);
            }
            let hidden = v.mlp_ratio * d;
            let block = p(v.ls_init_value.map_or(0, |_| d))
                + p(d * v.kernel_size * v.kernel_size + d)
                + ln(d)
                + p(d * hidden + hidden)
                + p(hidden * d + d);
            n += p(depth) * block;
            prev = d;
        }
        n += ln(prev); // head norm
        let e = self.embed_dim;
        let bias = |out: i64| if v.proj_bias { p(out) } else { 0 };
        n += match v.proj {
            ProjKind::Linear => p(prev * e) + bias(e),
            ProjKind::Mlp => p(prev * 2 * e + 2 * e) + p(2 * e * e) + bias(e),
        };
        n
    }

    /// Parameters of the text tower including `text_projection`.
    pub fn text_params(&self) -> u64 {
        let t = &self.text;
        let p = |x: i64| x as u64;
        let w = t.width;
        let hidden = t.mlp_ratio * w;
        let layer = p(2 * w) // ln_1
            + p(3 * w * w + 3 * w) // attn.in_proj
            + p(w * w + w) // attn.out_proj
            + p(2 * w) // ln_2
            + p(w * hidden + hidden) // mlp.c_fc
            + p(hidden * w + w); // mlp.c_proj
        p(t.vocab_size * w)
            + p(t.context_length * w)
            + p(t.layers) * layer
            + p(2 * w)
            + p(w * self.embed_dim)
    }

    /// The `open_clip.CLIP(**cfg)` keyword arguments that build this model, when the
    /// image tower is a named timm model (`None` for custom towers, which open_clip
    /// cannot express).
    pub fn open_clip_kwargs(&self) -> Option<serde_json::Value> {
        let v = &self.vision;
        let name = v.timm_model_name.as_ref()?;
        let (_, _, _, eps) = timm_convnext(name)?;
        if v.mlp_ratio != 4
            || v.kernel_size != 7
            || v.ls_init_value != Some(1e-6)
            || v.norm_eps != eps
            || v.patch_size != 4
        {
            return None;
        }
        let t = &self.text;
        if t.norm_eps != 1e-5 {
            return None;
        }
        Some(serde_json::json!({
            "embed_dim": self.embed_dim,
            "vision_cfg": {
                "timm_model_name": name,
                "timm_model_pretrained": false,
                "timm_pool": "",
                "timm_proj": match v.proj { ProjKind::Linear => "linear", ProjKind::Mlp => "mlp" },
                "timm_proj_bias": v.proj_bias,
                "timm_drop": 0.0,
                "timm_drop_path": v.drop_path,
                "image_size": v.image_size,
            },
            "text_cfg": {
                "context_length": t.context_length,
                "vocab_size": t.vocab_size,
                "width": t.width,
                "heads": t.heads,
                "layers": t.layers,
                "mlp_ratio": t.mlp_ratio as f64,
            },
            "init_logit_scale": self.init_logit_scale,
        }))
    }
}

/// How a pipeline names a model: a preset, or a preset plus overrides, or a full config.
///
/// ```yaml
/// model: convnext_atto_64
/// model: {preset: convnext_atto_64, text: {vocab_size: 260}, vision: {drop_path: 0.0}}
/// model: {embed_dim: 256, vision: {...}, text: {...}, init_logit_scale: 2.659}
/// ```
pub fn config_from_json(value: &serde_json::Value) -> Result<ClipConfig, ConfigError> {
    let resolved = match value {
        serde_json::Value::String(name) => {
            ClipConfig::preset(name).ok_or_else(|| unknown_preset(name))?
        }
        serde_json::Value::Object(map) => match map.get("preset") {
            Some(serde_json::Value::String(name)) => {
                let base = ClipConfig::preset(name).ok_or_else(|| unknown_preset(name))?;
                let mut merged = serde_json::to_value(&base).expect("config serializes");
                let mut overrides = map.clone();
                overrides.remove("preset");
                merge(&mut merged, &serde_json::Value::Object(overrides));
                serde_json::from_value(merged).map_err(|e| bad("model", e.to_string()))?
            }
            Some(_) => return Err(bad("model.preset", "expected a preset name")),
            None => {
                serde_json::from_value(value.clone()).map_err(|e| bad("model", e.to_string()))?
            }
        },
        _ => return Err(bad("model", "expected a preset name or a config object")),
    };
    resolved.validate()?;
    Ok(resolved)
}

fn unknown_preset(name: &str) -> ConfigError {
    bad(
        "model",
        format!("unknown preset `{name}` (known: {})", PRESETS.join(", ")),
    )
}

/// Recursive JSON merge: objects merge key by key, anything else replaces.
fn merge(base: &mut serde_json::Value, over: &serde_json::Value) {
    match (base, over) {
        (serde_json::Value::Object(b), serde_json::Value::Object(o)) => {
            for (k, v) in o {
                match b.get_mut(k) {
                    Some(slot) => merge(slot, v),
                    None => {
                        b.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        (b, o) => *b = o.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xxlarge_preset_has_the_model_cards_parameter_count() {
        let cfg = ClipConfig::preset("convnext_xxlarge").unwrap();
        assert_eq!(cfg.num_params(), 1_200_576_385);
    }

    #[test]
    fn bench_preset_matches_open_clip_count() {
        // open_clip.CLIP(**cfg) of /work/shared/bench/oc_train_bench.py: 19,338,169.
        let cfg = ClipConfig::preset("convnext_atto_64").unwrap();
        assert_eq!(cfg.num_params(), 19_338_169);
    }

    #[test]
    fn every_preset_validates_and_round_trips_through_json() {
        for name in PRESETS {
            let cfg = ClipConfig::preset(name).unwrap();
            cfg.validate().unwrap();
            let json = serde_json::to_string(&cfg).unwrap();
            let back: ClipConfig = serde_json::from_str(&json).unwrap();
            assert_eq!(back, cfg, "{name}");
            assert!(cfg.open_clip_kwargs().is_some(), "{name}");
        }
    }

    #[test]
    fn overrides_merge_over_a_preset() {
        let v = serde_json::json!({"preset": "convnext_atto_64", "text": {"vocab_size": 300}, "vision": {"drop_path": 0.0}});
        let cfg = config_from_json(&v).unwrap();
        assert_eq!(cfg.text.vocab_size, 300);
        assert_eq!(cfg.text.width, 256);
        assert_eq!(cfg.vision.drop_path, 0.0);
    }

    #[test]
    fn unknown_fields_and_presets_are_errors_naming_them() {
        let e = config_from_json(&serde_json::json!("convnext_huge")).unwrap_err();
        assert!(e.to_string().contains("convnext_huge"), "{e}");
        let e = config_from_json(
            &serde_json::json!({"preset": "convnext_atto_64", "text": {"widht": 3}}),
        )
        .unwrap_err();
        assert!(e.to_string().contains("widht"), "{e}");
    }

    #[test]
    fn heads_must_divide_width() {
        let mut cfg = ClipConfig::preset("convnext_atto_64").unwrap();
        cfg.text.heads = 3;
        assert_eq!(cfg.validate().unwrap_err().field, "text.heads");
    }

    #[test]
    fn drop_path_rates_rise_linearly_over_all_blocks() {
        let cfg = ClipConfig::preset("convnext_atto").unwrap();
        let r = cfg.vision.drop_path_rates();
        assert_eq!(r.iter().map(Vec::len).collect::<Vec<_>>(), vec![2, 2, 6, 2]);
        assert_eq!(r[0][0], 0.0);
        assert!((r[3][1] - 0.1).abs() < 1e-12);
        assert!((r[0][1] - 0.1 / 11.0).abs() < 1e-12);
    }
}
