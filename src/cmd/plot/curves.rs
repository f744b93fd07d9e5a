//! Reading what `tureen plot` draws from a recorded run: the training curves of every
//! stage that logged metrics (`<store>/runs/<run-id>/<stage>.metrics.jsonl`) and the
//! zero-shot accuracy that evaluation stages stored as JSON artifacts.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use serde::Deserialize;
use serde_json::Value;
use tureen_artifacts::store::ObjectKind;
use tureen_artifacts::{Digest, Store};
use tureen_engine::record::{list_runs, RunRecord};

/// The part of a run record (`<store>/runs/<id>.json`, written by the engine) that a
/// plot reads. Read leniently: fields the plot does not use may come and go.
#[derive(Debug, Clone, Deserialize)]
pub struct RunView {
    pub run_id: String,
    pub stages: Vec<StageView>,
}

/// One stage of a [`RunView`].
#[derive(Debug, Clone, Deserialize)]
pub struct StageView {
    pub name: String,
    pub kind: String,
    pub status: String,
    #[serde(default)]
    pub key: Option<String>,
    /// Input name -> `{"ref": "core.final", ...}`.
    #[serde(default)]
    pub inputs: BTreeMap<String, Value>,
    /// Output name -> `{"digest": ...}` or `{"series": [{"digest": ...}, ...]}`.
    #[serde(default)]
    pub outputs: BTreeMap<String, Value>,
}

impl RunView {
    pub fn read(store: &Path, run_id: &str) -> anyhow::Result<RunView> {
        let path = RunRecord::path(store, run_id);
        let bytes = std::fs::read(&path)
            .with_context(|| format!("cannot read run record {}", path.display()))?;
        serde_json::from_slice(&bytes)
            .with_context(|| format!("{}: not a tureen run record", path.display()))
    }

    pub fn stage(&self, name: &str) -> Option<&StageView> {
        self.stages.iter().find(|s| s.name == name)
    }
}

impl StageView {
    /// The references of every input, split where an input lists several; the `model`
    /// input first, since an eval also names its dataset (`data: synth.dataset`), and
    /// inputs are recorded in name order.
    fn refs(&self) -> impl Iterator<Item = &str> {
        let model = self.inputs.get("model").into_iter();
        let others = self
            .inputs
            .iter()
            .filter(|(name, _)| *name != "model")
            .map(|(_, i)| i);
        model
            .chain(others)
            .filter_map(|i| i.get("ref").and_then(Value::as_str))
            .flat_map(|r| r.split(", "))
    }
}

/// One metric of one stage against the x axis.
#[derive(Debug, Clone, PartialEq)]
pub struct Curve {
    pub stage: String,
    pub kind: String,
    /// `(x, value)` in log order.
    pub points: Vec<(f64, f64)>,
}

/// An evaluated model: the accuracy an `eval` stage measured for the output of
/// `model_stage`, placed at the samples that model had seen.
#[derive(Debug, Clone, PartialEq)]
pub struct EvalPoint {
    pub eval_stage: String,
    pub model_stage: String,
    pub model_kind: String,
    pub x: f64,
    /// Top-1 accuracy in percent.
    pub top1: f64,
    /// Its standard error in percent points, `sqrt(p (1 - p) / n)` over the `n`
    /// evaluated images, when the eval says how many it used.
    pub stderr: Option<f64>,
}

/// Everything one chart shows.
#[derive(Debug, Clone, Default)]
pub struct RunCurves {
    pub run_id: String,
    /// `true`: x is samples seen; `false`: some stage logged steps only, x is steps.
    pub x_is_samples: bool,
    pub loss: Vec<Curve>,
    /// Zero-shot top-1 in percent, logged during training.
    pub top1: Vec<Curve>,
    pub evals: Vec<EvalPoint>,
    /// Stage -> the evaluation of the checkpoint it continued (`inputs.from`), where a
    /// rewind's zero-shot curve branches off its parent's.
    pub branches: BTreeMap<String, EvalPoint>,
}

