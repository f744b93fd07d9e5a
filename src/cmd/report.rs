//! `tureen report`.
#[derive(clap::Args, Debug)]
pub struct Args {}
pub fn run(_args: Args, _global: &super::Global) -> anyhow::Result<std::process::ExitCode> {
    anyhow::bail!("todo")
}
