//! The training loop at library level: AdamW against torch.optim.AdamW, resume
//! equivalence, exact gradient accumulation, non-finite losses and rewinds.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use tch::nn::{Init, VarStore};
use tch::{Device, Kind, Tensor};
use tureen_torch::checkpoint::{tensor_file, TrainState, MODEL_FILE, OPTIMIZER_FILE};
use tureen_torch::model::{ClipConfig, MlpKind, ProjKind, TextConfig, VisionConfig};
use tureen_torch::train::data::Batches;
use tureen_torch::train::{
    AdamW, AdamWConfig, DataSource, Precision, Schedule, Start, StepRounding, SyntheticSource,
    TrainConfig, TrainError, TrainHooks, Trainer,
};

/// A CLIP small enough that a step takes milliseconds.
fn tiny_model() -> ClipConfig {
    ClipConfig {
        embed_dim: 16,
        vision: VisionConfig {
            timm_model_name: None,
            depths: vec![1, 2],
            dims: vec![8, 16],
            mlp: MlpKind::Conv1x1,
            mlp_ratio: 4,
            kernel_size: 7,
            ls_init_value: Some(1e-6),
            norm_eps: 1e-6,
            drop_path: 0.1,
            image_size: 16,
            patch_size: 4,
            proj: ProjKind::Linear,
            proj_bias: false,
        },
        text: TextConfig {
            context_length: 8,
            vocab_size: 64,
            width: 16,
            heads: 2,
            layers: 1,
            mlp_ratio: 4,
            norm_eps: 1e-5,
        },
        init_logit_scale: (1.0f64 / 0.07).ln(),
    }
}

fn tiny_config() -> TrainConfig {
    TrainConfig {
        model: tiny_model(),
        batch_size: 4,
        micro_batch: None,
        samples_per_interval: 8,
        step_rounding: StepRounding::Ceil,
        intervals: 3,
        lr: 5e-3,
        warmup: 2,
        optimizer: AdamWConfig::default(),
        grad_clip_norm: Some(1.0),
        seed: 3,
        precision: Precision::Fp32,
        log_every: 1,
    }
}

fn synthetic(cfg: &TrainConfig) -> SyntheticSource {
    SyntheticSource {
        seed: cfg.seed,
        image_size: cfg.model.vision.image_size,
        context_length: cfg.model.text.context_length,
        vocab_size: cfg.model.text.vocab_size,
        fixed: false,
    }
}

/// Records metrics and checkpoint directories; optionally stops after an interval.
#[derive(Default)]
struct Recorder {
    metrics: Vec<serde_json::Value>,
    checkpoints: Vec<PathBuf>,
    stop_after: Option<u64>,
}

impl TrainHooks for Recorder {
    fn metrics(&mut self, record: &serde_json::Value) {
        self.metrics.push(record.clone());
    }
    fn progress(&mut self, _done: u64, _total: u64) {}
    fn checkpoint(&mut self, interval: u64, dir: &Path) -> Result<(), String> {
        self.checkpoints.push(dir.to_path_buf());
        if self.stop_after == Some(interval) {
            // Behave like a kill right after the commit: nothing else happens.
            return Err("stopped by the test".into());
        }
        Ok(())
    }
    fn cancelled(&self) -> bool {
        false
    }
}

/// libtorch's generator is process-global and the trainer re-seeds it every step, so
/// tests that train must not interleave.
static TORCH_RNG: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    TORCH_RNG.lock().unwrap_or_else(|e| e.into_inner())
}

