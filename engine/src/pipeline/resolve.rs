//! Pass 5: references resolved. Every `inputs:`/`deps:` entry becomes a [`Target`]: an
//! output of another stage (checked against what that stage declares, indices against
//! the series' length) or a file of the workspace. A path that some stage lists in `outs`
//! is that stage's output. Each stage's `outs` are checked here too: an output may not
//! be, hold or lie in what a run must never delete.

use std::borrow::Cow;
use std::collections::HashMap;
use std::path::{Component, Path, PathBuf};

use super::expand::is_stage_name;
use super::reference::{self, Select};
use super::stage::{RawInput, RawStage};
use super::{Input, Ref, Stage, Target};
use crate::diag::{suggest, Pos, Sink};
use crate::kind::{OutputDecl, OutputShape};

/// The stages with their references resolved and their upstreams known.
pub(super) fn resolve(
    sink: &mut Sink,
    raws: Vec<RawStage>,
    root: &Path,
    file: &Path,
) -> Vec<Stage> {
    let index: HashMap<String, usize> = raws
        .iter()
        .enumerate()
        .map(|(i, r)| (r.stage.name.clone(), i))
        .collect();
    let resolver = Resolver {
        produced: produced_paths(sink, &raws),
        outputs: raws
            .iter()
            .map(|r| (r.stage.name.clone(), r.stage.outputs.clone(), r.declared))
            .collect(),
        index,
        root,
    };
    let mut paths = Resolved::new(file);
    let mut stages = Vec::with_capacity(raws.len());
    for (i, raw) in raws.into_iter().enumerate() {
        let outs_pos = raw.param_pos.get("outs").copied().unwrap_or(raw.stage.pos);
        let RawStage {
            mut stage,
            inputs,
            deps,
            ..
        } = raw;
        for (name, input) in inputs {
            let resolved = match input {
                RawInput::One((text, p)) => resolver.reference(sink, &text, p, i).map(Input::One),
                RawInput::List(items) => Some(Input::List(
                    items
                        .into_iter()
                        .filter_map(|(text, p)| resolver.reference(sink, &text, p, i))
                        .collect(),
                )),
            };
            if let Some(input) = resolved {
                stage.inputs.insert(name, input);
            }
        }
        for (text, p) in deps {
            if let Some(r) = resolver.reference(sink, &text, p, i) {
                stage.deps.push(r);
            }
        }
        check_outs(sink, &stage, outs_pos, root, &mut paths);
        let mut upstream: Vec<usize> = stage
            .refs()
            .filter_map(|r| match r.target {
                Target::Output { stage, .. } => Some(stage),
                Target::File { .. } => None,
            })
            .collect();
        upstream.sort_unstable();
        upstream.dedup();
        stage.upstream = upstream;
        stages.push(stage);
    }
    stages
}

/// Workspace paths that stages produce (normalized) -> (stage, output). Depending on
/// such a path depends on its stage; two stages may not produce the same path.
fn produced_paths(sink: &mut Sink, raws: &[RawStage]) -> HashMap<String, (usize, String)> {
    let mut produced: HashMap<String, (usize, String)> = HashMap::new();
    for (i, raw) in raws.iter().enumerate() {
        for (out, path) in &raw.stage.workspace_paths {
            let norm = normalize(path);
            if let Some((other, _)) = produced.get(norm.as_ref()) {
                let p = raw.param_pos.get("outs").copied().unwrap_or(raw.stage.pos);
                sink.error(
                    p,
                    format!(
                        "`{path}` is an output of both `{}` and `{}`",
                        raws[*other].stage.name, raw.stage.name
                    ),
                );
            } else {
                produced.insert(norm.into_owned(), (i, out.clone()));
            }
        }
    }
    produced
}

struct Resolver<'a> {
    index: HashMap<String, usize>,
    /// Per stage: name, declared outputs, whether a kind declared them.
    outputs: Vec<(String, Vec<OutputDecl>, bool)>,
    produced: HashMap<String, (usize, String)>,
    root: &'a Path,
}

