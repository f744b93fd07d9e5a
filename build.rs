// The root package's build script: libtorch's rpath (the same as `tureen-torch`'s own
// crate sets), and what `tureen --version` and every run record say about this build:
// the git commit, the cargo profile and the libtorch it was built against.

include!("stages/torch/build/rpath.rs");

fn main() {
    libtorch_rpath(&["-bin=tureen-torch", "-tests"]);
    build_info();
    link_tureen_at_a_fixed_address();
}

/// `tureen` is linked as a position-dependent executable. As a PIE, the dynamic loader
/// applied 24,000 relative relocations at every start (vtables, `&'static str`s, panic
/// locations), writing into ~110 pages of `.data.rel.ro` and `.got`, one copy-on-write
/// fault each: `tureen --version` took 347 page faults, 230 without them. Linked at a
/// fixed address those pages stay clean and shared with the file. The objects are still
/// position-independent code (rustc's default), which links into a fixed executable as
/// is; only the executable's own base address is no longer randomised (libraries, heap
/// and stack still are). `tureen-torch` stays a PIE: libtorch's start dwarfs its own.
fn link_tureen_at_a_fixed_address() {
    println!("cargo:rustc-link-arg-bin=tureen=-no-pie");
}

fn build_info() {
    println!("cargo:rerun-if-env-changed=TUREEN_GIT_COMMIT");
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    let commit = std::env::var("TUREEN_GIT_COMMIT")
        .ok()
        .filter(|c| !c.is_empty())
        .or_else(git_commit)
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=TUREEN_GIT_COMMIT={commit}");
    let profile = std::env::var("PROFILE").unwrap_or_else(|_| "unknown".into());
    println!("cargo:rustc-env=TUREEN_BUILD_PROFILE={profile}");
    println!("cargo:rustc-env=TUREEN_LIBTORCH={}", libtorch_version());
}

fn git(args: &[&str]) -> Option<String> {
    let out = std::process::Command::new("git").args(args).output().ok()?;
    let text = String::from_utf8(out.stdout).ok()?;
    (out.status.success() && !text.trim().is_empty()).then(|| text.trim().to_string())
}

/// The commit checked out, rebuilt when HEAD moves (HEAD itself, the branch it names,
/// and packed refs). `None` outside a git checkout (a source tarball).
fn git_commit() -> Option<String> {
    let commit = git(&["rev-parse", "--short=12", "HEAD"])?;
    let mut watched = vec![git(&["rev-parse", "--git-path", "HEAD"])?];
    if let Some(branch) = git(&["symbolic-ref", "-q", "HEAD"]) {
        watched.extend(git(&["rev-parse", "--git-path", &branch]));
    }
    watched.extend(git(&["rev-parse", "--git-path", "packed-refs"]));
    for path in watched {
        println!("cargo:rerun-if-changed={path}");
    }
    Some(commit)
}

/// libtorch's version: `build-version` of a libtorch download, or `torch/version.py`
/// when `LIBTORCH` is a PyTorch install (what `scripts/setup-venv.sh` links).
fn libtorch_version() -> String {
    let Ok(dir) = std::env::var("LIBTORCH") else {
        return "unknown".into();
    };
    let dir = std::path::Path::new(&dir);
    if let Ok(v) = std::fs::read_to_string(dir.join("build-version")) {
        return v.trim().to_string();
    }
    let version_py = std::fs::read_to_string(dir.join("version.py")).unwrap_or_default();
    version_py
        .lines()
        .find_map(|l| l.strip_prefix("__version__ = "))
        .map(|v| v.trim().trim_matches(|c| c == '\'' || c == '"').to_string())
        .unwrap_or_else(|| "unknown".into())
}