fn bytes(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn interrupted_and_resumed_run_ends_bit_identical_to_an_uninterrupted_one() {
    let _serial = serial();
    let cfg = tiny_config();
    let a = tempfile::tempdir().unwrap();
    let mut whole = Trainer::new(cfg.clone(), Device::Cpu, &Start::Fresh).unwrap();
    let mut rec = Recorder::default();
    whole.run(&mut synthetic(&cfg), a.path(), &mut rec).unwrap();
    assert_eq!(rec.checkpoints.len(), 3);
    assert_eq!(whole.step, 6);

    let b = tempfile::tempdir().unwrap();
    let mut first = Trainer::new(cfg.clone(), Device::Cpu, &Start::Fresh).unwrap();
    let mut rec1 = Recorder {
        stop_after: Some(1),
        ..Default::default()
    };
    let err = first
        .run(&mut synthetic(&cfg), b.path(), &mut rec1)
        .unwrap_err();
    assert!(
        matches!(err, TrainError::Commit { interval: 1, .. }),
        "{err}"
    );
    drop(first);
    let mut resumed = Trainer::new(
        cfg.clone(),
        Device::Cpu,
        &Start::Resume(rec1.checkpoints[0].clone()),
    )
    .unwrap();
    assert_eq!(
        (resumed.interval, resumed.step, resumed.optimizer.step),
        (1, 2, 2)
    );
    let mut rec2 = Recorder::default();
    resumed
        .run(&mut synthetic(&cfg), b.path(), &mut rec2)
        .unwrap();
    assert_eq!(rec2.checkpoints.len(), 2);

    let (x, y) = (&rec.checkpoints[2], &rec2.checkpoints[1]);
    assert!(
        bytes(&x.join(MODEL_FILE)) == bytes(&y.join(MODEL_FILE)),
        "final weights differ"
    );
    assert!(
        bytes(&x.join(OPTIMIZER_FILE)) == bytes(&y.join(OPTIMIZER_FILE)),
        "final optimizer state differs"
    );
    assert_eq!(TrainState::read(x).unwrap(), TrainState::read(y).unwrap());
    // The metrics of the resumed part equal the uninterrupted run's.
    let losses = |m: &[serde_json::Value]| {
        m.iter()
            .map(|r| r["loss"].as_f64().unwrap())
            .collect::<Vec<_>>()
    };
    assert_eq!(losses(&rec.metrics)[2..], losses(&rec2.metrics)[..]);
}

#[test]
fn same_seed_same_bytes_other_seed_other_bytes() {
    let _serial = serial();
    let cfg = tiny_config();
    let run = |cfg: &TrainConfig| {
        let d = tempfile::tempdir().unwrap();
        let mut t = Trainer::new(
            TrainConfig {
                intervals: 1,
                ..cfg.clone()
            },
            Device::Cpu,
            &Start::Fresh,
        )
        .unwrap();
        let mut rec = Recorder::default();
        t.run(&mut synthetic(cfg), d.path(), &mut rec).unwrap();
        bytes(&rec.checkpoints[0].join(MODEL_FILE))
    };
    assert!(run(&cfg) == run(&cfg));
    assert!(
        run(&cfg)
            != run(&TrainConfig {
                seed: 4,
                ..cfg.clone()
            })
    );
}

#[test]
fn gradient_accumulation_gives_the_full_batch_update() {
    let _serial = serial();
    let mut cfg = tiny_config();
    cfg.model.vision.drop_path = 0.0; // masks are drawn per micro-batch
    cfg.batch_size = 8;
    cfg.samples_per_interval = 16;
    cfg.intervals = 1;
    let run = |micro: Option<u64>| {
        let d = tempfile::tempdir().unwrap();
        let mut t = Trainer::new(
            TrainConfig {
                micro_batch: micro,
                ..cfg.clone()
            },
            Device::Cpu,
            &Start::Fresh,
        )
        .unwrap();
        let mut rec = Recorder::default();
        t.run(&mut synthetic(&cfg), d.path(), &mut rec).unwrap();
        let losses: Vec<f64> = rec
            .metrics
            .iter()
            .map(|r| r["loss"].as_f64().unwrap())
            .collect();
        (
            tensor_file::read(&rec.checkpoints[0].join(MODEL_FILE))
                .unwrap()
                .tensors,
            losses,
        )
    };
    let (full, full_loss) = run(None);
    let (accum, accum_loss) = run(Some(3)); // 3 + 3 + 2
    for (a, b) in full_loss.iter().zip(&accum_loss) {
        assert!((a - b).abs() < 1e-5, "loss {a} vs {b}");
    }
    for (name, t) in &full {
        let diff = (t - &accum[name]).abs().max().double_value(&[]);
        assert!(diff < 1e-5, "{name}: max difference {diff}");
    }
}

/// Yields good batches, then one with a NaN image.
struct PoisonAt {
    inner: SyntheticSource,
    bad_step: u64,
    steps_per_interval: u64,
}

impl DataSource for PoisonAt {
    fn interval(&mut self, interval: u64, batch_size: u64) -> Result<Batches<'_>, String> {
        let (bad, spi) = (self.bad_step, self.steps_per_interval);
        let it = self.inner.interval(interval, batch_size)?;
        Ok(Box::new(it.enumerate().map(move |(i, b)| {
            let (images, tokens) = b?;
            let images = if interval * spi + i as u64 == bad {
                images.fill(f64::NAN)
            } else {
                images
            };
            Ok((images, tokens))
        })))
    }
}

