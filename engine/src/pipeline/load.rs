//! Reading a pipeline file into a validated [`Pipeline`], as a sequence of passes from
//! low level to high level, each in its own module:
//!
//! 1. [`source`]: text -> one YAML mapping with positions;
//! 2. [`params`]: top-level params, `-P` overrides;
//! 3. [`expand`]: `foreach`/`matrix` expansion and `${...}` substitution;
//! 4. [`stage`]: each stage read against the schema, then declared by its kind;
//! 5. [`resolve`]: references -> stage outputs or workspace files;
//! 6. [`cycles`]: the graph is acyclic.
//!
//! Every pass reports to one [`Sink`], so a user sees every problem of the file at once.
//! A pass runs only when the ones before it left it something sound to read.
//!
//! [`source`]: super::source
//! [`params`]: super::params
//! [`expand`]: super::expand
//! [`stage`]: super::stage
//! [`resolve`]: super::resolve
//! [`cycles`]: super::cycles

use std::path::Path;

use marked_yaml::types::MarkedMappingNode;
use marked_yaml::Node;
use serde_json::{Map, Value};

use super::error::LoadError;
use super::params::Overrides;
use super::stage::{Defaults, RawStage};
use super::yaml::{self, pos, type_name};
use super::{cycles, expand, params, resolve, schema, source, stage, Executor, Pipeline};
use crate::diag::{Pos, Sink};
use crate::kind::KindRegistry;
use crate::resources::Resources;

/// Reads and validates the pipeline at `path`. `overrides` are `-P name=value` or
/// `-P stage.param=value` strings.
pub fn load(
    path: &Path,
    registry: &KindRegistry,
    overrides: &[String],
) -> Result<Pipeline, LoadError> {
    let read = |source| LoadError::Read {
        path: path.to_path_buf(),
        source,
    };
    // Refuse FIFOs and devices before opening them: reading one can block forever.
    if !std::fs::metadata(path).map_err(read)?.is_file() {
        return Err(LoadError::NotAFile {
            path: path.to_path_buf(),
        });
    }
    let text = std::fs::read_to_string(path).map_err(read)?;
    load_str(path, &text, registry, overrides)
}

/// Like [`load`] with the file's text already read (relative paths are still relative
/// to `path`'s directory).
pub fn load_str(
    path: &Path,
    text: &str,
    registry: &KindRegistry,
    overrides: &[String],
) -> Result<Pipeline, LoadError> {
    let root = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let root = std::fs::canonicalize(root).map_err(|source| LoadError::Read {
        path: root.to_path_buf(),
        source,
    })?;
    let mut sink = Sink::new(path);
    let Some(mut top) = source::parse(text, &mut sink) else {
        return Err(invalid(sink));
    };
    let overrides = Overrides::parse(overrides)?;

    let mut top_params = params::read(&mut sink, top.get_node("params"));
    params::apply_top(&mut top_params, &overrides.top, path)?;
    let defaults = defaults(&mut sink, &top);
    let slurm = slurm_options(&mut sink, &top);
    let Some(stages_map) = stages_mapping(&mut sink, &mut top) else {
        return Err(invalid(sink));
    };

    let templates = expand::expand(&mut sink, stages_map, &top_params);
    let mut raws: Vec<RawStage> = templates
        .into_iter()
        .map(|t| stage::read(&mut sink, t, &defaults, registry))
        .collect();
    stage::apply_overrides(&mut raws, &overrides.stage)?;
    for raw in &mut raws {
        stage::declare(&mut sink, raw, registry);
    }
    let stages = resolve::resolve(&mut sink, raws, &root, path);
    if sink.is_empty() {
        cycles::check(&mut sink, &stages);
    }
    sink.finish().map_err(LoadError::Invalid)?;
    Ok(Pipeline::new(
        path.to_path_buf(),
        root,
        format!("blake3:{}", blake3::hash(text.as_bytes()).to_hex()),
        top_params,
        slurm,
        stages,
    ))
}

fn invalid(sink: Sink) -> LoadError {
    LoadError::Invalid(sink.finish().err().unwrap_or_default())
}

/// The top-level `env`, `executor` and `resources`, which every stage inherits.
fn defaults(sink: &mut Sink, top: &MarkedMappingNode) -> Defaults {
    Defaults {
        env: top
            .get_node("env")
            .map(|n| schema::env_map(sink, n))
            .unwrap_or_default(),
        executor: top
            .get_node("executor")
            .map(|n| schema::executor(sink, n))
            .unwrap_or(Executor::Local),
        resources: match top.get_node("resources") {
            Some(n) => schema::resources(sink, n, &Resources::default()),
            None => Resources::default(),
        },
    }
}

/// The top-level `slurm:` mapping, checked against the Slurm executor's options.
fn slurm_options(sink: &mut Sink, top: &MarkedMappingNode) -> Value {
    let Some(node) = top.get_node("slurm") else {
        return Value::Object(Map::new());
    };
    let value = yaml::to_json(node);
    if let Err(e) = crate::slurm::SlurmOptions::from_value(&value) {
        sink.error(pos(node), e.to_string());
    }
    value
}

/// Takes the `stages:` mapping out of `top`: the expansion moves its nodes rather than
/// copying them.
fn stages_mapping(sink: &mut Sink, top: &mut MarkedMappingNode) -> Option<MarkedMappingNode> {
    let Some(node) = top.remove("stages") else {
        sink.error(
            Pos::new(1, 1),
            "missing `stages:` (a mapping of stage name to stage)",
        );
        return None;
    };
    match node {
        Node::Mapping(map) => Some(map),
        other => {
            sink.error(
                pos(&other),
                format!(
                    "`stages` must be a mapping of stage name to stage, found {}",
                    type_name(&other)
                ),
            );
            None
        }
    }
}
