//! The training loop shared by the `train` and `rewind` kinds.

use std::path::{Path, PathBuf};
use std::time::Instant;
use tureen_stages::device::DeviceSpec;

use serde_json::json;
use tch::nn::VarStore;
use tch::{Device, Kind, Tensor};
use tureen_stages::train::{Precision, TrainConfig};

use super::adamw::AdamW;
use super::data::DataSource;
use crate::checkpoint::{self, CheckpointError, TrainCheckpoint, TrainState};
use crate::model::{amp, clip_loss, Clip};

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

/// Errors of a training run.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error("invalid training config: {0}")]
    Config(String),
    #[error("loss is {loss} at step {step} (interval {interval}); stopped, the last good checkpoint is kept")]
    NonFinite { step: u64, interval: u64, loss: f64 },
    #[error("data: {0}")]
    Data(String),
    #[error("batch at step {step}: {message}")]
    Batch { step: u64, message: String },
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    #[error("checkpoint {path}: {message}")]
    Incompatible { path: PathBuf, message: String },
    #[error("cancelled at step {0}")]
    Cancelled(u64),
    #[error("committing checkpoint of interval {interval}: {message}")]
    Commit { interval: u64, message: String },
}

/// How the trainer talks to its host (the stage context, or a test).
pub trait TrainHooks {
    fn metrics(&mut self, record: &serde_json::Value);
    fn progress(&mut self, done: u64, total: u64);
    /// A finished checkpoint directory for interval `interval` (1-based); store it.
    fn checkpoint(&mut self, interval: u64, dir: &Path) -> Result<(), String>;
    fn cancelled(&self) -> bool;
}

