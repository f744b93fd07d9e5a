//! The supervisor of a stage's process tree: no process a `command` (or `open_clip`)
//! stage starts outlives the stage, nor a `tureen` killed with SIGKILL.
//!
//! A command's shell gets `PR_SET_PDEATHSIG`, but its children do not, and a child that
//! leaves the process group (`setsid`) escapes a group kill. So [`spawn`] puts a
//! supervisor process between `tureen` and the command, which
//! - is a child subreaper (`PR_SET_CHILD_SUBREAPER`): every orphaned descendant of the
//!   command becomes its child, wherever it moved to (other groups, sessions);
//! - gets SIGTERM when `tureen` dies (`PR_SET_PDEATHSIG`, set first thing; a parent
//!   that died before that is seen by `getppid`, and nothing is started);
//! - when the shell exits, or `tureen` dies, or a stop it was asked for runs past its
//!   grace period, kills the shell's process group and then every child it has until it
//!   has none left, and exits with the shell's status.
//!
//! Chosen over a cgroup (needs a delegated cgroup v2 subtree, which containers and
//! Slurm jobs rarely give) and a PID namespace (needs privileges or user namespaces):
//! it only needs Linux 3.5 (with `/proc/<pid>/task/<tid>/children`) and no rights. What it cannot catch: a process that
//! re-parents itself out of reach (none can: orphans always land on the nearest
//! subreaper) or ignores SIGKILL (none can), so the limit is a process in
//! uninterruptible sleep, which the supervisor waits for.
//!
//! The supervisor is a `fork` of the calling process that never `exec`s: starting a
//! program for it (this one again, as earlier versions did) cost a process start-up per
//! stage, which nearly doubled the time of a first run of a thousand small command
//! stages.
//! The price is discipline: the fork copies one thread of a multithreaded process, so
//! from the fork on the child makes only system calls, on memory prepared before it
//! (`Prepared`); it never allocates, locks, panics or returns into Rust's runtime.
//! The command itself is started from the supervisor with `clone(CLONE_VM |
//! CLONE_VFORK)`, as `posix_spawn` does, so its start copies no page tables. While a
//! command runs, its supervisor shares tureen's memory copy-on-write: pages tureen
//! writes in the meantime are copied, once each, which a long stage beside a busy
//! tureen pays in resident memory. The supervisor must not dump core either (it would
//! be a copy of tureen): one that re-raises a crash signal of its command first makes
//! itself non-dumpable.

use std::ffi::{CString, OsStr, OsString};
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::time::Duration;

/// How long the command gets between the forwarded SIGTERM and SIGKILL.
pub const GRACE: Duration = Duration::from_secs(5);

/// A supervised command: the supervisor's pid (also the process group it leads, which
/// holds only the supervisor) and the read ends of the command's stdout and stderr.
///
/// Sending SIGTERM to the group asks the supervisor to stop the command (SIGTERM to the
/// command's group, then, after [`GRACE`] or a second SIGTERM, SIGKILL to the tree).
#[derive(Debug)]
pub struct Supervised {
    pid: libc::pid_t,
    status: Option<ExitStatus>,
    /// The command's standard output (a pipe), until taken.
    pub stdout: Option<File>,
    /// The command's standard error (a pipe), until taken.
    pub stderr: Option<File>,
}

impl Supervised {
    /// The supervisor's process id, which is also its process group's.
    pub fn id(&self) -> u32 {
        self.pid as u32
    }

    /// The supervisor's exit status (the command's) if it has exited; reaps it.
    pub fn try_wait(&mut self) -> io::Result<Option<ExitStatus>> {
        self.reap(libc::WNOHANG)
    }

    /// Asks the supervisor to kill the command's whole tree now (two stop requests, the
    /// second of which means now) and waits for it.
    pub fn kill(&mut self) -> io::Result<ExitStatus> {
        let group = -self.pid;
        // SAFETY: signals the supervisor's own group (it is alone in it). Two different
        // signals, so that both count even if they arrive together.
        unsafe {
            libc::kill(group, libc::SIGTERM);
            libc::kill(group, libc::SIGHUP);
        }
        self.wait()
    }

