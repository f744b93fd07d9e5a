//! `kind: open_clip`: open_clip's own trainer (`python -m open_clip_train.main`) as a
//! stage, with the model card's flags as params.
//!
//! ```yaml
//! core:
//!   kind: open_clip
//!   inputs: {data: synth.data}                # shard patterns are relative to it
//!   params:
//!     train_data: "train/{000000..000007}.tar" # --train-data (webdataset)
//!     train_num_samples: 135646078             # --train-num-samples (one epoch)
//!     batch_size: 64                           # --batch-size, per GPU
//!     epochs: 256                              # --epochs
//!     warmup: 10000                            # --warmup (steps)
//!     lr: 1.0e-3                               # --lr
//!     beta2: 0.98                              # --beta2 (also beta1, eps, wd)
//!     grad_clip_norm: 5.0                      # --grad-clip-norm
//!     precision: amp_bf16                      # --precision (default amp, as open_clip)
//!     aug_cfg: {scale: [0.33, 1.0], re_prob: 0.35}   # --aug-cfg scale='(0.33, 1.0)' re_prob=0.35
//!     model: convnext_xxlarge                  # a tureen model config (preset or object)
//!     seed: 0                                  # --seed
//!     local_loss: true                         # --local-loss
//!     gather_with_grad: true                   # --gather-with-grad
//!     grad_checkpointing: true                 # --grad-checkpointing
//!     workers: 1                               # --workers
//!     device: cpu                              # --device (default: open_clip's, cuda)
//!     python: .venv/bin/python                 # default: python3 on PATH
//!     extra_args: ["--log-every-n-steps", "10"]   # passed through
//! ```
//!
//! `model` is a tureen model config, written as `open_clip_config.json` into the stage's
//! work directory and passed as `--model local-dir:DIR`, so the checkpoints load as that
//! model in `eval`, `rewind` and greedy soups (given the same `model:`). The trainer runs
//! locally as one process, or inside a Slurm allocation under `srun` with one task per
//! GPU (see [`launch`]). It always runs with `--save-frequency 1 --resume latest`: each
//! `epoch_N.pt` is committed to the store as soon as it is complete (the private `watch` module), and
//! a stage killed mid-run resumes from its last committed epoch and keeps its series.
//! Outputs: `checkpoints` (every epoch's `.pt`, in order) and `final` (the last).

mod estimate;
mod launch;
mod watch;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use serde::Deserialize;
use serde_json::{Map, Value};
use tureen_engine::kind::estimate::{EstimateInputs, StageEstimate};
use tureen_engine::kind::{
    InputValue, OutputDecl, OutputShape, ParamError, Produced, StageContext, StageDecl, StageKind,
    StageWork,
};

use super::command::supervise;
use super::supervisor;
use crate::model::config_from_json;

pub use launch::{launch, master_port, Environment, Launch, System};

/// The `open_clip` kind: open_clip's Python trainer as a stage, each epoch's checkpoint
/// committed as it completes.
pub struct OpenClipKind;

/// The name of the kind in pipeline files.
pub const NAME: &str = "open_clip";