impl Resolver<'_> {
    /// Resolves `text`, written at `p` in stage `me`.
    fn reference(&self, sink: &mut Sink, text: &str, p: Pos, me: usize) -> Option<Ref> {
        let text = text.trim();
        if text.is_empty() {
            sink.error(p, "empty reference");
            return None;
        }
        let target = match self.stage_ref(text) {
            Err(e) => {
                sink.error(p, e);
                return None;
            }
            Ok(Some(r)) => self.output_target(sink, text, p, me, r)?,
            Ok(None) => self.path_target(sink, text, p, me)?,
        };
        Some(Ref {
            text: text.to_string(),
            pos: p,
            target,
        })
    }

    /// `text` as a stage reference, unless it names a file. A path some stage declares
    /// in `outs` wins over a stage reference: with a stage called `gen`, `gen.txt` is
    /// far more likely that stage's file than an output named `txt`. Likewise an existing
    /// file whose name merely starts with a stage name.
    fn stage_ref<'t>(&self, text: &'t str) -> Result<Option<reference::StageRef<'t>>, String> {
        if self.produced.contains_key(normalize(text).as_ref()) {
            return Ok(None);
        }
        let parsed = reference::parse(text, &self.index)?;
        Ok(parsed.filter(|r| {
            let (_, outputs, _) = &self.outputs[r.stage];
            outputs.iter().any(|o| o.name == r.output) || !self.root.join(text).exists()
        }))
    }

    fn output_target(
        &self,
        sink: &mut Sink,
        text: &str,
        p: Pos,
        me: usize,
        r: reference::StageRef<'_>,
    ) -> Option<Target> {
        let (stage_name, outputs, declared) = &self.outputs[r.stage];
        if r.stage == me {
            sink.error(p, format!("`{text}`: stage `{stage_name}` cannot depend on its own output (cycle: {stage_name} -> {stage_name})"));
            return None;
        }
        let target = Target::Output {
            stage: r.stage,
            output: r.output.to_string(),
            select: r.select,
        };
        if !declared {
            // The stage's kind is unknown: that is its error; don't add follow-ons.
            return Some(target);
        }
        let Some(decl) = outputs.iter().find(|o| o.name == r.output) else {
            let names: Vec<&str> = outputs.iter().map(|o| o.name.as_str()).collect();
            let hint = suggest(r.output, names.iter().copied())
                .map(|s| format!("did you mean `{s}`? "))
                .unwrap_or_default();
            sink.error(
                p,
                format!(
                    "`{text}`: stage `{stage_name}` has no output `{}` ({hint}its outputs: {})",
                    r.output,
                    if names.is_empty() {
                        "none".to_string()
                    } else {
                        names.join(", ")
                    }
                ),
            );
            return None;
        };
        let shown = format!("{stage_name}.{}", r.output);
        match check_select(decl, r.select, &shown) {
            Ok(()) => Some(target),
            Err(e) => {
                sink.error(p, format!("`{text}`: {e}"));
                None
            }
        }
    }

    fn path_target(&self, sink: &mut Sink, text: &str, p: Pos, me: usize) -> Option<Target> {
        if let Some((stage, output)) = self.produced.get(normalize(text).as_ref()) {
            if *stage == me {
                sink.error(
                    p,
                    format!("`{text}` is an output of this stage; it cannot also be an input"),
                );
                return None;
            }
            return Some(Target::Output {
                stage: *stage,
                output: output.clone(),
                select: Select::Whole,
            });
        }
        let path = self.root.join(text);
        match std::fs::metadata(&path) {
            Ok(m) if m.is_file() || m.is_dir() => Some(Target::File {
                rel: text.to_string(),
                path,
            }),
            Ok(m) => {
                sink.error(
                    p,
                    format!(
                        "`{text}` is {}, not a regular file or directory (tureen reads inputs whole and hashes them)",
                        special_file_kind(&m)
                    ),
                );
                None
            }
            Err(_) => {
                sink.error(p, self.missing_file(text));
                None
            }
        }
    }

    /// "No such file", with a hint when `text` looks like a misspelt stage reference.
    fn missing_file(&self, text: &str) -> String {
        let stage_part = text.split('.').next().unwrap_or(text);
        let what = if text.contains('.') && !text.contains('/') && is_stage_name(stage_part) {
            let names: Vec<&str> = self.index.keys().map(String::as_str).collect();
            match suggest(stage_part, names) {
                Some(s) => format!(" and no stage is called `{stage_part}` (did you mean `{s}`?)"),
                None => format!(" and no stage is called `{stage_part}`"),
            }
        } else {
            String::new()
        };
        format!(
            "`{text}`: no such file in {}{what}, and no stage declares it in `outs`",
            self.root.display()
        )
    }
}

