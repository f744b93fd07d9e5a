//! `tureen diff [RUN_A [RUN_B]]`: two runs side by side, as `dvc params diff`,
//! `dvc metrics diff` and `dvc exp show` do: params, each stage's key and output
//! digests, and every metric with its change. By default the latest run and the run of
//! the same pipeline before it.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::bail;
use serde_json::{json, Value};
use tureen_engine::cache::OutputRecord;
use tureen_engine::record::{self, RunRecord, StageRecord};
use tureen_engine::run_metrics::{RanBy, RunMetrics};

use super::output::{change, number, print_json, print_table, table};
use super::runs::same_file_key;
use super::Global;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The earlier run (default: the run of RUN_B's pipeline before RUN_B).
    #[arg(value_name = "RUN_A")]
    pub run_a: Option<String>,
    /// The later run (default: the latest run, of --pipeline if given).
    #[arg(value_name = "RUN_B")]
    pub run_b: Option<String>,
    /// Choose the default runs among this pipeline's.
    #[arg(long, value_name = "PIPELINE")]
    pub pipeline: Option<PathBuf>,
    /// Also list the params and stages that did not change.
    #[arg(long)]
    pub all: bool,
    /// Print JSON instead of tables.
    #[arg(long)]
    pub json: bool,
}

/// Both runs with their metrics.
struct Side {
    rec: RunRecord,
    metrics: RunMetrics,
}

pub fn run(args: Args, global: &Global) -> anyhow::Result<ExitCode> {
    let store = match &args.pipeline {
        Some(p) => global.locate_store(Some(p))?.path,
        None => global.existing_store()?,
    };
    let (a, b) = choose(&store, &args)?;
    let ran_by = RanBy::scan(&store);
    let side = |id: &str| -> anyhow::Result<Side> {
        let rec = RunRecord::read(&RunRecord::path(&store, id))?;
        let metrics = RunMetrics::read(&store, &rec, &ran_by);
        Ok(Side { rec, metrics })
    };
    let (a, b) = (side(&a)?, side(&b)?);
    let diff = Diff::of(&a, &b);
    if args.json {
        print_json(&diff.to_json(&a, &b));
    } else {
        diff.print(&a, &b, args.all);
    }
    Ok(ExitCode::SUCCESS)
}

/// The two run ids to compare.
fn choose(store: &std::path::Path, args: &Args) -> anyhow::Result<(String, String)> {
    let pipeline_of = |id: &str| -> anyhow::Result<PathBuf> {
        Ok(same_file_key(
            &RunRecord::read(&RunRecord::path(store, id))?.pipeline,
        ))
    };
    let ids = record::list_runs(store);
    let wanted = args.pipeline.as_deref().map(same_file_key);
    let newest_of = |pipeline: &PathBuf, skip: &str| -> Option<String> {
        ids.iter()
            .filter(|id| id.as_str() != skip)
            .find(|id| pipeline_of(id).ok().as_ref() == Some(pipeline))
            .cloned()
    };
    match (&args.run_a, &args.run_b) {
        (Some(a), Some(b)) => Ok((record::find_run(store, a)?, record::find_run(store, b)?)),
        (Some(a), None) => {
            let a = record::find_run(store, a)?;
            let b = newest_of(&pipeline_of(&a)?, &a).ok_or_else(|| {
                anyhow::anyhow!("no other run of the pipeline of {a} to compare with")
            })?;
            Ok((a, b))
        }
        (None, _) => {
            let b = match &wanted {
                Some(p) => ids
                    .iter()
                    .find(|id| pipeline_of(id).ok().as_ref() == Some(p))
                    .cloned()
                    .ok_or_else(|| {
                        anyhow::anyhow!(
                            "no runs of {} recorded in {}",
                            p.display(),
                            store.display()
                        )
                    })?,
                None => record::find_run(store, "latest")?,
            };
            // The run of the same pipeline just before B.
            let pipeline = pipeline_of(&b)?;
            let mut older = ids.iter().skip_while(|id| **id != b).skip(1);
            let a = older
                .find(|id| pipeline_of(id).ok().as_ref() == Some(&pipeline))
                .cloned();
            match a {
                Some(a) => Ok((a, b)),
                None => bail!(
                    "{b} is the only run of {} (give two run ids to compare runs of different pipelines)",
                    pipeline.display()
                ),
            }
        }
    }
}