/// The params (see the module docs).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpenClipParams {
    /// `--train-data`: webdataset shard patterns (`::`-separated); relative ones resolve
    /// against the `data` input.
    pub train_data: String,
    /// `--train-num-samples`: samples per epoch (a checkpoint per epoch); at least 1.
    pub train_num_samples: u64,
    /// `--batch-size`: samples per step *per GPU* (open_clip's meaning, unlike
    /// `train`'s global `batch_size`); at least 1.
    pub batch_size: u64,
    /// `--epochs`: epochs to train, so the number of `checkpoints`; at least 1.
    pub epochs: u64,
    /// `--lr`: peak learning rate; positive.
    pub lr: f64,
    /// `--warmup`: warmup steps (default 0).
    #[serde(default)]
    pub warmup: u64,
    /// `--beta1`; absent: open_clip's default for the model.
    pub beta1: Option<f64>,
    /// `--beta2`; absent: open_clip's default for the model.
    pub beta2: Option<f64>,
    /// `--eps`; absent: open_clip's default for the model.
    pub eps: Option<f64>,
    /// `--wd` (weight decay); absent: open_clip's default.
    pub wd: Option<f64>,
    /// `--grad-clip-norm`; absent: no clipping.
    pub grad_clip_norm: Option<f64>,
    /// `--precision` as open_clip spells it (`amp`, `amp_bf16`, `fp32`...); absent:
    /// open_clip's default (`amp`).
    pub precision: Option<String>,
    /// `--aug-cfg`: each key becomes `key=<Python literal>` (numbers, strings, bools,
    /// lists of numbers as tuples).
    #[serde(default)]
    pub aug_cfg: Map<String, Value>,
    /// A tureen model config (preset name or object), written as open_clip's model
    /// config; it must have an open_clip equivalent.
    pub model: Value,
    /// `--seed` (default 0).
    #[serde(default)]
    pub seed: u64,
    /// `--local-loss`: each GPU computes the loss of its own rows against the gathered
    /// features, not the full global matrix.
    #[serde(default)]
    pub local_loss: bool,
    /// `--gather-with-grad`: gather features across GPUs with their gradients.
    #[serde(default)]
    pub gather_with_grad: bool,
    /// `--grad-checkpointing`: recompute activations in the backward pass.
    #[serde(default)]
    pub grad_checkpointing: bool,
    /// `--dataset-resampled`: draw shards with replacement.
    #[serde(default)]
    pub dataset_resampled: bool,
    /// `--workers`: data loader processes per GPU (default 1).
    pub workers: Option<u64>,
    /// `--device`; absent: open_clip's default (cuda).
    pub device: Option<String>,
    /// The Python to run (default `python3` on PATH; a relative path with a `/` is taken
    /// relative to the pipeline's directory).
    pub python: Option<String>,
    /// Arguments appended as they are, after all the others.
    #[serde(default)]
    pub extra_args: Vec<String>,
}

impl OpenClipParams {
    /// Parses and checks params; errors name the param.
    pub fn from_params(params: &Map<String, Value>) -> Result<OpenClipParams, ParamError> {
        let p: OpenClipParams = crate::params::deserialize(params)?;
        for (name, v) in [
            ("batch_size", p.batch_size),
            ("epochs", p.epochs),
            ("train_num_samples", p.train_num_samples),
        ] {
            if v == 0 {
                return Err(ParamError::param(name, "must be at least 1"));
            }
        }
        if !(p.lr > 0.0 && p.lr.is_finite()) {
            return Err(ParamError::param("lr", "must be a positive number"));
        }
        p.open_clip_config()?;
        for (k, v) in &p.aug_cfg {
            aug_value(v).ok_or_else(|| {
                ParamError::param(
                    format!("aug_cfg.{k}"),
                    "expected a number, string, bool or list of numbers",
                )
            })?;
        }
        Ok(p)
    }

    /// `open_clip_config.json` for `--model local-dir:`.
    pub fn open_clip_config(&self) -> Result<Value, ParamError> {
        let cfg = config_from_json(&self.model).map_err(crate::params::model_error)?;
        let kwargs = cfg.open_clip_kwargs().ok_or_else(|| {
            ParamError::param(
                "model",
                "this config has no open_clip equivalent (open_clip builds timm ConvNeXt towers with the standard block settings)",
            )
        })?;
        Ok(serde_json::json!({ "model_cfg": kwargs }))
    }

