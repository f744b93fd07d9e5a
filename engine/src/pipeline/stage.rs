//! Pass 4: each stage template read against the schema ([`RawStage`]), `-P STAGE.PARAM`
//! overrides applied, then declared by its kind: the kind validates the params and says
//! what the stage will produce and where it runs.

use std::collections::{BTreeMap, HashMap};

use marked_yaml::types::MarkedMappingNode;
use marked_yaml::Node;
use serde_json::Map;

use super::expand::Template;
use super::error::LoadError;
use super::params::{self, StageOverride};
use super::schema;
use super::yaml::{self, pos, type_name};
use super::{Executor, Stage};
use crate::diag::{suggest, Pos, Sink};
use crate::kind::{runner_for, KindRegistry, ParamError, StageDecl, StageKind};
use crate::resources::Resources;

/// The keys every stage takes (a kind adds its own, see [`StageKind::stage_keys`]).
const STAGE_KEYS: &[&str] = &[
    "kind",
    "description",
    "inputs",
    "deps",
    "params",
    "resources",
    "retries",
    "executor",
    "env",
    "foreach",
    "matrix",
];

/// What every stage inherits from the top level.
pub(super) struct Defaults {
    pub env: BTreeMap<String, String>,
    pub executor: Executor,
    pub resources: Resources,
}

/// A reference as written, with its position.
pub(super) type Written = (String, Pos);

/// A named input as written: one reference or a list.
pub(super) enum RawInput {
    One(Written),
    List(Vec<Written>),
}

/// A stage read against the schema, before references are resolved.
pub(super) struct RawStage {
    /// The stage, with everything but inputs, deps and upstreams filled in.
    pub stage: Stage,
    pub inputs: Vec<(String, RawInput)>,
    pub deps: Vec<Written>,
    /// Where `params:` is (or the stage's name when it has none).
    pub params_pos: Pos,
    /// Where each param (and kind stage key) is, for the kind's messages.
    pub param_pos: HashMap<String, Pos>,
    /// Where `inputs:` is.
    pub inputs_pos: Option<Pos>,
    /// Whether a registered kind declared the stage's outputs (an unknown kind has
    /// none; references to its stage are not checked, it already has its error).
    pub declared: bool,
}

/// Reads one stage template; its problems go to the sink.
pub(super) fn read(
    sink: &mut Sink,
    t: Template,
    defaults: &Defaults,
    registry: &KindRegistry,
) -> RawStage {
    let map = &t.map;
    let kind = kind_of(sink, map, &t.name, t.name_pos, registry);
    let kind_keys = kind.map(|k| k.stage_keys()).unwrap_or(&[]);
    if kind.is_some() || map.get_node("kind").is_none() {
        let mut allowed = STAGE_KEYS.to_vec();
        allowed.extend_from_slice(kind_keys);
        schema::check_keys(sink, map, &allowed, &format!("key in stage `{}`", t.name));
    }
    let (params, param_pos, params_pos) = stage_params(sink, map, kind_keys, t.name_pos);
    let (inputs, inputs_pos) = inputs(sink, map);
    let deps = map
        .get_node("deps")
        .map(|n| schema::scalar_list(sink, n, "deps"))
        .unwrap_or_default();
    let stage = Stage {
        name: t.name,
        kind: kind.map(|k| k.name().to_string()).unwrap_or_default(),
        pos: t.name_pos,
        key_pos: map
            .iter()
            .map(|(k, _)| (k.as_str().to_string(), yaml::span_pos(k.span())))
            .collect(),
        params,
        inputs: BTreeMap::new(),
        deps: Vec::new(),
        outputs: Vec::new(),
        workspace_paths: BTreeMap::new(),
        runner: Default::default(),
        resources: match map.get_node("resources") {
            Some(n) => schema::resources(sink, n, &defaults.resources),
            None => defaults.resources.clone(),
        },
        world: 1,
        retries: map
            .get_node("retries")
            .and_then(|n| schema::uint(sink, n, "retries"))
            .unwrap_or(0),
        executor: map
            .get_node("executor")
            .map(|n| schema::executor(sink, n))
            .unwrap_or(defaults.executor),
        env: {
            let mut env = defaults.env.clone();
            if let Some(node) = map.get_node("env") {
                env.extend(schema::env_map(sink, node));
            }
            env
        },
        description: map
            .get_node("description")
            .and_then(|n| schema::string(sink, n, "description")),
        param_refs: t.param_refs,
        upstream: Vec::new(),
    };
    RawStage {
        stage,
        inputs,
        deps,
        params_pos,
        param_pos,
        inputs_pos,
        declared: false,
    }
}

