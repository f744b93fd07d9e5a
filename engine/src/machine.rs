//! What machine a stage ran on, for run records and `tureen replay`: the CPU (model,
//! flags, logical CPUs) and, for libtorch stages, the numerics it ran with (mode, ATen
//! capability, libtorch/MKL/oneDNN versions, threads).
//!
//! [`job::execute`](crate::job::execute) writes one per executed stage beside its log
//! (`<stage>.machine.json`), wherever the stage ran (here, in the `tureen-torch` worker,
//! on a Slurm node); replay reads the recorded one and prints it next to its own.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use serde::{Deserialize, Serialize};

/// The machine one stage ran on.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MachineInfo {
    /// The host name (`gethostname`; `unknown` if it fails).
    pub host: String,
    /// `model name` of /proc/cpuinfo, e.g. `AMD EPYC 7B13`.
    pub cpu_model: String,
    /// The CPU's flags (sorted), as /proc/cpuinfo lists them.
    pub cpu_flags: Vec<String>,
    /// Logical CPUs (`processor` entries of /proc/cpuinfo), not the ones the process
    /// may use.
    pub logical_cpus: usize,
    /// `linux-x86_64`.
    pub os: String,
    /// What a libtorch stage ran with (absent for stages that run no libtorch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub numerics: Option<NumericsInfo>,
}

/// The numerics a libtorch stage ran with.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NumericsInfo {
    /// `portable` or `native`.
    pub mode: String,
    /// The kernels ATen dispatched to: `AVX2`, `AVX512`, `DEFAULT`.
    pub cpu_capability: String,
    /// The libtorch version the worker was built against (`TORCH_VERSION`).
    pub torch: String,
    /// ATen's description of the MKL it links (empty without MKL).
    pub mkl: String,
    /// ATen's description of the oneDNN (MKL-DNN) it links.
    pub onednn: String,
    /// Intra-op threads (`torch.get_num_threads`).
    pub threads: i32,
    /// Inter-op threads (`torch.get_num_interop_threads`).
    pub interop_threads: i32,
    /// Whether ATen may run convolutions in oneDNN (off in `portable` mode).
    pub onednn_convolutions: bool,
    /// Whether ATen may run convolutions in NNPACK (off in `portable` mode).
    pub nnpack_convolutions: bool,
    /// The numerics environment variables set in the process.
    pub env: BTreeMap<String, String>,
}

impl MachineInfo {
    /// This machine (the CPU part is read once per process).
    pub fn current() -> MachineInfo {
        static CPU: OnceLock<MachineInfo> = OnceLock::new();
        let mut info = CPU
            .get_or_init(|| {
                let text = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
                let mut info = parse_cpuinfo(&text);
                info.host = crate::host::hostname();
                info.os = format!("{}-{}", std::env::consts::OS, std::env::consts::ARCH);
                info
            })
            .clone();
        info.numerics = noted_numerics();
        info
    }

    /// Where the machine file of the stage whose log is `log` lives.
    pub fn path_for_log(log: &Path) -> PathBuf {
        log.with_extension("machine.json")
    }

    /// Writes this as pretty JSON to `path`, atomically (a reader never sees half a file)
    /// and, like the run record it belongs to, without an fsync: it is written once per
    /// stage, and two fsyncs a stage were a fifth of a run of short command stages.
    pub fn write(&self, path: &Path) -> std::io::Result<()> {
        let bytes = serde_json::to_vec_pretty(self).expect("machine infos serialize");
        tureen_artifacts::fsutil::replace_unsynced(path, &bytes)
    }

    /// The machine file at `path`, if there is a readable one.
    pub fn read(path: &Path) -> Option<MachineInfo> {
        serde_json::from_slice(&std::fs::read(path).ok()?).ok()
    }

