//! The run state: where each stage is, and the one place each where a stage is decided
//! (key and cache), queued, started, finished and failed. The dry run and the real run
//! share the decision; only the real run acts on it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::Instant;

use tureen_artifacts::{Digest, Store};

use super::inputs::{self, Outputs};
use super::pool::{Pool, Unsatisfiable};
use super::why::History;
use super::workspace;
use super::{Decision, PlanLine, RunOptions};
use crate::cache::{ActionCache, OutputRecord};
use crate::job::{self, JobInput, JobRun, JobStage, StageJob};
use crate::key::Fingerprint;
use crate::kind::KindRegistry;
use crate::machine::MachineInfo;
use crate::pipeline::{Pipeline, Stage};
use crate::record::{RecordedInput, StageRecord, StageStatus};

/// Where one stage is in the run.
pub(super) enum State {
    /// Some upstream is not done yet.
    Waiting,
    /// Keyed and not cached: waits for resources. (A dry run stops here.)
    Queued(Box<StageJob>),
    /// Executing, holding these GPUs since `started`.
    Running { gpus: Vec<u32>, started: Instant },
    /// Ran or restored from the cache: its outputs.
    Done(BTreeMap<String, OutputRecord>),
    /// Failed.
    Failed,
    /// Not run: an upstream failed.
    Skipped,
    /// Not selected (`--only`).
    Excluded,
}

/// A ready stage's key and what the cache holds for it.
pub(super) struct Lookup {
    pub fp: Fingerprint,
    pub key: Digest,
    pub inputs: BTreeMap<String, JobInput>,
    /// The outputs of the cache's entry for the key.
    pub hit: Option<BTreeMap<String, OutputRecord>>,
}

/// Everything the scheduler knows about a run in progress.
pub(super) struct RunState<'a> {
    pub pipeline: &'a Pipeline,
    pub registry: &'a KindRegistry,
    pub store: &'a Store,
    pub cache: ActionCache<'a>,
    pub opts: &'a RunOptions,
    pub run_id: String,
    pub run_dir: PathBuf,
    force: Vec<bool>,
    history: History,
    pub states: Vec<State>,
    pub records: Vec<Option<StageRecord>>,
    /// Topological order, and each stage's position in it (the scheduling priority).
    pub order: Vec<usize>,
    position: Vec<usize>,
    downstream: Vec<Vec<usize>>,
    pending_up: Vec<usize>,
    /// Stages whose upstreams are done, to be decided, by position.
    ready: BTreeSet<(usize, usize)>,
    /// Queued stages, by position.
    runnable: BTreeSet<(usize, usize)>,
    pub running: usize,
    pub failed: bool,
}

