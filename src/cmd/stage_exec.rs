//! `tureen stage-exec --job FILE`: execute one resolved stage (a job file written by
//! the engine) against the store it names, and write its result JSON. Used by the
//! Slurm executor (`srun tureen stage-exec --job ...`); not meant for humans.

use std::path::PathBuf;
use std::process::ExitCode;

use tureen_engine::job::{self, JobStatus, StageJob};
use tureen_engine::kind::KindRegistry;

use super::Global;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The job file (JSON).
    #[arg(long)]
    pub job: PathBuf,
    /// Where to write the result (default: next to the job, `<job>.result.json`).
    #[arg(long)]
    pub result: Option<PathBuf>,
}

pub fn run(args: Args, _global: &Global) -> anyhow::Result<ExitCode> {
    let mut job = StageJob::read(&args.job)?;
    // On Slurm the allocation decides the GPUs (the engine hands out none there).
    if job.gpus.is_empty() {
        job.gpus = tureen_engine::slurm::allocated_gpus().unwrap_or_default();
    }
    let mut registry = KindRegistry::new();
    tureen_stages::register_all(&mut registry);
    let cancel = tureen_engine::interrupt::install();
    let mut observer = |e: job::JobEvent| {
        if let job::JobEvent::Line(l) = e {
            println!("{l}");
        }
    };
    let result = job::execute(&job, &registry, cancel, &mut observer)?;
    let path = args
        .result
        .unwrap_or_else(|| tureen_engine::slurm_dispatch::result_path(&args.job));
    let bytes = serde_json::to_vec_pretty(&result)?;
    tureen_artifacts::fsutil::write_atomic(&path, &bytes)?;
    Ok(match result.status {
        JobStatus::Ran | JobStatus::Cached => ExitCode::SUCCESS,
        JobStatus::Failed | JobStatus::Cancelled => {
            eprintln!("stage {}: {}", job.stage, result.error.unwrap_or_default());
            ExitCode::from(1)
        }
    })
}
