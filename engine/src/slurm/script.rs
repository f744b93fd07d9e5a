//! The batch script tureen hands to `sbatch` on stdin.
//!
//! It runs the stage's tasks with `srun` inside the allocation (one per rank of a
//! data-parallel stage, else one on the first node), then
//! writes the exit code, with the node list, to `slurm-<job id>.exit` in the stage's
//! Slurm directory: written to a temporary name, synced, and renamed, so a waiting tureen
//! sees either no file or a complete one. A job killed before that point (scancel, a
//! time limit, a node failure) leaves no such file, which is how tureen tells "the stage
//! failed" (exit code in the file) from "the job died" (no file, see the job's state).

use std::collections::BTreeMap;
use std::path::Path;

use super::SlurmError;

/// The file a finished job leaves behind for `job_id`, in the stage's Slurm directory.
pub fn sentinel_name(job_id: &str) -> String {
    format!("slurm-{job_id}.exit")
}

/// The job's stdout+stderr log for `job_id`.
pub fn log_name(job_id: &str) -> String {
    format!("slurm-{job_id}.log")
}

/// What goes into one batch script.
#[derive(Debug, Clone)]
pub struct ScriptSpec<'a> {
    /// The stage's Slurm directory, on a filesystem the compute nodes share.
    pub dir: &'a Path,
    /// The program and its arguments, run by `srun` as each of the stage's tasks.
    pub command: &'a [String],
    /// Exported before `srun` (the job otherwise inherits the submitting environment).
    pub env: &'a BTreeMap<String, String>,
    /// The nodes the stage's tasks span (`srun --nodes`): the allocation's for a
    /// data-parallel stage, 1 for a stage of one process.
    pub nodes: u32,
    /// Tasks on each node: the ranks of a data-parallel stage, else 1.
    pub tasks_per_node: u32,
    /// `--cpus-per-task`, repeated on `srun`: since Slurm 22.05 a step no longer inherits
    /// it from the allocation.
    pub cpus_per_task: u32,
    /// 1 for the first submission, 2 for the first retry, ...
    pub attempt: u32,
    /// The `sbatch` command line, recorded in a comment so a person can resubmit by hand.
    pub sbatch_command: &'a str,
}

/// Builds the script. Paths and arguments are single-quoted for the shell, so any
/// bytes but NUL are safe; environment variable names must be shell identifiers.
pub fn build(spec: &ScriptSpec<'_>) -> Result<String, SlurmError> {
    if spec.command.is_empty() {
        return Err(SlurmError::config(
            "command",
            "the job has no command to run",
        ));
    }
    let dir = spec.dir.to_str().ok_or_else(|| {
        SlurmError::config("dir", format!("{} is not valid UTF-8", spec.dir.display()))
    })?;
    for (name, value) in spec.env {
        if !is_identifier(name) {
            return Err(SlurmError::config(
                &format!("env.{name}"),
                "not a valid environment variable name",
            ));
        }
        if value.contains('\0') {
            return Err(SlurmError::config(
                &format!("env.{name}"),
                "value contains a NUL byte",
            ));
        }
    }
    if spec.command.iter().any(|a| a.contains('\0')) {
        return Err(SlurmError::config(
            "command",
            "an argument contains a NUL byte",
        ));
    }

    let mut s = String::new();
    s.push_str("#!/bin/bash\n");
    s.push_str("# Written by tureen: runs one stage on Slurm (attempt ");
    s.push_str(&spec.attempt.to_string());
    s.push_str(").\n# Submitted as: ");
    s.push_str(&spec.sbatch_command.replace('\n', " "));
    s.push_str(" < this-script\n");
    s.push_str(
        "# tureen waits for slurm-$SLURM_JOB_ID.exit in the directory below; a job that ends\n",
    );
    s.push_str(
        "# without it died before the stage finished (cancelled, out of time, node failure).\n",
    );
    s.push_str(&format!("export TUREEN_SLURM_ATTEMPT={}\n", spec.attempt));
    for (name, value) in spec.env {
        s.push_str(&format!("export {name}={}\n", quote(value)));
    }
    s.push_str(&format!("dir={}\n", quote(dir)));
    s.push_str("export TUREEN_TASKS=\"$dir/slurm-$SLURM_JOB_ID.${SLURM_RESTART_COUNT:-0}.task\"\n");
    // Each task records its own exit code: srun itself may exit 0 when a node under it
    // fails, so "every task finished" is checked rather than trusted.
    s.push_str(&format!(
        "srun --nodes={n} --ntasks={tasks} --ntasks-per-node={t} --cpus-per-task={c} --kill-on-bad-exit=1 \\\n    \
         /bin/sh -c '\"$@\"; status=$?; echo \"$status\" > \"$TUREEN_TASKS-$SLURM_PROCID\"; exit \"$status\"' tureen-task",
        n = spec.nodes,
        t = spec.tasks_per_node.max(1),
        tasks = total_tasks(spec),
        c = spec.cpus_per_task
    ));
    for arg in spec.command {
        s.push(' ');
        s.push_str(&quote(arg));
    }
    s.push('\n');
    s.push_str("code=$?\n");
    s.push_str(&format!(
        "shopt -s nullglob\n\
         finished=(\"$TUREEN_TASKS\"-*)\n\
         rm -f \"${{finished[@]}}\"\n\
         if [ \"${{#finished[@]}}\" -ne {n} ]; then\n    \
         echo \"tureen: only ${{#finished[@]}} of {n} tasks finished (node failure?); no exit code recorded\" >&2\n    \
         exit 1\n\
         fi\n",
        n = total_tasks(spec)
    ));
    s.push_str("sentinel=\"$dir/slurm-$SLURM_JOB_ID.exit\"\n");
    s.push_str(
        "if printf 'exit_code=%s\\nnodes=%s\\nrestarts=%s\\n' \"$code\" \"${SLURM_JOB_NODELIST:-}\" \\\n    \
         \"${SLURM_RESTART_COUNT:-0}\" > \"$sentinel.tmp\"; then\n",
    );
    s.push_str("    sync \"$sentinel.tmp\" 2>/dev/null\n");
    s.push_str("    mv -f \"$sentinel.tmp\" \"$sentinel\"\n");
    s.push_str("fi\n");
    s.push_str("exit \"$code\"\n");
    Ok(s)
}

