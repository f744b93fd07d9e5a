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
