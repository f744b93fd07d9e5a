//! What a user shares or pipes (issue 13, misbehaviours): colour escapes only on a
//! terminal and never with `NO_COLOR`; written pages and pipelines get the mode any
//! new file of the user's gets (0644 under umask 022), not a temp file's 0600.

mod engine_common;

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use engine_common::Workspace;

const PIPELINE: &str = "tureen: 1\nstages:\n  a:\n    kind: command\n    cmd: echo a > ${outs.x}\n    outs: {x: a.txt}\n";

#[test]
fn logs_to_a_file_carry_no_colour_codes() {
    let ws = Workspace::new();
    ws.write("p.yaml", PIPELINE);
    let out = ws.tureen(&["-v", "run", "p.yaml"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("INFO"), "{stderr}");
    assert!(
        !stderr.contains('\x1b'),
        "escape codes in a file:\n{stderr:?}"
    );
}

/// Runs `tureen -v runs` on a pseudo-terminal (util-linux `script`), so stderr is a
/// terminal; returns what it wrote.
fn on_a_terminal(ws: &Workspace, no_color: bool) -> Option<String> {
    let script = ["/usr/bin/script", "/bin/script"]
        .into_iter()
        .find(|p| std::path::Path::new(p).is_file())?;
    let mut c = Command::new(script);
    c.args(["-qec"])
        .arg(format!("'{}' -v runs", env!("CARGO_BIN_EXE_tureen")))
        .arg("/dev/null")
        .current_dir(ws.path())
        .env("TUREEN_STORE", ws.store())
        .env("TERM", "xterm")
        .env_remove("NO_COLOR")
        .env_remove("CLICOLOR_FORCE");
    if no_color {
        c.env("NO_COLOR", "1");
    }
    let out = c.output().ok()?;
    Some(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[test]
fn a_terminal_gets_colour_unless_no_color_is_set() {
    let ws = Workspace::new();
    ws.write("p.yaml", PIPELINE);
    ws.ok(&["run", "p.yaml"]);
    let Some(coloured) = on_a_terminal(&ws, false) else {
        eprintln!("skipped: no `script` to make a terminal");
        return;
    };
    assert!(
        coloured.contains("INFO") && coloured.contains('\x1b'),
        "{coloured:?}"
    );
    let plain = on_a_terminal(&ws, true).unwrap();
    assert!(
        plain.contains("INFO") && !plain.contains('\x1b'),
        "{plain:?}"
    );
}

#[test]
fn a_report_and_a_starter_pipeline_are_0644_under_umask_022() {
    let ws = Workspace::new();
    ws.write("p.yaml", PIPELINE);
    ws.ok(&["run", "p.yaml"]);
    let out = Command::new("sh")
        .arg("-c")
        .arg("umask 022; \"$0\" report -o report.html && \"$0\" init starter.yaml")
        .arg(env!("CARGO_BIN_EXE_tureen"))
        .current_dir(ws.path())
        .env("TUREEN_STORE", ws.store())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", engine_common::both(&out));
    for file in ["report.html", "starter.yaml"] {
        let mode = std::fs::metadata(ws.path().join(file))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o644, "{file}: mode {mode:o}");
    }
}

/// A message that cannot be shown (stderr on a full device) must not turn a finished run
/// into a crash: the run and its record complete, and the exit status is the run's.
#[test]
fn a_run_whose_stderr_cannot_be_written_still_succeeds() {
    let ws = Workspace::new();
    ws.write("p.yaml", PIPELINE);
    let full = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .expect("/dev/full");
    for _ in 0..2 {
        let status = ws.cmd(&["run", "p.yaml"]).stderr(full.try_clone().unwrap()).status();
        assert!(status.unwrap().success(), "stderr on /dev/full failed the run");
    }
    assert_eq!(ws.read("a.txt"), "a\n");
}
