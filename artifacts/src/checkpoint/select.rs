//! Finding the tensors inside a `torch.save` object.
//!
//! A training checkpoint nests its state dict: open_clip saves `{epoch, name,
//! state_dict, optimizer}`, other trainers use `model` or `module`; a bare
//! `torch.save(model.state_dict())` is the state dict itself. By default the first of
//! `state_dict`, `model`, `module` that is a dict of tensors is taken, else the top level
//! if it is one; `--key PATH` (dot-separated keys, or list indices) picks one
//! explicitly. A `module.` prefix on every name (DistributedDataParallel) is stripped
//! unless asked to keep it.

use std::fmt;
use std::str::FromStr;

use super::OpenOptions;
use crate::torch::{Node, Tensor, TorchFile};

/// Where a state dict is searched for by default, in order.
pub const DEFAULT_KEYS: [&str; 3] = ["state_dict", "model", "module"];

/// The prefix DistributedDataParallel puts on every parameter name.
pub const DDP_PREFIX: &str = "module.";

/// A path to a value in the saved object: dict keys (or list indices) joined by dots.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateDictPath(Vec<String>);

impl FromStr for StateDictPath {
    type Err = String;

    fn from_str(s: &str) -> Result<StateDictPath, String> {
        let parts: Vec<String> = s.split('.').map(str::to_string).collect();
        if s.is_empty() || parts.iter().any(String::is_empty) {
            return Err(format!(
                "{s:?} is not a key path (dict keys joined by dots, e.g. `state_dict` or `model.ema`)"
            ));
        }
        Ok(StateDictPath(parts))
    }
}

impl fmt::Display for StateDictPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.join("."))
    }
}

/// The tensors taken from a `torch.save` file, and where they came from.
#[derive(Debug, Clone)]
pub struct Selection {
    /// Where the state dict was (`None`: the saved object itself).
    pub key: Option<StateDictPath>,
    /// The prefix stripped from every name, if any.
    pub stripped_prefix: Option<String>,
    /// Name (after stripping) and tensor, in state-dict order (emptied once a
    /// [`super::Checkpoint`] has made its entries from them).
    pub tensors: Vec<(String, Tensor)>,
    /// The saved object's other top-level entries: key and a short rendering (`3`,
    /// `"epoch_3"`, `a dict of 2 entries`), e.g. open_clip's `epoch` and `name`.
    pub others: Vec<(String, String)>,
}

impl Selection {
    /// A tensor's full key path in the file, for messages.
    pub fn display_name(&self, name: &str) -> String {
        let prefix = self.stripped_prefix.as_deref().unwrap_or("");
        match &self.key {
            Some(k) => format!("{k}.{prefix}{name}"),
            None => format!("{prefix}{name}"),
        }
    }
}

/// Picks the state dict of `file` per `opts` (see the module docs).
pub(crate) fn select(file: &TorchFile, opts: &OpenOptions) -> Result<Selection, String> {
    let root = file.root();
    let (key, dict) = match &opts.key {
        Some(path) => (Some(path.clone()), follow(root, path)?),
        None => find_state_dict(root)?,
    };
    let here = key
        .as_ref()
        .map_or_else(|| "the saved object".to_string(), |k| format!("`{k}`"));
    let mut tensors = state_dict(dict).map_err(|m| format!("{here} {m}"))?;
    let stripped_prefix =
        (!opts.keep_prefix && tensors.iter().all(|(n, _)| n.starts_with(DDP_PREFIX))).then(|| {
            for (n, _) in &mut tensors {
                n.drain(..DDP_PREFIX.len());
            }
            DDP_PREFIX.to_string()
        });
    // What else a training checkpoint holds (epoch, name, optimizer...).
    let first = key.as_ref().map(|k| k.0[0].as_str());
    let others = match (first, root.entries()) {
        (Some(first), Some(entries)) => entries
            .filter_map(|(k, v)| Some((k.as_str()?, v)))
            .filter(|(k, _)| *k != first)
            .map(|(k, v)| (k.to_string(), v.summary()))
            .collect(),
        _ => Vec::new(),
    };
    Ok(Selection {
        key,
        stripped_prefix,
        tensors,
        others,
    })
}

/// The default search: `state_dict`, `model`, `module`, then the top level.
fn find_state_dict(root: Node<'_>) -> Result<(Option<StateDictPath>, Node<'_>), String> {
    for key in DEFAULT_KEYS {
        if let Some(v) = root.get(key) {
            if state_dict(v).is_ok() {
                return Ok((Some(StateDictPath(vec![key.to_string()])), v));
            }
        }
    }
    if state_dict(root).is_ok() {
        return Ok((None, root));
    }
    let listing = match root.entries() {
        Some(entries) => {
            let items: Vec<String> = entries
                .take(20)
                .map(|(k, v)| format!("{} ({})", k.scalar_text().unwrap_or_default(), v.summary()))
                .collect();
            format!("its top-level keys are {}", items.join(", "))
        }
        None => format!("it saves {}", root.summary()),
    };
    Err(format!(
        "no state dict (a dict of tensors) at {} or the top level: {listing}; pick one with --key",
        DEFAULT_KEYS.join(", ")
    ))
}

/// The value at `path`, or an error naming the first step that leads nowhere.
fn follow<'a>(root: Node<'a>, path: &StateDictPath) -> Result<Node<'a>, String> {
    let mut node = root;
    for (i, part) in path.0.iter().enumerate() {
        let so_far = path.0[..i].join(".");
        let at = if so_far.is_empty() {
            "the saved object".to_string()
        } else {
            format!("`{so_far}`")
        };
        let next = match node.items() {
            Some(items) => part
                .parse::<usize>()
                .ok()
                .and_then(|j| items.get(j).copied()),
            None => node.get(part),
        };
        node = next.ok_or_else(|| {
            format!(
                "--key {path}: {at} ({}) has no entry `{part}`",
                node.summary()
            )
        })?;
    }
    Ok(node)
}

/// A dict whose keys are strings and whose values are all tensors.
fn state_dict(node: Node<'_>) -> Result<Vec<(String, Tensor)>, String> {
    let entries = node
        .entries()
        .ok_or_else(|| format!("is {}, not a dict of tensors", node.summary()))?;
    let mut out = Vec::new();
    let mut bad = Vec::new();
    for (k, v) in entries {
        match (k.as_str(), v.as_tensor()) {
            (Some(name), Some(t)) => out.push((name.to_string(), t.clone())),
            _ => bad.push(format!(
                "{} ({})",
                k.scalar_text().unwrap_or_else(|| k.kind().to_string()),
                v.summary()
            )),
        }
    }
    if !bad.is_empty() {
        bad.truncate(5);
        return Err(format!(
            "is not a dict of tensors: it also holds {}",
            bad.join(", ")
        ));
    }
    if out.is_empty() {
        return Err("is an empty dict".into());
    }
    Ok(out)
}
