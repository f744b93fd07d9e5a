//! The contract between the engine and the stage kinds.
//!
//! The engine knows nothing about training, soups or shell commands: it validates a
//! pipeline, orders stages, computes cache keys, materializes inputs and stores outputs.
//! What a stage *is* (its params, outputs, cost) is a [`StageKind`]; what it *does* is a
//! [`StageWork`]. Both live in the `tureen-stages` crate (and, for work that needs
//! libtorch, in `tureen-torch`) and are registered once in a [`KindRegistry`]. Adding a
//! kind never touches the engine.

mod error;
pub mod estimate;
mod registry;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use tureen_artifacts::Digest;

pub use error::{ParamError, ParamField};
pub use registry::{KindRegistry, UnknownKind};

use estimate::{EstimateInputs, StageEstimate};
pub use crate::rank::Rank;

/// One artifact handed to a stage: its digest and a read-only path where it is
/// materialized (a file, or a directory for tree artifacts such as a dataset).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Artifact {
    /// The artifact's content digest.
    pub digest: Digest,
    /// Where the stage can read it.
    pub path: PathBuf,
}

/// A resolved stage input: a single artifact, or a whole series
/// (`core.checkpoints`), or one element of a series (`core.checkpoints[230]`, which
/// resolves to [`InputValue::One`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InputValue {
    /// One artifact.
    One(Artifact),
    /// An ordered series of artifacts.
    Series(Vec<Artifact>),
}

/// Whether an output is one artifact or an ordered series of them (checkpoints).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputShape {
    /// One artifact.
    One,
    /// An ordered series.
    Series,
}

/// An output a kind promises to produce, known before the stage runs so that
/// references like `core.final` and `core.checkpoints[230]` validate up front.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputDecl {
    /// The output's name (`final`, `checkpoints`).
    pub name: String,
    /// One artifact or a series.
    pub shape: OutputShape,
    /// For series: the number of elements when it follows from params (e.g. the
    /// number of checkpoint intervals), so an index out of range fails validation.
    pub len: Option<usize>,
}

/// Which part of an upstream output a reference takes (`core.checkpoints`,
/// `core.checkpoints[230]`, `core.checkpoints[-3:]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Select {
    /// The whole output (one artifact, or the whole series).
    Whole,
    /// One element of a series. Negative indices count from the end.
    Index(i64),
    /// Elements `start..end` of a series (end exclusive; `None`: to the end). Negative
    /// bounds count from the end, as in Python.
    Range(i64, Option<i64>),
}

impl Select {
    /// The element an [`Select::Index`] picks in a series of `len`, if it is in range.
    pub fn index_in(i: i64, len: usize) -> Option<usize> {
        let len = i64::try_from(len).ok()?;
        let at = if i < 0 { len + i } else { i };
        (0..len).contains(&at).then_some(at as usize)
    }

    /// The elements a [`Select::Range`] picks in a series of `len`, if its bounds are
    /// inside the series (an empty range is an error too: it is never what was meant).
    pub fn range_in(start: i64, end: Option<i64>, len: usize) -> Option<std::ops::Range<usize>> {
        let n = i64::try_from(len).ok()?;
        let norm = |b: i64| if b < 0 { n + b } else { b };
        let (a, b) = (norm(start), end.map_or(n, norm));
        (0 <= a && a < b && b <= n).then_some(a as usize..b as usize)
    }
}

/// What a stage produced. Paths are inside the stage's work directory (the engine
/// ingests them into the store); `Stored` names an artifact the stage already
/// committed itself, e.g. a checkpoint written mid-run through [`CheckpointJournal`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Produced {
    /// A file or directory to ingest.
    Path(PathBuf),
    /// An artifact already in the store.
    Stored(Digest),
    /// A series of the above.
    Series(Vec<Produced>),
}

/// Where a stage's work runs, decided once from its kind and params when the pipeline is
/// loaded (or a recorded stage is replayed), and carried in its [`crate::job::StageJob`].
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Runner {
    /// In the engine's own process (`tureen`, or `tureen stage-exec` on Slurm).
    #[default]
    InProcess,
    /// In a separate worker program found beside `tureen` (e.g. `tureen-torch`, which
    /// links libtorch so that `tureen` does not).
    Worker(String),
}

/// The stage as declared in the pipeline, after params were resolved
/// (`${params.x}` substituted, CLI overrides applied, foreach expanded).
#[derive(Debug, Clone)]
pub struct StageDecl<'a> {
    /// The stage's name.
    pub name: &'a str,
    /// Its params, including the kind's stage keys (a command's `cmd`, `outs`).
    pub params: &'a Map<String, Value>,
    /// Names of the declared inputs (references are resolved later).
    pub input_names: Vec<&'a str>,
    /// Processes that run the stage together (its ranks): the world size of its
    /// resources for a [`StageKind::data_parallel`] kind, else 1.
    pub world: u32,
}

/// Human-readable log lines and machine-readable metrics of one stage.
///
/// The engine writes lines to the stage's log file (tailed on failure) and metrics
/// to the run's JSONL metrics log (and TensorBoard where configured).
pub trait StageLog: Send {
    /// One line of the stage's log.
    fn line(&mut self, line: &str);
    /// One metrics record, e.g. `{"step": 10, "samples": 640, "loss": 3.2, "lr": 1e-3}`.
    fn metrics(&mut self, record: &Value);
    /// Progress within the stage (e.g. samples seen of samples planned), for the
    /// progress display. `total` may be 0 when unknown.
    fn progress(&mut self, done: u64, total: u64);
}

