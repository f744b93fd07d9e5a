//! `tureen`: a thin command line over the `tureen-artifacts`, `tureen-engine` and
//! `tureen-stages` crates. Each subcommand lives in its own module under `cmd/`.

use std::process::ExitCode;

use clap::{CommandFactory as _, Parser, Subcommand};

mod cmd;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Declarative training pipelines and model soups.
#[derive(Parser)]
#[command(name = "tureen", version = cmd::version::LONG, about, propagate_version = true)]
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
    /// Rewrite a checkpoint (torch.save, sharded or single safetensors) as safetensors.
    Convert(cmd::convert::Args),
    /// Describe a checkpoint: format, tensors, dtypes, parameters, metadata.
    Inspect(cmd::inspect::Args),
    /// Inspect and maintain the content-addressed store.
    #[command(subcommand)]
    Store(cmd::store::StoreCommand),
    /// Run a pipeline: every stage once, in dependency order, cached by content.
    Run(cmd::run::Args),
    /// Print a pipeline's DAG.
    Dag(cmd::dag::Args),
    /// Show which stages of a pipeline are up to date.
    Status(cmd::status::Args),
    /// List recorded runs with their headline metrics.
    Runs(cmd::runs::Args),
    /// Print one recorded run (default: the latest), metrics included.
    Show(cmd::show::Args),
    /// Compare two runs: params, stage keys, output digests and metrics.
    Diff(cmd::diff::Args),
    /// Print (or follow) a stage's log.
    Logs(cmd::logs::Args),
    /// Write a run's report: one self-contained HTML page.
    Report(cmd::report::Args),
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
    /// Write a commented starter pipeline.
    Init(cmd::init::Args),
    /// Print a shell completion script.
    Completions(cmd::completions::CompletionsArgs),
    /// Print the man page (or write all of them with -o DIR).
    Man(cmd::completions::ManArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if cli.command.only_prints() {
        end_quietly_on_a_closed_pipe();
    }
    cmd::init_logging(&cli.global);
    let result = match cli.command {
        Command::Soup(args) => cmd::soup::run(args, &cli.global),
        Command::Convert(args) => cmd::convert::run(args, &cli.global),
        Command::Inspect(args) => cmd::inspect::run(args, &cli.global),
        Command::Store(command) => cmd::store::run(command, &cli.global),
        Command::Run(args) => cmd::run::run(args, &cli.global),
        Command::Dag(args) => cmd::dag::run(args, &cli.global),
        Command::Status(args) => cmd::status::run(args, &cli.global),
        Command::Runs(args) => cmd::runs::run(args, &cli.global),
        Command::Show(args) => cmd::show::run(args, &cli.global),
        Command::Replay(args) => cmd::replay::run(args, &cli.global),
        Command::StageExec(args) => cmd::stage_exec::run(args, tureen_stages::register_all),
        Command::Plan(args) => cmd::plan::run(args, &cli.global),
        Command::Plot(args) => cmd::plot::run(args, &cli.global),
        Command::Data(command) => cmd::data::run(command, &cli.global),
        Command::Diff(args) => cmd::diff::run(args, &cli.global),
        Command::Logs(args) => cmd::logs::run(args, &cli.global),
        Command::Report(args) => cmd::report::run(args, &cli.global),
        Command::Init(args) => cmd::init::run(args, &cli.global),
        Command::Completions(args) => cmd::completions::completions(args, Cli::command()),
        Command::Man(args) => cmd::completions::man(args, Cli::command()),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            tureen_engine::eprintln_lossy!("error: {err:#}");
            ExitCode::from(1)
        }
    }
}

impl Command {
    /// Commands whose only output is what they print: no child process reads from them.
    fn only_prints(&self) -> bool {
        matches!(
            self,
            Command::Store(_)
                | Command::Dag(_)
                | Command::Status(_)
                | Command::Runs(_)
                | Command::Show(_)
                | Command::Plan(_)
                | Command::Diff(_)
                | Command::Logs(_)
                | Command::Completions(_)
                | Command::Man(_)
                | Command::Inspect(_)
        )
    }
}

/// Rust ignores SIGPIPE, so `tureen show RUN | head` would end with a broken-pipe
/// panic; a command-line tool should stop quietly, as `cat` does. Only for commands that
/// only print: `run` writes job scripts to `sbatch`'s stdin and must survive a child
/// that exits without reading them (it gets an error it reports instead).
fn end_quietly_on_a_closed_pipe() {
    // SAFETY: called first thing in main, before any thread exists.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}
