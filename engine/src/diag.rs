//! Validation diagnostics: every problem in a pipeline file is reported as
//! `file:line:column: message`, all of them at once.

use std::fmt;
use std::path::{Path, PathBuf};

/// A 1-based line and column in a pipeline file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Pos {
    /// Line number, the first line being 1.
    pub line: usize,
    /// Column within the line, the first column being 1.
    pub column: usize,
}

impl Pos {
    /// The position `line:column`, both 1-based (not checked).
    pub const fn new(line: usize, column: usize) -> Pos {
        Pos { line, column }
    }
}

/// One problem found while loading or validating a pipeline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// The pipeline file, as the path it was loaded from.
    pub file: PathBuf,
    /// Where in `file` the offending text starts (1:1 when no better place is known).
    pub pos: Pos,
    /// What is wrong, as one line without the `file:line:column: ` prefix.
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.file.display(),
            self.pos.line,
            self.pos.column,
            self.message
        )
    }
}

/// Every problem found in one pipeline file, in file order. Loading fails with this
/// when it is non-empty; the CLI prints one line per diagnostic and exits 2.
#[derive(Debug, Clone, Default, thiserror::Error)]
pub struct Diagnostics(pub Vec<Diagnostic>);

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{d}")?;
        }
        Ok(())
    }
}

/// Collects diagnostics for one file while validation goes on, so a user sees every
/// problem in one pass instead of fixing them one run at a time.
#[derive(Debug)]
pub struct Sink {
    file: PathBuf,
    diags: Vec<Diagnostic>,
}

impl Sink {
    /// An empty sink whose diagnostics all name `file`.
    pub fn new(file: &Path) -> Sink {
        Sink {
            file: file.to_path_buf(),
            diags: Vec::new(),
        }
    }

    /// Records a problem at `pos`; validation goes on so later problems are found too.
    pub fn error(&mut self, pos: Pos, message: impl Into<String>) {
        self.diags.push(Diagnostic {
            file: self.file.clone(),
            pos,
            message: message.into(),
        });
    }

    /// `true` while nothing was reported, e.g. to skip checks that only make sense on
    /// a pipeline that is valid so far.
    pub fn is_empty(&self) -> bool {
        self.diags.is_empty()
    }

    /// `Ok(())` when nothing was reported, else every diagnostic sorted by position.
    pub fn finish(mut self) -> Result<(), Diagnostics> {
        if self.diags.is_empty() {
            return Ok(());
        }
        self.diags.sort_by_key(|d| d.pos);
        self.diags.dedup();
        Err(Diagnostics(self.diags))
    }
}

/// The closest candidate to `word` by edit distance, for "did you mean" hints. The
/// distance counts a swap of two neighbours as one edit (optimal string alignment), so
/// `gne` is one edit from `gen`.
pub fn suggest<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    candidates
        .into_iter()
        .map(|c| (strsim::osa_distance(word, c), c))
        .filter(|(d, c)| *d <= 2.max(c.len() / 3))
        .min_by(|(d1, c1), (d2, c2)| d1.cmp(d2).then(c1.cmp(c2)))
        .map(|(_, c)| c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggests_close_names_only() {
        assert_eq!(
            suggest("retires", ["retries", "resources"]),
            Some("retries")
        );
        assert_eq!(suggest("zzz", ["retries", "resources"]), None);
        assert_eq!(suggest("gne", ["use", "gen"]), Some("gen"));
    }
}
