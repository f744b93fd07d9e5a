//! What a stage asks of the machine: [`Resources`], read from a pipeline's
//! `resources:` and used by both executors (the local pool and Slurm's `sbatch` options).
//! The forms its values take ([`parse_memory`], [`validate_time`]) are checked here, once,
//! for the loader and for the Slurm executor alike.

use serde::{Deserialize, Serialize};

/// What a stage asks for. Local runs schedule on `cpus`, `gpus` and `memory`; `nodes`
/// and `time` are passed to Slurm. A data-parallel stage runs as
/// [`Resources::world_size`] processes (ranks): `tasks_per_node` on each of `nodes`.
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
    /// Processes per node as written (`None`: the default, see
    /// [`Resources::tasks_per_node`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tasks_per_node: Option<u32>,
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
            tasks_per_node: None,
            time: None,
        }
    }
}

impl Resources {
    /// Processes per node: as written, else one per GPU (`gpus`), else 1.
    pub fn tasks_per_node(&self) -> u32 {
        match self.tasks_per_node {
            Some(t) => t,
            None if self.gpus > 0 => self.gpus,
            None => 1,
        }
    }

    /// Processes of a data-parallel stage: `nodes x tasks_per_node` (saturating; the
    /// card's 128 x 8 = 1,024).
    pub fn world_size(&self) -> u32 {
        self.nodes.max(1).saturating_mul(self.tasks_per_node())
    }

    /// GPUs each process sees: the node's GPUs shared out among its processes (0 on the
    /// CPU). With the default `tasks_per_node` that is 1 per rank.
    pub fn gpus_per_task(&self) -> u32 {
        self.gpus / self.tasks_per_node().max(1)
    }
}

/// Checks a time limit against the forms `sbatch --time` accepts: `M`, `M:S`, `H:M:S`,
/// `D-H`, `D-H:M`, `D-H:M:S`, and `UNLIMITED`/`INFINITE`.
pub fn validate_time(time: &str) -> Result<(), String> {
    let t = time.trim();
    if t.eq_ignore_ascii_case("unlimited") || t.eq_ignore_ascii_case("infinite") {
        return Ok(());
    }
    let bad = || {
        Err(format!(
            "`{time}` is not a Slurm time limit (use minutes, `H:MM:SS`, `D-HH:MM:SS`, or `UNLIMITED`)"
        ))
    };
    let is_num = |s: &str| !s.is_empty() && s.len() <= 9 && s.bytes().all(|b| b.is_ascii_digit());
    let (days, clock) = match t.split_once('-') {
        Some((d, rest)) => (Some(d), rest),
        None => (None, t),
    };
    if let Some(d) = days {
        if !is_num(d) {
            return bad();
        }
    }
    let parts: Vec<&str> = clock.split(':').collect();
    if !parts.iter().all(|p| is_num(p)) {
        return bad();
    }
    // `M`, `M:S`, `H:M:S` without days; `H`, `H:M`, `H:M:S` after `D-`: 1 to 3 fields either way.
    if !(1..=3).contains(&parts.len()) {
        return bad();
    }
    if parts.iter().all(|p| p.bytes().all(|b| b == b'0'))
        && days.is_none_or(|d| d.bytes().all(|b| b == b'0'))
    {
        return Err(format!("`{time}` is a zero time limit"));
    }
    Ok(())
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
    fn slurm_time_forms_are_accepted() {
        for t in [
            "90",
            "30:00",
            "1:30:00",
            "2-0",
            "2-12:00",
            "2-12:00:00",
            "UNLIMITED",
            "infinite",
        ] {
            assert_eq!(validate_time(t), Ok(()), "{t}");
        }
        for t in [
            "", "1:2:3:4", "1h", "-5", "1-", "a-1", "0", "0:00:00", "1:-1",
        ] {
            assert!(validate_time(t).is_err(), "{t}");
        }
    }

    #[test]
    fn world_size_is_nodes_times_tasks_per_node_which_defaults_to_the_gpus() {
        let r = |nodes, gpus, tasks_per_node| Resources {
            nodes,
            gpus,
            tasks_per_node,
            ..Resources::default()
        };
        assert_eq!(r(1, 0, None).world_size(), 1);
        assert_eq!(r(128, 8, None).world_size(), 1024);
        assert_eq!(r(136, 8, None).world_size(), 1088);
        assert_eq!(r(1, 0, Some(2)).world_size(), 2);
        assert_eq!(r(2, 8, Some(4)).world_size(), 8);
        assert_eq!(r(2, 8, Some(4)).gpus_per_task(), 2);
        assert_eq!(r(1, 8, None).gpus_per_task(), 1);
        assert_eq!(r(1, 0, Some(2)).gpus_per_task(), 0);
    }

    #[test]
    fn memory_sizes_parse() {
        assert_eq!(parse_memory("16G"), Some(16 << 30));
        assert_eq!(parse_memory("512MiB"), Some(512 << 20));
        assert_eq!(parse_memory("100"), Some(100));
        assert_eq!(parse_memory("lots"), None);
        assert_eq!(parse_memory("99999999999999T"), None);
    }
}
