//! `kind: soup`: a weight average of checkpoints.
//!
//! ```yaml
//! soup:
//!   kind: soup
//!   inputs:
//!     checkpoints: [core.checkpoints[10], core.checkpoints[20], core.final]
//!   params:
//!     method: weighted          # uniform (default), weighted, greedy
//!     weights: [1, 1, 2]        # weighted only: one per checkpoint, any scale
//!     out_dtype: bfloat16       # optional: float32, float16, bfloat16, float64
//!     accumulate: f32           # f32 (mergekit-exact, default) or f64 (timm)
//!     keys: strict              # strict (default), intersection, union
//!     key: state_dict           # torch.save inputs: where the state dict is (default: found)
//!     keep_prefix: false        # torch.save inputs: keep a DDP `module.` prefix
//! ```
//!
//! Every checkpoint is in any format `tureen_artifacts::checkpoint` reads: a
//! `.safetensors` file, a directory holding `model.safetensors` (the `checkpoints`
//! series of a train stage), a sharded checkpoint, or a `torch.save` file (the
//! `checkpoints` of an `open_clip` stage). The one output, `soup`, is a
//! safetensors file made by `tureen_artifacts::soup::soup_files` (numerics documented
//! there). `method: greedy` sorts the checkpoints by held-out zero-shot top-1 and adds
//! each one only if the soup's score does not drop (`tureen_torch::eval::greedy`, run in
//! the [`super::TORCH_WORKER`]); its
//! `heldout:` param takes the `eval` kind's params (`data`, `classnames`, `templates`,
//! ...); list those files in the stage's `deps` so that changing them re-runs the soup.
//!
//! The soup file carries no path-dependent metadata, so the same checkpoints give the
//! same bytes in every store and workspace.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::Context as _;
use serde_json::{Map, Value};
use tureen_artifacts::safetensors::Dtype;
use tureen_artifacts::soup::{soup_files, Accumulate, KeyPolicy, SoupOptions};
use tureen_engine::kind::estimate::{EstimateInputs, StageEstimate};
use tureen_engine::kind::{
    InputValue, OutputDecl, OutputShape, ParamError, Produced, StageContext, StageDecl, StageKind,
    StageWork,
};

/// The name of the kind in pipeline files.
pub const NAME: &str = "soup";

/// The `soup` kind: uniform and weighted soups are made here, greedy ones (which
/// evaluate candidates) in the `tureen-torch` worker.
pub struct SoupKind;

const PARAMS: &[&str] = &[
    "method",
    "weights",
    "out_dtype",
    "accumulate",
    "keys",
    "heldout",
    "key",
    "keep_prefix",
];

/// How the checkpoints are combined.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// The mean of all checkpoints (runs in `tureen`).
    Uniform,
    /// A mean weighted by the `weights` param, normalised to sum 1 (runs in `tureen`).
    Weighted,
    /// Checkpoints added best-first while the held-out score does not drop (needs
    /// libtorch: runs in the `tureen-torch` worker).
    Greedy,
}

/// The `method` param (default: `weighted` when `weights` are given, else `uniform`).
pub fn method(params: &Map<String, Value>) -> Result<Method, ParamError> {
    match params.get("method").map(|v| v.as_str()) {
        None => Ok(if params.contains_key("weights") {
            Method::Weighted
        } else {
            Method::Uniform
        }),
        Some(Some("uniform")) => Ok(Method::Uniform),
        Some(Some("weighted")) => Ok(Method::Weighted),
        Some(Some("greedy")) => Ok(Method::Greedy),
        Some(_) => Err(ParamError::param(
            "method",
            "expected `uniform`, `weighted` or `greedy`",
        )),
    }
}

