//! The local resource pool: stage slots (`--jobs`), CPUs, memory and GPU ids. A local
//! stage starts when what it asks for is free; each stage gets its own GPU ids.

use super::RunOptions;
use crate::pipeline::{Executor, Stage};

/// What the local machine has left to hand out.
pub(super) struct Pool {
    jobs: usize,
    cpus: u32,
    memory: Option<u64>,
    /// GPU ids, detected on first need.
    gpus: Option<Vec<u32>>,
    explicit_gpus: Option<Vec<u32>>,
}

/// A stage's claim that can never be met on this machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Unsatisfiable(pub String);

impl Pool {
    pub fn new(opts: &RunOptions) -> Pool {
        Pool {
            jobs: opts.jobs.max(1),
            cpus: machine_cpus(),
            memory: None,
            gpus: None,
            explicit_gpus: opts.gpus.clone(),
        }
    }

    /// The GPU ids this machine offers (`--gpus`, else detected).
    pub fn gpu_ids(&mut self) -> &mut Vec<u32> {
        let explicit = &self.explicit_gpus;
        self.gpus
            .get_or_insert_with(|| explicit.clone().unwrap_or_else(detect_gpus))
    }

    /// Takes what `stage` needs: `Ok(Some(gpu ids))`, or `Ok(None)` if it must wait.
    /// `running == 0` means nothing else holds anything, so a stage asking for more
    /// memory than is free runs alone instead of waiting forever. GPUs that do not exist
    /// are an error.
    pub fn take(
        &mut self,
        stage: &Stage,
        running: usize,
    ) -> Result<Option<Vec<u32>>, Unsatisfiable> {
        if stage.executor == Executor::Slurm {
            return Ok(Some(Vec::new()));
        }
        if self.jobs == 0 {
            return Ok(None);
        }
        let cpus = cpus_of(stage);
        if cpus > self.cpus && running > 0 {
            return Ok(None);
        }
        if let Some(mem) = stage.resources.memory {
            let free = *self.memory.get_or_insert_with(machine_memory);
            if mem > free && running > 0 {
                return Ok(None);
            }
        }
        let want = stage.resources.gpus as usize;
        let mut gpus = Vec::new();
        if want > 0 {
            let pool = self.gpu_ids();
            if pool.len() < want {
                if running == 0 {
                    return Err(Unsatisfiable(format!(
                        "stage `{}` needs {want} GPU(s) but {} are available (set --gpus or TUREEN_GPUS)",
                        stage.name,
                        pool.len()
                    )));
                }
                return Ok(None);
            }
            gpus = pool.drain(..want).collect();
        }
        self.jobs -= 1;
        self.cpus = self.cpus.saturating_sub(cpus);
        if let (Some(mem), Some(free)) = (stage.resources.memory, self.memory.as_mut()) {
            *free = free.saturating_sub(mem);
        }
        Ok(Some(gpus))
    }

    /// Gives back what `stage` took.
    pub fn give(&mut self, stage: &Stage, gpus: Vec<u32>) {
        if stage.executor == Executor::Slurm {
            return;
        }
        self.jobs += 1;
        self.cpus += cpus_of(stage);
        if let (Some(mem), Some(free)) = (stage.resources.memory, self.memory.as_mut()) {
            *free += mem;
        }
        if let Some(pool) = self.gpus.as_mut() {
            pool.extend(gpus);
            pool.sort_unstable();
        }
    }
}

/// CPUs a local stage holds: `cpus` is per process, and a data-parallel stage runs
/// `world` of them (as Slurm's `--cpus-per-task` counts); at most the machine's.
fn cpus_of(stage: &Stage) -> u32 {
    stage
        .resources
        .cpus
        .saturating_mul(stage.world.max(1))
        .min(machine_cpus())
}

/// CPUs of this machine (as the scheduler of this process sees them), asked once: std
/// reads the cgroup's quota files on every call.
pub fn machine_cpus() -> u32 {
    static CPUS: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    *CPUS.get_or_init(|| {
        std::thread::available_parallelism()
            .map(|n| n.get() as u32)
            .unwrap_or(1)
    })
}

/// GPU ids: `TUREEN_GPUS` (e.g. `0,1`), else `CUDA_VISIBLE_DEVICES`, else one per
/// line of `nvidia-smi -L`, else none.
pub fn detect_gpus() -> Vec<u32> {
    let parse =
        |s: &str| -> Vec<u32> { s.split(',').filter_map(|t| t.trim().parse().ok()).collect() };
    if let Ok(v) = std::env::var("TUREEN_GPUS") {
        return parse(&v);
    }
    if let Ok(v) = std::env::var("CUDA_VISIBLE_DEVICES") {
        return parse(&v);
    }
    match std::process::Command::new("nvidia-smi").arg("-L").output() {
        Ok(out) if out.status.success() => {
            let n = String::from_utf8_lossy(&out.stdout)
                .lines()
                .filter(|l| l.starts_with("GPU "))
                .count();
            (0..n as u32).collect()
        }
        _ => Vec::new(),
    }
}

/// Bytes of memory of this machine (`MemTotal`), unbounded when unknown; read once.
pub fn machine_memory() -> u64 {
    static MEMORY: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *MEMORY.get_or_init(read_meminfo)
}

fn read_meminfo() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|k| k.parse::<u64>().ok())
        })
        .map(|kib| kib * 1024)
        .unwrap_or(u64::MAX)
}
