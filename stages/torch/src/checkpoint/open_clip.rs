//! open_clip's own training checkpoints (`epoch_N.pt`, written by `open_clip_train`) as
//! the starting point of a tureen `rewind`.
//!
//! Such a file is `torch.save({"epoch", "name", "state_dict", "optimizer"})` (keys
//! prefixed `module.` under DDP), read by `tureen_artifacts`' allow-list reader, never
//! executed. The weights are the state dict. AdamW's moments are in
//! `optimizer["state"][i]`, where `i` numbers the parameters across open_clip's two
//! parameter groups in order: group 0 holds the parameters excluded from weight decay
//! (fewer than 2 dims, names with `bn`, `ln`, `bias` or `logit_scale`), group 1 the
//! rest, each in `model.named_parameters()` order, which is the state dict's order
//! without its buffers. The moments are mapped back to names that way; betas, eps and
//! weight decay come from the groups, the step count from each parameter's `step`.
//!
//! The file carries neither the model config (the stage's `model:` param gives it) nor
//! samples seen (taken as `epoch x samples_per_interval` of the stage).

use std::collections::BTreeMap;
use std::path::Path;

use tch::Tensor;
use tureen_artifacts::checkpoint::{Checkpoint, Format, OpenOptions};
use tureen_artifacts::torch::{Node, TorchFile};
use tureen_stages::train::{excluded_from_decay, AdamWConfig};

use super::{tensor_file, CheckpointError};

/// Whether `path` is a `torch.save` file (not a tureen checkpoint directory).
pub fn is_torch_save(path: &Path) -> bool {
    path.is_file()
        && Checkpoint::open(path, &OpenOptions::default())
            .map(|c| c.format() == Format::Torch)
            .unwrap_or(false)
}

/// AdamW state restored from an open_clip checkpoint.
pub struct OpenClipOptimizer {
    /// `exp_avg.<param>` and `exp_avg_sq.<param>`, as [`crate::train::AdamW::load_state`]
    /// takes them.
    pub moments: BTreeMap<String, Tensor>,
    /// AdamW's step count.
    pub step: u64,
    /// Betas, eps and weight decay of the decayed group.
    pub config: AdamWConfig,
}

/// What an open_clip checkpoint gives a rewind.
pub struct OpenClipCheckpoint {
    /// The state dict (DDP prefix stripped).
    pub weights: BTreeMap<String, Tensor>,
    /// Epochs completed.
    pub epoch: u64,
    /// The optimizer state, if the file has one with moments.
    pub optimizer: Option<OpenClipOptimizer>,
}

impl OpenClipCheckpoint {
    /// Reads `path`; `trainable` names the model's trainable parameters (the moments of
    /// exactly those are expected).
    pub fn read(path: &Path, trainable: &[String]) -> Result<OpenClipCheckpoint, CheckpointError> {
        let ckpt = Checkpoint::open(path, &OpenOptions::default())?;
        let order: Vec<(String, usize)> = ckpt
            .tensors()
            .iter()
            .filter(|t| trainable.contains(&t.name))
            .map(|t| (t.name.clone(), t.shape.len()))
            .collect();
        let weights = tensor_file::tensors_of(&ckpt)?.tensors;
        let file =
            TorchFile::open(path).map_err(tureen_artifacts::checkpoint::CheckpointError::from)?;
        let root = file.root();
        let state = |message: String| CheckpointError::State {
            path: path.to_path_buf(),
            message,
        };
        let epoch = root
            .get("epoch")
            .and_then(|n| n.as_int())
            .filter(|&e| e >= 0)
            .ok_or_else(|| {
                state("no `epoch` (an int): not an open_clip training checkpoint".into())
            })? as u64;
        let optimizer = match root.get("optimizer") {
            Some(opt) => {
                read_optimizer(&file, opt, &order).map_err(|m| state(format!("optimizer: {m}")))?
            }
            None => None,
        };
        Ok(OpenClipCheckpoint {
            weights,
            epoch,
            optimizer,
        })
    }
}

/// A trainable parameter's name and number of dims.
type Param = (String, usize);

