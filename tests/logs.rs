//! `tureen logs [RUN] STAGE [-f]` (issue 13, item 6): a stage's log, printed or followed
//! while the run goes; for a stage restored from the cache, the log of the run that
//! computed it.

mod engine_common;

use std::process::Stdio;
use std::time::{Duration, Instant};

use engine_common::Workspace;

const PIPELINE: &str = r#"
tureen: 1
stages:
  talk:
    kind: command
    cmd: 'for i in 1 2 3 4 5; do echo "line $i"; sleep 0.3; done; echo done > ${outs.x}'
    outs: {x: talk.txt}
"#;

#[test]
fn follow_prints_a_running_stage_until_the_run_ends() {
    let ws = Workspace::new();
    ws.write("p.yaml", PIPELINE);
    let mut run = ws
        .cmd(&["run", "p.yaml", "--plain"])
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while engine_common::runs(&ws.store()).is_empty() {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the run did not start"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let follow = ws.cmd(&["logs", "-f", "talk"]).output().unwrap();
    assert!(run.wait().unwrap().success());
    assert!(follow.status.success(), "{}", engine_common::both(&follow));
    let text = String::from_utf8_lossy(&follow.stdout);
    for i in 1..=5 {
        assert!(
            text.contains(&format!("line {i}\n")),
            "line {i} missing:\n{text}"
        );
    }
    assert!(
        text.contains("succeeded"),
        "followed to the stage's end:\n{text}"
    );
}

#[test]
fn a_cached_stage_shows_the_log_of_the_run_that_computed_it() {
    let ws = Workspace::new();
    ws.write("p.yaml", PIPELINE);
    ws.ok(&["run", "p.yaml"]);
    let first = engine_common::runs(&ws.store())[0].clone();
    ws.ok(&["run", "p.yaml"]);
    let text = ws.ok(&["logs", "latest", "talk"]);
    assert!(text.contains("line 5"), "{text}");
    assert_eq!(text, ws.ok(&["logs", &first, "talk"]));

    let out = ws.tureen(&["logs", "latest", "tlak"]);
    assert_eq!(out.status.code(), Some(1));
    let err = engine_common::both(&out);
    assert!(err.contains("did you mean `talk`"), "{err}");
}
