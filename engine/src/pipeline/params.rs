//! Pass 2: the top-level `params:` and the `-P` overrides from the command line.
//!
//! Params are plain values: a param cannot refer to another (`${params.x}` in a param is
//! an error here, not a run-time surprise), and `-P NAME=VALUE` must name a declared
//! param and keep its type. `-P STAGE.PARAM=VALUE` is kept for after the stages are read
//! ([`Overrides::stage`]).

use std::path::Path;

use marked_yaml::types::MarkedScalarNode;
use marked_yaml::Node;
use serde_json::{Map, Value};

use super::error::LoadError;
use super::yaml::{self, pos, type_name};
use crate::diag::{suggest, Sink};

/// The `-P` overrides, split by what they set.
#[derive(Debug, Default)]
pub(super) struct Overrides {
    /// `-P NAME=VALUE`: top-level params.
    pub top: Vec<(String, String)>,
    /// `-P STAGE.PARAM=VALUE`: one stage's param.
    pub stage: Vec<StageOverride>,
}

/// One `-P STAGE.PARAM=VALUE`.
#[derive(Debug)]
pub(super) struct StageOverride {
    pub stage: String,
    pub param: String,
    pub text: String,
}

impl Overrides {
    /// Splits `-P` strings. A value may not contain `${...}`: overrides are values, and a
    /// template in one would be substituted nowhere.
    pub fn parse(overrides: &[String]) -> Result<Overrides, LoadError> {
        let mut out = Overrides::default();
        for o in overrides {
            let (name, text) = o.split_once('=').ok_or_else(|| {
                LoadError::Override(format!("-P {o}: expected NAME=VALUE or STAGE.PARAM=VALUE"))
            })?;
            if text.contains("${") {
                return Err(LoadError::Override(format!(
                    "-P {o}: a value cannot contain `${{...}}` (write `$${{` for a literal `${{`; \
                     give the value itself)"
                )));
            }
            match name.rsplit_once('.') {
                Some((stage, param)) => out.stage.push(StageOverride {
                    stage: stage.to_string(),
                    param: param.to_string(),
                    text: text.to_string(),
                }),
                None => out.top.push((name.to_string(), text.to_string())),
            }
        }
        Ok(out)
    }
}

/// The top-level `params:` mapping, checked: names are identifiers, values hold no
/// `${...}`.
pub(super) fn read(sink: &mut Sink, node: Option<&Node>) -> Map<String, Value> {
    let mut out = Map::new();
    let map = match node {
        None => return out,
        Some(Node::Mapping(m)) => m,
        Some(other) => {
            sink.error(
                pos(other),
                format!("`params` must be a mapping, found {}", type_name(other)),
            );
            return out;
        }
    };
    for (k, v) in map.iter() {
        if !is_identifier(k.as_str()) {
            sink.error(
                yaml::span_pos(k.span()),
                format!(
                    "invalid param name `{}`: use letters, digits and `_`",
                    k.as_str()
                ),
            );
        }
        if let Some(at) = first_template(v) {
            sink.error(
                at,
                format!(
                    "param `{}` refers to `${{...}}`: params are values and cannot refer to \
                     params (write `$${{` for a literal `${{`)",
                    k.as_str()
                ),
            );
        }
        out.insert(k.as_str().to_string(), yaml::to_json(v));
    }
    out
}

/// Where the first scalar holding an unescaped `${` is.
fn first_template(node: &Node) -> Option<crate::diag::Pos> {
    match node {
        Node::Scalar(s) => crate::subst::has_vars(s.as_str()).then(|| yaml::span_pos(s.span())),
        Node::Sequence(items) => items.iter().find_map(first_template),
        Node::Mapping(map) => map.iter().find_map(|(_, v)| first_template(v)),
    }
}

/// Applies `-P NAME=VALUE` to the declared params.
pub(super) fn apply_top(
    params: &mut Map<String, Value>,
    overrides: &[(String, String)],
    file: &Path,
) -> Result<(), LoadError> {
    for (name, text) in overrides {
        let Some(declared) = params.get(name) else {
            let names: Vec<&str> = params.keys().map(String::as_str).collect();
            let hint = suggest(name, names.iter().copied())
                .map(|s| format!(" (did you mean `{s}`?)"))
                .unwrap_or_default();
            return Err(LoadError::Override(format!(
                "-P {name}={text}: {} declares no param `{name}`{hint} (declared: {})",
                file.display(),
                if names.is_empty() {
                    "none".to_string()
                } else {
                    names.join(", ")
                }
            )));
        };
        let value = typed(name, declared, text).map_err(LoadError::Override)?;
        params.insert(name.clone(), value);
    }
    Ok(())
}

/// Parses `text` the way YAML types a plain scalar.
pub(super) fn from_cli(text: &str) -> Value {
    yaml::scalar_value(&MarkedScalarNode::new(marked_yaml::Span::new_blank(), text))
}

/// A CLI value for a param whose current value is `declared`: numbers stay numbers (an
/// integer is accepted for a float), strings take the text as is.
pub(super) fn typed(name: &str, declared: &Value, text: &str) -> Result<Value, String> {
    let parsed = from_cli(text);
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
        return Ok(parsed);
    }
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

fn is_identifier(s: &str) -> bool {
    !s.is_empty()
        && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !s.starts_with(|c: char| c.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overrides_keep_the_declared_type() {
        assert_eq!(
            typed("lr", &serde_json::json!(0.1), "2").unwrap(),
            serde_json::json!(2.0)
        );
        assert!(typed("n", &serde_json::json!(3), "2.5").is_err());
        assert_eq!(
            typed("s", &serde_json::json!("a"), "12").unwrap(),
            serde_json::json!("12")
        );
    }

    #[test]
    fn an_override_is_a_value_not_a_template() {
        let err = Overrides::parse(&["word=${params.n}".into()]).unwrap_err();
        assert!(err.to_string().contains("cannot contain `${...}`"), "{err}");
        let ok = Overrides::parse(&["a=1".into(), "core.lr=2e-3".into()]).unwrap();
        assert_eq!(ok.top, vec![("a".to_string(), "1".to_string())]);
        assert_eq!(ok.stage[0].stage, "core");
    }

    #[test]
    fn a_misspelt_override_gets_a_suggestion() {
        let mut params = Map::new();
        params.insert("lr".into(), serde_json::json!(1e-3));
        let err = apply_top(
            &mut params,
            &[("lrr".into(), "2".into())],
            Path::new("p.yaml"),
        )
        .unwrap_err();
        assert!(err.to_string().contains("did you mean `lr`?"), "{err}");
    }
}
