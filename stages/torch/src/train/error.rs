//! [`TrainError`]: how a training run fails. Its own module because the trainer's
//! parts (the data-parallel group, the step, rewinds) return it as the trainer does.

use std::path::PathBuf;

use crate::checkpoint::CheckpointError;

/// Errors of a training run.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// The config's numbers cannot train (see [`TrainConfig::validate`](tureen_stages::train::TrainConfig::validate)), or the batch
    /// does not split over the ranks of a data-parallel run.
    #[error("invalid training config: {0}")]
    Config(String),
    /// The loss became NaN or infinite; the run stops before writing a checkpoint.
    #[error("loss is {loss} at step {step} (interval {interval}); stopped, the last good checkpoint is kept")]
    NonFinite {
        /// The schedule step whose loss it was.
        step: u64,
        /// Intervals completed before it.
        interval: u64,
        /// The non-finite value (NaN or an infinity).
        loss: f64,
    },
    /// The data source failed, or an interval ran out of batches.
    #[error("data: {0}")]
    Data(String),
    /// A batch that does not fit the model (shapes, dtypes), or a failing step on it.
    #[error("batch at step {step}: {message}")]
    Batch {
        /// The schedule step.
        step: u64,
        /// What is wrong.
        message: String,
    },
    /// Reading or writing a checkpoint failed.
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    /// A checkpoint that cannot start this run: another model, an interval beyond the
    /// run's, optimizer state that does not fit (or none to continue from), or for a
    /// resume another batch size or interval length.
    #[error("checkpoint {path}: {message}")]
    Incompatible {
        /// The checkpoint.
        path: PathBuf,
        /// Why it does not fit.
        message: String,
    },
    /// The host asked to stop ([`TrainHooks::cancelled`](super::TrainHooks::cancelled)); holds the step reached.
    #[error("cancelled at step {0}")]
    Cancelled(u64),
    /// The host could not store a finished checkpoint ([`TrainHooks::checkpoint`](super::TrainHooks::checkpoint)).
    #[error("committing checkpoint of interval {interval}: {message}")]
    Commit {
        /// The interval (1-based) the checkpoint ends.
        interval: u64,
        /// The host's error.
        message: String,
    },
    /// A collective of a data-parallel run failed.
    #[error(transparent)]
    Dist(#[from] crate::dist::DistError),
}
