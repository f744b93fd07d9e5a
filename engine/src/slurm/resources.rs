//! What a stage asks of Slurm, and the `sbatch` options that ask for it.
//!
//! | pipeline                        | sbatch option                |
//! |---------------------------------|------------------------------|
//! | `resources.nodes`               | `--nodes=N`                  |
//! | `resources.gpus` (per node)     | `--gpus-per-node=N` (if > 0) |
//! | `resources.cpus` (per task)     | `--cpus-per-task=N`          |
//! | `resources.memory` (per node)   | `--mem=<MiB, rounded up>M`   |
//! | `resources.time`                | `--time=...` (validated)     |
//! | `slurm.partition` / `.account`  | `--partition` / `--account`  |
//! | `slurm.qos` / `.constraint`     | `--qos` / `--constraint`     |
//! | `slurm.sbatch_args`             | passed through, as written   |
//!
//! | ranks per node of a data-parallel stage | `--ntasks-per-node=T` (if > 1) |
//!
//! A data-parallel stage runs one task per rank, `tasks_per_node` on each node (CPUs
//! are per task, memory and GPUs per node). Any other stage is one process: one task on
//! the allocation's first node, which owns the whole allocation and may spread over it
//! itself (an `open_clip` stage starts its ranks on every node with `srun`).

use serde_json::Value;

use super::SlurmError;
use crate::resources::{validate_time, Resources};

/// The resources of one stage, in Slurm's terms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlurmResources {
    /// `--nodes`: the allocation.
    pub nodes: u32,
    /// `--ntasks-per-node`: the ranks on each node of a data-parallel stage, else 1.
    pub tasks_per_node: u32,
    /// The nodes the stage's own tasks (`tureen stage-exec`) run on: every node for a
    /// data-parallel stage, else 1 (the stage is one process on the first node).
    pub step_nodes: u32,
    /// `--gpus-per-node`; 0 asks for no GPU.
    pub gpus_per_node: u32,
    /// `--cpus-per-task`.
    pub cpus_per_task: u32,
    /// `--mem` (per node), in bytes; `None` leaves it to the partition's default.
    pub mem_bytes: Option<u64>,
    /// `--time`, in any form Slurm accepts (`90`, `1:30:00`, `2-00:00:00`, `UNLIMITED`).
    pub time: Option<String>,
}

impl Default for SlurmResources {
    fn default() -> Self {
        SlurmResources {
            nodes: 1,
            tasks_per_node: 1,
            step_nodes: 1,
            gpus_per_node: 0,
            cpus_per_task: 1,
            mem_bytes: None,
            time: None,
        }
    }
}

impl SlurmResources {
    /// The Slurm view of a pipeline stage's `resources:`, for a stage of `world` ranks
    /// (1 unless its kind is data-parallel).
    pub fn from_pipeline(resources: &Resources, world: u32) -> Self {
        SlurmResources {
            nodes: resources.nodes,
            tasks_per_node: (world / resources.nodes.max(1)).max(1),
            // A data-parallel world is `nodes x tasks_per_node`, never below `nodes`.
            step_nodes: if world > 1 { resources.nodes } else { 1 },
            gpus_per_node: resources.gpus,
            cpus_per_task: resources.cpus,
            mem_bytes: resources.memory,
            time: resources.time.clone(),
        }
    }

    /// The sbatch options for these resources, in a fixed order. Errors name the
    /// resource that cannot be expressed (a zero node count, a malformed time limit).
    pub fn sbatch_args(&self) -> Result<Vec<String>, SlurmError> {
        if self.nodes == 0 {
            return Err(SlurmError::config("resources.nodes", "must be at least 1"));
        }
        if self.cpus_per_task == 0 {
            return Err(SlurmError::config("resources.cpus", "must be at least 1"));
        }
        let mut args = vec![format!("--nodes={}", self.nodes)];
        if self.tasks_per_node > 1 {
            args.push(format!("--ntasks-per-node={}", self.tasks_per_node));
        }
        if self.gpus_per_node > 0 {
            args.push(format!("--gpus-per-node={}", self.gpus_per_node));
        }
        args.push(format!("--cpus-per-task={}", self.cpus_per_task));
        if let Some(bytes) = self.mem_bytes {
            if bytes == 0 {
                // `--mem=0` means "all the node's memory" to Slurm, surely not what was meant.
                return Err(SlurmError::config(
                    "resources.memory",
                    "must be more than 0 bytes",
                ));
            }
            args.push(format!("--mem={}M", bytes.div_ceil(1 << 20)));
        }
        if let Some(time) = &self.time {
            validate_time(time).map_err(|m| SlurmError::config("resources.time", m))?;
            args.push(format!("--time={}", time.trim()));
        }
        Ok(args)
    }
}

