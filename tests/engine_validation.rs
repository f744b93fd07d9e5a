//! Pipeline validation: every error names file:line:column, exits 2, and nothing runs
//! or is written.

mod engine_common;

use engine_common::{both, Workspace};

/// Runs `tureen run p.yaml` on `yaml`; asserts exit 2, no store, no side effect, and
/// returns stderr.
fn invalid(yaml: &str) -> String {
    let ws = Workspace::new();
    ws.write("p.yaml", yaml);
    let out = ws.tureen(&["run", "p.yaml"]);
    let text = both(&out);
    assert_eq!(out.status.code(), Some(2), "expected exit 2:\n{text}");
    assert!(
        !ws.store().exists(),
        "validation failure created the store:\n{text}"
    );
    assert!(
        !ws.exists("ran.txt"),
        "a stage ran although validation failed"
    );
    text
}

fn assert_error_at(text: &str, line: usize, column: usize, needle: &str) {
    let at = format!("p.yaml:{line}:{column}: ");
    let found = text.lines().any(|l| l.contains(&at) && l.contains(needle));
    assert!(
        found,
        "expected an error at {at} containing {needle:?}, got:\n{text}"
    );
}

const OK_STAGE: &str = "  fine:\n    kind: command\n    cmd: echo > ran.txt\n    outs: [ran.txt]\n";

#[test]
fn unknown_keys_are_reported_with_a_suggestion() {
    let text = invalid(&format!(
        "tureen: 1\nstages:\n{OK_STAGE}  a:\n    kind: command\n    cmd: echo\n    retires: 2\n"
    ));
    assert_error_at(
        &text,
        10,
        5,
        "unknown key in stage `a` `retires` (did you mean `retries`?)",
    );
    let text = invalid(&format!("tureen: 1\nstagse: {{}}\nstages:\n{OK_STAGE}"));
    assert_error_at(&text, 2, 1, "unknown top-level key `stagse`");
    let text = invalid(&format!("tureen: 1\nstages:\n{OK_STAGE}  a:\n    kind: command\n    cmd: echo\n    resources: {{gpu: 1}}\n"));
    assert_error_at(
        &text,
        10,
        17,
        "unknown resource `gpu` (did you mean `gpus`?)",
    );
}

#[test]
fn wrong_types_are_reported() {
    let text = invalid(&format!(
        "tureen: 1\nstages:\n{OK_STAGE}  a:\n    kind: command\n    cmd: echo\n    retries: many\n"
    ));
    assert_error_at(
        &text,
        10,
        14,
        "`retries` must be a non-negative integer, found a string",
    );
    let text = invalid(&format!(
        "tureen: 1\nstages:\n{OK_STAGE}  a:\n    kind: command\n    cmd: [1, 2]\n"
    ));
    assert_error_at(&text, 9, 5, "cmd: every entry of the list must be a string");
    let text = invalid("tureen: 1\nstages: [a, b]\n");
    assert_error_at(&text, 2, 9, "`stages` must be a mapping");
    let text = invalid(&format!("tureen: 1\nstages:\n{OK_STAGE}  a:\n    kind: command\n    cmd: echo\n    inputs: {{x: {{y: 1}}}}\n"));
    assert_error_at(&text, 10, 17, "input `x` must be a reference");
}

#[test]
fn unknown_kinds_list_the_registered_ones() {
    let text = invalid(&format!(
        "tureen: 1\nstages:\n{OK_STAGE}  a:\n    kind: comand\n"
    ));
    assert_error_at(
        &text,
        8,
        11,
        "unknown stage kind `comand` (did you mean `command`? registered kinds:",
    );
    assert!(text.contains("soup"), "{text}");
}

#[test]
fn references_to_missing_stages_and_outputs_are_reported() {
    let base = "tureen: 1\nstages:\n  gen:\n    kind: command\n    cmd: echo > g.txt\n    outs: {g: g.txt}\n";
    let text = invalid(&format!("{base}  use:\n    kind: command\n    cmd: cat ${{inputs.x}}\n    inputs: {{x: gen.missing}}\n"));
    assert_error_at(
        &text,
        10,
        17,
        "`gen.missing`: stage `gen` has no output `missing`",
    );
    let text = invalid(&format!(
        "{base}  use:\n    kind: command\n    cmd: cat ${{inputs.x}}\n    inputs: {{x: gne.g}}\n"
    ));
    assert_error_at(
        &text,
        10,
        17,
        "no stage is called `gne` (did you mean `gen`?)",
    );
    let text = invalid(&format!(
        "{base}  use:\n    kind: command\n    cmd: cat\n    deps: [no/such/file.csv]\n"
    ));
    assert_error_at(&text, 10, 12, "`no/such/file.csv`: no such file");
    let text = invalid(&format!(
        "{base}  use:\n    kind: command\n    cmd: cat ${{inputs.nope}}\n"
    ));
    assert_error_at(&text, 9, 5, "the stage has no input `nope`");
}

