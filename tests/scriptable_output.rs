//! Scriptable output and exit codes (issue 13, item 7): `--json` on `status`, `runs`,
//! `run --dry-run` and `plan`; `status --check` exits 1 when a stage is out of date;
//! `-j 0` means all cores.

mod engine_common;

use engine_common::Workspace;
use serde_json::Value;

const PIPELINE: &str = "tureen: 1\nparams: {n: 1}\nstages:\n  a:\n    kind: command\n    cmd: echo ${params.n} > ${outs.x}\n    outs: {x: a.txt}\n  b:\n    kind: command\n    inputs: {x: a.x}\n    cmd: cat ${inputs.x} > ${outs.y}\n    outs: {y: b.txt}\n";

fn json(ws: &Workspace, args: &[&str]) -> Value {
    let out = ws.tureen(args);
    assert!(
        out.status.success(),
        "{args:?}: {}",
        engine_common::both(&out)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{args:?}: not JSON: {e}"))
}

#[test]
fn status_check_exits_one_while_a_stage_is_out_of_date() {
    let ws = Workspace::new();
    ws.write("p.yaml", PIPELINE);
    let stale = ws.tureen(&["status", "--check", "p.yaml"]);
    assert_eq!(
        stale.status.code(),
        Some(1),
        "{}",
        engine_common::both(&stale)
    );
    let quiet = ws.tureen(&["-q", "status", "--check", "p.yaml"]);
    assert_eq!(
        (quiet.status.code(), quiet.stdout.is_empty()),
        (Some(1), true)
    );
    ws.ok(&["run", "p.yaml"]);
    assert_eq!(
        ws.tureen(&["status", "--check", "p.yaml"]).status.code(),
        Some(0)
    );
    let changed = ws.tureen(&["status", "--check", "p.yaml", "-P", "n=2"]);
    assert_eq!(changed.status.code(), Some(1));
}

#[test]
fn status_runs_dry_run_and_plan_speak_json() {
    let ws = Workspace::new();
    ws.write("p.yaml", PIPELINE);
    let plan = json(&ws, &["run", "--dry-run", "--json", "p.yaml"]);
    let stages = plan["stages"].as_array().unwrap();
    assert_eq!(stages.len(), 2);
    assert_eq!(stages[0]["stage"], "a");
    assert_eq!(stages[0]["out_of_date"], true);
    assert!(
        stages[0]["why"][0].as_str().unwrap().contains("never ran"),
        "{plan}"
    );
    assert!(
        !ws.store().join("runs").exists(),
        "a dry run writes nothing"
    );

    ws.ok(&["run", "p.yaml", "-j", "0"]);
    let status = json(&ws, &["status", "p.yaml", "--json"]);
    assert_eq!(status["up_to_date"], 2);
    assert_eq!(status["stages"][1]["status"], "up-to-date");
    assert!(status["stages"][1]["key"]
        .as_str()
        .unwrap()
        .starts_with("blake3:"));

    let runs = json(&ws, &["runs", "--json"]);
    assert_eq!(runs[0]["status"], "succeeded");
    assert_eq!(runs[0]["stages"]["ran"], 2);
    // `-j 0` is recorded as every core, not one.
    let rec = engine_common::record(&ws.store(), runs[0]["run_id"].as_str().unwrap());
    let cores = std::thread::available_parallelism().unwrap().get();
    assert_eq!(rec["options"]["jobs"].as_u64(), Some(cores as u64));

    let small = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("pipelines/small-soup.yaml");
    let plan = json(&ws, &["plan", "--json", small.to_str().unwrap()]);
    assert!(plan["plan"].is_object(), "{plan}");
}
