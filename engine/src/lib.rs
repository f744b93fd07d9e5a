//! tureen's pipeline engine: pipeline files, validation, the DAG, cache keys,
//! executors (local and Slurm), run records and replay.
//!
//! The engine never links libtorch. What a stage does is behind [`kind::StageKind`];
//! the kinds themselves live in the `tureen-stages` crate, and those that need libtorch
//! run in a separate worker program ([`worker`]).

pub mod diag;
pub mod kind;
pub mod pipeline;
pub mod slurm;
pub mod plan;
pub mod subst;
pub mod tensorboard;
pub mod cache;
pub mod job;
pub mod journal;
pub mod key;
pub mod lock;
pub mod machine;
pub mod record;
pub mod interrupt;
pub mod progress;
pub mod scheduler;
pub mod slurm_dispatch;
pub mod worker;
pub mod graph;
pub mod replay;
pub mod replay_diff;