/// Cluster-wide options of the Slurm executor: the pipeline's top-level `slurm:` mapping.
///
/// ```yaml
/// slurm:
///   partition: gpu          # --partition
///   account: my-project     # --account
///   qos: normal             # --qos
///   constraint: a100        # --constraint
///   sbatch_args: ["--exclusive"]   # anything else, passed through as written
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SlurmSettings {
    /// `--partition`: the partition every job is submitted to; `None` takes the
    /// cluster's default.
    pub partition: Option<String>,
    /// `--account`: the account the jobs' usage is charged to.
    pub account: Option<String>,
    /// `--qos`: the quality of service the jobs request.
    pub qos: Option<String>,
    /// `--constraint`: node features the jobs require (e.g. `a100`).
    pub constraint: Option<String>,
    /// Extra sbatch options, passed through as written (after ours, so they win).
    pub sbatch_args: Vec<String>,
}

/// The keys [`SlurmSettings::from_value`] reads.
pub const SETTINGS_KEYS: &[&str] = &["partition", "account", "qos", "constraint", "sbatch_args"];

impl SlurmSettings {
    /// Reads the `slurm:` mapping (`null` or absent means no settings). Errors name the
    /// key (`slurm.partition: expected a string, found a number`).
    pub fn from_value(value: &Value) -> Result<Self, SlurmError> {
        let mut settings = SlurmSettings::default();
        for (key, v) in mapping(value)? {
            if !settings.set(key, v)? {
                return Err(unknown_key(key, SETTINGS_KEYS));
            }
        }
        Ok(settings)
    }

    /// Sets one key of the `slurm:` mapping; `Ok(false)` if the key is not a setting.
    pub fn set(&mut self, key: &str, v: &Value) -> Result<bool, SlurmError> {
        let full = format!("slurm.{key}");
        match key {
            "partition" => self.partition = Some(word(&full, v)?),
            "account" => self.account = Some(word(&full, v)?),
            "qos" => self.qos = Some(word(&full, v)?),
            "constraint" => self.constraint = Some(word(&full, v)?),
            "sbatch_args" => {
                let Value::Array(items) = v else {
                    return Err(SlurmError::config(
                        &full,
                        format!("expected a list of strings, found {}", kind(v)),
                    ));
                };
                for (i, item) in items.iter().enumerate() {
                    match item {
                        Value::String(s) if s.starts_with('-') => self.sbatch_args.push(s.clone()),
                        Value::String(s) => {
                            return Err(SlurmError::config(
                                &format!("{full}[{i}]"),
                                format!("`{s}` is not an option (write `--name=value`)"),
                            ))
                        }
                        other => {
                            return Err(SlurmError::config(
                                &format!("{full}[{i}]"),
                                format!("expected a string, found {}", kind(other)),
                            ))
                        }
                    }
                }
            }
            _ => return Ok(false),
        }
        Ok(true)
    }

    /// The sbatch options for these settings.
    pub fn sbatch_args(&self) -> Vec<String> {
        let mut args = Vec::new();
        let named = [
            ("--partition", &self.partition),
            ("--account", &self.account),
            ("--qos", &self.qos),
            ("--constraint", &self.constraint),
        ];
        for (flag, value) in named {
            if let Some(v) = value {
                args.push(format!("{flag}={v}"));
            }
        }
        args.extend(self.sbatch_args.iter().cloned());
        args
    }
}

/// The entries of the `slurm:` mapping (none for `null`).
pub(crate) fn mapping(value: &Value) -> Result<Vec<(&str, &Value)>, SlurmError> {
    match value {
        Value::Null => Ok(Vec::new()),
        Value::Object(map) => Ok(map.iter().map(|(k, v)| (k.as_str(), v)).collect()),
        other => Err(SlurmError::config(
            "slurm",
            format!("expected a mapping, found {}", kind(other)),
        )),
    }
}

pub(crate) fn unknown_key(key: &str, known: &[&str]) -> SlurmError {
    SlurmError::config(
        &format!("slurm.{key}"),
        format!("unknown key (known: {})", known.join(", ")),
    )
}

