//! Shard lists: `::`-separated patterns, brace expansion, local files and `pipe:`
//! commands.

use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};

use super::DataError;

/// Where one shard's bytes come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ShardSource {
    /// A tar file (absolute, or resolved against the loader's base dir).
    File(PathBuf),
    /// A shell command (run with `sh -c` in the base dir) writing a tar to stdout.
    Pipe(String),
}

impl fmt::Display for ShardSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ShardSource::File(path) => write!(f, "{}", path.display()),
            ShardSource::Pipe(command) => write!(f, "pipe:{command}"),
        }
    }
}

/// Expands every `{a..b}` (integer range, zero-padded when either end has a leading
/// zero, ascending or descending) and `{x,y,z}` (alternatives) group, left to right,
/// into the cartesian product, in order. Braces without `..` or `,` stay literal.
pub fn expand_braces(pattern: &str) -> Result<Vec<String>, String> {
    let Some(open) = pattern.find('{') else {
        if pattern.contains('}') {
            return Err(format!(
                "unmatched `}}` at column {}",
                pattern.find('}').unwrap() + 1
            ));
        }
        return Ok(vec![pattern.to_string()]);
    };
    let close = pattern[open..]
        .find('}')
        .map(|i| open + i)
        .ok_or_else(|| format!("unmatched `{{` at column {}", open + 1))?;
    let inner = &pattern[open + 1..close];
    if inner.contains('{') {
        return Err(format!(
            "nested braces at column {} are not supported",
            open + 1
        ));
    }
    let head = &pattern[..open];
    let alternatives: Vec<String> = if let Some((a, b)) = inner.split_once("..") {
        integer_range(a, b).map_err(|e| format!("{e} in `{{{inner}}}` at column {}", open + 1))?
    } else if inner.contains(',') {
        inner.split(',').map(str::to_string).collect()
    } else {
        vec![format!("{{{inner}}}")]
    };
    let tails = expand_braces(&pattern[close + 1..])?;
    let mut out = Vec::with_capacity(alternatives.len() * tails.len());
    for alternative in &alternatives {
        for tail in &tails {
            out.push(format!("{head}{alternative}{tail}"));
        }
    }
    Ok(out)
}

fn integer_range(a: &str, b: &str) -> Result<Vec<String>, String> {
    let parse = |s: &str| {
        s.parse::<i64>()
            .map_err(|_| format!("`{s}` is not an integer"))
    };
    let (start, end) = (parse(a)?, parse(b)?);
    let padded =
        |s: &str| s.trim_start_matches('-').len() > 1 && s.trim_start_matches('-').starts_with('0');
    let width = if padded(a) || padded(b) {
        a.len().max(b.len())
    } else {
        0
    };
    let count = start.abs_diff(end) + 1;
    if count > 10_000_000 {
        return Err(format!("range of {count} shards is too large"));
    }
    let step: i64 = if end >= start { 1 } else { -1 };
    Ok((0..count as i64)
        .map(|i| format!("{:0width$}", start + i * step))
        .collect())
}

/// Parses a shard spec (patterns separated by `::`) into sources. Local files are
/// resolved against `base_dir` and must exist: a missing one is
/// [`DataError::MissingShard`], reported before any reading starts.
pub fn parse_shards(spec: &str, base_dir: &Path) -> Result<Vec<ShardSource>, DataError> {
    let mut sources = Vec::new();
    for pattern in spec.split("::").map(str::trim).filter(|p| !p.is_empty()) {
        let expanded = expand_braces(pattern).map_err(|message| DataError::Pattern {
            pattern: pattern.to_string(),
            message,
        })?;
        for item in expanded {
            if let Some(command) = item.strip_prefix("pipe:") {
                sources.push(ShardSource::Pipe(command.trim().to_string()));
            } else {
                let path = base_dir.join(&item);
                if !path.is_file() {
                    return Err(DataError::MissingShard(path));
                }
                sources.push(ShardSource::File(path));
            }
        }
    }
    if sources.is_empty() {
        return Err(DataError::Pattern {
            pattern: spec.to_string(),
            message: "no shards".into(),
        });
    }
    Ok(sources)
}

