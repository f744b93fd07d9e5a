//! Checkpoints in open_clip's format: reading and writing their tensors. (The config
//! in `__metadata__` and `state.json` need no libtorch: `tureen_stages::checkpoint`,
//! re-exported here.)
//!
//! - **Model weights** ([`save_weights`], [`load_weights`]): one safetensors file whose
//!   tensor names and shapes are exactly open_clip's `CLIP.state_dict()` keys, so it loads
//!   into `open_clip.CLIP(**cfg)` with `strict=True` (after `safetensors.torch.load_file`)
//!   and an open_clip state dict saved as safetensors loads here. The model's
//!   [`ClipConfig`] is embedded as JSON under the `__metadata__` key
//!   `tureen.clip_config`, so a file alone says which model it is.
//! - **Training checkpoints** ([`TrainCheckpoint`]): a directory committed to the store
//!   as a tree artifact, holding `model.safetensors`, `optimizer.safetensors` (AdamW
//!   `exp_avg.<param>` / `exp_avg_sq.<param>`) and `state.json` (step, samples seen,
//!   interval, model config, hyper-parameters, seed).
//!
//! Tensors are written contiguous, from the CPU, one at a time, atomically (temp file,
//! fsync, rename).

pub mod open_clip;
pub mod tensor_file;
mod train_checkpoint;

use std::collections::BTreeMap;
use std::path::Path;

use tch::nn::VarStore;
use tch::{Kind, Tensor};
pub use tureen_stages::checkpoint::{
    config_from_metadata, inherit_model_config, read_config, read_metadata, CheckpointError,
    TrainState, CONFIG_KEY, MODEL_FILE, OPTIMIZER_FILE, STATE_FILE, TRAIN_STATE_FORMAT,
};

use crate::model::ClipConfig;

pub use train_checkpoint::TrainCheckpoint;

/// The store's variables by name (open_clip's keys, see [`crate::model::Clip`]).
pub fn named_tensors(vs: &VarStore) -> BTreeMap<String, Tensor> {
    vs.variables().into_iter().collect()
}

/// Saves a model's weights (as stored: float32 during training) with its config.
pub fn save_weights(path: &Path, vs: &VarStore, cfg: &ClipConfig) -> Result<(), CheckpointError> {
    save_tensors_with_config(path, &named_tensors(vs), cfg)
}

/// Saves named tensors with the model config embedded.
pub fn save_tensors_with_config(
    path: &Path,
    tensors: &BTreeMap<String, Tensor>,
    cfg: &ClipConfig,
) -> Result<(), CheckpointError> {
    let mut metadata = BTreeMap::new();
    metadata.insert("format".to_string(), "pt".to_string());
    metadata.insert(
        CONFIG_KEY.to_string(),
        serde_json::to_string(cfg).expect("config serializes"),
    );
    tensor_file::write(path, tensors, &metadata)
}

/// Copies named tensors into the store's variables, strictly: every variable must be
/// present with the same shape and no extra tensor may be left over (like
/// `load_state_dict(strict=True)`). Values are converted to the variable's kind and
/// device (so a bf16 soup loads into a float32 model).
pub fn copy_into(
    vs: &VarStore,
    tensors: &BTreeMap<String, Tensor>,
    path: &Path,
) -> Result<(), CheckpointError> {
    let vars = named_tensors(vs);
    let missing: Vec<&String> = vars.keys().filter(|k| !tensors.contains_key(*k)).collect();
    let unexpected: Vec<&String> = tensors.keys().filter(|k| !vars.contains_key(*k)).collect();
    if !missing.is_empty() || !unexpected.is_empty() {
        let show = |v: &[&String]| {
            v.iter()
                .take(5)
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        };
        return Err(CheckpointError::Mismatch {
            path: path.to_path_buf(),
            message: format!(
                "does not match the model: {} missing tensor(s) [{}], {} unexpected tensor(s) [{}]",
                missing.len(),
                show(&missing),
                unexpected.len(),
                show(&unexpected)
            ),
        });
    }
    for (name, var) in &vars {
        let t = &tensors[name];
        if t.size() != var.size() {
            return Err(CheckpointError::Tensor {
                path: path.to_path_buf(),
                tensor: name.clone(),
                message: format!(
                    "shape {:?} in the file, {:?} in the model",
                    t.size(),
                    var.size()
                ),
            });
        }
        if !t.is_floating_point() {
            return Err(CheckpointError::Tensor {
                path: path.to_path_buf(),
                tensor: name.clone(),
                message: format!("dtype {:?} is not a floating-point kind", t.kind()),
            });
        }
        tch::no_grad(|| var.shallow_clone().copy_(t));
    }
    Ok(())
}

/// Loads a weights file (any checkpoint format, see [`tensor_file::read`]) into the
/// store's variables (strict, see [`copy_into`]). Returns the config embedded in the
/// file, if any.
pub fn load_weights(vs: &VarStore, path: &Path) -> Result<Option<ClipConfig>, CheckpointError> {
    let file = tensor_file::read(path)?;
    let cfg = config_from_metadata(path, &file.metadata)?;
    copy_into(vs, &file.tensors, path)?;
    Ok(cfg)
}

/// Builds a model from a weights file with an embedded config (or `cfg` when given,
/// which wins) on `device`.
pub fn load_model(
    path: &Path,
    cfg: Option<&ClipConfig>,
    device: tch::Device,
) -> Result<(VarStore, crate::model::Clip), CheckpointError> {
    let cfg = match cfg {
        Some(c) => c.clone(),
        None => read_config(path)?.ok_or_else(|| CheckpointError::State {
            path: path.to_path_buf(),
            message: format!(
                "no model config in __metadata__.{CONFIG_KEY} (a torch.save checkpoint carries none); give it as params.model"
            ),
        })?,
    };
    let vs = VarStore::new(device);
    let model = crate::model::Clip::new(&vs.root(), &cfg);
    load_weights(&vs, path)?;
    Ok((vs, model))
}

/// Converts every floating tensor to `kind` (e.g. bf16 for release files).
pub fn to_kind(tensors: &BTreeMap<String, Tensor>, kind: Kind) -> BTreeMap<String, Tensor> {
    tensors
        .iter()
        .map(|(k, t)| {
            (
                k.clone(),
                if t.is_floating_point() {
                    t.to_kind(kind)
                } else {
                    t.shallow_clone()
                },
            )
        })
        .collect()
}
