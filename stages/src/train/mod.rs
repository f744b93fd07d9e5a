//! What a `train` or `rewind` stage computes, as numbers: its params ([`TrainParams`]),
//! the [`TrainConfig`] they resolve to, and the warmup + cosine [`Schedule`] (steps per
//! interval = ceil (open_clip) or floor of `samples_per_interval / batch_size`).
//!
//! Validation, output declarations and `tureen plan` estimates use these without
//! libtorch; the training loop itself is `tureen_torch::train`.

pub mod config;
pub mod params;
pub mod schedule;

pub use config::{excluded_from_decay, AdamWConfig, Precision, TrainConfig};
pub use params::{Mode, TrainParams};
pub use schedule::{steps_per_interval, Schedule, StepRounding};
