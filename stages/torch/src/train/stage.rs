//! The work of the `train` and `rewind` stage kinds: one `run` that wires a
//! [`Trainer`] to the stage context (data input, journal, log, cancel flag). Their
//! params are [`TrainParams`].

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::Context as _;
use serde_json::Value;
use tch::Device;
use tureen_engine::kind::{InputValue, Produced, Rank, StageContext};
use tureen_stages::train::params::shards_need_base_dir;
use tureen_stages::train::{Mode, TrainConfig, TrainParams};

use super::data::{DataSource, LoaderSource, SyntheticSource};
use super::error::TrainError;
use super::trainer::{resolve_device, Start, TrainHooks, Trainer};
use crate::checkpoint::MODEL_FILE;
use crate::dist::{Backend, GroupOptions, ProcessGroup, Rendezvous};
use crate::model::config_from_json;

struct ContextHooks<'c, 'a> {
    ctx: &'c mut StageContext<'a>,
    committed: Vec<tureen_artifacts::Digest>,
}

impl TrainHooks for ContextHooks<'_, '_> {
    fn metrics(&mut self, record: &Value) {
        self.ctx.log.metrics(record);
        let loss = record.get("loss").and_then(Value::as_f64);
        if let (Some(step), Some(loss)) = (record.get("step"), loss) {
            let lr = record.get("lr").and_then(Value::as_f64).unwrap_or(0.0);
            let sps = record
                .get("samples_per_s")
                .and_then(Value::as_f64)
                .unwrap_or(0.0);
            self.ctx.log.line(&format!(
                "step {step} loss {loss:.5} lr {lr:.3e} {sps:.1} samples/s"
            ));
        }
    }
    fn progress(&mut self, done: u64, total: u64) {
        self.ctx.log.progress(done, total);
    }
    fn checkpoint(&mut self, interval: u64, dir: &Path) -> Result<(), String> {
        let artifact = self.ctx.journal.commit(dir).map_err(|e| format!("{e:#}"))?;
        self.ctx.log.line(&format!(
            "checkpoint interval {interval}: {}",
            artifact.digest
        ));
        // The store has it now; don't keep a second copy in the work directory.
        if dir.exists() {
            let _ = std::fs::remove_dir_all(dir);
        }
        self.committed.push(artifact.digest);
        Ok(())
    }
    fn cancelled(&self) -> bool {
        self.ctx.cancel.load(Ordering::SeqCst)
    }
    fn line(&mut self, line: &str) {
        self.ctx.log.line(line);
    }
}

/// `run` of both kinds.
pub fn run(ctx: &mut StageContext<'_>, mode: Mode) -> anyhow::Result<BTreeMap<String, Produced>> {
    let p = TrainParams::from_params(ctx.params, mode).map_err(anyhow::Error::msg)?;
    // Threads and numerics were pinned by the kind (`crate::numerics::apply`).
    let device = rank_device(
        resolve_device(&p.device).map_err(anyhow::Error::msg)?,
        &p,
        ctx.rank,
    );

    // Where to start: our own latest committed checkpoint wins (resume: latest).
    let journal = ctx.journal.committed();
    let from = match (mode, ctx.inputs.get("from")) {
        (Mode::Rewind, Some(InputValue::One(a))) => Some(a.path.clone()),
        (Mode::Rewind, Some(InputValue::Series(_))) => {
            anyhow::bail!("inputs.from: expected one checkpoint (e.g. core.checkpoints[230]), got a whole series")
        }
        (Mode::Rewind, None) => anyhow::bail!("inputs.from: missing"),
        _ => None,
    };
    let start = match (journal.last(), &from) {
        (Some(last), _) => {
            ctx.log.line(&format!(
                "resuming from committed checkpoint {}",
                last.digest
            ));
            Start::Resume(last.path.clone())
        }
        (None, Some(dir)) if p.fresh_optimizer() => Start::RewindFresh(dir.clone()),
        (None, Some(dir)) => Start::Rewind(dir.clone()),
        (None, None) => Start::Fresh,
    };

    let model = match (&p.model, &from) {
        (Some(m), _) => config_from_json(m).map_err(|e| anyhow::anyhow!("params.{e}"))?,
        (None, Some(dir)) => super::trainer::rewind::model_config(dir)?,
        (None, None) => anyhow::bail!("params.model: required"),
    };
    let config = p.config(model);
    let mut data = data_source(ctx, &p, &config)?;

    let mut trainer = Trainer::new(config, device, &start)?;
    trainer.grad_checkpointing = p.grad_checkpointing;
    if ctx.rank.world > 1 {
        let group = join_ranks(ctx, &p, device)?;
        ctx.log.line(&format!(
            "{}: data-parallel over {:?}, {} rows of each batch of {}",
            ctx.rank,
            group.backend(),
            trainer.config.batch_size / ctx.rank.world as u64,
            trainer.config.batch_size
        ));
        trainer.join(group)?;
    }
    ctx.log.line(&format!(
        "{} on {:?}: {} params, batch {}, {} steps/interval, intervals {}..{}, {} precision",
        match mode {
            Mode::Train => "train",
            Mode::Rewind => "rewind",
        },
        device,
        trainer.config.model.num_params(),
        trainer.config.batch_size,
        trainer.config.steps_per_interval(),
        trainer.interval,
        trainer.config.intervals,
        if trainer.uses_bf16() { "bf16" } else { "fp32" },
    ));
    let work_dir = ctx.work_dir.to_path_buf();
    let mut hooks = ContextHooks {
        ctx,
        committed: Vec::new(),
    };
    let result = trainer.run(data.as_mut(), &work_dir, &mut hooks);
    let committed = hooks.committed;
    match result {
        Ok(_) => {}
        Err(TrainError::Cancelled(step)) => anyhow::bail!("cancelled at step {step}"),
        Err(e) => return Err(e.into()),
    }
    if !ctx.rank.is_leader() {
        // Rank 0 produces the outputs; the engine stores nothing for the others.
        return Ok(BTreeMap::new());
    }

    // Every checkpoint of this stage: the ones committed by earlier attempts, then ours.
    let last = ctx.journal.committed();
    debug_assert!(last.len() >= committed.len());
    let final_dir = last
        .last()
        .map(|a| a.path.clone())
        .context("training produced no checkpoint")?;
    let final_file = work_dir.join("final.safetensors");
    std::fs::copy(final_dir.join(MODEL_FILE), &final_file).with_context(|| {
        format!(
            "copying {} to {}",
            final_dir.join(MODEL_FILE).display(),
            final_file.display()
        )
    })?;
    let series = last
        .iter()
        .map(|a| Produced::Stored(a.digest))
        .collect();
    Ok(BTreeMap::from([
        ("checkpoints".to_string(), Produced::Series(series)),
        ("final".to_string(), Produced::Path(final_file)),
    ]))
}