impl RunCurves {
    /// The largest x of any curve or evaluation.
    pub fn x_max(&self) -> f64 {
        let curves = self
            .loss
            .iter()
            .chain(&self.top1)
            .flat_map(|c| c.points.iter().map(|p| p.0));
        curves
            .chain(self.evals.iter().map(|e| e.x))
            .fold(0.0, f64::max)
    }
}

/// Reads the curves of run `run_id` (already resolved) from `store`.
pub fn read_run(store: &Path, run_id: &str) -> anyhow::Result<RunCurves> {
    let record = RunView::read(store, run_id)?;
    let mut logs: Vec<(StageView, Vec<MetricsRecord>)> = Vec::new();
    for stage in &record.stages {
        if let Some(path) = metrics_file(store, &record, stage) {
            // Only records with a position and a plotted value make curves (not an
            // eval's summary record, nor a soup's `{"step": 0, "ingredients": 2}`).
            let mut records = read_metrics(&path)?;
            records.retain(|r| {
                (r.step.is_some() || r.samples.is_some()) && (r.loss.is_some() || r.top1.is_some())
            });
            if !records.is_empty() {
                logs.push((stage.clone(), records));
            }
        }
    }
    let x_is_samples = logs
        .iter()
        .all(|(_, rs)| rs.iter().all(|r| r.samples.is_some()));
    let x_of = |r: &MetricsRecord| if x_is_samples { r.samples } else { r.step };
    let mut curves = RunCurves {
        run_id: run_id.to_string(),
        x_is_samples,
        ..Default::default()
    };
    let mut final_x: BTreeMap<String, f64> = BTreeMap::new();
    let mut interval_ends: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for (stage, records) in &logs {
        let series = |value: fn(&MetricsRecord) -> Option<f64>| Curve {
            stage: stage.name.clone(),
            kind: stage.kind.clone(),
            points: records
                .iter()
                .filter_map(|r| Some((x_of(r)?, value(r)?)))
                .collect(),
        };
        let loss = series(|r| r.loss);
        let mut top1 = series(|r| r.top1);
        as_percent(&mut top1.points);
        if let Some(x) = records.iter().filter_map(x_of).reduce(f64::max) {
            final_x.insert(stage.name.clone(), x);
        }
        // The x where each interval ends: element i of the stage's checkpoint series.
        let mut ends: BTreeMap<i64, f64> = BTreeMap::new();
        for r in records {
            if let (Some(interval), Some(x)) = (r.interval, x_of(r)) {
                let end = ends.entry(interval as i64).or_insert(x);
                *end = end.max(x);
            }
        }
        interval_ends.insert(stage.name.clone(), ends.into_values().collect());
        if !loss.points.is_empty() {
            curves.loss.push(loss);
        }
        if !top1.points.is_empty() {
            curves.top1.push(top1);
        }
    }
    curves.evals = read_evals(store, &record, &final_x, &interval_ends)?;
    curves.branches = branch_evals(&record, &curves.evals);
    Ok(curves)
}

/// For each stage that continued a checkpoint (`inputs.from`), the evaluation of that
/// very checkpoint (same digest), if the run has one.
fn branch_evals(record: &RunView, evals: &[EvalPoint]) -> BTreeMap<String, EvalPoint> {
    let digest_of = |stage: &StageView, input: &str| -> Option<String> {
        let artifacts = stage.inputs.get(input)?.get("artifacts")?;
        artifacts.get("digest")?.as_str().map(str::to_string)
    };
    let mut out = BTreeMap::new();
    for stage in &record.stages {
        let Some(from) = digest_of(stage, "from") else {
            continue;
        };
        let branch = evals.iter().find(|ev| {
            record
                .stage(&ev.eval_stage)
                .and_then(|s| digest_of(s, "model"))
                .is_some_and(|d| d == from)
        });
        if let Some(ev) = branch {
            out.insert(stage.name.clone(), ev.clone());
        }
    }
    out
}

