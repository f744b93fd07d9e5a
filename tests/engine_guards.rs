//! Guard rails: a pipeline that would destroy what tureen was not given, or fail at run
//! time for a reason visible in the file, is refused before anything runs (exit 2,
//! `file:line:column`), and every byte the user had is still there.

mod engine_common;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use engine_common::{both, Workspace};

/// Every file under `dir` (its store included) with its bytes.
fn snapshot(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            let t = e.file_type().unwrap();
            if t.is_dir() {
                stack.push(p);
            } else if t.is_file() {
                let rel = p.strip_prefix(dir).unwrap().display().to_string();
                out.insert(rel, std::fs::read(&p).unwrap());
            }
        }
    }
    out
}

/// A workspace with a pipeline `p.yaml`, an input `data.csv` and a store holding a
/// pinned object, as a user has them before running something new.
fn user_workspace() -> Workspace {
    let ws = Workspace::new();
    ws.write("data.csv", "a,b\n1,2\n");
    ws.write("keep/notes.txt", "my notes\n");
    ws.ok(&["store", "add", "data.csv"]);
    let digest = ws.ok(&["store", "hash", "data.csv"]);
    let digest = digest.split_whitespace().next().unwrap().to_string();
    ws.ok(&["store", "pin", &format!("blake3:{digest}")]);
    ws
}

/// Runs `tureen run p.yaml` on `yaml` in `ws`; asserts exit 2, that every file is
/// unchanged, and returns the output.
fn refused(ws: &Workspace, yaml: &str, extra: &[&str]) -> String {
    ws.write("p.yaml", yaml);
    let before = snapshot(ws.path());
    let mut args = vec!["run", "p.yaml"];
    args.extend_from_slice(extra);
    let out = ws.tureen(&args);
    let text = both(&out);
    assert_eq!(out.status.code(), Some(2), "expected exit 2:\n{text}");
    let after = snapshot(ws.path());
    assert_eq!(
        before.keys().collect::<Vec<_>>(),
        after.keys().collect::<Vec<_>>(),
        "files appeared or disappeared:\n{text}"
    );
    assert!(before == after, "a file changed:\n{text}");
    text
}

fn command_with_outs(outs: &str) -> String {
    format!("tureen: 1\nstages:\n  wipe:\n    kind: command\n    cmd: echo hi > out.txt\n    outs: {outs}\n")
}

#[test]
fn outs_naming_the_pipeline_directory_are_refused() {
    let ws = user_workspace();
    for outs in ["{o: .}", "{o: ./}", "[.]", "{o: keep/..}"] {
        let text = refused(&ws, &command_with_outs(outs), &[]);
        assert!(text.contains("p.yaml:6:5: "), "{outs}: {text}");
        assert!(
            text.contains("is the pipeline's directory"),
            "{outs}: {text}"
        );
    }
}

#[test]
fn outs_naming_the_store_are_refused() {
    let ws = user_workspace();
    for outs in [
        "{o: .tureen}",
        "{o: .tureen/objects}",
        "{o: .tureen/objects/evil}",
    ] {
        let text = refused(&ws, &command_with_outs(outs), &[]);
        assert!(text.contains("lies in the store"), "{outs}: {text}");
    }
    // A store elsewhere in the workspace, given with --store.
    ws.ok(&["--store", "st", "store", "add", "data.csv"]);
    for outs in ["{o: st}", "{o: st/objects}"] {
        let text = refused(&ws, &command_with_outs(outs), &["--store", "st"]);
        assert!(text.contains("lies in the store"), "{outs}: {text}");
    }
    ws.ok(&["--store", "st", "store", "verify"]);
    ws.ok(&["store", "verify"]);
}

