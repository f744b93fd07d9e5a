//! The supervisor of a `command` stage's process tree: no process of a stage outlives
//! the stage, nor a `tureen` killed with SIGKILL.
//!
//! A command's shell gets `PR_SET_PDEATHSIG`, but its children do not, and a child that
//! leaves the process group (`setsid`) escapes a group kill. So `tureen` runs each
//! command under a supervisor, itself again (`tureen __tureen-supervise --parent PID --
//! /bin/sh -c ...`), which
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
//! it only needs Linux 3.4 and no rights. What it cannot catch: a process that
//! re-parents itself out of reach (none can: orphans always land on the nearest
//! subreaper) or ignores SIGKILL (none can), so the limit is a process in
//! uninterruptible sleep, which the supervisor waits for.

use std::ffi::OsString;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// The first argument that makes a program that called [`run_if_requested`] a supervisor.
pub const ARG: &str = "__tureen-supervise";

/// How long the command gets between the forwarded SIGTERM and SIGKILL.
pub const GRACE: Duration = Duration::from_secs(5);

static AVAILABLE: AtomicBool = AtomicBool::new(false);

/// First thing in `main` of a program that runs command stages: when started as a
/// supervisor, supervises and exits; otherwise notes that this program can supervise
/// (its own executable is then used for each command stage).
pub fn run_if_requested() {
    let mut args = std::env::args_os().skip(1);
    if args.next().as_deref() != Some(std::ffi::OsStr::new(ARG)) {
        AVAILABLE.store(true, Ordering::Relaxed);
        return;
    }
    let rest: Vec<OsString> = args.collect();
    let code = match parse(&rest) {
        Some((parent, program, argv)) => supervise(parent, program, argv),
        None => {
            eprintln!("usage: {ARG} --parent PID -- PROGRAM [ARGS...]");
            2
        }
    };
    std::process::exit(code);
}

/// Whether the running program supervises commands (it called [`run_if_requested`]).
pub fn available() -> bool {
    AVAILABLE.load(Ordering::Relaxed)
}

fn parse(args: &[OsString]) -> Option<(libc::pid_t, &OsString, &[OsString])> {
    match args {
        [flag, pid, sep, program, argv @ ..] if flag == "--parent" && sep == "--" => {
            Some((pid.to_str()?.parse().ok()?, program, argv))
        }
        _ => None,
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

fn supervise(parent: libc::pid_t, program: &OsString, argv: &[OsString]) -> i32 {
    let set = watched();
    // SAFETY: process-wide settings of this single-threaded process.
    unsafe {
        libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1);
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        if libc::getppid() != parent {
            return 1; // tureen died before we started anything
        }
    }
    let mut command = Command::new(program);
    command.args(argv).process_group(0);
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        command.pre_exec(|| {
            let empty = {
                let mut s: libc::sigset_t = std::mem::zeroed();
                libc::sigemptyset(&mut s);
                s
            };
            libc::pthread_sigmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    let child = match command.spawn() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("cannot start {}: {e}", program.to_string_lossy());
            return 127;
        }
    };
    let shell = child.id() as libc::pid_t;
    std::mem::forget(child); // reaped below with waitpid
    release_output();
    let status = wait_for(shell, parent, &set);
    exit_like(status)
}

/// Our copies of the stage's stdout/stderr would keep its pipes open after the
/// command's own processes are gone.
fn release_output() {
    // SAFETY: plain descriptor calls on our own descriptors.
    unsafe {
        let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
        if null >= 0 {
            libc::dup2(null, 1);
            libc::dup2(null, 2);
            libc::close(null);
        }
    }
}

/// Waits for the shell; stops the tree as described in the module docs. Returns the
/// shell's raw wait status.
fn wait_for(shell: libc::pid_t, parent: libc::pid_t, set: &libc::sigset_t) -> libc::c_int {
    let mut deadline: Option<Instant> = None;
    loop {
        if let Some(status) = reap(shell) {
            kill_tree(shell);
            return status;
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return kill_tree(shell).unwrap_or(libc::SIGKILL);
        }
        let timeout = libc::timespec {
            tv_sec: 0,
            tv_nsec: 200_000_000,
        };
        // SAFETY: waits for one of the blocked signals in `set`.
        let sig = unsafe { libc::sigtimedwait(set, std::ptr::null_mut(), &timeout) };
        if sig == libc::SIGTERM || sig == libc::SIGINT || sig == libc::SIGHUP {
            // SAFETY: getppid cannot fail; kill signals the shell's own group.
            let orphaned = unsafe { libc::getppid() } != parent;
            if orphaned || deadline.is_some() {
                return kill_tree(shell).unwrap_or(libc::SIGKILL);
            }
            unsafe { libc::kill(-shell, libc::SIGTERM) };
            deadline = Some(Instant::now() + GRACE);
        }
    }
}

/// Reaps every child that has exited; returns the shell's status if it was among them.
fn reap(shell: libc::pid_t) -> Option<libc::c_int> {
    let mut found = None;
    loop {
        let mut status = 0;
        // SAFETY: waitpid on our own children, without blocking.
        let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
        if pid <= 0 {
            return found;
        }
        if pid == shell {
            found = Some(status);
        }
    }
}

/// SIGKILLs the shell's group, then every child (orphans land here) until none is left.
/// Returns the shell's status if it was reaped here.
fn kill_tree(shell: libc::pid_t) -> Option<libc::c_int> {
    let mut shell_status = None;
    // SAFETY: signals the shell's own process group.
    unsafe { libc::kill(-shell, libc::SIGKILL) };
    loop {
        for pid in children() {
            // SAFETY: signals our own child.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        let mut status = 0;
        // SAFETY: blocking waitpid on our own children.
        let pid = unsafe { libc::waitpid(-1, &mut status, 0) };
        if pid < 0 {
            return shell_status; // ECHILD: nothing is left
        }
        if pid == shell {
            shell_status = Some(status);
        }
    }
}

/// Our current children, from /proc.
fn children() -> Vec<libc::pid_t> {
    let me = std::process::id();
    std::fs::read_to_string(format!("/proc/{me}/task/{me}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

/// Ends this process the way the shell ended: its exit code, or its signal.
fn exit_like(status: libc::c_int) -> i32 {
    let status = std::process::ExitStatus::from_raw(status);
    if let Some(code) = status.code() {
        return code;
    }
    let sig = status.signal().unwrap_or(libc::SIGKILL);
    // SAFETY: default disposition, unblocked, then the same signal to ourselves.
    unsafe {
        libc::signal(sig, libc::SIG_DFL);
        let mut only: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut only);
        libc::sigaddset(&mut only, sig);
        libc::pthread_sigmask(libc::SIG_UNBLOCK, &only, std::ptr::null_mut());
        libc::kill(libc::getpid(), sig);
    }
    128 + sig
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_supervisor_command_line_is_parent_then_program() {
        let args: Vec<OsString> = ["--parent", "42", "--", "/bin/sh", "-c", "true"]
            .map(OsString::from)
            .to_vec();
        let (parent, program, argv) = parse(&args).unwrap();
        assert_eq!((parent, program.to_str().unwrap()), (42, "/bin/sh"));
        assert_eq!(argv.len(), 2);
        assert!(parse(&args[1..]).is_none());
    }
}