/// The stage's kind, looked up in the registry.
fn kind_of<'r>(
    sink: &mut Sink,
    map: &MarkedMappingNode,
    name: &str,
    name_pos: Pos,
    registry: &'r KindRegistry,
) -> Option<&'r dyn StageKind> {
    let kinds = || registry.names().collect::<Vec<_>>().join(", ");
    match map.get_node("kind") {
        None => {
            sink.error(
                name_pos,
                format!("stage `{name}` has no `kind` (one of: {})", kinds()),
            );
            None
        }
        Some(Node::Scalar(s)) => match registry.get(s.as_str()) {
            Some(k) => Some(k.as_ref()),
            None => {
                let hint = suggest(s.as_str(), registry.names())
                    .map(|s| format!("did you mean `{s}`? "))
                    .unwrap_or_default();
                sink.error(
                    yaml::span_pos(s.span()),
                    format!(
                        "unknown stage kind `{}` ({hint}registered kinds: {})",
                        s.as_str(),
                        kinds()
                    ),
                );
                None
            }
        },
        Some(other) => {
            sink.error(
                pos(other),
                format!("`kind` must be a string, found {}", type_name(other)),
            );
            None
        }
    }
}

/// `params:` plus the kind's stage keys, with positions.
fn stage_params(
    sink: &mut Sink,
    map: &MarkedMappingNode,
    kind_keys: &[&str],
    name_pos: Pos,
) -> (Map<String, serde_json::Value>, HashMap<String, Pos>, Pos) {
    let mut params = Map::new();
    let mut param_pos = HashMap::new();
    let mut params_pos = name_pos;
    if let Some(node) = map.get_node("params") {
        params_pos = pos(node);
        match node {
            Node::Mapping(m) => {
                for (k, v) in m.iter() {
                    param_pos.insert(k.as_str().to_string(), yaml::span_pos(k.span()));
                    params.insert(k.as_str().to_string(), yaml::to_json(v));
                }
            }
            other => sink.error(
                pos(other),
                format!("`params` must be a mapping, found {}", type_name(other)),
            ),
        }
    }
    for key in kind_keys {
        if let Some((k, v)) = map.get_key_value(*key) {
            if params.contains_key(*key) {
                sink.error(
                    yaml::span_pos(k.span()),
                    format!("`{key}` is given both here and in `params`"),
                );
            }
            param_pos.insert(key.to_string(), yaml::span_pos(k.span()));
            params.insert(key.to_string(), yaml::to_json(v));
        }
    }
    (params, param_pos, params_pos)
}

/// `inputs:` as written, and where it is.
fn inputs(sink: &mut Sink, map: &MarkedMappingNode) -> (Vec<(String, RawInput)>, Option<Pos>) {
    let Some(node) = map.get_node("inputs") else {
        return (Vec::new(), None);
    };
    let Node::Mapping(m) = node else {
        sink.error(
            pos(node),
            format!(
                "`inputs` must be a mapping of input name to reference, found {}",
                type_name(node)
            ),
        );
        return (Vec::new(), Some(pos(node)));
    };
    let mut out = Vec::new();
    for (k, v) in m.iter() {
        let input = match v {
            Node::Scalar(s) => RawInput::One((s.as_str().to_string(), yaml::span_pos(s.span()))),
            Node::Sequence(items) => {
                let mut refs = Vec::new();
                for item in items.iter() {
                    match item {
                        Node::Scalar(s) => {
                            refs.push((s.as_str().to_string(), yaml::span_pos(s.span())))
                        }
                        other => sink.error(
                            pos(other),
                            format!(
                                "input `{}`: expected a reference, found {}",
                                k.as_str(),
                                type_name(other)
                            ),
                        ),
                    }
                }
                RawInput::List(refs)
            }
            other => {
                sink.error(
                    pos(other),
                    format!(
                        "input `{}` must be a reference (`stage.output`, `stage.series[i]` or a file) or a list of them, found {}",
                        k.as_str(),
                        type_name(other)
                    ),
                );
                continue;
            }
        };
        out.push((k.as_str().to_string(), input));
    }
    (out, Some(pos(node)))
}

