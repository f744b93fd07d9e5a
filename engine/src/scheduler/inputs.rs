//! Input fingerprinting: a stage's references resolved to digests, once every upstream
//! is done, giving its [`Fingerprint`] (and so its key) and the inputs its job reads.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Context as _;
use tureen_artifacts::{Digest, Store};

use crate::cache::{ArtifactRecord, OutputRecord};
use crate::job::{JobArtifact, JobInput};
use crate::key::{Fingerprint, InputDigests, KEY_FORMAT};
use crate::kind::{KindRegistry, Select};
use crate::pipeline::{Input, Ref, Stage, Target};

/// The outputs of the stages a fingerprint may read: `None` for one not done (yet).
pub(super) type Outputs<'s> = dyn Fn(usize) -> Option<&'s BTreeMap<String, OutputRecord>> + 's;

/// The fingerprint of `stage` and the inputs of its job.
pub(super) fn fingerprint(
    registry: &KindRegistry,
    store: &Store,
    stage: &Stage,
    outputs: &Outputs<'_>,
) -> anyhow::Result<(Fingerprint, BTreeMap<String, JobInput>)> {
    let kind = registry
        .get(&stage.kind)
        .ok_or_else(|| anyhow::anyhow!("kind `{}` is not registered", stage.kind))?;
    let mut inputs = BTreeMap::new();
    let mut digests = BTreeMap::new();
    for (name, input) in &stage.inputs {
        let value = match input {
            Input::One(r) => resolve(store, r, outputs)?,
            Input::List(refs) => {
                let mut all = Vec::new();
                for r in refs {
                    match resolve(store, r, outputs)? {
                        JobInput::One(a) => all.push(a),
                        JobInput::Series(items) => all.extend(items),
                    }
                }
                JobInput::Series(all)
            }
        };
        digests.insert(name.clone(), input_digests(&value));
        inputs.insert(name.clone(), value);
    }
    let mut deps = Vec::new();
    for r in &stage.deps {
        let digest = match resolve(store, r, outputs)? {
            JobInput::One(a) => a.digest,
            JobInput::Series(items) => {
                let joined: Vec<String> = items.iter().map(|a| a.digest.to_string()).collect();
                Digest::of_bytes(joined.join("\n").as_bytes())
            }
        };
        deps.push((r.text.clone(), digest));
    }
    let fp = Fingerprint {
        format: KEY_FORMAT,
        kind: stage.kind.clone(),
        code_version: kind.code_version().to_string(),
        params: stage.params.clone(),
        inputs: digests,
        deps,
        env: stage.env.clone(),
        world: stage.world,
    };
    Ok((fp, inputs))
}

fn input_digests(value: &JobInput) -> InputDigests {
    match value {
        JobInput::One(a) => InputDigests::One(a.digest),
        JobInput::Series(items) => InputDigests::Series(items.iter().map(|a| a.digest).collect()),
    }
}

/// One reference as artifacts: a workspace file hashed (through the stat cache), or the
/// recorded output of a finished upstream.
fn resolve(store: &Store, r: &Ref, outputs: &Outputs<'_>) -> anyhow::Result<JobInput> {
    match &r.target {
        Target::File { path, rel } => {
            let meta = std::fs::metadata(path).with_context(|| format!("input `{rel}`"))?;
            let digest = if meta.is_dir() {
                tree_digest(store, path)
            } else if meta.is_file() {
                store.hash_file_cached(path).map_err(anyhow::Error::from)
            } else {
                Err(anyhow::anyhow!("not a regular file or directory"))
            }
            .with_context(|| format!("input `{rel}`"))?;
            Ok(JobInput::One(JobArtifact {
                digest,
                tree: meta.is_dir(),
                path: Some(path.clone()),
            }))
        }
        Target::Output {
            stage,
            output,
            select,
        } => {
            let recorded = outputs(*stage).ok_or_else(|| {
                anyhow::anyhow!(
                    "internal: `{}` resolved before its upstream finished",
                    r.text
                )
            })?;
            let rec = recorded.get(output).ok_or_else(|| {
                anyhow::anyhow!("`{}`: the recorded outputs have no `{output}`", r.text)
            })?;
            select_from(rec, *select, &r.text)
        }
    }
}

/// The part of a recorded output that `select` takes.
fn select_from(rec: &OutputRecord, select: Select, text: &str) -> anyhow::Result<JobInput> {
    let art = |a: &ArtifactRecord| JobArtifact {
        digest: a.digest,
        tree: a.tree,
        path: None,
    };
    let series = match rec {
        OutputRecord::One(a) => return Ok(JobInput::One(art(a))),
        OutputRecord::Series { series } => series,
    };
    match select {
        Select::Whole => Ok(JobInput::Series(series.iter().map(art).collect())),
        Select::Index(i) => {
            let k = Select::index_in(i, series.len()).ok_or_else(|| {
                anyhow::anyhow!(
                    "`{text}`: index {i} is out of range: the series has {} elements",
                    series.len()
                )
            })?;
            Ok(JobInput::One(art(&series[k])))
        }
        Select::Range(a, b) => {
            let range = Select::range_in(a, b, series.len()).ok_or_else(|| {
                anyhow::anyhow!(
                    "`{text}`: range out of bounds: the series has {} elements",
                    series.len()
                )
            })?;
            Ok(JobInput::Series(series[range].iter().map(art).collect()))
        }
    }
}

/// The digest a directory would have as a tree object, without storing it.
pub(super) fn tree_digest(store: &Store, dir: &Path) -> anyhow::Result<Digest> {
    let mut tree = tureen_artifacts::store::Tree::new();
    let mut stack = vec![(dir.to_path_buf(), String::new())];
    while let Some((abs, rel)) = stack.pop() {
        for entry in
            std::fs::read_dir(&abs).with_context(|| format!("cannot list {}", abs.display()))?
        {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let child_rel = if rel.is_empty() {
                name
            } else {
                format!("{rel}/{name}")
            };
            let ty = entry.file_type()?;
            if ty.is_dir() {
                stack.push((entry.path(), child_rel));
            } else if ty.is_file() {
                tree.files
                    .insert(child_rel, store.hash_file_cached(&entry.path())?);
            } else {
                anyhow::bail!(
                    "{}: symlinks and special files are not supported in inputs",
                    entry.path().display()
                );
            }
        }
    }
    Ok(Digest::of_bytes(&tree.to_bytes()))
}