/// Every task of the job: `nodes x tasks_per_node` (each writes its own exit code).
fn total_tasks(spec: &ScriptSpec<'_>) -> u32 {
    spec.nodes.saturating_mul(spec.tasks_per_node.max(1))
}

/// What a finished job wrote in its sentinel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sentinel {
    /// The exit code of `srun` (the stage's exit code; 128+N when killed by signal N).
    pub exit_code: i32,
    /// `SLURM_JOB_NODELIST` of the allocation.
    pub nodes: String,
    /// How often Slurm had requeued the job before this run (`SLURM_RESTART_COUNT`).
    pub restarts: u32,
}

/// Parses a sentinel file's text. `None` if it is malformed (which the atomic rename
/// rules out for files this script wrote).
pub fn parse_sentinel(text: &str) -> Option<Sentinel> {
    let mut exit_code = None;
    let mut nodes = String::new();
    let mut restarts = 0;
    for line in text.lines() {
        match line.split_once('=') {
            Some(("exit_code", v)) => exit_code = v.trim().parse().ok(),
            Some(("nodes", v)) => nodes = v.trim().to_string(),
            Some(("restarts", v)) => restarts = v.trim().parse().unwrap_or(0),
            _ => {}
        }
    }
    Some(Sentinel {
        exit_code: exit_code?,
        nodes,
        restarts,
    })
}

/// Single-quotes `s` for bash: `'` becomes `'\''`.
pub fn quote(s: &str) -> String {
    if !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/._-=:,+@%".contains(&b))
    {
        return s.to_string();
    }
    format!("'{}'", s.replace('\'', "'\\''"))
}

