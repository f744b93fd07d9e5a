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