impl<'a> RunState<'a> {
    /// The state of a run about to start: `selected` stages wait, the rest are excluded.
    pub fn new(
        pipeline: &'a Pipeline,
        registry: &'a KindRegistry,
        cache: ActionCache<'a>,
        opts: &'a RunOptions,
        selected: &[bool],
        force: Vec<bool>,
        run_id: String,
    ) -> RunState<'a> {
        let store = cache.store();
        let pipeline_abs = pipeline_path(pipeline);
        let order = pipeline.topo_order();
        let mut position = vec![0; order.len()];
        for (pos, &i) in order.iter().enumerate() {
            position[i] = pos;
        }
        let pending_up: Vec<usize> = pipeline
            .stages
            .iter()
            .map(|s| s.upstream.iter().filter(|&&u| selected[u]).count())
            .collect();
        let ready = order
            .iter()
            .filter(|&&i| selected[i] && pending_up[i] == 0)
            .map(|&i| (position[i], i))
            .collect();
        RunState {
            run_dir: store.root().join("runs").join(&run_id),
            history: History::new(store.root().to_path_buf(), pipeline_abs),
            states: selected
                .iter()
                .map(|&s| if s { State::Waiting } else { State::Excluded })
                .collect(),
            records: vec![None; order.len()],
            downstream: pipeline.downstream(),
            pipeline,
            registry,
            store,
            cache,
            opts,
            run_id,
            force,
            order,
            position,
            pending_up,
            ready,
            runnable: BTreeSet::new(),
            running: 0,
            failed: false,
        }
    }

    fn stage(&self, i: usize) -> &'a Stage {
        &self.pipeline.stages[i]
    }

    /// The next stage whose upstreams are all done.
    pub fn next_ready(&mut self) -> Option<usize> {
        self.ready.pop_first().map(|(_, i)| i)
    }

    /// Whether nothing can happen any more: nothing runs, and nothing is left to start
    /// (or the run is cancelled).
    pub fn is_idle(&self, cancelled: bool) -> bool {
        self.running == 0 && self.ready.is_empty() && (self.runnable.is_empty() || cancelled)
    }

    /// Key and cache lookup of ready stage `i`: the decision that dry runs and real
    /// runs share.
    pub fn look_up(&self, i: usize) -> anyhow::Result<Lookup> {
        let states = &self.states;
        let outputs: &Outputs<'_> = &|u| match &states[u] {
            State::Done(o) => Some(o),
            _ => None,
        };
        let stage = self.stage(i);
        let (fp, inputs) = inputs::fingerprint(self.registry, self.store, stage, outputs)?;
        let key = fp.key();
        let hit = if self.force[i] || self.opts.no_cache {
            None
        } else {
            self.cache.outputs(&key)
        };
        Ok(Lookup {
            fp,
            key,
            inputs,
            hit,
        })
    }

    /// Why ready stage `i` (not a cache hit) runs.
    pub fn why(&mut self, i: usize, fp: &Fingerprint) -> Vec<String> {
        let mut why = Vec::new();
        if self.force[i] {
            why.push("forced (--force)".to_string());
        }
        if self.opts.no_cache {
            why.push("cache disabled (replay)".to_string());
            return why;
        }
        let stage = self.stage(i);
        why.extend(
            self.history
                .changes(stage, fp, &self.pipeline.params, self.force[i]),
        );
        why
    }

    /// Stage `i` is restored from the cache: its outputs are put in the workspace and
    /// its downstreams may go on.
    pub fn restore(
        &mut self,
        i: usize,
        look: Lookup,
        outputs: BTreeMap<String, OutputRecord>,
    ) -> anyhow::Result<()> {
        let stage = self.stage(i);
        let mut rec = new_record(stage, StageStatus::Cached, Some(look.key), Some(look.fp));
        if let Err(e) = workspace::materialize(self.store, self.pipeline, stage, &outputs) {
            rec.status = StageStatus::Failed;
            rec.error = Some(format!("{e:#}"));
            self.records[i] = Some(rec);
            self.mark_failed(i);
            return Err(e);
        }
        rec.why = vec!["up to date".into()];
        rec.inputs = recorded_inputs(stage, &look.inputs);
        rec.outputs = outputs.clone();
        self.records[i] = Some(rec);
        self.done(i, outputs);
        Ok(())
    }

    /// Stage `i` must run: its job waits for resources.
    pub fn queue(&mut self, i: usize, look: Lookup, why: Vec<String>) {
        let stage = self.stage(i);
        let mut rec = new_record(
            stage,
            StageStatus::Running,
            Some(look.key),
            Some(look.fp.clone()),
        );
        rec.why = why;
        rec.inputs = recorded_inputs(stage, &look.inputs);
        rec.log = Some(format!("runs/{}/{}.log", self.run_id, stage.name));
        self.records[i] = Some(rec);
        let run = JobRun {
            run_id: &self.run_id,
            run_dir: &self.run_dir,
            store: self.store.root(),
            workspace: &self.pipeline.root,
            use_cache: !self.opts.no_cache,
            tensorboard: true,
        };
        let job = StageJob::new(
            JobStage {
                name: stage.name.clone(),
                key: look.key,
                fingerprint: look.fp,
                runner: stage.runner.clone(),
                inputs: look.inputs,
                outputs: job::job_outputs(&stage.outputs),
                attempts: stage.retries + 1,
                force: self.force[i],
            },
            &run,
        );
        self.states[i] = State::Queued(Box::new(job));
        self.runnable.insert((self.position[i], i));
    }

    /// The queued stages that fit in the pool now, taken out of the queue with their
    /// jobs (GPUs assigned); stages that can never fit are failed and reported to
    /// `unsatisfiable`.
    pub fn take_startable(
        &mut self,
        pool: &mut Pool,
        mut unsatisfiable: impl FnMut(&Stage, &str),
    ) -> Vec<(usize, StageJob)> {
        let mut started = Vec::new();
        let candidates: Vec<(usize, usize)> = self.runnable.iter().copied().collect();
        for (pos, i) in candidates {
            let stage = self.stage(i);
            let gpus = match pool.take(stage, self.running + started.len()) {
                Ok(Some(g)) => g,
                Ok(None) => continue,
                Err(Unsatisfiable(msg)) => {
                    self.runnable.remove(&(pos, i));
                    unsatisfiable(stage, &msg);
                    self.fail(i, msg);
                    continue;
                }
            };
            self.runnable.remove(&(pos, i));
            let State::Queued(job) = std::mem::replace(
                &mut self.states[i],
                State::Running {
                    gpus: gpus.clone(),
                    started: Instant::now(),
                },
            ) else {
                unreachable!("runnable stages are queued")
            };
            let mut job = *job;
            job.gpus = gpus;
            if let Some(rec) = self.records[i].as_mut() {
                rec.started = Some(crate::clock::now_rfc3339());
            }
            started.push((i, job));
        }
        self.running += started.len();
        started
    }

    /// Running stage `i` ended: gives back its resources; seconds it ran.
    pub fn stopped(&mut self, i: usize, pool: &mut Pool) -> f64 {
        self.running -= 1;
        let State::Running { gpus, started } =
            std::mem::replace(&mut self.states[i], State::Waiting)
        else {
            unreachable!("only running stages stop")
        };
        pool.give(self.stage(i), gpus);
        let secs = started.elapsed().as_secs_f64();
        let log = self.run_dir.join(format!("{}.log", self.stage(i).name));
        if let Some(rec) = self.records[i].as_mut() {
            rec.ended = Some(crate::clock::now_rfc3339());
            rec.seconds = Some(secs);
            // Where the job wrote it: here, in its worker, or on a Slurm node.
            rec.machine = MachineInfo::read(&MachineInfo::path_for_log(&log));
        }
        secs
    }

    /// Stage `i` ran (or another run finished it meanwhile): its outputs are in the store.
    pub fn succeeded(
        &mut self,
        i: usize,
        status: StageStatus,
        attempts: u32,
        outputs: BTreeMap<String, OutputRecord>,
    ) -> anyhow::Result<()> {
        let stage = self.stage(i);
        if let Some(rec) = self.records[i].as_mut() {
            rec.attempts = attempts;
        }
        workspace::materialize(self.store, self.pipeline, stage, &outputs).inspect_err(|e| {
            self.fail(i, format!("{e:#}"));
        })?;
        let rec = self.records[i]
            .as_mut()
            .expect("started stages have records");
        rec.status = status;
        rec.exit_status = Some(0);
        rec.outputs = outputs.clone();
        self.done(i, outputs);
        Ok(())
    }

    /// Stage `i` fails with `error`: recorded, and every stage downstream is skipped.
    pub fn fail(&mut self, i: usize, error: String) {
        let stage = self.stage(i);
        let rec = self.records[i]
            .get_or_insert_with(|| new_record(stage, StageStatus::Failed, None, None));
        rec.status = StageStatus::Failed;
        rec.error = Some(error);
        self.mark_failed(i);
    }

    /// Stage `i` failed or was cancelled after it ran, with its record already saying so.
    pub fn mark_failed(&mut self, i: usize) {
        self.states[i] = State::Failed;
        self.failed = true;
        let mut stack: Vec<usize> = self.downstream[i].clone();
        while let Some(d) = stack.pop() {
            if matches!(self.states[d], State::Waiting) {
                self.states[d] = State::Skipped;
                let mut rec = new_record(self.stage(d), StageStatus::Skipped, None, None);
                rec.error = Some(format!("upstream `{}` failed", self.stage(i).name));
                self.records[d] = Some(rec);
                stack.extend(self.downstream[d].iter().copied());
            }
        }
    }

    /// Stage `i` is done: downstreams whose upstreams are now all done become ready.
    fn done(&mut self, i: usize, outputs: BTreeMap<String, OutputRecord>) {
        self.states[i] = State::Done(outputs);
        for &d in &self.downstream[i] {
            if matches!(self.states[d], State::Excluded) {
                continue;
            }
            self.pending_up[d] = self.pending_up[d].saturating_sub(1);
            if self.pending_up[d] == 0 && matches!(self.states[d], State::Waiting) {
                self.ready.insert((self.position[d], d));
            }
        }
    }

    /// The stage records in order, every selected stage with one (those that never
    /// started are `cancelled` after an interrupt, else `skipped`), and the plan lines
    /// that summarize them. The run is over: the cache's log gets what it lacked.
    pub fn into_records(mut self, interrupted: bool) -> (Vec<StageRecord>, Vec<PlanLine>) {
        let unstarted = if interrupted {
            StageStatus::Cancelled
        } else {
            StageStatus::Skipped
        };
        // Sized once: a record is large, and growing the vector by doubling copied them
        // again and again (two thirds of this function's time in a 10,000-stage no-op).
        let mut records = Vec::with_capacity(self.order.len());
        for &i in &self.order {
            let rec = match self.records[i].take() {
                Some(rec) => rec,
                None if matches!(self.states[i], State::Excluded) => continue,
                None => new_record(self.stage(i), unstarted, None, None),
            };
            records.push(rec);
        }
        let plan = records.iter().map(plan_line).collect();
        self.cache.finish();
        (records, plan)
    }
}

