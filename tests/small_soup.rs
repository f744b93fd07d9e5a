//! `pipelines/small-soup.yaml`, the README's main job, is the model card's recipe in
//! miniature. Running it takes minutes, so these tests check what can be checked in a
//! second: it validates, plans every stage, and keeps the card's proportions (rewind of
//! the last ~10% at ~1.17x the batch and 2x the lr with stronger augmentation, a uniform
//! soup of the two finals, and an eval of each of the three models).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;
use tureen_engine::kind::KindRegistry;
use tureen_engine::pipeline::{self, Input, Pipeline, Select, Stage, Target};

fn pipeline_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("pipelines/small-soup.yaml")
}

fn load() -> Pipeline {
    let mut registry = KindRegistry::new();
    tureen_stages::register_all(&mut registry);
    pipeline::load(&pipeline_path(), &registry, &[])
        .unwrap_or_else(|e| panic!("pipelines/small-soup.yaml does not load: {e}"))
}

fn stage<'p>(p: &'p Pipeline, name: &str) -> &'p Stage {
    p.stage(name).unwrap_or_else(|| panic!("no stage `{name}`"))
}

fn num(stage: &Stage, path: &[&str]) -> f64 {
    let mut v = stage.params.get(path[0]);
    for key in &path[1..] {
        v = v.and_then(|v| v.get(key));
    }
    v.and_then(Value::as_f64)
        .unwrap_or_else(|| panic!("{}: params.{} is not a number", stage.name, path.join(".")))
}

/// The (stage, output, selector) a one-reference input points at.
fn source<'p>(p: &'p Pipeline, stage: &Stage, input: &str) -> (&'p str, String, Select) {
    match stage.inputs.get(input) {
        Some(Input::One(r)) => match &r.target {
            Target::Output {
                stage: i,
                output,
                select,
            } => (p.stages[*i].name.as_str(), output.clone(), *select),
            other => panic!(
                "{}.inputs.{input} is not a stage output: {other:?}",
                stage.name
            ),
        },
        other => panic!(
            "{}.inputs.{input}: expected one reference, got {other:?}",
            stage.name
        ),
    }
}

fn tureen(args: &[&str], store: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tureen"))
        .args(args)
        .env("TUREEN_STORE", store)
        .output()
        .expect("running tureen")
}

#[test]
fn small_soup_validates_and_its_dry_run_plans_every_stage() {
    let store = tempfile::tempdir().unwrap();
    let path = pipeline_path();
    let path = path.to_str().unwrap();

    let dag = tureen(&["dag", path], store.path());
    let text = String::from_utf8_lossy(&dag.stdout);
    assert!(
        dag.status.success(),
        "tureen dag failed: {}",
        String::from_utf8_lossy(&dag.stderr)
    );
    for name in [
        "synth",
        "core",
        "rewind",
        "soup",
        "eval_core",
        "eval_rewind",
        "eval_soup",
        "report",
    ] {
        assert!(
            text.contains(name),
            "`tureen dag` does not show stage {name}:\n{text}"
        );
    }

    let plan = tureen(&["run", "--dry-run", path], store.path());
    let text = String::from_utf8_lossy(&plan.stdout);
    assert!(
        plan.status.success(),
        "tureen run --dry-run failed:\n{text}{}",
        String::from_utf8_lossy(&plan.stderr)
    );
    // Nothing is cached in a fresh store: every stage is planned to run.
    assert!(text.contains("13 to run, 0 cached"), "{text}");
}

