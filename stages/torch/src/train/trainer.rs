//! The training loop shared by the `train` and `rewind` kinds.

use std::path::{Path, PathBuf};
use std::time::Instant;
use tureen_stages::device::DeviceSpec;

use serde_json::json;
use tch::nn::VarStore;
use tch::{Device, Kind, Tensor};
use tureen_stages::rng::mix;
use tureen_stages::train::{Precision, TrainConfig};

use super::adamw::AdamW;
use super::data::DataSource;
use super::error::TrainError;
use super::parallel::DataParallel;
use crate::checkpoint::{self, CheckpointError, TrainCheckpoint, TrainState};
use crate::dist::ProcessGroup;
use crate::model::Clip;

// Starting a trainer from a checkpoint that is not its own (a child: it sets the
// trainer's position and optimizer state).
pub(super) mod rewind;

/// Where a run starts.
#[derive(Debug, Clone)]
pub enum Start {
    /// Fresh weights from `seed`, step 0.
    Fresh,
    /// Continue this run from one of its own checkpoints (`resume: latest`).
    Resume(PathBuf),
    /// Start from another run's checkpoint with this config: the schedule is
    /// recomputed for the new batch size and entered at `interval * steps_per_interval`;
    /// AdamW betas, eps and weight decay come from the checkpoint. The checkpoint may
    /// also be an open_clip `epoch_N.pt` (see `checkpoint::open_clip`).
    Rewind(PathBuf),
    /// Like `Rewind` from the checkpoint's weights only: AdamW starts from zero moments
    /// with this stage's hyper-parameters (`optimizer: fresh`).
    RewindFresh(PathBuf),
}

/// How the trainer talks to its host (the stage context, or a test).
pub trait TrainHooks {
    /// A metrics record (`step`, `interval`, `samples`, `loss`, `lr`, `logit_scale`,
    /// `samples_per_s`...), every `log_every` steps and at each interval's end (rank 0).
    fn metrics(&mut self, record: &serde_json::Value);
    /// Steps done out of the schedule's total, after every step.
    fn progress(&mut self, done: u64, total: u64);
    /// A finished checkpoint directory for interval `interval` (1-based); store it.
    fn checkpoint(&mut self, interval: u64, dir: &Path) -> Result<(), String>;
    /// Whether to stop: checked before every step (a data-parallel run stops all
    /// ranks together at the end of a step).
    fn cancelled(&self) -> bool;
    /// A log line (ranks other than 0 report their steps here instead of as metrics).
    fn line(&mut self, _line: &str) {}
}

/// What a finished run reports.
#[derive(Debug, Clone)]
pub struct TrainOutcome {
    /// The schedule position reached (steps of the whole schedule, not of this call).
    pub steps: u64,
    /// Training samples consumed by the run so far, earlier intervals included.
    pub samples_seen: u64,
    /// The loss of the last step of this call (`None` when it took none).
    pub last_loss: Option<f64>,
    /// Intervals trained in this call (0 when everything was already done).
    pub intervals_trained: u64,
}

/// The device the `device` param names (`auto|cpu|cuda|cuda:N`, parsed as
/// [`DeviceSpec`]), checked against the devices this process sees.
pub fn resolve_device(spec: &str) -> Result<Device, String> {
    let cuda_count = || tch::Cuda::device_count();
    match DeviceSpec::parse(spec).map_err(|e| e.to_string())? {
        DeviceSpec::Auto => Ok(Device::cuda_if_available()),
        DeviceSpec::Cpu => Ok(Device::Cpu),
        DeviceSpec::Cuda if tch::Cuda::is_available() => Ok(Device::Cuda(0)),
        DeviceSpec::Cuda => Err("device: cuda requested but no CUDA device is available".into()),
        DeviceSpec::CudaIndex(n) if (n as i64) < cuda_count() => Ok(Device::Cuda(n)),
        DeviceSpec::CudaIndex(n) => Err(format!(
            "device: cuda:{n} is not available ({} CUDA devices)",
            cuda_count()
        )),
    }
}

