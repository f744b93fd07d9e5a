//! tureen's libtorch side: the CLIP model, checkpoint tensors, the training loop and
//! evaluation, and the work of the stage kinds that need them (`train`, `rewind`,
//! `eval`, greedy `soup`). The only crate that links libtorch (through tch).
//!
//! Everything that is plain numbers (model configs, params, schedules, tokenizers, the
//! data loader, metrics) is in `tureen-stages`, which the `tureen` binary uses without
//! libtorch; this crate re-exports those modules where its own code extends them, so
//! `tureen_torch::model::ClipConfig` and `tureen_torch::model::Clip` sit together. The
//! `tureen-torch` program (the root package's second binary) runs these kinds for
//! `tureen`, one stage per process.

#![warn(missing_docs)]

pub mod autograd;
pub mod batch;
pub mod checkpoint;
pub mod dist;
pub mod eval;
pub mod kinds;
pub mod model;
pub mod numerics;
pub mod train;

pub use kinds::register_all;
pub use tureen_stages::{data, tokenizer};
