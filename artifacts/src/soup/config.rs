//! mergekit `linear` YAML configs, so existing soup configs work unchanged:
//!
//! ```yaml
//! merge_method: linear
//! models:
//!   - model: core/final.safetensors
//!     parameters: {weight: 0.5}
//!   - model: rewind/final.safetensors
//!     parameters: {weight: 0.5}
//! dtype: float32          # optional: inputs are cast to this before merging (mergekit)
//! out_dtype: bfloat16     # optional: output dtype (default: dtype, else the input dtype)
//! parameters: {normalize: true}   # optional; a top-level weight is a default per model
//! ```
//!
//! `model:` is a checkpoint file (`.safetensors`, or a `torch.save` file) or a directory
//! (holding `model.safetensors`, or a sharded checkpoint with its index). Relative
//! paths are resolved against the current directory (as mergekit does) and, if nothing is
//! there, against the config file's directory. Keys that only matter for Hugging Face
//! models (`base_model`, `tokenizer_source`, `tokenizer`, `chat_template`, `name`) are
//! accepted and ignored; anything else is an error rather than silently different output.

use std::path::{Path, PathBuf};

use serde::de::{IgnoredAny, Visitor};
use serde::{Deserialize, Deserializer};

use super::{Accumulate, SoupError, SoupOptions};
use crate::safetensors::Dtype;

