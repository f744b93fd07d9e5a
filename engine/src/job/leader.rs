//! Rank 0 of a stage (or its only process), once it holds the key's lock and has its
//! inputs: each attempt in a fresh work directory, and what a successful one leaves
//! behind (the action cache entry, the machine's description). [`super::execute_as`]
//! decides how many attempts there are and what their ends mean.

use std::collections::BTreeMap;
use std::panic::AssertUnwindSafe;
use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use anyhow::Context as _;
use tureen_artifacts::Store;

use super::{store_outputs, FileLog, JobEvent, StageJob};
use crate::cache::{self, CacheEntry, OutputRecord};
use crate::clock::now_rfc3339;
use crate::journal::StoreJournal;
use crate::kind::{InputValue, Produced, StageContext, StageLog, StageWork};
use crate::rank::Rank;

/// Rank 0 of a stage (or its only process), holding the key's lock, with its inputs
/// materialized: what each attempt needs.
pub(super) struct Leader<'a> {
    pub(super) job: &'a StageJob,
    pub(super) store: &'a Store,
    pub(super) work: &'a dyn StageWork,
    pub(super) inputs: &'a BTreeMap<String, InputValue>,
    /// The job's scratch directory (input trees, checkpoint views).
    pub(super) scratch: &'a Path,
    pub(super) cancel: &'a AtomicBool,
    pub(super) rank: Rank,
}

/// What one attempt left: its stored outputs (or why there are none), and the journal
/// it committed checkpoints to.
pub(super) struct Attempted<'a> {
    pub(super) outputs: anyhow::Result<BTreeMap<String, OutputRecord>>,
    pub(super) journal: StoreJournal<'a>,
    /// Checkpoints committed by earlier, interrupted attempts.
    pub(super) resumed_from: usize,
}

impl<'a> Leader<'a> {
    /// Attempt `attempt` of `attempts`: a fresh work directory, the journal of earlier
    /// attempts, the kind run (a panic is a failed attempt), its outputs stored. `Err`
    /// only when the attempt could not be set up.
    pub(super) fn attempt(
        &self,
        attempt: u32,
        attempts: u32,
        log: &mut FileLog<'_>,
    ) -> anyhow::Result<Attempted<'a>> {
        let job = self.job;
        log.observer_event(JobEvent::Attempt(attempt));
        log.line(&format!(
            "== tureen: stage {} attempt {attempt}/{attempts} (key {}) at {}{}",
            job.stage,
            job.key,
            now_rfc3339(),
            match self.rank.world {
                1 => String::new(),
                w => format!(", rank 0 of {w}"),
            }
        ));
        let work_dir = self.store.tmp_dir().join(format!(
            "work-{}.{}.{attempt}",
            &job.key.to_hex()[..16],
            tureen_artifacts::stale::owner_token()
        ));
        let _ = std::fs::remove_dir_all(&work_dir);
        std::fs::create_dir_all(&work_dir)
            .with_context(|| format!("cannot create {}", work_dir.display()))?;
        let mut journal = StoreJournal::open(self.store, self.scratch, &job.key, &job.stage);
        let resumed_from = crate::kind::CheckpointJournal::committed(&journal).len();
        if resumed_from > 0 {
            log.line(&format!(
                "== tureen: resuming: {resumed_from} checkpoint(s) committed by an interrupted run"
            ));
        }
        let outcome = {
            let mut ctx = StageContext {
                stage: &job.stage,
                params: &job.params,
                inputs: self.inputs,
                work_dir: &work_dir,
                workspace: &job.workspace,
                env: &job.env,
                log: &mut *log,
                journal: &mut journal,
                gpus: &job.gpus,
                cancel: self.cancel,
                rank: self.rank,
            };
            run_catching_panics(self.work, &mut ctx, &job.kind)
        };
        let outputs =
            outcome.and_then(|produced| store_outputs(self.store, job, produced, &journal));
        let _ = tureen_artifacts::fsutil::remove_all(&work_dir);
        Ok(Attempted {
            outputs,
            journal,
            resumed_from,
        })
    }

    /// After a successful attempt: the action cache entry, the journal gone, the
    /// machine's description beside the log, and the log's last line.
    pub(super) fn succeed(
        &self,
        outputs: &BTreeMap<String, OutputRecord>,
        journal: StoreJournal<'_>,
        log: &mut FileLog<'_>,
        clock: Instant,
    ) -> anyhow::Result<()> {
        let job = self.job;
        let entry = CacheEntry {
            key: job.key,
            stage: job.stage.clone(),
            kind: job.kind.clone(),
            run_id: job.run_id.clone(),
            created: now_rfc3339(),
            fingerprint: job.fingerprint.clone(),
            outputs: outputs.clone(),
        };
        if job.use_cache {
            cache::insert(self.store, &entry).context("cannot write the action cache entry")?;
        }
        journal.remove();
        let machine = crate::machine::MachineInfo::path_for_log(&job.log);
        if let Err(e) = crate::machine::MachineInfo::current().write(&machine) {
            log.line(&format!(
                "== tureen: cannot write {}: {e}",
                machine.display()
            ));
        }
        log.line(&format!(
            "== tureen: stage {} succeeded in {:.2}s",
            job.stage,
            clock.elapsed().as_secs_f64()
        ));
        log.flush();
        Ok(())
    }
}

/// Runs the kind's work; a panic in it becomes an error naming the kind.
fn run_catching_panics(
    work: &dyn StageWork,
    ctx: &mut StageContext<'_>,
    kind: &str,
) -> anyhow::Result<BTreeMap<String, Produced>> {
    match std::panic::catch_unwind(AssertUnwindSafe(|| work.run(ctx))) {
        Ok(r) => r,
        Err(panic) => {
            let msg = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "unknown panic".into());
            Err(anyhow::anyhow!("the {kind} kind panicked: {msg}"))
        }
    }
}
