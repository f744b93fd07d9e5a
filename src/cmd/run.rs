//! `tureen run PIPELINE`: run every stage once, in dependency order, cached by content.

use std::path::PathBuf;
use std::process::ExitCode;
use tureen_engine::record::StageStatus;

use tureen_engine::progress::Mode;
use tureen_engine::scheduler::{self, Decision, RunOptions};

use super::load::{invalid, load};
use super::Global;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The pipeline file (YAML, `tureen: 1`).
    pub pipeline: PathBuf,
    /// Override a param: `-P lr=2e-3` (top-level) or `-P train.lr=2e-3` (one stage's).
    #[arg(short = 'P', long = "param", value_name = "NAME=VALUE")]
    pub params: Vec<String>,
    /// Run this stage even if it is cached (repeatable).
    #[arg(long, value_name = "STAGE")]
    pub force: Vec<String>,
    /// Run only this stage and its ancestors (repeatable).
    #[arg(long, value_name = "STAGE")]
    pub only: Vec<String>,
    /// Show the plan (what runs, what is cached, and why) without running anything.
    #[arg(short = 'n', long)]
    pub dry_run: bool,
    /// Stages running at once (default, and 0: the number of CPUs).
    #[arg(short = 'j', long, value_name = "N")]
    pub jobs: Option<usize>,
    /// GPU ids to hand out to stages, e.g. `--gpus 0,1` (default: TUREEN_GPUS,
    /// CUDA_VISIBLE_DEVICES or nvidia-smi).
    #[arg(long, value_delimiter = ',', value_name = "IDS")]
    pub gpus: Option<Vec<u32>>,
    /// Plain log lines even on a terminal.
    #[arg(long)]
    pub plain: bool,
    /// With --dry-run: print the plan as JSON.
    #[arg(long, requires = "dry_run")]
    pub json: bool,
}

/// The progress mode for these flags.
pub fn mode(global: &Global, plain: bool) -> Mode {
    if global.quiet {
        Mode::Quiet
    } else if plain {
        Mode::Plain
    } else {
        Mode::Auto
    }
}

pub fn run(args: Args, global: &Global) -> anyhow::Result<ExitCode> {
    let clock = std::time::Instant::now();
    // The store's indexes are parsed on another core while the pipeline loads (an
    // error finding the store still comes after the pipeline's own).
    let located = global.locate_store(Some(&args.pipeline)).map(|store| {
        let dir = scheduler::StoreDir::read_ahead(&store.path);
        (store, dir)
    });
    let (pipeline, registry) = match load(&args.pipeline, &args.params) {
        Ok(v) => v,
        Err(code) => return Ok(code),
    };
    let loaded = clock.elapsed();
    let (store, store_dir) = located?;
    if let Err(diags) = scheduler::preflight(&pipeline, &store.path, args.gpus.as_deref()) {
        return Ok(invalid(&args.pipeline, &diags));
    }
    if store.how == super::discover::How::New && !args.dry_run && !global.quiet {
        tureen_engine::eprintln_lossy!(
            "tureen: no store found above {} or here; creating {}",
            args.pipeline.display(),
            store.path.display()
        );
    }
    let cancel = tureen_engine::interrupt::install();
    let mut opts = RunOptions {
        force: args.force,
        only: args.only,
        dry_run: args.dry_run,
        gpus: args.gpus,
        overrides: args.params,
        progress: mode(global, args.plain),
        tools: super::version::tools(),
        ..RunOptions::default()
    };
    match args.jobs {
        Some(0) | None => {}
        Some(j) => opts.jobs = j,
    }
    let outcome = scheduler::run(&pipeline, &registry, store_dir, &opts, cancel)?;
    tracing::info!(
        "engine time: {:.2} ms ({} stages; load and validate {:.2} ms)",
        clock.elapsed().as_secs_f64() * 1e3,
        pipeline.stages.len(),
        loaded.as_secs_f64() * 1e3
    );
    if args.dry_run {
        if args.json {
            let lines: Vec<_> = outcome.plan.iter().map(super::status::line_json).collect();
            super::output::print_json(&serde_json::json!({
                "pipeline": pipeline.file,
                "store": store.path,
                "stages": lines,
            }));
        } else {
            print_plan(&outcome.plan);
        }
        return Ok(if outcome.succeeded {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(1)
        });
    }
    let rec = outcome.record.as_ref().expect("real runs have records");
    let count = |s: StageStatus| rec.stages.iter().filter(|x| x.status == s).count();
    if !global.quiet {
        tureen_engine::eprintln_lossy!(
            "run {}: {} ({} ran, {} cached, {} failed, {} skipped)",
            rec.run_id,
            rec.status,
            count(StageStatus::Ran),
            count(StageStatus::Cached),
            count(StageStatus::Failed),
            count(StageStatus::Skipped) + count(StageStatus::Cancelled)
        );
    }
    let code = if outcome.interrupted {
        ExitCode::from(130)
    } else if outcome.succeeded {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    };
    // The process ends here: freeing a 10,000-stage pipeline and its record value by
    // value took a tenth of a no-op run, for memory the OS takes back anyway.
    std::mem::forget(outcome);
    std::mem::forget(pipeline);
    Ok(code)
}

/// Prints a dry-run plan: one line per stage with its decision and the reasons.
pub fn print_plan(plan: &[scheduler::PlanLine]) {
    let width = plan.iter().map(|l| l.stage.len()).max().unwrap_or(5).max(5);
    for line in plan {
        let (what, why) = match &line.decision {
            Decision::Cached => ("cached", "up to date".to_string()),
            Decision::Run(why) => ("run", why.join("; ")),
            Decision::Blocked(why) => ("run", why.clone()),
            Decision::Failed(e) => ("error", e.clone()),
            Decision::Skipped(s) => ("skip", s.clone()),
            Decision::Excluded => ("skip", "not selected by --only".to_string()),
        };
        println!("{:<width$}  {:<6}  {}", line.stage, what, why);
    }
    let runs = plan
        .iter()
        .filter(|l| matches!(l.decision, Decision::Run(_) | Decision::Blocked(_)))
        .count();
    let cached = plan
        .iter()
        .filter(|l| l.decision == Decision::Cached)
        .count();
    println!("{runs} to run, {cached} cached");
}