/// An index or range against what the output declares.
fn check_select(decl: &OutputDecl, select: Select, shown: &str) -> Result<(), String> {
    match (decl.shape, select) {
        (OutputShape::One, Select::Index(_) | Select::Range(..)) => Err(format!(
            "`{shown}` is a single artifact, not a series: drop the index"
        )),
        (OutputShape::Series, Select::Index(i)) => match decl.len {
            Some(len) if Select::index_in(i, len).is_none() => Err(format!(
                "index {i} is out of range: `{shown}` has {len} elements (0..={})",
                len.saturating_sub(1)
            )),
            _ => Ok(()),
        },
        (OutputShape::Series, Select::Range(start, end)) => match decl.len {
            Some(len) if Select::range_in(start, end, len).is_none() => Err(format!(
                "range is out of bounds: `{shown}` has {len} elements"
            )),
            _ => Ok(()),
        },
        (_, Select::Whole) => Ok(()),
    }
}

/// Refuses `outs` that a run would destroy user data with: the pipeline's directory (or
/// anything above it), the pipeline file, a path through a symlink out of the
/// directory, or a file the same stage reads. (Declared outs are deleted before the
/// stage runs.)
fn check_outs(sink: &mut Sink, stage: &Stage, at: Pos, root: &Path, paths: &mut Resolved) {
    if stage.workspace_paths.is_empty() {
        return;
    }
    let file = paths.file.clone();
    let reads: Vec<PathBuf> = stage
        .refs()
        .filter_map(|r| match &r.target {
            // Followed to the end: an output may not be what a link the stage reads
            // points to.
            Target::File { path, .. } => Some(resolved(path)),
            Target::Output { .. } => None,
        })
        .collect();
    for rel in stage.workspace_paths.values() {
        let out = paths.of(&root.join(rel));
        let problem = if root.starts_with(&out) {
            Some(
                "is the pipeline's directory (or holds it): the run would delete everything in it"
                    .to_string(),
            )
        } else if !out.starts_with(root) {
            Some("leads outside the pipeline's directory (through a symbolic link)".to_string())
        } else if out == file || file.starts_with(&out) || out.starts_with(&file) {
            Some(format!("is or holds the pipeline file {}", file.display()))
        } else {
            reads
                .iter()
                .find(|r| r.starts_with(&out) || out.starts_with(r))
                .map(|r| {
                    format!(
                        "is, holds or lies in {}, which this stage reads",
                        r.display()
                    )
                })
        };
        if let Some(problem) = problem {
            sink.error(
                at,
                format!("stage `{}`: output `{rel}` {problem}", stage.name),
            );
        }
    }
}

/// Paths resolved for comparison, remembering each directory's resolution (a pipeline's
/// outputs share a few directories).
pub(crate) struct Resolved {
    /// The pipeline file, resolved.
    file: PathBuf,
    dirs: HashMap<PathBuf, PathBuf>,
}

impl Resolved {
    /// A resolver; `file` (resolved at once) is the pipeline file.
    pub(crate) fn new(file: &Path) -> Resolved {
        Resolved {
            file: resolved(file),
            dirs: HashMap::new(),
        }
    }

