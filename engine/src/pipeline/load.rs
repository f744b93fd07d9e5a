//! Reading a pipeline file into a validated [`Pipeline`].

use std::collections::{BTreeMap, HashMap};
use std::path::{Component, Path, PathBuf};

use marked_yaml::types::{MarkedMappingNode, MarkedScalarNode};
use marked_yaml::{LoaderOptions, Node};
use serde_json::{Map, Value};

use super::reference::{self, Select};
use super::yaml::{self, pos, type_name};
use super::{Executor, Input, Pipeline, Ref, Resources, Stage, Target, SCHEMA_VERSION};
use crate::diag::{suggest, Diagnostics, Pos, Sink};
use crate::kind::{KindRegistry, OutputShape, StageDecl};
use crate::subst;

const TOP_KEYS: &[&str] = &[
    "tureen",
    "description",
    "params",
    "env",
    "executor",
    "resources",
    "slurm",
    "stages",
];
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
const RESOURCE_KEYS: &[&str] = &["cpus", "gpus", "memory", "nodes", "time"];

/// Why a pipeline could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// `-P` problems (they are on the command line, not in the file).
    #[error("{0}")]
    Override(String),
    #[error("{0}")]
    Invalid(Diagnostics),
}

/// Reads and validates the pipeline at `path`. `overrides` are `-P name=value` or
/// `-P stage.param=value` strings.
pub fn load(
    path: &Path,
    registry: &KindRegistry,
    overrides: &[String],
) -> Result<Pipeline, LoadError> {
    let text = std::fs::read_to_string(path).map_err(|source| LoadError::Read {
        path: path.to_path_buf(),
        source,
    })?;
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
    let mut loader = Loader {
        sink: Sink::new(path),
        used_params: Default::default(),
        registry,
        root,
    };
    let result = loader.pipeline(path, text, overrides);
    match (result, loader.sink.finish()) {
        (Ok(p), Ok(())) => Ok(p),
        (Err(e), _) => Err(e),
        (Ok(_), Err(d)) => Err(LoadError::Invalid(d)),
    }
}

struct Loader<'r> {
    sink: Sink,
    /// Top-level params referenced while substituting the current stage.
    used_params: std::collections::BTreeSet<String>,
    registry: &'r KindRegistry,
    root: PathBuf,
}

/// Values a stage template may refer to while it is expanded.
struct Bindings<'a> {
    params: &'a Map<String, Value>,
    item: Option<&'a Value>,
    key: Option<&'a str>,
}

/// A stage after expansion and substitution, before references are resolved.
struct RawStage {
    stage: Stage,
    inputs: Vec<(String, RawInput)>,
    deps: Vec<(String, Pos)>,
    params_pos: Pos,
    /// Positions of individual params, for kind validation messages.
    param_pos: HashMap<String, Pos>,
}

enum RawInput {
    One(String, Pos),
    List(Vec<(String, Pos)>),
}

