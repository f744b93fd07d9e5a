//! The action cache's log: `<store>/cache/entries.log`, every entry ever inserted as one
//! line (`<key hex> <JSON>\n`, the JSON being what a lookup needs of the entry: its key
//! and outputs), appended as it is inserted. A run reads it once,
//! with one `read`, instead of opening 10,000 entry files, one per stage.
//!
//! The entry files stay the cache's truth; the log only saves a run from opening them. So
//! a reader trusts a line only when it is whole (it ends in a newline), parses, and names
//! the key it is filed under; anything else is skipped and the entry file read instead.
//! The last line of a key wins, as the last write of its file does. The two can disagree
//! only after a crash between the file's write and the line's append, and then both hold
//! a complete result of the same key.
//!
//! Appends and compaction take `<store>/locks/cache-log.lock`: an append lands in the
//! file that is current when it is written, and compaction (keeping the last line of each
//! key, written to a temp file and renamed over the log) loses none. Readers take no lock:
//! the rename shows them the old log or the new one, whole.

use std::collections::HashMap;
use std::fs::OpenOptions;
use std::io::{self, Write as _};
use std::ops::Range;
use std::path::{Path, PathBuf};

use tureen_artifacts::store::lock::FileLock;
use tureen_artifacts::Digest;

/// `<store>/cache/entries.log`.
pub fn path(store: &Path) -> PathBuf {
    store.join("cache").join("entries.log")
}

fn lock_path(store: &Path) -> PathBuf {
    store.join("locks").join("cache-log.lock")
}

/// One line of the log for `key`, its entry as compact JSON.
pub fn line(key: &Digest, json: &[u8]) -> Vec<u8> {
    let mut line = Vec::with_capacity(json.len() + 66);
    line.extend_from_slice(key.to_hex().as_bytes());
    line.push(b' ');
    line.extend_from_slice(json);
    line.push(b'\n');
    line
}

/// Appends whole lines (from [`line`]) to the log, in one write.
pub fn append(store: &Path, lines: &[u8]) -> io::Result<()> {
    if lines.is_empty() {
        return Ok(());
    }
    let _lock = FileLock::exclusive(&lock_path(store))?;
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path(store))?
        .write_all(lines)
}

/// The log as read once: each key's last line.
#[derive(Debug, Default)]
pub struct Log {
    bytes: Vec<u8>,
    /// Key -> the JSON of its last line.
    last: HashMap<Digest, Range<usize>>,
    /// Lines read, superseded ones included.
    lines: usize,
}

impl Log {
    /// Reads the log of the store at `store`; a missing or unreadable log is empty.
    pub fn read(store: &Path) -> Log {
        Log::parse(std::fs::read(path(store)).unwrap_or_default())
    }

    fn parse(bytes: Vec<u8>) -> Log {
        let mut last = HashMap::new();
        let mut lines = 0;
        let mut start = 0;
        // A line without its newline is a torn append: nothing after it is trusted either.
        while let Some(len) = bytes[start..].iter().position(|&b| b == b'\n') {
            let end = start + len;
            lines += 1;
            if let Some(key) = line_key(&bytes[start..end]) {
                last.insert(key, start + 65..end);
            }
            start = end + 1;
        }
        Log { bytes, last, lines }
    }

    /// The JSON of `key`'s last line, if the log has one.
    pub fn get(&self, key: &Digest) -> Option<&[u8]> {
        self.last.get(key).map(|r| &self.bytes[r.clone()])
    }

    /// Each key's last line (its JSON), the most recently written first.
    pub fn newest_first(&self) -> impl Iterator<Item = (&Digest, &[u8])> {
        let mut last: Vec<_> = self.last.iter().collect();
        last.sort_unstable_by_key(|(_, r)| std::cmp::Reverse(r.start));
        last.into_iter().map(|(k, r)| (k, &self.bytes[r.clone()]))
    }

    /// Whether enough of the log is superseded (or unreadable) lines to rewrite it.
    pub fn wants_compaction(&self) -> bool {
        self.lines > 1000 && self.lines > 2 * self.last.len()
    }
}

/// The key a line is filed under: 64 hex digits and a space.
fn line_key(line: &[u8]) -> Option<Digest> {
    let hex = std::str::from_utf8(line.get(..64)?).ok()?;
    (line.get(64) == Some(&b' ')).then_some(())?;
    Digest::from_hex(hex).ok()
}

/// Rewrites the log with the last line of each key, in the order the keys were last
/// written; `keep` decides which entries stay (given each line's key and JSON). Returns
/// the lines dropped.
pub fn compact(store: &Path, keep: impl Fn(&Digest, &[u8]) -> bool) -> io::Result<usize> {
    let _lock = FileLock::exclusive(&lock_path(store))?;
    let log = match std::fs::read(path(store)) {
        Ok(bytes) => Log::parse(bytes),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e),
    };
    let mut kept: Vec<(&Digest, &Range<usize>)> = log.last.iter().collect();
    kept.sort_by_key(|(_, r)| r.start);
    let mut out = Vec::with_capacity(log.bytes.len());
    let mut written = 0;
    for (key, range) in kept {
        let json = &log.bytes[range.clone()];
        if keep(key, json) {
            out.extend_from_slice(&line(key, json));
            written += 1;
        }
    }
    tureen_artifacts::fsutil::write_atomic(&path(store), &out)?;
    Ok(log.lines - written)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u8) -> Digest {
        Digest::of_bytes(&[n])
    }

    #[test]
    fn the_last_whole_line_of_a_key_wins_and_torn_or_foreign_lines_are_skipped() {
        let mut bytes = line(&key(1), b"{\"v\":1}");
        bytes.extend(line(&key(2), b"{\"v\":2}"));
        bytes.extend(b"not a key line\n");
        bytes.extend(line(&key(1), b"{\"v\":3}"));
        // A torn append: no newline.
        bytes.extend(&line(&key(3), b"{\"v\":4}")[..20]);
        let log = Log::parse(bytes);
        assert_eq!(log.get(&key(1)), Some(&b"{\"v\":3}"[..]));
        assert_eq!(log.get(&key(2)), Some(&b"{\"v\":2}"[..]));
        assert_eq!(log.get(&key(3)), None);
        assert_eq!(log.lines, 4);
    }

    #[test]
    fn compaction_keeps_the_last_line_of_each_kept_key() {
        let dir = tempfile::tempdir().unwrap();
        let store = dir.path();
        std::fs::create_dir_all(store.join("cache")).unwrap();
        append(store, &line(&key(1), b"{\"v\":1}")).unwrap();
        append(store, &line(&key(2), b"{\"v\":2}")).unwrap();
        append(store, &line(&key(1), b"{\"v\":3}")).unwrap();
        append(store, &line(&key(3), b"{\"v\":4}")).unwrap();
        let dropped = compact(store, |k, _| *k != key(3)).unwrap();
        assert_eq!(dropped, 2);
        let log = Log::read(store);
        assert_eq!(log.lines, 2);
        assert_eq!(log.get(&key(1)), Some(&b"{\"v\":3}"[..]));
        assert_eq!(log.get(&key(2)), Some(&b"{\"v\":2}"[..]));
        assert_eq!(log.get(&key(3)), None);
        // A store without a log compacts to nothing, and appends after it land.
        let empty = tempfile::tempdir().unwrap();
        assert_eq!(compact(empty.path(), |_, _| true).unwrap(), 0);
    }
}
