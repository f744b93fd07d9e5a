//! `tureen-torch`: the worker program that runs tureen's libtorch stages (`train`,
//! `rewind`, `eval`, greedy `soup`), one stage per process. `tureen` starts it as
//! `tureen-torch stage-exec --job FILE --result FILE --events` (and a Slurm job as
//! `tureen-torch stage-exec --job FILE`); keeping libtorch here lets `tureen` start in
//! milliseconds.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[path = "../cmd/stage_exec.rs"]
mod stage_exec;

/// Runs tureen's libtorch stages (started by `tureen run`, not by hand).
#[derive(Parser)]
#[command(name = "tureen-torch", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Execute one resolved stage from a job file written by `tureen`.
    StageExec(stage_exec::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .with_target(false)
        .without_time()
        .init();
    let result = match cli.command {
        Command::StageExec(args) => tureen_torch::numerics::reexec_pinned(&args.job)
            .and_then(|()| stage_exec::run(args, tureen_torch::register_all)),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::from(1)
        }
    }
}