impl Loader<'_> {
    fn pipeline(
        &mut self,
        path: &Path,
        text: &str,
        overrides: &[String],
    ) -> Result<Pipeline, LoadError> {
        // `prevent_coercion` keeps quoted scalars strings (`"12"` is not a number).
        let options = LoaderOptions::default()
            .error_on_duplicate_keys(true)
            .prevent_coercion(true);
        let doc = match marked_yaml::parse_yaml_with_options(0, text, options) {
            Ok(doc) => doc,
            Err(e) => {
                let (p, msg) = describe_load_error(&e);
                self.sink.error(p, msg);
                return Err(LoadError::Invalid(
                    std::mem::replace(&mut self.sink, Sink::new(path))
                        .finish()
                        .unwrap_err(),
                ));
            }
        };
        let top = doc
            .as_mapping()
            .expect("marked_yaml returns a mapping at the top level");
        self.check_keys(top, TOP_KEYS, "top-level key");

        match top.get_node("tureen") {
            None => self.sink.error(
                Pos::new(1, 1),
                format!("missing `tureen: {SCHEMA_VERSION}` (the schema version)"),
            ),
            Some(v) if yaml::to_json(v) != SCHEMA_VERSION => self.sink.error(
                pos(v),
                format!(
                    "unsupported schema version {}: this tureen reads `tureen: {SCHEMA_VERSION}`",
                    yaml::to_json(v)
                ),
            ),
            Some(_) => {}
        }

        let mut params = match top.get_node("params") {
            Some(Node::Mapping(m)) => {
                let mut out = Map::new();
                for (k, v) in m.iter() {
                    if !is_identifier(k.as_str()) {
                        self.sink.error(
                            yaml::span_pos(k.span()),
                            format!(
                                "invalid param name `{}`: use letters, digits and `_`",
                                k.as_str()
                            ),
                        );
                    }
                    out.insert(k.as_str().to_string(), yaml::to_json(v));
                }
                out
            }
            Some(other) => {
                self.sink.error(
                    pos(other),
                    format!("`params` must be a mapping, found {}", type_name(other)),
                );
                Map::new()
            }
            None => Map::new(),
        };
        let (top_overrides, stage_overrides) = split_overrides(overrides)?;
        apply_param_overrides(&mut params, &top_overrides, path)?;

        let empty = Map::new();
        let top_bindings = Bindings {
            params: &params,
            item: None,
            key: None,
        };
        let env = match top.get_node("env") {
            Some(node) => {
                let node = self.substitute(node, &top_bindings);
                self.env_map(&node)
            }
            None => BTreeMap::new(),
        };
        let default_executor = top
            .get_node("executor")
            .map(|n| self.executor(n))
            .unwrap_or(Executor::Local);
        let default_resources = match top.get_node("resources") {
            Some(n) => self.resources(n, &Resources::default()),
            None => Resources::default(),
        };
        let slurm = top
            .get_node("slurm")
            .map(yaml::to_json)
            .unwrap_or(Value::Object(empty));
        if let (Some(node), Err(e)) = (top.get_node("slurm"), crate::slurm::SlurmOptions::from_value(&slurm)) {
            self.sink.error(pos(node), e.to_string());
        }

        let Some(stages_node) = top.get_node("stages") else {
            self.sink.error(
                Pos::new(1, 1),
                "missing `stages:` (a mapping of stage name to stage)",
            );
            return Err(self.take_invalid(path));
        };
        let Some(stages_map) = stages_node.as_mapping() else {
            self.sink.error(
                pos(stages_node),
                format!(
                    "`stages` must be a mapping of stage name to stage, found {}",
                    type_name(stages_node)
                ),
            );
            return Err(self.take_invalid(path));
        };

        let mut raws: Vec<RawStage> = Vec::new();
        for (name, node) in stages_map.iter() {
            let name_pos = yaml::span_pos(name.span());
            if !is_stage_name(name.as_str()) {
                self.sink.error(
                    name_pos,
                    format!(
                        "invalid stage name `{}`: use letters, digits, `_` and `-`",
                        name.as_str()
                    ),
                );
                continue;
            }
            let Some(map) = node.as_mapping() else {
                self.sink.error(
                    pos(node),
                    format!(
                        "stage `{}` must be a mapping, found {}",
                        name.as_str(),
                        type_name(node)
                    ),
                );
                continue;
            };
            for (suffix, item, key) in self.expansions(map) {
                let stage_name = match &suffix {
                    Some(s) => format!("{}@{}", name.as_str(), s),
                    None => name.as_str().to_string(),
                };
                let bindings = Bindings {
                    params: &params,
                    item: item.as_ref(),
                    key: key.as_deref(),
                };
                self.used_params.clear();
                let node = self.substitute(node, &bindings);
                let param_refs: Vec<String> =
                    std::mem::take(&mut self.used_params).into_iter().collect();
                let ctx = StageDefaults {
                    env: &env,
                    executor: default_executor,
                    resources: &default_resources,
                };
                if let Some(mut raw) = self.stage(
                    &stage_name,
                    name_pos,
                    node.as_mapping().expect("still a mapping"),
                    &ctx,
                ) {
                    raw.stage.param_refs = param_refs;
                    if raws.iter().any(|r| r.stage.name == stage_name) {
                        self.sink.error(
                            name_pos,
                            format!("duplicate stage name `{stage_name}` after expansion"),
                        );
                        continue;
                    }
                    raws.push(raw);
                }
            }
        }

        apply_stage_overrides(&mut raws, &stage_overrides)?;
        self.kind_checks(&mut raws);
        let index: HashMap<String, usize> = raws
            .iter()
            .enumerate()
            .map(|(i, r)| (r.stage.name.clone(), i))
            .collect();
        let stages = self.resolve(raws, &index);
        if !self.sink.is_empty() {
            return Err(self.take_invalid(path));
        }
        self.check_cycles(&stages);
        if !self.sink.is_empty() {
            return Err(self.take_invalid(path));
        }
        Ok(Pipeline {
            file: path.to_path_buf(),
            root: self.root.clone(),
            source_digest: format!("blake3:{}", blake3::hash(text.as_bytes()).to_hex()),
            params,
            slurm,
            stages,
            index,
        })
    }

    fn take_invalid(&mut self, path: &Path) -> LoadError {
        match std::mem::replace(&mut self.sink, Sink::new(path)).finish() {
            Err(d) => LoadError::Invalid(d),
            Ok(()) => LoadError::Invalid(Diagnostics::default()),
        }
    }

    fn check_keys(&mut self, map: &MarkedMappingNode, allowed: &[&str], what: &str) {
        for key in map.keys() {
            if !allowed.contains(&key.as_str()) {
                let hint = match suggest(key.as_str(), allowed.iter().copied()) {
                    Some(s) => format!(" (did you mean `{s}`?)"),
                    None => format!(" (expected one of: {})", allowed.join(", ")),
                };
                self.sink.error(
                    yaml::span_pos(key.span()),
                    format!("unknown {what} `{}`{hint}", key.as_str()),
                );
            }
        }
    }

    /// `foreach`/`matrix` items: `(name suffix, ${item}, ${key})`; one item without a
    /// suffix when the stage is not expanded.
    fn expansions(
        &mut self,
        map: &MarkedMappingNode,
    ) -> Vec<(Option<String>, Option<Value>, Option<String>)> {
        let foreach = map.get_node("foreach");
        let matrix = map.get_node("matrix");
        match (foreach, matrix) {
            (None, None) => vec![(None, None, None)],
            (Some(_), Some(m)) => {
                self.sink
                    .error(pos(m), "a stage takes `foreach` or `matrix`, not both");
                Vec::new()
            }
            (Some(node), None) => match node {
                Node::Sequence(items) if !items.is_empty() => items
                    .iter()
                    .map(|item| {
                        let v = yaml::to_json(item);
                        let suffix = match &v {
                            Value::Object(_) | Value::Array(_) => None,
                            other => Some(yaml::plain_text(other)),
                        };
                        (suffix, Some(v), None)
                    })
                    .enumerate()
                    .map(|(i, (s, v, k))| (Some(s.unwrap_or_else(|| i.to_string())), v, k))
                    .collect(),
                Node::Mapping(items) if !items.is_empty() => items
                    .iter()
                    .map(|(k, v)| {
                        (
                            Some(k.as_str().to_string()),
                            Some(yaml::to_json(v)),
                            Some(k.as_str().to_string()),
                        )
                    })
                    .collect(),
                other => {
                    self.sink.error(
                        pos(other),
                        format!(
                            "`foreach` must be a non-empty list or mapping, found {}",
                            type_name(other)
                        ),
                    );
                    Vec::new()
                }
            },
            (None, Some(node)) => {
                let Some(axes) = node.as_mapping().filter(|m| !m.is_empty()) else {
                    self.sink.error(
                        pos(node),
                        "`matrix` must be a non-empty mapping of name to list of values",
                    );
                    return Vec::new();
                };
                let mut combos: Vec<(Vec<String>, Map<String, Value>)> =
                    vec![(Vec::new(), Map::new())];
                for (axis, values) in axes.iter() {
                    let Some(values) = values.as_sequence().filter(|s| !s.is_empty()) else {
                        self.sink.error(
                            pos(values),
                            format!("matrix axis `{}` must be a non-empty list", axis.as_str()),
                        );
                        return Vec::new();
                    };
                    let mut next = Vec::new();
                    for (names, item) in &combos {
                        for v in values.iter() {
                            let value = yaml::to_json(v);
                            let mut names = names.clone();
                            names.push(yaml::plain_text(&value));
                            let mut item = item.clone();
                            item.insert(axis.as_str().to_string(), value);
                            next.push((names, item));
                        }
                    }
                    combos = next;
                }
                combos
                    .into_iter()
                    .map(|(names, item)| (Some(names.join("-")), Some(Value::Object(item)), None))
                    .collect()
            }
        }
    }

    /// A copy of `node` with `${params.x}`, `${item...}` and `${key}` substituted in
    /// every scalar (keys included). A scalar that is exactly one `${...}` takes the
    /// value's type.
    fn substitute(&mut self, node: &Node, b: &Bindings<'_>) -> Node {
        match node {
            Node::Scalar(s) => self.substitute_scalar(s, b),
            Node::Sequence(seq) => {
                let mut out = seq.clone();
                for item in out.iter_mut() {
                    *item = self.substitute(item, b);
                }
                Node::Sequence(out)
            }
            Node::Mapping(map) => {
                let mut out = MarkedMappingNode::new_empty(*map.span());
                for (k, v) in map.iter() {
                    // Skip the expansion keys themselves: their values are the items.
                    if matches!(k.as_str(), "foreach" | "matrix") {
                        continue;
                    }
                    let key = match self.substitute_scalar(k, b) {
                        Node::Scalar(s) => s,
                        _ => k.clone(),
                    };
                    out.insert(key, self.substitute(v, b));
                }
                Node::Mapping(out)
            }
        }
    }

    fn substitute_scalar(&mut self, s: &MarkedScalarNode, b: &Bindings<'_>) -> Node {
        let text = s.as_str();
        if !text.contains("${") {
            return Node::Scalar(s.clone());
        }
        let p = yaml::span_pos(s.span());
        let pieces = match subst::parse(text) {
            Ok(p) => p,
            Err(e) => {
                self.sink.error(p, e);
                return Node::Scalar(s.clone());
            }
        };
        for piece in &pieces {
            if let subst::Piece::Var(v) = piece {
                if let Some(name) = v.strip_prefix("params.") {
                    self.used_params
                        .insert(name.split('.').next().unwrap_or(name).to_string());
                }
            }
        }
        if let [subst::Piece::Var(var)] = pieces.as_slice() {
            match lookup(var, b) {
                Ok(Some(v)) => return yaml::from_json(&v, s.span()),
                Ok(None) => return Node::Scalar(s.clone()),
                Err(e) => {
                    self.sink.error(p, e);
                    return Node::Scalar(s.clone());
                }
            }
        }
        match subst::render_partial(
            text,
            |var| Ok(lookup(var, b)?.map(|v| yaml::plain_text(&v))),
        ) {
            Ok(rendered) => {
                let mut out = MarkedScalarNode::new(*s.span(), rendered);
                out.set_coerce(false);
                Node::Scalar(out)
            }
            Err(e) => {
                self.sink.error(p, e);
                Node::Scalar(s.clone())
            }
        }
    }

    fn stage(
        &mut self,
        name: &str,
        name_pos: Pos,
        map: &MarkedMappingNode,
        d: &StageDefaults<'_>,
    ) -> Option<RawStage> {
        let kind_node = map.get_node("kind");
        let kind = match kind_node {
            None => {
                self.sink.error(
                    name_pos,
                    format!(
                        "stage `{name}` has no `kind` (one of: {})",
                        self.kind_list()
                    ),
                );
                None
            }
            Some(Node::Scalar(s)) => match self.registry.get(s.as_str()) {
                Some(k) => Some(k.clone()),
                None => {
                    let hint = suggest(s.as_str(), self.registry.names())
                        .map(|s| format!("did you mean `{s}`? "))
                        .unwrap_or_default();
                    self.sink.error(
                        yaml::span_pos(s.span()),
                        format!(
                            "unknown stage kind `{}` ({hint}registered kinds: {})",
                            s.as_str(),
                            self.kind_list()
                        ),
                    );
                    None
                }
            },
            Some(other) => {
                self.sink.error(
                    pos(other),
                    format!("`kind` must be a string, found {}", type_name(other)),
                );
                None
            }
        };
        let kind_keys = kind.as_ref().map(|k| k.stage_keys()).unwrap_or(&[]);
        let mut allowed: Vec<&str> = STAGE_KEYS.to_vec();
        allowed.extend_from_slice(kind_keys);
        if kind.is_some() || kind_node.is_none() {
            self.check_keys(map, &allowed, &format!("key in stage `{name}`"));
        }

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
                other => self.sink.error(
                    pos(other),
                    format!("`params` must be a mapping, found {}", type_name(other)),
                ),
            }
        }
        for key in kind_keys {
            if let Some((k, v)) = map.get_key_value(*key) {
                if params.contains_key(*key) {
                    self.sink.error(
                        yaml::span_pos(k.span()),
                        format!("`{key}` is given both here and in `params`"),
                    );
                }
                param_pos.insert(key.to_string(), yaml::span_pos(k.span()));
                params.insert(key.to_string(), yaml::to_json(v));
            }
        }

        let mut inputs = Vec::new();
        if let Some(node) = map.get_node("inputs") {
            match node {
                Node::Mapping(m) => {
                    for (k, v) in m.iter() {
                        let input = match v {
                            Node::Scalar(s) => {
                                RawInput::One(s.as_str().to_string(), yaml::span_pos(s.span()))
                            }
                            Node::Sequence(items) => {
                                let mut refs = Vec::new();
                                for item in items.iter() {
                                    match item {
                                        Node::Scalar(s) => refs.push((
                                            s.as_str().to_string(),
                                            yaml::span_pos(s.span()),
                                        )),
                                        other => self.sink.error(
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
                                self.sink.error(
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
                        inputs.push((k.as_str().to_string(), input));
                    }
                }
                other => self.sink.error(
                    pos(other),
                    format!(
                        "`inputs` must be a mapping of input name to reference, found {}",
                        type_name(other)
                    ),
                ),
            }
        }
        let mut deps = Vec::new();
        if let Some(node) = map.get_node("deps") {
            match node {
                Node::Sequence(items) => {
                    for item in items.iter() {
                        match item {
                            Node::Scalar(s) => {
                                deps.push((s.as_str().to_string(), yaml::span_pos(s.span())))
                            }
                            other => self.sink.error(
                                pos(other),
                                format!(
                                    "`deps` entries must be strings, found {}",
                                    type_name(other)
                                ),
                            ),
                        }
                    }
                }
                Node::Scalar(s) => deps.push((s.as_str().to_string(), yaml::span_pos(s.span()))),
                other => self.sink.error(
                    pos(other),
                    format!(
                        "`deps` must be a list of files or stage outputs, found {}",
                        type_name(other)
                    ),
                ),
            }
        }

        let resources = match map.get_node("resources") {
            Some(n) => self.resources(n, d.resources),
            None => d.resources.clone(),
        };
        let retries = match map.get_node("retries") {
            Some(n) => self.uint(n, "retries").unwrap_or(0),
            None => 0,
        };
        let executor = map
            .get_node("executor")
            .map(|n| self.executor(n))
            .unwrap_or(d.executor);
        let mut env = d.env.clone();
        if let Some(node) = map.get_node("env") {
            env.extend(self.env_map(node));
        }
        let description = match map.get_node("description") {
            Some(Node::Scalar(s)) => Some(s.as_str().to_string()),
            Some(other) => {
                self.sink.error(
                    pos(other),
                    format!("`description` must be a string, found {}", type_name(other)),
                );
                None
            }
            None => None,
        };

        Some(RawStage {
            stage: Stage {
                name: name.to_string(),
                kind: kind.map(|k| k.name().to_string()).unwrap_or_default(),
                pos: name_pos,
                params,
                inputs: BTreeMap::new(),
                deps: Vec::new(),
                outputs: Vec::new(),
                workspace_paths: BTreeMap::new(),
                resources,
                retries,
                executor,
                env,
                description,
                param_refs: Vec::new(),
                upstream: Vec::new(),
            },
            inputs,
            deps,
            params_pos,
            param_pos,
        })
    }

    fn kind_list(&self) -> String {
        self.registry.names().collect::<Vec<_>>().join(", ")
    }

    fn uint(&mut self, node: &Node, what: &str) -> Option<u32> {
        match yaml::to_json(node) {
            Value::Number(n) if n.as_u64().is_some_and(|v| v <= u32::MAX as u64) => {
                Some(n.as_u64().unwrap() as u32)
            }
            _ => {
                self.sink.error(
                    pos(node),
                    format!(
                        "`{what}` must be a non-negative integer, found {}",
                        type_name(node)
                    ),
                );
                None
            }
        }
    }

    fn executor(&mut self, node: &Node) -> Executor {
        match yaml::to_json(node).as_str() {
            Some("local") => Executor::Local,
            Some("slurm") => Executor::Slurm,
            _ => {
                self.sink
                    .error(pos(node), "`executor` must be `local` or `slurm`");
                Executor::Local
            }
        }
    }

    fn resources(&mut self, node: &Node, defaults: &Resources) -> Resources {
        let mut r = defaults.clone();
        let Some(map) = node.as_mapping() else {
            self.sink.error(
                pos(node),
                format!("`resources` must be a mapping, found {}", type_name(node)),
            );
            return r;
        };
        self.check_keys(map, RESOURCE_KEYS, "resource");
        for (k, v) in map.iter() {
            match k.as_str() {
                "cpus" => r.cpus = self.uint(v, "resources.cpus").unwrap_or(r.cpus).max(1),
                "gpus" => r.gpus = self.uint(v, "resources.gpus").unwrap_or(r.gpus),
                "nodes" => r.nodes = self.uint(v, "resources.nodes").unwrap_or(r.nodes).max(1),
                "memory" => match parse_memory(&yaml::plain_text(&yaml::to_json(v))) {
                    Some(bytes) => r.memory = Some(bytes),
                    None => self.sink.error(pos(v), "`resources.memory` must be a size such as `16G`, `512M` or a number of bytes"),
                },
                "time" => {
                    let time = yaml::plain_text(&yaml::to_json(v));
                    if let Err(m) = crate::slurm::validate_time(&time) {
                        self.sink.error(pos(v), format!("`resources.time`: {m}"));
                    }
                    r.time = Some(time);
                }
                _ => {}
            }
        }
        r
    }

    fn env_map(&mut self, node: &Node) -> BTreeMap<String, String> {
        let mut env = BTreeMap::new();
        match node {
            Node::Mapping(m) => {
                for (k, v) in m.iter() {
                    match v {
                        Node::Scalar(s) => {
                            env.insert(k.as_str().to_string(), s.as_str().to_string());
                        }
                        other => self.sink.error(
                            pos(other),
                            format!(
                                "env `{}` must be a string, found {}",
                                k.as_str(),
                                type_name(other)
                            ),
                        ),
                    }
                }
            }
            other => self.sink.error(
                pos(other),
                format!(
                    "`env` must be a mapping of variable to value, found {}",
                    type_name(other)
                ),
            ),
        }
        env
    }

    /// Kind-specific validation and output declarations.
    fn kind_checks(&mut self, raws: &mut [RawStage]) {
        for raw in raws.iter_mut() {
            let Some(kind) = self.registry.get(&raw.stage.kind).cloned() else {
                continue;
            };
            let input_names: Vec<&str> = raw.inputs.iter().map(|(n, _)| n.as_str()).collect();
            let decl = StageDecl {
                name: &raw.stage.name,
                params: &raw.stage.params,
                input_names,
            };
            if let Err(msg) = kind.validate(&decl) {
                // Point at the param the message names (`params.lr: ...` or `cmd: ...`).
                let named = msg.strip_prefix("params.").unwrap_or(&msg);
                let key: String = named
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                let p = raw.param_pos.get(&key).copied().unwrap_or(raw.params_pos);
                self.sink.error(
                    p,
                    format!("stage `{}` ({}): {msg}", raw.stage.name, raw.stage.kind),
                );
                continue;
            }
            raw.stage.outputs = kind.outputs(&decl);
            raw.stage.workspace_paths = kind.workspace_paths(&decl).into_iter().collect();
        }
    }

    fn resolve(&mut self, raws: Vec<RawStage>, index: &HashMap<String, usize>) -> Vec<Stage> {
        // Workspace files that a stage produces: depending on one depends on the stage.
        let mut produced: HashMap<String, (usize, String)> = HashMap::new();
        for (i, raw) in raws.iter().enumerate() {
            for (out, path) in &raw.stage.workspace_paths {
                let norm = normalize(path);
                if let Some((other, _)) = produced.get(&norm) {
                    let other_name = raws[*other].stage.name.clone();
                    let p = raw.param_pos.get("outs").copied().unwrap_or(raw.stage.pos);
                    self.sink.error(
                        p,
                        format!(
                            "`{path}` is an output of both `{other_name}` and `{}`",
                            raw.stage.name
                        ),
                    );
                } else {
                    produced.insert(norm, (i, out.clone()));
                }
            }
        }
        let snapshot: Vec<(String, Vec<crate::kind::OutputDecl>)> = raws
            .iter()
            .map(|r| (r.stage.name.clone(), r.stage.outputs.clone()))
            .collect();
        let mut stages = Vec::with_capacity(raws.len());
        for (i, raw) in raws.into_iter().enumerate() {
            let RawStage {
                mut stage,
                inputs,
                deps,
                ..
            } = raw;
            let mut upstream = Vec::new();
            for (name, input) in inputs {
                let resolved = match input {
                    RawInput::One(text, p) => self
                        .reference(&text, p, i, index, &snapshot, &produced)
                        .map(Input::One),
                    RawInput::List(items) => {
                        let refs: Vec<Ref> = items
                            .into_iter()
                            .filter_map(|(text, p)| {
                                self.reference(&text, p, i, index, &snapshot, &produced)
                            })
                            .collect();
                        Some(Input::List(refs))
                    }
                };
                if let Some(input) = resolved {
                    stage.inputs.insert(name, input);
                }
            }
            for (text, p) in deps {
                if let Some(r) = self.reference(&text, p, i, index, &snapshot, &produced) {
                    stage.deps.push(r);
                }
            }
            for r in stage.refs() {
                if let Target::Output { stage: u, .. } = r.target {
                    upstream.push(u);
                }
            }
            upstream.sort_unstable();
            upstream.dedup();
            stage.upstream = upstream;
            stages.push(stage);
        }
        stages
    }

    #[allow(clippy::too_many_arguments)]
    fn reference(
        &mut self,
        text: &str,
        p: Pos,
        me: usize,
        index: &HashMap<String, usize>,
        stages: &[(String, Vec<crate::kind::OutputDecl>)],
        produced: &HashMap<String, (usize, String)>,
    ) -> Option<Ref> {
        let text = text.trim();
        if text.is_empty() {
            self.sink.error(p, "empty reference");
            return None;
        }
        // A path some stage declares in `outs` wins over a stage reference: with a stage
        // called `gen`, `gen.txt` is far more likely that stage's file than an output
        // named `txt`. Likewise an existing file whose name merely starts with a stage
        // name.
        let parsed = reference::parse(text, index);
        let is_file = produced.contains_key(&normalize(text))
            || match &parsed {
                Ok(Some(r)) => {
                    !stages[r.stage].1.iter().any(|o| o.name == r.output)
                        && self.root.join(text).exists()
                }
                _ => false,
            };
        let parsed = if is_file { Ok(None) } else { parsed };
        match parsed {
            Err(e) => {
                self.sink.error(p, e);
                None
            }
            Ok(Some(r)) => {
                let (stage_name, outputs) = &stages[r.stage];
                if r.stage == me {
                    self.sink.error(p, format!("`{text}`: stage `{stage_name}` cannot depend on its own output (cycle: {stage_name} -> {stage_name})"));
                    return None;
                }
                let Some(decl) = outputs.iter().find(|o| o.name == r.output) else {
                    let names: Vec<&str> = outputs.iter().map(|o| o.name.as_str()).collect();
                    let hint = suggest(r.output, names.iter().copied())
                        .map(|s| format!("did you mean `{s}`? "))
                        .unwrap_or_default();
                    self.sink.error(
                        p,
                        format!(
                            "`{text}`: stage `{stage_name}` has no output `{}` ({hint}its outputs: {})",
                            r.output,
                            if names.is_empty() { "none".to_string() } else { names.join(", ") }
                        ),
                    );
                    return None;
                };
                match (decl.shape, r.select) {
                    (OutputShape::One, Select::Index(_) | Select::Range(..)) => {
                        self.sink.error(p, format!("`{text}`: `{stage_name}.{}` is a single artifact, not a series: drop the index", r.output));
                        return None;
                    }
                    (OutputShape::Series, Select::Index(i)) => {
                        if let Some(len) = decl.len {
                            let ok = if i >= 0 {
                                (i as usize) < len
                            } else {
                                i.unsigned_abs() as usize <= len
                            };
                            if !ok {
                                self.sink.error(
                                    p,
                                    format!("`{text}`: index {i} is out of range: `{stage_name}.{}` has {len} elements (0..={})", r.output, len.saturating_sub(1)),
                                );
                                return None;
                            }
                        }
                    }
                    (OutputShape::Series, Select::Range(start, end)) => {
                        if let Some(len) = decl.len {
                            if start >= len || end.is_some_and(|e| e > len) {
                                self.sink.error(p, format!("`{text}`: range is out of bounds: `{stage_name}.{}` has {len} elements", r.output));
                                return None;
                            }
                        }
                    }
                    _ => {}
                }
                Some(Ref {
                    text: text.to_string(),
                    pos: p,
                    target: Target::Output {
                        stage: r.stage,
                        output: r.output.to_string(),
                        select: r.select,
                    },
                })
            }
            Ok(None) => {
                if let Some((stage, output)) = produced.get(&normalize(text)) {
                    if *stage == me {
                        self.sink.error(
                            p,
                            format!(
                                "`{text}` is an output of this stage; it cannot also be an input"
                            ),
                        );
                        return None;
                    }
                    return Some(Ref {
                        text: text.to_string(),
                        pos: p,
                        target: Target::Output {
                            stage: *stage,
                            output: output.clone(),
                            select: Select::Whole,
                        },
                    });
                }
                let path = self.root.join(text);
                if !path.exists() {
                    // `gne.out` is more likely a misspelt stage than a file.
                    let stage_part = text.split('.').next().unwrap_or(text);
                    let what =
                        if text.contains('.') && !text.contains('/') && is_stage_name(stage_part) {
                            let names: Vec<&str> = index.keys().map(String::as_str).collect();
                            match suggest(stage_part, names) {
                                Some(s) => format!(
                                    " and no stage is called `{stage_part}` (did you mean `{s}`?)"
                                ),
                                None => format!(" and no stage is called `{stage_part}`"),
                            }
                        } else {
                            String::new()
                        };
                    self.sink.error(p, format!("`{text}`: no such file in {}{what}, and no stage declares it in `outs`", self.root.display()));
                    return None;
                }
                Some(Ref {
                    text: text.to_string(),
                    pos: p,
                    target: Target::File {
                        rel: text.to_string(),
                        path,
                    },
                })
            }
        }
    }

    /// Reports every cycle's path once, at the first stage on it.
    fn check_cycles(&mut self, stages: &[Stage]) {
        let mut graph = petgraph::graph::DiGraph::<usize, ()>::new();
        let nodes: Vec<_> = (0..stages.len()).map(|i| graph.add_node(i)).collect();
        for (i, s) in stages.iter().enumerate() {
            for &u in &s.upstream {
                graph.add_edge(nodes[u], nodes[i], ());
            }
        }
        for scc in petgraph::algo::tarjan_scc(&graph) {
            if scc.len() < 2 {
                continue;
            }
            let members: std::collections::HashSet<usize> = scc.iter().map(|n| graph[*n]).collect();
            let start = *members.iter().min().expect("non-empty");
            let path = cycle_path(stages, start, &members);
            let names: Vec<&str> = path.iter().map(|&i| stages[i].name.as_str()).collect();
            let at = stages[start].refs().find(
                |r| matches!(r.target, Target::Output { stage, .. } if members.contains(&stage)),
            );
            let p = at.map(|r| r.pos).unwrap_or(stages[start].pos);
            self.sink
                .error(p, format!("dependency cycle: {}", names.join(" -> ")));
        }
    }
}

struct StageDefaults<'a> {
    env: &'a BTreeMap<String, String>,
    executor: Executor,
    resources: &'a Resources,
}

/// A path around the cycle through `start`, following producer -> consumer edges
/// within `members`, ending back at `start`.
fn cycle_path(
    stages: &[Stage],
    start: usize,
    members: &std::collections::HashSet<usize>,
) -> Vec<usize> {
    // Breadth-first from start over "consumer" edges, back to start.
    let mut down: HashMap<usize, Vec<usize>> = HashMap::new();
    for &m in members {
        for &u in &stages[m].upstream {
            if members.contains(&u) {
                down.entry(u).or_default().push(m);
            }
        }
    }
    for v in down.values_mut() {
        v.sort_unstable();
    }
    let mut prev: HashMap<usize, usize> = HashMap::new();
    let mut queue = std::collections::VecDeque::from([start]);
    while let Some(n) = queue.pop_front() {
        for &d in down.get(&n).map(Vec::as_slice).unwrap_or(&[]) {
            if d == start {
                let mut path = vec![start];
                let mut cur = n;
                while cur != start {
                    path.push(cur);
                    cur = prev[&cur];
                }
                path.push(start);
                let last = path.len() - 1;
                path[1..last].reverse();
                return path;
            }
            if let std::collections::hash_map::Entry::Vacant(e) = prev.entry(d) {
                e.insert(n);
                queue.push_back(d);
            }
        }
    }
    vec![start, start]
}

fn lookup(var: &str, b: &Bindings<'_>) -> Result<Option<Value>, String> {
    let (ns, rest) = match var.split_once('.') {
        Some((ns, rest)) => (ns, Some(rest)),
        None => (var, None),
    };
    match (ns, rest) {
        ("params", Some(path)) => {
            let mut parts = path.split('.');
            let first = parts.next().unwrap_or("");
            let mut v = b.params.get(first).ok_or_else(|| {
                let names: Vec<&str> = b.params.keys().map(String::as_str).collect();
                let hint = suggest(first, names.iter().copied()).map(|s| format!(" (did you mean `{s}`?)")).unwrap_or_default();
                format!("`${{{var}}}`: no top-level param `{first}`{hint}")
            })?;
            for part in parts {
                v = v.get(part).ok_or_else(|| format!("`${{{var}}}`: param has no field `{part}`"))?;
            }
            Ok(Some(v.clone()))
        }
        ("item", _) => {
            let item = b.item.ok_or_else(|| format!("`${{{var}}}` is only defined in stages with `foreach` or `matrix`"))?;
            match rest {
                None => Ok(Some(item.clone())),
                Some(path) => {
                    let mut v = item;
                    for part in path.split('.') {
                        v = v.get(part).ok_or_else(|| format!("`${{{var}}}`: the item has no field `{part}`"))?;
                    }
                    Ok(Some(v.clone()))
                }
            }
        }
        ("key", None) => match b.key {
            Some(k) => Ok(Some(Value::String(k.to_string()))),
            None => Err(format!("`${{{var}}}` is only defined in stages with `foreach` over a mapping")),
        },
        // Filled in at run time by the kind.
        ("inputs" | "outs", Some(_)) => Ok(None),
        _ => Err(format!(
            "unknown variable `${{{var}}}` (expected `params.NAME`, `item`, `item.FIELD`, `key`, `inputs.NAME` or `outs.NAME`; write `$${{` for a literal `${{`)"
        )),
    }
}

fn describe_load_error(e: &marked_yaml::LoadError) -> (Pos, String) {
    use marked_yaml::LoadError as E;
    let at = |m: &marked_yaml::Marker| Pos::new(m.line(), m.column());
    match e {
        E::TopLevelMustBeMapping(m) => (
            at(m),
            "the file must be a YAML mapping (`tureen: 1`, `stages: ...`)".into(),
        ),
        E::TopLevelMustBeSequence(m) => (at(m), "unexpected top-level sequence".into()),
        E::UnexpectedAnchor(m) => (
            at(m),
            "YAML anchors and aliases are not supported in pipeline files".into(),
        ),
        E::MappingKeyMustBeScalar(m) => (at(m), "mapping keys must be plain strings".into()),
        E::UnexpectedTag(m) => (
            at(m),
            "YAML tags (`!foo`) are not supported in pipeline files".into(),
        ),
        E::ScanError(m, se) => (at(m), format!("YAML syntax error: {}", se.info())),
        E::DuplicateKey(inner) => {
            let first = yaml::span_pos(inner.prev_key.span());
            (
                yaml::span_pos(inner.key.span()),
                format!(
                    "duplicate key `{}` (first defined at line {}, column {})",
                    inner.key.as_str(),
                    first.line,
                    first.column
                ),
            )
        }
        #[allow(unreachable_patterns)]
        other => (Pos::new(1, 1), other.to_string()),
    }
}

fn is_identifier(s: &str) -> bool {
    !s.is_empty()
        && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !s.starts_with(|c: char| c.is_ascii_digit())
}

fn is_stage_name(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// `16G`, `512MiB`, `1.5T`, `1000000` -> bytes.
fn parse_memory(s: &str) -> Option<u64> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let num: f64 = num.parse().ok()?;
    let mult: f64 = match unit.trim().to_ascii_uppercase().as_str() {
        "" | "B" => 1.0,
        "K" | "KB" | "KIB" => 1024.0,
        "M" | "MB" | "MIB" => 1024.0 * 1024.0,
        "G" | "GB" | "GIB" => 1024.0 * 1024.0 * 1024.0,
        "T" | "TB" | "TIB" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        _ => return None,
    };
    Some((num * mult) as u64)
}

/// A relative path with `.` and `a/..` components folded, `/`-separated.
fn normalize(path: &str) -> String {
    let mut parts: Vec<String> = Vec::new();
    for c in Path::new(path.trim()).components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                if parts.last().is_some_and(|p| p != "..") {
                    parts.pop();
                } else {
                    parts.push("..".into());
                }
            }
            Component::Normal(p) => parts.push(p.to_string_lossy().into_owned()),
            Component::RootDir => parts.push(String::new()),
            Component::Prefix(p) => parts.push(p.as_os_str().to_string_lossy().into_owned()),
        }
    }
    parts.join("/")
}