fn weights(params: &Map<String, Value>) -> Result<Option<Vec<f64>>, ParamError> {
    match params.get("weights") {
        None => Ok(None),
        Some(Value::Array(items)) if !items.is_empty() => items
            .iter()
            .map(|v| {
                v.as_f64().filter(|w| w.is_finite()).ok_or_else(|| {
                    ParamError::param("weights", "every weight must be a finite number")
                })
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some),
        Some(_) => Err(ParamError::param(
            "weights",
            "expected a non-empty list of numbers",
        )),
    }
}

fn options(params: &Map<String, Value>) -> Result<SoupOptions, ParamError> {
    let mut opts = SoupOptions::default();
    if let Some(v) = params.get("out_dtype") {
        let dtype = match v.as_str() {
            Some("float32" | "f32" | "F32") => Dtype::F32,
            Some("float16" | "f16" | "F16") => Dtype::F16,
            Some("bfloat16" | "bf16" | "BF16") => Dtype::BF16,
            Some("float64" | "f64" | "F64") => Dtype::F64,
            _ => {
                return Err(ParamError::param(
                    "out_dtype",
                    "expected float32, float16, bfloat16 or float64",
                ))
            }
        };
        opts.out_dtype = Some(dtype);
    }
    if let Some(v) = params.get("accumulate") {
        opts.accumulate = match v.as_str() {
            Some("f32") => Accumulate::F32,
            Some("f64") => Accumulate::F64,
            _ => return Err(ParamError::param("accumulate", "expected `f32` or `f64`")),
        };
    }
    if let Some(v) = params.get("keys") {
        opts.keys = match v.as_str() {
            Some("strict") => KeyPolicy::Strict,
            Some("intersection") => KeyPolicy::Intersection,
            Some("union") => KeyPolicy::Union,
            _ => {
                return Err(ParamError::param(
                    "keys",
                    "expected `strict`, `intersection` or `union`",
                ))
            }
        };
    }
    if let Some(v) = params.get("key") {
        let key = v
            .as_str()
            .and_then(|k| k.parse().ok())
            .ok_or_else(|| {
                ParamError::param(
                    "key",
                    "expected a key path (dict keys joined by dots, e.g. state_dict)",
                )
            })?;
        opts.source.key = Some(key);
    }
    if let Some(v) = params.get("keep_prefix") {
        opts.source.keep_prefix = v
            .as_bool()
            .ok_or_else(|| ParamError::param("keep_prefix", "expected true or false"))?;
    }
    Ok(opts)
}

impl StageKind for SoupKind {
    fn name(&self) -> &'static str {
        NAME
    }

    fn code_version(&self) -> &'static str {
        // 2: greedy soups score candidates with the conv-MLP ConvNeXt as timm runs it.
        // 3: greedy soups score with portable numerics by default (`heldout.numerics`).
        "3"
    }

    fn validate(&self, decl: &StageDecl<'_>) -> Result<(), ParamError> {
        for key in decl.params.keys() {
            if !PARAMS.contains(&key.as_str()) {
                let hint = tureen_engine::diag::suggest(key, PARAMS.iter().copied())
                    .map(|s| format!("did you mean `{s}`? "))
                    .unwrap_or_default();
                return Err(ParamError::param(
                    key.as_str(),
                    format!("unknown soup param ({hint}known: {})", PARAMS.join(", ")),
                ));
            }
        }
        if decl.input_names != ["checkpoints"] {
            let found = match decl.input_names.first() {
                None => "none".to_string(),
                Some(_) => decl.input_names.join(", "),
            };
            return Err(ParamError::input(
                "checkpoints",
                format!("a soup takes exactly one input, `checkpoints` (a series, or a list of checkpoints); found: {found}"),
            ));
        }
        let m = method(decl.params)?;
        let w = weights(decl.params)?;
        match (m, &w) {
            (Method::Weighted, None) => {
                return Err(ParamError::param("method", "`weighted` needs `weights`"))
            }
            (Method::Uniform | Method::Greedy, Some(_)) => {
                return Err(ParamError::param(
                    "weights",
                    "only used with `method: weighted`",
                ))
            }
            _ => {}
        }
        if let Some(w) = &w {
            if w.iter().sum::<f64>() == 0.0 {
                return Err(ParamError::param("weights", "the weights sum to zero"));
            }
        }
        match (m, decl.params.get("heldout")) {
            (Method::Greedy, Some(Value::Object(h))) => {
                crate::eval::EvalParams::from_params(h).map_err(|e| e.within("heldout"))?;
            }
            (Method::Greedy, _) => {
                return Err(ParamError::param(
                    "heldout",
                    "`method: greedy` needs `heldout:` (the eval params of the held-out set)",
                ))
            }
            (_, Some(_)) => {
                return Err(ParamError::param(
                    "heldout",
                    "only used with `method: greedy`",
                ))
            }
            _ => {}
        }
        options(decl.params).map(|_| ())
    }

    fn outputs(&self, _decl: &StageDecl<'_>) -> Vec<OutputDecl> {
        vec![OutputDecl {
            name: "soup".into(),
            shape: OutputShape::One,
            len: None,
        }]
    }

    /// What `tureen plan` counts for this stage (see [`crate::plan`]).
    fn estimate(
        &self,
        decl: &StageDecl<'_>,
        inputs: &EstimateInputs<'_>,
    ) -> Result<Option<StageEstimate>, ParamError> {
        crate::plan::estimate_soup(decl, inputs)
    }

    /// Greedy soups evaluate candidates, which needs libtorch.
    fn worker(&self, decl: &StageDecl<'_>) -> Option<&'static str> {
        (method(decl.params) == Ok(Method::Greedy)).then_some(super::TORCH_WORKER)
    }
}

