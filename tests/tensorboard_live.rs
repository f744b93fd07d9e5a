//! Live curves (issue 13, item 3): TensorBoard event files follow a running stage, a
//! rewind is drawn on its parent's step axis, and an evaluation of a checkpoint sits at
//! that checkpoint's step, in the TensorBoard run of the stage that trained it.

mod recipe;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use recipe::{BRANCH_STEP, CORE_STEPS, REWIND_BATCH, REWIND_STEPS};
use tureen_engine::tensorboard::{event, read_events};

/// The one run directory of the store in `dir`.
fn run_dir(dir: &Path) -> PathBuf {
    let runs = dir.join(".tureen/runs");
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(&runs)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.path())
                .filter(|p| p.is_dir())
                .collect()
        })
        .unwrap_or_default();
    dirs.sort();
    dirs.pop().unwrap_or(runs)
}

/// `tag -> [(step, value)]` of every event file in `dir`.
fn scalars(dir: &Path) -> BTreeMap<String, Vec<(i64, f32)>> {
    let mut out: BTreeMap<String, Vec<(i64, f32)>> = BTreeMap::new();
    for file in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        for e in read_events(&file.path()).unwrap() {
            if let Some(event::What::Summary(s)) = e.what {
                for v in s.value {
                    out.entry(v.tag)
                        .or_default()
                        .push((e.step, v.simple_value.unwrap()));
                }
            }
        }
    }
    for points in out.values_mut() {
        points.sort_by_key(|p| p.0);
    }
    out
}

fn lines(path: &Path) -> usize {
    std::fs::read_to_string(path).map_or(0, |t| t.lines().count())
}

#[test]
fn event_files_follow_a_running_training_stage() {
    let dir = tempfile::tempdir().unwrap();
    // 40 intervals x 4 logged steps: long enough to watch it.
    std::fs::write(dir.path().join("pipeline.yaml"), recipe::core_only(40)).unwrap();
    let mut child = recipe::tureen(dir.path(), &["run", "pipeline.yaml", "--plain"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    let (logged, shown) = loop {
        assert!(
            start.elapsed() < Duration::from_secs(300),
            "no metrics in time"
        );
        assert!(
            child.try_wait().unwrap().is_none(),
            "the run ended before it was watched"
        );
        let run = run_dir(dir.path());
        let logged = lines(&run.join("core.metrics.jsonl"));
        if logged >= 8 {
            // A record's JSON line is written just before its event, so the newest event
            // may be a moment behind: give it that moment (a buffered writer would show
            // none of them until the stage ends, which is far later).
            let shown_by = Instant::now() + Duration::from_secs(2);
            let shown = loop {
                let shown: usize = scalars(&run.join("tensorboard/core"))
                    .get("loss")
                    .map_or(0, Vec::len);
                if shown >= logged || Instant::now() > shown_by {
                    break shown;
                }
                std::thread::sleep(Duration::from_millis(5));
            };
            break (logged, shown);
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let done = std::fs::read_to_string(run_dir(dir.path()).join("core.log")).unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        !done.contains("succeeded"),
        "the stage had ended already:\n{done}"
    );
    assert!(
        shown >= logged,
        "{shown} loss events readable while {logged} records were logged: events must be flushed as they are written"
    );
}

#[test]
fn rewinds_and_evaluations_share_their_parents_step_axis() {
    let dir = tempfile::tempdir().unwrap();
    let intervals = 4;
    recipe::run(dir.path(), &recipe::full(intervals));
    let tb = run_dir(dir.path()).join("tensorboard");

    let core = scalars(&tb.join("core"));
    let core_steps: Vec<i64> = core["loss"].iter().map(|p| p.0).collect();
    assert_eq!(
        core_steps,
        (1..=(intervals * CORE_STEPS) as i64).collect::<Vec<_>>()
    );

    // The rewind branches at core's step 8 (after interval 2) and then counts its own
    // steps: 2 intervals x 3 steps, so 9..=14 on core's axis (its own schedule says
    // 7..=12).
    let rewind = scalars(&tb.join("rewind"));
    let rewind_steps: Vec<i64> = rewind["loss"].iter().map(|p| p.0).collect();
    let own = (intervals - 2) * REWIND_STEPS;
    assert_eq!(
        rewind_steps,
        ((BRANCH_STEP + 1) as i64..=(BRANCH_STEP + own) as i64).collect::<Vec<_>>()
    );
    assert_eq!(
        rewind["samples"].first().map(|p| p.1 as u64),
        Some(64 + REWIND_BATCH)
    );

    // Evaluations: each at its checkpoint's step, in the run of the stage that made it.
    let steps = |m: &BTreeMap<String, Vec<(i64, f32)>>| -> Vec<i64> {
        m.get("zeroshot/top1")
            .map(|v| v.iter().map(|p| p.0).collect())
            .unwrap_or_default()
    };
    let last = (intervals * CORE_STEPS) as i64;
    // core.checkpoints[1] at 8, [2] at 12, core.final at 16.
    assert_eq!(steps(&core), vec![8, 12, last]);
    // rewind.checkpoints[0]: one rewind interval after the branch.
    assert_eq!(steps(&rewind), vec![(BRANCH_STEP + REWIND_STEPS) as i64]);
    // The soup of core.final (16) and rewind.final (14) sits at the later of the two.
    assert_eq!(steps(&scalars(&tb.join("soup"))), vec![last]);
    // An evaluation's own directory holds nothing: its scalars went to the model's run.
    assert!(!tb.join("eval_core").exists());
}
