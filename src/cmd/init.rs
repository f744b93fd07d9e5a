//! `tureen init [FILE]`: a commented starter pipeline, and a store beside it unless one
//! is found above (as `git init` and `dvc init` make theirs).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context as _};

use super::Global;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The pipeline file to write.
    #[arg(default_value = "pipeline.yaml", value_name = "FILE")]
    pub file: PathBuf,
}

/// The starter: two `command` stages that run anywhere, and the card's recipe
/// (synthetic data, train, rewind, soup, eval) commented out below them.
pub const STARTER: &str = include_str!("init/starter.yaml");

pub fn run(args: Args, global: &Global) -> anyhow::Result<ExitCode> {
    if args.file.exists() {
        bail!(
            "{} already exists; tureen init does not overwrite it (give another FILE)",
            args.file.display()
        );
    }
    let store = global.locate_store(Some(&args.file))?;
    if store.how == super::discover::How::New {
        std::fs::create_dir_all(&store.path)
            .with_context(|| format!("cannot create the store {}", store.path.display()))?;
    }
    super::output::write_bytes(&args.file, STARTER.as_bytes())?;
    if !global.quiet {
        tureen_engine::eprintln_lossy!("wrote {}; store {store}", args.file.display());
        tureen_engine::eprintln_lossy!("next: tureen run {}", args.file.display());
    }
    Ok(ExitCode::SUCCESS)
}