#[test]
fn series_indices_are_checked_and_single_outputs_take_no_index() {
    let base = "tureen: 1\nstages:\n  gen:\n    kind: command\n    cmd: echo > g.txt\n    outs: {g: g.txt}\n";
    let text = invalid(&format!(
        "{base}  s:\n    kind: soup\n    inputs:\n      checkpoints:\n        - gen.g[3]\n"
    ));
    assert_error_at(&text, 11, 11, "`gen.g` is a single artifact, not a series");
    let text = invalid(&format!(
        "{base}  s:\n    kind: soup\n    inputs:\n      checkpoints: gen.g[x]\n"
    ));
    assert_error_at(&text, 10, 20, "`x` is not an index");
}

#[test]
fn duplicate_stage_names_are_reported_at_the_second_one() {
    let text = invalid(&format!(
        "tureen: 1\nstages:\n{OK_STAGE}  fine:\n    kind: command\n    cmd: echo\n"
    ));
    assert_error_at(
        &text,
        7,
        3,
        "duplicate key `fine` (first defined at line 3, column 3)",
    );
    let text = invalid(
        "tureen: 1\nstages:\n  s:\n    foreach: [1, 1]\n    kind: command\n    cmd: echo\n",
    );
    assert!(text.contains("duplicate stage name `s@1`"), "{text}");
}

#[test]
fn cycles_print_their_path() {
    let text = invalid(
        "tureen: 1\nstages:\n  a:\n    kind: command\n    cmd: echo\n    deps: [c.out]\n    outs: {out: a.txt}\n  b:\n    kind: command\n    cmd: echo\n    deps: [a.out]\n    outs: {out: b.txt}\n  c:\n    kind: command\n    cmd: echo\n    deps: [b.out]\n    outs: {out: c.txt}\n",
    );
    assert_error_at(&text, 6, 12, "dependency cycle: a -> b -> c -> a");
    let text = invalid("tureen: 1\nstages:\n  a:\n    kind: command\n    cmd: echo\n    deps: [a.out]\n    outs: {out: a.txt}\n");
    assert_error_at(&text, 6, 12, "cannot depend on its own output");
}

#[test]
fn params_and_variables_are_checked() {
    let text = invalid(&format!("tureen: 1\nparams: {{lr: 0.1}}\nstages:\n{OK_STAGE}  a:\n    kind: command\n    cmd: echo ${{params.lrr}}\n"));
    assert_error_at(
        &text,
        10,
        10,
        "no top-level param `lrr` (did you mean `lr`?)",
    );
    let text = invalid(&format!(
        "tureen: 1\nstages:\n{OK_STAGE}  a:\n    kind: command\n    cmd: echo ${{foo}}\n"
    ));
    assert_error_at(&text, 9, 10, "unknown variable `${foo}`");
    let text = invalid(&format!("tureen: 1\nstages:\n{OK_STAGE}  a:\n    kind: soup\n    inputs: {{checkpoints: fine.ran.txt}}\n    params: {{method: weighted}}\n"));
    assert_error_at(&text, 10, 14, "`weighted` needs `weights`");
}

#[test]
fn schema_version_and_yaml_syntax_are_checked() {
    let text = invalid(&format!("tureen: 2\nstages:\n{OK_STAGE}"));
    assert_error_at(&text, 1, 9, "unsupported schema version 2");
    let text = invalid(&format!("stages:\n{OK_STAGE}"));
    assert_error_at(&text, 1, 1, "missing `tureen: 1`");
    let text = invalid("tureen: 1\nstages:\n  a: [unclosed\n");
    assert!(
        text.contains("p.yaml:") && text.contains("YAML syntax error"),
        "{text}"
    );
}

#[test]
fn every_error_is_reported_in_one_pass() {
    let text = invalid("tureen: 1\nstages:\n  a:\n    kind: nope\n  b:\n    kind: command\n    cmd: echo\n    colour: red\n");
    assert_error_at(&text, 4, 11, "unknown stage kind `nope`");
    assert_error_at(&text, 8, 5, "unknown key in stage `b` `colour`");
    assert!(text.contains("(2 errors)"), "{text}");
}

#[test]
fn bad_overrides_exit_2_without_running() {
    let ws = Workspace::new();
    ws.write(
        "p.yaml",
        &format!("tureen: 1\nparams: {{n: 3}}\nstages:\n{OK_STAGE}"),
    );
    let out = ws.tureen(&["run", "p.yaml", "-P", "n=three"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(both(&out).contains("`n` is an integer"), "{}", both(&out));
    let out = ws.tureen(&["run", "p.yaml", "-P", "m=1"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        both(&out).contains("declares no param `m`"),
        "{}",
        both(&out)
    );
    assert!(!ws.store().exists());
}