/// What a finished run reports.
#[derive(Debug, Clone)]
pub struct TrainOutcome {
    pub steps: u64,
    pub samples_seen: u64,
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

/// The seed of libtorch's generator for one forward pass (and the initial weights).
pub(crate) use tureen_stages::rng::mix;

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
    pub config: TrainConfig,
    pub device: Device,
    pub vs: VarStore,
    pub model: Clip,
    pub optimizer: AdamW,
    /// Intervals completed.
    pub interval: u64,
    /// Schedule position (optimizer steps in the current schedule's terms).
    pub step: u64,
    pub samples_seen: u64,
    compute: Option<Kind>,
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
            compute,
        };
        match start {
            Start::Fresh => {}
            Start::Resume(dir) => trainer.restore(dir, false)?,
            Start::Rewind(dir) => trainer.restore(dir, true)?,
            Start::RewindFresh(from) => checkpoint::rewind::fresh(&mut trainer, from)?,
        }
        Ok(trainer)
    }

    fn restore(&mut self, dir: &Path, rewind: bool) -> Result<(), TrainError> {
        if rewind && checkpoint::open_clip::is_torch_save(dir) {
            return checkpoint::rewind::from_torch_save(self, dir, false);
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

    /// Loss of one global batch with gradients accumulated into the parameters.
    fn forward_backward(&self, images: &Tensor, tokens: &Tensor) -> Tensor {
        let b = images.size()[0];
        let micro = self.config.micro_batch.map_or(b, |m| m as i64).min(b);
        let seed = self.config.seed;
        let step = self.step;
        let reseed = |j: u64| {
            self.model
                .seed_stochastic_depth(mix(&[seed, 0xd409, step, j]))
        };
        if micro >= b {
            reseed(0);
            let loss = amp::autocast(self.compute, || self.model.loss(images, tokens, true));
            loss.backward();
            return loss;
        }
        // Exact accumulation over the global batch (GradCache, as open_clip's
        // accum_freq): features of every micro-batch first without gradients, then each
        // micro-batch again with gradients against the cached features of the others.
        // Unlike open_clip, logit_scale's gradient is counted once, so the update equals
        // the one of a single pass over the whole batch.
        let image_chunks = images.split(micro, 0);
        let token_chunks = tokens.split(micro, 0);
        let mut cached_images = Vec::with_capacity(image_chunks.len());
        let mut cached_texts = Vec::with_capacity(image_chunks.len());
        tch::no_grad(|| {
            for (j, (im, tk)) in image_chunks.iter().zip(&token_chunks).enumerate() {
                reseed(j as u64);
                amp::autocast(self.compute, || {
                    cached_images.push(self.model.encode_image(im, true));
                    cached_texts.push(self.model.encode_text(tk));
                });
            }
        });
        let mut first_loss = None;
        for (j, (im, tk)) in image_chunks.iter().zip(&token_chunks).enumerate() {
            reseed(j as u64);
            let loss = amp::autocast(self.compute, || {
                let fi = self.model.encode_image(im, true);
                let ft = self.model.encode_text(tk);
                let mut all_i: Vec<Tensor> =
                    cached_images.iter().map(|t| t.shallow_clone()).collect();
                let mut all_t: Vec<Tensor> =
                    cached_texts.iter().map(|t| t.shallow_clone()).collect();
                all_i[j] = fi;
                all_t[j] = ft;
                let scale = if j == 0 {
                    self.model.logit_scale().shallow_clone()
                } else {
                    self.model.logit_scale().detach()
                };
                clip_loss(&Tensor::cat(&all_i, 0), &Tensor::cat(&all_t, 0), &scale)
            });
            loss.backward();
            first_loss.get_or_insert(loss);
        }
        first_loss.expect("at least one micro-batch")
    }

    /// Whether matmuls and convolutions run in bf16.
    pub fn uses_bf16(&self) -> bool {
        self.compute.is_some()
    }

    /// One optimizer step on a global batch; returns the loss (before the update).
    pub fn train_step(&mut self, images: &Tensor, tokens: &Tensor) -> Result<f64, TrainError> {
        self.model
            .check_batch(Some(images), Some(tokens))
            .map_err(|e| TrainError::Batch {
                step: self.step,
                message: e.to_string(),
            })?;
        let images = images.to_device(self.device);
        let tokens = tokens.to_device(self.device);
        let lr = self.config.schedule().lr(self.step);
        self.optimizer.zero_grad();
        let loss = self.forward_backward(&images, &tokens);
        let value = loss.double_value(&[]);
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
        self.samples_seen += images.size()[0] as u64;
        Ok(value)
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
    /// `work_dir/checkpoint-<interval>` and handing each to `hooks`.
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
        let mut window_start = Instant::now();
        let mut window_samples = 0u64;
        hooks.progress(self.step, total);
        while self.interval < self.config.intervals {
            let mut batches = data
                .interval(self.interval, self.config.batch_size)
                .map_err(TrainError::Data)?;
            for i in 0..spi {
                if hooks.cancelled() {
                    return Err(TrainError::Cancelled(self.step));
                }
                let (images, tokens) = match batches.next() {
                    Some(Ok(b)) => b,
                    Some(Err(e)) => return Err(TrainError::Data(e)),
                    None => {
                        return Err(TrainError::Data(format!(
                            "interval {} ended after {i} of {spi} batches",
                            self.interval
                        )))
                    }
                };
                let lr = self.config.schedule().lr(self.step);
                let loss = self.train_step(&images, &tokens)?;
                last_loss = Some(loss);
                window_samples += self.config.batch_size;
                if self.step.is_multiple_of(self.config.log_every) || i + 1 == spi {
                    let secs = window_start.elapsed().as_secs_f64();
                    let scale = self.model.logit_scale().double_value(&[]);
                    hooks.metrics(&json!({
                        "step": self.step,
                        "interval": self.interval,
                        "samples": self.samples_seen,
                        "loss": loss,
                        "lr": lr,
                        "logit_scale": scale,
                        "scale": scale.exp(),
                        "samples_per_s": if secs > 0.0 { window_samples as f64 / secs } else { 0.0 },
                    }));
                    window_start = Instant::now();
                    window_samples = 0;
                }
                hooks.progress(self.step, total);
            }
            drop(batches);
            self.interval += 1;
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
        Ok(TrainOutcome {
            steps: self.step,
            samples_seen: self.samples_seen,
            last_loss,
            intervals_trained: self.interval - start_interval,
        })
    }
}
