//! Pass 3: every entry of `stages:` becomes one or more stage templates: `foreach` and
//! `matrix` are expanded (`train@0.001`, `sweep@1-0`) and `${params.x}`, `${item...}`
//! and `${key}` are substituted in every scalar, keys included. A scalar that is exactly
//! one `${...}` takes the value's type. `${inputs.x}`/`${outs.x}` are left for run time.

use std::collections::{BTreeSet, HashSet};

use marked_yaml::types::{MarkedMappingNode, MarkedScalarNode};
use marked_yaml::Node;
use serde_json::{Map, Value};

use super::yaml::{self, pos, type_name};
use crate::diag::{suggest, Pos, Sink};
use crate::subst;

/// The longest stage name: a stage's name becomes file names (`<stage>.metrics.jsonl`,
/// temp files `.<stage>.metrics.jsonl.<pid>.<n>.tmp`), and most file systems allow 255
/// bytes in a name.
pub(super) const MAX_STAGE_NAME: usize = 200;

/// One stage after expansion and substitution, not yet read.
pub(super) struct Template {
    /// The expanded name (`train@0.001`).
    pub name: String,
    /// Where the stage's name is written.
    pub name_pos: Pos,
    /// The stage's mapping, substituted.
    pub map: MarkedMappingNode,
    /// Top-level params the stage uses through `${params.NAME}`.
    pub param_refs: Vec<String>,
}

/// Values a stage template may refer to while it is expanded.
struct Bindings<'a> {
    params: &'a Map<String, Value>,
    item: Option<&'a Value>,
    key: Option<&'a str>,
}

/// One expansion of a stage: name suffix, `${item}`, `${key}`.
type Expansion = (Option<String>, Option<Value>, Option<String>);

/// The templates of every stage in `stages`, in file order.
pub(super) fn expand(
    sink: &mut Sink,
    stages: &MarkedMappingNode,
    params: &Map<String, Value>,
) -> Vec<Template> {
    let mut out: Vec<Template> = Vec::new();
    let mut names: HashSet<String> = HashSet::new();
    for (name, node) in stages.iter() {
        let name_pos = yaml::span_pos(name.span());
        if !is_stage_name(name.as_str()) {
            sink.error(
                name_pos,
                format!(
                    "invalid stage name `{}`: use letters, digits, `_` and `-`",
                    name.as_str()
                ),
            );
            continue;
        }
        let Some(map) = node.as_mapping() else {
            sink.error(
                pos(node),
                format!(
                    "stage `{}` must be a mapping, found {}",
                    name.as_str(),
                    type_name(node)
                ),
            );
            continue;
        };
        for (suffix, item, key) in expansions(sink, map) {
            let stage_name = match &suffix {
                Some(s) => format!("{}@{s}", name.as_str()),
                None => name.as_str().to_string(),
            };
            if stage_name.len() > MAX_STAGE_NAME {
                sink.error(
                    name_pos,
                    format!(
                        "stage name `{}...` is {} bytes long; at most {MAX_STAGE_NAME} (it names files)",
                        stage_name.chars().take(40).collect::<String>(),
                        stage_name.len()
                    ),
                );
                continue;
            }
            if !names.insert(stage_name.clone()) {
                sink.error(
                    name_pos,
                    format!("duplicate stage name `{stage_name}` after expansion"),
                );
                continue;
            }
            let bindings = Bindings {
                params,
                item: item.as_ref(),
                key: key.as_deref(),
            };
            let mut used = BTreeSet::new();
            let Node::Mapping(map) = substitute(sink, node, &bindings, &mut used) else {
                unreachable!("substituting a mapping gives a mapping")
            };
            out.push(Template {
                name: stage_name,
                name_pos,
                map,
                param_refs: used.into_iter().collect(),
            });
        }
    }
    out
}

