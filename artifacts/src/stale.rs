//! Temp files and scratch directories whose writer died (SIGKILL, power loss): found by
//! the owner token in their names and removed.
//!
//! Every temp name tureen makes carries its owner, `<pid>@<host>`, as one of its
//! dot-separated parts (`.<stem>.<pid>@<host>.<n>.<nanos>.tmp`, see
//! [`crate::fsutil::unique_temp_path`]; work directories `work-<key>.<pid>@<host>.<n>`).
//! An entry is stale when its host is this one and no process with its pid runs, or the
//! process with that pid started after the entry was last written (the pid was reused).
//! Entries of other hosts (a store shared with Slurm nodes) are never touched. Names from
//! older tureen versions (`.<stem>.<pid>.<n>.<nanos>.tmp`, `work-<key>-<pid>-<n>`) are
//! taken as this host's.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

/// This process's owner token: `<pid>@<host>`.
pub fn owner_token() -> String {
    format!("{}@{}", std::process::id(), host())
}

/// This machine's host name, reduced to `[A-Za-z0-9_-]` (at most 40 characters) so it
/// fits in a file name part.
pub fn host() -> &'static str {
    static HOST: OnceLock<String> = OnceLock::new();
    HOST.get_or_init(|| {
        let mut buf = [0u8; 256];
        // SAFETY: gethostname writes at most buf.len() bytes into our buffer.
        let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
        let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
        let name = if rc == 0 {
            String::from_utf8_lossy(&buf[..end]).into_owned()
        } else {
            String::new()
        };
        let clean: String = name
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                    c
                } else {
                    '-'
                }
            })
            .take(40)
            .collect();
        if clean.is_empty() {
            "localhost".into()
        } else {
            clean
        }
    })
}

/// Who wrote an entry, from its name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    /// The writing process's id (on `host`).
    pub pid: u32,
    /// `None`: a name from an older tureen, taken as this host's.
    pub host: Option<String>,
}

/// The owner named in `name`, if it is one of tureen's temp or scratch names.
pub fn owner_of(name: &str) -> Option<Owner> {
    let parts: Vec<&str> = name.split('.').collect();
    for part in &parts {
        if let Some((pid, host)) = part.split_once('@') {
            if let (Ok(pid), false) = (pid.parse::<u32>(), host.is_empty()) {
                return Some(Owner {
                    pid,
                    host: Some(host.to_string()),
                });
            }
        }
    }
    let numeric = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    // Older temp files: `.<stem>.<pid>.<counter>.<nanos>.tmp`.
    if name.starts_with('.') && parts.len() >= 6 && parts[parts.len() - 1] == "tmp" {
        let [pid, n, nanos] = [parts.len() - 4, parts.len() - 3, parts.len() - 2].map(|i| parts[i]);
        if numeric(pid) && numeric(n) && numeric(nanos) {
            return pid.parse().ok().map(|pid| Owner { pid, host: None });
        }
    }
    // Older work directories: `work-<16 hex>-<pid>-<attempt>`.
    let rest = name.strip_prefix("work-")?;
    let fields: Vec<&str> = rest.split('-').collect();
    match fields.as_slice() {
        [key, pid, attempt] if key.len() == 16 && numeric(pid) && numeric(attempt) => {
            pid.parse().ok().map(|pid| Owner { pid, host: None })
        }
        _ => None,
    }
}

/// Whether the writer of an entry last modified at `modified` is gone.
pub fn is_stale(owner: &Owner, modified: SystemTime) -> bool {
    if owner.host.as_deref().is_some_and(|h| h != host()) {
        return false;
    }
    if owner.pid == std::process::id() {
        return false;
    }
    match process_start(owner.pid) {
        None => true,
        // A second of slack: start times have clock-tick resolution.
        Some(started) => started > modified + Duration::from_secs(1),
    }
}

/// When process `pid` started, or `None` if no such process runs (zombies count as gone).
fn process_start(pid: u32) -> Option<SystemTime> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces and parentheses: fields follow the last `)`.
    let after = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    if fields.first() == Some(&"Z") || fields.first() == Some(&"X") {
        return None;
    }
    let ticks: u64 = fields.get(19)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Some(boot_time()? + Duration::from_millis(ticks * 1000 / hz))
}

