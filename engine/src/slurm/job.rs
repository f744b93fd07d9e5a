//! What to run ([`SlurmJobSpec`]), how it went ([`JobOutcome`]) and what happened on the
//! way ([`JobEvent`]).

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use super::resources::{SlurmResources, SlurmSettings};
use super::SlurmError;

/// One stage to run on Slurm.
#[derive(Debug, Clone)]
pub struct SlurmJobSpec {
    /// The run this stage belongs to (part of the job name).
    pub run_id: String,
    /// The stage's name (part of the job name).
    pub stage: String,
    /// The stage's Slurm directory: record, scripts, logs and sentinels go here. It must
    /// be on a filesystem the compute nodes share. Keep it stable for a stage (e.g. keyed
    /// by the stage's cache key) so a restarted tureen finds the record and re-attaches.
    pub dir: PathBuf,
    /// The program and arguments `srun` starts on each node.
    pub command: Vec<String>,
    /// Exported in the batch script (the job also inherits the submitting environment).
    pub env: BTreeMap<String, String>,
    /// What each attempt asks of Slurm (nodes, GPUs, CPUs, memory, time).
    pub resources: SlurmResources,
    /// Further attempts after the first fails (non-zero exit, node failure, died).
    pub retries: u32,
}

impl SlurmJobSpec {
    /// The usual job: `PROGRAM stage-exec --job JOB_FILE`, with its Slurm files next to
    /// the job file. `program` (tureen, or a kind's worker such as `tureen-torch`, which
    /// has no `--store` option: the job file names the store) and `job_file` should be
    /// absolute paths that the compute nodes see (on a shared filesystem).
    pub fn stage_exec(run_id: &str, stage: &str, program: &Path, job_file: &Path) -> Self {
        let path = |p: &Path| p.to_string_lossy().into_owned();
        SlurmJobSpec {
            run_id: run_id.to_string(),
            stage: stage.to_string(),
            dir: job_file
                .parent()
                .map(Path::to_path_buf)
                .unwrap_or_else(|| PathBuf::from(".")),
            command: vec![
                path(program),
                "stage-exec".to_string(),
                "--job".to_string(),
                path(job_file),
            ],
            env: BTreeMap::new(),
            resources: SlurmResources::default(),
            retries: 0,
        }
    }

    /// `tureen-<run id>-<stage>`, with anything but letters, digits, `.`, `_` and `-`
    /// replaced by `_` (job names travel through shells and `squeue` columns).
    pub fn job_name(&self) -> String {
        let raw = format!("tureen-{}-{}", self.run_id, self.stage);
        raw.chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || "._-".contains(c) {
                    c
                } else {
                    '_'
                }
            })
            .collect()
    }

    /// The sbatch arguments of this job (without the script).
    pub fn sbatch_args(&self, settings: &SlurmSettings) -> Result<Vec<String>, SlurmError> {
        let dir = self.dir.to_str().ok_or_else(|| {
            SlurmError::config("dir", format!("{} is not valid UTF-8", self.dir.display()))
        })?;
        // `%` starts a filename pattern in --output; `%%` is a literal one.
        let pattern_dir = dir.replace('%', "%%");
        let mut args = vec![
            "--parsable".to_string(),
            format!("--job-name={}", self.job_name()),
            format!("--output={pattern_dir}/slurm-%j.log"),
            // tureen retries failed attempts itself (up to the stage's `retries`, at once);
            // Slurm's own requeue would hold the job for minutes and ignore `retries`.
            // `slurm.sbatch_args: ["--requeue"]` gives the decision back to the cluster.
            "--no-requeue".to_string(),
            // A requeued job appends to its log instead of overwriting the first run's.
            "--open-mode=append".to_string(),
            format!("--chdir={dir}"),
        ];
        args.extend(self.resources.sbatch_args()?);
        args.extend(settings.sbatch_args());
        Ok(args)
    }
}

/// How a stage's Slurm job ended, once tureen has its exit code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobOutcome {
    /// The last attempt's job id.
    pub job_id: String,
    /// The job name every attempt was submitted under (`tureen-<run-id>-<stage>`).
    pub job_name: String,
    /// The stage's exit code in the last attempt (0: success).
    pub exit_code: i32,
    /// The nodes it ran on (`SLURM_JOB_NODELIST`).
    pub nodes: String,
    /// The last attempt's stdout+stderr.
    pub log_path: PathBuf,
    /// Attempts made (1 + retries used).
    pub attempts: u32,
    /// Job ids of the earlier attempts, oldest first.
    pub previous_jobs: Vec<String>,
    /// True when this tureen found the job already submitted (by an earlier tureen).
    pub reattached: bool,
}

impl JobOutcome {
    /// Whether the stage exited 0 in the last attempt.
    pub fn success(&self) -> bool {
        self.exit_code == 0
    }
}

