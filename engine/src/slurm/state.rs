//! Slurm job states as `squeue`, `scontrol` and `sacct` print them, and what each means
//! for a waiting tureen.
//!
//! Completion itself is never taken from these states: the job's exit-code file (the
//! sentinel) is the one source of truth for "the stage finished with code N". States
//! only tell whether a job without a sentinel is still on its way (keep waiting), died in
//! a way worth another attempt (node failure), or was stopped on purpose.

use std::fmt;

/// A job state, as Slurm names it (`RUNNING`, `NODE_FAIL`, ...).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobState(String);

/// What a waiting tureen does about a job in some state (when it has no sentinel).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposition {
    /// Pending, running, completing, suspended or requeued: keep waiting.
    Active,
    /// Preempted: on clusters that requeue preempted jobs this passes (the job goes back
    /// to PENDING), so keep waiting; a job that stays preempted was not requeued and is
    /// retried like a node failure.
    Preempted,
    /// Ended normally or by its own failure (COMPLETED, FAILED, TIMEOUT, OUT_OF_MEMORY,
    /// DEADLINE): the sentinel should be there; without it, the job died.
    Ended,
    /// Ended because the machine under it failed (NODE_FAIL, BOOT_FAIL): worth submitting
    /// again, where the stage's retries allow.
    NodeFailure,
    /// Cancelled (by us or by someone else).
    Cancelled,
}

impl JobState {
    /// Parses the state column of `squeue -o %T`, `scontrol`'s `JobState=` or `sacct`'s
    /// `State` (which may say `CANCELLED by 1000`). `None` for an empty string.
    pub fn parse(text: &str) -> Option<JobState> {
        let word = text.split_whitespace().next()?;
        // squeue may append `+` to some states in compact forms; sacct never does for
        // the long names we ask for, but be lenient.
        let word = word.trim_end_matches('+');
        if word.is_empty() {
            return None;
        }
        Some(JobState(word.to_ascii_uppercase()))
    }

    /// The state's name (`RUNNING`).
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// What a waiting tureen should do about a job in this state.
    pub fn disposition(&self) -> Disposition {
        match self.0.as_str() {
            "PENDING" | "RUNNING" | "SUSPENDED" | "COMPLETING" | "CONFIGURING" | "REQUEUED"
            | "REQUEUE_HOLD" | "REQUEUE_FED" | "RESIZING" | "SIGNALING" | "STAGE_OUT"
            | "STOPPED" | "RESV_DEL_HOLD" | "SPECIAL_EXIT" => Disposition::Active,
            "PREEMPTED" => Disposition::Preempted,
            "NODE_FAIL" | "BOOT_FAIL" => Disposition::NodeFailure,
            "CANCELLED" | "REVOKED" => Disposition::Cancelled,
            // COMPLETED, FAILED, TIMEOUT, OUT_OF_MEMORY, DEADLINE and anything new.
            _ => Disposition::Ended,
        }
    }
}

impl fmt::Display for JobState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What the controller knows about a job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobInfo {
    /// The job's current state (`RUNNING`, `NODE_FAIL`, ...).
    pub state: JobState,
    /// Allocated nodes (`NodeList`), empty while pending.
    pub nodes: String,
    /// Why it is in this state (`Reason=`), `None`/empty when there is nothing to say.
    pub reason: String,
    /// `ExitCode=` of the batch script as `code:signal`, when known.
    pub exit_code: Option<String>,
}

/// Parses one line of `squeue -h -t all -j ID -o '%T|%N|%r'`.
pub fn parse_squeue_line(line: &str) -> Option<JobInfo> {
    let mut fields = line.trim().splitn(3, '|');
    let state = JobState::parse(fields.next()?)?;
    let nodes = fields.next().unwrap_or("").trim().to_string();
    let reason = fields.next().unwrap_or("").trim().to_string();
    Some(JobInfo {
        state,
        nodes: clean_nodes(nodes),
        reason: clean_reason(reason),
        exit_code: None,
    })
}

/// Parses `scontrol show job -o ID` (one line of `Key=Value` pairs).
pub fn parse_scontrol(text: &str) -> Option<JobInfo> {
    let line = text.lines().find(|l| l.contains("JobState="))?;
    let value = |key: &str| {
        line.split_whitespace()
            .find_map(|tok| tok.strip_prefix(key).and_then(|v| v.strip_prefix('=')))
    };
    let state = JobState::parse(value("JobState")?)?;
    Some(JobInfo {
        state,
        nodes: clean_nodes(value("NodeList").unwrap_or("").to_string()),
        reason: clean_reason(value("Reason").unwrap_or("").to_string()),
        exit_code: value("ExitCode").map(str::to_string),
    })
}

