//! Training checkpoints: a directory with the weights, the optimizer moments and the
//! position in the run.
//!
//! ```text
//! checkpoint-000003/
//!   model.safetensors      open_clip state_dict keys, float32, config in __metadata__
//!   optimizer.safetensors  exp_avg.<param>, exp_avg_sq.<param> (AdamW moments)
//!   state.json             TrainState: interval, step, samples, schedule, AdamW, seed...
//! ```

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::CheckpointError;
use crate::model::ClipConfig;
use crate::train::{AdamWConfig, Schedule};

/// The weights file of a checkpoint directory (open_clip state-dict names).
pub const MODEL_FILE: &str = "model.safetensors";
/// The AdamW moments file of a checkpoint directory (`exp_avg.<param>`,
/// `exp_avg_sq.<param>`).
pub const OPTIMIZER_FILE: &str = "optimizer.safetensors";
/// The [`TrainState`] file of a checkpoint directory.
pub const STATE_FILE: &str = "state.json";
/// `state.json`'s `format` value; bumped when the layout changes.
pub const TRAIN_STATE_FORMAT: &str = "tureen.train-state/1";

/// Where a run stood when the checkpoint was written (`state.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainState {
    /// [`TRAIN_STATE_FORMAT`]; [`TrainState::read`] refuses any other.
    pub format: String,
    /// Intervals completed (this checkpoint is the end of interval `interval`, 1-based).
    pub interval: u64,
    /// Schedule position: optimizer steps in this run's schedule.
    pub step: u64,
    /// AdamW's own step count (bias correction); differs from `step` after a rewind
    /// with a different batch size, as in open_clip.
    pub adam_step: u64,
    /// Training samples consumed so far, over all intervals (and earlier runs).
    pub samples_seen: u64,
    /// The run's global batch (samples per optimizer step).
    pub batch_size: u64,
    /// Samples per checkpoint interval of the run.
    pub samples_per_interval: u64,
    /// Optimizer steps per interval (`samples_per_interval / batch_size`, rounded).
    pub steps_per_interval: u64,
    /// Intervals of the run's whole schedule.
    pub intervals: u64,
    /// The run's lr schedule.
    pub schedule: Schedule,
    /// AdamW's betas, eps and weight decay (a rewind keeps them unless `optimizer: fresh`).
    pub optimizer: AdamWConfig,
    /// Gradient-norm clipping of the run (`None`: none).
    pub grad_clip_norm: Option<f64>,
    /// Base seed; every random draw derives from (seed, step) or (seed, interval).
    pub seed: u64,
    /// The model's config (also embedded in [`MODEL_FILE`]).
    pub model: ClipConfig,
}

impl TrainState {
    /// Reads `state.json` of a checkpoint directory.
    pub fn read(dir: &Path) -> Result<TrainState, CheckpointError> {
        let path = dir.join(STATE_FILE);
        let bytes = std::fs::read(&path).map_err(|e| CheckpointError::Io {
            path: path.clone(),
            source: e,
        })?;
        let state: TrainState =
            serde_json::from_slice(&bytes).map_err(|e| CheckpointError::State {
                path: path.clone(),
                message: format!("line {} column {}: {e}", e.line(), e.column()),
            })?;
        if state.format != TRAIN_STATE_FORMAT {
            return Err(CheckpointError::State {
                path,
                message: format!("format `{}` is not `{TRAIN_STATE_FORMAT}`", state.format),
            });
        }
        Ok(state)
    }
}
