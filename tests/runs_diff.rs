//! Comparing runs (issue 13, item 1, and the `tureen runs` misbehaviours): `tureen diff`
//! shows params, stage keys, output digests and metrics side by side with the change;
//! `tureen runs` lists headline metrics in aligned columns, the run's wall time, and
//! filters by pipeline; `show` includes the metrics; all of them with `--json`.

mod engine_common;
mod recipe;

use engine_common::Workspace;
use serde_json::Value;

/// Two sequential stages of 0.4 s each; `evaluate` writes an eval-like metrics file.
const PIPELINE: &str = r#"
tureen: 1
params:
  score: 0.25
  epochs: 2
stages:
  train:
    kind: command
    cmd: sleep 0.4; echo "epochs ${params.epochs}" > ${outs.model}
    outs: {model: build/model.txt}
  evaluate:
    kind: command
    inputs: {model: train.model}
    cmd: 'sleep 0.4; echo "{\"zeroshot\": {\"top1\": ${params.score}, \"samples\": 400}}" > ${outs.metrics}'
    outs: {metrics: build/metrics.json}
"#;

fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}):\n{text}"))
}

fn stdout(ws: &Workspace, args: &[&str]) -> String {
    let out = ws.tureen(args);
    assert!(
        out.status.success(),
        "{args:?}: {}",
        engine_common::both(&out)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn diff_shows_params_keys_outputs_and_metrics_with_their_change() {
    let ws = Workspace::new();
    ws.write("p.yaml", PIPELINE);
    ws.ok(&["run", "p.yaml"]);
    ws.ok(&["run", "p.yaml", "-P", "score=0.3"]);

    let text = stdout(&ws, &["diff"]);
    assert!(text.contains("params: 1 of 2 changed"), "{text}");
    assert!(
        text.lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>() == ["score", "0.25", "0.3"]),
        "{text}"
    );
    assert!(text.contains("stages: 1 of 2 changed"), "{text}");
    let evaluate = text.lines().find(|l| l.starts_with("evaluate")).unwrap();
    assert!(evaluate.contains("changed: metrics"), "{evaluate}");
    let metric = text.lines().find(|l| l.contains("zeroshot.top1")).unwrap();
    assert_eq!(
        metric.split_whitespace().collect::<Vec<_>>(),
        ["evaluate", "zeroshot.top1", "0.2500", "0.3000", "+0.0500"]
    );
    // Unchanged stages only with --all.
    assert!(!text.lines().any(|l| l.starts_with("train ")), "{text}");
    assert!(stdout(&ws, &["diff", "--all"])
        .lines()
        .any(|l| l.starts_with("train ")));

    let d = json(&stdout(&ws, &["diff", "--json"]));
    let ids = engine_common::runs(&ws.store());
    assert_eq!(
        (d["a"]["run_id"].as_str(), d["b"]["run_id"].as_str()),
        (Some(ids[1].as_str()), Some(ids[0].as_str()))
    );
    let m = d["metrics"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["metric"] == "zeroshot.top1")
        .unwrap();
    assert!((m["change"].as_f64().unwrap() - 0.05).abs() < 1e-12, "{m}");
    let train = d["stages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "train")
        .unwrap();
    assert_eq!(train["changed"], false);
    assert_eq!(train["a"]["key"], train["b"]["key"]);
    // Explicit runs, `latest~1` among them.
    let explicit = json(&stdout(&ws, &["diff", "latest~1", "latest", "--json"]));
    assert_eq!(explicit["metrics"], d["metrics"]);
}

#[test]
fn runs_lists_aligned_columns_wall_time_and_headline_metrics_per_pipeline() {
    let ws = Workspace::new();
    ws.write("p.yaml", PIPELINE);
    ws.write(
        "other.yaml",
        "tureen: 1\nstages:\n  one:\n    kind: command\n    cmd: 'true'\n",
    );
    ws.ok(&["run", "p.yaml"]);
    ws.ok(&["run", "other.yaml"]);

    let table = stdout(&ws, &["runs"]);
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 3, "{table}");
    // Every column starts where its header does (ids are wider than `RUN`).
    for header in [
        "STATUS",
        "STARTED",
        "WALL",
        "STAGES",
        "evaluate top-1",
        "PIPELINE",
    ] {
        let at = lines[0]
            .find(header)
            .unwrap_or_else(|| panic!("no {header}:\n{table}"));
        for row in &lines[1..] {
            assert_ne!(
                row.as_bytes()[at],
                b' ',
                "column {header} misaligned:\n{table}"
            );
            assert_eq!(
                row.as_bytes()[at - 1],
                b' ',
                "column {header} misaligned:\n{table}"
            );
        }
    }
    assert!(lines[2].contains("0.2500"), "{table}");

    let only = json(&stdout(&ws, &["runs", "p.yaml", "--json"]));
    let only = only.as_array().unwrap();
    assert_eq!(only.len(), 1, "filtered by pipeline");
    assert_eq!(only[0]["headline"]["evaluate top-1"], 0.25);
    // The run's wall time: both stages one after the other, not the longest stage.
    let seconds = only[0]["seconds"].as_f64().unwrap();
    assert!(seconds >= 0.8, "wall time {seconds} s");

    let limit = json(&stdout(&ws, &["runs", "--limit", "1", "--json"]));
    assert_eq!(limit.as_array().unwrap().len(), 1);
    let out = ws.tureen(&["runs", "-n", "1"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        engine_common::both(&out).contains("--limit"),
        "{}",
        engine_common::both(&out)
    );
}

#[test]
fn show_includes_the_metrics_in_text_and_json() {
    let ws = Workspace::new();
    ws.write("p.yaml", PIPELINE);
    ws.ok(&["run", "p.yaml"]);
    let text = stdout(&ws, &["show"]);
    assert!(text.contains("metric   zeroshot.top1 = 0.2500"), "{text}");
    let rec = json(&stdout(&ws, &["show", "latest", "--json"]));
    assert_eq!(rec["metrics"]["evaluate"]["zeroshot.samples"], 400.0);
    assert!(rec["stages"].is_array(), "the record itself is kept");
}

#[test]
fn a_training_stage_headline_is_its_final_loss() {
    let dir = tempfile::tempdir().unwrap();
    recipe::run(dir.path(), &recipe::core_only(2));
    let out = recipe::tureen(dir.path(), &["runs", "--json"])
        .output()
        .unwrap();
    let runs = json(&String::from_utf8(out.stdout).unwrap());
    let loss = runs[0]["headline"]["core loss"]
        .as_f64()
        .expect("core loss in the headline");
    let log = std::fs::read_dir(dir.path().join(".tureen/runs"))
        .unwrap()
        .flatten()
        .map(|e| e.path().join("core.metrics.jsonl"))
        .find(|p| p.is_file())
        .unwrap();
    let last: Value = json(
        std::fs::read_to_string(log)
            .unwrap()
            .lines()
            .last()
            .unwrap(),
    );
    assert_eq!(last["loss"].as_f64(), Some(loss), "the last logged loss");
}
