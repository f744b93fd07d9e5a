//! `tureen stage-exec --job FILE`: execute one resolved stage (a job file written by
//! the engine) against the store it names, and write its result JSON. Used by the
//! Slurm executor (`srun tureen stage-exec --job ...`); not meant for humans. Stages
//! that need libtorch go to `tureen-torch stage-exec` instead: the same command, built
//! into that program from this file (see `tureen_engine::worker`).

use std::path::PathBuf;
use std::process::ExitCode;

use tureen_engine::kind::KindRegistry;
use tureen_engine::worker::{self, ServeArgs};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The job file (JSON).
    #[arg(long)]
    pub job: PathBuf,
    /// Where to write the result (default: next to the job, `<job>.result.json`).
    #[arg(long)]
    pub result: Option<PathBuf>,
    /// Print progress events as JSON lines (for the tureen that started this process).
    #[arg(long)]
    pub events: bool,
}

/// Runs the job with the kinds `register` registers (this program's).
pub fn run(args: Args, register: fn(&mut KindRegistry)) -> anyhow::Result<ExitCode> {
    let mut registry = KindRegistry::new();
    register(&mut registry);
    let serve = ServeArgs {
        job: args.job,
        result: args.result,
        events: args.events,
    };
    Ok(if worker::serve(&serve, &registry)? {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