#[test]
fn outs_naming_the_pipeline_file_or_what_the_stage_reads_are_refused() {
    let ws = user_workspace();
    let text = refused(&ws, &command_with_outs("{o: p.yaml}"), &[]);
    assert!(text.contains("pipeline file"), "{text}");
    let yaml = "tureen: 1\nstages:\n  s:\n    kind: command\n    cmd: cat ${inputs.d}\n    inputs: {d: data.csv}\n    outs: {o: data.csv}\n";
    let text = refused(&ws, yaml, &[]);
    assert!(
        text.contains("is an output of this stage; it cannot also be an input"),
        "{text}"
    );
    let yaml = "tureen: 1\nstages:\n  s:\n    kind: command\n    cmd: cat ${inputs.d}\n    inputs: {d: keep/notes.txt}\n    outs: {o: keep}\n";
    let text = refused(&ws, yaml, &[]);
    assert!(text.contains("which this stage reads"), "{text}");
    let yaml = "tureen: 1\nstages:\n  s:\n    kind: command\n    cmd: cat keep/notes.txt\n    deps: [keep/notes.txt]\n    outs: {o: keep}\n";
    let text = refused(&ws, yaml, &[]);
    assert!(text.contains("which this stage reads"), "{text}");
}

#[test]
fn outs_through_a_symlink_out_of_the_directory_are_refused() {
    let ws = user_workspace();
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("precious"), "keep me").unwrap();
    std::os::unix::fs::symlink(outside.path(), ws.path().join("link")).unwrap();
    let text = refused(&ws, &command_with_outs("{o: link/precious}"), &[]);
    assert!(text.contains("leads outside"), "{text}");
    assert_eq!(
        std::fs::read(outside.path().join("precious")).unwrap(),
        b"keep me"
    );
}

#[test]
fn params_are_values_not_templates() {
    let ws = Workspace::new();
    let yaml = "tureen: 1\nparams:\n  n: 3\n  word: \"${params.n}\"\n  me: \"${params.me}\"\nstages:\n  s:\n    kind: command\n    cmd: echo ${params.word}\n";
    let text = refused(&ws, yaml, &[]);
    assert!(text.contains("p.yaml:4:9: "), "{text}");
    assert!(text.contains("p.yaml:5:7: "), "{text}");
    assert!(text.contains("cannot refer to params"), "{text}");
    let yaml = "tureen: 1\nparams: {word: a}\nstages:\n  s:\n    kind: command\n    cmd: echo ${params.word}\n";
    let text = refused(&ws, yaml, &["-P", "word=${params.n}"]);
    assert!(text.contains("cannot contain `${...}`"), "{text}");
}

#[test]
fn names_numbers_and_documents_the_yaml_allows_but_a_run_cannot_use_are_refused() {
    let ws = Workspace::new();
    let long = "s".repeat(300);
    let text = refused(
        &ws,
        &format!("tureen: 1\nstages:\n  {long}:\n    kind: command\n    cmd: echo\n"),
        &[],
    );
    assert!(
        text.contains("p.yaml:3:3: ") && text.contains("bytes long"),
        "{text}"
    );
    let text = refused(
        &ws,
        "tureen: 1\nparams: {n: 99999999999999999999999}\nstages:\n  s:\n    kind: command\n    cmd: echo ${params.n}\n",
        &[],
    );
    assert!(
        text.contains("p.yaml:2:13: ") && text.contains("does not fit in 64 bits"),
        "{text}"
    );
    let text = refused(
        &ws,
        "tureen: 1\nstages:\n  s:\n    kind: command\n    cmd: echo\n---\ntureen: 1\nstages: {}\n",
        &[],
    );
    assert!(
        text.contains("p.yaml:6:1: ") && text.contains("second YAML document"),
        "{text}"
    );
}

#[test]
fn a_byte_order_mark_is_fine() {
    let ws = Workspace::new();
    ws.write(
        "p.yaml",
        "\u{feff}tureen: 1\nstages:\n  s:\n    kind: command\n    cmd: echo hi > o.txt\n    outs: [o.txt]\n",
    );
    ws.ok(&["run", "p.yaml"]);
    assert_eq!(ws.read("o.txt"), "hi\n");
}

