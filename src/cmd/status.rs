//! `tureen status PIPELINE`: which stages are up to date, and why the others are not.

use std::path::PathBuf;
use std::process::ExitCode;

use serde_json::{json, Value};
use tureen_engine::scheduler::{self, Decision, PlanLine, RunOptions};

use super::output::{print_json, print_table, table};
use super::Global;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The pipeline file.
    pub pipeline: PathBuf,
    /// Param overrides, as for `tureen run`.
    #[arg(short = 'P', long = "param", value_name = "NAME=VALUE")]
    pub params: Vec<String>,
    /// Exit with status 1 when any stage is out of date (as `dvc status -q`; with `-q`
    /// nothing is printed).
    #[arg(long)]
    pub check: bool,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: Args, global: &Global) -> anyhow::Result<ExitCode> {
    // The store's indexes are parsed on another core while the pipeline loads (an
    // error finding the store still comes after the pipeline's own).
    let located = global.locate_store(Some(&args.pipeline)).map(|store| {
        let dir = scheduler::StoreDir::read_ahead(&store.path);
        (store, dir)
    });
    let (pipeline, registry) = match super::load::load(&args.pipeline, &args.params) {
        Ok(v) => v,
        Err(code) => return Ok(code),
    };
    let (store, store_dir) = located?;
    let opts = RunOptions {
        dry_run: true,
        overrides: args.params,
        ..RunOptions::default()
    };
    let outcome = scheduler::run(
        &pipeline,
        &registry,
        store_dir,
        &opts,
        tureen_engine::interrupt::flag(),
    )?;
    let stale = outcome
        .plan
        .iter()
        .filter(|l| is_stale(&l.decision))
        .count();
    if args.json {
        print_json(&json!({
            "pipeline": pipeline.file,
            "store": store.path,
            "up_to_date": outcome.plan.len() - stale,
            "stages": outcome.plan.iter().map(line_json).collect::<Vec<_>>(),
        }));
    } else if !(args.check && global.quiet) {
        let mut t = table(["STAGE", "KIND", "STATUS", "WHY"]);
        for line in &outcome.plan {
            let (status, why) = describe(&line.decision);
            t.add_row([line.stage.as_str(), &line.kind, status, &why]);
        }
        print_table(&t);
        println!(
            "{} of {} stages up to date",
            outcome.plan.len() - stale,
            outcome.plan.len()
        );
    }
    Ok(if args.check && stale > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

fn is_stale(d: &Decision) -> bool {
    matches!(
        d,
        Decision::Run(_) | Decision::Blocked(_) | Decision::Failed(_)
    )
}

/// The status word and the reason, as the table and JSON show them.
fn describe(d: &Decision) -> (&'static str, String) {
    match d {
        Decision::Cached => ("up-to-date", String::new()),
        Decision::Run(why) => ("changed", why.join("; ")),
        Decision::Blocked(why) => ("outdated", why.clone()),
        Decision::Failed(e) => ("error", e.clone()),
        Decision::Skipped(s) => ("skipped", s.clone()),
        Decision::Excluded => ("-", String::new()),
    }
}

/// One stage of a plan as JSON (`status` and `run --dry-run --json`).
pub fn line_json(line: &PlanLine) -> Value {
    let (status, _) = describe(&line.decision);
    let why: Vec<String> = match &line.decision {
        Decision::Run(why) => why.clone(),
        Decision::Blocked(w) | Decision::Failed(w) | Decision::Skipped(w) => vec![w.clone()],
        Decision::Cached | Decision::Excluded => Vec::new(),
    };
    json!({
        "stage": line.stage,
        "kind": line.kind,
        "status": status,
        "out_of_date": is_stale(&line.decision),
        "why": why,
        "key": line.key.map(|k| k.to_string()),
    })
}
