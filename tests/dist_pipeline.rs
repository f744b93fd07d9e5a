//! Data-parallel stages as a pipeline declares them (`resources.tasks_per_node`,
//! `nodes`): the world size is checked when the pipeline loads (exit 2 naming
//! `file:line:column`, nothing runs).

mod engine_common;

use engine_common::{both, Workspace};

/// A tiny `train` stage on synthetic data with `extra` params and `resources`.
fn train_stage(extra: &str, resources: &str) -> String {
    format!(
        "tureen: 1\nstages:\n  core:\n    kind: train\n    params:\n      model: convnext_atto_64\n      data: synthetic\n      batch_size: 12\n      samples_per_interval: 36\n      intervals: 1\n      lr: 1.0e-3\n{extra}    resources: {resources}\n"
    )
}

/// `tureen run p.yaml` on `yaml` is refused with exit 2 and nothing written; its output.
fn refused(yaml: &str) -> String {
    let ws = Workspace::new();
    ws.write("p.yaml", yaml);
    let out = ws.tureen(&["run", "p.yaml"]);
    let text = both(&out);
    assert_eq!(out.status.code(), Some(2), "expected exit 2:\n{text}");
    assert!(!ws.store().exists(), "{text}");
    text
}

#[test]
fn a_global_batch_that_does_not_divide_by_the_world_size_is_refused_naming_both() {
    let text = refused(&train_stage("", "{tasks_per_node: 5}"));
    assert!(
        text.contains("p.yaml:8:7: ")
            && text.contains("batch_size: 12 does not divide by the world size 5"),
        "{text}"
    );
    // Two nodes of 4 GPUs: 8 ranks by default (one per GPU).
    let text = refused(&train_stage("", "{nodes: 2, gpus: 4}"));
    assert!(
        text.contains("12 does not divide by the world size 8"),
        "{text}"
    );
}

#[test]
fn a_per_rank_batch_that_does_not_divide_by_micro_batch_is_refused_naming_both() {
    let text = refused(&train_stage("      micro_batch: 4\n", "{tasks_per_node: 2}"));
    assert!(
        text.contains("p.yaml:12:7: ")
            && text.contains(
                "micro_batch: the per-rank batch 6 (batch_size 12 / world size 2) does not divide by micro_batch 4"
            ),
        "{text}"
    );
}

#[test]
fn several_processes_for_a_kind_that_is_not_data_parallel_are_refused() {
    let text = refused(
        "tureen: 1\nstages:\n  s:\n    kind: command\n    cmd: echo hi > o.txt\n    outs: [o.txt]\n    resources: {tasks_per_node: 2}\n",
    );
    assert!(
        text.contains("p.yaml:7:5: ")
            && text.contains("kind `command` is not data-parallel")
            && text.contains("data-parallel kinds: ")
            && text.contains("rewind")
            && text.contains("train"),
        "{text}"
    );
    let text = refused(&train_stage("", "{tasks_per_node: 0}"));
    assert!(
        text.contains("`resources.tasks_per_node` must be at least 1"),
        "{text}"
    );
}