    /// Waits for the supervisor to exit; its status is the command's.
    pub fn wait(&mut self) -> io::Result<ExitStatus> {
        loop {
            if let Some(status) = self.reap(0)? {
                return Ok(status);
            }
        }
    }

    fn reap(&mut self, flags: libc::c_int) -> io::Result<Option<ExitStatus>> {
        if self.status.is_none() {
            let mut raw = 0;
            // SAFETY: waits for our own child, writing its status to a local.
            match unsafe { libc::waitpid(self.pid, &mut raw, flags) } {
                0 => return Ok(None),
                -1 => {
                    let e = io::Error::last_os_error();
                    return if e.kind() == io::ErrorKind::Interrupted {
                        Ok(None)
                    } else {
                        Err(e)
                    };
                }
                _ => self.status = Some(ExitStatus::from_raw(raw)),
            }
        }
        Ok(self.status)
    }
}

/// Starts `command` (its program, arguments, environment and directory; stdin is
/// `/dev/null`, stdout and stderr are pipes) under a supervisor. Errors are those of
/// starting the program, as [`Command::spawn`] reports them. Nothing else of `command`
/// is used: not its stdio, `env_clear`, `pre_exec`, user or group settings.
pub fn spawn(command: &Command) -> io::Result<Supervised> {
    let mut prepared = Prepared::new(command)?;
    let null = open_cloexec(c"/dev/null")?;
    let (out_r, out_w) = pipe()?;
    let (err_r, err_w) = pipe()?;
    let (report_r, report_w) = pipe()?;
    let fds = ChildFds {
        stdin: null.as_raw_fd(),
        stdout: out_w.as_raw_fd(),
        stderr: err_w.as_raw_fd(),
        report: report_w.as_raw_fd(),
    };
    let pid = fork_supervisor(&mut prepared, &fds)?;
    drop((null, out_w, err_w, report_w));
    let mut child = Supervised {
        pid,
        status: None,
        stdout: Some(File::from(out_r)),
        stderr: Some(File::from(err_r)),
    };
    // The supervisor closes its end once the command has been exec'd, or writes the
    // errno of what failed first.
    let mut errno = [0u8; 4];
    match read_full(&File::from(report_r), &mut errno) {
        Ok(0) => Ok(child),
        Ok(_) => {
            let _ = child.wait();
            Err(io::Error::from_raw_os_error(i32::from_ne_bytes(errno)))
        }
        Err(e) => {
            let _ = child.wait();
            Err(e)
        }
    }
}

/// Everything the child side needs, allocated before the fork.
struct Prepared {
    program: CString,
    /// Kept alive for `argv`'s pointers.
    _args: Vec<CString>,
    argv: Vec<*const libc::c_char>,
    _env: Vec<CString>,
    envp: Vec<*const libc::c_char>,
    cwd: Option<CString>,
    parent: libc::pid_t,
    /// The stack the command's `clone` runs on until it `exec`s.
    stack: Vec<u8>,
}

impl Prepared {
    fn new(command: &Command) -> io::Result<Prepared> {
        let env = environment(command);
        let path = env
            .iter()
            .find(|(k, _)| k == "PATH")
            .map(|(_, v)| v.clone());
        let cwd = command.get_current_dir().map(Path::to_path_buf);
        let program = resolve(command.get_program(), path.as_deref(), cwd.as_deref())?;
        let args: Vec<CString> = std::iter::once(command.get_program())
            .chain(command.get_args())
            .map(|a| cstring(a.as_bytes()))
            .collect::<io::Result<_>>()?;
        let env: Vec<CString> = env
            .iter()
            .map(|(k, v)| cstring(&[k.as_bytes(), b"=", v.as_bytes()].concat()))
            .collect::<io::Result<_>>()?;
        Ok(Prepared {
            program: cstring(program.as_os_str().as_bytes())?,
            argv: null_terminated(&args),
            _args: args,
            envp: null_terminated(&env),
            _env: env,
            cwd: cwd.map(|d| cstring(d.as_os_str().as_bytes())).transpose()?,
            // SAFETY: getpid cannot fail.
            parent: unsafe { libc::getpid() },
            stack: vec![0; 64 * 1024],
        })
    }
}

