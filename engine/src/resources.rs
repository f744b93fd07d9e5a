//! What a stage asks of the machine: [`Resources`], read from a pipeline's
//! `resources:` and used by both executors (the local pool and Slurm's `sbatch` options).

use serde::{Deserialize, Serialize};

/// What a stage asks for. Local runs schedule on `cpus`, `gpus` and `memory`; `nodes`
/// and `time` are passed to Slurm.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resources {
    /// CPUs per task.
    pub cpus: u32,
    /// GPUs per node.
    pub gpus: u32,
    /// Bytes per node; `None` when not declared.
    pub memory: Option<u64>,
    /// Nodes (Slurm); the local executor runs on one.
    pub nodes: u32,
    /// Slurm time limit as written (`HH:MM:SS`, `D-HH:MM`, minutes).
    pub time: Option<String>,
}

impl Default for Resources {
    fn default() -> Self {
        Resources {
            cpus: 1,
            gpus: 0,
            memory: None,
            nodes: 1,
            time: None,
        }
    }
}

/// `16G`, `512MiB`, `1.5T`, `1000000` -> bytes; `None` for anything else.
pub fn parse_memory(s: &str) -> Option<u64> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let num: f64 = num.parse().ok()?;
    let mult: f64 = match unit.trim().to_ascii_uppercase().as_str() {
        "" | "B" => 1.0,
        "K" | "KB" | "KIB" => 1024.0,
        "M" | "MB" | "MIB" => 1024.0 * 1024.0,
        "G" | "GB" | "GIB" => 1024.0 * 1024.0 * 1024.0,
        "T" | "TB" | "TIB" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        _ => return None,
    };
    let bytes = num * mult;
    (bytes.is_finite() && bytes < u64::MAX as f64).then_some(bytes as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_sizes_parse() {
        assert_eq!(parse_memory("16G"), Some(16 << 30));
        assert_eq!(parse_memory("512MiB"), Some(512 << 20));
        assert_eq!(parse_memory("100"), Some(100));
        assert_eq!(parse_memory("lots"), None);
        assert_eq!(parse_memory("99999999999999T"), None);
    }
}
