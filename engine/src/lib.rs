//! tureen's pipeline engine: pipeline files, validation, the DAG, cache keys,
//! executors (local and Slurm), run records and replay.
//!
//! The engine never links libtorch. What a stage is and does is behind [`kind`]; the
//! kinds themselves live in the `tureen-stages` crate, and those that need libtorch
//! run in a separate worker program ([`worker`]).
//!
//! From low level to high level:
//! - [`pipeline`] reads and validates a pipeline file into a [`Pipeline`];
//! - [`key`] and [`cache`]: what a stage's cache key is made of, and the action cache;
//! - [`job`]: one resolved stage, executable anywhere the store is ([`StageJob`]);
//! - [`scheduler`]: a whole run, in dependency order and in parallel;
//! - [`worker`], [`slurm`]: where a job runs;
//! - [`record`], [`replay`]: what a run did, and doing it again to compare;
//! - [`plan`], [`graph`]: what a pipeline will cost, and what it looks like.

#![warn(missing_docs)]

pub mod cache;
mod clock;
pub mod diag;
pub mod graph;
mod host;
pub mod interrupt;
pub mod job;
mod journal;
pub mod key;
pub mod kind;
mod lineage;
pub mod machine;
pub mod pipeline;
pub mod plan;
pub mod progress;
pub mod rank;
pub mod record;
pub mod replay;
mod replay_diff;
mod resources;
pub mod run_metrics;
pub mod scheduler;
pub mod slurm;
mod slurm_dispatch;
pub mod subst;
pub mod tensorboard;
pub mod worker;

pub use clock::now_rfc3339;
pub use host::hostname;
pub use job::StageJob;
pub use pipeline::{load, LoadError, Pipeline};
pub use scheduler::{run, RunOptions, RunOutcome};
