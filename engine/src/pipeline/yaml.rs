//! Thin helpers over `marked_yaml` nodes: positions, typed scalars, type names.
//!
//! `marked_yaml` keeps every node's line and column (which `serde_yaml` only reports
//! for parse errors), so a reference to a missing stage deep in a stage's inputs is
//! reported exactly where it is written. It also keeps whether a scalar was quoted,
//! which decides its type: `lr: 1e-3` is a float, `lr: "1e-3"` a string.

use marked_yaml::types::{MarkedMappingNode, MarkedScalarNode, MarkedSequenceNode};
use marked_yaml::{Node, Span};
use serde_json::{Map, Number, Value};

use crate::diag::Pos;

/// Where a span starts (1:1 when unknown, e.g. for synthesized nodes).
pub fn span_pos(span: &Span) -> Pos {
    span.start()
        .map(|m| Pos::new(m.line(), m.column()))
        .unwrap_or(Pos::new(1, 1))
}

/// Where a node starts.
pub fn pos(node: &Node) -> Pos {
    span_pos(node.span())
}

/// "a string", "a number", "a mapping", ... for "expected X, found Y" messages.
pub fn type_name(node: &Node) -> &'static str {
    match node {
        Node::Mapping(_) => "a mapping",
        Node::Sequence(_) => "a list",
        Node::Scalar(s) => match scalar_value(s) {
            Value::Null => "null",
            Value::Bool(_) => "a boolean",
            Value::Number(n) if n.is_f64() => "a float",
            Value::Number(_) => "an integer",
            Value::String(_) => "a string",
            _ => "a value",
        },
    }
}

/// The typed value of a scalar under YAML 1.2's core schema: plain `~`/`null`, booleans,
/// integers and finite floats are typed; quoted scalars are always strings.
pub fn scalar_value(s: &MarkedScalarNode) -> Value {
    let text = s.as_str();
    if !s.may_coerce() {
        return Value::String(text.to_string());
    }
    match text {
        "" | "~" | "null" | "Null" | "NULL" => return Value::Null,
        "true" | "True" | "TRUE" => return Value::Bool(true),
        "false" | "False" | "FALSE" => return Value::Bool(false),
        _ => {}
    }
    if looks_like_int(text) {
        if let Ok(i) = text.parse::<i64>() {
            return Value::Number(i.into());
        }
        if let Ok(u) = text.parse::<u64>() {
            return Value::Number(u.into());
        }
    }
    if looks_like_float(text) {
        if let Some(n) = text.parse::<f64>().ok().and_then(Number::from_f64) {
            return Value::Number(n);
        }
    }
    Value::String(text.to_string())
}

/// A plain integer scalar too large for 64 bits (it would otherwise become an imprecise
/// float): the loader refuses it.
pub fn is_oversized_int(s: &MarkedScalarNode) -> bool {
    let text = s.as_str();
    s.may_coerce()
        && looks_like_int(text)
        && text.parse::<i64>().is_err()
        && text.parse::<u64>().is_err()
}

fn looks_like_int(t: &str) -> bool {
    let digits = t.strip_prefix(['-', '+']).unwrap_or(t);
    !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())
}

/// YAML 1.2 core schema floats (`1.5`, `.5`, `2e-3`, `1E+10`), never `inf`/`nan`
/// spellings that Rust's parser would also accept.
fn looks_like_float(t: &str) -> bool {
    let t = t.strip_prefix(['-', '+']).unwrap_or(t);
    let (mantissa, exponent) = match t.find(['e', 'E']) {
        Some(i) => (&t[..i], Some(&t[i + 1..])),
        None => (t, None),
    };
    let mut parts = mantissa.splitn(2, '.');
    let int = parts.next().unwrap_or("");
    let frac = parts.next();
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    let mantissa_ok = digits(int)
        && frac.is_none_or(digits)
        && (!int.is_empty() || frac.is_some_and(|f| !f.is_empty()));
    let exponent_ok = exponent.is_none_or(|e| {
        let e = e.strip_prefix(['-', '+']).unwrap_or(e);
        !e.is_empty() && digits(e)
    });
    mantissa_ok && exponent_ok
}

/// The whole node as JSON, scalars typed as in [`scalar_value`].
pub fn to_json(node: &Node) -> Value {
    match node {
        Node::Scalar(s) => scalar_value(s),
        Node::Sequence(seq) => Value::Array(seq.iter().map(to_json).collect()),
        Node::Mapping(map) => {
            let mut out = Map::new();
            for (k, v) in map.iter() {
                out.insert(k.as_str().to_string(), to_json(v));
            }
            Value::Object(out)
        }
    }
}

/// A node carrying `value`, positioned at `span` (used when a `${params.x}` that stands
/// alone is replaced by the parameter's typed value).
pub fn from_json(value: &Value, span: &Span) -> Node {
    match value {
        Value::Array(items) => Node::Sequence(MarkedSequenceNode::new(
            *span,
            items.iter().map(|v| from_json(v, span)).collect(),
        )),
        Value::Object(map) => {
            let mut node = MarkedMappingNode::new_empty(*span);
            for (k, v) in map {
                node.insert(MarkedScalarNode::new(*span, k.clone()), from_json(v, span));
            }
            Node::Mapping(node)
        }
        Value::String(s) => {
            let mut scalar = MarkedScalarNode::new(*span, s.clone());
            scalar.set_coerce(false);
            Node::Scalar(scalar)
        }
        Value::Null => Node::Scalar(MarkedScalarNode::new(*span, "null")),
        other => Node::Scalar(MarkedScalarNode::new(*span, other.to_string())),
    }
}

/// Text of a scalar for naming things (foreach items): the source spelling.
pub fn plain_text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn typed(src: &str) -> Value {
        let options = marked_yaml::LoaderOptions::default().prevent_coercion(true);
        let node = marked_yaml::parse_yaml_with_options(0, format!("v: {src}"), options).unwrap();
        to_json(node.as_mapping().unwrap().get_node("v").unwrap())
    }

    #[test]
    fn plain_scalars_are_typed_and_quoted_ones_are_strings() {
        assert_eq!(typed("2e-3"), serde_json::json!(0.002));
        assert_eq!(typed("12"), serde_json::json!(12));
        assert_eq!(typed("-1.5"), serde_json::json!(-1.5));
        assert_eq!(typed("true"), serde_json::json!(true));
        assert_eq!(typed("~"), Value::Null);
        assert_eq!(typed("\"12\""), serde_json::json!("12"));
        assert_eq!(typed("inf"), serde_json::json!("inf"));
        assert_eq!(typed("1.2.3"), serde_json::json!("1.2.3"));
        assert_eq!(typed("e5"), serde_json::json!("e5"));
    }
}
