//! One module per stage kind; [`register_all`] is the single place kinds are listed.
//! Each module exports its kind's `NAME`, which is how work done elsewhere is attached
//! to the declaration ([`KindRegistry::set_work`]).
//!
//! `command` and uniform/weighted `soup` stages run in tureen's process, and are
//! registered with their work. `train`, `rewind`, `eval` and greedy `soup` stages need
//! libtorch: they name [`TORCH_WORKER`] as their
//! [`StageKind::worker`](tureen_engine::kind::StageKind::worker), and
//! `tureen_torch::register_all` attaches their libtorch work in that program.

pub mod command;
pub mod eval;
pub mod open_clip;
pub mod rewind;
pub mod soup;
pub mod supervisor;
pub mod train;

use std::sync::Arc;

use tureen_engine::kind::KindRegistry;

/// The program that runs the stages that need libtorch (built beside `tureen`).
pub const TORCH_WORKER: &str = "tureen-torch";

/// Registers every stage kind tureen ships, with the work that needs no libtorch.
pub fn register_all(registry: &mut KindRegistry) {
    registry.register_with_work(Arc::new(command::CommandKind));
    registry.register_with_work(Arc::new(soup::SoupKind));
    registry.register(Arc::new(eval::EvalKind));
    registry.register(Arc::new(train::TrainKind));
    registry.register(Arc::new(rewind::RewindKind));
    registry.register_with_work(Arc::new(open_clip::OpenClipKind));
}