type Overrides = Vec<(String, String)>;

fn split_overrides(
    overrides: &[String],
) -> Result<(Overrides, Vec<(String, String, String)>), LoadError> {
    let mut top = Vec::new();
    let mut stage = Vec::new();
    for o in overrides {
        let (name, value) = o.split_once('=').ok_or_else(|| {
            LoadError::Override(format!("-P {o}: expected NAME=VALUE or STAGE.PARAM=VALUE"))
        })?;
        match name.rsplit_once('.') {
            Some((s, p)) => stage.push((s.to_string(), p.to_string(), value.to_string())),
            None => top.push((name.to_string(), value.to_string())),
        }
    }
    Ok((top, stage))
}

/// Parses `text` the way YAML types a plain scalar.
fn scalar_from_cli(text: &str) -> Value {
    yaml::scalar_value(&MarkedScalarNode::new(marked_yaml::Span::new_blank(), text))
}

/// A CLI value for a param whose declared default is `declared`: numbers stay numbers
/// (an integer is accepted for a float), strings take the text as is.
fn typed_override(name: &str, declared: &Value, text: &str) -> Result<Value, String> {
    let parsed = scalar_from_cli(text);
    let ok = match (declared, &parsed) {
        (Value::String(_), _) => return Ok(Value::String(text.to_string())),
        (Value::Number(d), Value::Number(p)) => {
            if d.is_f64() {
                return Ok(serde_json::json!(p.as_f64().unwrap_or_default()));
            }
            p.is_i64() || p.is_u64()
        }
        (Value::Bool(_), Value::Bool(_)) | (Value::Null, _) => true,
        _ => false,
    };
    if ok {
        Ok(parsed)
    } else {
        let want = match declared {
            Value::Number(n) if n.is_f64() => "a float",
            Value::Number(_) => "an integer",
            Value::Bool(_) => "a boolean",
            Value::Array(_) => "a list (not settable with -P)",
            Value::Object(_) => "a mapping (not settable with -P)",
            _ => "a value",
        };
        Err(format!("-P {name}={text}: `{name}` is {want}"))
    }
}

