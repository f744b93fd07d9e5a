// The libtorch rpath (shared with the root package), and two small C++ shims compiled
// against the libtorch that tch links, for what tch does not bind: `src/dist/` (c10d's
// stores and process groups, gloo always and NCCL when the CUDA headers are there, and
// autograd's backward with output gradients) and `src/numerics/` (the kernel settings of
// portable numerics, and the versions a run record keeps).

use std::path::{Path, PathBuf};

include!("build/rpath.rs");

fn main() {
    libtorch_rpath(&[""]);
    compile_shim();
    numerics_shim();
}

fn compile_shim() {
    println!("cargo:rerun-if-changed=src/dist/shim.cpp");
    println!("cargo:rerun-if-env-changed=TUREEN_NCCL");
    println!("cargo:rerun-if-env-changed=GLOO_INCLUDE");
    let libtorch = PathBuf::from(std::env::var("LIBTORCH").unwrap_or_else(|_| {
        fail("LIBTORCH is not set (it names the torch package tch links; see .cargo/config.toml)")
    }));
    let libtorch = std::fs::canonicalize(&libtorch).unwrap_or(libtorch);
    let gloo = std::env::var_os("GLOO_INCLUDE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/include"));
    if !gloo.join("gloo/config.h").is_file() {
        fail(&format!(
            "gloo's headers are missing ({}): run scripts/setup.sh, which installs Debian's \
             libgloo-dev, or set GLOO_INCLUDE to a directory holding gloo/",
            gloo.join("gloo/config.h").display()
        ));
    }
    let include = libtorch.join("include");
    let mut build = cc::Build::new();
    build
        .cpp(true)
        .file("src/dist/shim.cpp")
        .include(&include)
        .include(include.join("torch/csrc/api/include"))
        .include(&gloo)
        .flag("-std=c++17")
        .flag("-D_GLIBCXX_USE_CXX11_ABI=1")
        .define("USE_C10D_GLOO", None)
        // The shim only forwards calls; optimising it buys nothing and costs compile time.
        .opt_level(1)
        .warnings(false)
        .flag("-w");
    let nccl = nccl_headers(&libtorch);
    if let Some(dirs) = &nccl {
        build
            .define("USE_C10D_NCCL", None)
            .define("TUREEN_NCCL", None);
        for dir in dirs {
            build.include(dir);
        }
    }
    build.compile("tureen_dist");
    let lib = libtorch.join("lib");
    println!("cargo:rustc-link-search=native={}", lib.display());
    for name in ["torch", "torch_cpu", "c10"] {
        println!("cargo:rustc-link-lib=dylib={name}");
    }
    if nccl.is_some() {
        for name in ["torch_cuda", "c10_cuda"] {
            println!("cargo:rustc-link-lib=dylib={name}");
        }
    } else {
        println!(
            "cargo:warning=tureen-torch: building without NCCL, gloo only (TUREEN_NCCL=0, or \
             no CUDA headers in the venv: scripts/setup-venv.sh installs them)"
        );
    }
}

/// The include directories ProcessGroupNCCL.hpp needs, when all are present: NCCL's and
/// the CUDA runtime's from torch's own wheels, `crt/` and `nv/` from the
/// nvidia-cuda-crt and nvidia-cuda-cccl wheels. `TUREEN_NCCL=0` builds without.
fn nccl_headers(libtorch: &Path) -> Option<Vec<PathBuf>> {
    if std::env::var("TUREEN_NCCL").is_ok_and(|v| v == "0") {
        return None;
    }
    let nvidia = libtorch.parent()?.join("nvidia");
    let cuda = nvidia.join("cu13/include");
    let nccl = nvidia.join("nccl/include");
    let needed = [
        nccl.join("nccl.h"),
        cuda.join("cuda_runtime.h"),
        cuda.join("crt/host_config.h"),
        cuda.join("nv/target"),
        libtorch.join("lib/libtorch_cuda.so"),
    ];
    let found = needed.iter().all(|p| p.exists());
    // A missing path would make cargo rerun this script on every build: watch the
    // headers when they are there, else the directory they would be installed into.
    if found {
        for path in &needed {
            println!("cargo:rerun-if-changed={}", path.display());
        }
    } else if cuda.is_dir() {
        println!("cargo:rerun-if-changed={}", cuda.display());
    }
    found.then(|| vec![nccl, cuda])
}

fn fail(message: &str) -> ! {
    eprintln!("error: {message}");
    std::process::exit(1);
}

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
