//! The contract between the engine and the stage kinds.
//!
//! The engine knows nothing about training, soups or shell commands: it validates a
//! pipeline, orders stages, computes cache keys, materializes inputs and stores outputs.
//! What a stage *does* lives behind [`StageKind`], implemented in the `tureen-stages`
//! crate and registered once in a [`KindRegistry`]. Adding a kind never touches the
//! engine.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use serde_json::{Map, Value};

pub use crate::rank::Rank;

/// A content digest as written everywhere in tureen: `blake3:<64 hex digits>`.
pub type Digest = String;

/// One artifact handed to a stage: its digest and a read-only path where it is
/// materialized (a file, or a directory for tree artifacts such as a dataset).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Artifact {
    pub digest: Digest,
    pub path: PathBuf,
}

/// A resolved stage input: a single artifact, or a whole series
/// (`core.checkpoints`), or one element of a series (`core.checkpoints[230]`, which
/// resolves to [`InputValue::One`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InputValue {
    One(Artifact),
    Series(Vec<Artifact>),
}

/// Whether an output is one artifact or an ordered series of them (checkpoints).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputShape {
    One,
    Series,
}

/// An output a kind promises to produce, known before the stage runs so that
/// references like `core.final` and `core.checkpoints[230]` validate up front.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputDecl {
    pub name: String,
    pub shape: OutputShape,
    /// For series: the number of elements when it follows from params (e.g. the
    /// number of checkpoint intervals), so an index out of range fails validation.
    pub len: Option<usize>,
}

/// What a stage produced. Paths are inside the stage's work directory (the engine
/// ingests them into the store); `Stored` names an artifact the stage already
/// committed itself, e.g. a checkpoint written mid-run through [`CheckpointJournal`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Produced {
    Path(PathBuf),
    Stored(Digest),
    Series(Vec<Produced>),
}

/// The stage as declared in the pipeline, after params were resolved
/// (`${params.x}` substituted, CLI overrides applied, foreach expanded).
#[derive(Debug, Clone)]
pub struct StageDecl<'a> {
    pub name: &'a str,
    pub params: &'a Map<String, Value>,
    /// Names of the declared inputs (references are resolved later).
    pub input_names: Vec<&'a str>,
}

/// Human-readable log lines and machine-readable metrics of one stage.
///
/// The engine writes lines to the stage's log file (tailed on failure) and metrics
/// to the run's JSONL metrics log (and TensorBoard where configured).
pub trait StageLog: Send {
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
    pub stage: &'a str,
    pub params: &'a Map<String, Value>,
    pub inputs: &'a BTreeMap<String, InputValue>,
    /// An empty directory owned by this attempt; produced files go here.
    pub work_dir: &'a Path,
    /// The directory of the pipeline file. Relative paths in params (e.g. a `command`
    /// stage's `outs`) are relative to it, and `command` stages run in it.
    pub workspace: &'a Path,
    /// The stage's declared environment (pipeline `env` merged with the stage's `env`);
    /// part of the cache key. Kinds that start processes pass it to them.
    pub env: &'a BTreeMap<String, String>,
    pub log: &'a mut dyn StageLog,
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

/// A kind of stage: `command`, `soup`, `train`, `rewind`, `eval`, ...
pub trait StageKind: Send + Sync {
    /// The name used in pipeline files (`kind: train`).
    fn name(&self) -> &'static str;

    /// Changes whenever this kind's code changes what it produces. Part of every
    /// cache key, so upgrading a kind re-runs its stages and nothing else.
    fn code_version(&self) -> &'static str;

    /// Check the params before anything runs. Errors name the offending param
    /// (`params.lr: expected a number`); the engine adds file:line:column.
    fn validate(&self, decl: &StageDecl<'_>) -> Result<(), String>;

    /// The outputs this stage will produce, given its params.
    fn outputs(&self, decl: &StageDecl<'_>) -> Vec<OutputDecl>;

    /// Extra keys this kind accepts directly on the stage (beside `params`), folded into
    /// its params by the engine: `command` declares `cmd` and `outs`, so pipelines read
    /// like DVC's. Any other unknown stage key is a validation error.
    fn stage_keys(&self) -> &'static [&'static str] {
        &[]
    }

    /// Outputs that belong at a fixed place in the workspace (path relative to the
    /// pipeline file's directory), e.g. a `command` stage's `outs`. The engine links them
    /// there after the stage runs or is restored from the cache; every other output is
    /// materialized under `outputs/<stage>/`.
    fn workspace_paths(&self, _decl: &StageDecl<'_>) -> Vec<(String, String)> {
        Vec::new()
    }

    /// What `tureen plan` counts for this stage (steps, samples, FLOPs, output sizes),
    /// given the estimates of the stages it reads from. `Ok(None)`: nothing to
    /// estimate (the default, e.g. for shell commands). Errors name the param, like
    /// [`StageKind::validate`].
    fn estimate(
        &self,
        _decl: &StageDecl<'_>,
        _inputs: &crate::plan::EstimateInputs<'_>,
    ) -> Result<Option<crate::plan::StageEstimate>, String> {
        Ok(None)
    }

    /// The executable that runs this stage when it is not tureen itself. Kinds whose
    /// work needs libtorch (training, evaluation) name the `tureen-torch` worker, so
    /// that `tureen` links no libtorch and starts in milliseconds; the engine hands
    /// such a stage to that program as a [`crate::job::StageJob`] file, locally or on
    /// Slurm. `None` (the default): the stage runs in the engine's own process.
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

    /// Do the work. Returns one [`Produced`] per declared output.
    fn run(&self, ctx: &mut StageContext<'_>) -> anyhow::Result<BTreeMap<String, Produced>>;
}

/// The set of kinds a pipeline may use, looked up by name.
#[derive(Default, Clone)]
pub struct KindRegistry {
    kinds: BTreeMap<&'static str, Arc<dyn StageKind>>,
}

impl KindRegistry {
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers `kind`; a later registration of the same name replaces it.
    pub fn register(&mut self, kind: Arc<dyn StageKind>) {
        self.kinds.insert(kind.name(), kind);
    }

    pub fn get(&self, name: &str) -> Option<&Arc<dyn StageKind>> {
        self.kinds.get(name)
    }

    /// Registered names, sorted; used in "unknown kind" errors.
    pub fn names(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.kinds.keys().copied()
    }
}