/// An open shard: a file, or a running command's stdout. Reading a pipe to its end
/// and calling [`ShardReader::finish`] checks the command's exit status; dropping the
/// reader early kills the command.
pub struct ShardReader {
    reader: Box<dyn Read + Send>,
    /// The running command of a `pipe:` source, with its text for error messages.
    child: Option<(String, Child)>,
}

impl ShardReader {
    /// Opens `source` (commands run in `base_dir`).
    pub fn open(source: &ShardSource, base_dir: &Path) -> Result<Self, DataError> {
        match source {
            ShardSource::File(path) => {
                let file = std::fs::File::open(path).map_err(|e| {
                    if e.kind() == std::io::ErrorKind::NotFound {
                        DataError::MissingShard(path.clone())
                    } else {
                        DataError::Read {
                            shard: path.display().to_string(),
                            source: e,
                        }
                    }
                })?;
                Ok(ShardReader {
                    reader: Box::new(std::io::BufReader::with_capacity(1 << 20, file)),
                    child: None,
                })
            }
            ShardSource::Pipe(command) => {
                let mut child = Command::new("sh")
                    .arg("-c")
                    .arg(command)
                    .current_dir(base_dir)
                    .stdin(Stdio::null())
                    .stdout(Stdio::piped())
                    .spawn()
                    .map_err(|e| DataError::Pipe {
                        command: command.clone(),
                        message: format!("cannot start: {e}"),
                    })?;
                let stdout: ChildStdout = child.stdout.take().expect("stdout was piped");
                Ok(ShardReader {
                    reader: Box::new(std::io::BufReader::with_capacity(1 << 20, stdout)),
                    child: Some((command.clone(), child)),
                })
            }
        }
    }

    /// After reading everything: for a command, waits for it and fails on a non-zero
    /// exit status.
    pub fn finish(mut self) -> Result<(), DataError> {
        // Close our end of the pipe first so a command still writing gets EPIPE.
        self.reader = Box::new(std::io::empty());
        let Some((command, mut child)) = self.child.take() else {
            return Ok(());
        };
        let status = child.wait().map_err(|e| DataError::Pipe {
            command: command.clone(),
            message: e.to_string(),
        })?;
        if status.success() {
            Ok(())
        } else {
            Err(DataError::Pipe {
                command,
                message: format!("exited with {status}"),
            })
        }
    }
}

impl Read for ShardReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.reader.read(buf)
    }
}

impl Drop for ShardReader {
    fn drop(&mut self) {
        if let Some((_, mut child)) = self.child.take() {
            // Stopped early (epoch done, loader dropped): don't leave the command running.
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numeric_ranges_keep_zero_padding() {
        assert_eq!(
            expand_braces("d/{000..002}.tar").unwrap(),
            ["d/000.tar", "d/001.tar", "d/002.tar"]
        );
        assert_eq!(expand_braces("{8..10}").unwrap(), ["8", "9", "10"]);
        assert_eq!(expand_braces("{2..0}").unwrap(), ["2", "1", "0"]);
    }

    #[test]
    fn lists_and_several_groups_form_a_product() {
        assert_eq!(
            expand_braces("{a,b}-{0..1}").unwrap(),
            ["a-0", "a-1", "b-0", "b-1"]
        );
        assert_eq!(expand_braces("plain").unwrap(), ["plain"]);
        assert_eq!(expand_braces("{x}").unwrap(), ["{x}"]);
    }

    #[test]
    fn bad_patterns_name_the_column() {
        assert!(expand_braces("a{0..2").unwrap_err().contains("column 2"));
        assert!(expand_braces("{a..2}")
            .unwrap_err()
            .contains("not an integer"));
        assert!(expand_braces("a}").unwrap_err().contains("unmatched"));
    }
}
