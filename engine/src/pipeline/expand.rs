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

/// The templates of every stage in `stages`, in file order. The stages' nodes are moved
/// into their templates (a stage expanded N times is copied N-1 times), and substituted
/// in place: a pipeline of thousands of stages is not copied scalar by scalar.
pub(super) fn expand(
    sink: &mut Sink,
    mut stages: MarkedMappingNode,
    params: &Map<String, Value>,
) -> Vec<Template> {
    let mut out: Vec<Template> = Vec::with_capacity(stages.len());
    let mut names: HashSet<String> = HashSet::with_capacity(stages.len());
    for (name, node) in std::mem::take(&mut *stages) {
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
        let Node::Mapping(map) = node else {
            sink.error(
                pos(&node),
                format!(
                    "stage `{}` must be a mapping, found {}",
                    name.as_str(),
                    type_name(&node)
                ),
            );
            continue;
        };
        let items = expansions(sink, &map);
        let last = items.len().saturating_sub(1);
        let mut map = Some(map);
        for (n, (suffix, item, key)) in items.into_iter().enumerate() {
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
            // The last expansion takes the node itself; the others take copies.
            let mut node = match n == last {
                true => Node::Mapping(map.take().expect("one node per stage")),
                false => Node::Mapping(map.clone().expect("one node per stage")),
            };
            let mut used = BTreeSet::new();
            substitute(sink, &mut node, &bindings, &mut used);
            let Node::Mapping(map) = node else {
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

/// Substitutes the variables of `node` in place; the names of top-level params used are
/// added to `used`. The expansion keys (`foreach`, `matrix`) are dropped: their values are
/// the items.
fn substitute(sink: &mut Sink, node: &mut Node, b: &Bindings<'_>, used: &mut BTreeSet<String>) {
    match node {
        Node::Scalar(s) => {
            if let Some(new) = substitute_scalar(sink, s, b, used) {
                *node = new;
            }
        }
        Node::Sequence(seq) => {
            for item in seq.iter_mut() {
                substitute(sink, item, b, used);
            }
        }
        Node::Mapping(map) => {
            map.retain(|k, _| !matches!(k.as_str(), "foreach" | "matrix"));
            if map.keys().any(|k| k.as_str().contains("${")) {
                // Keys change: rebuild the mapping in order.
                for (k, mut v) in std::mem::take(&mut **map) {
                    let key = match substitute_scalar(sink, &k, b, used) {
                        Some(Node::Scalar(s)) => s,
                        _ => k,
                    };
                    substitute(sink, &mut v, b, used);
                    map.insert(key, v);
                }
            } else {
                for (_, v) in map.iter_mut() {
                    substitute(sink, v, b, used);
                }
            }
        }
    }
}

/// The scalar with its variables substituted, or `None` when it stays as it is.
fn substitute_scalar(
    sink: &mut Sink,
    s: &MarkedScalarNode,
    b: &Bindings<'_>,
    used: &mut BTreeSet<String>,
) -> Option<Node> {
    let text = s.as_str();
    if !text.contains("${") {
        return None;
    }
    let p = yaml::span_pos(s.span());
    let pieces = match subst::parse(text) {
        Ok(p) => p,
        Err(e) => {
            sink.error(p, e);
            return None;
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
            Ok(Some(v)) => Some(yaml::from_json(&v, s.span())),
            Ok(None) => None,
            Err(e) => {
                sink.error(p, e);
                None
            }
        };
    }
    match subst::render_partial(text, |var| Ok(lookup(var, b)?.map(|v| yaml::plain_text(&v)))) {
        Ok(rendered) => {
            let mut out = MarkedScalarNode::new(*s.span(), rendered);
            out.set_coerce(false);
            Some(Node::Scalar(out))
        }
        Err(e) => {
            sink.error(p, e);
            None
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
