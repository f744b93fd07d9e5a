//! Cache keys: BLAKE3 over a canonical encoding of everything that decides what a
//! stage produces.
//!
//! The encoding is JSON with object keys sorted and no whitespace, numbers written as
//! `serde_json` writes them (shortest round-trip form), so the same stage gives the
//! same key on every machine and in every version of tureen that keeps this format.
//! Input *paths* are never part of a key, only input digests: moving a workspace or a
//! store keeps every key.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use tureen_artifacts::Digest;

/// Bumped when the fingerprint layout changes, so old cache entries stop matching.
pub const KEY_FORMAT: u32 = 1;

/// What a stage's key is computed from. Stored in cache entries and run records so
/// that `--dry-run` and `status` can say *what* changed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Fingerprint {
    /// The layout version, [`KEY_FORMAT`] when computed by this tureen.
    pub format: u32,
    /// The stage's kind name (`train`, `soup`, ...).
    pub kind: String,
    /// The kind's code version; a kind bumps it when its output changes.
    pub code_version: String,
    /// The stage's params after substitution and `-P` overrides.
    pub params: Map<String, Value>,
    /// Named inputs: one digest, or a list for series.
    pub inputs: BTreeMap<String, InputDigests>,
    /// Unnamed dependencies, in declaration order (`text` as written -> digest).
    pub deps: Vec<(String, Digest)>,
    /// The declared environment (pipeline `env` merged with the stage's), not the
    /// process environment.
    pub env: BTreeMap<String, String>,
    /// Processes of a data-parallel stage (its world size). Ranks sum their gradients
    /// in another order than one process's micro-batches do, so each world size has
    /// its own last bits and its own key. Left out of the encoding at 1, so every key
    /// of a single-process stage is what it was before ranks existed.
    #[serde(default = "one", skip_serializing_if = "is_one")]
    pub world: u32,
}

fn one() -> u32 {
    1
}

fn is_one(world: &u32) -> bool {
    *world == 1
}

/// The digests of one input.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum InputDigests {
    /// A single-artifact input.
    One(Digest),
    /// A series input, or a list of references flattened into one, in order.
    Series(Vec<Digest>),
}

impl Fingerprint {
    /// The stage key: the BLAKE3 of this fingerprint as canonical JSON, which the
    /// action cache is indexed by.
    pub fn key(&self) -> Digest {
        let value = serde_json::to_value(self).expect("fingerprints serialize");
        let mut out = Vec::with_capacity(512);
        write_canonical(&value, &mut out);
        Digest::of_bytes(&out)
    }

    /// Human-readable differences from an earlier fingerprint of the same stage, e.g.
    /// `param lr: 0.001 -> 0.002`, `input data changed`.
    pub fn diff(&self, old: &Fingerprint) -> Vec<String> {
        let mut why = Vec::new();
        if self.format != old.format {
            why.push("cache key format changed (tureen upgrade)".to_string());
        }
        if self.kind != old.kind {
            why.push(format!("kind {} -> {}", old.kind, self.kind));
        } else if self.code_version != old.code_version {
            why.push(format!(
                "{} code version {} -> {}",
                self.kind, old.code_version, self.code_version
            ));
        }
        diff_maps("param", &old.params, &self.params, &mut why);
        for (name, d) in &self.inputs {
            match old.inputs.get(name) {
                None => why.push(format!("new input {name}")),
                Some(o) if o != d => why.push(format!(
                    "input {name} changed ({} -> {})",
                    short(o),
                    short(d)
                )),
                _ => {}
            }
        }
        for name in old.inputs.keys().filter(|n| !self.inputs.contains_key(*n)) {
            why.push(format!("input {name} removed"));
        }
        let old_deps: BTreeMap<&String, &Digest> = old.deps.iter().map(|(t, d)| (t, d)).collect();
        for (text, d) in &self.deps {
            match old_deps.get(text) {
                None => why.push(format!("new dependency {text}")),
                Some(o) if *o != d => why.push(format!("dependency {text} changed")),
                _ => {}
            }
        }
        for (text, _) in old
            .deps
            .iter()
            .filter(|(t, _)| !self.deps.iter().any(|(n, _)| n == t))
        {
            why.push(format!("dependency {text} removed"));
        }
        let old_env: Map<String, Value> = old
            .env
            .iter()
            .map(|(k, v)| (k.clone(), Value::from(v.as_str())))
            .collect();
        let new_env: Map<String, Value> = self
            .env
            .iter()
            .map(|(k, v)| (k.clone(), Value::from(v.as_str())))
            .collect();
        diff_maps("env", &old_env, &new_env, &mut why);
        if self.world != old.world {
            why.push(format!("world size {} -> {}", old.world, self.world));
        }
        why
    }
}

