//! Training: the optimizer and one loop shared by the `train` and `rewind` stage kinds.
//! What a run computes (params, [`TrainConfig`], [`Schedule`]) is plain numbers in
//! `tureen_stages::train`, re-exported here.
//!
//! - [`AdamW`] is `torch.optim.AdamW` op for op (CPU path), with open_clip's weight-decay
//!   exclusions; its moments are saved in every checkpoint.
//! - [`Trainer`] runs intervals of steps: contrastive loss over the global batch (with
//!   exact gradient accumulation when `micro_batch` is smaller), grad-norm clipping,
//!   the logit-scale clamp, bf16 mixed precision on CUDA, and a checkpoint directory at
//!   the end of every interval.
//!
//! Determinism: stochastic-depth masks come from a generator seeded with
//! `(seed, step, micro-batch)` before every forward pass, the data order and augmentation
//! from `(seed, interval)`, and the initial weights from `seed`. Nothing depends on
//! libtorch's process-global generator after initialisation (which holds a lock), so
//! stages training in parallel threads do not disturb each other. On the CPU a run
//! resumed from its checkpoint at interval k ends with the same bytes as one that never
//! stopped.

pub mod adamw;
pub mod data;
mod error;
mod parallel;
pub mod stage;
mod step;
mod trainer;

pub use adamw::AdamW;
pub use data::{DataSource, LoaderSource, SyntheticSource};
pub use error::TrainError;
pub use trainer::{clip_grad_norm, resolve_device, Start, TrainHooks, TrainOutcome, Trainer};
pub use tureen_stages::train::{
    steps_per_interval, AdamWConfig, Precision, Schedule, StepRounding, TrainConfig,
};