static INIT_LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Keeps glibc from handing the memory of one training step back to the kernel only to
/// fault it in again, zeroed page by page, in the next (done once per process, before
/// the first model is built).
///
/// A step frees hundreds of megabytes of activations and gradients at its end. With
/// glibc's default dynamic thresholds that memory went back to the kernel and the next
/// step faulted it in again (about 20,000 page faults per step of the 19M-parameter
/// benchmark model on the CPU, ~8% of its step time with 2 threads). The fixed
/// thresholds here (mmap only for blocks of 32 MiB and more, the largest glibc allows;
/// trim only above 1 GiB of free heap) make a step reuse the previous step's pages, as
/// happens by chance in a Python process running the same model. This is process-wide;
/// it is skipped when the environment already tunes malloc (`GLIBC_TUNABLES`,
/// `MALLOC_*_`).
fn keep_freed_memory_for_reuse() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        static ONCE: std::sync::Once = std::sync::Once::new();
        ONCE.call_once(|| {
            let tuned = std::env::vars_os().any(|(k, v)| {
                let k = k.to_string_lossy();
                (k == "GLIBC_TUNABLES" && v.to_string_lossy().contains("malloc"))
                    || (k.starts_with("MALLOC_") && k.ends_with('_'))
            });
            if !tuned {
                // SAFETY: mallopt only sets allocator parameters; glibc serialises it
                // against concurrent allocation.
                unsafe {
                    libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
                    libc::mallopt(libc::M_TRIM_THRESHOLD, 1 << 30);
                }
            }
        });
    }
}

/// `torch.nn.utils.clip_grad_norm_(params, max_norm)`: scales every gradient by
/// `min(1, max_norm / (total_norm + 1e-6))`; returns the total 2-norm before clipping.
pub fn clip_grad_norm(grads: &[Tensor], max_norm: f64) -> f64 {
    if grads.is_empty() {
        return 0.0;
    }
    tch::no_grad(|| {
        let norms: Vec<Tensor> = grads.iter().map(|g| g.norm()).collect();
        let total = Tensor::stack(&norms, 0).norm();
        let coef = (max_norm / (&total + 1e-6)).clamp_max(1.0);
        for g in grads {
            let _ = g.shallow_clone().g_mul_(&coef);
        }
        total.double_value(&[])
    })
}

/// A model, its optimizer and where they are in the schedule.
pub struct Trainer {
    /// What the run computes (model, batch, schedule, hyper-parameters).
    pub config: TrainConfig,
    /// Where the model and its batches live.
    pub device: Device,
    /// The model's variables, under open_clip's `state_dict` names.
    pub vs: VarStore,
    /// The model's modules, whose parameters are the variables of `vs`.
    pub model: Clip,
    /// The optimizer and its moments.
    pub optimizer: AdamW,
    /// Intervals completed.
    pub interval: u64,
    /// Schedule position (optimizer steps in the current schedule's terms).
    pub step: u64,
    /// Training samples consumed so far (carried over from the checkpoint it started
    /// from).
    pub samples_seen: u64,
    /// Recompute each block in the backward pass instead of keeping its activations
    /// (`grad_checkpointing`); the gradients are the same.
    pub grad_checkpointing: bool,
    pub(super) compute: Option<Kind>,
    /// The other ranks of a data-parallel run ([`Trainer::join`]).
    pub(super) parallel: Option<DataParallel>,
}

impl Trainer {
    /// Builds the model and optimizer and positions them per `start`.
    pub fn new(config: TrainConfig, device: Device, start: &Start) -> Result<Trainer, TrainError> {
        config
            .validate()
            .map_err(|e| TrainError::Config(e.to_string()))?;
        keep_freed_memory_for_reuse();
        let compute = match (config.precision, device) {
            (Precision::Fp32, _) | (Precision::Auto, Device::Cpu) => None,
            _ => Some(Kind::BFloat16),
        };
        // Initialisation draws from libtorch's process-global generator: hold a lock so
        // stages initialising models in parallel threads each get their seed's weights.
        let (vs, model) = {
            let _guard = INIT_LOCK.lock().unwrap_or_else(|e| e.into_inner());
            tch::manual_seed(mix(&[config.seed, 0x1417]) as i64);
            let vs = VarStore::new(device);
            let model = Clip::new(&vs.root(), &config.model);
            (vs, model)
        };
        let optimizer = AdamW::new(&vs, config.optimizer);
        let mut trainer = Trainer {
            config,
            device,
            vs,
            model,
            optimizer,
            interval: 0,
            step: 0,
            samples_seen: 0,
            grad_checkpointing: false,
            compute,
            parallel: None,
        };
        match start {
            Start::Fresh => {}
            Start::Resume(dir) => trainer.restore(dir, false)?,
            Start::Rewind(dir) => trainer.restore(dir, true)?,
            Start::RewindFresh(from) => rewind::fresh(&mut trainer, from)?,
        }
        Ok(trainer)
    }

