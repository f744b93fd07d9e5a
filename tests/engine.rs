//! The pipeline engine, end to end: caching, invalidation, early cutoff, parallelism,
//! failures, retries, dry runs, records, replay. Every pipeline uses `command` stages
//! running tiny shell commands.

mod engine_common;

use engine_common::{both, last_statuses, runs, status_of, Workspace};

const CHAIN: &str = r#"
tureen: 1
params:
  greeting: hello
stages:
  make:
    kind: command
    cmd: echo ${params.greeting} > a.txt
    outs: [a.txt]
  upper:
    kind: command
    cmd: tr a-z A-Z < a.txt > b.txt
    deps: [a.txt]
    outs: [b.txt]
"#;

#[test]
fn second_run_is_fully_cached_and_outputs_stay_in_the_workspace() {
    let ws = Workspace::new();
    ws.write("p.yaml", CHAIN);
    ws.ok(&["run", "p.yaml"]);
    assert_eq!(ws.read("b.txt"), "HELLO\n");
    assert_eq!(
        last_statuses(&ws.store()),
        vec![
            ("make".into(), "ran".into()),
            ("upper".into(), "ran".into())
        ]
    );

    ws.ok(&["run", "p.yaml"]);
    assert_eq!(
        last_statuses(&ws.store()),
        vec![
            ("make".into(), "cached".into()),
            ("upper".into(), "cached".into())
        ]
    );

    // A deleted output is restored from the store without running anything.
    std::fs::remove_file(ws.path().join("b.txt")).unwrap();
    ws.ok(&["run", "p.yaml"]);
    assert_eq!(ws.read("b.txt"), "HELLO\n");
    assert_eq!(status_of(&ws.store(), "upper"), "cached");
}

#[test]
fn changing_a_param_reruns_the_stage_and_its_downstream() {
    let ws = Workspace::new();
    ws.write("p.yaml", CHAIN);
    ws.ok(&["run", "p.yaml"]);
    ws.ok(&["run", "p.yaml", "-P", "greeting=bye"]);
    assert_eq!(ws.read("b.txt"), "BYE\n");
    assert_eq!(
        last_statuses(&ws.store()),
        vec![
            ("make".into(), "ran".into()),
            ("upper".into(), "ran".into())
        ]
    );
    // Back to the first value: both results are still in the cache.
    ws.ok(&["run", "p.yaml"]);
    assert_eq!(ws.read("b.txt"), "HELLO\n");
    assert_eq!(
        last_statuses(&ws.store()),
        vec![
            ("make".into(), "cached".into()),
            ("upper".into(), "cached".into())
        ]
    );
}

#[test]
fn changing_an_input_file_reruns_only_its_consumers() {
    let ws = Workspace::new();
    ws.write("data.txt", "one\n");
    ws.write(
        "p.yaml",
        r#"
tureen: 1
stages:
  other:
    kind: command
    cmd: echo independent > o.txt
    outs: [o.txt]
  count:
    kind: command
    cmd: wc -l < ${inputs.data} > n.txt
    inputs: {data: data.txt}
    outs: [n.txt]
"#,
    );
    ws.ok(&["run", "p.yaml"]);
    assert_eq!(ws.read("n.txt").trim(), "1");
    ws.write("data.txt", "one\ntwo\n");
    ws.ok(&["run", "p.yaml"]);
    assert_eq!(ws.read("n.txt").trim(), "2");
    assert_eq!(status_of(&ws.store(), "count"), "ran");
    assert_eq!(status_of(&ws.store(), "other"), "cached");
}

#[test]
fn an_upstream_that_reproduces_the_same_bytes_stops_invalidation_early() {
    let ws = Workspace::new();
    ws.write(
        "p.yaml",
        r#"
tureen: 1
params:
  n: 3
stages:
  parity:
    kind: command
    cmd: echo $(( ${params.n} % 2 )) > parity.txt
    outs: [parity.txt]
  report:
    kind: command
    cmd: echo "parity is $(cat ${inputs.p})" > report.txt
    inputs: {p: parity.parity.txt}
    outs: [report.txt]
"#,
    );
    ws.ok(&["run", "p.yaml"]);
    // n=5 has the same parity: `parity` reruns, `report` sees identical input bytes.
    ws.ok(&["run", "p.yaml", "-P", "n=5"]);
    assert_eq!(status_of(&ws.store(), "parity"), "ran");
    assert_eq!(status_of(&ws.store(), "report"), "cached");
    // n=4 changes the parity: the change propagates.
    ws.ok(&["run", "p.yaml", "-P", "n=4"]);
    assert_eq!(status_of(&ws.store(), "report"), "ran");
    assert_eq!(ws.read("report.txt"), "parity is 0\n");
}

