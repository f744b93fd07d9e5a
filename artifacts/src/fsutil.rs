//! Small filesystem helpers shared by the store, the safetensors writer and the engine:
//! atomic writes (temp file in the same directory, fsync, rename) and fast copies.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// A path in `dir` that no other writer of this process or another one will pick:
/// `.<stem>.<pid>@<host>.<counter>.<nanos>.tmp`. Hidden (leading dot) so globbing users
/// do not trip over half-written files; the owner part lets a later process remove it
/// once its writer is dead ([`crate::stale`], [`temp_prefix`]).
pub fn unique_temp_path(dir: &Path, stem: &str) -> PathBuf {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    dir.join(format!(
        "{}{}.{n}.{nanos}.tmp",
        temp_prefix(stem),
        crate::stale::owner_token()
    ))
}

/// The start of every [`unique_temp_path`] name for `stem`: `.<stem>.`.
pub fn temp_prefix(stem: &str) -> String {
    let stem: String = stem.chars().filter(|c| *c != '/').take(64).collect();
    format!(".{stem}.")
}

/// Removes the temp files for `stem` in `dir` that dead writers left (a killed soup
/// beside its output, a killed materialize beside its destination).
pub fn remove_stale_temps(dir: &Path, stem: &str) -> Vec<PathBuf> {
    crate::stale::remove_stale(dir, &temp_prefix(stem))
}

/// Creates a new file that must not exist yet (O_EXCL), mode 0644.
pub fn create_new(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(0o644)
        .open(path)
}

/// fsyncs a directory so that a rename inside it survives a crash.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    // Some filesystems refuse fsync on directories; the rename is still atomic there.
    match File::open(dir).and_then(|d| d.sync_all()) {
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => Ok(()),
        other => other,
    }
}

/// Allocates disk blocks for the first `len` bytes of `file` (extending it to `len` when
/// shorter), for files about to be written in full: a full disk then fails now rather than
/// halfway through, and the writes need no block allocation (ext4's delayed allocation made
/// the kernel side of copying a multi-GB file into a fresh temp file several times more
/// expensive than writing it into preallocated blocks). Filesystems that cannot
/// preallocate get a plain `set_len`.
pub fn preallocate(file: &File, len: u64) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let Ok(off) = libc::off_t::try_from(len) else {
        return Err(io::Error::from_raw_os_error(libc::EFBIG));
    };
    // SAFETY: a plain syscall on a descriptor that `file` keeps open.
    let rc = unsafe { libc::posix_fallocate(file.as_raw_fd(), 0, off) };
    match rc {
        0 => Ok(()),
        libc::EOPNOTSUPP | libc::EINVAL => file.set_len(len),
        errno => Err(io::Error::from_raw_os_error(errno)),
    }
}

/// The directory a path lives in (`.` for a bare file name).
pub fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// Writes `bytes` to `path` atomically: a temp file in the same directory, fsync, rename,
/// fsync of the directory. Readers see either the old file or the complete new one.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let dir = parent_dir(path);
    let stem = path
        .file_name()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = unique_temp_path(dir, &stem);
    let result = (|| {
        let mut f = create_new(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        fs::rename(&tmp, path)?;
        sync_dir(dir)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Clones `src` into the new, empty file `dst` with the FICLONE ioctl (btrfs, XFS, bcachefs,
/// OCFS2...). Returns `Ok(false)` when the filesystem cannot share extents, so the caller
/// can fall back; the two files then never influence each other.
pub fn reflink(src: &File, dst: &File) -> io::Result<bool> {
    use std::os::fd::AsRawFd;
    // SAFETY: both descriptors are open for the duration of the call; FICLONE takes the
    // source fd as its argument and does not retain it.
    let rc = unsafe { libc::ioctl(dst.as_raw_fd(), libc::FICLONE, src.as_raw_fd()) };
    if rc == 0 {
        return Ok(true);
    }
    let err = io::Error::last_os_error();
    match err.raw_os_error() {
        Some(libc::EOPNOTSUPP)
        | Some(libc::ENOTTY)
        | Some(libc::EXDEV)
        | Some(libc::EINVAL)
        | Some(libc::ENOSYS)
        | Some(libc::EPERM) => Ok(false),
        _ => Err(err),
    }
}

/// Whether this process runs as root, for whom read-only permission bits protect nothing.
pub fn running_as_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Sets permission bits (e.g. 0o444 for immutable objects).
pub fn set_mode(path: &Path, mode: u32) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_atomic_replaces_content_and_leaves_no_temp_files() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.json");
        write_atomic(&p, b"one").unwrap();
        write_atomic(&p, b"two").unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"two");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn unique_temp_paths_differ() {
        let d = Path::new("/x");
        assert_ne!(unique_temp_path(d, "a"), unique_temp_path(d, "a"));
    }
}
