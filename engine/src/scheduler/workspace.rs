//! Outputs in the workspace: a command's `outs` at their declared paths, every other
//! single output at `outputs/<stage>/<name><ext>` beside the pipeline file. Series
//! (checkpoints) stay in the store.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use tureen_artifacts::Store;

use super::inputs::tree_digest;
use crate::cache::OutputRecord;
use crate::pipeline::{Pipeline, Stage};

/// Where output `name` of `stage` appears in the workspace, if anywhere.
fn destination(
    pipeline: &Pipeline,
    stage: &Stage,
    name: &str,
    rec: &OutputRecord,
) -> Option<PathBuf> {
    if let Some(rel) = stage.workspace_paths.get(name) {
        return Some(pipeline.root.join(rel));
    }
    let OutputRecord::One(a) = rec else {
        return None;
    };
    let ext = a
        .file_name
        .as_deref()
        .and_then(|f| Path::new(f).extension())
        .map(|e| format!(".{}", e.to_string_lossy()))
        .unwrap_or_default();
    Some(
        pipeline
            .root
            .join("outputs")
            .join(&stage.name)
            .join(format!("{name}{ext}")),
    )
}

/// Puts the stage's outputs in the workspace unless they are already there (same
/// digest), replacing whatever is at their paths otherwise.
pub(super) fn materialize(
    store: &Store,
    pipeline: &Pipeline,
    stage: &Stage,
    outputs: &BTreeMap<String, OutputRecord>,
) -> anyhow::Result<()> {
    for (name, rec) in outputs {
        let Some(dest) = destination(pipeline, stage, name, rec) else {
            continue;
        };
        let OutputRecord::One(a) = rec else { continue };
        let current = match std::fs::symlink_metadata(&dest) {
            Ok(m) if m.is_file() && !a.tree => store.hash_regular_file_cached(&dest, &m).ok(),
            Ok(m) if m.is_dir() && a.tree => tree_digest(store, &dest).ok(),
            _ => None,
        };
        if current == Some(a.digest) {
            continue;
        }
        tureen_artifacts::fsutil::remove_all(&dest)
            .with_context(|| format!("cannot remove {}", dest.display()))?;
        store.materialize(&a.digest, &dest).with_context(|| {
            format!(
                "stage `{}`: cannot materialize output `{name}` at {}",
                stage.name,
                dest.display()
            )
        })?;
    }
    Ok(())
}
