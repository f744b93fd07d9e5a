//! `kind: command`: runs a shell command, like a DVC stage.
//!
//! ```yaml
//! prepare:
//!   kind: command
//!   cmd: python3 prep.py --seed ${params.seed} --in ${inputs.raw} --out ${outs.table}
//!   inputs: {raw: data/raw.csv}
//!   outs: {table: build/table.csv}
//! ```
//!
//! The command runs with `sh -c` in the pipeline's directory, in its own process group
//! (Ctrl-C stops the whole group: SIGTERM, then SIGKILL after a grace period). Its
//! stdout and stderr go to the stage log. `${inputs.NAME}` becomes the input's path
//! (several paths, space-separated, for a series) and `${outs.NAME}` the output's path;
//! `$${` is a literal `${`. Declared `outs` are removed before the command starts (so a
//! command never writes through a file restored from the cache) and must exist when it
//! exits 0. The environment gets the stage's declared `env`, `TUREEN` (this tureen
//! binary, whose directory is also put first on `PATH`), `TUREEN_STAGE`,
//! `TUREEN_WORK_DIR` (a scratch directory removed afterwards) and
//! `CUDA_VISIBLE_DEVICES` (the GPUs the scheduler handed out; empty for a stage that
//! asked for none). The command runs under a [`super::supervisor`]: when the shell
//! exits, whatever it left running is killed, and a `tureen` killed with SIGKILL takes
//! the command's whole process tree with it.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read};
use std::os::unix::process::ExitStatusExt;
use std::path::{Component, Path};
use std::process::Command;
use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde_json::Value;
use tureen_engine::kind::{
    InputValue, OutputDecl, OutputShape, ParamError, Produced, StageContext, StageDecl, StageKind,
    StageWork,
};
use tureen_engine::subst;

use super::supervisor::{self, Supervised};

/// How long a cancelled command gets between SIGTERM and SIGKILL.
const GRACE: Duration = Duration::from_secs(5);

/// The name of the kind in pipeline files.
pub const NAME: &str = "command";

/// The `command` kind: a shell command with declared inputs and outputs, run in `tureen`
/// itself (see the module docs).
pub struct CommandKind;

const PARAMS: &[&str] = &["cmd", "outs"];

/// `outs` as (output name, path): a mapping names them; in a list each path is its
/// own name.
fn outs(params: &serde_json::Map<String, Value>) -> Result<Vec<(String, String)>, ParamError> {
    let err = |m: String| ParamError::stage_key("outs", m);
    match params.get("outs") {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| {
                v.as_str()
                    .map(|s| (s.to_string(), s.to_string()))
                    .ok_or_else(|| err("every entry must be a path (a string)".to_string()))
            })
            .collect(),
        Some(Value::Object(map)) => map
            .iter()
            .map(|(k, v)| {
                v.as_str()
                    .map(|s| (k.clone(), s.to_string()))
                    .ok_or_else(|| err(format!("`{k}` must be a path (a string)")))
            })
            .collect(),
        Some(Value::String(s)) => Ok(vec![(s.clone(), s.clone())]),
        Some(_) => Err(err(
            "expected a list of paths or a mapping of name to path".to_string()
        )),
    }
}

fn cmd_text(params: &serde_json::Map<String, Value>) -> Result<String, ParamError> {
    let err = |m: &str| ParamError::stage_key("cmd", m);
    match params.get("cmd") {
        Some(Value::String(s)) if !s.trim().is_empty() => Ok(s.clone()),
        // A list runs its commands in order, stopping at the first failure.
        Some(Value::Array(items)) if !items.is_empty() => items
            .iter()
            .map(|v| {
                v.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| err("every entry of the list must be a string"))
            })
            .collect::<Result<Vec<_>, _>>()
            .map(|v| format!("set -e\n{}", v.join("\n"))),
        Some(_) => Err(err(
            "expected a non-empty command string (or a list of them)",
        )),
        None => Err(err("missing (the shell command to run)")),
    }
}

