// Embeds libtorch's library directory as an rpath, so binaries and tests that link tch
// run without `LD_LIBRARY_PATH`. `LIBTORCH` comes from `.cargo/config.toml`. Shared by
// this crate's build script and the root package's (its `tureen-torch` binary and tests).

fn libtorch_rpath() {
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    if let Ok(libtorch) = std::env::var("LIBTORCH") {
        let lib = std::path::Path::new(&libtorch).join("lib");
        let lib = std::fs::canonicalize(&lib).unwrap_or(lib);
        println!("cargo:rustc-link-arg=-Wl,-rpath,{}", lib.display());
    }
}
