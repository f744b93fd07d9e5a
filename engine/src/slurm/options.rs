//! [`SlurmOptions`]: how tureen talks to Slurm, read from the pipeline's `slurm:` mapping.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;

use super::cli::SlurmCli;
use super::resources::{self, SlurmSettings};
use super::SlurmError;

/// How tureen talks to Slurm: the cluster-wide settings of the pipeline's `slurm:`
/// mapping plus how often it looks.
#[derive(Debug, Clone)]
pub struct SlurmOptions {
    /// Partition, account, QOS, extra sbatch options.
    pub settings: SlurmSettings,
    /// Where `sbatch`, `squeue`, ... live; `None` searches `PATH`.
    pub bin_dir: Option<PathBuf>,
    /// The cluster's configuration file (`SLURM_CONF` of every Slurm command, and so of
    /// the jobs); `None` inherits tureen's environment, which is what users normally want.
    pub slurm_conf: Option<PathBuf>,
    /// How often the sentinel file is checked (a stat; cheap).
    pub poll_interval: Duration,
    /// How often the controller is asked about the job (`squeue`). Only needed to notice
    /// jobs that die without a sentinel, so this can be slow on a busy cluster.
    pub query_interval: Duration,
    /// After Slurm says a job ended, how long to wait for its sentinel to become visible
    /// (a shared filesystem may show it late) before declaring the job dead.
    pub sentinel_grace: Duration,
    /// How long the controller may stay unreachable before tureen gives up on the job
    /// (the job keeps running; a later tureen re-attaches).
    pub controller_timeout: Duration,
    /// After `scancel`, how long to wait for the job to leave the queue.
    pub cancel_timeout: Duration,
    /// How long a job may stay PREEMPTED before tureen concludes Slurm will not requeue
    /// it and retries it itself (a requeued job goes back to PENDING at once).
    pub preempt_grace: Duration,
}

impl Default for SlurmOptions {
    fn default() -> Self {
        SlurmOptions {
            settings: SlurmSettings::default(),
            bin_dir: None,
            slurm_conf: None,
            poll_interval: Duration::from_millis(500),
            query_interval: Duration::from_secs(5),
            sentinel_grace: Duration::from_secs(5),
            controller_timeout: Duration::from_secs(600),
            cancel_timeout: Duration::from_secs(60),
            preempt_grace: Duration::from_secs(60),
        }
    }
}

/// Every key of the `slurm:` mapping.
pub const OPTION_KEYS: &[&str] = &[
    "partition",
    "account",
    "qos",
    "constraint",
    "sbatch_args",
    "poll_interval",
    "query_interval",
    "sentinel_grace",
    "controller_timeout",
    "cancel_timeout",
    "preempt_grace",
];

impl SlurmOptions {
    /// Reads the pipeline's top-level `slurm:` mapping (`null` when absent). Durations
    /// are seconds (numbers). Errors name the key.
    ///
    /// ```yaml
    /// slurm:
    ///   partition: gpu
    ///   account: my-project
    ///   query_interval: 30     # ask squeue every 30 s (default 5)
    /// ```
    pub fn from_value(value: &Value) -> Result<Self, SlurmError> {
        let mut options = SlurmOptions::default();
        for (key, v) in resources::mapping(value)? {
            if options.settings.set(key, v)? {
                continue;
            }
            let slot = match key {
                "poll_interval" => &mut options.poll_interval,
                "query_interval" => &mut options.query_interval,
                "sentinel_grace" => &mut options.sentinel_grace,
                "controller_timeout" => &mut options.controller_timeout,
                "cancel_timeout" => &mut options.cancel_timeout,
                "preempt_grace" => &mut options.preempt_grace,
                _ => return Err(resources::unknown_key(key, OPTION_KEYS)),
            };
            *slot = seconds(key, v)?;
        }
        Ok(options)
    }

    pub(crate) fn cli(&self) -> SlurmCli {
        SlurmCli {
            bin_dir: self.bin_dir.clone(),
            slurm_conf: self.slurm_conf.clone(),
        }
    }
}

fn seconds(key: &str, v: &Value) -> Result<Duration, SlurmError> {
    let full = format!("slurm.{key}");
    let secs = v.as_f64().ok_or_else(|| {
        SlurmError::config(
            &full,
            format!("expected seconds (a number), found {}", resources::kind(v)),
        )
    })?;
    if !(secs.is_finite() && secs > 0.0 && secs < 1e7) {
        return Err(SlurmError::config(
            &full,
            format!("{secs} is not a positive number of seconds"),
        ));
    }
    Ok(Duration::from_secs_f64(secs))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn options_read_the_slurm_mapping() {
        let o = SlurmOptions::from_value(
            &json!({"partition": "gpu", "query_interval": 0.5, "sentinel_grace": 2}),
        )
        .unwrap();
        assert_eq!(o.settings.partition.as_deref(), Some("gpu"));
        assert_eq!(o.query_interval, Duration::from_millis(500));
        assert_eq!(o.sentinel_grace, Duration::from_secs(2));
        assert_eq!(o.poll_interval, SlurmOptions::default().poll_interval);
        let err = SlurmOptions::from_value(&json!({"query_interval": "5s"}))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("slurm.query_interval") && err.contains("seconds"),
            "{err}"
        );
        let err = SlurmOptions::from_value(&json!({"query_interval": -1}))
            .unwrap_err()
            .to_string();
        assert!(err.contains("slurm.query_interval"), "{err}");
        let err = SlurmOptions::from_value(&json!({"nodes": 2}))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("slurm.nodes") && err.contains("query_interval"),
            "{err}"
        );
    }
}