fn check_out_path(path: &str) -> Result<(), ParamError> {
    let err = |m: String| Err(ParamError::stage_key("outs", m));
    let p = Path::new(path);
    if path.trim().is_empty() {
        return err("empty path".to_string());
    }
    if p.is_absolute() {
        return err(format!(
            "`{path}` must be relative to the pipeline's directory"
        ));
    }
    if p.components().any(|c| matches!(c, Component::ParentDir)) {
        return err(format!(
            "`{path}` must stay inside the pipeline's directory (no `..`)"
        ));
    }
    if subst::has_vars(path) {
        return err(format!(
            "`{path}` may only use `${{params...}}`/`${{item...}}`"
        ));
    }
    Ok(())
}

impl StageKind for CommandKind {
    fn name(&self) -> &'static str {
        NAME
    }

    fn code_version(&self) -> &'static str {
        "1"
    }

    fn validate(&self, decl: &StageDecl<'_>) -> Result<(), ParamError> {
        for key in decl.params.keys() {
            if !PARAMS.contains(&key.as_str()) {
                return Err(ParamError::param(key.as_str(), "unknown param for a command stage (it takes `cmd` and `outs`; use `${params.NAME}` in `cmd` for values)"));
            }
        }
        let cmd = cmd_text(decl.params)?;
        let outs = outs(decl.params)?;
        for (name, path) in &outs {
            check_out_path(path)?;
            if name.is_empty() {
                return Err(ParamError::stage_key("outs", "empty output name"));
            }
        }
        // Every `${inputs.x}` / `${outs.y}` must name something declared.
        let cmd_err = |m: String| ParamError::stage_key("cmd", m);
        let pieces = subst::parse(&cmd).map_err(cmd_err)?;
        for piece in pieces {
            if let subst::Piece::Var(v) = piece {
                match v.split_once('.') {
                    Some(("inputs", name)) if !decl.input_names.contains(&name) => {
                        return Err(cmd_err(format!(
                            "`${{{v}}}`: the stage has no input `{name}` (declared: {})",
                            list(&decl.input_names)
                        )));
                    }
                    Some(("outs", name)) if !outs.iter().any(|(n, _)| n == name) => {
                        let names: Vec<&str> = outs.iter().map(|(n, _)| n.as_str()).collect();
                        return Err(cmd_err(format!(
                            "`${{{v}}}`: the stage has no out `{name}` (declared: {})",
                            list(&names)
                        )));
                    }
                    _ => {}
                }
            }
        }
        Ok(())
    }

    fn outputs(&self, decl: &StageDecl<'_>) -> Vec<OutputDecl> {
        outs(decl.params)
            .unwrap_or_default()
            .into_iter()
            .map(|(name, _)| OutputDecl {
                name,
                shape: OutputShape::One,
                len: None,
            })
            .collect()
    }

    fn stage_keys(&self) -> &'static [&'static str] {
        PARAMS
    }

    fn workspace_paths(&self, decl: &StageDecl<'_>) -> Vec<(String, String)> {
        outs(decl.params).unwrap_or_default()
    }
}

