//! `tureen logs [RUN] STAGE [-f] [--rank N]`: print a stage's log, or follow it while the
//! run goes.
//!
//! A stage restored from the cache shows the log of the run that computed it. While a
//! run is in progress its record lists no stages yet, so the log is looked for where the
//! run writes it (`<store>/runs/<run>/<stage>.log`). `-f` prints what the stage writes
//! until the run ends; a run that died without ending its record (killed) is noticed
//! because nothing holds the store's run lock any more.
//!
//! `--rank N` picks one rank of a data-parallel stage: rank 0's log is the stage's own
//! (`<stage>.log`), rank r's sits beside it as `<stage>.rank<r>.log` (the names the
//! engine's rank launcher writes, [`tureen_engine::job::rank_path`]).

use std::io::{Read as _, Seek as _, SeekFrom};
use std::os::unix::io::AsRawFd as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context as _};
use tureen_engine::job::rank_path;
use tureen_engine::rank::Rank;
use tureen_engine::record::{self, RunRecord, RunStatus};
use tureen_engine::run_metrics::RanBy;

use super::Global;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// `RUN STAGE`, or only `STAGE` for the latest run. RUN: an id, a unique prefix of
    /// one, `latest` or `latest~N`.
    #[arg(value_name = "RUN", required = true, num_args = 1..=2)]
    pub names: Vec<String>,
    /// Keep printing what the stage writes until the run ends.
    #[arg(short, long)]
    pub follow: bool,
    /// The log of rank N of a data-parallel stage (0: the stage's own log).
    #[arg(long, value_name = "N")]
    pub rank: Option<u32>,
}

/// How often a followed log is checked for news.
const POLL: Duration = Duration::from_millis(200);

pub fn run(args: Args, global: &Global) -> anyhow::Result<ExitCode> {
    let (run, stage) = match args.names.as_slice() {
        [stage] => ("latest", stage.as_str()),
        [run, stage] => (run.as_str(), stage.as_str()),
        _ => bail!("expected `tureen logs [RUN] STAGE`"),
    };
    let store = global.existing_store()?;
    let id = record::find_run(&store, run)?;
    let log = log_path(&store, &id, stage, args.follow)?;
    let path = match args.rank {
        None => log.path,
        Some(rank) => rank_log(&log, &id, stage, rank, args.follow)?,
    };
    let mut out = std::io::stdout().lock();
    let mut offset = 0u64;
    loop {
        // Checked before reading, so the last bytes written before the run ended are
        // still printed by the read that follows.
        let running = args.follow && still_running(&store, &id);
        offset = copy_new(&path, offset, &mut out)?;
        if !running {
            return Ok(ExitCode::SUCCESS);
        }
        std::thread::sleep(POLL);
    }
}

/// Where a stage's log is, and how many ranks wrote one.
struct StageLog {
    /// Rank 0's log: the stage's own.
    path: PathBuf,
    /// The stage's world size as its record has it; `None` for a stage the record does
    /// not list yet (the run is still going).
    world: Option<u32>,
    /// Whether the run is going and may still write logs.
    running: bool,
}

/// The log of `stage` in run `id`.
fn log_path(store: &Path, id: &str, stage: &str, follow: bool) -> anyhow::Result<StageLog> {
    let rec = RunRecord::read(&RunRecord::path(store, id))?;
    let running = rec.status == RunStatus::Running;
    if let Some(s) = rec.stage(stage) {
        let run = RanBy::scan(store).run_of(&rec, s).to_string();
        let path = match (&s.log, run == rec.run_id) {
            (Some(rel), true) => store.join(rel),
            _ => store.join("runs").join(&run).join(format!("{stage}.log")),
        };
        if !path.is_file() {
            bail!(
                "stage `{stage}` of run {id} ({}) has no log: {} does not exist",
                s.status,
                path.display()
            );
        }
        // A stage that never got its key has no fingerprint; it ran as nothing.
        let world = Some(s.fingerprint.as_ref().map_or(1, |f| f.world));
        return Ok(StageLog {
            path,
            world,
            running,
        });
    }
    let path = store.join("runs").join(id).join(format!("{stage}.log"));
    if path.is_file() || (follow && running) {
        return Ok(StageLog {
            path,
            world: None,
            running,
        });
    }
    let names: Vec<&str> = rec.stages.iter().map(|s| s.name.as_str()).collect();
    let hint = tureen_engine::diag::suggest(stage, names.iter().copied())
        .map(|h| format!(" (did you mean `{h}`?)"))
        .unwrap_or_default();
    bail!(
        "run {id} has no stage `{stage}`{hint}; its stages: {}",
        if names.is_empty() {
            "none yet".to_string()
        } else {
            names.join(", ")
        }
    )
}

/// The log of rank `rank` of the stage whose log is `log`.
fn rank_log(
    log: &StageLog,
    id: &str,
    stage: &str,
    rank: u32,
    follow: bool,
) -> anyhow::Result<PathBuf> {
    // Only the name matters to `rank_path`; world and local are the stage's business.
    let path_of = |r: u32| match r {
        0 => log.path.clone(),
        r => rank_path(
            &log.path,
            Rank {
                rank: r,
                world: r + 1,
                local: 0,
            },
        ),
    };
    let world = match log.world {
        Some(world) => world,
        // Not in the record yet: the ranks are those whose logs exist so far, and a
        // followed rank may not have started writing.
        None if follow && log.running => return Ok(path_of(rank)),
        None => (1..).take_while(|&r| path_of(r).is_file()).count() as u32 + 1,
    };
    if world <= 1 {
        bail!(
            "stage `{stage}` of run {id} ran as one process, so it has no ranks; \
             `tureen logs {id} {stage}` prints its log"
        );
    }
    if rank >= world {
        bail!(
            "stage `{stage}` of run {id} has no rank {rank}: it ran as {world} ranks, 0 to {}",
            world - 1
        );
    }
    let path = path_of(rank);
    if !(path.is_file() || (follow && log.running)) {
        bail!(
            "rank {rank} of stage `{stage}` in run {id} has no log: {} does not exist",
            path.display()
        );
    }
    Ok(path)
}

/// Prints the bytes of `path` after `offset` (nothing if it does not exist yet);
/// returns the new offset.
fn copy_new(path: &Path, offset: u64, out: &mut impl std::io::Write) -> anyhow::Result<u64> {
    let mut file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(offset),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    file.seek(SeekFrom::Start(offset))
        .with_context(|| format!("cannot read {}", path.display()))?;
    let mut buf = Vec::new();
    file.read_to_end(&mut buf)
        .with_context(|| format!("cannot read {}", path.display()))?;
    out.write_all(&buf)?;
    out.flush()?;
    Ok(offset + buf.len() as u64)
}

/// Whether run `id` is still going: its record says so and some process holds the
/// store's run lock (every run holds it shared until it ends).
fn still_running(store: &Path, id: &str) -> bool {
    let running = RunRecord::read(&RunRecord::path(store, id)).is_ok_and(|r| r.status == RunStatus::Running);
    running && store_lock_held(store)
}

fn store_lock_held(store: &Path) -> bool {
    let Ok(file) = std::fs::File::open(store.join("locks").join("store.lock")) else {
        return false;
    };
    // SAFETY: flock on a file descriptor this function owns; released when it closes.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    rc != 0
}
