include!("build_support/rpath.rs");

/// Compiles `src/numerics/shim.cpp` (libtorch settings tch does not expose) against the
/// headers of the libtorch that tch links.
fn numerics_shim() {
    println!("cargo:rerun-if-changed=src/numerics/shim.cpp");
    println!("cargo:rerun-if-env-changed=LIBTORCH_CXX11_ABI");
    let libtorch = std::env::var("LIBTORCH")
        .expect("LIBTORCH names the libtorch tch links (see .cargo/config.toml)");
    let libtorch = std::path::Path::new(&libtorch);
    let abi = std::env::var("LIBTORCH_CXX11_ABI").unwrap_or_else(|_| "1".into());
    cc::Build::new()
        .cpp(true)
        .file("src/numerics/shim.cpp")
        .include(libtorch.join("include"))
        .include(libtorch.join("include/torch/csrc/api/include"))
        .flag("-std=c++17")
        .flag(format!("-D_GLIBCXX_USE_CXX11_ABI={abi}"))
        .flag("-DGLOG_USE_GLOG_EXPORT")
        .warnings(false)
        .compile("tureen_numerics_shim");
}

fn main() {
    libtorch_rpath();
    numerics_shim();
}
