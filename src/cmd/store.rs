//! `tureen store ...` (being written).

use std::process::ExitCode;

use super::Global;

#[derive(clap::Subcommand, Debug)]
pub enum StoreCommand {
    /// List objects.
    Ls,
}

pub fn run(_command: StoreCommand, _global: &Global) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`tureen store` is not available in this build yet")
}