impl StageWork for CommandKind {
    fn run(&self, ctx: &mut StageContext<'_>) -> anyhow::Result<BTreeMap<String, Produced>> {
        let template = cmd_text(ctx.params)?;
        let outs = outs(ctx.params)?;
        let script = subst::render(&template, |var| match var.split_once('.') {
            Some(("inputs", name)) => match ctx.inputs.get(name) {
                Some(InputValue::One(a)) => Ok(Some(shell_quote(&a.path.to_string_lossy()))),
                Some(InputValue::Series(items)) => Ok(Some(
                    items
                        .iter()
                        .map(|a| shell_quote(&a.path.to_string_lossy()))
                        .collect::<Vec<_>>()
                        .join(" "),
                )),
                None => Err(format!("no input `{name}`")),
            },
            Some(("outs", name)) => match outs.iter().find(|(n, _)| n == name) {
                Some((_, path)) => Ok(Some(shell_quote(path))),
                None => Err(format!("no out `{name}`")),
            },
            _ => Err(format!("`${{{var}}}` was not substituted")),
        })
        .map_err(anyhow::Error::msg)?;

        // Outputs are recreated by the command: never let it write through a restored
        // file (which may share storage with the store).
        for (_, rel) in &outs {
            let path = ctx.workspace.join(rel);
            tureen_artifacts::fsutil::remove_all(&path)
                .with_context(|| format!("cannot remove the old output {}", path.display()))?;
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent)
                    .with_context(|| format!("cannot create {}", parent.display()))?;
            }
        }

        ctx.log.line(&format!("$ {}", script.replace('\n', "\n$ ")));
        let exe = std::env::current_exe().ok();
        let mut command = Command::new("/bin/sh");
        command.arg("-c").arg(&script).current_dir(ctx.workspace);
        command.envs(ctx.env.iter());
        if let Some(exe) = &exe {
            command.env("TUREEN", exe);
            if let Some(dir) = exe.parent() {
                let path = std::env::var_os("PATH").unwrap_or_default();
                let mut dirs = vec![dir.to_path_buf()];
                dirs.extend(std::env::split_paths(&path));
                if let Ok(joined) = std::env::join_paths(dirs) {
                    command.env("PATH", joined);
                }
            }
        }
        command.env("TUREEN_STAGE", ctx.stage);
        command.env("TUREEN_WORK_DIR", ctx.work_dir);
        command.env(
            "CUDA_VISIBLE_DEVICES",
            ctx.gpus
                .iter()
                .map(u32::to_string)
                .collect::<Vec<_>>()
                .join(","),
        );
        let mut child = supervisor::spawn(&command).context("cannot start /bin/sh")?;
        let status = supervise(&mut child, ctx, &mut |_| Ok(()))?;

        if !status.success() {
            if let Some(sig) = status.signal() {
                anyhow::bail!("command killed by signal {sig}");
            }
            anyhow::bail!("command exited with status {}", status.code().unwrap_or(-1));
        }
        let mut produced = BTreeMap::new();
        for (name, rel) in outs {
            let path = ctx.workspace.join(&rel);
            if !path.exists() {
                anyhow::bail!("the command succeeded but did not create its out `{rel}`");
            }
            produced.insert(name, Produced::Path(path));
        }
        Ok(produced)
    }
}

/// Forwards output lines to the log until the supervised command exits; on cancel,
/// has its supervisor stop it: SIGTERM, a second SIGTERM (now) after [`GRACE`], and
/// SIGKILL only if the supervisor is still there a grace period later. `tick` runs every
/// poll (about every 20 ms) while the child runs, e.g. to commit what it has written; an
/// error from it stops the child's group and is returned.
pub(crate) fn supervise(
    child: &mut Supervised,
    ctx: &mut StageContext<'_>,
    tick: &mut dyn FnMut(&mut StageContext<'_>) -> anyhow::Result<()>,
) -> anyhow::Result<std::process::ExitStatus> {
    let (tx, rx) = mpsc::channel::<Option<String>>();
    let mut readers = 0;
    if let Some(out) = child.stdout.take() {
        spawn_reader(out, tx.clone());
        readers += 1;
    }
    if let Some(err) = child.stderr.take() {
        spawn_reader(err, tx.clone());
        readers += 1;
    }
    drop(tx);
    let pgid = child.id() as libc::pid_t;
    let mut exit = ExitWatch::new(pgid);
    let mut term_sent: Option<Instant> = None;
    let mut escalated = false;
    let status = loop {
        match rx.recv_timeout(TICK) {
            Ok(Some(line)) => ctx.log.line(&line),
            Ok(None) => readers -= 1,
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            // Both pipes are closed (a supervisor closes its copies at once): wait for the
            // child's exit itself, else the loop would spin on `try_wait`.
            Err(mpsc::RecvTimeoutError::Disconnected) => exit.wait(TICK),
        }
        if let Some(status) = child.try_wait().context("waiting for the command")? {
            break status;
        }
        if let Err(e) = tick(ctx) {
            // The supervisor kills the command's whole tree (a SIGKILL to it would leave
            // the command's descendants running).
            let _ = child.kill();
            return Err(e);
        }
        if ctx.cancel.load(Ordering::Relaxed) {
            match term_sent {
                None => {
                    ctx.log.line(
                        "== tureen: interrupted: sending SIGTERM to the command's process group",
                    );
                    // SAFETY: signalling the child's own process group.
                    unsafe { libc::kill(-pgid, libc::SIGTERM) };
                    term_sent = Some(Instant::now());
                }
                Some(t) if t.elapsed() > GRACE && !escalated => {
                    ctx.log
                        .line("== tureen: still running after the grace period: killing it");
                    // SAFETY: as above; the supervisor kills the command's whole tree.
                    unsafe { libc::kill(-pgid, libc::SIGTERM) };
                    escalated = true;
                }
                Some(t) if t.elapsed() > GRACE * 2 => {
                    ctx.log
                        .line("== tureen: still running after the grace period: SIGKILL");
                    // SAFETY: as above.
                    unsafe { libc::kill(-pgid, libc::SIGKILL) };
                    term_sent = Some(Instant::now() + Duration::from_secs(3600));
                }
                _ => {}
            }
        }
    };
    // Drain what is left; a background grandchild may hold the pipes open, so do not
    // wait for end-of-file longer than a moment.
    let deadline = Instant::now() + Duration::from_millis(500);
    while readers > 0 {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(Some(line)) => ctx.log.line(&line),
            Ok(None) => readers -= 1,
            Err(_) => break,
        }
    }
    if term_sent.is_some() {
        // Anything left in the group goes too.
        // SAFETY: as above.
        unsafe { libc::kill(-pgid, libc::SIGKILL) };
        anyhow::bail!("interrupted");
    }
    Ok(status)
}