/// Applies `-P STAGE.PARAM=VALUE`: a param the stage declares keeps its type; any other
/// is typed as YAML would type it (the kind's validation then judges it).
pub(super) fn apply_overrides(
    raws: &mut [RawStage],
    overrides: &[StageOverride],
) -> Result<(), LoadError> {
    for o in overrides {
        let raw = raws
            .iter_mut()
            .find(|r| r.stage.name == o.stage)
            .ok_or_else(|| {
                LoadError::Override(format!(
                    "-P {}.{}={}: no stage `{}` (and no top-level param `{}.{}`)",
                    o.stage, o.param, o.text, o.stage, o.stage, o.param
                ))
            })?;
        let value = match raw.stage.params.get(&o.param) {
            Some(declared) => params::typed(&format!("{}.{}", o.stage, o.param), declared, &o.text)
                .map_err(LoadError::Override)?,
            None => params::from_cli(&o.text),
        };
        raw.stage.params.insert(o.param.clone(), value);
    }
    Ok(())
}

/// The kind's view of the stage: validation, declared outputs, workspace paths and
/// where it runs. Outputs are declared even when validation fails, so that references
/// to the stage are not reported again as follow-on errors.
pub(super) fn declare(sink: &mut Sink, raw: &mut RawStage, registry: &KindRegistry) {
    let Some(kind) = registry.get(&raw.stage.kind).cloned() else {
        return;
    };
    raw.stage.world = world_of(sink, &raw.stage, kind.as_ref(), registry);
    let decl = StageDecl {
        name: &raw.stage.name,
        params: &raw.stage.params,
        input_names: raw.inputs.iter().map(|(n, _)| n.as_str()).collect(),
        world: raw.stage.world,
    };
    if let Err(e) = kind.validate(&decl) {
        let at = position_of(raw, &e);
        sink.error(
            at,
            format!("stage `{}` ({}): {e}", raw.stage.name, raw.stage.kind),
        );
    }
    raw.stage.outputs = kind.outputs(&decl);
    raw.stage.workspace_paths = kind.workspace_paths(&decl).into_iter().collect();
    raw.stage.runner = runner_for(kind.as_ref(), &decl);
    raw.declared = true;
}

/// How many processes run `stage`: its resources' world size when its kind is
/// data-parallel. Another kind runs as one process; asking it for more processes per
/// node is an error (more nodes stay a Slurm allocation its command may use itself).
fn world_of(sink: &mut Sink, stage: &Stage, kind: &dyn StageKind, registry: &KindRegistry) -> u32 {
    let r = &stage.resources;
    if kind.data_parallel() {
        return r.world_size();
    }
    if let Some(t) = r.tasks_per_node.filter(|&t| t > 1) {
        let parallel: Vec<&str> = registry
            .names()
            .filter(|n| registry.get(n).is_some_and(|k| k.data_parallel()))
            .collect();
        sink.error(
            stage.pos_of("resources"),
            format!(
                "stage `{}`: `resources.tasks_per_node: {t}` asks for {} processes, but kind `{}` \
                 is not data-parallel (it runs as one process; data-parallel kinds: {})",
                stage.name,
                r.world_size(),
                stage.kind,
                if parallel.is_empty() { "none".to_string() } else { parallel.join(", ") }
            ),
        );
    }
    1
}

/// Where the field a kind's error is about is written.
fn position_of(raw: &RawStage, e: &ParamError) -> Pos {
    match e.field.key() {
        "inputs" => raw.inputs_pos.unwrap_or(raw.stage.pos),
        key => raw.param_pos.get(key).copied().unwrap_or(raw.params_pos),
    }
}