/// The moments of `order` (trainable names with their dims, in state-dict order).
/// `Ok(None)` for an optimizer that never stepped (no state at all).
fn read_optimizer(
    file: &TorchFile,
    opt: Node<'_>,
    order: &[Param],
) -> Result<Option<OpenClipOptimizer>, String> {
    let groups = opt
        .get("param_groups")
        .and_then(|g| g.items())
        .ok_or("no `param_groups` list")?;
    let state = opt.get("state").ok_or("no `state` dict")?;
    if state.entries().is_some_and(|mut e| e.next().is_none()) {
        return Ok(None);
    }
    let (no_decay, decay): (Vec<&Param>, Vec<&Param>) = order
        .iter()
        .partition(|(name, dims)| excluded_from_decay(name, *dims));
    let [g0, g1] = groups.as_slice() else {
        return Err(format!(
            "{} parameter groups; open_clip's AdamW has 2 (no weight decay, then the rest)",
            groups.len()
        ));
    };
    let config = group_config(*g1)?;
    if group_config(*g0)?.weight_decay != 0.0 {
        return Err("group 0 (gains and biases) has weight decay; open_clip's has none".into());
    }
    let mut moments = BTreeMap::new();
    let mut steps = Vec::new();
    for (group, names) in [(*g0, &no_decay), (*g1, &decay)] {
        let ids = param_ids(group)?;
        if ids.len() != names.len() {
            return Err(format!(
                "a parameter group has {} parameters but the model has {} (is `model:` the config the run was trained with?)",
                ids.len(),
                names.len()
            ));
        }
        for (id, (name, _)) in ids.into_iter().zip(names.iter()) {
            let s = state
                .get_int(id)
                .ok_or_else(|| format!("no state for parameter {id} ({name})"))?;
            for key in ["exp_avg", "exp_avg_sq"] {
                let t = s
                    .get(key)
                    .ok_or_else(|| format!("parameter {id} ({name}) has no `{key}`"))?;
                moments.insert(
                    format!("{key}.{name}"),
                    tensor(file, t, &format!("state.{id}.{key}"))?,
                );
            }
            steps.push(step_count(file, s, id)?);
        }
    }
    let step = steps[0];
    if steps.iter().any(|&s| s != step) {
        return Err("parameters have different step counts; tureen's AdamW keeps one".into());
    }
    Ok(Some(OpenClipOptimizer {
        moments,
        step,
        config,
    }))
}

fn group_config(group: Node<'_>) -> Result<AdamWConfig, String> {
    let num = |key: &str| {
        group
            .get(key)
            .and_then(|v| v.as_f64())
            .ok_or_else(|| format!("a parameter group has no number `{key}`"))
    };
    for flag in ["amsgrad", "maximize"] {
        if group.get(flag).and_then(|v| v.as_bool()) == Some(true) {
            return Err(format!(
                "`{flag}` is set; tureen's AdamW implements neither variant"
            ));
        }
    }
    let betas: Vec<f64> = group
        .get("betas")
        .and_then(|b| b.items())
        .map(|b| b.iter().filter_map(|x| x.as_f64()).collect())
        .unwrap_or_default();
    let [beta1, beta2] = betas[..] else {
        return Err("a parameter group has no `betas` pair".into());
    };
    Ok(AdamWConfig {
        beta1,
        beta2,
        eps: num("eps")?,
        weight_decay: num("weight_decay")?,
    })
}

fn param_ids(group: Node<'_>) -> Result<Vec<i64>, String> {
    group
        .get("params")
        .and_then(|p| p.items())
        .ok_or("a parameter group has no `params` list")?
        .iter()
        .map(|p| {
            p.as_int()
                .ok_or_else(|| "`params` must hold ints".to_string())
        })
        .collect()
}

/// `step` is a 0-dim float tensor since torch 1.12 (a number before).
fn step_count(file: &TorchFile, s: Node<'_>, id: i64) -> Result<u64, String> {
    let step = s
        .get("step")
        .ok_or_else(|| format!("parameter {id} has no `step`"))?;
    let value = match step.as_f64() {
        Some(v) => v,
        None => tensor(file, step, &format!("state.{id}.step"))?.double_value(&[]),
    };
    if !(value >= 0.0 && value.fract() == 0.0) {
        return Err(format!("parameter {id} has step {value}, not a count"));
    }
    Ok(value as u64)
}

fn tensor(file: &TorchFile, node: Node<'_>, name: &str) -> Result<Tensor, String> {
    let t = node
        .as_tensor()
        .ok_or_else(|| format!("`{name}` is {}, not a tensor", node.summary()))?;
    let view = file.view(name, t).map_err(|e| e.to_string())?;
    let bytes = match file.contiguous_bytes(&view) {
        Some(b) => std::borrow::Cow::Borrowed(b),
        None => std::borrow::Cow::Owned(file.gather(&view)),
    };
    tensor_file::tensor_from_bytes(&bytes, view.dtype, &view.shape)
        .map_err(|e| format!("`{name}`: {e}"))
}
