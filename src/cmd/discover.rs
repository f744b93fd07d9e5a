//! Which store a command uses, found the way git and DVC find theirs.
//!
//! `--store DIR` (or `TUREEN_STORE`) wins. Otherwise the pipeline file's directory and
//! its parents are searched first, then the current directory and its parents, for a
//! `.tureen` entry: a directory is a store; a file names one (`store: PATH`, relative to
//! the file's directory), as a `.git` file names the repository of a git worktree. Only
//! when no store is found anywhere does a command that writes create one, and it says
//! where: in the current directory when the pipeline lies below it (today's layout),
//! otherwise beside the pipeline, never in an unrelated directory.

use std::fmt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _};

/// The name of a store directory, or of a file naming one.
pub const STORE_NAME: &str = ".tureen";

/// How the store was chosen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum How {
    /// `--store` or `TUREEN_STORE`.
    Given,
    /// A `.tureen` directory found searching from `from`.
    Found { from: PathBuf },
    /// Named by the `.tureen` file `file`.
    Named { file: PathBuf },
    /// None exists yet: this is where a command that writes creates it.
    New,
}

/// A store directory and how it was chosen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreLocation {
    pub path: PathBuf,
    pub how: How,
}

impl fmt::Display for StoreLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let path = self.path.display();
        match &self.how {
            How::Given => write!(f, "{path} (--store or TUREEN_STORE)"),
            How::Found { from } => write!(f, "{path} (found from {})", from.display()),
            How::Named { file } => write!(f, "{path} (named by {})", file.display()),
            How::New => write!(f, "{path} (new)"),
        }
    }
}

/// Finds the store for a command run in `cwd` (absolute), on `pipeline` if it has one.
pub fn locate(
    given: Option<&Path>,
    pipeline: Option<&Path>,
    cwd: &Path,
) -> anyhow::Result<StoreLocation> {
    if let Some(dir) = given {
        return Ok(StoreLocation {
            path: cwd.join(dir),
            how: How::Given,
        });
    }
    let pipeline_dir = pipeline.map(|p| pipeline_dir(p, cwd));
    for start in pipeline_dir.iter().map(PathBuf::as_path).chain([cwd]) {
        if let Some(found) = search(start)? {
            return Ok(found);
        }
    }
    let home = match &pipeline_dir {
        Some(dir) if !dir.starts_with(cwd) => dir.clone(),
        _ => cwd.to_path_buf(),
    };
    Ok(StoreLocation {
        path: home.join(STORE_NAME),
        how: How::New,
    })
}

/// The absolute directory of a pipeline file given relative to `cwd`.
fn pipeline_dir(pipeline: &Path, cwd: &Path) -> PathBuf {
    let abs = cwd.join(pipeline);
    let dir = abs.parent().map(Path::to_path_buf).unwrap_or(abs);
    // `..` components would make `starts_with` comparisons lie; a missing directory is
    // reported by the pipeline loader, so keep the lexical path then.
    std::fs::canonicalize(&dir).unwrap_or(dir)
}

/// The nearest `.tureen` at or above `start`.
fn search(start: &Path) -> anyhow::Result<Option<StoreLocation>> {
    for dir in start.ancestors() {
        let candidate = dir.join(STORE_NAME);
        let Ok(meta) = std::fs::metadata(&candidate) else {
            continue;
        };
        if meta.is_dir() {
            return Ok(Some(StoreLocation {
                path: candidate,
                how: How::Found {
                    from: start.to_path_buf(),
                },
            }));
        }
        let path = read_pointer(&candidate)?;
        return Ok(Some(StoreLocation {
            path: dir.join(path),
            how: How::Named { file: candidate },
        }));
    }
    Ok(None)
}

/// The store a `.tureen` file names: its `store: PATH` line (`#` starts a comment).
fn read_pointer(file: &Path) -> anyhow::Result<PathBuf> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    for (n, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        match line.strip_prefix("store:").map(str::trim) {
            Some(path) if !path.is_empty() => return Ok(PathBuf::from(path)),
            _ => bail!(
                "{}:{}: expected `store: PATH` (the store this directory uses), found `{line}`",
                file.display(),
                n + 1
            ),
        }
    }
    bail!(
        "{}: names no store (expected a line `store: PATH`)",
        file.display()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree() -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let root = std::fs::canonicalize(dir.path()).unwrap();
        std::fs::create_dir_all(root.join("proj/pipelines")).unwrap();
        std::fs::create_dir_all(root.join("elsewhere")).unwrap();
        (dir, root)
    }

    #[test]
    fn a_store_above_the_pipeline_is_found_from_any_directory() {
        let (_keep, root) = tree();
        std::fs::create_dir(root.join("proj/.tureen")).unwrap();
        let pipeline = root.join("proj/pipelines/p.yaml");
        for cwd in [root.join("proj/pipelines"), root.join("elsewhere")] {
            let at = locate(None, Some(&pipeline), &cwd).unwrap();
            assert_eq!(at.path, root.join("proj/.tureen"));
            assert!(matches!(at.how, How::Found { .. }), "{at}");
        }
    }

    #[test]
    fn without_a_store_a_new_one_goes_beside_the_pipeline_unless_cwd_is_above_it() {
        let (_keep, root) = tree();
        let pipeline = Path::new("pipelines/p.yaml");
        let at = locate(None, Some(pipeline), &root.join("proj")).unwrap();
        assert_eq!((at.path, at.how), (root.join("proj/.tureen"), How::New));
        let at = locate(
            None,
            Some(&root.join("proj/pipelines/p.yaml")),
            &root.join("elsewhere"),
        )
        .unwrap();
        assert_eq!(at.path, root.join("proj/pipelines/.tureen"));
    }

    #[test]
    fn a_tureen_file_names_the_store_relative_to_itself() {
        let (_keep, root) = tree();
        std::fs::write(
            root.join("proj/.tureen"),
            "# shared\nstore: ../shared-store\n",
        )
        .unwrap();
        let at = locate(None, None, &root.join("proj/pipelines")).unwrap();
        assert_eq!(at.path, root.join("proj/../shared-store"));
        assert_eq!(
            at.how,
            How::Named {
                file: root.join("proj/.tureen")
            }
        );
    }

    #[test]
    fn a_bad_tureen_file_is_an_error_naming_its_line() {
        let (_keep, root) = tree();
        std::fs::write(root.join("proj/.tureen"), "\nstorage = x\n").unwrap();
        let err = locate(None, None, &root.join("proj"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("proj/.tureen:2:"), "{err}");
    }

    #[test]
    fn a_given_store_wins() {
        let (_keep, root) = tree();
        std::fs::create_dir(root.join("proj/.tureen")).unwrap();
        let at = locate(Some(Path::new("s")), None, &root.join("proj")).unwrap();
        assert_eq!((at.path, at.how), (root.join("proj/s"), How::Given));
    }
}