/// Stage names are letters, digits, `_` and `-` (expansion adds `@...`).
pub(super) fn is_stage_name(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// `foreach`/`matrix` items; one item without a suffix when the stage is not expanded.
fn expansions(sink: &mut Sink, map: &MarkedMappingNode) -> Vec<Expansion> {
    match (map.get_node("foreach"), map.get_node("matrix")) {
        (None, None) => vec![(None, None, None)],
        (Some(_), Some(m)) => {
            sink.error(pos(m), "a stage takes `foreach` or `matrix`, not both");
            Vec::new()
        }
        (Some(node), None) => foreach(sink, node),
        (None, Some(node)) => matrix(sink, node),
    }
}

fn foreach(sink: &mut Sink, node: &Node) -> Vec<Expansion> {
    match node {
        Node::Sequence(items) if !items.is_empty() => items
            .iter()
            .enumerate()
            .map(|(i, item)| {
                let v = yaml::to_json(item);
                let suffix = match &v {
                    Value::Object(_) | Value::Array(_) => i.to_string(),
                    other => yaml::plain_text(other),
                };
                (Some(suffix), Some(v), None)
            })
            .collect(),
        Node::Mapping(items) if !items.is_empty() => items
            .iter()
            .map(|(k, v)| {
                let key = k.as_str().to_string();
                (Some(key.clone()), Some(yaml::to_json(v)), Some(key))
            })
            .collect(),
        other => {
            sink.error(
                pos(other),
                format!(
                    "`foreach` must be a non-empty list or mapping, found {}",
                    type_name(other)
                ),
            );
            Vec::new()
        }
    }
}

fn matrix(sink: &mut Sink, node: &Node) -> Vec<Expansion> {
    let Some(axes) = node.as_mapping().filter(|m| !m.is_empty()) else {
        sink.error(
            pos(node),
            "`matrix` must be a non-empty mapping of name to list of values",
        );
        return Vec::new();
    };
    let mut combos: Vec<(Vec<String>, Map<String, Value>)> = vec![(Vec::new(), Map::new())];
    for (axis, values) in axes.iter() {
        let Some(values) = values.as_sequence().filter(|s| !s.is_empty()) else {
            sink.error(
                pos(values),
                format!("matrix axis `{}` must be a non-empty list", axis.as_str()),
            );
            return Vec::new();
        };
        let mut next = Vec::with_capacity(combos.len() * values.len());
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

/// A copy of `node` with its variables substituted; the names of top-level params used
/// are added to `used`.
fn substitute(sink: &mut Sink, node: &Node, b: &Bindings<'_>, used: &mut BTreeSet<String>) -> Node {
    match node {
        Node::Scalar(s) => substitute_scalar(sink, s, b, used),
        Node::Sequence(seq) => {
            let mut out = seq.clone();
            for item in out.iter_mut() {
                *item = substitute(sink, item, b, used);
            }
            Node::Sequence(out)
        }
        Node::Mapping(map) => {
            let mut out = MarkedMappingNode::new_empty(*map.span());
            for (k, v) in map.iter() {
                // The expansion keys themselves are not part of the stage: their values
                // are the items.
                if matches!(k.as_str(), "foreach" | "matrix") {
                    continue;
                }
                let key = match substitute_scalar(sink, k, b, used) {
                    Node::Scalar(s) => s,
                    _ => k.clone(),
                };
                out.insert(key, substitute(sink, v, b, used));
            }
            Node::Mapping(out)
        }
    }
}

fn substitute_scalar(
    sink: &mut Sink,
    s: &MarkedScalarNode,
    b: &Bindings<'_>,
    used: &mut BTreeSet<String>,
) -> Node {
    let text = s.as_str();
    if !text.contains("${") {
        return Node::Scalar(s.clone());
    }
    let p = yaml::span_pos(s.span());
    let pieces = match subst::parse(text) {
        Ok(p) => p,
        Err(e) => {
            sink.error(p, e);
            return Node::Scalar(s.clone());
        }
    };
    for piece in &pieces {
        if let subst::Piece::Var(v) = piece {
            if let Some(name) = v.strip_prefix("params.") {
                used.insert(name.split('.').next().unwrap_or(name).to_string());
            }
        }
    }
    if let [subst::Piece::Var(var)] = pieces.as_slice() {
        return match lookup(var, b) {
            Ok(Some(v)) => yaml::from_json(&v, s.span()),
            Ok(None) => Node::Scalar(s.clone()),
            Err(e) => {
                sink.error(p, e);
                Node::Scalar(s.clone())
            }
        };
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
            sink.error(p, e);
            Node::Scalar(s.clone())
        }
    }
}

/// The value of `${var}`: `Ok(None)` for the run-time variables.
fn lookup(var: &str, b: &Bindings<'_>) -> Result<Option<Value>, String> {
    let (ns, rest) = match var.split_once('.') {
        Some((ns, rest)) => (ns, Some(rest)),
        None => (var, None),
    };
    match (ns, rest) {
        ("params", Some(path)) => lookup_param(var, path, b.params).map(Some),
        ("item", _) => {
            let item = b.item.ok_or_else(|| {
                format!("`${{{var}}}` is only defined in stages with `foreach` or `matrix`")
            })?;
            let mut v = item;
            for part in rest.into_iter().flat_map(|p| p.split('.')) {
                v = v
                    .get(part)
                    .ok_or_else(|| format!("`${{{var}}}`: the item has no field `{part}`"))?;
            }
            Ok(Some(v.clone()))
        }
        ("key", None) => match b.key {
            Some(k) => Ok(Some(Value::String(k.to_string()))),
            None => Err(format!(
                "`${{{var}}}` is only defined in stages with `foreach` over a mapping"
            )),
        },
        // Filled in at run time by the kind.
        ("inputs" | "outs", Some(_)) => Ok(None),
        _ => Err(format!(
            "unknown variable `${{{var}}}` (expected `params.NAME`, `item`, `item.FIELD`, `key`, `inputs.NAME` or `outs.NAME`; write `$${{` for a literal `${{`)"
        )),
    }
}

fn lookup_param(var: &str, path: &str, params: &Map<String, Value>) -> Result<Value, String> {
    let mut parts = path.split('.');
    let first = parts.next().unwrap_or("");
    let mut v = params.get(first).ok_or_else(|| {
        let names: Vec<&str> = params.keys().map(String::as_str).collect();
        let hint = suggest(first, names.iter().copied())
            .map(|s| format!(" (did you mean `{s}`?)"))
            .unwrap_or_default();
        format!("`${{{var}}}`: no top-level param `{first}`{hint}")
    })?;
    for part in parts {
        v = v
            .get(part)
            .ok_or_else(|| format!("`${{{var}}}`: param has no field `{part}`"))?;
    }
    Ok(v.clone())
}
