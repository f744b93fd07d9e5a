//! `tureen plot RUN -o curves.png|svg`: the training curves of a recorded run.
//!
//! Loss and zero-shot top-1 against samples seen, every training stage (core, rewind)
//! on one chart, evaluated models marked (the soup as a star), and a second column
//! zoomed on the final 10% of training. Data: the run record, each stage's metrics log
//! `<store>/runs/<run-id>/<stage>.metrics.jsonl` (for a stage restored from the cache,
//! the log of the run that computed it), and the metrics JSON of `eval` stages.

mod chart;
mod curves;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context};

use super::Global;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Run id, a unique prefix of one, or `latest`.
    #[arg(value_name = "RUN")]
    pub run: String,
    /// Output picture; the extension picks the format (`.png` or `.svg`).
    #[arg(short, long, value_name = "FILE", default_value = "curves.png")]
    pub output: PathBuf,
}

pub fn run(args: Args, global: &Global) -> anyhow::Result<ExitCode> {
    let store = global.store_dir();
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
    write_atomically(&args.output, |tmp| chart::draw(&curves, tmp, format))?;
    if !global.quiet {
        let stages: Vec<&str> = curves.loss.iter().map(|c| c.stage.as_str()).collect();
        eprintln!(
            "wrote {} ({} curves: {}; {} evaluated models)",
            args.output.display(),
            curves.loss.len() + curves.top1.len(),
            stages.join(", "),
            curves.evals.len()
        );
        for ev in &curves.evals {
            eprintln!(
                "  {:<16} {:<16} top-1 {:6.2}%",
                ev.eval_stage, ev.model_stage, ev.top1
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Draws into a temporary file next to `out` (same extension, so the format is kept),
/// syncs it and renames it over `out`: a failed or interrupted plot never leaves a
/// half-written picture behind.
fn write_atomically(
    out: &std::path::Path,
    draw: impl FnOnce(&std::path::Path) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let dir = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let ext = out.extension().and_then(|e| e.to_str()).unwrap_or("png");
    let tmp = tempfile::Builder::new()
        .prefix(".tureen-plot-")
        .suffix(&format!(".{ext}"))
        .tempfile_in(&dir)
        .with_context(|| format!("cannot create a file in {}", dir.display()))?;
    draw(tmp.path())?;
    std::fs::File::open(tmp.path())
        .and_then(|f| f.sync_all())
        .with_context(|| format!("cannot sync {}", tmp.path().display()))?;
    tmp.persist(out)
        .with_context(|| format!("cannot write {}", out.display()))?;
    Ok(())
}
