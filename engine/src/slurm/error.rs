//! Errors of the Slurm executor. Each names the command or file involved and, for a
//! failed command, what it printed on stderr, so the message alone says what to fix.

use std::path::PathBuf;

/// Anything that kept a stage from running to an exit code on Slurm.
///
/// A stage that ran and exited non-zero is *not* an error: it is a
/// [`JobOutcome`](super::JobOutcome) with a non-zero `exit_code`.
#[derive(Debug, thiserror::Error)]
pub enum SlurmError {
    /// A Slurm command could not be started at all (not installed, not on `PATH`).
    #[error("could not run `{command}`: {source} (is Slurm's client installed and on PATH?)")]
    Spawn {
        /// The command line, shell-quoted (`sbatch --parsable ...`).
        command: String,
        /// Why it could not be started (e.g. `NotFound`).
        #[source]
        source: std::io::Error,
    },

    /// A Slurm command ran and failed.
    #[error("`{command}` failed ({status}): {stderr}")]
    Command {
        /// The command line, shell-quoted.
        command: String,
        /// How it exited, as the OS reports it (`exit status: 1`).
        status: String,
        /// What it printed on stderr, trimmed; Slurm's explanation of the failure.
        stderr: String,
    },

    /// `sbatch --parsable` printed something that is not a job id.
    #[error("`{command}` printed no job id (stdout: {stdout:?}, stderr: {stderr:?})")]
    NoJobId {
        /// The `sbatch` command line, shell-quoted.
        command: String,
        /// What `sbatch` printed on stdout instead of an id.
        stdout: String,
        /// What `sbatch` printed on stderr, trimmed.
        stderr: String,
    },

    /// A resource or option cannot be expressed as an sbatch option.
    #[error("slurm option `{key}`: {message}")]
    Config {
        /// The offending key as written in the pipeline (`resources.time`,
        /// `slurm.poll_interval`, ...).
        key: String,
        /// What is wrong with its value.
        message: String,
    },

    /// Reading or writing one of the executor's files (job record, script, sentinel).
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory that could not be read or written.
        path: PathBuf,
        /// The underlying error (`InvalidData` for a record that does not parse).
        #[source]
        source: std::io::Error,
    },

    /// tureen was interrupted (the cancel flag was set) and cancelled the job.
    #[error("interrupted: cancelled Slurm job {job_id} ({job_name}) with scancel{}", final_state.as_deref().map(|s| format!("; its state is {s}")).unwrap_or_default())]
    Interrupted {
        /// Slurm's id of the cancelled job.
        job_id: String,
        /// Its Slurm job name (`tureen-<run-id>-<stage>`).
        job_name: String,
        /// The state Slurm reported once the job was no longer active (`CANCELLED`);
        /// `None` if it vanished from the controller or stayed active past the cancel
        /// timeout.
        final_state: Option<String>,
    },

    /// The job was cancelled by someone else (`scancel` by hand, an admin, a time
    /// limit on the reservation). Not retried: somebody chose to stop it.
    #[error(
        "Slurm job {} ({}) was cancelled outside tureen (state {}{}) before the stage finished; log: {}",
        .0.job_id,
        .0.job_name,
        .0.state,
        reason_suffix(&.0.reason),
        .0.log.display()
    )]
    CancelledOutside(Box<EndedJob>),

    /// The job ended without writing its exit-code file: killed by a time or memory
    /// limit, a node failure, or it vanished from the controller. Raised once the
    /// stage's retries are used up.
    #[error(
        "Slurm job {} ({}) ended in state {}{} without writing its exit-code file {} (the job \
         died before the stage finished); attempts: {}; log: {}",
        .0.job_id,
        .0.job_name,
        .0.state,
        reason_suffix(&.0.reason),
        .0.sentinel.display(),
        .0.attempts,
        .0.log.display()
    )]
    JobDied(Box<EndedJob>),

    /// The controller did not answer for longer than
    /// [`SlurmOptions::controller_timeout`](super::SlurmOptions::controller_timeout).
    #[error(
        "Slurm controller unreachable for {secs} s while waiting for job {job_id}: {last_error}"
    )]
    ControllerUnreachable {
        /// Slurm's id of the job being waited for (it may still be running).
        job_id: String,
        /// Whole seconds since the controller last answered.
        secs: u64,
        /// The last query's error, rendered.
        last_error: String,
    },
}

/// A job that ended without an exit code: what Slurm said about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndedJob {
    /// Slurm's id of the job (the last attempt's).
    pub job_id: String,
    /// Its Slurm job name (`tureen-<run-id>-<stage>`).
    pub job_name: String,
    /// Slurm's final state (`CANCELLED`, `NODE_FAIL`, `TIMEOUT`, `UNKNOWN` when no command
    /// knows the job any more).
    pub state: String,
    /// Slurm's reason, empty when it gave none.
    pub reason: String,
    /// The exit-code file the job did not write.
    pub sentinel: PathBuf,
    /// The job's stdout and stderr.
    pub log: PathBuf,
    /// Attempts made, this one included.
    pub attempts: u32,
}

fn reason_suffix(reason: &str) -> String {
    if reason.is_empty() || reason == "None" {
        String::new()
    } else {
        format!(", reason {reason}")
    }
}

impl SlurmError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        SlurmError::Io {
            path: path.into(),
            source,
        }
    }

    pub(crate) fn config(key: &str, message: impl Into<String>) -> Self {
        SlurmError::Config {
            key: key.to_string(),
            message: message.into(),
        }
    }
}
