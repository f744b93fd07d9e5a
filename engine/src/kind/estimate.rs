//! What a kind tells `tureen plan` about a stage before it runs: [`StageEstimate`].
//!
//! The engine adds estimates up and turns FLOPs into GPU-hours; it does not know what a
//! model or a learning-rate schedule is. What only the kinds understand (the model a
//! train stage produces, which a rewind downstream reads) travels as an opaque,
//! serializable [`EstimateDetail`].

use std::any::Any;
use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use serde::{Serialize, Serializer};
use serde_json::Value;

use super::Select;

/// The size of one output of a stage: `count` artifacts of `bytes_each` (a series of
/// checkpoints, or one file).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OutputSize {
    /// The output's name.
    pub name: String,
    /// How many artifacts it has.
    pub count: u64,
    /// Bytes of each.
    pub bytes_each: u64,
}

impl OutputSize {
    /// Bytes of the whole output.
    pub fn bytes(&self) -> u64 {
        self.count.saturating_mul(self.bytes_each)
    }
}

/// Iterative work over data: optimizer steps and the samples they consume.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Work {
    /// Steps the stage runs.
    pub steps: u64,
    /// Samples it processes.
    pub samples: u64,
}

/// Kind-specific facts of an estimate, opaque to the engine: kinds downcast it with
/// [`EstimateDetail::get`], and `tureen plan --json` prints its JSON form.
#[derive(Clone)]
pub struct EstimateDetail {
    value: Arc<dyn Any + Send + Sync>,
    json: Value,
}

impl EstimateDetail {
    /// Wraps `value`.
    pub fn new<T: Any + Serialize + Send + Sync>(value: T) -> EstimateDetail {
        let json = serde_json::to_value(&value).unwrap_or(Value::Null);
        EstimateDetail {
            value: Arc::new(value),
            json,
        }
    }

    /// The value, if it is a `T`.
    pub fn get<T: Any>(&self) -> Option<&T> {
        self.value.downcast_ref()
    }
}

impl fmt::Debug for EstimateDetail {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EstimateDetail({})", self.json)
    }
}

impl PartialEq for EstimateDetail {
    fn eq(&self, other: &Self) -> bool {
        self.json == other.json
    }
}

impl Serialize for EstimateDetail {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.json.serialize(s)
    }
}

/// What a kind tells `tureen plan` about one stage.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct StageEstimate {
    /// Steps and samples, for stages that iterate over data (training).
    pub work: Option<Work>,
    /// All FLOPs of the stage (training, or forward passes of an evaluation); `NaN`
    /// when the kind cannot count them (a model it has no config for; a note says
    /// why), so that totals over it are unknown too rather than silently short.
    pub flops: f64,
    /// Outputs that take store space.
    pub outputs: Vec<OutputSize>,
    /// Assumptions worth printing (one line each).
    pub notes: Vec<String>,
    /// What the kind knows beyond that (e.g. the model and schedule of a training
    /// stage), for downstream kinds and the plan's renderer. Its fields appear beside
    /// the others in JSON.
    #[serde(flatten)]
    pub detail: Option<EstimateDetail>,
}

impl StageEstimate {
    /// Store space of every output together.
    pub fn store_bytes(&self) -> u64 {
        self.outputs.iter().map(OutputSize::bytes).sum()
    }

    /// The detail, if it is a `T`.
    pub fn detail<T: Any>(&self) -> Option<&T> {
        self.detail.as_ref().and_then(EstimateDetail::get)
    }
}

/// One upstream output a stage input refers to, with the producing stage's estimate.
#[derive(Debug, Clone, Copy)]
pub struct UpstreamOutput<'a> {
    /// The producing stage.
    pub stage: &'a str,
    /// Its kind.
    pub kind: &'a str,
    /// The output referred to.
    pub output: &'a str,
    /// Which part of it.
    pub select: Select,
    /// `None` when the producing kind has no estimate.
    pub estimate: Option<&'a StageEstimate>,
}

/// The stage inputs that refer to other stages' outputs, by input name (an input may
/// list several references, e.g. a soup's ingredients). File inputs are not listed.
#[derive(Debug, Clone)]
pub struct EstimateInputs<'a> {
    /// Input name -> the upstream outputs it refers to.
    pub inputs: BTreeMap<&'a str, Vec<UpstreamOutput<'a>>>,
    /// The pipeline's directory: relative paths in params are relative to it.
    pub workspace: &'a std::path::Path,
    /// GPUs the stage is given in all (`resources.gpus x nodes`).
    pub gpus: u64,
    /// Nodes the stage is given (`resources.nodes`, at least 1).
    pub nodes: u32,
    /// Whether Slurm runs the stage: a kind that starts its own processes (open_clip:
    /// one per GPU, at least one per node, under `srun`; one locally) sizes its world
    /// from this, `gpus` and `nodes`.
    pub slurm: bool,
}

impl<'a> EstimateInputs<'a> {
    /// The upstream outputs of input `name` (empty when absent or a file).
    pub fn get(&self, name: &str) -> &[UpstreamOutput<'a>] {
        self.inputs.get(name).map(Vec::as_slice).unwrap_or(&[])
    }

    /// Every upstream output of every input.
    pub fn all(&self) -> impl Iterator<Item = &UpstreamOutput<'a>> {
        self.inputs.values().flatten()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_detail_comes_back_as_its_own_type_only() {
        #[derive(Serialize, PartialEq, Debug)]
        struct Model {
            params: u64,
        }
        let e = StageEstimate {
            detail: Some(EstimateDetail::new(Model { params: 7 })),
            ..Default::default()
        };
        assert_eq!(e.detail::<Model>(), Some(&Model { params: 7 }));
        assert_eq!(e.detail::<u64>(), None);
        let json = serde_json::to_value(&e).unwrap();
        assert_eq!(json["params"], 7);
    }
}
