//! The params of an `eval` stage (also the held-out evaluation of a greedy soup), and
//! where a model input's weights are.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::Value;

use tureen_engine::kind::ParamError;

use crate::tokenizer::TokenizerSpec;

/// The params of `kind: eval`, and of a greedy soup's held-out evaluation. Paths are
/// relative to an `eval` stage's `data` input when it has one, else to the workspace.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvalParams {
    /// Zero-shot classification set: an image folder or a shard pattern with `.cls`.
    #[serde(default)]
    pub data: Option<String>,
    /// Class names file, one per line, in label order.
    #[serde(default)]
    pub classnames: Option<String>,
    /// Prompt templates file, one per line, `{c}` (or `{}`) = class name.
    #[serde(default)]
    pub templates: Option<String>,
    /// Retrieval set: shards with `.txt` holding one caption per line.
    #[serde(default)]
    pub retrieval: Option<String>,
    /// How prompts and captions become ids (default `byte`); must be the one the model
    /// was trained with.
    #[serde(default)]
    pub tokenizer: TokenizerSpec,
    /// Model config (preset name or object); default: the one embedded in the checkpoint.
    #[serde(default)]
    pub model: Option<Value>,
    /// Images per forward pass (default 64); affects speed and memory, not the metrics.
    #[serde(default = "default_batch_size")]
    pub batch_size: usize,
    /// Decoding threads for a webdataset set (default 2; an image folder decodes on
    /// rayon's pool).
    #[serde(default = "default_workers")]
    pub workers: usize,
    /// Where to run: `auto` (default), `cpu`, `cuda` or `cuda:N` (see
    /// [`crate::device::DeviceSpec`]).
    #[serde(default = "default_device")]
    pub device: String,
    /// libtorch intra-op threads on the CPU (default: 2 with portable numerics,
    /// libtorch's choice with native ones).
    #[serde(default)]
    pub threads: Option<i32>,
    /// How the CPU numerics are pinned ([`crate::numerics`]; default portable).
    #[serde(default)]
    pub numerics: crate::numerics::Numerics,
}

fn default_batch_size() -> usize {
    64
}
fn default_workers() -> usize {
    2
}
fn default_device() -> String {
    "auto".into()
}

impl EvalParams {
    /// Parses and checks params; errors name the param.
    pub fn from_params(params: &serde_json::Map<String, Value>) -> Result<Self, ParamError> {
        // First, so a bad `numerics` or `threads` gets a message that names it.
        crate::numerics::NumericsSetting::from_params(params)?;
        let parsed: EvalParams = crate::params::deserialize(params)?;
        if parsed.data.is_none() && parsed.retrieval.is_none() {
            return Err(ParamError::param(
                "data",
                "give `data` (zero-shot classification) and/or `retrieval`",
            ));
        }
        if parsed.data.is_some() {
            if parsed.classnames.is_none() {
                return Err(ParamError::param(
                    "classnames",
                    "required with `data` (a file with one class name per line)",
                ));
            }
            if parsed.templates.is_none() {
                return Err(ParamError::param(
                    "templates",
                    "required with `data` (a file with one template per line)",
                ));
            }
        }
        if parsed.batch_size == 0 {
            return Err(ParamError::param("batch_size", "must be at least 1"));
        }
        crate::device::check(&parsed.device)?;
        if let Some(model) = &parsed.model {
            crate::model::config_from_json(model).map_err(crate::params::model_error)?;
        }
        Ok(parsed)
    }
}

/// The weights of a model input: `model.safetensors` inside a training-checkpoint
/// directory, else the path itself (a file of any checkpoint format, e.g. open_clip's
/// `epoch_N.pt`, or a sharded directory), which is opened by content.
pub fn weights_path(path: &Path) -> PathBuf {
    let inner = path.join(crate::checkpoint::MODEL_FILE);
    if path.is_dir() && inner.is_file() {
        inner
    } else {
        path.to_path_buf()
    }
}
