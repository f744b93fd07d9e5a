//! `tureen data ...` (being written).

use std::process::ExitCode;

use super::Global;

#[derive(clap::Subcommand, Debug)]
pub enum DataCommand {
    /// Generate a synthetic dataset.
    Synth,
}

pub fn run(_command: DataCommand, _global: &Global) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`tureen data` is not available in this build yet")
}
