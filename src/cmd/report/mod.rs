//! `tureen report [RUN] -o report.html`: one self-contained HTML page about a run, as
//! Snakemake's `--report` writes one: the DAG, a table of stages (status, cached or ran,
//! wall time, key, output digests, Slurm job ids), the training and zero-shot curves
//! (`tureen plot`'s chart, as inline SVG), the evaluations, each soup's ingredients by
//! digest and weight, the params, and the tools, libraries and host. Nothing is loaded
//! from anywhere (no script, no font, no network), so it opens from a mail attachment.

mod dag;
mod html;
mod sections;

use std::path::PathBuf;
use std::process::ExitCode;

use tureen_engine::record::{self, RunRecord};
use tureen_engine::run_metrics::{RanBy, RunMetrics};

use super::Global;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Run id, a unique prefix of one, `latest` or `latest~N`.
    #[arg(value_name = "RUN", default_value = "latest")]
    pub run: String,
    /// The HTML file to write.
    #[arg(short, long, value_name = "FILE", default_value = "report.html")]
    pub output: PathBuf,
}

/// What the sections are drawn from.
pub struct Facts {
    pub store: PathBuf,
    pub rec: RunRecord,
    pub metrics: RunMetrics,
}

pub fn run(args: Args, global: &Global) -> anyhow::Result<ExitCode> {
    let store = global.existing_store()?;
    let id = record::find_run(&store, &args.run)?;
    let rec = RunRecord::read(&RunRecord::path(&store, &id))?;
    let metrics = RunMetrics::read(&store, &rec, &RanBy::scan(&store));
    let facts = Facts {
        store,
        rec,
        metrics,
    };
    let page = render(&facts);
    super::output::write_bytes(&args.output, page.as_bytes())?;
    if !global.quiet {
        tureen_engine::eprintln_lossy!("wrote {} (run {id})", args.output.display());
    }
    Ok(ExitCode::SUCCESS)
}

/// The whole page.
pub fn render(facts: &Facts) -> String {
    let title = format!("tureen run {}", facts.rec.run_id);
    let parts = [
        sections::header(facts),
        html::section("dag", "Pipeline", &sections::dag(facts)),
        html::section("stages", "Stages", &sections::stages(facts)),
        html::section("curves", "Curves", &sections::curves(facts)),
        html::section("evals", "Evaluations", &sections::evals(facts)),
        html::section("soups", "Soups", &sections::soups(facts)),
        html::section("params", "Params", &sections::params(facts)),
        html::section(
            "versions",
            "Tools, libraries and host",
            &sections::versions(facts),
        ),
        sections::footer(),
    ];
    html::page(&title, &parts.concat())
}
