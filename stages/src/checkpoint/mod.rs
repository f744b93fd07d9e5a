//! Checkpoints in open_clip's format.
//!
//! - **Model weights** (`tureen_torch::checkpoint::{save_weights, load_weights}`): one
//!   safetensors file whose tensor names and shapes are exactly open_clip's
//!   `CLIP.state_dict()` keys, so it loads into `open_clip.CLIP(**cfg)` with
//!   `strict=True` (after `safetensors.torch.load_file`) and an open_clip state dict saved
//!   as safetensors loads here. The model's [`ClipConfig`] is embedded as JSON under the
//!   `__metadata__` key `tureen.clip_config`, so a file alone says which model it is.
//! - **Training checkpoints** (`tureen_torch::checkpoint::TrainCheckpoint`): a directory
//!   committed to the store as a tree artifact, holding `model.safetensors`,
//!   `optimizer.safetensors` (AdamW `exp_avg.<param>` / `exp_avg_sq.<param>`) and
//!   `state.json` (step, samples seen, interval, model config, hyper-parameters, seed).
//!
//! This module reads what needs no libtorch: the model config embedded in a weights
//! file, and a checkpoint's `state.json`. Reading and writing the tensors is
//! `tureen_torch::checkpoint`.

mod train_state;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use tureen_artifacts::checkpoint::{Checkpoint, OpenOptions};
use tureen_artifacts::soup::SoupOptions;

use crate::model::ClipConfig;

pub use train_state::{TrainState, MODEL_FILE, OPTIMIZER_FILE, STATE_FILE, TRAIN_STATE_FORMAT};

/// `__metadata__` key holding the model config as JSON.
pub const CONFIG_KEY: &str = "tureen.clip_config";

/// Soups carry the ingredients' model config (`tureen.clip_config` in `__metadata__`)
/// so that every candidate and the result load as models without extra params.
pub fn inherit_model_config(
    opts: &SoupOptions,
    ingredients: &[PathBuf],
) -> anyhow::Result<SoupOptions> {
    let mut opts = opts.clone();
    if let Some(d) = &opts.input_digests {
        anyhow::ensure!(
            d.len() == ingredients.len(),
            "{} input digests given for {} ingredients",
            d.len(),
            ingredients.len()
        );
    }
    if opts.provenance && !opts.extra_metadata.contains_key(CONFIG_KEY) {
        for path in ingredients {
            if let Some(config) = read_metadata(path)?.remove(CONFIG_KEY) {
                opts.extra_metadata.insert(CONFIG_KEY.to_string(), config);
                break;
            }
        }
    }
    Ok(opts)
}

/// Errors reading or writing checkpoints; every variant names the file (and tensor).
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// Reading, writing or creating a file or directory failed.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// One tensor cannot be used: wrong shape or dtype for the model, or bad bytes.
    #[error("{path}: tensor `{tensor}`: {message}")]
    Tensor {
        /// The weights file.
        path: PathBuf,
        /// The tensor's name, as in the file.
        tensor: String,
        /// What is wrong with it.
        message: String,
    },
    /// The file's tensor names are not the model's (missing or unexpected tensors).
    #[error("{path}: {message}")]
    Mismatch {
        /// The weights file.
        path: PathBuf,
        /// Which names are missing and which unexpected (the first few of each).
        message: String,
    },
    /// The non-tensor part is unusable: `state.json`, the embedded model config, or the
    /// fields of an open_clip `torch.save` checkpoint.
    #[error("{path}: {message}")]
    State {
        /// The file holding the state.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
    /// A safetensors file that cannot be read or written (names the file itself).
    #[error(transparent)]
    Safetensors(#[from] tureen_artifacts::safetensors::SafetensorsError),
    /// A checkpoint of any format that cannot be read.
    #[error(transparent)]
    Source(#[from] tureen_artifacts::checkpoint::CheckpointError),
}

/// The `__metadata__` of a checkpoint (empty when it has none, as `torch.save` files
/// never do). The file is validated in full first, so a truncated or lying file is an
/// error here.
pub fn read_metadata(path: &Path) -> Result<BTreeMap<String, String>, CheckpointError> {
    let ckpt = Checkpoint::open(path, &OpenOptions::default())?;
    Ok(ckpt.metadata().clone())
}

/// The model config embedded in a weights file, if it has one.
pub fn read_config(path: &Path) -> Result<Option<ClipConfig>, CheckpointError> {
    let file = read_metadata(path)?;
    config_from_metadata(path, &file)
}

/// The model config in a file's `__metadata__` (`None`: the file has none).
pub fn config_from_metadata(
    path: &Path,
    metadata: &BTreeMap<String, String>,
) -> Result<Option<ClipConfig>, CheckpointError> {
    let Some(json) = metadata.get(CONFIG_KEY) else {
        return Ok(None);
    };
    let cfg: ClipConfig = serde_json::from_str(json).map_err(|e| CheckpointError::State {
        path: path.to_path_buf(),
        message: format!("__metadata__.{CONFIG_KEY}: {e}"),
    })?;
    cfg.validate().map_err(|e| CheckpointError::State {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    Ok(Some(cfg))
}
