//! Pins libtorch's CPU numerics for a stage ([`Numerics`]): the `portable` mode makes a
//! stage give the same bytes on any x86-64 CPU with AVX2 and FMA, for a given thread
//! count.
//!
//! What portable pins, and why (measured on a 2-core AMD EPYC with AVX-512 on a small
//! conv + LayerNorm + GELU + attention CLIP training stage; each knob alone changed the
//! checkpoint bytes):
//! - `ATEN_CPU_CAPABILITY=avx2`: ATen's vectorised kernels (reductions, LayerNorm, GELU,
//!   softmax, the AdamW arithmetic, even the normal init) otherwise use AVX-512 where
//!   the CPU has it, with other summation orders.
//! - `MKL_CBWR=COMPATIBLE`: MKL's GEMMs. MKL ignores `MKL_CBWR=AVX2` on non-Intel CPUs
//!   (its verbose mode says `CNR:AUTO` here, and the bytes equal the unpinned run's),
//!   so AVX2 would give different bytes on Intel and AMD; COMPATIBLE (SSE2 code, fixed
//!   cache sizes, deterministic reductions) is the one branch documented to be the same
//!   on Intel and compatible CPUs.
//! - no oneDNN and no NNPACK for convolutions (ATen's own im2col + MKL GEMM instead):
//!   oneDNN chose `brgconv`/`jit_1x1`/`jit_dw` kernels whose blocking follows the L1/L2
//!   cache sizes and the ISA (`ONEDNN_MAX_CPU_ISA=AVX2` alone changed the bytes and
//!   cannot fix the cache-size dependence), and NNPACK blocks by cache size too.
//!   `ONEDNN_MAX_CPU_ISA=AVX2` is still set for anything else that reaches oneDNN.
//! - a fixed intra-op thread count (the stage's `threads`, default 2) with
//!   `OMP_DYNAMIC=FALSE` and `MKL_DYNAMIC=FALSE`: 1 and 2 threads gave different bytes.
//!
//! The environment variables are read when libtorch, OpenMP and MKL start, so the
//! worker re-executes itself with them before anything of libtorch runs
//! ([`reexec_pinned`]); the rest is set in the process when the stage starts ([`apply`]).

use std::ffi::{c_char, OsString};
use std::path::Path;

use anyhow::Context as _;
use tureen_engine::job::StageJob;
use tureen_engine::machine::NumericsInfo;
use tureen_stages::numerics::{Numerics, NumericsSetting};

extern "C" {
    fn tureen_set_mkldnn_enabled(on: bool) -> bool;
    fn tureen_set_nnpack_enabled(on: bool) -> bool;
    fn tureen_mkldnn_enabled() -> bool;
    fn tureen_nnpack_enabled() -> bool;
    fn tureen_cpu_capability(buf: *mut c_char, len: usize) -> usize;
    fn tureen_mkl_version(buf: *mut c_char, len: usize) -> usize;
    fn tureen_mkldnn_version(buf: *mut c_char, len: usize) -> usize;
    fn tureen_torch_version(buf: *mut c_char, len: usize) -> usize;
}

/// Set in a worker's environment once it runs with a mode's pins: `portable:THREADS`.
pub const PINNED_MARKER: &str = "TUREEN_NUMERICS";

/// The environment a portable stage's process starts with.
pub fn portable_env(threads: i32) -> Vec<(&'static str, String)> {
    let t = threads.to_string();
    vec![
        ("ATEN_CPU_CAPABILITY", "avx2".into()),
        ("MKL_CBWR", "COMPATIBLE".into()),
        ("MKL_DYNAMIC", "FALSE".into()),
        ("MKL_NUM_THREADS", t.clone()),
        ("OMP_DYNAMIC", "FALSE".into()),
        ("OMP_NUM_THREADS", t),
        ("ONEDNN_MAX_CPU_ISA", "AVX2".into()),
    ]
}

fn marker(setting: &NumericsSetting) -> Option<String> {
    match (setting.numerics, setting.threads) {
        (Numerics::Portable, Some(t)) => Some(format!("portable:{t}")),
        _ => None,
    }
}

/// For `tureen-torch stage-exec --job FILE`, before anything else: when the job's stage
/// wants portable numerics, makes sure this process runs with their pins
/// ([`ensure_pinned`]). A job that cannot be read is left for `stage-exec` to report.
pub fn reexec_pinned(job_file: &Path) -> anyhow::Result<()> {
    let Ok(job) = StageJob::read(job_file) else {
        return Ok(());
    };
    match tureen_stages::kinds::numerics_setting(&job.kind, &job.params) {
        Ok(Some(setting)) => ensure_pinned(&setting),
        _ => Ok(()),
    }
}

