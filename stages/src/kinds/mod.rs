//! One module per stage kind; [`register_all`] is the single place kinds are listed.

use tureen_engine::kind::KindRegistry;

/// Registers every stage kind tureen ships.
pub fn register_all(_registry: &mut KindRegistry) {}