#[test]
fn small_soup_rewinds_the_last_tenth_at_a_larger_batch_twice_the_lr_and_stronger_augmentation() {
    let p = load();
    let (core, rewind) = (stage(&p, "core"), stage(&p, "rewind"));
    assert_eq!(
        (core.kind.as_str(), rewind.kind.as_str()),
        ("train", "rewind")
    );

    // `core.checkpoints[i]` is the checkpoint after interval i + 1.
    let (from, output, select) = source(&p, rewind, "from");
    assert_eq!((from, output.as_str()), ("core", "checkpoints"));
    let Select::Index(i) = select else {
        panic!("rewind.from must pick one checkpoint")
    };
    let intervals = num(core, &["intervals"]);
    assert_eq!(
        num(rewind, &["intervals"]),
        intervals,
        "the rewind ends where the core run ends"
    );
    let redone = (intervals - (i as f64 + 1.0)) / intervals;
    assert!(
        (0.05..=0.15).contains(&redone),
        "the rewind redoes {:.1}% of the run, the card ~10%",
        redone * 100.0
    );

    assert_eq!(
        num(rewind, &["samples_per_interval"]),
        num(core, &["samples_per_interval"])
    );
    let batch = num(rewind, &["batch_size"]) / num(core, &["batch_size"]);
    assert!(
        (1.14..=1.20).contains(&batch),
        "batch ratio {batch}, the card 95,744 / 81,920 = 1.17"
    );
    assert_eq!(
        num(rewind, &["lr"]) / num(core, &["lr"]),
        2.0,
        "the card doubles the lr"
    );

    assert_eq!(num(core, &["data", "augment", "re_prob"]), 0.35);
    assert_eq!(num(rewind, &["data", "augment", "re_prob"]), 0.4);
    let scale = |s: &Stage| s.params["data"]["augment"]["scale"][0].as_f64().unwrap();
    assert_eq!((scale(core), scale(rewind)), (0.33, 0.3));
}

#[test]
fn small_soup_soups_the_two_finals_and_evaluates_core_rewind_and_soup() {
    let p = load();
    let soup = stage(&p, "soup");
    assert_eq!(soup.kind, "soup");
    let Some(Input::List(refs)) = soup.inputs.get("checkpoints") else {
        panic!("soup.inputs.checkpoints must be a list")
    };
    let texts: Vec<&str> = refs.iter().map(|r| r.text.as_str()).collect();
    assert_eq!(texts, ["core.final", "rewind.final"]);
    assert!(
        soup.params.get("method").is_none_or(|m| m == "uniform"),
        "a uniform soup, as the card"
    );

    for (eval, model) in [
        ("eval_core", "core"),
        ("eval_rewind", "rewind"),
        ("eval_soup", "soup"),
    ] {
        let e = stage(&p, eval);
        assert_eq!(e.kind, "eval");
        assert_eq!(source(&p, e, "model").0, model);
        assert_eq!(source(&p, e, "data").0, "synth");
        for key in ["data", "classnames", "templates", "retrieval"] {
            assert!(e.params.contains_key(key), "{eval}: params.{key} missing");
        }
    }
    // The three evals measure the same thing: only the model differs.
    assert_eq!(
        stage(&p, "eval_core").params,
        stage(&p, "eval_rewind").params
    );
}

#[test]
fn small_soup_measures_zero_shot_over_the_final_tenth_of_core_and_rewind() {
    let p = load();
    let intervals = num(stage(&p, "core"), &["intervals"]) as i64;
    let rewind_from = match source(&p, stage(&p, "rewind"), "from").2 {
        Select::Index(i) => i,
        other => panic!("rewind.inputs.from: {other:?}"),
    };
    // Element i of a series is the checkpoint after interval i + 1; count from the end.
    let interval_of = |stage: &str, select: Select| -> i64 {
        let Select::Index(i) = select else { panic!("{select:?}") };
        let len = if stage == "core" { intervals } else { intervals - rewind_from - 1 };
        let i = if i < 0 { len + i } else { i };
        if stage == "core" { i + 1 } else { rewind_from + 2 + i }
    };
    let mut seen: Vec<(String, i64)> = p
        .stages
        .iter()
        .filter(|s| s.name.starts_with("zeroshot@"))
        .map(|s| {
            assert_eq!(s.kind, "eval");
            let (model, output, select) = source(&p, s, "model");
            assert_eq!(output, "checkpoints", "{}: a checkpoint, not a final", s.name);
            (model.to_string(), interval_of(model, select))
        })
        .collect();
    seen.sort();
    // The branch point (after interval 29) and core's next two, the rewind's first two:
    // with eval_core and eval_rewind (the finals, after 32) the card's zoom-in on the
    // final 10%.
    assert_eq!(
        seen,
        [("core".into(), 29), ("core".into(), 30), ("core".into(), 31), ("rewind".into(), 30), ("rewind".into(), 31)]
    );
    assert!(seen.iter().all(|(_, i)| *i as f64 >= 0.9 * intervals as f64 - 0.5));
}