#[test]
fn a_nan_loss_stops_with_the_step_and_keeps_the_last_good_checkpoint() {
    let _serial = serial();
    let cfg = tiny_config();
    let d = tempfile::tempdir().unwrap();
    let mut t = Trainer::new(cfg.clone(), Device::Cpu, &Start::Fresh).unwrap();
    let mut rec = Recorder::default();
    let mut data = PoisonAt {
        inner: synthetic(&cfg),
        bad_step: 3,
        steps_per_interval: 2,
    };
    let err = t.run(&mut data, d.path(), &mut rec).unwrap_err();
    assert!(
        matches!(
            err,
            TrainError::NonFinite {
                step: 3,
                interval: 1,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("step 3"), "{err}");
    assert_eq!(rec.checkpoints.len(), 1, "only interval 1 completed");
    // The kept checkpoint is loadable and finite.
    let w = tensor_file::read(&rec.checkpoints[0].join(MODEL_FILE)).unwrap();
    assert!(w
        .tensors
        .values()
        .all(|t| t.isfinite().all().int64_value(&[]) == 1));
}

#[test]
fn rewind_recomputes_the_schedule_and_keeps_adamw_hyperparameters() {
    let _serial = serial();
    let core_cfg = TrainConfig {
        optimizer: AdamWConfig {
            beta2: 0.97,
            ..AdamWConfig::default()
        },
        ..tiny_config()
    };
    let d = tempfile::tempdir().unwrap();
    let mut core = Trainer::new(core_cfg.clone(), Device::Cpu, &Start::Fresh).unwrap();
    let mut rec = Recorder::default();
    core.run(&mut synthetic(&core_cfg), d.path(), &mut rec)
        .unwrap();

    // Rewind from interval 1 with batch 6 (ceil(8 / 6) = 2 steps per interval), 2x lr.
    let rewind_cfg = TrainConfig {
        batch_size: 6,
        lr: 1e-2,
        ..tiny_config()
    };
    let e = tempfile::tempdir().unwrap();
    let mut rw = Trainer::new(
        rewind_cfg.clone(),
        Device::Cpu,
        &Start::Rewind(rec.checkpoints[0].clone()),
    )
    .unwrap();
    assert_eq!(rw.interval, 1);
    assert_eq!(rw.step, 2);
    assert_eq!(rw.optimizer.step, 2, "AdamW's step count continues");
    assert_eq!(
        rw.optimizer.config.beta2, 0.97,
        "betas come from the checkpoint"
    );
    let mut rrec = Recorder::default();
    rw.run(&mut synthetic(&rewind_cfg), e.path(), &mut rrec)
        .unwrap();
    assert_eq!(rrec.checkpoints.len(), 2);
    let expected = Schedule {
        base_lr: 1e-2,
        warmup_steps: 2,
        total_steps: 2 * 3,
    };
    assert_eq!(rrec.metrics[0]["lr"].as_f64().unwrap(), expected.lr(2));
    let state = TrainState::read(&rrec.checkpoints[1]).unwrap();
    assert_eq!(
        (
            state.interval,
            state.step,
            state.adam_step,
            state.batch_size
        ),
        (3, 6, 6, 6)
    );
    assert_eq!(state.samples_seen, 8 + 4 * 6);
    assert_eq!(state.optimizer.beta2, 0.97);
}

fn python() -> Option<PathBuf> {
    let py = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python");
    if py.exists() {
        return Some(py);
    }
    if std::env::var("TUREEN_SKIP_PARITY").as_deref() == Ok("1") {
        return None;
    }
    panic!(
        "AdamW parity needs {} (scripts/setup-venv.sh), or TUREEN_SKIP_PARITY=1",
        py.display()
    );
}

#[test]
fn adamw_matches_torch_optim_adamw_bit_for_bit() {
    let _serial = serial();
    let Some(py) = python() else { return };
    let vs = VarStore::new(Device::Cpu);
    let root = vs.root();
    tch::manual_seed(11);
    let shapes: &[(&str, &[i64])] = &[
        ("blk.fc.weight", &[5, 7]),
        ("blk.fc.bias", &[5]),
        ("blk.ln_1.weight", &[7]),
        ("conv.weight", &[3, 2, 3, 3]),
        ("logit_scale", &[]),
    ];
    let params: Vec<(String, Tensor)> = shapes
        .iter()
        .map(|(n, s)| {
            let (dir, leaf) = n.rsplit_once('.').unwrap_or(("", n));
            let path = dir
                .split('.')
                .filter(|c| !c.is_empty())
                .fold(root.clone(), |p, c| p / c);
            (
                n.to_string(),
                path.var(
                    leaf,
                    s,
                    Init::Randn {
                        mean: 0.0,
                        stdev: 1.0,
                    },
                ),
            )
        })
        .collect();
    let cfg = AdamWConfig {
        beta1: 0.9,
        beta2: 0.98,
        eps: 1e-6,
        weight_decay: 0.2,
    };
    let mut opt = AdamW::new(&vs, cfg);
    let decayed: Vec<String> = opt.decayed().map(String::from).collect();
    assert_eq!(
        decayed,
        vec!["blk.fc.weight".to_string(), "conv.weight".to_string()]
    );

    let lrs = [1e-3, 2e-3, 3e-3, 5e-4, 1e-4];
    let mut file: BTreeMap<String, Tensor> = BTreeMap::new();
    for (n, p) in &params {
        file.insert(format!("param.{n}"), p.detach().copy());
    }
    for (step, &lr) in lrs.iter().enumerate() {
        opt.zero_grad();
        let mut loss = Tensor::zeros([], (Kind::Float, Device::Cpu));
        for (n, p) in &params {
            let g = Tensor::randn(p.size(), (Kind::Float, Device::Cpu)) * (step as f64 + 1.0);
            file.insert(format!("grad.{step}.{n}"), g.copy());
            // Not `+=`: tch's `AddAssign` adds in place, outside the autograd graph.
            #[allow(clippy::assign_op_pattern)]
            {
                loss = loss + (p * g).sum(Kind::Float);
            }
        }
        loss.backward();
        opt.step(lr);
    }
    let d = tempfile::tempdir().unwrap();
    let input = d.path().join("in.safetensors");
    tensor_file::write(&input, &file, &BTreeMap::new()).unwrap();
    let cfg_json = serde_json::json!({"lrs": lrs, "beta1": 0.9, "beta2": 0.98, "eps": 1e-6, "weight_decay": 0.2, "decay": decayed});
    std::fs::write(d.path().join("cfg.json"), cfg_json.to_string()).unwrap();
    let out = d.path().join("out.safetensors");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/parity/adamw_reference.py");
    let status = Command::new(&py)
        .arg(script)
        .arg(&input)
        .arg(&out)
        .arg(d.path().join("cfg.json"))
        .output()
        .unwrap();
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
    let torch = tensor_file::read(&out).unwrap().tensors;
    let ours = opt.state_tensors();
    for (n, p) in &params {
        let t = &torch[&format!("param.{n}")];
        assert!(
            p.detach().equal(t),
            "param {n} differs: max {}",
            (p.detach() - t).abs().max().double_value(&[])
        );
        for key in ["exp_avg", "exp_avg_sq"] {
            let k = format!("{key}.{n}");
            assert!(ours[&k].equal(&torch[&k]), "{k} differs");
        }
    }
}
