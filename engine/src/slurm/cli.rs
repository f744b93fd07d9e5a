//! Running Slurm's client commands (`sbatch`, `squeue`, `scontrol`, `sacct`, `scancel`).
//!
//! Plain `std::process::Command`: the commands are the stable interface of every Slurm
//! installation, and their errors (with stderr) go straight into [`SlurmError`]s.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use super::state::{self, JobInfo};
use super::SlurmError;

/// Where the Slurm commands are found.
#[derive(Debug, Clone, Default)]
pub struct SlurmCli {
    /// A directory holding `sbatch` etc.; `None` searches `PATH`.
    pub bin_dir: Option<PathBuf>,
    /// `SLURM_CONF` for the commands (and so for the jobs they submit); `None` inherits
    /// tureen's environment.
    pub slurm_conf: Option<PathBuf>,
}

/// What a command printed.
pub struct Output {
    pub stdout: String,
    pub stderr: String,
    pub success: bool,
    pub status: String,
}

impl SlurmCli {
    fn program(&self, name: &str) -> PathBuf {
        match &self.bin_dir {
            Some(dir) => dir.join(name),
            None => PathBuf::from(name),
        }
    }

    /// Runs `name args...`, feeding `stdin` when given. Only failing to start is an error
    /// here; callers decide what a non-zero exit means.
    pub fn run(
        &self,
        name: &str,
        args: &[String],
        stdin: Option<&[u8]>,
    ) -> Result<Output, SlurmError> {
        let mut cmd = Command::new(self.program(name));
        if let Some(conf) = &self.slurm_conf {
            cmd.env("SLURM_CONF", conf);
        }
        cmd.args(args)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let spawn_err = |source| SlurmError::Spawn {
            command: display(name, args),
            source,
        };
        let mut child = cmd.spawn().map_err(spawn_err)?;
        if let Some(input) = stdin {
            let mut pipe = child.stdin.take().expect("stdin was piped");
            // A command that exits early closes the pipe; its stderr then says why.
            let _ = pipe.write_all(input);
        }
        let out = child.wait_with_output().map_err(spawn_err)?;
        Ok(Output {
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            success: out.status.success(),
            status: out.status.to_string(),
        })
    }

    /// Like [`run`](Self::run), but a non-zero exit is a [`SlurmError::Command`].
    pub fn run_ok(
        &self,
        name: &str,
        args: &[String],
        stdin: Option<&[u8]>,
    ) -> Result<Output, SlurmError> {
        let out = self.run(name, args, stdin)?;
        if out.success {
            Ok(out)
        } else {
            Err(SlurmError::Command {
                command: display(name, args),
                status: out.status,
                stderr: out.stderr,
            })
        }
    }

    /// `sbatch --parsable ARGS < script`: the new job's id.
    pub fn submit(&self, args: &[String], script: &str) -> Result<String, SlurmError> {
        let out = self.run_ok("sbatch", args, Some(script.as_bytes()))?;
        // `--parsable` prints `ID` or `ID;CLUSTER`.
        let id = out
            .stdout
            .trim()
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_string();
        if id.is_empty() || !id.bytes().all(|b| b.is_ascii_digit()) {
            return Err(SlurmError::NoJobId {
                command: display("sbatch", args),
                stdout: out.stdout,
                stderr: out.stderr,
            });
        }
        Ok(id)
    }

    /// The controller's view of `job_id`: `squeue` first (cheap, and it lists recently
    /// finished jobs with `-t all`), `scontrol show job` for details of an ended job, and
    /// `sacct` when the controller has forgotten the job (if accounting is configured).
    ///
    /// `Ok(None)`: no command knows the job. `Err`: the controller could not be asked.
    pub fn query(&self, job_id: &str) -> Result<Option<JobInfo>, SlurmError> {
        let squeue_args = args(&["-h", "-t", "all", "-j", job_id, "-o", "%T|%N|%r"]);
        let out = self.run("squeue", &squeue_args, None)?;
        let from_squeue = if out.success {
            out.stdout.lines().find_map(state::parse_squeue_line)
        } else if is_unknown_job(&out.stderr) {
            None
        } else {
            return Err(SlurmError::Command {
                command: display("squeue", &squeue_args),
                status: out.status,
                stderr: out.stderr,
            });
        };
        if let Some(info) = &from_squeue {
            if matches!(
                info.state.disposition(),
                state::Disposition::Active | state::Disposition::Preempted
            ) {
                return Ok(from_squeue);
            }
        }
        // Ended or not listed: scontrol has the exit code and the reason.
        let scontrol_args = args(&["show", "job", "-o", job_id]);
        let out = self.run("scontrol", &scontrol_args, None)?;
        if out.success {
            if let Some(info) = state::parse_scontrol(&out.stdout) {
                return Ok(Some(info));
            }
        } else if !is_unknown_job(&out.stderr) && from_squeue.is_none() {
            return Err(SlurmError::Command {
                command: display("scontrol", &scontrol_args),
                status: out.status,
                stderr: out.stderr,
            });
        }
        if from_squeue.is_some() {
            return Ok(from_squeue);
        }
        Ok(self.sacct(job_id))
    }

    /// `sacct`'s record of a job, if accounting is configured (it needs slurmdbd, which
    /// many clusters lack); any failure means "unknown".
    fn sacct(&self, job_id: &str) -> Option<JobInfo> {
        let out = self
            .run(
                "sacct",
                &args(&[
                    "-n",
                    "-P",
                    "-X",
                    "-j",
                    job_id,
                    "-o",
                    "State,ExitCode,NodeList",
                ]),
                None,
            )
            .ok()?;
        if !out.success {
            return None;
        }
        state::parse_sacct(&out.stdout)
    }

    /// `scancel JOB_ID`. Cancelling a job that already ended is not an error.
    pub fn cancel(&self, job_id: &str) -> Result<(), SlurmError> {
        let a = args(&[job_id]);
        let out = self.run("scancel", &a, None)?;
        if out.success
            || out.stderr.contains("already completing or completed")
            || is_unknown_job(&out.stderr)
        {
            Ok(())
        } else {
            Err(SlurmError::Command {
                command: display("scancel", &a),
                status: out.status,
                stderr: out.stderr,
            })
        }
    }
}

/// Slurm's wording for a job id the controller no longer (or never) knew.
fn is_unknown_job(stderr: &str) -> bool {
    stderr.contains("Invalid job id")
}

fn args(a: &[&str]) -> Vec<String> {
    a.iter().map(|s| s.to_string()).collect()
}

/// `name arg1 arg2` for messages.
pub fn display(name: &str, args: &[String]) -> String {
    let mut s = name.to_string();
    for a in args {
        s.push(' ');
        s.push_str(&super::script::quote(a));
    }
    s
}