/// This process's environment with the command's changes applied.
fn environment(command: &Command) -> Vec<(OsString, OsString)> {
    let mut env: std::collections::BTreeMap<OsString, OsString> = std::env::vars_os().collect();
    for (k, v) in command.get_envs() {
        match v {
            Some(v) => env.insert(k.to_owned(), v.to_owned()),
            None => env.remove(k),
        };
    }
    env.into_iter().collect()
}

/// The file `program` names: itself if it has a `/` (the exec, after the `chdir` to
/// `cwd`, resolves a relative one there), else the first executable of that name on
/// `path`, searched as `execvp` would from `cwd`, as an absolute path.
fn resolve(program: &OsStr, path: Option<&OsStr>, cwd: Option<&Path>) -> io::Result<PathBuf> {
    if program.as_bytes().contains(&b'/') {
        return Ok(PathBuf::from(program));
    }
    let path = path.unwrap_or(OsStr::new("/usr/local/bin:/usr/bin:/bin"));
    std::env::split_paths(path)
        .map(|dir| match cwd {
            Some(cwd) if dir.is_relative() => cwd.join(dir).join(program),
            _ => dir.join(program),
        })
        .find(|candidate| is_executable(candidate))
        .map(std::path::absolute)
        .unwrap_or_else(|| Err(io::Error::from_raw_os_error(libc::ENOENT)))
}

fn is_executable(path: &Path) -> bool {
    let Ok(c) = CString::new(path.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: access reads a NUL-terminated path.
    path.is_file() && unsafe { libc::access(c.as_ptr(), libc::X_OK) } == 0
}

fn cstring(bytes: &[u8]) -> io::Result<CString> {
    CString::new(bytes).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            "an argument or variable holds a NUL byte",
        )
    })
}