    /// `path` as its resolved directory joined with its name. A symbolic link as the last
    /// component is not followed: removing an output removes the link, never what it
    /// points to, so only the directories on the way matter.
    pub(crate) fn of(&mut self, path: &Path) -> PathBuf {
        match (path.parent(), path.file_name()) {
            (Some(dir), Some(name)) if !name.is_empty() && name != ".." => {
                let dir = self
                    .dirs
                    .entry(dir.to_path_buf())
                    .or_insert_with(|| resolved(dir));
                dir.join(name)
            }
            _ => resolved(path),
        }
    }
}

/// `path` with symbolic links in its existing part resolved and `.`/`..` folded, so
/// that it compares with other such paths.
pub(crate) fn resolved(path: &Path) -> PathBuf {
    let mut existing = path;
    let mut rest = Vec::new();
    loop {
        if let Ok(canonical) = std::fs::canonicalize(existing) {
            return rest.iter().rev().fold(canonical, |p, c| p.join(c));
        }
        match (existing.parent(), existing.file_name()) {
            (Some(parent), Some(name)) => {
                rest.push(name.to_os_string());
                existing = parent;
            }
            _ => return path.to_path_buf(),
        }
    }
}

fn special_file_kind(m: &std::fs::Metadata) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    let t = m.file_type();
    if t.is_fifo() {
        "a FIFO (named pipe)"
    } else if t.is_socket() {
        "a socket"
    } else if t.is_block_device() || t.is_char_device() {
        "a device"
    } else {
        "a special file"
    }
}

/// A relative path with `.` and `a/..` components folded, `/`-separated. Most paths
/// already are (10,000-stage pipelines normalize 20,000 of them): those are returned as
/// they are.
pub(super) fn normalize(path: &str) -> Cow<'_, str> {
    if is_normal(path) {
        return Cow::Borrowed(path);
    }
    let mut parts: Vec<String> = Vec::new();
    for c in Path::new(path.trim()).components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                if parts.last().is_some_and(|p| p != "..") {
                    parts.pop();
                } else {
                    parts.push("..".into());
                }
            }
            Component::Normal(p) => parts.push(p.to_string_lossy().into_owned()),
            Component::RootDir => parts.push(String::new()),
            Component::Prefix(p) => parts.push(p.as_os_str().to_string_lossy().into_owned()),
        }
    }
    Cow::Owned(parts.join("/"))
}

/// Whether [`normalize`] leaves `path` as it is: no surrounding space, and no empty,
/// `.` or `..` component (a leading `/` aside).
fn is_normal(path: &str) -> bool {
    let rel = path.strip_prefix('/').unwrap_or(path);
    path.trim() == path
        && !rel.is_empty()
        && rel
            .split('/')
            .all(|c| !c.is_empty() && c != "." && c != "..")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_normalize() {
        assert_eq!(normalize("./a/b/../c.txt"), "a/c.txt");
        assert_eq!(normalize("./"), "");
        for (path, normal) in [
            ("a/b.txt", "a/b.txt"),
            ("out/s1.txt", "out/s1.txt"),
            ("/abs/x", "/abs/x"),
            (" a/b ", "a/b"),
            ("a//b", "a/b"),
            ("a/b/", "a/b"),
            ("a/./b", "a/b"),
            ("../a", "../a"),
            ("/", ""),
            ("", ""),
        ] {
            assert_eq!(normalize(path), normal, "{path:?}");
            // The shortcut is only taken for paths normalizing leaves as they are.
            assert!(!is_normal(path) || path == normal, "{path:?}");
        }
        assert!(is_normal("out/s1.txt") && is_normal("/abs/x"));
    }

    #[test]
    fn negative_slices_are_checked_against_the_length() {
        let decl = OutputDecl {
            name: "checkpoints".into(),
            shape: OutputShape::Series,
            len: Some(4),
        };
        assert!(check_select(&decl, Select::Range(-3, None), "c").is_ok());
        assert!(check_select(&decl, Select::Range(-5, None), "c").is_err());
        assert!(check_select(&decl, Select::Index(-4), "c").is_ok());
        assert!(check_select(&decl, Select::Index(-5), "c").is_err());
        assert!(check_select(&decl, Select::Range(2, Some(9)), "c").is_err());
    }
}