fn apply_param_overrides(
    params: &mut Map<String, Value>,
    overrides: &[(String, String)],
    file: &Path,
) -> Result<(), LoadError> {
    for (name, text) in overrides {
        let declared = params.get(name).ok_or_else(|| {
            let names: Vec<&str> = params.keys().map(String::as_str).collect();
            LoadError::Override(format!(
                "-P {name}={text}: {} declares no param `{name}` (declared: {})",
                file.display(),
                if names.is_empty() {
                    "none".to_string()
                } else {
                    names.join(", ")
                }
            ))
        })?;
        let value = typed_override(name, declared, text).map_err(LoadError::Override)?;
        params.insert(name.clone(), value);
    }
    Ok(())
}

fn apply_stage_overrides(
    raws: &mut [RawStage],
    overrides: &[(String, String, String)],
) -> Result<(), LoadError> {
    for (stage, param, text) in overrides {
        let raw = raws.iter_mut().find(|r| &r.stage.name == stage).ok_or_else(|| {
            LoadError::Override(format!("-P {stage}.{param}={text}: no stage `{stage}` (and no top-level param `{stage}.{param}`)"))
        })?;
        let value = match raw.stage.params.get(param) {
            Some(declared) => typed_override(&format!("{stage}.{param}"), declared, text)
                .map_err(LoadError::Override)?,
            None => scalar_from_cli(text),
        };
        raw.stage.params.insert(param.clone(), value);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_sizes_parse() {
        assert_eq!(parse_memory("16G"), Some(16 << 30));
        assert_eq!(parse_memory("512MiB"), Some(512 << 20));
        assert_eq!(parse_memory("100"), Some(100));
        assert_eq!(parse_memory("lots"), None);
    }

    #[test]
    fn paths_normalize() {
        assert_eq!(normalize("./a/b/../c.txt"), "a/c.txt");
    }

    #[test]
    fn overrides_keep_the_declared_type() {
        assert_eq!(
            typed_override("lr", &serde_json::json!(0.1), "2").unwrap(),
            serde_json::json!(2.0)
        );
        assert!(typed_override("n", &serde_json::json!(3), "2.5").is_err());
        assert_eq!(
            typed_override("s", &serde_json::json!("a"), "12").unwrap(),
            serde_json::json!("12")
        );
    }
}
