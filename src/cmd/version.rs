//! What this build is: `tureen --version`, and the tool versions every run records.

use std::collections::BTreeMap;

/// The git commit tureen was built from (`unknown` outside a git checkout).
pub const GIT_COMMIT: &str = env!("TUREEN_GIT_COMMIT");
/// The cargo profile (`release`, `debug`).
pub const BUILD_PROFILE: &str = env!("TUREEN_BUILD_PROFILE");
/// The libtorch `tureen-torch` was built against (`tureen` itself links none).
pub const LIBTORCH: &str = env!("TUREEN_LIBTORCH");

/// `0.1.0 (git 1b8d606c2a1f, release build, libtorch 2.11.0+cpu)`.
pub const LONG: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (git ",
    env!("TUREEN_GIT_COMMIT"),
    ", ",
    env!("TUREEN_BUILD_PROFILE"),
    " build, libtorch ",
    env!("TUREEN_LIBTORCH"),
    ")"
);

/// The entries a run record's `tools` gets from this build.
pub fn tools() -> BTreeMap<String, String> {
    BTreeMap::from([
        ("tureen.git".to_string(), GIT_COMMIT.to_string()),
        ("tureen.build".to_string(), BUILD_PROFILE.to_string()),
        ("libtorch".to_string(), LIBTORCH.to_string()),
    ])
}