    fn restore(&mut self, dir: &Path, rewind: bool) -> Result<(), TrainError> {
        if rewind && checkpoint::open_clip::is_torch_save(dir) {
            return rewind::from_torch_save(self, dir, false);
        }
        let ckpt = TrainState::read(dir)?;
        let incompatible = |message: String| TrainError::Incompatible {
            path: dir.to_path_buf(),
            message,
        };
        if ckpt.model != self.config.model {
            let mut cfg = ckpt.model.clone();
            // Regularisation may change on a rewind; shapes may not.
            cfg.vision.drop_path = self.config.model.vision.drop_path;
            if !rewind || cfg != self.config.model {
                return Err(incompatible(
                    "its model config differs from this stage's `model`".into(),
                ));
            }
        }
        if ckpt.interval > self.config.intervals {
            return Err(incompatible(format!(
                "it is at interval {}, beyond this run's {} intervals",
                ckpt.interval, self.config.intervals
            )));
        }
        let opt = TrainCheckpoint::load_into(dir, &self.vs)?;
        self.optimizer
            .load_state(&opt, ckpt.adam_step)
            .map_err(|m| incompatible(format!("optimizer state: {m}")))?;
        if rewind {
            // open_clip restores the optimizer's param groups: betas/eps/wd come from
            // the checkpoint; only the lr follows the new schedule.
            self.optimizer.config = ckpt.optimizer;
            self.config.optimizer = ckpt.optimizer;
        } else if ckpt.batch_size != self.config.batch_size
            || ckpt.samples_per_interval != self.config.samples_per_interval
        {
            return Err(incompatible(
                "batch_size or samples_per_interval differ from the run that wrote it".into(),
            ));
        }
        self.interval = ckpt.interval;
        self.step = ckpt.interval * self.config.steps_per_interval();
        self.samples_seen = ckpt.samples_seen;
        Ok(())
    }

    /// Trains data-parallel with the other ranks of `group` from now on: each rank
    /// takes its share of every global batch (`batch_size / world` rows; the per-rank
    /// batch must divide by `micro_batch` when set). Checks that every rank starts at
    /// the same place and gives every rank rank 0's parameters (as DDP does).
    pub fn join(&mut self, group: ProcessGroup) -> Result<(), TrainError> {
        self.config
            .per_rank_batch(group.rank().world)
            .map_err(|e| TrainError::Config(e.to_string()))?;
        let mut parallel = DataParallel::new(group);
        let position = [
            self.interval,
            self.step,
            self.optimizer.step,
            self.samples_seen,
        ];
        parallel.agree(
            "start (interval, step, optimizer step, samples)",
            &position.map(|v| v as i64),
        )?;
        let mut params: Vec<(String, Tensor)> = self.vs.variables().into_iter().collect();
        params.sort_by(|a, b| a.0.cmp(&b.0));
        let tensors: Vec<Tensor> = params.into_iter().map(|(_, t)| t).collect();
        parallel.broadcast_from_leader(&tensors)?;
        self.parallel = Some(parallel);
        Ok(())
    }

    /// Time this rank spent in collectives since the last call (zero when not
    /// data-parallel).
    pub fn take_comm_time(&mut self) -> std::time::Duration {
        self.parallel
            .as_mut()
            .map_or(std::time::Duration::ZERO, DataParallel::take_comm_time)
    }

    /// This process's rank (`None`: not data-parallel).
    pub fn rank(&self) -> Option<crate::dist::Rank> {
        self.parallel.as_ref().map(DataParallel::rank)
    }

    /// Whether matmuls and convolutions run in bf16.
    pub fn uses_bf16(&self) -> bool {
        self.compute.is_some()
    }

    /// One optimizer step on a global batch (on a rank of a data-parallel run: its
    /// share of it); returns the global batch's loss (before the update).
    pub fn train_step(&mut self, images: &Tensor, tokens: &Tensor) -> Result<f64, TrainError> {
        self.step_or_stop(images, tokens, false)?
            .ok_or(TrainError::Cancelled(self.step))
    }

