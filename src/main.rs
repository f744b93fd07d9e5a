//! `tureen`: a thin command line over the `tureen-artifacts`, `tureen-engine` and
//! `tureen-stages` crates. Each subcommand lives in its own module under `cmd/`.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod cmd;

/// Declarative training pipelines and model soups.
#[derive(Parser)]
#[command(name = "tureen", version, about, propagate_version = true)]
struct Cli {
    #[command(flatten)]
    global: cmd::Global,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Average checkpoints into a soup (uniform or weighted).
    Soup(cmd::soup::Args),
    /// Inspect and maintain the content-addressed store.
    #[command(subcommand)]
    Store(cmd::store::StoreCommand),
    /// Run a pipeline: every stage once, in dependency order, cached by content.
    Run(cmd::run::Args),
    /// Print a pipeline's DAG.
    Dag(cmd::dag::Args),
    /// Show which stages of a pipeline are up to date.
    Status(cmd::status::Args),
    /// List recorded runs.
    Runs(cmd::runs::Args),
    /// Print one recorded run.
    Show(cmd::show::Args),
    /// Re-execute a recorded run without the cache and verify every output hash.
    Replay(cmd::replay::Args),
    /// Execute one resolved stage (used by executors such as Slurm; not for humans).
    #[command(hide = true)]
    StageExec(cmd::stage_exec::Args),
    /// Estimate steps, samples, FLOPs, storage and GPU-hours of a pipeline.
    Plan(cmd::plan::Args),
    /// Plot the training curves of a recorded run.
    Plot(cmd::plot::Args),
    /// Datasets: generate synthetic data.
    #[command(subcommand)]
    Data(cmd::data::DataCommand),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    cmd::init_logging(&cli.global);
    let result = match cli.command {
        Command::Soup(args) => cmd::soup::run(args, &cli.global),
        Command::Store(command) => cmd::store::run(command, &cli.global),
        Command::Run(args) => cmd::run::run(args, &cli.global),
        Command::Dag(args) => cmd::dag::run(args, &cli.global),
        Command::Status(args) => cmd::status::run(args, &cli.global),
        Command::Runs(args) => cmd::runs::run(args, &cli.global),
        Command::Show(args) => cmd::show::run(args, &cli.global),
        Command::Replay(args) => cmd::replay::run(args, &cli.global),
        Command::StageExec(args) => cmd::stage_exec::run(args, &cli.global),
        Command::Plan(args) => cmd::plan::run(args, &cli.global),
        Command::Plot(args) => cmd::plot::run(args, &cli.global),
        Command::Data(command) => cmd::data::run(command, &cli.global),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::from(1)
        }
    }
}
