//! `tureen runs`: list recorded runs, newest first.

use std::process::ExitCode;
use tureen_engine::record::StageStatus;

use tureen_engine::record::{self, RunRecord};

use super::Global;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Show at most this many runs.
    #[arg(short = 'n', long, default_value_t = 20)]
    pub limit: usize,
}

pub fn run(args: Args, global: &Global) -> anyhow::Result<ExitCode> {
    let store = global.store_dir();
    let ids = record::list_runs(&store);
    if ids.is_empty() {
        eprintln!("no runs recorded in {}", store.display());
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:<24}  {:<11}  {:<24}  {:>8}  {:<26}  PIPELINE",
        "RUN", "STATUS", "STARTED", "SECONDS", "STAGES"
    );
    for id in ids.iter().take(args.limit) {
        let rec = match RunRecord::read(&RunRecord::path(&store, id)) {
            Ok(r) => r,
            Err(e) => {
                println!("{id:<24}  unreadable: {e:#}");
                continue;
            }
        };
        let count = |s: StageStatus| rec.stages.iter().filter(|x| x.status == s).count();
        let stages = format!(
            "{} ran, {} cached, {} failed",
            count(StageStatus::Ran),
            count(StageStatus::Cached),
            count(StageStatus::Failed)
        );
        let secs = rec
            .stages
            .iter()
            .filter_map(|s| s.seconds)
            .fold(0.0f64, f64::max);
        let seconds = match (&rec.ended, secs) {
            (Some(_), s) => format!("{s:.1}"),
            (None, _) => "-".into(),
        };
        println!(
            "{:<24}  {:<11}  {:<24}  {:>8}  {:<26}  {}",
            rec.run_id,
            rec.status,
            rec.started,
            seconds,
            stages,
            rec.pipeline.display()
        );
    }
    Ok(ExitCode::SUCCESS)
}
