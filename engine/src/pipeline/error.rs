//! [`LoadError`]: why a pipeline could not be loaded. Its own module because every pass
//! of the loader (overrides, stages, resolution) returns it, and the loader calls them.

use std::path::PathBuf;

use crate::diag::Diagnostics;

/// Why a pipeline could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The file (or its directory) could not be read.
    #[error("cannot read {}", path.display())]
    Read {
        /// What could not be read.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The path is not a regular file (a FIFO would block the read forever).
    #[error("{}: not a regular file", path.display())]
    NotAFile {
        /// The path given.
        path: PathBuf,
    },
    /// `-P` problems (they are on the command line, not in the file).
    #[error("{0}")]
    Override(String),
    /// Problems in the file, each with its position.
    #[error("{0}")]
    Invalid(Diagnostics),
}
