//! Loading a pipeline for a command (`run`, `status`, `dag`): every registered kind,
//! diagnostics printed, exit status 2 when it is invalid.

use std::path::Path;
use std::process::ExitCode;

use tureen_engine::kind::KindRegistry;
use tureen_engine::pipeline::{self, LoadError, Pipeline};

/// Loads and validates a pipeline with every registered kind; validation errors are
/// printed (one `file:line:column: message` per line) and become exit status 2.
pub fn load(path: &Path, overrides: &[String]) -> Result<(Pipeline, KindRegistry), ExitCode> {
    let mut registry = KindRegistry::new();
    tureen_stages::register_all(&mut registry);
    match pipeline::load(path, &registry, overrides) {
        Ok(p) => Ok((p, registry)),
        Err(LoadError::Invalid(diags)) => Err(invalid(path, &diags)),
        Err(e) => {
            tureen_engine::eprintln_lossy!("error: {:#}", anyhow::Error::from(e));
            Err(ExitCode::from(2))
        }
    }
}

/// Prints every diagnostic of the invalid pipeline at `path`: exit status 2.
pub fn invalid(path: &Path, diags: &tureen_engine::diag::Diagnostics) -> ExitCode {
    for d in &diags.0 {
        tureen_engine::eprintln_lossy!("error: {d}");
    }
    let n = diags.0.len();
    tureen_engine::eprintln_lossy!(
        "{} is invalid ({n} error{}); nothing was run",
        path.display(),
        if n == 1 { "" } else { "s" }
    );
    ExitCode::from(2)
}
