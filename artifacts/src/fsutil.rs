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

/// Removes the temp files ([`unique_temp_path`]) that dead writers left in `dir`, once
/// per directory and process: a killed materialize leaves one beside its destination.
/// Scanning the directory before every file written into it, as the per-name
/// [`remove_stale_temps`] does, made a first run of N stages writing into one folder
/// quadratic in N. A writer that dies later is a later process's to clean up after.
pub fn remove_stale_temps_once(dir: &Path) -> Vec<PathBuf> {
    static SCANNED: std::sync::Mutex<Option<std::collections::HashSet<PathBuf>>> =
        std::sync::Mutex::new(None);
    let mut scanned = SCANNED.lock().unwrap_or_else(|e| e.into_inner());
    if !scanned
        .get_or_insert_with(Default::default)
        .insert(dir.to_path_buf())
    {
        return Vec::new();
    }
    drop(scanned);
    crate::stale::remove_stale_where(dir, |name| name.starts_with('.') && name.ends_with(".tmp"))
}

/// Removes `path` whatever it is: a file, a link, or a directory tree, including the
/// read-only directories of materialized tree objects. A missing path is not an error.
pub fn remove_all(path: &Path) -> io::Result<()> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => {
            make_writable(path);
            fs::remove_dir_all(path)
        }
        Ok(_) => fs::remove_file(path),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// Gives every directory under `dir` (and `dir`) write permission, so that it can be
/// emptied.
fn make_writable(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let _ = fs::set_permissions(dir, fs::Permissions::from_mode(0o755));
    for entry in fs::read_dir(dir).into_iter().flatten().flatten() {
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            make_writable(&entry.path());
        }
    }
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
    replace(path, bytes, true)
}

/// Writes `bytes` to `path` atomically but without waiting for the disk: a temp file in
/// the same directory, renamed. Readers (and a killed writer) never see half a file; a
/// power loss may lose it. For logs (run records, machine descriptions), not results.
pub fn replace_unsynced(path: &Path, bytes: &[u8]) -> io::Result<()> {
    replace(path, bytes, false)
}

fn replace(path: &Path, bytes: &[u8], durable: bool) -> io::Result<()> {
    let dir = parent_dir(path);
    let stem = path
        .file_name()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = unique_temp_path(dir, &stem);
    let result = (|| {
        let mut f = create_new(&tmp)?;
        f.write_all(bytes)?;
        if durable {
            f.sync_all()?;
        }
        fs::rename(&tmp, path)?;
        if durable {
            sync_dir(dir)?;
        }
        Ok(())
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

/// Opens `path` for reading only if it is a regular file, without ever blocking: a
/// FIFO opened for reading would wait for a writer forever, and a device may have side
/// effects. The file is opened non-blocking (which regular files ignore) and checked
/// with `fstat` on the open descriptor, so a path swapped between check and use cannot
/// slip through. Anything else is an `InvalidInput` error saying what the path is.
pub fn open_regular(path: &Path) -> io::Result<File> {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)?;
    let kind = file.metadata()?.file_type();
    if kind.is_file() {
        return Ok(file);
    }
    Err(io::Error::new(
        io::ErrorKind::InvalidInput,
        format!("is {}, not a regular file", describe_file_type(kind)),
    ))
}

/// "a directory", "a named pipe (FIFO)", ... for error messages.
pub fn describe_file_type(kind: fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if kind.is_dir() {
        "a directory"
    } else if kind.is_symlink() {
        "a symbolic link"
    } else if kind.is_fifo() {
        "a named pipe (FIFO)"
    } else if kind.is_char_device() {
        "a character device"
    } else if kind.is_block_device() {
        "a block device"
    } else if kind.is_socket() {
        "a socket"
    } else if kind.is_file() {
        "a regular file"
    } else {
        "a special file"
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

/// Creates a named pipe (tests of the refusal of non-regular files).
#[cfg(test)]
pub(crate) fn make_fifo(path: &Path) {
    let c = std::ffi::CString::new(path.to_str().expect("UTF-8 test path")).expect("no NUL");
    // SAFETY: a plain syscall on a NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_temps_of_any_name_go_at_the_first_write_into_a_folder_and_are_not_looked_for_again() {
        let dir = tempfile::tempdir().unwrap();
        let host = crate::stale::host();
        let dead = |stem: &str| dir.path().join(format!(".{stem}.4194999@{host}.0.1.tmp"));
        let user_file = dir.path().join(".notes.txt");
        for path in [dead("a.txt"), dead("b.txt"), user_file.clone()] {
            fs::write(path, b"x").unwrap();
        }
        let mut removed = remove_stale_temps_once(dir.path());
        removed.sort();
        assert_eq!(removed, vec![dead("a.txt"), dead("b.txt")]);
        assert!(user_file.exists(), "only tureen's temp names are judged");
        fs::write(dead("c.txt"), b"x").unwrap();
        assert_eq!(remove_stale_temps_once(dir.path()), Vec::<PathBuf>::new());
        assert!(
            dead("c.txt").exists(),
            "the folder was cleaned once by this process"
        );
    }

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
    fn open_regular_refuses_fifos_and_devices_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("pipe");
        make_fifo(&fifo);
        let err = open_regular(&fifo).unwrap_err();
        assert!(err.to_string().contains("named pipe"), "{err}");
        let err = open_regular(Path::new("/dev/null")).unwrap_err();
        assert!(err.to_string().contains("character device"), "{err}");
        let err = open_regular(dir.path()).unwrap_err();
        assert!(err.to_string().contains("directory"), "{err}");
        let file = dir.path().join("f");
        fs::write(&file, b"x").unwrap();
        assert!(open_regular(&file).is_ok());
    }

    #[test]
    fn unique_temp_paths_differ() {
        let d = Path::new("/x");
        assert_ne!(unique_temp_path(d, "a"), unique_temp_path(d, "a"));
    }
}
