//! The seam between the scheduler and the Slurm executor: a stage with
//! `executor: slurm` is written as a [`StageJob`] file under
//! `<store>/slurm/<key-hex>/job.json` (stable per key, so a restarted tureen re-attaches
//! to the job it submitted), submitted through [`crate::slurm::run_job`] as
//! `tureen stage-exec --job job.json` (or the kind's worker program's), and its [`JobResult`] read back from
//! `job.result.json`.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

use anyhow::Context as _;
use serde_json::Value;

use crate::job::{JobEvent, JobResult, StageJob};
use crate::pipeline::Resources;
use crate::slurm::{self, SlurmJobSpec, SlurmOptions, SlurmResources};

/// Where `stage-exec` writes the result of `job_file`.
pub fn result_path(job_file: &Path) -> PathBuf {
    job_file.with_extension("result.json")
}

/// Runs `job` as a Slurm job and waits for its result.
pub fn run(
    job: &StageJob,
    slurm_options: &Value,
    resources: &Resources,
    retries: u32,
    tureen: &Path,
    cancel: &AtomicBool,
    observer: &mut (dyn FnMut(JobEvent) + Send),
) -> anyhow::Result<JobResult> {
    let options = SlurmOptions::from_value(slurm_options).context("pipeline `slurm:` options")?;
    let dir = job.store.join("slurm").join(job.key.to_hex());
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let job_file = dir.join("job.json");
    // Slurm retries whole jobs; inside one, a single attempt.
    let mut single = job.clone();
    single.attempts = 1;
    single.write(&job_file)?;
    let result_file = result_path(&job_file);
    // A job an earlier tureen submitted is re-attached to, and may have written its
    // result already: only a fresh submission starts without one.
    if slurm::pending_job(&dir)?.is_none() {
        let _ = std::fs::remove_file(&result_file);
    }
    let mut spec = SlurmJobSpec::stage_exec(&job.run_id, &job.stage, tureen, &job_file);
    spec.resources = SlurmResources::from_pipeline(resources, job.fingerprint.world);
    spec.retries = retries;
    spec.env = job.env.clone();
    let outcome = slurm::run_job(&spec, &options, cancel, &mut |e| {
        observer(JobEvent::Line(e.to_string()))
    })
    .with_context(|| format!("stage `{}` on Slurm", job.stage))?;
    let bytes = std::fs::read(&result_file).with_context(|| {
        format!(
            "Slurm job {} ended (exit {}) without a result file {}; see {}",
            outcome.job_id,
            outcome.exit_code,
            result_file.display(),
            outcome.log_path.display()
        )
    })?;
    let mut result: JobResult = serde_json::from_slice(&bytes)
        .with_context(|| format!("{}: bad result", result_file.display()))?;
    result.attempts = outcome.attempts;
    Ok(result)
}