/// One param, stage or metric compared.
struct Row<T> {
    name: String,
    a: Option<T>,
    b: Option<T>,
}

impl<T: PartialEq> Row<T> {
    fn changed(&self) -> bool {
        self.a != self.b
    }
}

/// What a stage is, for comparing: status, key and output digests.
#[derive(Debug, Clone)]
struct StageFacts {
    status: String,
    key: Option<String>,
    outputs: Vec<(String, String)>,
}

/// Equal when the work is the same: a stage that ran in one run and was restored from
/// the cache in the other did not change.
impl PartialEq for StageFacts {
    fn eq(&self, other: &Self) -> bool {
        self.key == other.key && self.outputs == other.outputs
    }
}

struct Diff {
    params: Vec<Row<Value>>,
    stages: Vec<Row<StageFacts>>,
    /// (stage, metric) with both values.
    metrics: Vec<(String, Row<f64>)>,
}

impl Diff {
    fn of(a: &Side, b: &Side) -> Diff {
        let names: BTreeSet<&String> = a.rec.params.keys().chain(b.rec.params.keys()).collect();
        let params = names
            .into_iter()
            .map(|n| Row {
                name: n.clone(),
                a: a.rec.params.get(n).cloned(),
                b: b.rec.params.get(n).cloned(),
            })
            .collect();
        let mut stage_names: Vec<&str> = b.rec.stages.iter().map(|s| s.name.as_str()).collect();
        for s in &a.rec.stages {
            if !stage_names.contains(&s.name.as_str()) {
                stage_names.push(&s.name);
            }
        }
        let stages = stage_names
            .iter()
            .map(|n| Row {
                name: n.to_string(),
                a: a.rec.stage(n).map(facts),
                b: b.rec.stage(n).map(facts),
            })
            .collect();
        let mut metrics = Vec::new();
        for n in &stage_names {
            let (ma, mb) = (a.metrics.stages.get(*n), b.metrics.stages.get(*n));
            let keys: BTreeSet<&String> = ma.into_iter().chain(mb).flat_map(|m| m.keys()).collect();
            for k in keys {
                metrics.push((
                    n.to_string(),
                    Row {
                        name: k.clone(),
                        a: ma.and_then(|m| m.get(k)).copied(),
                        b: mb.and_then(|m| m.get(k)).copied(),
                    },
                ));
            }
        }
        Diff {
            params,
            stages,
            metrics,
        }
    }

    fn print(&self, a: &Side, b: &Side, all: bool) {
        for (label, side) in [("A", a), ("B", b)] {
            println!(
                "{label}  {}  {}  {}",
                side.rec.run_id,
                side.rec.status,
                side.rec.pipeline.display()
            );
        }
        let show = |changed: bool| all || changed;
        let changed_params = self.params.iter().filter(|r| r.changed()).count();
        println!(
            "\nparams: {changed_params} of {} changed",
            self.params.len()
        );
        let mut t = table(["PARAM", "A", "B"]);
        for r in self.params.iter().filter(|r| show(r.changed())) {
            let cell =
                |v: &Option<Value>| v.as_ref().map_or("(unset)".to_string(), Value::to_string);
            t.add_row([r.name.clone(), cell(&r.a), cell(&r.b)]);
        }
        if !t.is_empty() {
            print_table(&t);
        }
        let changed_stages = self.stages.iter().filter(|r| r.changed()).count();
        println!(
            "\nstages: {changed_stages} of {} changed",
            self.stages.len()
        );
        let mut t = table(["STAGE", "A", "B", "KEY A", "KEY B", "OUTPUTS"]);
        for r in self.stages.iter().filter(|r| show(r.changed())) {
            let status =
                |f: &Option<StageFacts>| f.as_ref().map_or("-".into(), |f| f.status.clone());
            let key = |f: &Option<StageFacts>| {
                // `blake3:` and 12 hex digits tell keys apart; --json has them whole.
                f.as_ref()
                    .and_then(|f| f.key.as_deref())
                    .map_or("-".into(), |k| k.chars().take(19).collect())
            };
            t.add_row([
                r.name.clone(),
                status(&r.a),
                status(&r.b),
                key(&r.a),
                key(&r.b),
                outputs_change(r),
            ]);
        }
        if !t.is_empty() {
            print_table(&t);
        }
        println!(
            "\nmetrics: {} ({} changed)",
            self.metrics.len(),
            self.metrics.iter().filter(|(_, r)| r.changed()).count()
        );
        let mut t = table(["STAGE", "METRIC", "A", "B", "CHANGE"]);
        for (stage, r) in &self.metrics {
            let cell = |v: Option<f64>| v.map_or("-".into(), number);
            t.add_row([
                stage.clone(),
                r.name.clone(),
                cell(r.a),
                cell(r.b),
                change(r.a, r.b),
            ]);
        }
        if !t.is_empty() {
            print_table(&t);
        }
    }

