// Embeds libtorch's library directory as an rpath, so binaries and tests that link tch
// run without `LD_LIBRARY_PATH`. `LIBTORCH` comes from `.cargo/config.toml`.
// Included by stages/torch/build.rs (every target of that package) and by the root
// package's build.rs (its `tureen-torch` binary and its tests only: `tureen` links no
// libtorch, and with the rpath the loader would search libtorch's directory for each of
// its libraries at every start, two dozen failed `open`s per command stage).

/// `targets` are cargo's link-arg suffixes: `""` (every target of the package),
/// `"-bin=NAME"`, `"-tests"`.
fn libtorch_rpath(targets: &[&str]) {
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    if let Ok(libtorch) = std::env::var("LIBTORCH") {
        let lib = std::path::Path::new(&libtorch).join("lib");
        let lib = std::fs::canonicalize(&lib).unwrap_or(lib);
        for target in targets {
            println!("cargo:rustc-link-arg{target}=-Wl,-rpath,{}", lib.display());
        }
    }
}
