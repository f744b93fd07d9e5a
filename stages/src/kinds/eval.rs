//! `kind: eval`: zero-shot classification and image<->text retrieval of one model.
//!
//! ```yaml
//! eval_soup:
//!   kind: eval
//!   inputs: {model: soup.soup}          # a weights file or a training-checkpoint directory
//!   params:
//!     data: imagenet/val                # image folder (one folder per class) or shards
//!     classnames: data/imagenet-classnames.txt
//!     templates: data/imagenet-templates.txt
//!     retrieval: coco/{000000..000004}.tar   # optional: shards with one caption per line
//!     tokenizer: {kind: bpe, vocab: bpe_simple_vocab_16e6.txt.gz}   # default: byte
//!     model: convnext_atto_64           # optional: default is the checkpoint's own config
//!     batch_size: 64                    # default 64
//!     workers: 2                        # decode threads, default 2
//!     device: auto                      # auto | cpu | cuda, default auto
//! ```
//!
//! Paths are relative to the `data` input when the stage has one (a dataset directory
//! produced by an earlier stage), else to the pipeline's directory. The output `metrics`
//! is a JSON file:
//! `{"zeroshot": {"top1", "top5", "mean_per_class_recall", "samples", "classes"},
//!   "retrieval": {"image_to_text_r1", ..., "text_to_image_r10", "images", "texts"}}`
//! (fractions in [0, 1]; a section is absent when its data is not configured). The same
//! numbers go to the run's metrics log.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Context as _;
use serde_json::Value;
use tureen_engine::kind::{
    InputValue, OutputDecl, OutputShape, Produced, StageContext, StageDecl, StageKind,
};

use crate::eval::suite::{evaluate, parse_device, weights_path, EvalParams};

/// The `eval` kind.
pub struct EvalKind;

impl StageKind for EvalKind {
    fn name(&self) -> &'static str {
        "eval"
    }

    fn code_version(&self) -> &'static str {
        "eval-1"
    }

    fn validate(&self, decl: &StageDecl<'_>) -> Result<(), String> {
        EvalParams::from_params(decl.params)?;
        if !decl.input_names.contains(&"model") {
            return Err("inputs.model: required (the checkpoint to evaluate)".into());
        }
        if let Some(other) = decl
            .input_names
            .iter()
            .find(|n| !["model", "data"].contains(n))
        {
            return Err(format!(
                "inputs.{other}: unknown input (eval takes `model` and optionally `data`)"
            ));
        }
        Ok(())
    }

    fn outputs(&self, _decl: &StageDecl<'_>) -> Vec<OutputDecl> {
        vec![OutputDecl {
            name: "metrics".into(),
            shape: OutputShape::One,
            len: None,
        }]
    }

    /// What `tureen plan` counts for this stage (see [`crate::plan`]).
    fn estimate(
        &self,
        decl: &StageDecl<'_>,
        inputs: &tureen_engine::plan::EstimateInputs<'_>,
    ) -> Result<Option<tureen_engine::plan::StageEstimate>, String> {
        crate::plan::estimate_eval(decl, inputs)
    }

    fn run(&self, ctx: &mut StageContext<'_>) -> anyhow::Result<BTreeMap<String, Produced>> {
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
        let device = parse_device(&params.device).map_err(anyhow::Error::msg)?;
        let metrics = evaluate(&params, &model_path, &base_dir, device, &mut |line| {
            ctx.log.line(line)
        })?;
        ctx.log.metrics(&metrics);
        let out = ctx.work_dir.join("metrics.json");
        write_json_atomic(&out, &metrics)?;
        Ok(BTreeMap::from([(
            "metrics".to_string(),
            Produced::Path(out),
        )]))
    }
}

/// Writes pretty JSON via a temp file in the same directory, fsync, rename.
fn write_json_atomic(path: &Path, value: &Value) -> anyhow::Result<()> {
    use std::io::Write;
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir)
        .with_context(|| format!("writing {}", path.display()))?;
    tmp.write_all(format!("{}\n", serde_json::to_string_pretty(value)?).as_bytes())?;
    tmp.as_file().sync_all()?;
    tmp.persist(path)
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}