fn null_terminated(strings: &[CString]) -> Vec<*const libc::c_char> {
    strings
        .iter()
        .map(|s| s.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect()
}

fn open_cloexec(path: &std::ffi::CStr) -> io::Result<OwnedFd> {
    // SAFETY: opens a path; the descriptor is owned by the result.
    let fd = unsafe { libc::open(path.as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a descriptor we just opened.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 fills two descriptors, which the results own.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both were just created.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Reads until `buf` is full or end-of-file; returns how much was read.
fn read_full(file: &File, buf: &mut [u8]) -> io::Result<usize> {
    use std::io::Read as _;
    let mut done = 0;
    let mut file = file;
    while done < buf.len() {
        match file.read(&mut buf[done..]) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

/// The descriptors the supervisor is handed (all close-on-exec in this process).
struct ChildFds {
    stdin: RawFd,
    stdout: RawFd,
    stderr: RawFd,
    report: RawFd,
}

/// Forks; in the child, becomes the supervisor and never returns.
fn fork_supervisor(prepared: &mut Prepared, fds: &ChildFds) -> io::Result<libc::pid_t> {
    // Every signal stays blocked in the child until it chooses its mask, so that none of
    // this process's handlers runs there (they would write to this process's pipes).
    // SAFETY: sigfillset fills a local set; pthread_sigmask swaps this thread's mask.
    let saved = unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        let mut saved: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut saved);
        saved
    };
    // SAFETY: the child runs only `child::supervise`, which keeps to system calls on
    // memory prepared before this point (see the module docs).
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        // SAFETY: in the child, right after the fork.
        unsafe { child::supervise(prepared, fds) }
    }
    let fork_error = io::Error::last_os_error();
    // SAFETY: restores this thread's mask.
    unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &saved, std::ptr::null_mut()) };
    if pid < 0 {
        return Err(fork_error);
    }
    Ok(pid)
}

/// The supervisor: code that runs in the forked child only. Nothing here allocates,
/// takes a lock, or can panic; every call is a system call or arithmetic on locals.
mod child {
    use super::{ChildFds, Prepared, GRACE};

    /// Where the supervisor's descriptors go: stdio at 0-2, the report pipe at 3.
    const REPORT_FD: libc::c_int = 3;

    /// Sets up, starts the command, supervises it, and exits like it.
    ///
    /// # Safety
    /// Only in the child of a fork, with `prepared`/`fds` as the parent made them.
    pub(super) unsafe fn supervise(prepared: &mut Prepared, fds: &ChildFds) -> ! {
        libc::setpgid(0, 0);
        libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1);
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
        if libc::getppid() != prepared.parent {
            libc::_exit(1); // tureen died before we started anything
        }
        reset_handlers();
        // Ignored, it would reap the command behind our back (and never tell us).
        libc::signal(libc::SIGCHLD, libc::SIG_DFL);
        if let Err(errno) = place_descriptors(fds) {
            report_and_exit(fds.report, errno);
        }
        if let Some(dir) = &prepared.cwd {
            if libc::chdir(dir.as_ptr()) != 0 {
                report_and_exit(REPORT_FD, errno());
            }
        }
        let watched = watched();
        libc::sigprocmask(libc::SIG_SETMASK, &watched, std::ptr::null_mut());
        let shell = match start_command(prepared) {
            Ok(pid) => pid,
            Err(e) => report_and_exit(REPORT_FD, e),
        };
        libc::close(REPORT_FD); // end-of-file: the command is running
        release_output();
        let status = wait_for(shell, prepared.parent, &watched);
        exit_like(status)
    }

    fn errno() -> libc::c_int {
        // SAFETY: reads this thread's errno.
        unsafe { *libc::__errno_location() }
    }

    unsafe fn report_and_exit(fd: libc::c_int, errno: libc::c_int) -> ! {
        let bytes = errno.to_ne_bytes();
        libc::write(fd, bytes.as_ptr().cast(), bytes.len());
        libc::_exit(127)
    }

    /// Every signal this process caught goes back to its default action (ignored ones
    /// stay ignored, as across an exec).
    unsafe fn reset_handlers() {
        for sig in 1..=libc::SIGRTMAX() {
            let mut old: libc::sigaction = std::mem::zeroed();
            if libc::sigaction(sig, std::ptr::null(), &mut old) == 0
                && old.sa_sigaction != libc::SIG_DFL
                && old.sa_sigaction != libc::SIG_IGN
            {
                libc::signal(sig, libc::SIG_DFL);
            }
        }
    }

    /// stdin, stdout, stderr at 0, 1, 2 and the report pipe at 3 (close-on-exec);
    /// every other descriptor of the parent closed, so that no pipe or lock of another
    /// stage stays open here.
    unsafe fn place_descriptors(fds: &ChildFds) -> Result<(), libc::c_int> {
        // Out of the way of 0-3 first, in case one of them already sits there.
        let mut moved = [0; 4];
        for (slot, fd) in moved
            .iter_mut()
            .zip([fds.stdin, fds.stdout, fds.stderr, fds.report])
        {
            *slot = libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 10);
            if *slot < 0 {
                return Err(errno());
            }
        }
        for (target, fd) in [0, 1, 2].into_iter().zip(moved) {
            if libc::dup2(fd, target) < 0 {
                return Err(errno());
            }
        }
        if libc::dup3(moved[3], REPORT_FD, libc::O_CLOEXEC) < 0 {
            return Err(errno());
        }
        close_from(REPORT_FD + 1);
        Ok(())
    }

    unsafe fn close_from(first: libc::c_int) {
        if libc::syscall(
            libc::SYS_close_range,
            first as libc::c_uint,
            libc::c_uint::MAX,
            0,
        ) == 0
        {
            return;
        }
        // Before Linux 5.9: one by one, up to the descriptor limit.
        let mut limit: libc::rlimit = std::mem::zeroed();
        let last = if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 {
            limit.rlim_cur.min(1 << 20) as libc::c_int
        } else {
            1024
        };
        for fd in first..last {
            libc::close(fd);
        }
    }

    /// The signals the supervisor waits for instead of being killed by.
    fn watched() -> libc::sigset_t {
        // SAFETY: sigemptyset/sigaddset initialise and fill a local set.
        unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            for s in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP, libc::SIGCHLD] {
                libc::sigaddset(&mut set, s);
            }
            set
        }
    }

    /// What the command's clone reads, and writes back if its exec fails.
    struct Start<'a> {
        prepared: &'a Prepared,
        supervisor: libc::pid_t,
        exec_errno: libc::c_int,
    }

    /// Starts the command in a process group of its own; returns its pid, or the errno
    /// of the clone or the exec.
    unsafe fn start_command(prepared: &mut Prepared) -> Result<libc::pid_t, libc::c_int> {
        let stack = prepared.stack.as_mut_ptr().add(prepared.stack.len()) as usize & !15;
        let mut start = Start {
            prepared,
            supervisor: libc::getpid(),
            exec_errno: 0,
        };
        // CLONE_VFORK: we resume once the command has exec'd or exited, and the clone
        // shares our memory until then, so `start.exec_errno` is its answer.
        let pid = libc::clone(
            exec_command,
            stack as *mut libc::c_void,
            libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
            (&mut start as *mut Start).cast(),
        );
        if pid < 0 {
            return Err(errno());
        }
        if start.exec_errno != 0 {
            let mut status = 0;
            libc::waitpid(pid, &mut status, 0);
            return Err(start.exec_errno);
        }
        Ok(pid)
    }

    /// The command's side of the clone: its own group, no blocked signals, SIGPIPE as
    /// a shell expects it, death with the supervisor; then exec.
    extern "C" fn exec_command(arg: *mut libc::c_void) -> libc::c_int {
        // SAFETY: `arg` is the supervisor's `Start`, alive until we exec or exit.
        unsafe {
            let start = &mut *(arg as *mut Start);
            let mut empty: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut empty);
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
            libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
            libc::setpgid(0, 0);
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            if libc::getppid() != start.supervisor {
                libc::_exit(127); // the supervisor died before the death signal was set
            }
            libc::execve(
                start.prepared.program.as_ptr(),
                start.prepared.argv.as_ptr(),
                start.prepared.envp.as_ptr(),
            );
            start.exec_errno = errno();
            libc::_exit(127)
        }
    }

    /// Our copies of the stage's stdout/stderr would keep its pipes open after the
    /// command's own processes are gone: /dev/null (our stdin) takes their place.
    unsafe fn release_output() {
        libc::dup2(0, 1);
        libc::dup2(0, 2);
    }

    /// Waits for the shell; stops the tree as described in the module docs. Returns the
    /// shell's raw wait status.
    unsafe fn wait_for(
        shell: libc::pid_t,
        parent: libc::pid_t,
        set: &libc::sigset_t,
    ) -> libc::c_int {
        let mut deadline: Option<libc::time_t> = None;
        loop {
            if let Some(status) = reap(shell) {
                kill_tree(shell);
                return status;
            }
            if deadline.is_some_and(|d| monotonic_secs() >= d) {
                return kill_tree(shell).unwrap_or(libc::SIGKILL);
            }
            let timeout = libc::timespec {
                tv_sec: 0,
                tv_nsec: 200_000_000,
            };
            let sig = libc::sigtimedwait(set, std::ptr::null_mut(), &timeout);
            if sig == libc::SIGTERM || sig == libc::SIGINT || sig == libc::SIGHUP {
                let orphaned = libc::getppid() != parent;
                if orphaned || deadline.is_some() {
                    return kill_tree(shell).unwrap_or(libc::SIGKILL);
                }
                libc::kill(-shell, libc::SIGTERM);
                deadline = Some(monotonic_secs().saturating_add(GRACE.as_secs() as libc::time_t));
            }
        }
    }

    /// Seconds on the monotonic clock (std's `Instant` may panic, in theory).
    fn monotonic_secs() -> libc::time_t {
        let mut now = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: writes the time into a local.
        unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) };
        now.tv_sec
    }

    /// Reaps every child that has exited; returns the shell's status if it was among
    /// them.
    unsafe fn reap(shell: libc::pid_t) -> Option<libc::c_int> {
        let mut found = None;
        loop {
            let mut status = 0;
            let pid = libc::waitpid(-1, &mut status, libc::WNOHANG);
            if pid <= 0 {
                return found;
            }
            if pid == shell {
                found = Some(status);
            }
        }
    }

    /// SIGKILLs the shell's group, then every child (orphans land here) until none is
    /// left. Returns the shell's status if it was reaped here.
    unsafe fn kill_tree(shell: libc::pid_t) -> Option<libc::c_int> {
        let mut shell_status = None;
        libc::kill(-shell, libc::SIGKILL);
        loop {
            kill_children();
            let mut status = 0;
            let pid = libc::waitpid(-1, &mut status, 0);
            if pid < 0 {
                return shell_status; // ECHILD: nothing is left
            }
            if pid == shell {
                shell_status = Some(status);
            }
        }
    }

    /// SIGKILLs our current children, as /proc lists them (as many as one read holds;
    /// the caller's loop comes back for the rest).
    unsafe fn kill_children() {
        // `/proc/self/task/<our pid>/children`: we have one thread, whose id is our pid.
        let mut path = [0u8; 64];
        let mut len = 0;
        let mut push = |bytes: &[u8]| {
            for &b in bytes {
                if let Some(slot) = path.get_mut(len) {
                    *slot = b;
                    len += 1;
                }
            }
        };
        push(b"/proc/self/task/");
        let mut digits = [0u8; 12];
        let mut n = libc::getpid().unsigned_abs();
        let mut first = digits.len();
        loop {
            first -= 1;
            digits[first] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 || first == 0 {
                break;
            }
        }
        push(&digits[first..]);
        push(b"/children\0");
        let fd = libc::open(path.as_ptr().cast(), libc::O_RDONLY | libc::O_CLOEXEC);
        if fd < 0 {
            return;
        }
        let mut buf = [0u8; 4096];
        let n = libc::read(fd, buf.as_mut_ptr().cast(), buf.len());
        libc::close(fd);
        // Each pid is followed by a space: one cut off at the end of the read is left
        // for the next pass, never killed as a shorter number.
        let mut pid: libc::pid_t = 0;
        for &b in buf.iter().take(n.max(0) as usize) {
            if b.is_ascii_digit() {
                pid = pid
                    .saturating_mul(10)
                    .saturating_add((b - b'0') as libc::pid_t);
            } else {
                if pid > 0 {
                    libc::kill(pid, libc::SIGKILL);
                }
                pid = 0;
            }
        }
    }

    /// Ends this process the way the shell ended: its exit code, or its signal.
    unsafe fn exit_like(status: libc::c_int) -> ! {
        if libc::WIFEXITED(status) {
            libc::_exit(libc::WEXITSTATUS(status));
        }
        let sig = if libc::WIFSIGNALED(status) {
            libc::WTERMSIG(status)
        } else {
            libc::SIGKILL
        };
        // A command that crashed dumps its own core; its supervisor, a copy of tureen,
        // must not dump another.
        libc::prctl(libc::PR_SET_DUMPABLE, 0);
        let no_core = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        libc::setrlimit(libc::RLIMIT_CORE, &no_core);
        libc::signal(sig, libc::SIG_DFL);
        let mut only: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut only);
        libc::sigaddset(&mut only, sig);
        libc::sigprocmask(libc::SIG_UNBLOCK, &only, std::ptr::null_mut());
        libc::kill(libc::getpid(), sig);
        libc::_exit(128 + sig)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read as _;
    use std::time::Instant;

    fn output(child: &mut Supervised) -> (String, String) {
        let mut out = String::new();
        let mut err = String::new();
        child
            .stdout
            .take()
            .unwrap()
            .read_to_string(&mut out)
            .unwrap();
        child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut err)
            .unwrap();
        (out, err)
    }

    #[test]
    fn a_supervised_command_gets_its_arguments_environment_and_directory() {
        let dir = std::env::temp_dir();
        let mut command = Command::new("sh");
        command
            .args([
                "-c",
                "echo \"$0 $GREETING $(pwd)\"; echo oops >&2; exit 3",
                "zero",
            ])
            .env("GREETING", "hello")
            .current_dir(&dir);
        let mut child = spawn(&command).unwrap();
        let (out, err) = output(&mut child);
        let dir = dir.canonicalize().unwrap();
        assert_eq!(out.trim(), format!("zero hello {}", dir.display()));
        assert_eq!(err.trim(), "oops");
        assert_eq!(child.wait().unwrap().code(), Some(3));
    }

    #[test]
    fn a_command_killed_by_a_signal_is_reported_as_killed_by_it() {
        let mut child = spawn(Command::new("sh").args(["-c", "kill -USR1 $$"])).unwrap();
        assert_eq!(child.wait().unwrap().signal(), Some(libc::SIGUSR1));
    }

    #[test]
    fn a_program_that_cannot_start_is_an_error_of_spawn() {
        let missing = spawn(&Command::new("tureen-no-such-program")).unwrap_err();
        assert_eq!(missing.kind(), io::ErrorKind::NotFound);
        let not_a_dir = spawn(Command::new("true").current_dir("/no/such/dir")).unwrap_err();
        assert_eq!(not_a_dir.raw_os_error(), Some(libc::ENOENT));
        let text = std::env::temp_dir().join(format!("tureen-not-exec-{}", std::process::id()));
        std::fs::write(&text, "x").unwrap();
        let not_exec = spawn(&Command::new(&text)).unwrap_err();
        std::fs::remove_file(&text).unwrap();
        assert_eq!(not_exec.raw_os_error(), Some(libc::EACCES));
    }

    /// Whether a live process has `marker` in its command line.
    fn processes_with(marker: &str) -> bool {
        std::fs::read_dir("/proc")
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
            .any(|pid| {
                let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
                let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
                String::from_utf8_lossy(&cmd).contains(marker) && !stat.contains(") Z ")
            })
    }

    #[test]
    fn nothing_the_command_started_outlives_it() {
        let marker = format!("tureen-supervisor-test-{}", std::process::id());
        let script =
            format!("sh -c 'sleep 300' {marker}-bg & setsid sh -c 'sleep 300' {marker}-s &");
        let mut child = spawn(Command::new("sh").args(["-c", &script])).unwrap();
        assert!(child.wait().unwrap().success());
        assert!(!processes_with(&marker));
    }

    #[test]
    fn kill_takes_the_whole_tree_at_once() {
        let marker = format!("tureen-supervisor-kill-{}", std::process::id());
        let script = format!("trap '' TERM; setsid sh -c 'sleep 300' {marker} & sleep 300");
        let mut child = spawn(Command::new("sh").args(["-c", &script])).unwrap();
        std::thread::sleep(Duration::from_millis(200));
        let started = Instant::now();
        assert_eq!(child.kill().unwrap().signal(), Some(libc::SIGKILL));
        assert!(started.elapsed() < GRACE, "no grace period for a kill");
        assert!(!processes_with(&marker), "the tree went with it");
    }

    #[test]
    fn sigterm_to_the_supervisor_stops_the_command() {
        let mut child = spawn(Command::new("sh").args(["-c", "exec sleep 300"])).unwrap();
        // SAFETY: signals the supervisor's own group.
        unsafe { libc::kill(-(child.id() as libc::pid_t), libc::SIGTERM) };
        let started = Instant::now();
        assert_eq!(child.wait().unwrap().signal(), Some(libc::SIGTERM));
        assert!(started.elapsed() < GRACE);
    }
}