    /// The loss of a global batch (on a rank: of its share of it) with its gradients
    /// left in the parameters' `.grad`, and no optimizer step: what a step computes
    /// before it updates (for tests and benchmarks).
    pub fn compute_gradients(
        &mut self,
        images: &Tensor,
        tokens: &Tensor,
    ) -> Result<f64, TrainError> {
        let (images, tokens) = self.checked_batch(images, tokens)?;
        self.optimizer.zero_grad();
        Ok(self.passes(&images, &tokens, false)?.loss)
    }

    /// The batch on this trainer's device, after checking it fits the model.
    fn checked_batch(
        &self,
        images: &Tensor,
        tokens: &Tensor,
    ) -> Result<(Tensor, Tensor), TrainError> {
        self.model
            .check_batch(Some(images), Some(tokens))
            .map_err(|e| TrainError::Batch {
                step: self.step,
                message: e.to_string(),
            })?;
        Ok((images.to_device(self.device), tokens.to_device(self.device)))
    }

    /// [`Trainer::train_step`], unless this rank (`stop`) or another asked to stop:
    /// then `None` and no update, on every rank at the same step.
    fn step_or_stop(
        &mut self,
        images: &Tensor,
        tokens: &Tensor,
        stop: bool,
    ) -> Result<Option<f64>, TrainError> {
        let (images, tokens) = self.checked_batch(images, tokens)?;
        let lr = self.config.schedule().lr(self.step);
        self.optimizer.zero_grad();
        let passes = self.passes(&images, &tokens, stop)?;
        if passes.stop {
            return Ok(None);
        }
        let value = passes.loss;
        if !value.is_finite() {
            return Err(TrainError::NonFinite {
                step: self.step,
                interval: self.interval,
                loss: value,
            });
        }
        if let Some(max_norm) = self.config.grad_clip_norm {
            clip_grad_norm(&self.optimizer.grads(), max_norm);
        }
        self.optimizer.step(lr);
        self.model.clamp_logit_scale();
        self.step += 1;
        let world = self.rank().map_or(1, |r| r.world as u64);
        self.samples_seen += images.size()[0] as u64 * world;
        Ok(Some(value))
    }

    /// The state a checkpoint written now records.
    pub fn state(&self) -> TrainState {
        TrainState {
            format: checkpoint::TRAIN_STATE_FORMAT.to_string(),
            interval: self.interval,
            step: self.step,
            adam_step: self.optimizer.step,
            samples_seen: self.samples_seen,
            batch_size: self.config.batch_size,
            samples_per_interval: self.config.samples_per_interval,
            steps_per_interval: self.config.steps_per_interval(),
            intervals: self.config.intervals,
            schedule: self.config.schedule(),
            optimizer: self.optimizer.config,
            grad_clip_norm: self.config.grad_clip_norm,
            seed: self.config.seed,
            model: self.config.model.clone(),
        }
    }

    /// Writes a checkpoint directory `dir` (created; must not exist).
    pub fn write_checkpoint(&self, dir: &Path) -> Result<(), TrainError> {
        TrainCheckpoint::write(
            dir,
            &self.vs,
            &self.optimizer.state_tensors(),
            &self.state(),
        )?;
        Ok(())
    }

    /// Trains from the current interval to the last, checkpointing into
    /// `work_dir/checkpoint-<interval>` and handing each to `hooks`. On a rank of a
    /// data-parallel run: trains on its share of each batch; rank 0 alone writes and
    /// commits each checkpoint (the others wait at a barrier) and reports metrics.
    pub fn run(
        &mut self,
        data: &mut dyn DataSource,
        work_dir: &Path,
        hooks: &mut dyn TrainHooks,
    ) -> Result<TrainOutcome, TrainError> {
        let spi = self.config.steps_per_interval();
        let total = spi * self.config.intervals;
        let start_interval = self.interval;
        let mut last_loss = None;
        let mut window = Window::start();
        hooks.progress(self.step, total);
        while self.interval < self.config.intervals {
            let mut batches = data
                .interval(self.interval, self.config.batch_size)
                .map_err(TrainError::Data)?;
            for i in 0..spi {
                // Alone, stop at once; with other ranks, stop together at the end of the
                // step's all-reduce.
                let stop = hooks.cancelled();
                if stop && self.parallel.is_none() {
                    return Err(TrainError::Cancelled(self.step));
                }
                let (images, tokens) = match batches.next() {
                    Some(Ok(b)) => self.share(b),
                    Some(Err(e)) => return Err(TrainError::Data(e)),
                    None => {
                        return Err(TrainError::Data(format!(
                            "interval {} ended after {i} of {spi} batches",
                            self.interval
                        )))
                    }
                };
                let lr = self.config.schedule().lr(self.step);
                let loss = self
                    .step_or_stop(&images, &tokens, stop)?
                    .ok_or(TrainError::Cancelled(self.step))?;
                last_loss = Some(loss);
                window.samples += self.config.batch_size;
                if self.step.is_multiple_of(self.config.log_every) || i + 1 == spi {
                    self.log_window(&mut window, loss, lr, hooks);
                }
                hooks.progress(self.step, total);
            }
            drop(batches);
            self.interval += 1;
            self.end_interval(work_dir, hooks)?;
        }
        Ok(TrainOutcome {
            steps: self.step,
            samples_seen: self.samples_seen,
            last_loss,
            intervals_trained: self.interval - start_interval,
        })
    }

