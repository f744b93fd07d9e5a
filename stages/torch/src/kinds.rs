//! The stage kinds as `tureen-torch` runs them: the declarations of
//! `tureen_stages::kinds` (params, validation, outputs, estimates), with the work that
//! needs libtorch.

use std::collections::BTreeMap;
use std::sync::Arc;

use anyhow::Context as _;
use serde_json::Value;
use tureen_engine::kind::{
    InputValue, KindRegistry, OutputDecl, Produced, StageContext, StageDecl, StageKind,
};
use tureen_engine::plan::{EstimateInputs, StageEstimate};
use tureen_stages::kinds::soup::{self, Method, SoupInputs};
use tureen_stages::numerics::NumericsSetting;
use tureen_stages::train::Mode;

use crate::eval::greedy;
use crate::eval::suite::evaluate;
use crate::train::resolve_device;
use tureen_stages::eval::{weights_path, EvalParams};

/// Registers every kind tureen ships, the libtorch ones with their work.
pub fn register_all(registry: &mut KindRegistry) {
    tureen_stages::register_all(registry);
    let work: [(&str, Work); 4] = [
        ("train", |_, ctx| crate::train::stage::run(ctx, Mode::Train)),
        ("rewind", |_, ctx| {
            crate::train::stage::run(ctx, Mode::Rewind)
        }),
        ("eval", eval),
        ("soup", soup_with_greedy),
    ];
    for (name, work) in work {
        let declaration = registry
            .get(name)
            .unwrap_or_else(|| panic!("tureen_stages registers `{name}`"))
            .clone();
        registry.register(Arc::new(WithTorch { declaration, work }));
    }
}

/// What a kind does in this program, given its declaration.
type Work = fn(&dyn StageKind, &mut StageContext<'_>) -> anyhow::Result<BTreeMap<String, Produced>>;

/// A kind declared in `tureen_stages`, run here (its [`StageKind::worker`] is this
/// program, so it names none).
struct WithTorch {
    declaration: Arc<dyn StageKind>,
    work: Work,
}

impl StageKind for WithTorch {
    fn name(&self) -> &'static str {
        self.declaration.name()
    }

    fn code_version(&self) -> &'static str {
        self.declaration.code_version()
    }

    fn validate(&self, decl: &StageDecl<'_>) -> Result<(), String> {
        self.declaration.validate(decl)
    }

    fn outputs(&self, decl: &StageDecl<'_>) -> Vec<OutputDecl> {
        self.declaration.outputs(decl)
    }

    fn stage_keys(&self) -> &'static [&'static str] {
        self.declaration.stage_keys()
    }

    fn workspace_paths(&self, decl: &StageDecl<'_>) -> Vec<(String, String)> {
        self.declaration.workspace_paths(decl)
    }

    fn estimate(
        &self,
        decl: &StageDecl<'_>,
        inputs: &EstimateInputs<'_>,
    ) -> Result<Option<StageEstimate>, String> {
        self.declaration.estimate(decl, inputs)
    }

    fn run(&self, ctx: &mut StageContext<'_>) -> anyhow::Result<BTreeMap<String, Produced>> {
        let setting =
            NumericsSetting::for_stage(self.name(), ctx.params).map_err(anyhow::Error::msg)?;
        if let Some(setting) = setting {
            let info = crate::numerics::apply(&setting)?;
            ctx.log.line(&format!(
                "numerics: {} ({} kernels, {} threads, libtorch {}, {})",
                info.mode, info.cpu_capability, info.threads, info.torch, info.mkl
            ));
            tureen_engine::machine::note_numerics(info);
        }
        (self.work)(self.declaration.as_ref(), ctx)
    }
}

/// `eval`: zero-shot classification and retrieval of the `model` input.
fn eval(
    _decl: &dyn StageKind,
    ctx: &mut StageContext<'_>,
) -> anyhow::Result<BTreeMap<String, Produced>> {
    let params = EvalParams::from_params(ctx.params).map_err(anyhow::Error::msg)?;
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

/// `soup`: greedy soups here; uniform and weighted ones as `tureen_stages` makes them.
fn soup_with_greedy(
    declaration: &dyn StageKind,
    ctx: &mut StageContext<'_>,
) -> anyhow::Result<BTreeMap<String, Produced>> {
    if soup::method(ctx.params) != Ok(Method::Greedy) {
        return declaration.run(ctx);
    }
    let soup = SoupInputs::from_context(ctx)?;
    let heldout = ctx
        .params
        .get("heldout")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    let params = EvalParams::from_params(&heldout).map_err(anyhow::Error::msg)?;
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
