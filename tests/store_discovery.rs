//! The store found from anywhere (issue 13, item 2): as git and DVC find theirs, from
//! the pipeline file's directory and its parents first, then the current directory's;
//! a `.tureen` file may name the store; `-v` and the run record say which store is
//! used; and no second store is silently created beside an existing one.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const PIPELINE: &str = "tureen: 1\nstages:\n  a:\n    kind: command\n    cmd: echo a > ${outs.x}\n    outs: {x: a.txt}\n  b:\n    kind: command\n    inputs: {x: a.x}\n    cmd: cat ${inputs.x} > ${outs.y}\n    outs: {y: b.txt}\n";

/// `tureen ARGS` in `cwd`, without any TUREEN_STORE from the environment.
fn tureen(cwd: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tureen"))
        .args(args)
        .current_dir(cwd)
        .env_remove("TUREEN_STORE")
        .env_remove("RUST_LOG")
        .output()
        .unwrap()
}

fn ok(cwd: &Path, args: &[&str]) -> String {
    let out = tureen(cwd, args);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "tureen {args:?} in {}:\n{text}",
        cwd.display()
    );
    text
}

/// `root/proj/pipelines/p.yaml` and an unrelated `root/elsewhere`.
fn project() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let root = std::fs::canonicalize(dir.path()).unwrap();
    std::fs::create_dir_all(root.join("proj/pipelines")).unwrap();
    std::fs::create_dir_all(root.join("elsewhere")).unwrap();
    std::fs::write(root.join("proj/pipelines/p.yaml"), PIPELINE).unwrap();
    (dir, root)
}

fn stores_under(root: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if e.file_name() == ".tureen" {
                found.push(p);
            } else if p.is_dir() {
                stack.push(p);
            }
        }
    }
    found.sort();
    found
}

#[test]
fn one_store_serves_the_project_from_any_directory() {
    let (_keep, root) = project();
    let proj = root.join("proj");
    let first = ok(&proj, &["run", "pipelines/p.yaml"]);
    assert!(
        first.contains("creating") && first.contains(&proj.join(".tureen").display().to_string()),
        "a new store is announced:\n{first}"
    );

    // From the pipeline's own directory: the store above it, so nothing is stale.
    let status = ok(&proj.join("pipelines"), &["status", "p.yaml"]);
    assert!(status.contains("2 of 2 stages up to date"), "{status}");
    // From an unrelated directory: still that store, every stage cached, and `-v` says so.
    let again = ok(
        &root.join("elsewhere"),
        &["-v", "run", "../proj/pipelines/p.yaml"],
    );
    assert!(again.contains("2 cached"), "{again}");
    assert!(
        again.contains(&format!("store {}", proj.join(".tureen").display())),
        "{again}"
    );
    assert_eq!(
        stores_under(&root),
        vec![proj.join(".tureen")],
        "no second store"
    );

    // The run record names the store; `runs` from below the project finds it too.
    let runs = ok(&proj.join("pipelines"), &["runs", "--json"]);
    let runs: serde_json::Value = serde_json::from_str(&runs).unwrap();
    let id = runs[0]["run_id"].as_str().unwrap();
    let rec: serde_json::Value = serde_json::from_slice(
        &std::fs::read(proj.join(format!(".tureen/runs/{id}.json"))).unwrap(),
    )
    .unwrap();
    assert_eq!(
        rec["store"].as_str().map(PathBuf::from),
        Some(proj.join(".tureen"))
    );
}

#[test]
fn a_new_store_goes_beside_the_pipeline_when_run_from_elsewhere() {
    let (_keep, root) = project();
    ok(
        &root.join("elsewhere"),
        &["run", "../proj/pipelines/p.yaml"],
    );
    assert_eq!(
        stores_under(&root),
        vec![root.join("proj/pipelines/.tureen")]
    );
}

#[test]
fn a_tureen_file_names_a_shared_store() {
    let (_keep, root) = project();
    std::fs::write(
        root.join("proj/.tureen"),
        "# the team's store\nstore: ../shared\n",
    )
    .unwrap();
    ok(&root.join("proj/pipelines"), &["run", "p.yaml"]);
    assert!(root.join("shared/runs").is_dir(), "the named store is used");
    let shown = ok(&root.join("proj"), &["show"]);
    assert!(shown.contains("store     "), "{shown}");

    std::fs::write(root.join("proj/.tureen"), "storage = ../x\n").unwrap();
    let out = tureen(&root.join("proj"), &["status", "pipelines/p.yaml"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        err.contains("proj/.tureen:1:") && err.contains("store: PATH"),
        "{err}"
    );
}

#[test]
fn read_only_commands_do_not_create_a_store() {
    let (_keep, root) = project();
    let out = tureen(&root.join("elsewhere"), &["show"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no tureen store"),
        "{:?}",
        out
    );
    ok(&root.join("proj"), &["status", "pipelines/p.yaml"]);
    ok(&root.join("proj"), &["run", "-n", "pipelines/p.yaml"]);
    assert!(stores_under(&root).is_empty());
}