fn short(d: &InputDigests) -> String {
    let one = |d: &Digest| d.to_hex()[..12].to_string();
    match d {
        InputDigests::One(d) => one(d),
        InputDigests::Series(ds) => format!("{} artifacts", ds.len()),
    }
}

fn diff_maps(
    what: &str,
    old: &Map<String, Value>,
    new: &Map<String, Value>,
    why: &mut Vec<String>,
) {
    let render = |v: &Value| {
        let mut s = String::new();
        canonical(v, &mut s);
        if s.len() > 60 {
            // At a character's start: a byte in the middle of one would panic.
            let cut = (0..=57).rev().find(|&i| s.is_char_boundary(i)).unwrap_or(0);
            s.truncate(cut);
            s.push_str("...");
        }
        s
    };
    for (k, v) in new {
        match old.get(k) {
            None => why.push(format!("{what} {k} added ({})", render(v))),
            Some(o) if o != v => why.push(format!("{what} {k}: {} -> {}", render(o), render(v))),
            _ => {}
        }
    }
    for k in old.keys().filter(|k| !new.contains_key(*k)) {
        why.push(format!("{what} {k} removed"));
    }
}

/// Writes `value` as canonical JSON: sorted keys, no whitespace.
pub fn canonical(value: &Value, out: &mut String) {
    let mut bytes = Vec::new();
    write_canonical(value, &mut bytes);
    out.push_str(std::str::from_utf8(&bytes).expect("JSON is UTF-8"));
}

/// [`canonical`] into bytes, each key and scalar written in place: this is every
/// stage's key, 10,000 of them in a no-op run of 10,000 stages.
fn write_canonical(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            out.push(b'{');
            for (i, (k, v)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                serde_json::to_writer(&mut *out, k).expect("strings serialize");
                out.push(b':');
                write_canonical(v, out);
            }
            out.push(b'}');
        }
        Value::Array(items) => {
            out.push(b'[');
            for (i, v) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_canonical(v, out);
            }
            out.push(b']');
        }
        other => serde_json::to_writer(&mut *out, other).expect("scalars serialize"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn fp(lr: f64) -> Fingerprint {
        Fingerprint {
            format: KEY_FORMAT,
            kind: "command".into(),
            code_version: "1".into(),
            params: json!({"lr": lr, "cmd": "x"}).as_object().unwrap().clone(),
            inputs: BTreeMap::new(),
            deps: Vec::new(),
            env: BTreeMap::new(),
            world: 1,
        }
    }

    #[test]
    fn canonical_encoding_sorts_keys() {
        let mut a = String::new();
        canonical(&json!({"b": 1, "a": [1.5, "x"]}), &mut a);
        assert_eq!(a, r#"{"a":[1.5,"x"],"b":1}"#);
    }

    #[test]
    fn the_key_is_the_blake3_of_the_canonical_json_of_the_fingerprint() {
        let json = r#"{"code_version":"1","deps":[],"env":{},"format":1,"inputs":{},"kind":"command","params":{"cmd":"x","lr":0.1}}"#;
        assert_eq!(fp(0.1).key(), Digest::of_bytes(json.as_bytes()));
    }

    #[test]
    fn a_long_changed_param_is_shortened_at_a_character_boundary() {
        let with = |text: &str| {
            let mut f = fp(0.1);
            f.params.insert("prompt".into(), json!(text));
            f
        };
        let why = with(&format!("x{}", "é".repeat(40))).diff(&with("short"));
        assert_eq!(why.len(), 1, "{why:?}");
        let shown = why[0].split(" -> ").nth(1).unwrap();
        assert!(shown.ends_with("...") && shown.len() <= 60, "{shown}");
    }

    #[test]
    fn key_depends_on_params_and_diff_names_them() {
        assert_eq!(fp(0.1).key(), fp(0.1).key());
        assert_ne!(fp(0.1).key(), fp(0.2).key());
        assert_eq!(
            fp(0.2).diff(&fp(0.1)),
            vec!["param lr: 0.1 -> 0.2".to_string()]
        );
    }

    #[test]
    fn the_world_size_is_in_the_key_only_when_there_are_several_ranks() {
        let single = fp(0.1);
        let encoded = serde_json::to_value(&single).unwrap();
        assert!(encoded.get("world").is_none(), "{encoded}");
        let back: Fingerprint = serde_json::from_value(encoded).unwrap();
        assert_eq!(back.world, 1);
        assert_eq!(back.key(), single.key());
        let two = Fingerprint { world: 2, ..fp(0.1) };
        let three = Fingerprint { world: 3, ..fp(0.1) };
        assert_ne!(two.key(), single.key());
        assert_ne!(two.key(), three.key());
        assert_eq!(two.diff(&single), vec!["world size 1 -> 2".to_string()]);
    }
}
