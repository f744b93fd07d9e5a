//! `tureen replay RUN`: re-execute every stage of a recorded run without the cache and
//! verify each output digest; non-zero exit on any divergence.

use std::process::ExitCode;

use anyhow::Context as _;
use tureen_engine::kind::KindRegistry;
use tureen_engine::record::{self, RunRecord};
use tureen_engine::replay::{self, Verdict};

use super::Global;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Run id, a unique prefix of one, `latest` or `latest~N`.
    pub run: String,
    /// Plain log lines even on a terminal.
    #[arg(long)]
    pub plain: bool,
}

pub fn run(args: Args, global: &Global) -> anyhow::Result<ExitCode> {
    let store = global.existing_store()?;
    let id = record::find_run(&store, &args.run)?;
    let rec = RunRecord::read(&RunRecord::path(&store, &id))?;
    let mut registry = KindRegistry::new();
    tureen_stages::register_all(&mut registry);
    let cancel = tureen_engine::interrupt::install();
    let tureen = std::env::current_exe().context("locating the tureen binary")?;
    let rows = replay::replay(
        &rec,
        &registry,
        &tureen,
        &store,
        cancel,
        super::run::mode(global, args.plain),
    )?;
    let width = rows.iter().map(|r| r.stage.len()).max().unwrap_or(5).max(5);
    println!(
        "{:<width$}  {:<8}  {:>8}  DETAIL",
        "STAGE", "RESULT", "SECONDS"
    );
    let mut bad = 0;
    for r in &rows {
        let (word, detail) = match &r.verdict {
            Verdict::Same => ("same", String::new()),
            Verdict::Differs(d) => ("differs", d.join("; ")),
            Verdict::Failed(e) => ("failed", format!("{e} (log: {})", r.log)),
        };
        if r.verdict != Verdict::Same {
            bad += 1;
        }
        println!(
            "{:<width$}  {word:<8}  {:>8.2}  {detail}",
            r.stage, r.seconds
        );
    }
    println!("replay of {id}: {} same, {bad} diverged", rows.len() - bad);
    Ok(if bad == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
