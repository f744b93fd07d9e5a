//! The Slurm executor: runs one resolved stage as a Slurm batch job and waits for it.
//!
//! [`run_job`] is the whole interface. Given a [`SlurmJobSpec`] (what to run, where its
//! files go, what it needs) it
//!
//! 1. maps the stage's resources to `sbatch` options ([`SlurmResources`],
//!    [`SlurmSettings`]),
//! 2. writes a batch script that runs the command (normally
//!    `tureen stage-exec --job FILE`, see [`SlurmJobSpec::stage_exec`]) with `srun` on
//!    the allocation and then leaves an exit-code file (the *sentinel*) behind,
//! 3. submits it with `sbatch --parsable`, script on stdin, job name
//!    `tureen-<run id>-<stage>`,
//! 4. records the job id in `slurm-job.json` **before** waiting, so a tureen that is
//!    restarted re-attaches to the running job instead of submitting a second one,
//! 5. waits: the sentinel says when and how the stage ended; `squeue`/`scontrol` (and
//!    `sacct` where accounting exists) are asked only to notice a job that ended without
//!    one. Pending, requeued and (for a while, see [`SlurmOptions::preempt_grace`])
//!    preempted jobs count as running. A node failure (`NODE_FAIL`, `BOOT_FAIL`), a job
//!    that died (time limit, out of memory, vanished) and a stage that exited non-zero
//!    are submitted again, at once, while the stage's `retries` allow. A job cancelled by
//!    someone else is reported, not retried.
//! 6. on interrupt (the `cancel` flag), runs `scancel` and waits until Slurm says the job
//!    is gone.
//!
//! Jobs are submitted with `--no-requeue`: tureen owns retries (Slurm's own requeue
//! holds a job for minutes and knows nothing of `retries`). A cluster that preempts by
//! requeueing can have that back with `slurm.sbatch_args: ["--requeue"]`; the job then
//! keeps its id and tureen simply keeps waiting.
//!
//! The sentinel is written by the batch script only when every task (one per node)
//! recorded its own exit, because `srun` itself may exit 0 when a node under it fails.
//!
//! Notes for callers:
//! - Before calling [`run_job`], check [`pending_job`]: if it returns a record, the call
//!   will re-attach to that job (which may even have finished already), so files the job
//!   writes (e.g. a result file next to the job file) must not be removed first.
//! - Inside the allocation Slurm sets `CUDA_VISIBLE_DEVICES` (and `SLURM_JOB_GPUS`) to the
//!   GPUs it granted; whatever runs the stage there should pass those on rather than
//!   hand out GPUs of its own.
//!
//! All files live in the stage's Slurm directory ([`SlurmJobSpec::dir`]), which must be
//! on a filesystem the compute nodes share (like the store):
//!
//! ```text
//! slurm-job.json        the job record (job id, attempt, finished?)
//! slurm-attempt-N.sh    the batch script of attempt N, for a person to read or resubmit
//! slurm-<id>.log        the job's stdout and stderr
//! slurm-<id>.exit       the sentinel: exit_code=, nodes=, restarts=
//! ```

mod cli;
#[cfg(test)]
mod cluster_tests;
mod error;
mod gpus;
mod job;
mod options;
mod record;
mod resources;
mod run;
mod script;
mod state;

pub use cli::SlurmCli;
pub use error::{EndedJob, SlurmError};
pub use gpus::{allocated_gpus, parse_gpu_list};
pub use job::{JobEvent, JobOutcome, SlurmJobSpec};
pub use options::{SlurmOptions, OPTION_KEYS};
pub use record::{JobRecord, RECORD_FILE};
pub use resources::{SlurmResources, SlurmSettings, SETTINGS_KEYS};
pub use run::{pending_job, run_job};
pub use script::{log_name, parse_sentinel, sentinel_name, Sentinel};
pub use state::{Disposition, JobInfo, JobState};
