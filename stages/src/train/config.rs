//! What decides a training run's computation, as plain numbers: [`TrainConfig`] (model,
//! batch, schedule, optimizer hyper-parameters, precision) and its validation. The loop
//! that runs it is `tureen_torch::train::Trainer`.

use serde::{Deserialize, Serialize};
use tureen_engine::kind::ParamError;

use super::schedule::{steps_per_interval, Schedule, StepRounding};
use crate::model::ClipConfig;

/// AdamW hyper-parameters other than the learning rate (which the schedule sets).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdamWConfig {
    /// Decay rate of the first moment (the gradient's running mean), in [0, 1).
    pub beta1: f64,
    /// Decay rate of the second moment (the squared gradient's running mean), in [0, 1).
    pub beta2: f64,
    /// Added to the second moment's square root before dividing; positive.
    pub eps: f64,
    /// Decoupled weight decay, scaled by the lr; applied to weights of 2 or more
    /// dimensions only (not to norms, biases or `logit_scale`, as in open_clip).
    pub weight_decay: f64,
}

impl Default for AdamWConfig {
    /// open_clip's defaults for ConvNeXt CLIP: betas (0.9, 0.98), eps 1e-6, wd 0.2.
    fn default() -> Self {
        AdamWConfig {
            beta1: 0.9,
            beta2: 0.98,
            eps: 1e-6,
            weight_decay: 0.2,
        }
    }
}

/// open_clip's rule: parameters excluded from weight decay (fewer than 2 dims, or a name
/// with `bn`, `ln`, `bias` or `logit_scale`). Part of what [`AdamWConfig::weight_decay`]
/// means, and needed without libtorch's optimizer too: reading an open_clip checkpoint's
/// parameter groups.
pub fn excluded_from_decay(name: &str, dims: usize) -> bool {
    dims < 2
        || name.contains("bn")
        || name.contains("ln")
        || name.contains("bias")
        || name.contains("logit_scale")
}

/// Numeric precision of the forward/backward pass. Master weights and optimizer state
/// are always float32.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Precision {
    /// bf16 on CUDA, fp32 on the CPU (where bf16 is slower).
    Auto,
    /// Everything in float32.
    Fp32,
    /// Matmuls and convolutions in bfloat16 (torch autocast's split).
    Bf16,
}

/// Everything that decides what a training run computes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    /// The model to train (resolved from its preset and overrides).
    pub model: ClipConfig,
    /// Global batch: samples per optimizer step.
    pub batch_size: u64,
    /// Samples per forward/backward pass; smaller than `batch_size` turns on exact
    /// gradient accumulation.
    pub micro_batch: Option<u64>,
    /// Samples per checkpoint interval (open_clip's "epoch"): a checkpoint is written
    /// after each.
    pub samples_per_interval: u64,
    /// Steps per interval = ceil (open_clip) or floor of samples / batch.
    pub step_rounding: StepRounding,
    /// Total intervals of the schedule (a rewind counts the intervals before it too).
    pub intervals: u64,
    /// Peak learning rate, reached at the end of warmup (see [`Schedule`]).
    pub lr: f64,
    /// Warmup length in optimizer steps (the lr rises linearly to `lr` over them).
    pub warmup: u64,
    /// AdamW's betas, eps and weight decay.
    pub optimizer: AdamWConfig,
    /// Clip the gradients' total 2-norm to this each step; `None`: no clipping.
    pub grad_clip_norm: Option<f64>,
    /// Base seed of everything random: initial weights, stochastic-depth masks, data
    /// order and augmentation.
    pub seed: u64,
    /// Precision of the forward and backward passes.
    pub precision: Precision,
    /// A metrics record every this many steps (and at the end of every interval).
    pub log_every: u64,
}

impl TrainConfig {
    /// Optimizer steps in one interval: `samples_per_interval / batch_size`, rounded as
    /// `step_rounding` says.
    pub fn steps_per_interval(&self) -> u64 {
        steps_per_interval(
            self.samples_per_interval,
            self.batch_size,
            self.step_rounding,
        )
    }

    /// The lr schedule over the whole run: `warmup` steps, then cosine decay to zero at
    /// `steps_per_interval() * intervals`.
    pub fn schedule(&self) -> Schedule {
        Schedule {
            base_lr: self.lr,
            warmup_steps: self.warmup,
            total_steps: self.steps_per_interval() * self.intervals,
        }
    }

    /// Rows of each global batch that one of `world` ranks trains on (see
    /// [`per_rank_batch`]).
    pub fn per_rank_batch(&self, world: u32) -> Result<u64, ParamError> {
        per_rank_batch(self.batch_size, self.micro_batch, world)
    }

    /// Checks the numbers, naming the param at fault.
    pub fn validate(&self) -> Result<(), ParamError> {
        let bad = |param: &str, m: &str| Err(ParamError::param(param, m));
        self.model.validate().map_err(crate::params::model_error)?;
        if self.batch_size < 2 {
            return bad(
                "batch_size",
                "must be at least 2 (the contrastive loss needs negatives)",
            );
        }
        if self.micro_batch == Some(0) {
            return bad("micro_batch", "must be at least 1");
        }
        if self.intervals == 0 {
            return bad("intervals", "must be at least 1");
        }
        if self.steps_per_interval() == 0 {
            return Err(ParamError::param(
                "samples_per_interval",
                format!(
                    "{} is smaller than batch_size ({}): an interval would have no step",
                    self.samples_per_interval, self.batch_size
                ),
            ));
        }
        if !(self.lr > 0.0 && self.lr.is_finite()) {
            return bad("lr", "must be a positive number");
        }
        let o = &self.optimizer;
        if !(0.0..1.0).contains(&o.beta1) || !(0.0..1.0).contains(&o.beta2) {
            return bad("beta2", "betas must be in [0, 1)");
        }
        if o.eps.is_nan() || o.eps <= 0.0 {
            return bad("eps", "must be positive");
        }
        if o.weight_decay.is_nan() || o.weight_decay < 0.0 {
            return bad("weight_decay", "must be non-negative");
        }
        if self.grad_clip_norm.is_some_and(|c| c.is_nan() || c <= 0.0) {
            return bad("grad_clip_norm", "must be positive");
        }
        if self.log_every == 0 {
            return bad("log_every", "must be at least 1");
        }
        Ok(())
    }
}

/// The share of a global batch of `batch_size` that each of `world` data-parallel ranks
/// trains on. `batch_size` must divide by `world`, and that share by `micro_batch` when
/// given (each rank accumulates its share in micro-batches); the error names both numbers.
pub fn per_rank_batch(
    batch_size: u64,
    micro_batch: Option<u64>,
    world: u32,
) -> Result<u64, ParamError> {
    let world = u64::from(world.max(1));
    if !batch_size.is_multiple_of(world) {
        return Err(ParamError::param(
            "batch_size",
            format!("{batch_size} does not divide by the world size {world} (nodes x tasks_per_node)"),
        ));
    }
    let share = batch_size / world;
    match micro_batch {
        Some(m) if m > 0 && !share.is_multiple_of(m) => Err(ParamError::param(
            "micro_batch",
            format!(
                "the per-rank batch {share} (batch_size {batch_size} / world size {world}) does not divide by micro_batch {m}"
            ),
        )),
        _ => Ok(share),
    }
}