/// The metrics log of `stage`: this run's, or, for a stage this run restored from the
/// cache, the log of the earlier run that computed the same key.
fn metrics_file(store: &Path, record: &RunView, stage: &StageView) -> Option<PathBuf> {
    let here = metrics_path(store, &record.run_id, &stage.name);
    if here.is_file() {
        return Some(here);
    }
    let key = stage.key.as_ref()?;
    list_runs(store)
        .into_iter()
        .filter(|id| *id != record.run_id)
        .find_map(|id| {
            let earlier = RunView::read(store, &id).ok()?;
            let s = earlier.stage(&stage.name)?;
            let path = metrics_path(store, &id, &stage.name);
            (s.key.as_ref() == Some(key) && s.status == "ran" && path.is_file()).then_some(path)
        })
}

fn metrics_path(store: &Path, run_id: &str, stage: &str) -> PathBuf {
    store
        .join("runs")
        .join(run_id)
        .join(format!("{stage}.metrics.jsonl"))
}

/// The fields of one metrics line that the chart uses.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricsRecord {
    pub step: Option<f64>,
    /// The checkpoint interval the record belongs to (0-based).
    pub interval: Option<f64>,
    pub samples: Option<f64>,
    pub loss: Option<f64>,
    pub top1: Option<f64>,
}

/// Reads a metrics JSONL file. A last line without its newline that does not parse is
/// a record cut short by a killed writer and is ignored; any other bad line is an
/// error naming `file:line`.
pub fn read_metrics(path: &Path) -> anyhow::Result<Vec<MetricsRecord>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let complete = text.ends_with('\n');
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let value: Value = match serde_json::from_str(line) {
            Ok(v) => v,
            Err(_) if i + 1 == lines.len() && !complete => break,
            Err(e) => bail!(
                "{}:{}: not a JSON metrics record: {e}",
                path.display(),
                i + 1
            ),
        };
        if !value.is_object() {
            bail!("{}:{}: expected a JSON object", path.display(), i + 1);
        }
        out.push(MetricsRecord {
            step: number(&value, &["step"]),
            interval: number(&value, &["interval"]),
            samples: number(&value, &["samples", "samples_seen"]),
            loss: number(&value, &["loss", "train/loss", "train_loss"]),
            top1: top1(&value),
        });
    }
    Ok(out)
}

fn number(value: &Value, keys: &[&str]) -> Option<f64> {
    keys.iter()
        .find_map(|k| value.get(*k).and_then(Value::as_f64))
        .filter(|x| x.is_finite())
}

/// Zero-shot top-1 in a metrics object: a well-known key, else the first numeric field,
/// at any depth, whose name ends in `top1` (`imagenet-zeroshot-val-top1`, `zeroshot/top1`).
fn top1(value: &Value) -> Option<f64> {
    if let Some(x) = number(
        value,
        &[
            "zeroshot_top1",
            "zeroshot/top1",
            "zero_shot_top1",
            "top1",
            "acc1",
        ],
    ) {
        return Some(x);
    }
    let Value::Object(map) = value else {
        return None;
    };
    for (key, v) in map {
        match v {
            Value::Number(n) if key.ends_with("top1") => {
                return n.as_f64().filter(|x| x.is_finite())
            }
            Value::Object(_) => {
                if let Some(x) = top1(v) {
                    return Some(x);
                }
            }
            _ => {}
        }
    }
    None
}

/// How many images an accuracy was measured on: `zeroshot.samples` as tureen's eval
/// writes it, or a top-level `samples`/`n`.
fn samples(value: &Value) -> Option<f64> {
    value
        .get("zeroshot")
        .and_then(|z| number(z, &["samples", "n"]))
        .or_else(|| number(value, &["samples", "n", "num_samples"]))
}

/// Accuracies logged as fractions (all at most 1) become percent.
fn as_percent(points: &mut [(f64, f64)]) {
    if points.iter().all(|p| p.1 <= 1.0) {
        for p in points {
            p.1 *= 100.0;
        }
    }
}

