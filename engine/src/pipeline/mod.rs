//! Pipeline files: the schema, loading with positions, `foreach`/`matrix` expansion,
//! `${params.x}` substitution, reference resolution and validation.
//!
//! [`load`] either returns a fully validated [`Pipeline`] (every reference resolved,
//! every kind's params checked, the graph acyclic) or every problem as a
//! [`Diagnostics`](crate::diag::Diagnostics) naming `file:line:column`. It never writes
//! anything. The passes it runs, one module each, are listed in `load.rs`.

mod cycles;
mod error;
mod expand;
mod load;
mod params;
mod reference;
mod resolve;
mod schema;
mod source;
mod stage;
pub mod yaml;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

use serde_json::{Map, Value};

use crate::diag::Pos;
use crate::kind::{OutputDecl, Runner};
pub use crate::resources::Resources;

pub use error::LoadError;
pub use load::{load, load_str};
pub use reference::Select;
pub(crate) use resolve::{resolved as resolved_path, Resolved};

/// The schema version this build reads (`tureen: 1`).
pub const SCHEMA_VERSION: i64 = 1;

/// Which executor runs a stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Executor {
    /// On this machine.
    Local,
    /// As a Slurm batch job.
    Slurm,
}

impl Executor {
    /// The word used in pipeline files and records.
    pub fn as_str(self) -> &'static str {
        match self {
            Executor::Local => "local",
            Executor::Slurm => "slurm",
        }
    }
}

/// A validated pipeline, stages in file order (after `foreach`/`matrix` expansion).
#[derive(Debug, Clone)]
pub struct Pipeline {
    /// The file as given on the command line.
    pub file: PathBuf,
    /// The directory holding the file: relative paths are relative to it, command
    /// stages run in it, and outputs are materialized under it.
    pub root: PathBuf,
    /// `blake3:` digest of the file's bytes (recorded with each run).
    pub source_digest: String,
    /// Top-level params after `-P` overrides.
    pub params: Map<String, Value>,
    /// Options for the Slurm executor (the top-level `slurm:` mapping), as written.
    pub slurm: Value,
    /// The stages, in file order.
    pub stages: Vec<Stage>,
    index: HashMap<String, usize>,
}

impl Pipeline {
    /// A pipeline of validated stages (their `upstream` indices point into `stages`).
    pub(crate) fn new(
        file: PathBuf,
        root: PathBuf,
        source_digest: String,
        params: Map<String, Value>,
        slurm: Value,
        stages: Vec<Stage>,
    ) -> Pipeline {
        let index = stages
            .iter()
            .enumerate()
            .map(|(i, s)| (s.name.clone(), i))
            .collect();
        Pipeline {
            file,
            root,
            source_digest,
            params,
            slurm,
            stages,
            index,
        }
    }

    /// The index of the stage called `name`.
    pub fn stage_index(&self, name: &str) -> Option<usize> {
        self.index.get(name).copied()
    }

    /// The stage called `name`.
    pub fn stage(&self, name: &str) -> Option<&Stage> {
        self.stage_index(name).map(|i| &self.stages[i])
    }

    /// Stage indices in an order where every stage comes after its upstreams (stable:
    /// file order among independent stages).
    pub fn topo_order(&self) -> Vec<usize> {
        let n = self.stages.len();
        let mut indegree: Vec<usize> = self.stages.iter().map(|s| s.upstream.len()).collect();
        let mut downstream: Vec<Vec<usize>> = vec![Vec::new(); n];
        for (i, s) in self.stages.iter().enumerate() {
            for &u in &s.upstream {
                downstream[u].push(i);
            }
        }
        let mut ready: std::collections::BTreeSet<usize> =
            (0..n).filter(|&i| indegree[i] == 0).collect();
        let mut order = Vec::with_capacity(n);
        while let Some(i) = ready.pop_first() {
            order.push(i);
            for &d in &downstream[i] {
                indegree[d] -= 1;
                if indegree[d] == 0 {
                    ready.insert(d);
                }
            }
        }
        order
    }

    /// For each stage, the stages that consume its outputs.
    pub fn downstream(&self) -> Vec<Vec<usize>> {
        let mut down = vec![Vec::new(); self.stages.len()];
        for (i, s) in self.stages.iter().enumerate() {
            for &u in &s.upstream {
                down[u].push(i);
            }
        }
        down
    }