/// Progress worth telling the user about, handed to [`run_job`](super::run_job)'s observer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobEvent {
    /// `sbatch` accepted a new job for an attempt, and its job record is written.
    Submitted {
        /// Slurm's id of the new job, as `sbatch --parsable` printed it (digits, any
        /// `;cluster` suffix dropped).
        job_id: String,
        /// The job name it was submitted under (`tureen-<run-id>-<stage>`).
        job_name: String,
        /// Which attempt this job is (1 for the first).
        attempt: u32,
        /// Where the job's stdout and stderr will appear (`slurm-<id>.log`).
        log: PathBuf,
    },
    /// An unfinished job record was found in the stage's directory: this tureen waits
    /// for the job an earlier one submitted instead of submitting another.
    Reattached {
        /// Slurm's id of the job found.
        job_id: String,
        /// The job name it was submitted under.
        job_name: String,
        /// The attempt that job is, as recorded.
        attempt: u32,
    },
    /// The job's state changed (`PENDING` -> `RUNNING`, ...).
    State {
        /// Slurm's id of the job.
        job_id: String,
        /// The new state as Slurm names it (`RUNNING`), or `UNKNOWN` when the
        /// controller no longer knows the job.
        state: String,
        /// Slurm's reason for the state (`Priority`, `Resources`), empty when none.
        reason: String,
    },
    /// Attempt `attempt - 1` failed; submitting attempt `attempt`.
    Retrying {
        /// Slurm's id of the job that failed (or vanished).
        failed_job: String,
        /// The attempt about to be submitted.
        attempt: u32,
        /// Why the failed job counts as failed (`exit code 1`, `ended NODE_FAIL
        /// without an exit code`, ...).
        why: String,
    },
    /// tureen was interrupted and is `scancel`ing the job.
    Cancelling {
        /// Slurm's id of the job being cancelled.
        job_id: String,
    },
}

impl fmt::Display for JobEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JobEvent::Submitted {
                job_id,
                job_name,
                attempt,
                log,
            } => {
                write!(
                    f,
                    "submitted Slurm job {job_id} ({job_name}, attempt {attempt}); log {}",
                    log.display()
                )
            }
            JobEvent::Reattached {
                job_id,
                job_name,
                attempt,
            } => {
                write!(f, "re-attached to Slurm job {job_id} ({job_name}, attempt {attempt}) submitted earlier")
            }
            JobEvent::State {
                job_id,
                state,
                reason,
            } if reason.is_empty() => write!(f, "Slurm job {job_id}: {state}"),
            JobEvent::State {
                job_id,
                state,
                reason,
            } => write!(f, "Slurm job {job_id}: {state} ({reason})"),
            JobEvent::Retrying {
                failed_job,
                attempt,
                why,
            } => {
                write!(
                    f,
                    "Slurm job {failed_job} failed ({why}); retrying as attempt {attempt}"
                )
            }
            JobEvent::Cancelling { job_id } => {
                write!(f, "interrupted: cancelling Slurm job {job_id} (scancel)")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_name_ties_the_job_to_run_and_stage() {
        let spec = SlurmJobSpec::stage_exec(
            "20261122-2215-ab12",
            "core/seed 1",
            Path::new("/opt/tureen"),
            Path::new("/shared/.tureen/slurm/k/job.json"),
        );
        assert_eq!(spec.job_name(), "tureen-20261122-2215-ab12-core_seed_1");
        assert_eq!(spec.dir, Path::new("/shared/.tureen/slurm/k"));
        assert_eq!(
            spec.command,
            [
                "/opt/tureen",
                "stage-exec",
                "--job",
                "/shared/.tureen/slurm/k/job.json"
            ]
        );
    }

    #[test]
    fn sbatch_args_name_the_job_log_and_resources() {
        let mut spec =
            SlurmJobSpec::stage_exec("r1", "train", Path::new("/t"), Path::new("/s/50%/job.json"));
        spec.resources = SlurmResources {
            nodes: 2,
            tasks_per_node: 4,
            step_nodes: 2,
            gpus_per_node: 4,
            cpus_per_task: 16,
            mem_bytes: None,
            time: Some("1:00:00".into()),
        };
        let settings = SlurmSettings {
            partition: Some("gpu".into()),
            account: Some("proj".into()),
            ..Default::default()
        };
        assert_eq!(
            spec.sbatch_args(&settings).unwrap(),
            [
                "--parsable",
                "--job-name=tureen-r1-train",
                "--output=/s/50%%/slurm-%j.log",
                "--no-requeue",
                "--open-mode=append",
                "--chdir=/s/50%",
                "--nodes=2",
                "--ntasks-per-node=4",
                "--gpus-per-node=4",
                "--cpus-per-task=16",
                "--time=1:00:00",
                "--partition=gpu",
                "--account=proj",
            ]
        );
    }

    #[test]
    fn events_read_as_sentences() {
        let e = JobEvent::Retrying {
            failed_job: "12".into(),
            attempt: 2,
            why: "ended NODE_FAIL without an exit code".into(),
        };
        assert_eq!(
            e.to_string(),
            "Slurm job 12 failed (ended NODE_FAIL without an exit code); retrying as attempt 2"
        );
        let e = JobEvent::State {
            job_id: "12".into(),
            state: "PENDING".into(),
            reason: "Resources".into(),
        };
        assert_eq!(e.to_string(), "Slurm job 12: PENDING (Resources)");
    }
}
