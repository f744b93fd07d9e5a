//! Training checkpoints: a directory with the weights, the optimizer moments and the
//! position in the run.
//!
//! ```text
//! checkpoint-000003/
//!   model.safetensors      open_clip state_dict keys, float32, config in __metadata__
//!   optimizer.safetensors  exp_avg.<param>, exp_avg_sq.<param> (AdamW moments)
//!   state.json             TrainState: interval, step, samples, schedule, AdamW, seed...
//! ```

use std::collections::BTreeMap;
use std::path::Path;

use tch::nn::VarStore;
use tch::Tensor;
use tureen_stages::checkpoint::{TrainState, MODEL_FILE, OPTIMIZER_FILE, STATE_FILE};

use super::{save_weights, tensor_file, CheckpointError};

/// Writing checkpoint directories and loading their tensors (`state.json` alone:
/// [`TrainState::read`]).
pub struct TrainCheckpoint;

impl TrainCheckpoint {
    /// Writes a complete checkpoint into `dir` (created). Files are written atomically
    /// and `state.json` last, so a directory with a `state.json` is complete.
    pub fn write(
        dir: &Path,
        vs: &VarStore,
        optimizer: &BTreeMap<String, Tensor>,
        state: &TrainState,
    ) -> Result<(), CheckpointError> {
        std::fs::create_dir_all(dir).map_err(|e| CheckpointError::Io {
            path: dir.to_path_buf(),
            source: e,
        })?;
        save_weights(&dir.join(MODEL_FILE), vs, &state.model)?;
        let mut meta = BTreeMap::new();
        meta.insert("format".to_string(), "pt".to_string());
        tensor_file::write(&dir.join(OPTIMIZER_FILE), optimizer, &meta)?;
        let json = serde_json::to_vec_pretty(state).expect("state serializes");
        tensor_file::write_bytes(&dir.join(STATE_FILE), &json)
    }

    /// Loads the weights into `vs` (strict) and returns the optimizer tensors.
    pub fn load_into(
        dir: &Path,
        vs: &VarStore,
    ) -> Result<BTreeMap<String, Tensor>, CheckpointError> {
        super::load_weights(vs, &dir.join(MODEL_FILE))?;
        Ok(tensor_file::read(&dir.join(OPTIMIZER_FILE))?.tensors)
    }
}
