//! Files a user asked for (`plot -o`, `report -o`, `init`, `man -o`): written whole or
//! not at all, with the permissions any new file of theirs gets.

use std::io::Write as _;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

use anyhow::Context as _;

/// Mode of a new file before the umask, as `open(2)` callers such as `cp` use: the
/// picture or page is as readable as any other file the user writes (0644 under the
/// usual umask 022), not private as a temp file (0600) would leave it.
const NEW_FILE_MODE: u32 = 0o666;

/// Writes `out` through `write`, which fills a temporary file next to it (same
/// extension, so a format chosen by extension is kept); the file is synced and renamed
/// over `out`, so a failed or interrupted write never leaves a half-written file.
pub fn write_atomically(
    out: &Path,
    write: impl FnOnce(&Path) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let dir = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let ext = out.extension().and_then(|e| e.to_str()).unwrap_or("tmp");
    let tmp = tempfile::Builder::new()
        .prefix(".tureen-")
        .suffix(&format!(".{ext}"))
        .permissions(std::fs::Permissions::from_mode(NEW_FILE_MODE))
        .tempfile_in(&dir)
        .with_context(|| {
            format!(
                "cannot write {}: cannot create a file in {}",
                out.display(),
                dir.display()
            )
        })?;
    write(tmp.path())?;
    std::fs::File::open(tmp.path())
        .and_then(|f| f.sync_all())
        .with_context(|| format!("cannot write {}", out.display()))?;
    tmp.persist(out)
        .map_err(|e| e.error)
        .with_context(|| format!("cannot write {}", out.display()))?;
    Ok(())
}

/// Writes `bytes` to `out` atomically (see [`write_atomically`]).
pub fn write_bytes(out: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    write_atomically(out, |tmp| {
        std::fs::OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(tmp)
            .and_then(|mut f| f.write_all(bytes))
            .with_context(|| format!("cannot write {}", out.display()))
    })
}

/// Prints `value` as pretty JSON on stdout (what `--json` prints).
pub fn print_json(value: &serde_json::Value) {
    println!(
        "{}",
        serde_json::to_string_pretty(value).expect("JSON values serialize")
    );
}

/// A table as the listing commands print it: columns aligned by content, no borders,
/// never wrapped (it goes to pipes and files as often as to a terminal).
pub fn table<I, T>(header: I) -> comfy_table::Table
where
    I: IntoIterator<Item = T>,
    T: Into<comfy_table::Cell>,
{
    let mut t = comfy_table::Table::new();
    t.load_preset(comfy_table::presets::NOTHING)
        .set_content_arrangement(comfy_table::ContentArrangement::Disabled)
        .set_header(header);
    t
}

/// Prints a table without the padding comfy-table puts before its first column.
pub fn print_table(table: &comfy_table::Table) {
    for line in table.lines() {
        println!("{}", line.strip_prefix(' ').unwrap_or(&line).trim_end());
    }
}

/// A metric for a table: integers as such (`1200`), others to 4 significant decimals.
pub fn number(x: f64) -> String {
    if x.fract() == 0.0 && x.abs() < 1e15 {
        format!("{x:.0}")
    } else if x.abs() >= 100.0 {
        format!("{x:.1}")
    } else {
        format!("{x:.4}")
    }
}

/// A change `b - a` with its sign, or `-` when either side is missing.
pub fn change(a: Option<f64>, b: Option<f64>) -> String {
    match (a, b) {
        (Some(a), Some(b)) if a == b => "0".into(),
        (Some(a), Some(b)) => {
            let d = b - a;
            let s = number(d.abs());
            if d > 0.0 {
                format!("+{s}")
            } else {
                format!("-{s}")
            }
        }
        _ => "-".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_files_follow_the_umask_not_the_temp_file_mode() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("page.html");
        write_bytes(&out, b"<p>hi</p>").unwrap();
        assert_eq!(std::fs::read(&out).unwrap(), b"<p>hi</p>");
        // SAFETY: umask only reads and sets this process's mask; set it back at once.
        let umask = unsafe {
            let m = libc::umask(0o022);
            libc::umask(m);
            m
        };
        let mode = std::fs::metadata(&out).unwrap().permissions().mode() & 0o777;
        assert_eq!(
            mode,
            0o666 & !(umask as u32),
            "mode {mode:o}, umask {umask:o}"
        );
        let leftovers: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(leftovers.len(), 1, "no temp file is left behind");
    }

    #[test]
    fn numbers_read_as_in_a_metrics_table() {
        assert_eq!(number(1200.0), "1200");
        assert_eq!(number(0.27333), "0.2733");
        assert_eq!(number(123.456), "123.5");
        assert_eq!(change(Some(0.25), Some(0.3)), "+0.0500");
        assert_eq!(change(Some(2.0), Some(1.0)), "-1");
        assert_eq!(change(None, Some(1.0)), "-");
    }

    #[test]
    fn an_unwritable_directory_is_named_in_the_error() {
        let err = write_bytes(Path::new("/proc/no-such-dir/x.html"), b"x")
            .unwrap_err()
            .to_string();
        assert!(err.contains("/proc/no-such-dir/x.html"), "{err}");
    }
}