    /// `names` and all their ancestors, as a membership mask (for `--only`).
    pub fn with_ancestors(&self, names: &[usize]) -> Vec<bool> {
        let mut keep = vec![false; self.stages.len()];
        let mut stack: Vec<usize> = names.to_vec();
        while let Some(i) = stack.pop() {
            if !keep[i] {
                keep[i] = true;
                stack.extend(self.stages[i].upstream.iter().copied());
            }
        }
        keep
    }
}

/// One stage, resolved: params substituted and overridden, references resolved.
#[derive(Debug, Clone)]
pub struct Stage {
    /// The name (after expansion: `train@0.001`).
    pub name: String,
    /// The kind's name.
    pub kind: String,
    /// Where the stage is declared (its name in the `stages:` mapping).
    pub pos: Pos,
    /// Where each of its keys is written (`resources`, `outs`, ...), for checks made
    /// after loading (the run's preflight) to point at.
    pub key_pos: BTreeMap<String, Pos>,
    /// Params, including kind stage keys such as a command's `cmd` and `outs`.
    pub params: Map<String, Value>,
    /// Named inputs (`inputs:`), handed to the kind.
    pub inputs: BTreeMap<String, Input>,
    /// Unnamed dependencies (`deps:`): part of the cache key and the ordering only.
    pub deps: Vec<Ref>,
    /// What the kind declared the stage produces.
    pub outputs: Vec<OutputDecl>,
    /// Output name -> path relative to the pipeline directory, where the kind asked
    /// for one (a command's `outs`).
    pub workspace_paths: BTreeMap<String, String>,
    /// Where its work runs (in tureen, or in a worker program), decided by its kind.
    pub runner: Runner,
    /// What it asks of the machine.
    pub resources: Resources,
    /// Processes that run it together (its ranks): [`Resources::world_size`] for a
    /// data-parallel kind, 1 for every other.
    pub world: u32,
    /// How often a failed attempt is retried.
    pub retries: u32,
    /// Which executor runs it.
    pub executor: Executor,
    /// Declared environment: pipeline `env` merged with the stage's `env`.
    pub env: BTreeMap<String, String>,
    /// The stage's `description:`.
    pub description: Option<String>,
    /// Top-level params this stage uses through `${params.NAME}` (to explain re-runs
    /// in terms of what the user changed).
    pub param_refs: Vec<String>,
    /// Stages whose outputs this stage consumes (deduplicated, sorted).
    pub upstream: Vec<usize>,
}

impl Stage {
    /// Where key `key` of the stage is written, else where the stage is.
    pub fn pos_of(&self, key: &str) -> Pos {
        self.key_pos.get(key).copied().unwrap_or(self.pos)
    }

    /// The declared output called `name`.
    pub fn output(&self, name: &str) -> Option<&OutputDecl> {
        self.outputs.iter().find(|o| o.name == name)
    }

    /// Every reference (named inputs, then deps).
    pub fn refs(&self) -> impl Iterator<Item = &Ref> {
        self.inputs
            .values()
            .flat_map(|i| i.refs())
            .chain(self.deps.iter())
    }
}

/// A named input: one reference, or a list of them handed over as a series.
#[derive(Debug, Clone)]
pub enum Input {
    /// One reference.
    One(Ref),
    /// A list of references, handed to the stage as one series.
    List(Vec<Ref>),
}

impl Input {
    /// The references, in order.
    pub fn refs(&self) -> &[Ref] {
        match self {
            Input::One(r) => std::slice::from_ref(r),
            Input::List(rs) => rs,
        }
    }
}

/// A reference as written (`core.checkpoints[230]`, `data/train.csv`) and what it
/// resolved to.
#[derive(Debug, Clone)]
pub struct Ref {
    /// The reference exactly as the pipeline file writes it.
    pub text: String,
    /// Where it is written.
    pub pos: Pos,
    /// What it resolved to.
    pub target: Target,
}

/// What a reference points at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// An output of another stage (`stage` is an index into [`Pipeline::stages`]).
    Output {
        /// The producing stage.
        stage: usize,
        /// Its output's name.
        output: String,
        /// Which part of it.
        select: Select,
    },
    /// A file or directory in the workspace that no stage produces.
    File {
        /// The path as written, relative to the pipeline's directory.
        rel: String,
        /// `rel` joined to the pipeline's directory; it existed when the file was loaded.
        path: PathBuf,
    },
}