/// The pipeline file as records name it (absolute).
pub(super) fn pipeline_path(pipeline: &Pipeline) -> PathBuf {
    std::path::absolute(&pipeline.file).unwrap_or_else(|_| pipeline.file.clone())
}

/// A stage's record before anything is known beyond its status.
pub(super) fn new_record(
    stage: &Stage,
    status: StageStatus,
    key: Option<Digest>,
    fp: Option<Fingerprint>,
) -> StageRecord {
    StageRecord {
        name: stage.name.clone(),
        kind: stage.kind.clone(),
        status,
        key,
        why: Vec::new(),
        fingerprint: fp,
        inputs: BTreeMap::new(),
        outputs: BTreeMap::new(),
        started: None,
        ended: None,
        seconds: None,
        attempts: 0,
        executor: stage.executor,
        exit_status: None,
        error: None,
        log: None,
        machine: None,
    }
}

fn recorded_inputs(
    stage: &Stage,
    inputs: &BTreeMap<String, JobInput>,
) -> BTreeMap<String, RecordedInput> {
    stage
        .inputs
        .iter()
        .filter_map(|(name, input)| {
            let refs: Vec<&str> = input.refs().iter().map(|r| r.text.as_str()).collect();
            let artifacts = inputs.get(name)?.clone();
            Some((
                name.clone(),
                RecordedInput {
                    refs: refs.join(", "),
                    artifacts,
                },
            ))
        })
        .collect()
}

fn plan_line(s: &StageRecord) -> PlanLine {
    PlanLine {
        stage: s.name.clone(),
        kind: s.kind.clone(),
        decision: match s.status {
            StageStatus::Cached => Decision::Cached,
            StageStatus::Ran => Decision::Run(s.why.clone()),
            StageStatus::Failed => Decision::Failed(s.error.clone().unwrap_or_default()),
            other => Decision::Skipped(other.to_string()),
        },
        key: s.key,
    }
}
