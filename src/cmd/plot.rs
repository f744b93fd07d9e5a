//! `tureen plot RUN -o curves.png|svg`: the training curves of a recorded run.
//!
//! Loss and zero-shot top-1 against samples seen, every training stage (core, rewind)
//! on one chart, evaluated models marked (the soup as a star), and a second column
//! zoomed on the final 10% of training. Data: the run record, each stage's metrics log
//! `<store>/runs/<run-id>/<stage>.metrics.jsonl` (for a stage restored from the cache,
//! the log of the run that computed it), and the metrics JSON of `eval` stages.

pub mod chart;
pub mod curves;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::bail;

use super::Global;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Run id, a unique prefix of one, `latest` or `latest~N`.
    #[arg(value_name = "RUN", default_value = "latest")]
    pub run: String,
    /// Output picture; the extension picks the format (`.png` or `.svg`).
    #[arg(short, long, value_name = "FILE", default_value = "curves.png")]
    pub output: PathBuf,
}

pub fn run(args: Args, global: &Global) -> anyhow::Result<ExitCode> {
    let store = global.existing_store()?;
    let format = chart::Format::from_path(&args.output)?;
    let run_id = tureen_engine::record::find_run(&store, &args.run)?;
    let curves = curves::read_run(&store, &run_id)?;
    if curves.loss.is_empty() && curves.top1.is_empty() && curves.evals.is_empty() {
        bail!(
            "run {run_id} has no training metrics to plot (no <stage>.metrics.jsonl with loss or \
             accuracy under {}, and no eval results)",
            store.join("runs").join(&run_id).display()
        );
    }
    super::output::write_atomically(&args.output, |tmp| chart::draw(&curves, tmp, format))?;
    if !global.quiet {
        let stages: Vec<&str> = curves.loss.iter().map(|c| c.stage.as_str()).collect();
        tureen_engine::eprintln_lossy!(
            "wrote {} ({} curves: {}; {} evaluated models)",
            args.output.display(),
            curves.loss.len() + curves.top1.len(),
            stages.join(", "),
            curves.evals.len()
        );
        for ev in &curves.evals {
            let se = ev
                .stderr
                .map(|se| format!(" ± {se:.2}"))
                .unwrap_or_default();
            tureen_engine::eprintln_lossy!(
                "  {:<20} {:<16} top-1 {:6.2}%{se}",
                ev.eval_stage, ev.model_stage, ev.top1
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