fn data_source(
    ctx: &StageContext<'_>,
    p: &TrainParams,
    config: &TrainConfig,
) -> anyhow::Result<Box<dyn DataSource>> {
    let m = &config.model;
    match p.data_spec().map_err(anyhow::Error::msg)? {
        None => Ok(Box::new(SyntheticSource {
            seed: config.seed,
            image_size: m.vision.image_size,
            context_length: m.text.context_length,
            vocab_size: m.text.vocab_size,
            fixed: false,
        })),
        Some(dp) => {
            let base = match ctx.inputs.get("data") {
                Some(InputValue::One(a)) => a.path.clone(),
                Some(InputValue::Series(_)) => {
                    anyhow::bail!("inputs.data: expected one dataset directory, got a series")
                }
                None if !shards_need_base_dir(&dp) => ctx.workspace.to_path_buf(),
                None => anyhow::bail!("inputs.data: required"),
            };
            let loader = dp
                .loader_config(
                    &base,
                    config.batch_size as usize,
                    m.vision.image_size as u32,
                    m.text.context_length as usize,
                    config.seed,
                )
                .map_err(|e| anyhow::anyhow!("params.data.tokenizer: {e}"))?;
            let vocab = loader.tokenizer.vocab_size() as i64;
            let eot = loader.tokenizer.eot_id();
            if vocab > m.text.vocab_size {
                anyhow::bail!(
                    "params.model.text.vocab_size: {} is smaller than the tokenizer's vocabulary ({vocab})",
                    m.text.vocab_size
                );
            }
            if eot != vocab - 1 {
                anyhow::bail!("params.data.tokenizer: its end-of-text id ({eot}) must be its largest id (the text tower pools there)");
            }
            Ok(Box::new(LoaderSource {
                config: loader,
                steps_per_interval: config.steps_per_interval(),
            }))
        }
    }
}

/// A rank's device: on CUDA, with several ranks on a node, the GPU of its local rank
/// among those it sees (each rank may see only its own, or all of the node's).
fn rank_device(device: Device, p: &TrainParams, rank: Rank) -> Device {
    match device {
        Device::Cuda(0) if rank.world > 1 && !p.device.starts_with("cuda:") => {
            let count = tch::Cuda::device_count().max(1) as usize;
            Device::Cuda(rank.local as usize % count)
        }
        d => d,
    }
}

/// Meets the stage's other ranks where the launcher said.
fn join_ranks(
    ctx: &mut StageContext<'_>,
    p: &TrainParams,
    device: Device,
) -> anyhow::Result<ProcessGroup> {
    let rendezvous = Rendezvous::from_env(ctx.rank).map_err(anyhow::Error::msg)?;
    let backend = Backend::choose(&p.backend, device.is_cuda()).map_err(anyhow::Error::msg)?;
    if backend == Backend::Nccl && !device.is_cuda() {
        anyhow::bail!(
            "params.backend: nccl needs a CUDA device, and this stage runs on {device:?}"
        );
    }
    let options = GroupOptions {
        backend,
        device,
        timeout: Duration::from_secs_f64(p.collective_timeout_s),
        rendezvous_timeout: Duration::from_secs_f64(p.rendezvous_timeout_s),
        identity: identity(ctx),
        interface: std::env::var("GLOO_SOCKET_IFNAME")
            .ok()
            .filter(|s| !s.is_empty()),
    };
    ctx.log
        .line(&format!("{}: rendezvous at {}", ctx.rank, rendezvous.store));
    let cancel = ctx.cancel;
    Ok(ProcessGroup::join(&rendezvous, &options, &|| {
        cancel.load(Ordering::SeqCst)
    })?)
}

/// What the ranks must share to train together: the stage, its params and inputs.
fn identity(ctx: &StageContext<'_>) -> String {
    use std::hash::{Hash, Hasher};
    // SipHash with fixed keys: the same value in every process.
    let mut h = std::collections::hash_map::DefaultHasher::new();
    serde_json::to_string(ctx.params)
        .unwrap_or_default()
        .hash(&mut h);
    for (name, input) in ctx.inputs {
        name.hash(&mut h);
        match input {
            InputValue::One(a) => a.digest.hash(&mut h),
            InputValue::Series(s) => s.iter().for_each(|a| a.digest.hash(&mut h)),
        }
    }
    format!(
        "stage {} (params and inputs {:016x})",
        ctx.stage,
        h.finish()
    )
}
