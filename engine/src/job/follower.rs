//! A data-parallel stage's ranks other than 0: they resolve the same inputs, read the
//! journal rank 0 commits to (so they resume where it resumes), run the kind, and finish
//! without touching the lock, the action cache or the store's objects. Their log is
//! their own (`<stage>.rank<r>.log` beside the stage's log).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use tureen_artifacts::Store;

use super::{resolve_inputs, FileLog, JobEvent, JobResult, JobStatus, StageJob};
use crate::cache::{self, OutputRecord};
use crate::journal::StoreJournal;
use crate::kind::{Artifact, CheckpointJournal, StageContext, StageLog, StageWork};
use crate::rank::Rank;

/// How often a follower looks whether the key got cached meanwhile.
const CACHE_POLL: Duration = Duration::from_millis(250);

/// `path` with `.rank<r>` before its extension: `core.log` -> `core.rank1.log`.
pub fn rank_path(path: &Path, rank: Rank) -> PathBuf {
    match path.extension() {
        Some(ext) => path.with_extension(format!("rank{}.{}", rank.rank, ext.to_string_lossy())),
        None => path.with_extension(format!("rank{}", rank.rank)),
    }
}

/// The journal as a rank other than 0 sees it: what rank 0 committed, and no commits.
struct ReadOnlyJournal<'s> {
    inner: StoreJournal<'s>,
    rank: Rank,
}

impl CheckpointJournal for ReadOnlyJournal<'_> {
    fn commit(&mut self, path: &Path) -> anyhow::Result<Artifact> {
        anyhow::bail!(
            "{}: only rank 0 commits ({} was not stored)",
            self.rank,
            path.display()
        )
    }

    fn committed(&self) -> Vec<Artifact> {
        self.inner.committed()
    }
}

