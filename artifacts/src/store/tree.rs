//! Tree objects: a directory stored as a JSON manifest of relative path -> file digest.
//!
//! The manifest is canonical (sorted keys, compact JSON, `/` separators), so the same
//! directory contents always give the same tree digest, wherever and whenever it is added.

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

use crate::Digest;

/// Every tree manifest starts with these bytes; that is how a tree object is told apart
/// from a file object without a side table.
pub const TREE_MAGIC: &[u8] = b"{\"tureen_tree\":1,";

/// A directory snapshot: relative file paths (always `/`-separated, never `..`, never
/// absolute, never empty components) mapped to the digests of their contents. Empty
/// directories, symlinks and permission bits are not recorded.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct Tree {
    /// Format version; always 1. Serialized first so manifests start with [`TREE_MAGIC`].
    pub tureen_tree: u32,
    /// Relative path -> file digest, sorted by path.
    pub files: BTreeMap<String, Digest>,
}

impl Tree {
    /// An empty tree (format version 1).
    pub fn new() -> Tree {
        Tree {
            tureen_tree: 1,
            files: BTreeMap::new(),
        }
    }

    /// The canonical manifest bytes (what gets hashed and stored).
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a map of strings to digests always serializes")
    }

    /// Parses manifest bytes; `None` if they are not a valid tree manifest (then the object
    /// is an ordinary file). Entries with unsafe paths make the manifest invalid.
    pub fn parse(bytes: &[u8]) -> Option<Tree> {
        if !bytes.starts_with(TREE_MAGIC) {
            return None;
        }
        let tree: Tree = serde_json::from_slice(bytes).ok()?;
        if tree.tureen_tree != 1 || tree.files.keys().any(|p| !is_safe_relative_path(p)) {
            return None;
        }
        Some(tree)
    }
}

/// Whether `p` is a relative path that stays inside the directory it is joined to.
pub fn is_safe_relative_path(p: &str) -> bool {
    !p.is_empty()
        && !p.contains('\0')
        && !p.starts_with('/')
        && p.split('/').all(|c| !c.is_empty() && c != "." && c != "..")
        && Path::new(p)
            .components()
            .all(|c| matches!(c, Component::Normal(_)))
}

/// Joins a manifest path (already checked safe) onto a directory.
pub fn join_relative(dir: &Path, rel: &str) -> PathBuf {
    let mut out = dir.to_path_buf();
    for part in rel.split('/') {
        out.push(part);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifest_is_canonical_and_detected_by_magic() {
        let mut t = Tree::new();
        t.files.insert("b/x.bin".into(), Digest::of_bytes(b"x"));
        t.files.insert("a.txt".into(), Digest::of_bytes(b"a"));
        let bytes = t.to_bytes();
        assert!(bytes.starts_with(TREE_MAGIC));
        let s = String::from_utf8(bytes.clone()).unwrap();
        assert!(s.find("a.txt").unwrap() < s.find("b/x.bin").unwrap());
        assert_eq!(Tree::parse(&bytes), Some(t));
        assert_eq!(Tree::parse(b"{\"other\":1}"), None);
    }

    #[test]
    fn unsafe_paths_are_rejected() {
        for bad in ["", "/etc/passwd", "../x", "a/../../x", "a//b", "./a", "a/."] {
            assert!(!is_safe_relative_path(bad), "{bad}");
        }
        assert!(is_safe_relative_path("a/b.c"));
        let evil = format!(
            "{{\"tureen_tree\":1,\"files\":{{\"../x\":\"{}\"}}}}",
            Digest::of_bytes(b"")
        );
        assert_eq!(Tree::parse(evil.as_bytes()), None);
    }
}