    /// The arguments after `python -m open_clip_train.main`.
    pub fn args(&self, train_data: &str, model_dir: &Path, logs: &Path) -> Vec<String> {
        let mut a: Vec<String> = vec![
            "--train-data".into(),
            train_data.into(),
            "--dataset-type".into(),
            "webdataset".into(),
            "--train-num-samples".into(),
            self.train_num_samples.to_string(),
            "--batch-size".into(),
            self.batch_size.to_string(),
            "--epochs".into(),
            self.epochs.to_string(),
            "--warmup".into(),
            self.warmup.to_string(),
            "--lr".into(),
            format!("{:?}", self.lr),
            "--seed".into(),
            self.seed.to_string(),
            "--workers".into(),
            self.workers.unwrap_or(1).to_string(),
            "--model".into(),
            format!("local-dir:{}", model_dir.display()),
            "--logs".into(),
            logs.display().to_string(),
            "--name".into(),
            RUN_NAME.into(),
            "--save-frequency".into(),
            "1".into(),
            "--resume".into(),
            "latest".into(),
        ];
        let numbers = [
            ("--beta1", self.beta1),
            ("--beta2", self.beta2),
            ("--eps", self.eps),
            ("--wd", self.wd),
            ("--grad-clip-norm", self.grad_clip_norm),
        ];
        for (flag, v) in numbers {
            if let Some(v) = v {
                a.extend([flag.to_string(), format!("{v:?}")]);
            }
        }
        for (flag, v) in [("--precision", &self.precision), ("--device", &self.device)] {
            if let Some(v) = v {
                a.extend([flag.to_string(), v.clone()]);
            }
        }
        for (flag, on) in [
            ("--local-loss", self.local_loss),
            ("--gather-with-grad", self.gather_with_grad),
            ("--grad-checkpointing", self.grad_checkpointing),
            ("--dataset-resampled", self.dataset_resampled),
        ] {
            if on {
                a.push(flag.into());
            }
        }
        if !self.aug_cfg.is_empty() {
            a.push("--aug-cfg".into());
            for (k, v) in &self.aug_cfg {
                a.push(format!(
                    "{k}={}",
                    aug_value(v).expect("checked by from_params")
                ));
            }
        }
        a.extend(self.extra_args.iter().cloned());
        a
    }
}

/// The experiment name under `--logs`: checkpoints go to `logs/run/checkpoints`.
const RUN_NAME: &str = "run";

/// An `--aug-cfg` value as the Python literal open_clip's parser evaluates.
fn aug_value(v: &Value) -> Option<String> {
    Some(match v {
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => if *b { "True" } else { "False" }.into(),
        Value::String(s) => format!("{s:?}"),
        Value::Array(items) => {
            let parts: Option<Vec<String>> = items
                .iter()
                .map(|x| x.as_f64().map(|_| x.to_string()))
                .collect();
            format!("({})", parts?.join(", "))
        }
        _ => return None,
    })
}

/// `train_data` with relative shard patterns resolved against the data input.
fn resolve_shards(pattern: &str, base: Option<&Path>) -> anyhow::Result<String> {
    let parts: Vec<String> = pattern
        .split("::")
        .map(|p| {
            let p = p.trim();
            if p.starts_with("pipe:") || Path::new(p).is_absolute() {
                return Ok(p.to_string());
            }
            let base = base.ok_or_else(|| {
                anyhow::anyhow!("inputs.data: required (the directory `params.train_data` {p:?} is relative to)")
            })?;
            Ok(base.join(p).display().to_string())
        })
        .collect::<anyhow::Result<_>>()?;
    Ok(parts.join("::"))
}

fn needs_data_input(pattern: &str) -> bool {
    pattern
        .split("::")
        .map(str::trim)
        .any(|p| !p.starts_with("pipe:") && !Path::new(p).is_absolute())
}

impl StageKind for OpenClipKind {
    fn name(&self) -> &'static str {
        NAME
    }

    fn code_version(&self) -> &'static str {
        "1"
    }

    fn validate(&self, decl: &StageDecl<'_>) -> Result<(), ParamError> {
        let p = OpenClipParams::from_params(decl.params)?;
        if let Some(other) = decl.input_names.iter().find(|n| **n != "data") {
            return Err(ParamError::input(
                *other,
                "unknown input (an open_clip stage takes `data`)",
            ));
        }
        if needs_data_input(&p.train_data) && !decl.input_names.contains(&"data") {
            return Err(ParamError::input(
                "data",
                "required (the dataset directory `params.train_data` is relative to)",
            ));
        }
        Ok(())
    }

    fn outputs(&self, decl: &StageDecl<'_>) -> Vec<OutputDecl> {
        let epochs = decl.params.get("epochs").and_then(Value::as_u64);
        vec![
            OutputDecl {
                name: "checkpoints".into(),
                shape: OutputShape::Series,
                len: epochs.map(|n| n as usize),
            },
            OutputDecl {
                name: "final".into(),
                shape: OutputShape::One,
                len: None,
            },
        ]
    }

    fn estimate(
        &self,
        decl: &StageDecl<'_>,
        inputs: &EstimateInputs<'_>,
    ) -> Result<Option<StageEstimate>, ParamError> {
        estimate::estimate(decl, inputs)
    }
}