/// Runs the kind's `work` for `job` as `rank` (not 0). The kind sees a cancel that is also set
/// when the key appears in the action cache: then rank 0 found the stage done (or
/// another run finished it) and will not join, so waiting for it would only time out.
pub(super) fn execute(
    job: &StageJob,
    store: &Store,
    work: &dyn StageWork,
    rank: Rank,
    cancel: &AtomicBool,
    observer: &mut (dyn FnMut(JobEvent) + Send),
    finish: impl Fn(JobStatus, BTreeMap<String, OutputRecord>, Option<String>, u32, usize) -> JobResult,
) -> anyhow::Result<JobResult> {
    let scratch = super::Scratch::create(store, &job.key)?;
    let inputs = resolve_inputs(store, scratch.path(), job)?;
    let mut own = job.clone();
    own.log = rank_path(&job.log, rank);
    own.metrics = rank_path(&job.metrics, rank);
    own.tensorboard = None;
    if let Some(dir) = own.log.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let mut log = FileLog::open(&own, observer)?;
    log.line(&format!(
        "== tureen: stage {} {rank} (key {}) at {}",
        job.stage,
        job.key,
        crate::clock::now_rfc3339()
    ));
    let work_dir = store.tmp_dir().join(format!(
        "work-{}-{}-rank{}",
        &job.key.to_hex()[..16],
        std::process::id(),
        rank.rank
    ));
    let _ = std::fs::remove_dir_all(&work_dir);
    std::fs::create_dir_all(&work_dir)
        .with_context(|| format!("cannot create {}", work_dir.display()))?;
    let mut journal = ReadOnlyJournal {
        inner: StoreJournal::open(store, scratch.path(), &job.key, &job.stage),
        rank,
    };
    let resumed_from = journal.committed().len();

    // Rank 0 hands out a cached result only when the job may use the cache (not in a
    // replay, not under --force); only then is a cache entry a reason to stop.
    let watch_cache = job.use_cache && !job.force;
    let cached = || watch_cache.then(|| cache::lookup(store, &job.key)).flatten();
    let stop = AtomicBool::new(false);
    let finished = AtomicBool::new(false);
    let outcome = std::thread::scope(|scope| {
        scope.spawn(|| {
            while !finished.load(Ordering::Relaxed) {
                if cancel.load(Ordering::Relaxed) || cached().is_some() {
                    stop.store(true, Ordering::Relaxed);
                }
                std::thread::sleep(CACHE_POLL);
            }
        });
        let mut ctx = StageContext {
            stage: &job.stage,
            params: &job.params,
            inputs: &inputs,
            work_dir: &work_dir,
            workspace: &job.workspace,
            env: &job.env,
            log: &mut log,
            journal: &mut journal,
            gpus: &job.gpus,
            cancel: &stop,
            rank,
        };
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| work.run(&mut ctx)));
        finished.store(true, Ordering::Relaxed);
        outcome
    });
    let _ = std::fs::remove_dir_all(&work_dir);
    let outcome = match outcome {
        Ok(r) => r.map(|_| ()),
        Err(_) => Err(anyhow::anyhow!("the {} kind panicked", job.kind)),
    };
    let result = match outcome {
        Ok(()) => {
            log.line(&format!("== tureen: stage {} {rank} finished", job.stage));
            finish(JobStatus::Ran, BTreeMap::new(), None, 1, resumed_from)
        }
        Err(e) => match cached() {
            Some(entry) => {
                log.line("== tureen: the stage is in the action cache; stopped");
                finish(JobStatus::Cached, entry.outputs, None, 0, resumed_from)
            }
            None => {
                let msg = format!("{e:#}");
                log.line(&format!("== tureen: {rank} failed: {msg}"));
                let status = match cancel.load(Ordering::Relaxed) {
                    true => JobStatus::Cancelled,
                    false => JobStatus::Failed,
                };
                finish(status, BTreeMap::new(), Some(msg), 1, resumed_from)
            }
        },
    };
    log.flush();
    Ok(result)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use serde_json::Map;

    use super::super::{execute_as, JobOutput, JobRun, JobStage};
    use super::*;
    use crate::key::Fingerprint;
    use crate::kind::{
        KindRegistry, OutputDecl, OutputShape, ParamError, Produced, Runner, StageDecl, StageKind,
    };

    /// A data-parallel kind: rank 0 commits one checkpoint; every rank records what it
    /// saw, and the others also try to commit.
    struct Ranks {
        seen: std::sync::Mutex<Vec<(Rank, usize, bool)>>,
        /// Ranks other than 0 wait for a cancel (rank 0 never joins) before returning.
        wait_for_cancel: bool,
    }

    impl StageKind for Ranks {
        fn name(&self) -> &'static str {
            "ranks"
        }
        fn code_version(&self) -> &'static str {
            "1"
        }
        fn validate(&self, _: &StageDecl<'_>) -> Result<(), ParamError> {
            Ok(())
        }
        fn outputs(&self, _: &StageDecl<'_>) -> Vec<OutputDecl> {
            vec![OutputDecl {
                name: "checkpoints".into(),
                shape: OutputShape::Series,
                len: None,
            }]
        }
        fn data_parallel(&self) -> bool {
            true
        }
    }

    impl StageWork for Ranks {
        fn run(&self, ctx: &mut StageContext<'_>) -> anyhow::Result<BTreeMap<String, Produced>> {
            let before = ctx.journal.committed().len();
            let path = ctx.work_dir.join("ckpt.bin");
            std::fs::write(&path, format!("weights of {}", ctx.rank))?;
            let committed = ctx.journal.commit(&path).is_ok();
            self.seen
                .lock()
                .unwrap()
                .push((ctx.rank, before, committed));
            if !ctx.rank.is_leader() && self.wait_for_cancel {
                let start = std::time::Instant::now();
                while !ctx.cancel.load(Ordering::Relaxed) {
                    anyhow::ensure!(start.elapsed() < Duration::from_secs(10), "no cancel");
                    std::thread::sleep(Duration::from_millis(10));
                }
                anyhow::bail!("cancelled while waiting for rank 0");
            }
            let all = ctx
                .journal
                .committed()
                .into_iter()
                .map(|a| Produced::Stored(a.digest));
            Ok(BTreeMap::from([(
                "checkpoints".to_string(),
                Produced::Series(all.collect()),
            )]))
        }
    }

    fn job(dir: &Path) -> StageJob {
        let fingerprint = Fingerprint {
            format: 1,
            kind: "ranks".into(),
            code_version: "1".into(),
            params: Map::new(),
            inputs: BTreeMap::new(),
            deps: Vec::new(),
            env: BTreeMap::new(),
            world: 1,
        };
        let stage = JobStage {
            name: "core".into(),
            key: fingerprint.key(),
            fingerprint,
            runner: Runner::InProcess,
            inputs: BTreeMap::new(),
            outputs: vec![JobOutput {
                name: "checkpoints".into(),
                series: true,
            }],
            attempts: 3,
            force: false,
        };
        let run_dir = dir.join("run");
        let store = dir.join("store");
        let run = JobRun {
            run_id: "r",
            run_dir: &run_dir,
            store: &store,
            workspace: dir,
            use_cache: true,
            tensorboard: false,
        };
        StageJob::new(stage, &run)
    }

    const R0: Rank = Rank {
        rank: 0,
        world: 2,
        local: 0,
    };
    const R1: Rank = Rank {
        rank: 1,
        world: 2,
        local: 1,
    };

    #[test]
    fn only_rank_0_commits_and_caches_and_the_others_keep_their_own_log() {
        let dir = tempfile::tempdir().unwrap();
        let kind = Arc::new(Ranks {
            seen: Default::default(),
            wait_for_cancel: false,
        });
        let mut registry = KindRegistry::new();
        registry.register_with_work(kind.clone());
        let cancel = AtomicBool::new(false);
        let job = job(dir.path());

        let r1 = execute_as(&job, &registry, R1, &cancel, &mut |_| {}).unwrap();
        assert_eq!(r1.status, JobStatus::Ran);
        assert!(r1.outputs.is_empty());
        let store = Store::open(&job.store).unwrap();
        assert!(
            cache::lookup(&store, &job.key).is_none(),
            "rank 1 wrote no cache entry"
        );
        assert!(!crate::journal::journal_path(&job.store, &job.key).exists());
        let log = std::fs::read_to_string(dir.path().join("run/core.rank1.log")).unwrap();
        assert!(log.contains("rank 1 of 2"), "{log}");
        assert!(!dir.path().join("run/core.log").exists());

        let r0 = execute_as(&job, &registry, R0, &cancel, &mut |_| {}).unwrap();
        assert_eq!(r0.status, JobStatus::Ran);
        assert_eq!(
            r0.attempts, 1,
            "several ranks: one attempt, retrying is relaunching"
        );
        assert_eq!(r0.outputs["checkpoints"].artifacts().len(), 1);
        assert!(cache::lookup(&store, &job.key).is_some());
        let seen = kind.seen.lock().unwrap().clone();
        assert_eq!(seen, vec![(R1, 0, false), (R0, 0, true)]);
    }

    #[test]
    fn a_rank_waiting_for_rank_0_stops_when_the_stage_is_cached() {
        let dir = tempfile::tempdir().unwrap();
        let kind = Arc::new(Ranks {
            seen: Default::default(),
            wait_for_cancel: true,
        });
        let mut registry = KindRegistry::new();
        registry.register_with_work(kind.clone());
        let cancel = AtomicBool::new(false);
        let job = job(dir.path());
        // The stage completes as one process first (another run, say).
        let done = execute_as(&job, &registry, Rank::SOLE, &cancel, &mut |_| {}).unwrap();
        assert_eq!(done.status, JobStatus::Ran);
        let r1 = execute_as(&job, &registry, R1, &cancel, &mut |_| {}).unwrap();
        assert_eq!(r1.status, JobStatus::Cached);
        assert_eq!(r1.outputs, done.outputs);
    }

    #[test]
    fn kinds_that_are_not_data_parallel_ignore_the_rank() {
        let dir = tempfile::tempdir().unwrap();
        let mut registry = KindRegistry::new();
        registry.register_with_work(Arc::new(crate::job::tests::Checkpointing {
            crash: AtomicBool::new(false),
        }));
        let mut job = job(dir.path());
        job.kind = "ckpt".into();
        let cancel = AtomicBool::new(false);
        let r = execute_as(&job, &registry, R1, &cancel, &mut |_| {}).unwrap();
        assert_eq!(r.status, JobStatus::Ran);
        assert_eq!(r.outputs["checkpoints"].artifacts().len(), 3);
    }

    #[test]
    fn rank_paths_sit_beside_the_stage_files() {
        let r = Rank {
            rank: 3,
            world: 4,
            local: 1,
        };
        assert_eq!(
            rank_path(Path::new("/runs/r1/core.log"), r),
            Path::new("/runs/r1/core.rank3.log")
        );
        assert_eq!(
            rank_path(Path::new("/runs/r1/core.metrics.jsonl"), r),
            Path::new("/runs/r1/core.metrics.rank3.jsonl")
        );
        assert_eq!(rank_path(Path::new("job"), r), Path::new("job.rank3"));
    }
}
