//! Rewinds that do not start from a tureen checkpoint directory with its optimizer:
//! from an open_clip `epoch_N.pt` (see [`crate::checkpoint::open_clip`]), or from any checkpoint
//! with `optimizer: fresh` (AdamW from zero moments and step 0, with the stage's own
//! betas, eps and weight decay). Either way the schedule is entered at
//! `interval x steps_per_interval`, as for every rewind.

use std::path::Path;

use tureen_stages::checkpoint::TrainState;

use super::Trainer;
use crate::checkpoint::open_clip::{is_torch_save, OpenClipCheckpoint};
use crate::checkpoint::{copy_into, load_weights, MODEL_FILE};
use crate::model::ClipConfig;
use crate::train::error::TrainError;

/// The model config of a rewind's `from` checkpoint when the stage gives none: a tureen
/// checkpoint's `state.json` has it; a `torch.save` file does not.
pub fn model_config(from: &Path) -> anyhow::Result<ClipConfig> {
    if is_torch_save(from) {
        anyhow::bail!(
            "params.model: required: inputs.from ({}) is a torch.save checkpoint, which carries no model config",
            from.display()
        );
    }
    Ok(TrainState::read(from)?.model)
}

/// Starts `trainer` from an open_clip checkpoint: weights, the interval after `epoch`,
/// and (unless `fresh`) AdamW's moments, step and hyper-parameters.
pub fn from_torch_save(trainer: &mut Trainer, path: &Path, fresh: bool) -> Result<(), TrainError> {
    let incompatible = |message: String| TrainError::Incompatible {
        path: path.to_path_buf(),
        message,
    };
    let trainable: Vec<String> = trainer
        .vs
        .variables()
        .into_iter()
        .filter(|(_, t)| t.requires_grad())
        .map(|(name, _)| name)
        .collect();
    let ckpt = OpenClipCheckpoint::read(path, &trainable)?;
    copy_into(&trainer.vs, &ckpt.weights, path)?;
    if !fresh {
        let opt = ckpt.optimizer.ok_or_else(|| {
            incompatible(
                "it has no optimizer state to continue AdamW from; set `params.optimizer: fresh` to start it from zero moments".into(),
            )
        })?;
        trainer
            .optimizer
            .load_state(&opt.moments, opt.step)
            .map_err(|m| incompatible(format!("optimizer state: {m}")))?;
        trainer.optimizer.config = opt.config;
        trainer.config.optimizer = opt.config;
    }
    let samples = ckpt.epoch * trainer.config.samples_per_interval;
    position(trainer, path, ckpt.epoch, samples)
}

/// Starts `trainer` from the weights of any checkpoint with a fresh AdamW.
pub fn fresh(trainer: &mut Trainer, from: &Path) -> Result<(), TrainError> {
    if is_torch_save(from) {
        return from_torch_save(trainer, from, true);
    }
    let state = TrainState::read(from)?;
    let mut cfg = state.model.clone();
    // Regularisation may change on a rewind; shapes may not.
    cfg.vision.drop_path = trainer.config.model.vision.drop_path;
    if cfg != trainer.config.model {
        return Err(TrainError::Incompatible {
            path: from.to_path_buf(),
            message: "its model config differs from this stage's `model`".into(),
        });
    }
    load_weights(&trainer.vs, &from.join(MODEL_FILE))?;
    position(trainer, from, state.interval, state.samples_seen)
}

/// Puts `trainer` after `interval` completed intervals.
fn position(
    trainer: &mut Trainer,
    from: &Path,
    interval: u64,
    samples: u64,
) -> Result<(), TrainError> {
    if interval > trainer.config.intervals {
        return Err(TrainError::Incompatible {
            path: from.to_path_buf(),
            message: format!(
                "it is at interval {interval}, beyond this run's {} intervals",
                trainer.config.intervals
            ),
        });
    }
    trainer.interval = interval;
    trainer.step = interval * trainer.config.steps_per_interval();
    trainer.samples_seen = samples;
    Ok(())
}
