//! tureen's stage kinds (`command`, `soup`, `train`, `rewind`, `eval`) as the engine sees
//! them (params, validation, outputs, `tureen plan` estimates) and everything about them
//! that needs no libtorch: model configs, training params and schedules, tokenizers,
//! the webdataset loader and synthetic data, evaluation metrics.
//!
//! `command` and uniform/weighted `soup` stages run in `tureen` itself. The others need
//! libtorch and run in the `tureen-torch` worker (`stages/torch`, crate `tureen-torch`),
//! which is the only crate that links it: so `tureen` starts in milliseconds.

#![warn(missing_docs)]

pub mod checkpoint;
pub mod data;
pub mod device;
pub mod eval;
pub mod kinds;
pub mod model;
pub mod numerics;
pub mod params;
pub mod plan;
pub mod rng;
pub mod tokenizer;
pub mod train;

pub use kinds::register_all;