/// When `setting` is portable and this process was not started with its pins, replaces
/// the process (same pid, arguments, pipes and parent-death signal) by this program
/// with them. Returns only when no re-exec is needed. Call it before any libtorch work.
pub fn ensure_pinned(setting: &NumericsSetting) -> anyhow::Result<()> {
    let Some(wanted) = marker(setting) else {
        return Ok(());
    };
    if std::env::var(PINNED_MARKER).ok().as_deref() == Some(wanted.as_str()) {
        return Ok(());
    }
    let threads = setting.threads.unwrap_or(1);
    let exe = std::env::current_exe().context("locating this program to pin its numerics")?;
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    let mut command = std::process::Command::new(&exe);
    command
        .args(args)
        .envs(portable_env(threads))
        .env(PINNED_MARKER, &wanted);
    use std::os::unix::process::CommandExt;
    let err = command.exec();
    Err(err).with_context(|| format!("cannot re-execute {} with pinned numerics", exe.display()))
}

/// At the start of a libtorch stage: pins what is set in the process (convolution
/// backends, thread count) and checks that the environment pins took effect.
/// Returns what the run record keeps.
pub fn apply(setting: &NumericsSetting) -> anyhow::Result<NumericsInfo> {
    if let Some(t) = setting.threads {
        tch::set_num_threads(t);
    }
    if setting.numerics == Numerics::Portable {
        let wanted = marker(setting).unwrap_or_default();
        let pinned = std::env::var(PINNED_MARKER).ok();
        if pinned.as_deref() != Some(wanted.as_str()) {
            anyhow::bail!(
                "numerics: portable: this process was not started with the pinned environment \
                 ({PINNED_MARKER}={wanted}; found {}); run the stage through `tureen run` \
                 or `tureen-torch stage-exec`",
                pinned.unwrap_or_else(|| "nothing".into())
            );
        }
        // SAFETY: plain setters on libtorch's global context (see shim.cpp).
        let off = unsafe { tureen_set_mkldnn_enabled(false) && tureen_set_nnpack_enabled(false) };
        if !off {
            anyhow::bail!("numerics: portable: cannot turn off oneDNN/NNPACK convolutions");
        }
        let capability = cpu_capability();
        if capability != "AVX2" {
            anyhow::bail!(
                "numerics: portable needs a CPU with AVX2 and FMA, but libtorch runs with \
                 {capability} here; use `numerics: native` on this machine"
            );
        }
    }
    Ok(info(setting.numerics))
}

/// What this process runs with, for the run record.
pub fn info(numerics: Numerics) -> NumericsInfo {
    let env = [
        "ATEN_CPU_CAPABILITY",
        "MKL_CBWR",
        "MKL_DYNAMIC",
        "MKL_NUM_THREADS",
        "MKL_ENABLE_INSTRUCTIONS",
        "OMP_DYNAMIC",
        "OMP_NUM_THREADS",
        "ONEDNN_MAX_CPU_ISA",
        PINNED_MARKER,
    ]
    .into_iter()
    .filter_map(|k| std::env::var(k).ok().map(|v| (k.to_string(), v)))
    .collect();
    // SAFETY: plain getters on libtorch's global context.
    let (onednn, nnpack) = unsafe { (tureen_mkldnn_enabled(), tureen_nnpack_enabled()) };
    NumericsInfo {
        mode: numerics.as_str().to_string(),
        cpu_capability: cpu_capability(),
        torch: fact(tureen_torch_version),
        mkl: fact(tureen_mkl_version),
        onednn: fact(tureen_mkldnn_version),
        threads: tch::get_num_threads(),
        interop_threads: tch::get_num_interop_threads(),
        onednn_convolutions: onednn,
        nnpack_convolutions: nnpack,
        env,
    }
}

/// The CPU capability ATen dispatches to: `AVX512`, `AVX2`, `DEFAULT`...
pub fn cpu_capability() -> String {
    fact(tureen_cpu_capability)
}

/// One string from the shim.
fn fact(get: unsafe extern "C" fn(*mut c_char, usize) -> usize) -> String {
    let mut buf = vec![0u8; 512];
    // SAFETY: the shim writes at most `buf.len()` bytes, NUL-terminated.
    let full = unsafe { get(buf.as_mut_ptr().cast(), buf.len()) };
    if full >= buf.len() {
        buf = vec![0u8; full + 1];
        // SAFETY: as above, with room for the whole string.
        unsafe { get(buf.as_mut_ptr().cast(), buf.len()) };
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).trim().to_string()
}
