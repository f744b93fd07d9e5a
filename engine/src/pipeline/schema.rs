//! Typed readers of the pipeline schema's fields (`resources`, `executor`, `env`, ...),
//! shared by the top level (defaults) and the stages. Each reports a wrong value to the
//! sink at its position and returns something usable, so that one pass finds every
//! problem.

use std::collections::BTreeMap;

use marked_yaml::types::MarkedMappingNode;
use marked_yaml::Node;
use serde_json::Value;

use super::yaml::{self, pos, type_name};
use super::Executor;
use crate::diag::{suggest, Pos, Sink};
use crate::resources::{parse_memory, validate_time, Resources};

/// The keys `resources:` takes.
const RESOURCE_KEYS: &[&str] = &["cpus", "gpus", "memory", "nodes", "tasks_per_node", "time"];

/// Reports every key of `map` not in `allowed`, with a "did you mean".
pub(super) fn check_keys(sink: &mut Sink, map: &MarkedMappingNode, allowed: &[&str], what: &str) {
    for key in map.keys() {
        if !allowed.contains(&key.as_str()) {
            let hint = match suggest(key.as_str(), allowed.iter().copied()) {
                Some(s) => format!(" (did you mean `{s}`?)"),
                None => format!(" (expected one of: {})", allowed.join(", ")),
            };
            sink.error(
                yaml::span_pos(key.span()),
                format!("unknown {what} `{}`{hint}", key.as_str()),
            );
        }
    }
}

/// A non-negative integer that fits in `u32`.
pub(super) fn uint(sink: &mut Sink, node: &Node, what: &str) -> Option<u32> {
    match yaml::to_json(node) {
        Value::Number(n) => {
            if let Some(v) = n.as_u64().and_then(|v| u32::try_from(v).ok()) {
                return Some(v);
            }
            sink.error(
                pos(node),
                format!("`{what}` must be a non-negative integer below 2^32, found {n}"),
            );
            None
        }
        _ => {
            sink.error(
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

/// `local` or `slurm`.
pub(super) fn executor(sink: &mut Sink, node: &Node) -> Executor {
    match yaml::to_json(node).as_str() {
        Some("local") => Executor::Local,
        Some("slurm") => Executor::Slurm,
        _ => {
            sink.error(pos(node), "`executor` must be `local` or `slurm`");
            Executor::Local
        }
    }
}

/// A `resources:` mapping over `defaults`.
pub(super) fn resources(sink: &mut Sink, node: &Node, defaults: &Resources) -> Resources {
    let mut r = defaults.clone();
    let Some(map) = node.as_mapping() else {
        sink.error(
            pos(node),
            format!("`resources` must be a mapping, found {}", type_name(node)),
        );
        return r;
    };
    check_keys(sink, map, RESOURCE_KEYS, "resource");
    for (k, v) in map.iter() {
        match k.as_str() {
            "cpus" => r.cpus = at_least_one(sink, v, "resources.cpus").unwrap_or(r.cpus),
            "gpus" => r.gpus = uint(sink, v, "resources.gpus").unwrap_or(r.gpus),
            "nodes" => r.nodes = at_least_one(sink, v, "resources.nodes").unwrap_or(r.nodes),
            "tasks_per_node" => {
                r.tasks_per_node = at_least_one(sink, v, "resources.tasks_per_node")
                    .or(r.tasks_per_node)
            }
            "memory" => match parse_memory(&yaml::plain_text(&yaml::to_json(v))) {
                Some(bytes) if bytes > 0 => r.memory = Some(bytes),
                _ => sink.error(
                    pos(v),
                    "`resources.memory` must be a size such as `16G`, `512M` or a number of bytes",
                ),
            },
            "time" => {
                let time = yaml::plain_text(&yaml::to_json(v));
                if let Err(m) = validate_time(&time) {
                    sink.error(pos(v), format!("`resources.time`: {m}"));
                }
                r.time = Some(time);
            }
            _ => {}
        }
    }
    r
}

fn at_least_one(sink: &mut Sink, node: &Node, what: &str) -> Option<u32> {
    let v = uint(sink, node, what)?;
    if v == 0 {
        sink.error(pos(node), format!("`{what}` must be at least 1"));
        return None;
    }
    Some(v)
}

/// An `env:` mapping of variable to string.
pub(super) fn env_map(sink: &mut Sink, node: &Node) -> BTreeMap<String, String> {
    let mut env = BTreeMap::new();
    let Some(map) = node.as_mapping() else {
        sink.error(
            pos(node),
            format!(
                "`env` must be a mapping of variable to value, found {}",
                type_name(node)
            ),
        );
        return env;
    };
    for (k, v) in map.iter() {
        match v {
            Node::Scalar(s) => {
                env.insert(k.as_str().to_string(), s.as_str().to_string());
            }
            other => sink.error(
                pos(other),
                format!(
                    "env `{}` must be a string, found {}",
                    k.as_str(),
                    type_name(other)
                ),
            ),
        }
    }
    env
}

/// A string-valued key such as `description`.
pub(super) fn string(sink: &mut Sink, node: &Node, what: &str) -> Option<String> {
    match node {
        Node::Scalar(s) => Some(s.as_str().to_string()),
        other => {
            sink.error(
                pos(other),
                format!("`{what}` must be a string, found {}", type_name(other)),
            );
            None
        }
    }
}

/// One scalar or a list of scalars (`deps:`), each with its position.
pub(super) fn scalar_list(sink: &mut Sink, node: &Node, what: &str) -> Vec<(String, Pos)> {
    let scalar = |s: &marked_yaml::types::MarkedScalarNode| {
        (s.as_str().to_string(), yaml::span_pos(s.span()))
    };
    match node {
        Node::Scalar(s) => vec![scalar(s)],
        Node::Sequence(items) => items
            .iter()
            .filter_map(|item| match item {
                Node::Scalar(s) => Some(scalar(s)),
                other => {
                    sink.error(
                        pos(other),
                        format!(
                            "`{what}` entries must be strings, found {}",
                            type_name(other)
                        ),
                    );
                    None
                }
            })
            .collect(),
        other => {
            sink.error(
                pos(other),
                format!(
                    "`{what}` must be a list of files or stage outputs, found {}",
                    type_name(other)
                ),
            );
            Vec::new()
        }
    }
}