    fn to_json(&self, a: &Side, b: &Side) -> Value {
        let run = |s: &Side| json!({"run_id": s.rec.run_id, "status": s.rec.status, "pipeline": s.rec.pipeline});
        let stage = |f: &Option<StageFacts>| {
            f.as_ref().map(|f| {
                let outputs: serde_json::Map<String, Value> = f
                    .outputs
                    .iter()
                    .map(|(k, v)| (k.clone(), Value::String(v.clone())))
                    .collect();
                json!({"status": f.status, "key": f.key, "outputs": outputs})
            })
        };
        json!({
            "a": run(a),
            "b": run(b),
            "params": self.params.iter().map(|r| json!({"name": r.name, "a": r.a, "b": r.b, "changed": r.changed()})).collect::<Vec<_>>(),
            "stages": self.stages.iter().map(|r| json!({"name": r.name, "a": stage(&r.a), "b": stage(&r.b), "changed": r.changed()})).collect::<Vec<_>>(),
            "metrics": self.metrics.iter().map(|(s, r)| json!({
                "stage": s, "metric": r.name, "a": r.a, "b": r.b,
                "change": r.a.zip(r.b).map(|(a, b)| b - a),
            })).collect::<Vec<_>>(),
        })
    }
}

fn facts(s: &StageRecord) -> StageFacts {
    StageFacts {
        status: s.status.to_string(),
        key: s.key.map(|k| k.to_string()),
        outputs: s
            .outputs
            .iter()
            .map(|(name, o)| {
                let digest = match o {
                    OutputRecord::One(a) => a.digest.to_string(),
                    OutputRecord::Series { series } => {
                        let all: Vec<String> =
                            series.iter().map(|a| a.digest.to_string()).collect();
                        format!(
                            "series of {}: {}",
                            series.len(),
                            tureen_artifacts::Digest::of_bytes(all.join("\n").as_bytes())
                        )
                    }
                };
                (name.clone(), digest)
            })
            .collect(),
    }
}

/// Which outputs changed digest: `same`, or the changed names.
fn outputs_change(r: &Row<StageFacts>) -> String {
    let (Some(a), Some(b)) = (&r.a, &r.b) else {
        return if r.a.is_none() {
            "only in B".into()
        } else {
            "only in A".into()
        };
    };
    let changed: Vec<&str> = b
        .outputs
        .iter()
        .filter(|(n, d)| a.outputs.iter().find(|(m, _)| m == n).map(|(_, e)| e) != Some(d))
        .map(|(n, _)| n.as_str())
        .chain(
            a.outputs
                .iter()
                .filter(|(n, _)| !b.outputs.iter().any(|(m, _)| m == n))
                .map(|(n, _)| n.as_str()),
        )
        .collect();
    if changed.is_empty() {
        "same".into()
    } else {
        format!("changed: {}", changed.join(", "))
    }
}
