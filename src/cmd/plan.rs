//! `tureen plan` (being written).

use std::process::ExitCode;

use super::Global;

#[derive(clap::Args, Debug)]
pub struct Args {}

pub fn run(_args: Args, _global: &Global) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`tureen plan` is not available in this build yet")
}
