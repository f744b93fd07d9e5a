//! The job record: which Slurm job runs a stage right now, written before tureen starts
//! waiting on it.
//!
//! A tureen that is killed (or loses its login node) while a job runs leaves the record
//! with `finished: false`; the next tureen handed the same stage directory re-attaches to
//! that job instead of submitting a second one. Once tureen has the job's outcome (or
//! cancelled it) the record is marked finished, so a later run submits afresh.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::SlurmError;

/// The record's file name in the stage's Slurm directory.
pub const RECORD_FILE: &str = "slurm-job.json";

/// One submitted job, as persisted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobRecord {
    /// Slurm's id of the job, as `sbatch --parsable` printed it (digits, any `;cluster`
    /// suffix dropped).
    pub job_id: String,
    /// The job name it was submitted under (`tureen-<run-id>-<stage>`).
    pub job_name: String,
    /// 1 for the first submission, 2 for the first retry, ...
    pub attempt: u32,
    /// Seconds since the Unix epoch at submission.
    pub submitted_at: u64,
    /// True once tureen has the job's outcome or cancelled it.
    pub finished: bool,
    /// Ids of the earlier attempts' jobs, oldest first (for the run record and logs).
    #[serde(default)]
    pub previous_jobs: Vec<String>,
}

impl JobRecord {
    /// Reads the record in `dir`, `None` if there is none.
    pub fn load(dir: &Path) -> Result<Option<JobRecord>, SlurmError> {
        let path = dir.join(RECORD_FILE);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(SlurmError::io(path, e)),
        };
        serde_json::from_str(&text).map(Some).map_err(|e| {
            SlurmError::io(
                path,
                std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("not a job record: {e}"),
                ),
            )
        })
    }

    /// Writes the record into `dir` atomically (temporary file, fsync, rename) and syncs
    /// the directory, so that after a crash there is either the old record or the new one.
    pub fn store(&self, dir: &Path) -> Result<PathBuf, SlurmError> {
        let path = dir.join(RECORD_FILE);
        let json = serde_json::to_vec_pretty(self).expect("a job record always serializes");
        let mut tmp = tempfile::Builder::new()
            .prefix(".slurm-job.")
            .suffix(".tmp")
            .tempfile_in(dir)
            .map_err(|e| SlurmError::io(dir, e))?;
        tmp.write_all(&json)
            .and_then(|_| tmp.write_all(b"\n"))
            .map_err(|e| SlurmError::io(tmp.path(), e))?;
        tmp.as_file()
            .sync_all()
            .map_err(|e| SlurmError::io(tmp.path(), e))?;
        tmp.persist(&path)
            .map_err(|e| SlurmError::io(&path, e.error))?;
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_round_trips_and_absence_is_none() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(JobRecord::load(dir.path()).unwrap(), None);
        let rec = JobRecord {
            job_id: "42".into(),
            job_name: "tureen-r-core".into(),
            attempt: 2,
            submitted_at: 1_800_000_000,
            finished: false,
            previous_jobs: vec!["41".into()],
        };
        rec.store(dir.path()).unwrap();
        assert_eq!(JobRecord::load(dir.path()).unwrap(), Some(rec));
        // No temporary file is left behind.
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, [RECORD_FILE]);
    }

    #[test]
    fn corrupt_record_is_an_error_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(RECORD_FILE), "{").unwrap();
        let err = JobRecord::load(dir.path()).unwrap_err().to_string();
        assert!(
            err.contains(RECORD_FILE) && err.contains("not a job record"),
            "{err}"
        );
    }
}
