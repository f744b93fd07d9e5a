//! [`ParamError`]: what a kind says is wrong with a stage, naming the field it is about,
//! so the engine can point at it (`file:line:column`) without reading the message.

use std::fmt;

/// The part of a stage declaration a [`ParamError`] is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParamField {
    /// The params as a whole (e.g. a required one is missing).
    Params,
    /// A param under `params:`, as a dotted path (`lr`, `model.vision.width`).
    Param(String),
    /// One of the kind's own stage keys (a command's `cmd` or `outs`).
    StageKey(String),
    /// A named input (`inputs.from`).
    Input(String),
}

impl ParamField {
    /// The stage key the field belongs to: the top-level param name for a param
    /// (`model` for `model.vision.width`), the key itself for a stage key, `inputs`
    /// for an input. The loader points at it.
    pub fn key(&self) -> &str {
        match self {
            ParamField::Params => "params",
            ParamField::Param(path) => path.split('.').next().unwrap_or(path),
            ParamField::StageKey(key) => key,
            ParamField::Input(_) => "inputs",
        }
    }
}

impl fmt::Display for ParamField {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParamField::Params => f.write_str("params"),
            ParamField::Param(path) => write!(f, "params.{path}"),
            ParamField::StageKey(key) => f.write_str(key),
            ParamField::Input(name) => write!(f, "inputs.{name}"),
        }
    }
}

/// A problem with one field of a stage, found by its kind: shown as
/// `params.lr: expected a number`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct ParamError {
    /// What the problem is about.
    pub field: ParamField,
    /// What is wrong with it.
    pub message: String,
}

impl ParamError {
    /// A problem with the param at `path` (under `params:`).
    pub fn param(path: impl Into<String>, message: impl Into<String>) -> ParamError {
        ParamError {
            field: ParamField::Param(path.into()),
            message: message.into(),
        }
    }

    /// A problem with the params as a whole.
    pub fn params(message: impl Into<String>) -> ParamError {
        ParamError {
            field: ParamField::Params,
            message: message.into(),
        }
    }

    /// A problem with the stage key `key` (e.g. `cmd`).
    pub fn stage_key(key: impl Into<String>, message: impl Into<String>) -> ParamError {
        ParamError {
            field: ParamField::StageKey(key.into()),
            message: message.into(),
        }
    }

    /// A problem with the input `name`.
    pub fn input(name: impl Into<String>, message: impl Into<String>) -> ParamError {
        ParamError {
            field: ParamField::Input(name.into()),
            message: message.into(),
        }
    }

    /// The same problem, about a field nested inside the param `parent` (for checks of
    /// a sub-structure such as `heldout:` that report paths relative to it).
    pub fn within(self, parent: &str) -> ParamError {
        let path = match self.field {
            ParamField::Params => parent.to_string(),
            ParamField::Param(p) | ParamField::StageKey(p) => format!("{parent}.{p}"),
            ParamField::Input(name) => format!("{parent}.inputs.{name}"),
        };
        ParamError::param(path, self.message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_read_as_the_field_then_the_problem() {
        assert_eq!(
            ParamError::param("lr", "expected a number").to_string(),
            "params.lr: expected a number"
        );
        assert_eq!(
            ParamError::stage_key("cmd", "missing").to_string(),
            "cmd: missing"
        );
        assert_eq!(
            ParamError::input("from", "expected one checkpoint").to_string(),
            "inputs.from: expected one checkpoint"
        );
        let nested = ParamError::param("batch_size", "required").within("heldout");
        assert_eq!(nested.to_string(), "params.heldout.batch_size: required");
        assert_eq!(nested.field.key(), "heldout");
    }
}
