//! Helpers shared by the end-to-end tests that drive the `tureen` binary.
#![allow(dead_code)] // each test file uses its own subset

use std::path::Path;
use std::process::{Command, Output};

/// Runs `tureen ARGS` in `dir`, ignoring any `TUREEN_STORE` of the caller's environment.
pub fn tureen(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tureen"))
        .args(args)
        .current_dir(dir)
        .env_remove("TUREEN_STORE")
        .output()
        .expect("run tureen")
}

/// Asserts success and returns stdout; on failure shows stderr and stdout.
pub fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "tureen failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The repo's `.venv` python (torch, open_clip) for tests that compare with the Python
/// references; `None` (skip) only when it is missing and `TUREEN_SKIP_PARITY=1`, else a
/// panic saying how to get it. `what` names the test in messages.
pub fn venv_python(what: &str) -> Option<std::path::PathBuf> {
    let py = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python");
    if py.exists() {
        return Some(py);
    }
    if std::env::var("TUREEN_SKIP_PARITY").as_deref() == Ok("1") {
        eprintln!(
            "skipping {what}: {} is missing and TUREEN_SKIP_PARITY=1",
            py.display()
        );
        return None;
    }
    panic!(
        "{what} needs {} (run scripts/setup-venv.sh), or set TUREEN_SKIP_PARITY=1 to skip",
        py.display()
    );
}

/// Asserts that `actual` holds every tensor of `reference` (any checkpoint format) with
/// the same dtype, shape and bytes, and no others.
pub fn assert_same_tensors(actual: &Path, reference: &Path) {
    use tureen_artifacts::checkpoint::{Checkpoint, OpenOptions};
    let a = Checkpoint::open(actual, &OpenOptions::default()).unwrap();
    let r = Checkpoint::open(reference, &OpenOptions::default()).unwrap();
    assert_eq!(a.tensors().len(), r.tensors().len(), "tensor counts differ");
    for t in r.tensors() {
        let at = a
            .get(&t.name)
            .unwrap_or_else(|| panic!("{} missing from {}", t.name, actual.display()));
        assert_eq!((at.dtype, &at.shape), (t.dtype, &t.shape), "{}", t.name);
        assert!(
            a.data(at) == r.data(t),
            "{}: differs from {}",
            t.name,
            reference.display()
        );
    }
}

/// A ConvNeXt CLIP small enough for open_clip to train in seconds on the CPU, as JSON
/// (which is also YAML): the `model:` of the open_clip stage tests.
pub const OPEN_CLIP_MODEL: &str = r#"{"preset": "convnext_atto_64", "embed_dim": 64, "text": {"width": 64, "heads": 2, "layers": 2}}"#;

/// open_clip's BPE vocabulary inside the venv of `py`.
pub fn open_clip_vocab(py: &Path) -> std::path::PathBuf {
    std::fs::read_dir(py.parent().unwrap().join("../lib"))
        .unwrap()
        .flatten()
        .map(|e| {
            e.path()
                .join("site-packages/open_clip/bpe_simple_vocab_16e6.txt.gz")
        })
        .find(|p| p.is_file())
        .expect("open_clip's BPE vocabulary in the venv")
}

/// Pipeline stages `synth` (`tureen data synth` shards) and `core` (`kind: open_clip`, 2
/// short fp32 CPU epochs on them, `model: ${params.model}`), as YAML under `stages:`.
/// `extra` is added to `core` verbatim (e.g. `    executor: slurm\n`).
pub fn open_clip_stages(python: &Path, extra: &str) -> String {
    format!(
        r#"  synth:
    kind: command
    cmd: tureen -q data synth --out ${{outs.data}} --shards 2 --per-shard 32 --size 64 --zeroshot-per-class 2 --retrieval 8
    outs: {{data: synth}}
  core:
    kind: open_clip
{extra}    inputs: {{data: synth.data}}
    params:
      train_data: "train/{{000000..000001}}.tar"
      train_num_samples: 64
      batch_size: 16
      epochs: 2
      warmup: 2
      lr: 1.0e-3
      beta2: 0.98
      grad_clip_norm: 5.0
      precision: fp32
      device: cpu
      aug_cfg: {{scale: [0.33, 1.0]}}
      model: ${{params.model}}
      workers: 1
      python: {python}
"#,
        python = python.display(),
    )
}

/// The record of stage `name` in a run record's JSON (`tureen show --json`, or the
/// record file).
pub fn stage_record<'a>(record: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    record["stages"]
        .as_array()
        .expect("a run record has a stages array")
        .iter()
        .find(|s| s["name"] == name)
        .unwrap_or_else(|| panic!("no stage `{name}` in the record: {record}"))
}
