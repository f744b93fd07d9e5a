//! One module per stage kind; [`register_all`] is the single place kinds are listed.

pub mod command;
pub mod eval;
pub mod rewind;
pub mod soup;
pub mod train;

use std::sync::Arc;

use tureen_engine::kind::KindRegistry;

/// Registers every stage kind tureen ships.
pub fn register_all(registry: &mut KindRegistry) {
    registry.register(Arc::new(command::CommandKind));
    registry.register(Arc::new(soup::SoupKind));
    registry.register(Arc::new(eval::EvalKind));
    registry.register(Arc::new(train::TrainKind));
    registry.register(Arc::new(rewind::RewindKind));
}