impl StageWork for OpenClipKind {
    fn run(&self, ctx: &mut StageContext<'_>) -> anyhow::Result<BTreeMap<String, Produced>> {
        let p = OpenClipParams::from_params(ctx.params)?;
        let base = match ctx.inputs.get("data") {
            Some(InputValue::One(a)) => Some(a.path.clone()),
            Some(InputValue::Series(_)) => {
                anyhow::bail!("inputs.data: expected one dataset directory, got a series")
            }
            None => None,
        };
        let train_data = resolve_shards(&p.train_data, base.as_deref())?;
        let model_dir = ctx.work_dir.join("model");
        std::fs::create_dir_all(&model_dir)?;
        let config = p.open_clip_config()?;
        tureen_artifacts::fsutil::write_atomic(
            &model_dir.join("open_clip_config.json"),
            serde_json::to_string_pretty(&config)?.as_bytes(),
        )?;
        let logs = ctx.work_dir.join("logs");
        let checkpoints = logs.join(RUN_NAME).join("checkpoints");
        let resumed = watch::restore_latest(&checkpoints, &ctx.journal.committed())?;
        if resumed > 0 {
            ctx.log.line(&format!(
                "resuming open_clip from committed epoch {resumed}"
            ));
        }
        let mut watcher = watch::Watcher::new(&checkpoints, resumed);
        let command = trainer_command(ctx, &p, &train_data, &model_dir, &logs)?;
        let mut child = supervisor::spawn(&command)
            .with_context(|| format!("cannot start {:?}", command.get_program()))?;
        let status = supervise(&mut child, ctx, &mut |ctx| watcher.poll(ctx, false))?;
        anyhow::ensure!(
            status.success(),
            "open_clip_train.main exited with {status} (epochs committed so far are kept; the next run resumes from them)"
        );
        watcher.poll(ctx, true)?;
        let series: Vec<Produced> = ctx
            .journal
            .committed()
            .into_iter()
            .map(|a| Produced::Stored(a.digest))
            .collect();
        let last = series
            .last()
            .cloned()
            .context("open_clip_train.main finished without writing a checkpoint")?;
        Ok(BTreeMap::from([
            ("checkpoints".to_string(), Produced::Series(series)),
            ("final".to_string(), last),
        ]))
    }
}

/// `[srun ...] python -m open_clip_train.main ARGS` with the stage's environment.
fn trainer_command(
    ctx: &mut StageContext<'_>,
    p: &OpenClipParams,
    train_data: &str,
    model_dir: &Path,
    logs: &Path,
) -> anyhow::Result<std::process::Command> {
    let launch = launch(&System, ctx.gpus.len())?;
    let python = python_program(p.python.as_deref(), ctx.workspace);
    let mut argv: Vec<String> = launch.prefix.clone();
    argv.extend([
        python.display().to_string(),
        "-m".into(),
        "open_clip_train.main".into(),
    ]);
    argv.extend(p.args(train_data, model_dir, logs));
    ctx.log.line(&format!("$ {}", argv.join(" ")));
    // Under the supervisor: open_clip's data loader workers must not outlive a killed
    // tureen either.
    let mut command = std::process::Command::new(&argv[0]);
    command
        .args(&argv[1..])
        .current_dir(ctx.work_dir)
        .envs(ctx.env.iter())
        .envs(launch.env.iter())
        .env("PYTHONUNBUFFERED", "1");
    if launch.prefix.is_empty() {
        let gpus: Vec<String> = ctx.gpus.iter().map(u32::to_string).collect();
        command.env("CUDA_VISIBLE_DEVICES", gpus.join(","));
    }
    Ok(command)
}

