//! `tureen replay RUN`: re-execute every stage of a recorded run without the cache and
//! verify each output digest; non-zero exit on any divergence.

use std::process::ExitCode;

use anyhow::Context as _;
use tureen_engine::kind::KindRegistry;
use tureen_engine::machine::MachineInfo;
use tureen_engine::record::{self, RunRecord};
use tureen_engine::replay::{self, ReplayRow, Verdict};

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
        // How an output differs takes a line per artifact and tensor: the first beside
        // the verdict, the others indented below it.
        let (word, detail, more): (_, String, &[String]) = match &r.verdict {
            Verdict::Same => ("same", String::new(), &[]),
            Verdict::Differs(d) => (
                "differs",
                d.first().cloned().unwrap_or_default(),
                d.get(1..).unwrap_or(&[]),
            ),
            Verdict::Failed(e) => ("failed", format!("{e} (log: {})", r.log), &[]),
        };
        if r.verdict != Verdict::Same {
            bad += 1;
        }
        println!(
            "{:<width$}  {word:<8}  {:>8.2}  {detail}",
            r.stage, r.seconds
        );
        for line in more {
            println!("    {line}");
        }
    }
    print_machines(&rows);
    println!("replay of {id}: {} same, {bad} diverged", rows.len() - bad);
    Ok(if bad == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// The recorded machine next to this one, field by field where they differ, for the
/// stages that recorded one (stages with the same differences are listed together).
fn print_machines(rows: &[ReplayRow]) {
    type Diffs = Vec<(String, String, String)>;
    let mut groups: Vec<(Diffs, Vec<&str>)> = Vec::new();
    let mut unrecorded = Vec::new();
    for r in rows {
        let (Some(rec), Some(now)) = (&r.recorded_machine, &r.machine) else {
            if r.recorded_machine.is_none() {
                unrecorded.push(r.stage.as_str());
            }
            continue;
        };
        let d = rec.differences(now);
        match groups.iter_mut().find(|(g, _)| *g == d) {
            Some((_, stages)) => stages.push(&r.stage),
            None => groups.push((d, vec![&r.stage])),
        }
    }
    let current = MachineInfo::current();
    for (diffs, stages) in &groups {
        let names = stages.join(", ");
        if diffs.is_empty() {
            println!("machine ({names}): as recorded ({})", current.cpu_model);
            continue;
        }
        println!("machine ({names}): recorded vs this replay");
        let width = diffs.iter().map(|d| d.0.len()).max().unwrap_or(0);
        let left = diffs.iter().map(|d| d.1.len()).max().unwrap_or(0).min(48);
        for (field, recorded, now) in diffs {
            println!("  {field:<width$}  {recorded:<left$}  |  {now}");
        }
    }
    if !unrecorded.is_empty() {
        println!("machine ({}): not recorded", unrecorded.join(", "));
    }
}