/// A non-empty string without whitespace (partition, account, ... names).
fn word(key: &str, v: &Value) -> Result<String, SlurmError> {
    match v {
        Value::String(s) if !s.trim().is_empty() && !s.chars().any(char::is_whitespace) => {
            Ok(s.clone())
        }
        Value::String(s) => Err(SlurmError::config(
            key,
            format!("`{s}` is not a valid name (empty or has spaces)"),
        )),
        other => Err(SlurmError::config(
            key,
            format!("expected a string, found {}", kind(other)),
        )),
    }
}

pub(crate) fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a mapping",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn resources_map_to_sbatch_options() {
        let r = SlurmResources {
            nodes: 2,
            tasks_per_node: 1,
            step_nodes: 1,
            gpus_per_node: 8,
            cpus_per_task: 12,
            mem_bytes: Some(64 << 30),
            time: Some("2-00:00:00".into()),
        };
        assert_eq!(
            r.sbatch_args().unwrap(),
            [
                "--nodes=2",
                "--gpus-per-node=8",
                "--cpus-per-task=12",
                "--mem=65536M",
                "--time=2-00:00:00"
            ]
        );
    }

    #[test]
    fn a_stage_of_one_process_runs_on_the_first_node_of_its_allocation() {
        let two_nodes = Resources {
            nodes: 2,
            gpus: 4,
            ..Default::default()
        };
        // open_clip, a command: one task on the first node; the allocation stays whole.
        let one = SlurmResources::from_pipeline(&two_nodes, 1);
        assert_eq!((one.nodes, one.step_nodes, one.tasks_per_node), (2, 1, 1));
        assert_eq!(one.sbatch_args().unwrap()[0], "--nodes=2");
        // A data-parallel stage: a task per rank on every node.
        let ranks = SlurmResources::from_pipeline(&two_nodes, 8);
        assert_eq!(
            (ranks.nodes, ranks.step_nodes, ranks.tasks_per_node),
            (2, 2, 4)
        );
    }

    #[test]
    fn cpu_only_stage_asks_for_no_gpu_and_no_memory() {
        assert_eq!(
            SlurmResources::default().sbatch_args().unwrap(),
            ["--nodes=1", "--cpus-per-task=1"]
        );
    }

    #[test]
    fn memory_is_rounded_up_to_whole_mebibytes() {
        let r = SlurmResources {
            mem_bytes: Some(1),
            ..Default::default()
        };
        assert!(r.sbatch_args().unwrap().contains(&"--mem=1M".to_string()));
        let r = SlurmResources {
            mem_bytes: Some((3 << 20) + 1),
            ..Default::default()
        };
        assert!(r.sbatch_args().unwrap().contains(&"--mem=4M".to_string()));
    }

    #[test]
    fn impossible_resources_are_rejected_with_the_key() {
        let err = SlurmResources {
            nodes: 0,
            ..Default::default()
        }
        .sbatch_args()
        .unwrap_err();
        assert!(err.to_string().contains("resources.nodes"), "{err}");
        let err = SlurmResources {
            mem_bytes: Some(0),
            ..Default::default()
        }
        .sbatch_args()
        .unwrap_err();
        assert!(err.to_string().contains("resources.memory"), "{err}");
        let err = SlurmResources {
            time: Some("two hours".into()),
            ..Default::default()
        }
        .sbatch_args()
        .unwrap_err();
        assert!(
            err.to_string().contains("resources.time") && err.to_string().contains("two hours"),
            "{err}"
        );
    }

    #[test]
    fn settings_map_to_partition_account_and_passthrough() {
        let s = SlurmSettings::from_value(&json!({
            "partition": "gpu", "account": "proj", "qos": "high", "constraint": "a100",
            "sbatch_args": ["--exclusive"]
        }))
        .unwrap();
        assert_eq!(
            s.sbatch_args(),
            [
                "--partition=gpu",
                "--account=proj",
                "--qos=high",
                "--constraint=a100",
                "--exclusive"
            ]
        );
        assert_eq!(
            SlurmSettings::from_value(&Value::Null).unwrap(),
            SlurmSettings::default()
        );
    }

    #[test]
    fn bad_settings_name_the_key() {
        let err = SlurmSettings::from_value(&json!({"partiton": "gpu"}))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("slurm.partiton") && err.contains("partition"),
            "{err}"
        );
        let err = SlurmSettings::from_value(&json!({"account": 7}))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("slurm.account") && err.contains("a number"),
            "{err}"
        );
        let err = SlurmSettings::from_value(&json!({"sbatch_args": ["exclusive"]}))
            .unwrap_err()
            .to_string();
        assert!(err.contains("slurm.sbatch_args[0]"), "{err}");
        let err = SlurmSettings::from_value(&json!(["gpu"]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("expected a mapping"), "{err}");
    }
}