    /// This rank's rows of a global batch (all of it when not data-parallel).
    fn share(&self, (images, tokens): (Tensor, Tensor)) -> (Tensor, Tensor) {
        match self.rank() {
            Some(r) if r.world > 1 => {
                let rows = images.size()[0] / r.world as i64;
                let start = r.rank as i64 * rows;
                (images.narrow(0, start, rows), tokens.narrow(0, start, rows))
            }
            _ => (images, tokens),
        }
    }

    /// A metrics record of the steps since `window` started (rank 0 only, the others
    /// log a line of their own). The loss is the global batch's (the sum of the ranks'
    /// weighted local losses); samples/s counts the global batch over rank 0's wall
    /// clock (the ranks move in lockstep); `comm_share` is rank 0's share of that time
    /// spent in collectives.
    fn log_window(&mut self, window: &mut Window, loss: f64, lr: f64, hooks: &mut dyn TrainHooks) {
        let secs = window.started.elapsed().as_secs_f64();
        let per_s = |n: f64| if secs > 0.0 { n / secs } else { 0.0 };
        let samples_per_s = per_s(window.samples as f64);
        let comm = self
            .parallel
            .as_mut()
            .map(|p| p.take_comm_time().as_secs_f64());
        let scale = self.model.logit_scale().double_value(&[]);
        match (self.rank(), comm) {
            (Some(r), Some(comm)) if !r.is_leader() => hooks.line(&format!(
                "{r}: step {} loss {loss:.5} {samples_per_s:.1} samples/s, {:.1}% of the time in collectives",
                self.step,
                100.0 * per_s(comm)
            )),
            _ => {
                let mut record = json!({
                    "step": self.step,
                    "interval": self.interval,
                    "samples": self.samples_seen,
                    "loss": loss,
                    "lr": lr,
                    "logit_scale": scale,
                    "scale": scale.exp(),
                    "samples_per_s": samples_per_s,
                });
                if let (Some(r), Some(comm)) = (self.rank(), comm) {
                    record["world"] = json!(r.world);
                    record["comm_share"] = json!(per_s(comm));
                }
                hooks.metrics(&record);
            }
        }
        *window = Window::start();
    }

    /// Writes and commits the checkpoint of the interval just finished (rank 0), then
    /// waits until every rank got here, so none runs ahead of a commit that failed.
    fn end_interval(
        &mut self,
        work_dir: &Path,
        hooks: &mut dyn TrainHooks,
    ) -> Result<(), TrainError> {
        if self.rank().is_none_or(|r| r.is_leader()) {
            let dir = work_dir.join(format!("checkpoint-{:06}", self.interval));
            if dir.exists() {
                std::fs::remove_dir_all(&dir).map_err(|e| CheckpointError::Io {
                    path: dir.clone(),
                    source: e,
                })?;
            }
            self.write_checkpoint(&dir)?;
            hooks
                .checkpoint(self.interval, &dir)
                .map_err(|message| TrainError::Commit {
                    interval: self.interval,
                    message,
                })?;
        }
        if let Some(p) = self.parallel.as_mut() {
            p.barrier()?;
            // The barrier waited for a checkpoint write, not for communication.
            p.take_comm_time();
        }
        Ok(())
    }
}

/// The steps since the last metrics record.
struct Window {
    started: Instant,
    samples: u64,
}

impl Window {
    fn start() -> Window {
        Window {
            started: Instant::now(),
            samples: 0,
        }
    }
}
