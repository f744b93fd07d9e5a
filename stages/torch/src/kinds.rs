//! The stage kinds as `tureen-torch` runs them: the declarations of
//! `tureen_stages::kinds` (params, validation, outputs, estimates), with the work that
//! needs libtorch.

use std::collections::BTreeMap;
use std::sync::Arc;

use anyhow::Context as _;
use serde_json::Value;
use tureen_engine::kind::{InputValue, KindRegistry, Produced, StageContext, StageWork};
use tureen_stages::kinds::soup::{self, Method, SoupInputs, SoupKind};
use tureen_stages::kinds::{eval as eval_kind, numerics_setting, rewind, train};
use tureen_stages::train::Mode;

use crate::eval::greedy;
use crate::eval::suite::evaluate;
use crate::train::resolve_device;
use tureen_stages::eval::{weights_path, EvalParams};

/// Registers every kind tureen ships, the libtorch ones with their work.
pub fn register_all(registry: &mut KindRegistry) {
    tureen_stages::register_all(registry);
    let work: [(&str, Arc<dyn StageWork>); 4] = [
        (train::NAME, Arc::new(Training(Mode::Train))),
        (rewind::NAME, Arc::new(Training(Mode::Rewind))),
        (eval_kind::NAME, Arc::new(Evaluation)),
        (soup::NAME, Arc::new(SoupWithGreedy)),
    ];
    for (name, work) in work {
        registry
            .set_work(name, work)
            .expect("tureen_stages declares every kind tureen-torch works for");
    }
}

/// Pins the CPU numerics of a stage of kind `kind` as its params say (before its first
/// tensor: kernels and thread counts are chosen once per process), and logs what it got.
fn pin_numerics(kind: &str, ctx: &mut StageContext<'_>) -> anyhow::Result<()> {
    if let Some(setting) = numerics_setting(kind, ctx.params)? {
        let info = crate::numerics::apply(&setting)?;
        ctx.log.line(&format!(
            "numerics: {} ({} kernels, {} threads, libtorch {}, {})",
            info.mode, info.cpu_capability, info.threads, info.torch, info.mkl
        ));
        tureen_engine::machine::note_numerics(info);
    }
    Ok(())
}

/// `train` and `rewind`.
struct Training(Mode);

impl StageWork for Training {
    fn run(&self, ctx: &mut StageContext<'_>) -> anyhow::Result<BTreeMap<String, Produced>> {
        let name = match self.0 {
            Mode::Train => train::NAME,
            Mode::Rewind => rewind::NAME,
        };
        pin_numerics(name, ctx)?;
        crate::train::stage::run(ctx, self.0)
    }
}

/// The worker's side of `eval`: scores the model input.
struct Evaluation;

impl StageWork for Evaluation {
    fn run(&self, ctx: &mut StageContext<'_>) -> anyhow::Result<BTreeMap<String, Produced>> {
        pin_numerics(eval_kind::NAME, ctx)?;
        eval(ctx)
    }
}

/// `soup`: greedy soups here; uniform and weighted ones as `tureen_stages` makes them.
struct SoupWithGreedy;

impl StageWork for SoupWithGreedy {
    fn run(&self, ctx: &mut StageContext<'_>) -> anyhow::Result<BTreeMap<String, Produced>> {
        if soup::method(ctx.params)? == Method::Greedy {
            pin_numerics(soup::NAME, ctx)?;
            greedy_soup(ctx)
        } else {
            SoupKind.run(ctx)
        }
    }
}

/// `eval`: zero-shot classification and retrieval of the `model` input.
fn eval(ctx: &mut StageContext<'_>) -> anyhow::Result<BTreeMap<String, Produced>> {
    let params = EvalParams::from_params(ctx.params)?;
    let model_path = match ctx.inputs.get("model") {
        Some(InputValue::One(artifact)) => weights_path(&artifact.path),
        Some(InputValue::Series(_)) => {
            anyhow::bail!("inputs.model: expected one checkpoint, got a series")
        }
        None => anyhow::bail!("inputs.model: missing"),
    };
    let base_dir = match ctx.inputs.get("data") {
        Some(InputValue::One(artifact)) => artifact.path.clone(),
        Some(InputValue::Series(_)) => {
            anyhow::bail!("inputs.data: expected one dataset directory, got a series")
        }
        None => ctx.workspace.to_path_buf(),
    };
    let device = resolve_device(&params.device).map_err(anyhow::Error::msg)?;
    let metrics = evaluate(&params, &model_path, &base_dir, device, &mut |line| {
        ctx.log.line(line)
    })?;
    ctx.log.metrics(&metrics);
    let out = ctx.work_dir.join("metrics.json");
    let json = format!("{}\n", serde_json::to_string_pretty(&metrics)?);
    tureen_artifacts::fsutil::write_atomic(&out, json.as_bytes())
        .with_context(|| format!("writing {}", out.display()))?;
    Ok(BTreeMap::from([(
        "metrics".to_string(),
        Produced::Path(out),
    )]))
}

/// A greedy soup: candidates scored on the held-out set with libtorch.
fn greedy_soup(ctx: &mut StageContext<'_>) -> anyhow::Result<BTreeMap<String, Produced>> {
    let soup = SoupInputs::from_context(ctx)?;
    let heldout = ctx
        .params
        .get("heldout")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    let params = EvalParams::from_params(&heldout)?;
    // A worker sees only its stage's GPUs (`CUDA_VISIBLE_DEVICES`, set by tureen or by
    // Slurm), so the first one is `cuda:0`.
    let device = match ctx.gpus.is_empty() {
        true => tch::Device::Cpu,
        false => tch::Device::Cuda(0),
    };
    let scorer = greedy::ZeroShotScorer {
        params,
        base_dir: ctx.workspace.to_path_buf(),
        device,
    };
    let mut score = |p: &std::path::Path| scorer.score(p);
    let outcome = greedy::greedy_soup(
        &soup.paths,
        &soup.out,
        &soup.options,
        &mut score,
        ctx.work_dir,
    )?;
    ctx.log.line(&format!(
        "greedy soup: kept {} of {} checkpoints ({:?}), held-out score {:.4}",
        outcome.selected.len(),
        soup.paths.len(),
        outcome.selected,
        outcome.score
    ));
    ctx.log.metrics(&serde_json::to_value(&outcome)?);
    Ok(soup.produced())
}