fn is_identifier(name: &str) -> bool {
    let mut bytes = name.bytes();
    matches!(bytes.next(), Some(b) if b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec<'a>(command: &'a [String], env: &'a BTreeMap<String, String>) -> ScriptSpec<'a> {
        ScriptSpec {
            dir: Path::new("/shared/store/slurm/run 1/core"),
            command,
            env,
            nodes: 2,
            tasks_per_node: 1,
            cpus_per_task: 8,
            attempt: 3,
            sbatch_command: "sbatch --parsable --job-name=tureen-r1-core",
        }
    }

    #[test]
    fn a_data_parallel_stage_runs_one_task_per_rank_and_waits_for_every_one() {
        let command: Vec<String> = ["/opt/tureen-torch", "stage-exec"].map(String::from).into();
        let env = BTreeMap::new();
        let script = build(&ScriptSpec {
            tasks_per_node: 4,
            ..spec(&command, &env)
        })
        .unwrap();
        assert!(
            script.contains("srun --nodes=2 --ntasks=8 --ntasks-per-node=4 --cpus-per-task=8 "),
            "{script}"
        );
        assert!(
            script.contains("if [ \"${#finished[@]}\" -ne 8 ]; then"),
            "{script}"
        );
    }

    #[test]
    fn script_runs_the_command_with_srun_and_writes_the_sentinel_atomically() {
        let command: Vec<String> = ["/opt/tureen", "stage-exec", "--job", "/shared/job.json"]
            .map(String::from)
            .into();
        let env = BTreeMap::from([("TUREEN_STORE".to_string(), "/shared/store".to_string())]);
        let script = build(&spec(&command, &env)).unwrap();
        assert!(script.starts_with("#!/bin/bash\n"), "{script}");
        assert!(
            script.contains("export TUREEN_SLURM_ATTEMPT=3\n"),
            "{script}"
        );
        assert!(
            script.contains("export TUREEN_STORE=/shared/store\n"),
            "{script}"
        );
        assert!(
            script.contains(
                "srun --nodes=2 --ntasks=2 --ntasks-per-node=1 --cpus-per-task=8 --kill-on-bad-exit=1 \\\n    \
                 /bin/sh -c '\"$@\"; status=$?; echo \"$status\" > \"$TUREEN_TASKS-$SLURM_PROCID\"; exit \"$status\"' \
                 tureen-task /opt/tureen stage-exec --job /shared/job.json\n"
            ),
            "{script}"
        );
        // The directory has a space: it must be quoted.
        assert!(
            script.contains("dir='/shared/store/slurm/run 1/core'\n"),
            "{script}"
        );
        // No exit code unless every task (one per rank) recorded that it finished.
        assert!(
            script.contains("if [ \"${#finished[@]}\" -ne 2 ]; then"),
            "{script}"
        );
        // Written to a temporary name, then renamed: never half-visible.
        let write = script.find("> \"$sentinel.tmp\"").unwrap();
        let rename = script
            .find("mv -f \"$sentinel.tmp\" \"$sentinel\"")
            .unwrap();
        assert!(write < rename);
        assert!(script.trim_end().ends_with("exit \"$code\""), "{script}");
    }

    #[test]
    fn script_runs_under_bash_and_quotes_hostile_arguments() {
        let command: Vec<String> = ["/bin/echo", "it's", "$HOME", "a b", ""]
            .map(String::from)
            .into();
        let env = BTreeMap::from([("X".to_string(), "'; rm -rf / #".to_string())]);
        let script = build(&spec(&command, &env)).unwrap();
        assert!(
            script.contains("/bin/echo 'it'\\''s' '$HOME' 'a b' ''"),
            "{script}"
        );
        assert!(script.contains("export X=''\\''; rm -rf / #'"), "{script}");
        let status = std::process::Command::new("bash")
            .arg("-n")
            .arg("-c")
            .arg(&script)
            .status()
            .unwrap();
        assert!(status.success(), "bash -n rejects the script:\n{script}");
    }

    #[test]
    fn bad_env_names_and_empty_commands_are_rejected() {
        let command = vec!["/bin/true".to_string()];
        let env = BTreeMap::from([("NOT-A-NAME".to_string(), "x".to_string())]);
        let err = build(&spec(&command, &env)).unwrap_err().to_string();
        assert!(err.contains("env.NOT-A-NAME"), "{err}");
        let err = build(&spec(&[], &BTreeMap::new())).unwrap_err().to_string();
        assert!(err.contains("no command"), "{err}");
    }

    #[test]
    fn sentinel_text_is_parsed() {
        let s = parse_sentinel("exit_code=3\nnodes=node[1-2]\nrestarts=1\n").unwrap();
        assert_eq!(
            s,
            Sentinel {
                exit_code: 3,
                nodes: "node[1-2]".into(),
                restarts: 1
            }
        );
        assert_eq!(parse_sentinel("nodes=vm\n"), None);
        assert_eq!(parse_sentinel(""), None);
    }

    #[test]
    fn quoting_leaves_plain_words_alone() {
        assert_eq!(quote("/usr/bin/tureen"), "/usr/bin/tureen");
        assert_eq!(quote("--job=/a/b.json"), "--job=/a/b.json");
        assert_eq!(quote("a b"), "'a b'");
        assert_eq!(quote(""), "''");
    }
}