/// The accuracy each evaluation stage stored, attached to the stage whose model it
/// evaluated (the stage named by one of its input references).
fn read_evals(
    store: &Path,
    record: &RunView,
    final_x: &BTreeMap<String, f64>,
    interval_ends: &BTreeMap<String, Vec<f64>>,
) -> anyhow::Result<Vec<EvalPoint>> {
    let mut out = Vec::new();
    let names: Vec<&str> = record.stages.iter().map(|s| s.name.as_str()).collect();
    let mut opened: Option<Store> = None;
    for stage in record.stages.iter().filter(|s| s.kind == "eval") {
        let Some((name, index)) = evaluated_stage(stage, &names) else {
            continue;
        };
        let Some(model) = record.stage(name) else {
            continue;
        };
        let Some(accuracy) = stored_top1(store, &mut opened, stage)? else {
            continue;
        };
        let top1 = if accuracy.top1 <= 1.0 {
            accuracy.top1
        } else {
            accuracy.top1 / 100.0
        };
        // An intermediate checkpoint sits where its interval ended; a final model (or
        // an index the logs do not cover) at the end of its stage.
        let at_checkpoint = index.and_then(|i| {
            let ends = interval_ends.get(name)?;
            let i = if i < 0 { ends.len() as i64 + i } else { i };
            ends.get(usize::try_from(i).ok()?).copied()
        });
        let x = at_checkpoint.unwrap_or_else(|| model_x(record, model, final_x));
        out.push(EvalPoint {
            eval_stage: stage.name.clone(),
            model_stage: model.name.clone(),
            model_kind: model.kind.clone(),
            x,
            top1: top1 * 100.0,
            stderr: accuracy
                .samples
                .filter(|n| *n >= 1.0)
                .map(|n| 100.0 * (top1 * (1.0 - top1) / n).sqrt()),
        });
    }
    Ok(out)
}

/// The stage an eval's inputs refer to (`soup.soup`, `core.final`), longest stage-name
/// prefix first, since stage names may contain dots, and the series index when the
/// reference is one element (`core.checkpoints[12]`).
fn evaluated_stage<'a>(eval: &StageView, names: &[&'a str]) -> Option<(&'a str, Option<i64>)> {
    eval.refs().find_map(|r| {
        let name = stage_of(r, names)?;
        let index = r[name.len() + 1..]
            .split_once('[')
            .and_then(|(_, rest)| rest.strip_suffix(']'))
            .and_then(|i| i.trim().parse::<i64>().ok());
        Some((name, index))
    })
}

/// The stage a reference such as `core.checkpoints[3]` points into, if any.
pub fn stage_of<'a>(reference: &str, names: &[&'a str]) -> Option<&'a str> {
    names
        .iter()
        .filter(|n| {
            reference.len() > n.len()
                && reference.starts_with(**n)
                && reference.as_bytes()[n.len()] == b'.'
        })
        .max_by_key(|n| n.len())
        .copied()
}

/// Samples a model has seen: the end of its own curve, or for a soup (no curve of its
/// own) the end of the latest of its ingredients.
fn model_x(record: &RunView, model: &StageView, final_x: &BTreeMap<String, f64>) -> f64 {
    if let Some(x) = final_x.get(&model.name) {
        return *x;
    }
    let names: Vec<&str> = record.stages.iter().map(|s| s.name.as_str()).collect();
    let upstream: Vec<&str> = model.refs().filter_map(|r| stage_of(r, &names)).collect();
    let from_upstream = upstream
        .iter()
        .filter_map(|n| final_x.get(*n))
        .copied()
        .reduce(f64::max);
    from_upstream.unwrap_or_else(|| final_x.values().copied().fold(0.0, f64::max))
}

/// A stored top-1 accuracy and the number of images it was measured on.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Accuracy {
    top1: f64,
    samples: Option<f64>,
}

