//! `tureen dag PIPELINE`: print the DAG as a text tree, Graphviz dot or Mermaid.

use std::path::PathBuf;
use std::process::ExitCode;

use tureen_engine::graph;

use super::Global;

#[derive(clap::ValueEnum, Debug, Clone, Copy)]
pub enum Format {
    Text,
    Dot,
    Mermaid,
}

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The pipeline file.
    pub pipeline: PathBuf,
    /// Output format.
    #[arg(long, value_enum, default_value = "text")]
    pub format: Format,
    /// Param overrides, as for `tureen run` (they can change foreach expansions).
    #[arg(short = 'P', long = "param", value_name = "NAME=VALUE")]
    pub params: Vec<String>,
}

pub fn run(args: Args, _global: &Global) -> anyhow::Result<ExitCode> {
    let (pipeline, _) = match super::load::load(&args.pipeline, &args.params) {
        Ok(v) => v,
        Err(code) => return Ok(code),
    };
    let out = match args.format {
        Format::Text => graph::text(&pipeline),
        Format::Dot => graph::dot(&pipeline),
        Format::Mermaid => graph::mermaid(&pipeline),
    };
    print!("{out}");
    Ok(ExitCode::SUCCESS)
}