/// The python to run: `python3` on PATH by default; a relative path with a `/` is
/// relative to the pipeline's directory.
fn python_program(given: Option<&str>, workspace: &Path) -> PathBuf {
    match given {
        None => PathBuf::from("python3"),
        Some(p) if p.contains('/') && Path::new(p).is_relative() => workspace.join(p),
        Some(p) => PathBuf::from(p),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(extra: Value) -> Map<String, Value> {
        let mut v = serde_json::json!({
            "train_data": "train/{000000..000003}.tar",
            "train_num_samples": 256,
            "batch_size": 32,
            "epochs": 2,
            "lr": 1e-3,
            "model": "convnext_atto_64",
        });
        v.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        v.as_object().unwrap().clone()
    }

    #[test]
    fn the_card_s_flags_become_open_clip_s_command_line() {
        let p = OpenClipParams::from_params(&params(serde_json::json!({
            "beta2": 0.98, "grad_clip_norm": 5.0, "precision": "amp_bf16",
            "aug_cfg": {"scale": [0.33, 1.0], "re_prob": 0.35, "color_jitter": "none"},
            "local_loss": true, "gather_with_grad": true, "grad_checkpointing": true,
            "seed": 3, "warmup": 10,
        })))
        .unwrap();
        let a = p.args(
            "/d/train/{000000..000003}.tar",
            Path::new("/w/model"),
            Path::new("/w/logs"),
        );
        let text = a.join(" ");
        for part in [
            "--train-data /d/train/{000000..000003}.tar --dataset-type webdataset",
            "--train-num-samples 256 --batch-size 32 --epochs 2 --warmup 10 --lr 0.001 --seed 3",
            "--model local-dir:/w/model --logs /w/logs --name run --save-frequency 1 --resume latest",
            "--beta2 0.98 --grad-clip-norm 5.0 --precision amp_bf16",
            "--local-loss --gather-with-grad --grad-checkpointing",
        ] {
            assert!(text.contains(part), "{part:?} not in {text}");
        }
        let aug = a.iter().position(|x| x == "--aug-cfg").unwrap();
        assert_eq!(
            &a[aug + 1..aug + 4],
            ["color_jitter=\"none\"", "re_prob=0.35", "scale=(0.33, 1.0)"]
        );
    }

    #[test]
    fn the_model_config_is_open_clip_s_model_cfg() {
        let p = OpenClipParams::from_params(&params(serde_json::json!({}))).unwrap();
        let cfg = p.open_clip_config().unwrap();
        assert_eq!(
            cfg["model_cfg"]["vision_cfg"]["timm_model_name"],
            "convnext_atto"
        );
        assert_eq!(cfg["model_cfg"]["vision_cfg"]["image_size"], 64);
    }

    #[test]
    fn bad_params_name_themselves() {
        for (extra, expect) in [
            (serde_json::json!({"epochs": 0}), "params.epochs"),
            (serde_json::json!({"lr": -1.0}), "params.lr"),
            (serde_json::json!({"model": "nope"}), "params.model"),
            (
                serde_json::json!({"aug_cfg": {"scale": {"a": 1}}}),
                "params.aug_cfg.scale",
            ),
            (
                serde_json::json!({"learning_rate": 1.0}),
                "params.learning_rate: unknown param",
            ),
        ] {
            let e = OpenClipParams::from_params(&params(extra)).unwrap_err();
            assert!(e.to_string().contains(expect), "{e}");
        }
    }

    #[test]
    fn shard_patterns_resolve_against_the_data_input() {
        let base = Path::new("/data");
        assert_eq!(
            resolve_shards("a/{0..1}.tar::/abs/b.tar::pipe:cat x", Some(base)).unwrap(),
            "/data/a/{0..1}.tar::/abs/b.tar::pipe:cat x"
        );
        assert!(resolve_shards("a.tar", None).is_err());
        assert!(!needs_data_input("/abs/x.tar::pipe:curl y"));
        assert_eq!(
            python_program(Some(".venv/bin/python"), Path::new("/p")),
            Path::new("/p/.venv/bin/python")
        );
        assert_eq!(python_program(None, Path::new("/p")), Path::new("python3"));
    }
}