/// How often [`supervise`] runs its `tick` and checks for a cancel while the child runs.
const TICK: Duration = Duration::from_millis(20);

/// Waits for a child's exit without reaping it: a pidfd (Linux 5.3) that becomes
/// readable the moment the child exits, or, without one, a pause that starts at a
/// millisecond and doubles up to the wait asked for.
struct ExitWatch {
    pidfd: Option<std::os::fd::OwnedFd>,
    pause: Duration,
}

impl ExitWatch {
    fn new(pid: libc::pid_t) -> ExitWatch {
        // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
        let pidfd = (fd >= 0).then(|| {
            // SAFETY: `fd` is a descriptor we just opened and own.
            unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd as i32) }
        });
        ExitWatch {
            pidfd,
            pause: Duration::from_millis(1),
        }
    }

    /// Returns when the child has exited, or after at most `limit`.
    fn wait(&mut self, limit: Duration) {
        use std::os::fd::AsRawFd as _;
        match &self.pidfd {
            Some(fd) => {
                let mut poll = libc::pollfd {
                    fd: fd.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                };
                // SAFETY: one valid pollfd; an error or a timeout just returns.
                unsafe { libc::poll(&mut poll, 1, limit.as_millis() as libc::c_int) };
            }
            None => {
                let pause = self.pause.min(limit);
                std::thread::sleep(pause);
                self.pause = (pause * 2).min(limit);
            }
        }
    }
}

fn spawn_reader(stream: impl Read + Send + 'static, tx: mpsc::Sender<Option<String>>) {
    std::thread::spawn(move || {
        let mut reader = BufReader::new(stream);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match reader.read_until(b'\n', &mut buf) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    let line = String::from_utf8_lossy(&buf);
                    let line = line.trim_end_matches(['\n', '\r']);
                    if tx.send(Some(line.to_string())).is_err() {
                        return;
                    }
                }
            }
        }
        let _ = tx.send(None);
    });
}

/// Quotes `s` for `sh` only when it needs it, so plain paths read naturally in logs.
fn shell_quote(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "_./-+=:,@%".contains(c))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

fn list(names: &[&str]) -> String {
    if names.is_empty() {
        "none".to_string()
    } else {
        names.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_leaves_plain_paths_alone() {
        assert_eq!(shell_quote("a/b.txt"), "a/b.txt");
        assert_eq!(shell_quote("it's here"), "'it'\\''s here'");
    }

    #[test]
    fn outs_accept_lists_and_mappings() {
        let p = serde_json::json!({"outs": {"model": "m.bin"}})
            .as_object()
            .unwrap()
            .clone();
        assert_eq!(
            outs(&p).unwrap(),
            vec![("model".to_string(), "m.bin".to_string())]
        );
        let p = serde_json::json!({"outs": ["a.txt"]})
            .as_object()
            .unwrap()
            .clone();
        assert_eq!(
            outs(&p).unwrap(),
            vec![("a.txt".to_string(), "a.txt".to_string())]
        );
        assert!(check_out_path("../x").is_err());
    }
}
