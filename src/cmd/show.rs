//! `tureen show RUN`: print one recorded run.

use std::process::ExitCode;

use tureen_engine::record::{self, RunRecord};
use tureen_engine::run_metrics::{RanBy, RunMetrics};

use super::output::number;
use super::Global;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Run id, a unique prefix of one, `latest` or `latest~N`.
    #[arg(default_value = "latest")]
    pub run: String,
    /// Print the JSON record, with the run's metrics under `metrics`.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: Args, global: &Global) -> anyhow::Result<ExitCode> {
    let store = global.existing_store()?;
    let id = record::find_run(&store, &args.run)?;
    let path = RunRecord::path(&store, &id);
    let rec = RunRecord::read(&path)?;
    let metrics = RunMetrics::read(&store, &rec, &RanBy::scan(&store));
    if args.json {
        // The record as written (fields this tureen does not know included).
        let mut value: serde_json::Value = serde_json::from_slice(&std::fs::read(&path)?)?;
        value["metrics"] = serde_json::to_value(&metrics.stages)?;
        super::output::print_json(&value);
        return Ok(ExitCode::SUCCESS);
    }
    println!("run       {}", rec.run_id);
    println!("status    {}", rec.status);
    println!(
        "pipeline  {} ({})",
        rec.pipeline.display(),
        rec.pipeline_digest
    );
    println!("started   {}", rec.started);
    println!("ended     {}", rec.ended.as_deref().unwrap_or("-"));
    println!("host      {} (user {})", rec.host, rec.user);
    if let Some(used) = &rec.store {
        println!("store     {}", used.display());
    }
    let tools: Vec<String> = rec.tools.iter().map(|(k, v)| format!("{k} {v}")).collect();
    println!("tools     {}", tools.join(", "));
    if !rec.params.is_empty() {
        println!(
            "params    {}",
            serde_json::Value::Object(rec.params.clone())
        );
    }
    if !rec.overrides.is_empty() {
        println!("overrides {}", rec.overrides.join(" "));
    }
    println!();
    for s in &rec.stages {
        let secs = s.seconds.map(|x| format!(" {x:.2}s")).unwrap_or_default();
        println!("{} ({}) {}{}", s.name, s.kind, s.status, secs);
        if let Some(k) = &s.key {
            println!("  key      {k}");
        }
        if !s.why.is_empty() && s.status != tureen_engine::record::StageStatus::Cached {
            println!("  why      {}", s.why.join("; "));
        }
        for (name, input) in &s.inputs {
            println!("  input    {name} = {}", input.refs);
        }
        for (name, out) in &s.outputs {
            match out {
                tureen_engine::cache::OutputRecord::One(a) => {
                    println!("  output   {name} = {}", a.digest)
                }
                tureen_engine::cache::OutputRecord::Series { series } => {
                    println!("  output   {name} = series of {}", series.len());
                    for (i, a) in series.iter().enumerate() {
                        println!("           [{i}] {}", a.digest);
                    }
                }
            }
        }
        for (name, value) in metrics.stages.get(&s.name).into_iter().flatten() {
            println!("  metric   {name} = {}", number(*value));
        }
        if let Some(e) = &s.error {
            println!("  error    {e}");
        }
        if let Some(log) = &s.log {
            println!("  log      {}", store.join(log).display());
        }
    }
    Ok(ExitCode::SUCCESS)
}
