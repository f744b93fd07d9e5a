//! `tureen runs [PIPELINE]`: recorded runs, newest first, with their headline metrics.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use serde_json::{json, Value};
use tureen_engine::record::{self, RunRecord};
use tureen_engine::run_metrics::{RanBy, RunMetrics};

use super::output::{number, print_json, print_table, table};
use super::Global;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Only runs of this pipeline file.
    #[arg(value_name = "PIPELINE")]
    pub pipeline: Option<PathBuf>,
    /// Show at most this many runs.
    #[arg(short = 'l', long, default_value_t = 20, value_name = "N")]
    pub limit: usize,
    /// `-n` is `--dry-run` everywhere in tureen; here it is refused with a pointer to
    /// `--limit` rather than silently meaning something else.
    #[arg(short = 'n', hide = true, value_name = "N")]
    pub n: Option<String>,
    /// Print JSON (one object per run) instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// One listed run: its record and headline metrics.
struct Listed {
    rec: RunRecord,
    headline: Vec<(String, f64)>,
}

pub fn run(args: Args, global: &Global) -> anyhow::Result<ExitCode> {
    if args.n.is_some() {
        anyhow::bail!(
            "`runs -n` is not a limit (`-n` means --dry-run in tureen): use --limit N (-l N)"
        );
    }
    let store = global.locate_store(args.pipeline.as_deref())?.path;
    let wanted = args.pipeline.as_deref().map(same_file_key);
    let ran_by = RanBy::scan(&store);
    let mut listed = Vec::new();
    let mut unreadable = Vec::new();
    for id in record::list_runs(&store) {
        if listed.len() >= args.limit {
            break;
        }
        let rec = match RunRecord::read(&RunRecord::path(&store, &id)) {
            Ok(r) => r,
            Err(e) => {
                unreadable.push(format!("{id}: {e:#}"));
                continue;
            }
        };
        if wanted
            .as_ref()
            .is_some_and(|w| *w != same_file_key(&rec.pipeline))
        {
            continue;
        }
        let headline = RunMetrics::read(&store, &rec, &ran_by).headline(&rec);
        listed.push(Listed { rec, headline });
    }
    for line in &unreadable {
        tureen_engine::eprintln_lossy!("warning: {line}");
    }
    if args.json {
        print_json(&Value::Array(listed.iter().map(to_json).collect()));
        return Ok(ExitCode::SUCCESS);
    }
    if listed.is_empty() {
        let filter = args
            .pipeline
            .map(|p| format!(" of {}", p.display()))
            .unwrap_or_default();
        tureen_engine::eprintln_lossy!("no runs{filter} recorded in {}", store.display());
        return Ok(ExitCode::SUCCESS);
    }
    print_table(&runs_table(&listed));
    Ok(ExitCode::SUCCESS)
}

/// The table: fixed columns, then one column per headline metric of the listed runs.
fn runs_table(listed: &[Listed]) -> comfy_table::Table {
    let mut metric_names: Vec<&str> = Vec::new();
    for l in listed {
        for (name, _) in &l.headline {
            if !metric_names.contains(&name.as_str()) {
                metric_names.push(name);
            }
        }
    }
    let mut header = vec!["RUN", "STATUS", "STARTED", "WALL", "STAGES"];
    header.extend(metric_names.iter().copied());
    header.push("PIPELINE");
    let mut t = table(header);
    for l in listed {
        let rec = &l.rec;
        let mut row = vec![
            rec.run_id.clone(),
            rec.status.to_string(),
            rec.started
                .replace('T', " ")
                .trim_end_matches('Z')
                .to_string(),
            wall_seconds(rec).map_or("-".into(), human_seconds),
            stage_counts(rec),
        ];
        for name in &metric_names {
            let value = l.headline.iter().find(|(n, _)| n == name).map(|(_, v)| *v);
            row.push(value.map_or("-".into(), number));
        }
        row.push(rec.pipeline.display().to_string());
        t.add_row(row);
    }
    t
}

fn to_json(l: &Listed) -> Value {
    let rec = &l.rec;
    let count = |s: &str| rec.stages.iter().filter(|x| x.status.as_str() == s).count();
    json!({
        "run_id": rec.run_id,
        "status": rec.status,
        "pipeline": rec.pipeline,
        "started": rec.started,
        "ended": rec.ended,
        "seconds": wall_seconds(rec),
        "stages": {"ran": count("ran"), "cached": count("cached"), "failed": count("failed"),
                   "skipped": count("skipped") + count("cancelled")},
        "headline": l.headline.iter().map(|(n, v)| (n.clone(), json!(v))).collect::<serde_json::Map<_, _>>(),
    })
}

fn stage_counts(rec: &RunRecord) -> String {
    let count = |s: &str| rec.stages.iter().filter(|x| x.status.as_str() == s).count();
    let mut parts = vec![
        format!("{} ran", count("ran")),
        format!("{} cached", count("cached")),
    ];
    for (word, n) in [
        ("failed", count("failed")),
        ("skipped", count("skipped") + count("cancelled")),
    ] {
        if n > 0 {
            parts.push(format!("{n} {word}"));
        }
    }
    parts.join(", ")
}

/// The run's wall time: from its start to its end (`None` while it runs).
pub fn wall_seconds(rec: &RunRecord) -> Option<f64> {
    let started = humantime::parse_rfc3339(&rec.started).ok()?;
    let ended = humantime::parse_rfc3339(rec.ended.as_deref()?).ok()?;
    Some(ended.duration_since(started).ok()?.as_secs_f64())
}

/// `5.7s`, `7m 31s`, `2h 5m 3s`.
pub fn human_seconds(secs: f64) -> String {
    if secs < 60.0 {
        format!("{secs:.1}s")
    } else {
        humantime::format_duration(std::time::Duration::from_secs(secs.round() as u64)).to_string()
    }
}

/// A pipeline path as comparable across spellings (`../p/x.yaml`, symlinks).
pub fn same_file_key(path: &Path) -> PathBuf {
    std::fs::canonicalize(path)
        .or_else(|_| std::path::absolute(path))
        .unwrap_or_else(|_| path.to_path_buf())
}