/// Parses `sacct -n -P -X -j ID -o State,ExitCode,NodeList` (the allocation's line).
pub fn parse_sacct(text: &str) -> Option<JobInfo> {
    let line = text.lines().find(|l| !l.trim().is_empty())?;
    let mut fields = line.split('|');
    let state = JobState::parse(fields.next()?)?;
    let exit_code = fields
        .next()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty());
    let nodes = clean_nodes(fields.next().unwrap_or("").trim().to_string());
    Some(JobInfo {
        state,
        nodes,
        reason: String::new(),
        exit_code,
    })
}

fn clean_nodes(nodes: String) -> String {
    match nodes.as_str() {
        "(null)" | "None" | "None assigned" => String::new(),
        _ => nodes,
    }
}

fn clean_reason(reason: String) -> String {
    match reason.as_str() {
        "None" | "(null)" => String::new(),
        _ => reason,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn running_and_requeued_jobs_are_still_active() {
        for s in [
            "PENDING",
            "RUNNING",
            "COMPLETING",
            "REQUEUED",
            "SUSPENDED",
            "CONFIGURING",
        ] {
            assert_eq!(
                JobState::parse(s).unwrap().disposition(),
                Disposition::Active,
                "{s}"
            );
        }
        assert_eq!(
            JobState::parse("PREEMPTED").unwrap().disposition(),
            Disposition::Preempted
        );
    }

    #[test]
    fn node_failures_are_retryable_and_cancellations_are_not() {
        assert_eq!(
            JobState::parse("NODE_FAIL").unwrap().disposition(),
            Disposition::NodeFailure
        );
        assert_eq!(
            JobState::parse("BOOT_FAIL").unwrap().disposition(),
            Disposition::NodeFailure
        );
        assert_eq!(
            JobState::parse("CANCELLED by 0").unwrap().disposition(),
            Disposition::Cancelled
        );
        for s in [
            "COMPLETED",
            "FAILED",
            "TIMEOUT",
            "OUT_OF_MEMORY",
            "DEADLINE",
            "SOMETHING_NEW",
        ] {
            assert_eq!(
                JobState::parse(s).unwrap().disposition(),
                Disposition::Ended,
                "{s}"
            );
        }
    }

    #[test]
    fn empty_state_is_none() {
        assert_eq!(JobState::parse(""), None);
        assert_eq!(JobState::parse("   "), None);
    }

    #[test]
    fn squeue_line_gives_state_nodes_and_reason() {
        let info = parse_squeue_line("RUNNING|vm|None\n").unwrap();
        assert_eq!(info.state.as_str(), "RUNNING");
        assert_eq!(info.nodes, "vm");
        assert_eq!(info.reason, "");
        let pending = parse_squeue_line("PENDING||Resources").unwrap();
        assert_eq!(pending.nodes, "");
        assert_eq!(pending.reason, "Resources");
        assert_eq!(parse_squeue_line(""), None);
    }

    #[test]
    fn scontrol_one_line_output_is_parsed() {
        // As printed by Slurm 22.05's `scontrol show job -o` (abridged).
        let text = "JobId=7 JobName=tureen-r1-core UserId=root(0) GroupId=root(0) MCS_label=N/A \
            Priority=4294901754 Nice=0 Account=(null) QOS=(null) JobState=CANCELLED Reason=None \
            Dependency=(null) Requeue=1 Restarts=0 BatchFlag=1 Reboot=0 ExitCode=0:15 \
            RunTime=00:00:03 TimeLimit=UNLIMITED NodeList=vm BatchHost=vm NumNodes=1 \
            TresPerNode=gres:gpu:1\n";
        let info = parse_scontrol(text).unwrap();
        assert_eq!(info.state.as_str(), "CANCELLED");
        assert_eq!(info.nodes, "vm");
        assert_eq!(info.reason, "");
        assert_eq!(info.exit_code.as_deref(), Some("0:15"));
        assert_eq!(
            parse_scontrol("slurm_load_jobs error: Invalid job id specified"),
            None
        );
    }

    #[test]
    fn scontrol_pending_job_has_no_nodes() {
        let text = "JobId=9 JobState=PENDING Reason=Priority NodeList=(null) ExitCode=0:0";
        let info = parse_scontrol(text).unwrap();
        assert_eq!(info.nodes, "");
        assert_eq!(info.reason, "Priority");
    }

    #[test]
    fn sacct_parsable_line_is_parsed() {
        let info = parse_sacct("NODE_FAIL|0:0|node17\n").unwrap();
        assert_eq!(info.state.disposition(), Disposition::NodeFailure);
        assert_eq!(info.nodes, "node17");
        assert_eq!(info.exit_code.as_deref(), Some("0:0"));
        let cancelled = parse_sacct("CANCELLED by 1000|0:15|None assigned").unwrap();
        assert_eq!(cancelled.state.as_str(), "CANCELLED");
        assert_eq!(cancelled.nodes, "");
    }
}