/// The top-1 accuracy in an eval stage's stored JSON output(s).
fn stored_top1(
    store: &Path,
    opened: &mut Option<Store>,
    stage: &StageView,
) -> anyhow::Result<Option<Accuracy>> {
    if opened.is_none() {
        *opened = Some(
            Store::open(store).with_context(|| format!("cannot open store {}", store.display()))?,
        );
    }
    let store = opened.as_ref().expect("opened above");
    for (name, output) in &stage.outputs {
        // A single artifact (`{"digest": ...}`); series are checkpoints, not metrics.
        let Some(text) = output.get("digest").and_then(Value::as_str) else {
            continue;
        };
        let digest: Digest = text.parse().map_err(|e| {
            anyhow::anyhow!(
                "stage `{}` output `{name}`: bad digest `{text}`: {e}",
                stage.name
            )
        })?;
        for digest in json_files(store, &digest)? {
            let path = store.object_path(&digest);
            let bytes =
                std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
            if let Ok(value) = serde_json::from_slice::<Value>(&bytes) {
                if let Some(x) = top1(&value) {
                    return Ok(Some(Accuracy {
                        top1: x,
                        samples: samples(&value),
                    }));
                }
            }
        }
    }
    Ok(None)
}

/// The artifact itself, or the `.json` members of a tree artifact.
fn json_files(store: &Store, digest: &Digest) -> anyhow::Result<Vec<Digest>> {
    match store.kind(digest)? {
        ObjectKind::Tree => {
            let tree = store.read_tree(digest)?;
            Ok(tree
                .files
                .iter()
                .filter(|(p, _)| p.ends_with(".json"))
                .map(|(_, d)| *d)
                .collect())
        }
        _ => Ok(vec![*digest]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A train stage of 3 intervals x 4 steps at batch 8, evaluated at its checkpoint
    /// 1 (after interval 2) and at its final model.
    fn fixture(store: &Path) {
        let s = Store::open(store).unwrap();
        let metrics = |top1: f64| {
            let d = s
                .add_bytes(
                    json!({"zeroshot": {"top1": top1, "samples": 400}})
                        .to_string()
                        .as_bytes(),
                )
                .unwrap();
            json!({"metrics": {"digest": d.to_string()}})
        };
        let record = json!({"run_id": "r1", "stages": [
            {"name": "core", "kind": "train", "status": "ran"},
            {"name": "mid", "kind": "eval", "status": "ran",
             "inputs": {"model": {"ref": "core.checkpoints[1]"}}, "outputs": metrics(0.25)},
            {"name": "end", "kind": "eval", "status": "ran",
             "inputs": {"model": {"ref": "core.final"}}, "outputs": metrics(0.5)},
        ]});
        std::fs::create_dir_all(store.join("runs/r1")).unwrap();
        std::fs::write(store.join("runs/r1.json"), record.to_string()).unwrap();
        let lines: String = (1..=12u64)
            .map(|step| format!("{}\n", json!({"step": step, "interval": (step - 1) / 4, "samples": step * 8, "loss": 1.0})))
            .collect();
        std::fs::write(store.join("runs/r1/core.metrics.jsonl"), lines).unwrap();
    }

    #[test]
    fn evals_sit_where_their_checkpoint_was_saved() {
        let dir = tempfile::tempdir().unwrap();
        fixture(dir.path());
        let curves = read_run(dir.path(), "r1").unwrap();
        assert!(curves.x_is_samples);
        assert_eq!(curves.loss.len(), 1);
        assert_eq!(curves.loss[0].points.len(), 12);
        let at = |name: &str| curves.evals.iter().find(|e| e.eval_stage == name).unwrap();
        // Checkpoint 1 follows interval 2: 8 steps x 8 samples.
        assert_eq!((at("mid").x, at("mid").top1), (64.0, 25.0));
        assert_eq!((at("end").x, at("end").top1), (96.0, 50.0));
        // sqrt(0.5 x 0.5 / 400) = 2.5 points.
        assert_eq!(at("end").stderr, Some(2.5));
    }

    #[test]
    fn accuracy_found_under_any_key_ending_in_top1() {
        assert_eq!(top1(&json!({"imagenet-zeroshot-val-top1": 0.7})), Some(0.7));
        assert_eq!(
            top1(&json!({"retrieval": {"r1": 0.1}, "zeroshot": {"top1": 0.3}})),
            Some(0.3)
        );
        assert_eq!(top1(&json!({"loss": 1.0})), None);
    }
}