/// Durable, incremental commits of intermediate artifacts (checkpoints) for stages
/// that run long: each commit lands in the store at once and is recorded against the
/// stage's cache key, so a killed stage resumes from its last commit on the next run.
pub trait CheckpointJournal: Send {
    /// Move/ingest `path` into the store and append it to this stage's journal.
    fn commit(&mut self, path: &Path) -> anyhow::Result<Artifact>;
    /// Artifacts committed by earlier, interrupted attempts with the same cache key,
    /// in commit order (materialized read-only). Empty on a fresh start.
    fn committed(&self) -> Vec<Artifact>;
}

/// Everything a running stage may use.
pub struct StageContext<'a> {
    /// The stage's name.
    pub stage: &'a str,
    /// Its resolved params.
    pub params: &'a Map<String, Value>,
    /// Its inputs, materialized.
    pub inputs: &'a BTreeMap<String, InputValue>,
    /// An empty directory owned by this attempt; produced files go here.
    pub work_dir: &'a Path,
    /// The directory of the pipeline file. Relative paths in params (e.g. a `command`
    /// stage's `outs`) are relative to it, and `command` stages run in it.
    pub workspace: &'a Path,
    /// The stage's declared environment (pipeline `env` merged with the stage's `env`);
    /// part of the cache key. Kinds that start processes pass it to them.
    pub env: &'a BTreeMap<String, String>,
    /// Where log lines, metrics and progress go.
    pub log: &'a mut dyn StageLog,
    /// Where long stages commit their checkpoints.
    pub journal: &'a mut dyn CheckpointJournal,
    /// GPU ids handed to this stage from the pool (empty: CPU only). The engine also
    /// sets `CUDA_VISIBLE_DEVICES` for child processes.
    pub gpus: &'a [u32],
    /// Set when the user interrupts (SIGINT) or the run is cancelled; long stages
    /// check it between steps and return an error.
    pub cancel: &'a AtomicBool,
    /// This process's place among the stage's processes ([`Rank::SOLE`] unless the kind
    /// is [`StageKind::data_parallel`] and a launcher started several). Only rank 0's
    /// journal commits; the others read it.
    pub rank: Rank,
}

/// A kind of stage as the engine sees it before anything runs: `command`, `soup`,
/// `train`, `rewind`, `eval`, ... Its work is a separate [`StageWork`], registered
/// under the same name in the program that can do it.
pub trait StageKind: Send + Sync {
    /// The name used in pipeline files (`kind: train`).
    fn name(&self) -> &'static str;

    /// Changes whenever this kind's code changes what it produces. Part of every
    /// cache key, so upgrading a kind re-runs its stages and nothing else.
    fn code_version(&self) -> &'static str;

    /// Check the params before anything runs. The error names the offending param; the
    /// engine adds `file:line:column`.
    fn validate(&self, decl: &StageDecl<'_>) -> Result<(), ParamError>;

    /// The outputs this stage will produce, given its params.
    fn outputs(&self, decl: &StageDecl<'_>) -> Vec<OutputDecl>;

    /// Extra keys this kind accepts directly on the stage (beside `params`), folded into
    /// its params by the engine: `command` declares `cmd` and `outs`, so pipelines read
    /// like DVC's. Any other unknown stage key is a validation error.
    fn stage_keys(&self) -> &'static [&'static str] {
        &[]
    }

    /// Outputs that belong at a fixed place in the workspace (output name -> path
    /// relative to the pipeline file's directory), e.g. a `command` stage's `outs`. The
    /// engine links them there after the stage runs or is restored from the cache; every
    /// other output is materialized under `outputs/<stage>/`.
    fn workspace_paths(&self, _decl: &StageDecl<'_>) -> Vec<(String, String)> {
        Vec::new()
    }

    /// What `tureen plan` counts for this stage (steps, samples, FLOPs, output sizes),
    /// given the estimates of the stages it reads from. `Ok(None)`: nothing to
    /// estimate (the default, e.g. for shell commands).
    fn estimate(
        &self,
        _decl: &StageDecl<'_>,
        _inputs: &EstimateInputs<'_>,
    ) -> Result<Option<StageEstimate>, ParamError> {
        Ok(None)
    }

    /// The worker program that does this stage's work when it is not tureen itself.
    /// Kinds whose work needs libtorch (training, evaluation) name `tureen-torch`, so
    /// that `tureen` links no libtorch and starts in milliseconds. `None` (the default):
    /// the stage runs in the engine's own process. The engine asks once per stage and
    /// keeps the answer as the stage's [`Runner`].
    fn worker(&self, _decl: &StageDecl<'_>) -> Option<&'static str> {
        None
    }

    /// Whether several processes (ranks, started by a launcher such as torchrun or
    /// `srun`) run one stage of this kind together. Then only rank 0 locks, caches,
    /// commits and ingests; the others run the kind and leave the store alone. `false`
    /// (the default): every process runs the stage as a whole, serialised by its lock.
    fn data_parallel(&self) -> bool {
        false
    }
}

/// What a kind does: the work of its stages, registered beside its [`StageKind`] in
/// the program that can do it (see [`KindRegistry::set_work`]).
pub trait StageWork: Send + Sync {
    /// Do the work. Returns one [`Produced`] per declared output.
    fn run(&self, ctx: &mut StageContext<'_>) -> anyhow::Result<BTreeMap<String, Produced>>;
}

/// Where `kind` runs the stage `decl`.
pub fn runner_for(kind: &dyn StageKind, decl: &StageDecl<'_>) -> Runner {
    match kind.worker(decl) {
        Some(program) => Runner::Worker(program.to_string()),
        None => Runner::InProcess,
    }
}
