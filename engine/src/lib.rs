//! tureen's pipeline engine: pipeline files, validation, the DAG, cache keys,
//! executors (local and Slurm), run records and replay.
//!
//! The engine never links libtorch. What a stage does is behind [`kind::StageKind`];
//! the kinds themselves live in the `tureen-stages` crate.

pub mod kind;