    /// (field, recorded, current) for every field that differs, flags as the ones only
    /// one side has.
    pub fn differences(&self, other: &MachineInfo) -> Vec<(String, String, String)> {
        let mut out = Vec::new();
        let mut field = |name: &str, a: String, b: String| {
            if a != b {
                out.push((name.to_string(), a, b));
            }
        };
        field("cpu", self.cpu_model.clone(), other.cpu_model.clone());
        field(
            "logical cpus",
            self.logical_cpus.to_string(),
            other.logical_cpus.to_string(),
        );
        let only = |a: &[String], b: &[String]| {
            a.iter()
                .filter(|f| !b.contains(f))
                .cloned()
                .collect::<Vec<_>>()
                .join(" ")
        };
        let (mine, theirs) = (
            only(&self.cpu_flags, &other.cpu_flags),
            only(&other.cpu_flags, &self.cpu_flags),
        );
        if !mine.is_empty() || !theirs.is_empty() {
            field("cpu flags only here", mine, theirs);
        }
        let none = NumericsInfo::default();
        let (a, b) = (
            self.numerics.as_ref().unwrap_or(&none),
            other.numerics.as_ref().unwrap_or(&none),
        );
        field("numerics", a.mode.clone(), b.mode.clone());
        field(
            "cpu capability",
            a.cpu_capability.clone(),
            b.cpu_capability.clone(),
        );
        field("libtorch", a.torch.clone(), b.torch.clone());
        field("mkl", a.mkl.clone(), b.mkl.clone());
        field("onednn", a.onednn.clone(), b.onednn.clone());
        field("threads", a.threads.to_string(), b.threads.to_string());
        field(
            "interop threads",
            a.interop_threads.to_string(),
            b.interop_threads.to_string(),
        );
        field(
            "onednn convolutions",
            a.onednn_convolutions.to_string(),
            b.onednn_convolutions.to_string(),
        );
        field(
            "nnpack convolutions",
            a.nnpack_convolutions.to_string(),
            b.nnpack_convolutions.to_string(),
        );
        let env = |e: &BTreeMap<String, String>| {
            e.iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(" ")
        };
        field("numerics env", env(&a.env), env(&b.env));
        out
    }
}

/// Model, flags and count of logical CPUs from /proc/cpuinfo's text.
pub fn parse_cpuinfo(text: &str) -> MachineInfo {
    let mut info = MachineInfo::default();
    for line in text.lines() {
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        let (key, value) = (key.trim(), value.trim());
        match key {
            "processor" => info.logical_cpus += 1,
            "model name" if info.cpu_model.is_empty() => info.cpu_model = value.to_string(),
            "flags" if info.cpu_flags.is_empty() => {
                let mut flags: Vec<String> = value.split_whitespace().map(str::to_string).collect();
                flags.sort();
                info.cpu_flags = flags;
            }
            _ => {}
        }
    }
    info
}

static NUMERICS: Mutex<Option<NumericsInfo>> = Mutex::new(None);

/// Called by a libtorch stage once it pinned its numerics (a worker process runs one
/// stage): [`MachineInfo::current`] includes it from then on.
pub fn note_numerics(info: NumericsInfo) {
    *NUMERICS.lock().unwrap_or_else(|e| e.into_inner()) = Some(info);
}

fn noted_numerics() -> Option<NumericsInfo> {
    NUMERICS.lock().unwrap_or_else(|e| e.into_inner()).clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpuinfo_gives_model_sorted_flags_and_cpu_count() {
        let text = "processor\t: 0\nmodel name\t: AMD EPYC 7B13\nflags\t\t: sse2 avx2 fma\n\n\
                    processor\t: 1\nmodel name\t: AMD EPYC 7B13\nflags\t\t: sse2 avx2 fma\n";
        let info = parse_cpuinfo(text);
        assert_eq!(info.cpu_model, "AMD EPYC 7B13");
        assert_eq!(info.cpu_flags, ["avx2", "fma", "sse2"]);
        assert_eq!(info.logical_cpus, 2);
    }

    #[test]
    fn differences_list_only_what_differs_and_flags_by_side() {
        let a = parse_cpuinfo("processor: 0\nmodel name: Intel Xeon\nflags: avx2 avx512f\n");
        let mut b = a.clone();
        assert!(a.differences(&b).is_empty());
        b.cpu_model = "AMD EPYC".into();
        b.cpu_flags = vec!["avx2".into(), "sse4a".into()];
        let d = a.differences(&b);
        assert!(d.contains(&("cpu".into(), "Intel Xeon".into(), "AMD EPYC".into())));
        assert!(d.contains(&(
            "cpu flags only here".into(),
            "avx512f".into(),
            "sse4a".into()
        )));
        assert_eq!(d.len(), 2);
    }
}