#[test]
fn resources_this_machine_cannot_give_are_refused_before_anything_runs() {
    let ws = Workspace::new();
    let stage = |res: &str| {
        format!("tureen: 1\nstages:\n  s:\n    kind: command\n    cmd: echo hi > o.txt\n    outs: [o.txt]\n    resources: {res}\n")
    };
    let text = refused(&ws, &stage("{nodes: 2}"), &[]);
    assert!(
        text.contains("p.yaml:7:5: ") && text.contains("need `executor: slurm`"),
        "{text}"
    );
    let text = refused(&ws, &stage("{cpus: 100000}"), &[]);
    assert!(text.contains("100000 CPUs asked"), "{text}");
    let text = refused(&ws, &stage("{memory: 100T}"), &[]);
    assert!(text.contains("resources.memory"), "{text}");
    let text = refused(&ws, &stage("{gpus: 2}"), &["--gpus", "0"]);
    assert!(text.contains("2 GPU(s) asked, 1 available"), "{text}");
    assert!(!ws.exists("o.txt"));
}

#[test]
fn a_fifo_is_refused_not_read_forever() {
    let ws = Workspace::new();
    let fifo = ws.path().join("pipe.yaml");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(made.success());
    for cmd in ["run", "dag", "status"] {
        let mut child = ws
            .cmd(&[cmd, "pipe.yaml"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let start = std::time::Instant::now();
        while child.try_wait().unwrap().is_none() {
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "`tureen {cmd}` hangs on a FIFO"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        let out = child.wait_with_output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{cmd}: {}", both(&out));
        assert!(
            both(&out).contains("not a regular file"),
            "{cmd}: {}",
            both(&out)
        );
    }
    // As an input, refused at validation.
    let made = std::process::Command::new("mkfifo")
        .arg(ws.path().join("in.fifo"))
        .status()
        .unwrap();
    assert!(made.success());
    let text = refused(
        &ws,
        "tureen: 1\nstages:\n  s:\n    kind: command\n    cmd: cat ${inputs.x}\n    inputs: {x: in.fifo}\n",
        &[],
    );
    assert!(
        text.contains("p.yaml:6:17: ") && text.contains("a FIFO"),
        "{text}"
    );
}

#[test]
fn os_errors_are_said_once() {
    let ws = Workspace::new();
    let out = ws.tureen(&["run", "missing.yaml"]);
    let text = both(&out);
    assert_eq!(out.status.code(), Some(2), "{text}");
    assert_eq!(text.matches("os error 2").count(), 1, "{text}");
}

const TRAIN: &str = "tureen: 1\nstages:\n  core:\n    kind: train\n    params:\n      model: convnext_atto_64\n      data: synthetic\n      batch_size: 4\n      samples_per_interval: 8\n      intervals: 4\n      lr: 1.0e-3\n";

#[test]
fn a_misspelt_param_is_one_error_with_a_suggestion() {
    let ws = Workspace::new();
    let yaml = format!(
        "{TRAIN}  soup:\n    kind: soup\n    inputs: {{checkpoints: \"core.checkpoints[-3:]\"}}\n"
    );
    ws.write("p.yaml", &yaml);
    let out = ws.tureen(&["run", "p.yaml", "-n", "-P", "core.lrr=1e-3"]);
    let text = both(&out);
    assert_eq!(out.status.code(), Some(2), "{text}");
    assert!(
        text.contains("params.lrr: unknown param (did you mean `lr`?"),
        "{text}"
    );
    assert!(text.contains("(1 error)"), "no follow-on errors:\n{text}");
    assert!(!text.contains("has no output"), "{text}");
}

#[test]
fn negative_slices_take_the_last_elements() {
    let ws = Workspace::new();
    let ok = format!(
        "{TRAIN}  soup:\n    kind: soup\n    inputs: {{checkpoints: \"core.checkpoints[-3:]\"}}\n"
    );
    ws.write("p.yaml", &ok);
    ws.ok(&["dag", "p.yaml"]);
    let bad = format!(
        "{TRAIN}  soup:\n    kind: soup\n    inputs: {{checkpoints: \"core.checkpoints[-5:]\"}}\n"
    );
    let text = refused(&ws, &bad, &[]);
    assert!(
        text.contains("range is out of bounds: `core.checkpoints` has 4 elements"),
        "{text}"
    );
}
