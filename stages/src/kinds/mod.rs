//! One module per stage kind; [`register_all`] is the single place kinds are listed.
//!
//! `command` and uniform/weighted `soup` stages run in tureen's process. `train`,
//! `rewind`, `eval` and greedy `soup` stages need libtorch: they name
//! [`TORCH_WORKER`] as their [`StageKind::worker`], and `tureen_torch::register_all`
//! registers the same kinds with their libtorch work in that program.

pub mod command;
pub mod eval;
pub mod rewind;
pub mod soup;
pub mod supervisor;
pub mod train;

use std::sync::Arc;

use tureen_engine::kind::{KindRegistry, StageKind};

/// The program that runs the stages that need libtorch (built beside `tureen`).
pub const TORCH_WORKER: &str = "tureen-torch";

/// The error of `run` for a kind whose work is done by [`TORCH_WORKER`], called in a
/// program without libtorch. The engine sends such stages to the worker, so this only
/// shows when a program registers the kinds without their worker side.
pub fn runs_in_torch_worker(kind: &dyn StageKind) -> anyhow::Error {
    anyhow::anyhow!(
        "kind `{}` runs in `{TORCH_WORKER}`, not in this program",
        kind.name()
    )
}

/// Registers every stage kind tureen ships.
pub fn register_all(registry: &mut KindRegistry) {
    registry.register(Arc::new(command::CommandKind));
    registry.register(Arc::new(soup::SoupKind));
    registry.register(Arc::new(eval::EvalKind));
    registry.register(Arc::new(train::TrainKind));
    registry.register(Arc::new(rewind::RewindKind));
}
