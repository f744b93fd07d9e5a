//! `tureen status PIPELINE`: which stages are up to date, and why the others are not.

use std::path::PathBuf;
use std::process::ExitCode;

use tureen_engine::scheduler::{self, Decision, RunOptions};

use super::Global;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The pipeline file.
    pub pipeline: PathBuf,
    /// Param overrides, as for `tureen run`.
    #[arg(short = 'P', long = "param", value_name = "NAME=VALUE")]
    pub params: Vec<String>,
}

pub fn run(args: Args, global: &Global) -> anyhow::Result<ExitCode> {
    let (pipeline, registry) = match super::run::load(&args.pipeline, &args.params) {
        Ok(v) => v,
        Err(code) => return Ok(code),
    };
    let opts = RunOptions {
        dry_run: true,
        overrides: args.params,
        ..RunOptions::default()
    };
    let outcome = scheduler::run(
        &pipeline,
        &registry,
        &global.store_dir(),
        &opts,
        tureen_engine::interrupt::flag(),
    )?;
    let width = outcome
        .plan
        .iter()
        .map(|l| l.stage.len())
        .max()
        .unwrap_or(5)
        .max(5);
    let kw = outcome
        .plan
        .iter()
        .map(|l| l.kind.len())
        .max()
        .unwrap_or(4)
        .max(4);
    println!(
        "{:<width$}  {:<kw$}  {:<10}  WHY",
        "STAGE", "KIND", "STATUS"
    );
    let mut stale = 0;
    for line in &outcome.plan {
        let (status, why) = match &line.decision {
            Decision::Cached => ("up-to-date", String::new()),
            Decision::Run(why) => {
                stale += 1;
                ("changed", why.join("; "))
            }
            Decision::Blocked(why) => {
                stale += 1;
                ("outdated", why.clone())
            }
            Decision::Failed(e) => {
                stale += 1;
                ("error", e.clone())
            }
            Decision::Skipped(s) => ("skipped", s.clone()),
            Decision::Excluded => ("-", String::new()),
        };
        println!(
            "{:<width$}  {:<kw$}  {status:<10}  {why}",
            line.stage, line.kind
        );
    }
    println!(
        "{} of {} stages up to date",
        outcome.plan.len() - stale,
        outcome.plan.len()
    );
    Ok(ExitCode::SUCCESS)
}
