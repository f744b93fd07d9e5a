// Embeds libtorch's library directory as an rpath, so binaries and tests that link tch
// run without `LD_LIBRARY_PATH`. `LIBTORCH` comes from `.cargo/config.toml`.
// Included by stages/torch/build.rs and by the root package's build.rs (its
// `tureen-torch` binary and its tests).

fn libtorch_rpath() {
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    if let Ok(libtorch) = std::env::var("LIBTORCH") {
        let lib = std::path::Path::new(&libtorch).join("lib");
        let lib = std::fs::canonicalize(&lib).unwrap_or(lib);
        println!("cargo:rustc-link-arg=-Wl,-rpath,{}", lib.display());
    }
}