#[test]
fn an_upstream_output_edited_by_hand_is_restored_and_downstream_stays_valid() {
    let ws = Workspace::new();
    ws.write("p.yaml", CHAIN);
    ws.ok(&["run", "p.yaml"]);
    ws.write("a.txt", "tampered\n");
    ws.ok(&["run", "p.yaml"]);
    // The declared output is the pipeline's: it comes back from the store.
    assert_eq!(ws.read("a.txt"), "hello\n");
    assert_eq!(status_of(&ws.store(), "upper"), "cached");
}

#[test]
fn independent_stages_run_in_parallel() {
    let ws = Workspace::new();
    let stage = |name: &str| {
        format!(
            "  {name}:\n    kind: command\n    cmd: date +%s%N > {name}.start; sleep 0.6; date +%s%N > {name}.end\n    outs: [{name}.start, {name}.end]\n"
        )
    };
    ws.write(
        "p.yaml",
        &format!("tureen: 1\nstages:\n{}{}", stage("left"), stage("right")),
    );
    ws.ok(&["run", "p.yaml", "--jobs", "2"]);
    let t = |f: &str| ws.read(f).trim().parse::<u128>().unwrap();
    let overlap = t("left.start") < t("right.end") && t("right.start") < t("left.end");
    assert!(
        overlap,
        "stages did not overlap: left {}..{}, right {}..{}",
        t("left.start"),
        t("left.end"),
        t("right.start"),
        t("right.end")
    );
}

#[test]
fn jobs_1_runs_one_stage_at_a_time() {
    let ws = Workspace::new();
    let stage = |name: &str| {
        format!("  {name}:\n    kind: command\n    cmd: date +%s%N > {name}.start; sleep 0.2; date +%s%N > {name}.end\n    outs: [{name}.start, {name}.end]\n")
    };
    ws.write(
        "p.yaml",
        &format!("tureen: 1\nstages:\n{}{}", stage("a"), stage("b")),
    );
    ws.ok(&["run", "p.yaml", "-j", "1"]);
    let t = |f: &str| ws.read(f).trim().parse::<u128>().unwrap();
    assert!(
        t("a.end") <= t("b.start") || t("b.end") <= t("a.start"),
        "stages overlapped with -j 1"
    );
}

#[test]
fn a_failing_branch_does_not_stop_the_others_and_its_log_tail_is_printed() {
    let ws = Workspace::new();
    ws.write(
        "p.yaml",
        r#"
tureen: 1
stages:
  bad:
    kind: command
    cmd: echo "something broke here"; exit 3
    outs: [bad.txt]
  after_bad:
    kind: command
    cmd: cat ${inputs.x} > after.txt
    inputs: {x: bad.bad.txt}
    outs: [after.txt]
  good:
    kind: command
    cmd: sleep 0.3; echo fine > good.txt
    outs: [good.txt]
"#,
    );
    let out = ws.tureen(&["run", "p.yaml"]);
    let text = both(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("something broke here"),
        "log tail missing:\n{text}"
    );
    assert!(text.contains("exited with status 3"), "{text}");
    assert_eq!(ws.read("good.txt"), "fine\n");
    assert_eq!(status_of(&ws.store(), "bad"), "failed");
    assert_eq!(status_of(&ws.store(), "good"), "ran");
    assert_eq!(status_of(&ws.store(), "after_bad"), "skipped");
    // The log lives under the run directory.
    let run = &runs(&ws.store())[0];
    let log = std::fs::read_to_string(ws.store().join("runs").join(run).join("bad.log")).unwrap();
    assert!(log.contains("something broke here"));
}