impl StageWork for SoupKind {
    /// Uniform and weighted soups; greedy ones are sent to the [`super::TORCH_WORKER`],
    /// whose soup work does them.
    fn run(&self, ctx: &mut StageContext<'_>) -> anyhow::Result<BTreeMap<String, Produced>> {
        let soup = SoupInputs::from_context(ctx)?;
        anyhow::ensure!(
            soup.method != Method::Greedy,
            "greedy soups run in `{}`, not in this program",
            super::TORCH_WORKER
        );
        let w = weights(ctx.params)?;
        if let Some(w) = &w {
            anyhow::ensure!(
                w.len() == soup.paths.len(),
                "params.weights: {} weights for {} checkpoints",
                w.len(),
                soup.paths.len()
            );
        }
        let report = soup_files(&soup.paths, w.as_deref(), &soup.out, &soup.options, None)?;
        ctx.log.line(&format!(
            "averaged {} tensors, copied {}, {} bytes ({})",
            report.averaged, report.copied, report.output_bytes, report.numerics
        ));
        ctx.log.metrics(&serde_json::json!({"step": 0, "ingredients": soup.paths.len(), "output_bytes": report.output_bytes}));
        Ok(soup.produced())
    }
}

/// What every soup method starts from: the ingredient files, the soup options and where
/// the soup goes.
pub struct SoupInputs {
    /// How to combine them (the `method` param).
    pub method: Method,
    /// The ingredients' weights files, in input order.
    pub paths: Vec<PathBuf>,
    /// The soup options from the params, with the ingredients' digests as provenance and
    /// their model config carried over.
    pub options: SoupOptions,
    /// The output file, in the stage's work directory.
    pub out: PathBuf,
}

impl SoupInputs {
    /// Resolves a soup stage's inputs and params (and logs what it will make).
    pub fn from_context(ctx: &mut StageContext<'_>) -> anyhow::Result<SoupInputs> {
        let artifacts = match ctx.inputs.get("checkpoints") {
            Some(InputValue::One(a)) => vec![a.clone()],
            Some(InputValue::Series(items)) => items.clone(),
            None => anyhow::bail!("no `checkpoints` input"),
        };
        let paths: Vec<PathBuf> = artifacts
            .iter()
            .map(|a| checkpoint_file(&a.path))
            .collect::<anyhow::Result<_>>()?;
        let mut opts = options(ctx.params)?;
        opts.input_digests = Some(artifacts.iter().map(|a| a.digest).collect());
        // Provenance names ingredients by digest, never by their path in this store, so
        // the soup's bytes are the same everywhere; the model config of the ingredients
        // is carried over so the soup loads (and evaluates) like a checkpoint.
        opts.input_labels = Some(artifacts.iter().map(|a| a.digest.to_string()).collect());
        let options = crate::checkpoint::inherit_model_config(&opts, &paths)?;
        let method = method(ctx.params)?;
        ctx.log.line(&format!(
            "{} soup of {} checkpoints",
            format!("{method:?}").to_lowercase(),
            paths.len()
        ));
        Ok(SoupInputs {
            method,
            paths,
            options,
            out: ctx.work_dir.join("soup.safetensors"),
        })
    }

    /// The stage's one output: the soup file.
    pub fn produced(self) -> BTreeMap<String, Produced> {
        BTreeMap::from([("soup".to_string(), Produced::Path(self.out))])
    }
}

/// A checkpoint directory's weights file (`model.safetensors`), or the path itself
/// (a file of any format, or a sharded directory), which the soup opens by content.
fn checkpoint_file(path: &std::path::Path) -> anyhow::Result<PathBuf> {
    let inner = path.join(tureen_artifacts::checkpoint::MODEL_FILE);
    if path.is_dir() && inner.is_file() {
        return Ok(inner);
    }
    std::fs::metadata(path).with_context(|| format!("checkpoint {}", path.display()))?;
    Ok(path.to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn torch_save_ingredients_take_a_key_path_and_prefix_policy() {
        let p = serde_json::json!({"key": "model.ema", "keep_prefix": true});
        let opts = options(p.as_object().unwrap()).unwrap();
        assert_eq!(opts.source.key.unwrap().to_string(), "model.ema");
        assert!(opts.source.keep_prefix);
        for (bad, expect) in [
            (serde_json::json!({"key": "a..b"}), "params.key"),
            (
                serde_json::json!({"keep_prefix": "yes"}),
                "params.keep_prefix",
            ),
        ] {
            let e = options(bad.as_object().unwrap()).unwrap_err();
            assert!(e.to_string().contains(expect), "{e}");
        }
    }
}