/// A parsed, resolved linear-merge config.
#[derive(Debug, Clone, PartialEq)]
pub struct SoupConfig {
    /// Input checkpoint files, in config order.
    pub inputs: Vec<PathBuf>,
    /// One weight per input.
    pub weights: Vec<f64>,
    /// mergekit `dtype:` (inputs are cast to it; it is also the default output dtype).
    pub dtype: Option<Dtype>,
    /// mergekit `out_dtype:`: the output's dtype (default: `dtype`, else each tensor's own).
    pub out_dtype: Option<Dtype>,
    /// mergekit `parameters.normalize` (default true).
    pub normalize: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    merge_method: String,
    models: Vec<RawModel>,
    #[serde(default)]
    parameters: Option<RawParams>,
    #[serde(default)]
    dtype: Option<String>,
    #[serde(default)]
    out_dtype: Option<String>,
    // Accepted and ignored: they concern tokenizers and model cards, not tensors.
    #[serde(default, rename = "base_model")]
    _base_model: Option<IgnoredAny>,
    #[serde(default, rename = "tokenizer_source")]
    _tokenizer_source: Option<IgnoredAny>,
    #[serde(default, rename = "tokenizer")]
    _tokenizer: Option<IgnoredAny>,
    #[serde(default, rename = "chat_template")]
    _chat_template: Option<IgnoredAny>,
    #[serde(default, rename = "name")]
    _name: Option<IgnoredAny>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawModel {
    model: String,
    #[serde(default)]
    parameters: Option<RawParams>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawParams {
    #[serde(default)]
    weight: Option<RawWeight>,
    #[serde(default)]
    normalize: Option<bool>,
}

/// Parses mergekit's dtype spellings.
pub fn parse_torch_dtype(s: &str) -> Option<Dtype> {
    match s.trim().to_ascii_lowercase().trim_start_matches("torch.") {
        "float32" | "fp32" | "f32" | "float" => Some(Dtype::F32),
        "float16" | "fp16" | "f16" | "half" => Some(Dtype::F16),
        "bfloat16" | "bf16" => Some(Dtype::BF16),
        "float64" | "fp64" | "f64" | "double" => Some(Dtype::F64),
        _ => None,
    }
}

impl SoupConfig {
    /// Reads and resolves a config file. Errors name the file (and line:column for YAML
    /// syntax and type errors).
    pub fn from_file(path: &Path) -> Result<SoupConfig, SoupError> {
        let text = std::fs::read_to_string(path).map_err(|e| SoupError::Config {
            path: path.to_path_buf(),
            message: format!("cannot read: {e}"),
        })?;
        SoupConfig::parse(&text, path)
    }

    /// Parses config text; `path` names the file in errors and anchors relative paths.
    pub fn parse(text: &str, path: &Path) -> Result<SoupConfig, SoupError> {
        let err = |message: String| SoupError::Config {
            path: path.to_path_buf(),
            message,
        };
        let raw = read_yaml(text).map_err(err)?;
        if raw.merge_method != "linear" {
            return Err(err(format!(
                "merge_method {:?} is not supported; tureen soup implements mergekit's \"linear\"",
                raw.merge_method
            )));
        }
        if raw.models.is_empty() {
            return Err(err("`models` is empty".into()));
        }
        let global = raw.parameters.unwrap_or_default();
        let global_weight = global
            .weight
            .as_ref()
            .map(|w| weight_value(w, "parameters.weight"))
            .transpose()
            .map_err(err)?;
        let mut inputs = Vec::new();
        let mut weights = Vec::new();
        let base_dir = crate::fsutil::parent_dir(path);
        for (i, m) in raw.models.iter().enumerate() {
            let own = m.parameters.as_ref().and_then(|p| p.weight.as_ref());
            if m.parameters.as_ref().is_some_and(|p| p.normalize.is_some()) {
                return Err(err(format!(
                    "models[{i}]: `normalize` is a global parameter, not a per-model one"
                )));
            }
            let w = match own {
                Some(v) => {
                    weight_value(v, &format!("models[{i}].parameters.weight")).map_err(err)?
                }
                None => global_weight
                    .ok_or_else(|| err(format!("models[{i}] ({}) has no weight", m.model)))?,
            };
            inputs.push(
                resolve_model(&m.model, base_dir).map_err(|m| err(format!("models[{i}]: {m}")))?,
            );
            weights.push(w);
        }
        let dtype = raw
            .dtype
            .as_deref()
            .map(|d| {
                parse_torch_dtype(d).ok_or_else(|| {
                    err(format!(
                        "dtype {d:?} is not float32, float16, bfloat16 or float64"
                    ))
                })
            })
            .transpose()?;
        let out_dtype = raw
            .out_dtype
            .as_deref()
            .map(|d| {
                parse_torch_dtype(d).ok_or_else(|| {
                    err(format!(
                        "out_dtype {d:?} is not float32, float16, bfloat16 or float64"
                    ))
                })
            })
            .transpose()?;
        Ok(SoupConfig {
            inputs,
            weights,
            dtype,
            out_dtype,
            normalize: global.normalize.unwrap_or(true),
        })
    }

    /// Sets the options this config controls (dtype casts, output dtype, normalization).
    pub fn apply(&self, opts: &mut SoupOptions) {
        opts.input_cast = self.dtype;
        opts.out_dtype = self.out_dtype.or(self.dtype);
        opts.normalize = self.normalize;
        opts.accumulate = Accumulate::F32;
    }
}

/// The config's YAML, typed; errors say `line:column:` where they are.
fn read_yaml(text: &str) -> Result<RawConfig, String> {
    use marked_yaml::{FromYamlError, LoaderOptions};
    // Plain scalars are typed as YAML types them (mergekit reads its configs with
    // PyYAML); a quoted one stays a string.
    let options = LoaderOptions::default().error_on_duplicate_keys(true);
    marked_yaml::from_yaml_with_options(0, text, options).map_err(|e| {
        let at = match &e {
            FromYamlError::ParseYaml(p) => p.to_string(),
            FromYamlError::FromNode(n) => match n.start_mark() {
                Some(m) => format!("line {} column {}: {n}", m.line(), m.column()),
                None => n.to_string(),
            },
        };
        format!("invalid config: {at}")
    })
}

/// A `weight:` as written: a number (plain or quoted, as mergekit's pydantic model
/// coerces it), a per-layer list (which mergekit has and tureen has not), or anything
/// else.
#[derive(Debug, Clone, PartialEq)]
enum RawWeight {
    Number(f64),
    List,
    Other(String),
}

impl<'de> Deserialize<'de> for RawWeight {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawWeight;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a number")
            }
            fn visit_f64<E>(self, v: f64) -> Result<RawWeight, E> {
                Ok(RawWeight::Number(v))
            }
            fn visit_i64<E>(self, v: i64) -> Result<RawWeight, E> {
                Ok(RawWeight::Number(v as f64))
            }
            fn visit_u64<E>(self, v: u64) -> Result<RawWeight, E> {
                Ok(RawWeight::Number(v as f64))
            }
            fn visit_str<E>(self, v: &str) -> Result<RawWeight, E> {
                Ok(match v.trim().parse::<f64>() {
                    Ok(n)
                        if v.trim()
                            .chars()
                            .all(|c| c.is_ascii_digit() || "+-.eE".contains(c)) =>
                    {
                        RawWeight::Number(n)
                    }
                    _ => RawWeight::Other(v.to_string()),
                })
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut a: A,
            ) -> Result<RawWeight, A::Error> {
                while a.next_element::<IgnoredAny>()?.is_some() {}
                Ok(RawWeight::List)
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut a: A,
            ) -> Result<RawWeight, A::Error> {
                while a.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(RawWeight::Other("a mapping".into()))
            }
        }
        d.deserialize_any(V)
    }
}

fn weight_value(v: &RawWeight, field: &str) -> Result<f64, String> {
    match v {
        RawWeight::Number(n) => Ok(*n),
        RawWeight::List => Err(format!(
            "{field}: per-layer weight gradients (lists) are not supported; give one number per model"
        )),
        RawWeight::Other(other) => Err(format!("{field}: expected a number, found {other:?}")),
    }
}

fn resolve_model(model: &str, base_dir: &Path) -> Result<PathBuf, String> {
    let given = PathBuf::from(model);
    let candidates = if given.is_absolute() {
        vec![given.clone()]
    } else {
        vec![given.clone(), base_dir.join(&given)]
    };
    for c in &candidates {
        // Files and directories alike are opened by `Checkpoint::open`, which says
        // what is wrong with one it cannot read.
        if c.exists() {
            return Ok(c.clone());
        }
    }
    Err(format!(
        "model {model:?} not found (looked for {})",
        candidates
            .iter()
            .map(|c| c.display().to_string())
            .collect::<Vec<_>>()
            .join(" and ")
    ))
}