fn boot_time() -> Option<SystemTime> {
    static BOOT: OnceLock<Option<SystemTime>> = OnceLock::new();
    *BOOT.get_or_init(|| {
        let text = fs::read_to_string("/proc/stat").ok()?;
        let secs: u64 = text
            .lines()
            .find_map(|l| l.strip_prefix("btime "))?
            .trim()
            .parse()
            .ok()?;
        Some(SystemTime::UNIX_EPOCH + Duration::from_secs(secs))
    })
}

/// Removes every stale entry of `dir` (not recursing) whose name starts with `prefix`
/// and returns what it removed. Entries it cannot judge or remove are left alone.
pub fn remove_stale(dir: &Path, prefix: &str) -> Vec<PathBuf> {
    remove_stale_where(dir, |name| name.starts_with(prefix))
}

/// Removes every stale entry of `dir` (not recursing) whose name `wanted` accepts and
/// returns what it removed. Entries it cannot judge or remove are left alone.
pub fn remove_stale_where(dir: &Path, wanted: impl Fn(&str) -> bool) -> Vec<PathBuf> {
    let mut removed = Vec::new();
    let Ok(entries) = fs::read_dir(dir) else {
        return removed;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !wanted(&name) {
            continue;
        }
        let Some(owner) = owner_of(&name) else {
            continue;
        };
        let Ok(meta) = fs::symlink_metadata(entry.path()) else {
            continue;
        };
        let modified = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
        if !is_stale(&owner, modified) {
            continue;
        }
        let path = entry.path();
        let gone = if meta.is_dir() {
            crate::fsutil::remove_all(&path)
        } else {
            fs::remove_file(&path)
        };
        if gone.is_ok() {
            removed.push(path);
        }
    }
    removed.sort();
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owners_are_read_from_current_and_older_names() {
        let me = Owner {
            pid: 12,
            host: Some("node-1".into()),
        };
        assert_eq!(owner_of(".object.12@node-1.0.99.tmp"), Some(me.clone()));
        assert_eq!(owner_of("work-0123456789abcdef.12@node-1.2"), Some(me));
        let old = Some(Owner {
            pid: 12,
            host: None,
        });
        assert_eq!(owner_of(".out.safetensors.12.3.4567.tmp"), old);
        assert_eq!(owner_of("work-0123456789abcdef-12-1"), old);
        assert_eq!(owner_of("model.safetensors"), None);
        assert_eq!(owner_of(".hidden.tmp"), None);
    }

    #[test]
    fn only_dead_writers_of_this_host_are_stale() {
        let now = SystemTime::now();
        let me = Owner {
            pid: std::process::id(),
            host: Some(host().into()),
        };
        assert!(!is_stale(&me, now));
        let parent = Owner {
            pid: std::os::unix::process::parent_id(),
            host: Some(host().into()),
        };
        assert!(!is_stale(&parent, now), "a live process's entries are kept");
        // pid_max is at most 2^22: this pid cannot run.
        let dead = Owner {
            pid: 4_194_999,
            host: Some(host().into()),
        };
        assert!(is_stale(&dead, now));
        let elsewhere = Owner {
            pid: 4_194_999,
            host: Some("another-node".into()),
        };
        assert!(
            !is_stale(&elsewhere, now),
            "other hosts' entries are never judged"
        );
        // A live pid that started after the entry was written is a reused pid.
        assert!(is_stale(&parent, SystemTime::UNIX_EPOCH));
    }

    #[test]
    fn remove_stale_keeps_live_and_foreign_entries() {
        let dir = tempfile::tempdir().unwrap();
        let live = dir.path().join(format!(".a.{}.0.1.tmp", owner_token()));
        let dead = dir.path().join(format!(".a.4194999@{}.0.1.tmp", host()));
        let dead_dir = dir
            .path()
            .join(format!("work-0123456789abcdef.4194999@{}.1", host()));
        let foreign = dir.path().join(".a.4194999@another-node.0.1.tmp");
        let other = dir.path().join(format!(".b.4194999@{}.0.1.tmp", host()));
        for f in [&live, &dead, &foreign, &other] {
            fs::write(f, b"x").unwrap();
        }
        fs::create_dir_all(dead_dir.join("sub")).unwrap();
        fs::write(dead_dir.join("sub/f"), b"x").unwrap();
        assert_eq!(remove_stale(dir.path(), ".a."), vec![dead.clone()]);
        assert_eq!(remove_stale(dir.path(), "work-"), vec![dead_dir.clone()]);
        assert!(live.exists() && foreign.exists() && other.exists());
    }
}