#[test]
fn retries_rerun_a_flaky_stage_until_it_succeeds() {
    let ws = Workspace::new();
    // Fails on the first two attempts (the counter lives outside the outputs).
    ws.write(
        "p.yaml",
        r#"
tureen: 1
stages:
  flaky:
    kind: command
    retries: 2
    cmd: |
      echo x >> attempts.log
      [ $(wc -l < attempts.log) -ge 3 ] || exit 1
      echo ok > flaky.txt
    outs: [flaky.txt]
"#,
    );
    let text = ws.ok(&["run", "p.yaml"]);
    assert_eq!(ws.read("attempts.log").lines().count(), 3);
    assert!(text.contains("after 3 attempts"), "{text}");
    let rec = engine_common::record(&ws.store(), &runs(&ws.store())[0]);
    assert_eq!(rec["stages"][0]["attempts"], 3);
}

#[test]
fn without_enough_retries_the_stage_fails() {
    let ws = Workspace::new();
    ws.write("p.yaml", "tureen: 1\nstages:\n  f:\n    kind: command\n    retries: 1\n    cmd: echo x >> n.log; exit 1\n");
    let out = ws.tureen(&["run", "p.yaml"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(ws.read("n.log").lines().count(), 2);
}

#[test]
fn dry_run_explains_what_changed_and_runs_nothing() {
    let ws = Workspace::new();
    ws.write("in.txt", "x\n");
    ws.write(
        "p.yaml",
        r#"
tureen: 1
params:
  lr: 0.001
stages:
  train:
    kind: command
    cmd: echo ${params.lr} > model.txt; cat in.txt >> model.txt
    deps: [in.txt]
    outs: [model.txt]
  eval:
    kind: command
    cmd: wc -c < model.txt > score.txt
    deps: [model.txt]
    outs: [score.txt]
"#,
    );
    let first = ws.ok(&["run", "p.yaml", "--dry-run"]);
    assert!(first.contains("never ran"), "{first}");
    assert!(!ws.store().exists(), "a dry run must not create the store");
    ws.ok(&["run", "p.yaml"]);
    let runs_before = runs(&ws.store()).len();

    let plan = ws.ok(&["run", "p.yaml", "-n", "-P", "lr=0.002"]);
    assert!(plan.contains("param lr: 0.001 -> 0.002"), "{plan}");
    assert!(plan.contains("upstream train will run"), "{plan}");
    ws.write("in.txt", "y\n");
    let plan = ws.ok(&["run", "p.yaml", "--dry-run"]);
    assert!(plan.contains("dependency in.txt changed"), "{plan}");
    ws.write("in.txt", "x\n");
    let plan = ws.ok(&["run", "p.yaml", "--dry-run", "--force", "eval"]);
    assert!(plan.contains("forced (--force)"), "{plan}");
    assert_eq!(
        runs(&ws.store()).len(),
        runs_before,
        "dry runs write no records"
    );
    assert_eq!(
        ws.read("model.txt"),
        "0.001\nx\n",
        "dry runs execute nothing"
    );
}

#[test]
fn force_reruns_a_cached_stage_and_only_selects_ancestors() {
    let ws = Workspace::new();
    ws.write("p.yaml", CHAIN);
    ws.ok(&["run", "p.yaml"]);
    ws.ok(&["run", "p.yaml", "--force", "upper"]);
    assert_eq!(
        last_statuses(&ws.store()),
        vec![
            ("make".into(), "cached".into()),
            ("upper".into(), "ran".into())
        ]
    );

    let ws = Workspace::new();
    ws.write("p.yaml", CHAIN);
    ws.ok(&["run", "p.yaml", "--only", "make"]);
    assert!(ws.exists("a.txt") && !ws.exists("b.txt"));
    assert_eq!(
        last_statuses(&ws.store()),
        vec![("make".into(), "ran".into())]
    );
    let out = ws.tureen(&["run", "p.yaml", "--only", "nope"]);
    assert_ne!(out.status.code(), Some(0));
    assert!(both(&out).contains("no such stage"), "{}", both(&out));
}

#[test]
fn foreach_and_matrix_expand_into_stages() {
    let ws = Workspace::new();
    ws.write(
        "p.yaml",
        r#"
tureen: 1
stages:
  seed:
    foreach: [1, 2]
    kind: command
    cmd: echo seed ${item} > seed-${item}.txt
    outs: ["seed-${item}.txt"]
  grid:
    matrix:
      lr: [0.1, 0.2]
      wd: [0, 1]
    kind: command
    cmd: echo ${item.lr} ${item.wd} > grid-${item.lr}-${item.wd}.txt
    outs: ["grid-${item.lr}-${item.wd}.txt"]
  total:
    kind: command
    cmd: cat ${inputs.seeds} > total.txt
    inputs:
      seeds: [seed@1.seed-1.txt, seed@2.seed-2.txt]
    outs: [total.txt]
"#,
    );
    ws.ok(&["run", "p.yaml"]);
    assert_eq!(ws.read("total.txt"), "seed 1\nseed 2\n");
    assert_eq!(ws.read("grid-0.2-1.txt"), "0.2 1\n");
    let names: Vec<String> = last_statuses(&ws.store())
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    assert!(names.contains(&"grid@0.1-0".to_string()), "{names:?}");
    assert_eq!(names.len(), 7);
}

#[test]
fn runs_show_status_and_dag_describe_the_pipeline() {
    let ws = Workspace::new();
    ws.write("p.yaml", CHAIN);
    let status = ws.ok(&["status", "p.yaml"]);
    assert!(status.contains("0 of 2 stages up to date"), "{status}");
    ws.ok(&["run", "p.yaml"]);
    let status = ws.ok(&["status", "p.yaml"]);
    assert!(status.contains("2 of 2 stages up to date"), "{status}");

    let list = ws.ok(&["runs"]);
    let id = &runs(&ws.store())[0];
    assert!(
        list.contains(id.as_str()) && list.contains("succeeded"),
        "{list}"
    );
    let shown = ws.ok(&["show", id]);
    assert!(
        shown.contains("upper (command) ran") && shown.contains("output   b.txt = blake3:"),
        "{shown}"
    );
    let json = ws.ok(&["show", "latest", "--json"]);
    let rec: serde_json::Value = serde_json::from_str(&json).unwrap();
    for field in [
        "pipeline_digest",
        "params",
        "started",
        "ended",
        "host",
        "tools",
    ] {
        assert!(!rec[field].is_null(), "record lacks {field}");
    }
    assert!(rec["stages"][1]["key"]
        .as_str()
        .unwrap()
        .starts_with("blake3:"));

    let tree = ws.ok(&["dag", "p.yaml"]);
    assert!(
        tree.contains("make (command)") && tree.contains("└── upper (command)"),
        "{tree}"
    );
    let dot = ws.ok(&["dag", "p.yaml", "--format", "dot"]);
    assert!(dot.contains("\"make\" -> \"upper\""), "{dot}");
    let mermaid = ws.ok(&["dag", "p.yaml", "--format", "mermaid"]);
    assert!(
        mermaid.starts_with("flowchart LR") && mermaid.contains("s0 -->"),
        "{mermaid}"
    );
}

#[test]
fn command_stages_see_tureen_and_their_declared_environment() {
    let ws = Workspace::new();
    ws.write(
        "p.yaml",
        r#"
tureen: 1
env:
  GREETING: hi
stages:
  env:
    kind: command
    env: {WHO: world}
    cmd: echo "$GREETING $WHO" > env.txt; $TUREEN --version >> env.txt; command -v tureen >> env.txt
    outs: [env.txt]
"#,
    );
    ws.ok(&["run", "p.yaml"]);
    let text = ws.read("env.txt");
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("hi world"));
    assert!(lines.next().unwrap().starts_with("tureen "), "{text}");
    assert!(lines.next().unwrap().ends_with("/tureen"), "{text}");
}

#[test]
fn replay_reports_same_for_a_deterministic_run_and_differs_for_random_bytes() {
    let ws = Workspace::new();
    ws.write("p.yaml", CHAIN);
    ws.ok(&["run", "p.yaml"]);
    let id = runs(&ws.store())[0].clone();
    let out = ws.ok(&["replay", &id]);
    assert!(out.contains("make") && out.contains("same"), "{out}");
    assert!(out.contains("2 same, 0 diverged"), "{out}");
    assert_eq!(ws.read("b.txt"), "HELLO\n");

    let ws = Workspace::new();
    ws.write(
        "p.yaml",
        r#"
tureen: 1
stages:
  stable:
    kind: command
    cmd: echo fixed > fixed.txt
    outs: [fixed.txt]
  noise:
    kind: command
    cmd: head -c 32 /dev/urandom > noise.bin
    outs: [noise.bin]
"#,
    );
    ws.ok(&["run", "p.yaml"]);
    let out = ws.tureen(&["replay", "latest"]);
    let text = both(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    let noise = text.lines().find(|l| l.starts_with("noise")).unwrap();
    assert!(noise.contains("differs"), "{text}");
    let stable = text.lines().find(|l| l.starts_with("stable")).unwrap();
    assert!(stable.contains("same"), "{text}");
}

#[test]
fn a_file_named_like_a_stage_reference_is_the_file() {
    // `gen.txt` is the `outs` file of stage `gen`, not an output called `txt`.
    let ws = Workspace::new();
    ws.write(
        "p.yaml",
        "tureen: 1\nstages:\n  gen:\n    kind: command\n    cmd: echo g > gen.txt\n    outs: [gen.txt]\n  use:\n    kind: command\n    cmd: cat gen.txt gen.txt > use.txt\n    deps: [gen.txt]\n    outs: [use.txt]\n",
    );
    ws.ok(&["run", "p.yaml"]);
    assert_eq!(ws.read("use.txt"), "g\ng\n");
    let tree = ws.ok(&["dag", "p.yaml"]);
    assert!(tree.contains("└── use (command)"), "{tree}");
}

/// The action cache's log (`cache/entries.log`) only spares a run from opening one entry
/// file per stage: without it, or with garbage in it, every hit is still a hit, and the
/// newest result of a key wins.
#[test]
fn the_cache_log_is_an_index_that_a_run_can_lose_or_find_damaged() {
    let ws = Workspace::new();
    ws.write("p.yaml", CHAIN);
    ws.ok(&["run", "p.yaml"]);
    let log = ws.store().join("cache/entries.log");
    let lines = |text: &str| text.lines().count();
    assert_eq!(lines(&std::fs::read_to_string(&log).unwrap()), 2);

    // Lost (a store written before the log existed): the entries' files answer, and the
    // run writes their lines back.
    std::fs::remove_file(&log).unwrap();
    ws.ok(&["run", "p.yaml"]);
    let cached = vec![
        ("make".to_string(), "cached".to_string()),
        ("upper".to_string(), "cached".to_string()),
    ];
    assert_eq!(last_statuses(&ws.store()), cached);
    let healed = std::fs::read_to_string(&log).unwrap();
    assert_eq!(lines(&healed), 2, "{healed}");

    // Damaged: a foreign line, a line whose JSON is cut, a torn last append.
    let mut damaged = String::from("not a line of the log\n");
    for line in healed.lines() {
        damaged.push_str(&line[..line.len() / 2]);
        damaged.push('\n');
    }
    damaged.push_str(&healed[..70]);
    std::fs::write(&log, damaged).unwrap();
    ws.ok(&["run", "p.yaml"]);
    assert_eq!(last_statuses(&ws.store()), cached);

    // A stage that gives other bytes each time, forced to run again: its newest result
    // is the one a later run restores.
    ws.write(
        "p.yaml",
        &CHAIN.replace("tr a-z A-Z < a.txt > b.txt", "date +%s%N > b.txt"),
    );
    ws.ok(&["run", "p.yaml"]);
    let first = ws.read("b.txt");
    ws.ok(&["run", "p.yaml", "--force", "upper"]);
    let newest = ws.read("b.txt");
    assert_ne!(first, newest);
    ws.write("b.txt", "edited by hand\n");
    ws.ok(&["run", "p.yaml"]);
    assert_eq!(status_of(&ws.store(), "upper"), "cached");
    assert_eq!(ws.read("b.txt"), newest);

    // gc rewrites the log: one line per key with an entry file.
    ws.ok(&["store", "gc"]);
    let compacted = std::fs::read_to_string(&log).unwrap();
    let keys: std::collections::BTreeSet<&str> = compacted.lines().map(|l| &l[..64]).collect();
    assert_eq!(keys.len(), compacted.lines().count(), "{compacted}");
    let entries = std::fs::read_dir(ws.store().join("cache"))
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "json")
        })
        .count();
    assert_eq!(keys.len(), entries);
}
