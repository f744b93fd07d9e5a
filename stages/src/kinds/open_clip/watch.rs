//! Committing open_clip's `epoch_N.pt` files to the store as they appear, and putting
//! the last committed one back for `--resume latest` when a killed stage runs again.
//!
//! `torch.save` writes a checkpoint in place, not atomically, so a file is committed
//! only once it is complete: when a later epoch's file exists, when the trainer has
//! exited, or when it has kept its size across two polls and reads as a valid
//! `torch.save` archive (its zip directory is written last, when the file is closed).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use tureen_artifacts::torch::TorchFile;
use tureen_engine::kind::{Artifact, StageContext};

/// How often the checkpoint directory is looked at while training runs.
const POLL: Duration = Duration::from_millis(500);

/// Watches one checkpoint directory.
pub struct Watcher {
    dir: PathBuf,
    /// The last epoch committed (by this attempt or an earlier one).
    last: u64,
    sizes: HashMap<u64, u64>,
    polled: Option<Instant>,
    /// Digests committed by this attempt, in order.
    pub committed: Vec<tureen_artifacts::Digest>,
}

impl Watcher {
    /// Watches `dir`, where epochs up to `last` are already committed.
    pub fn new(dir: &Path, last: u64) -> Watcher {
        Watcher {
            dir: dir.to_path_buf(),
            last,
            sizes: HashMap::new(),
            polled: None,
            committed: Vec::new(),
        }
    }

    /// Commits every complete new epoch file, in epoch order. With `finished` (the
    /// trainer exited successfully) every remaining file must be complete.
    pub fn poll(&mut self, ctx: &mut StageContext<'_>, finished: bool) -> anyhow::Result<()> {
        if !finished && self.polled.is_some_and(|t| t.elapsed() < POLL) {
            return Ok(());
        }
        self.polled = Some(Instant::now());
        let files = epoch_files(&self.dir)?;
        let newest = files.last().map_or(0, |(n, _)| *n);
        let last = self.last;
        for (epoch, path) in files.into_iter().filter(|(n, _)| *n > last) {
            let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
            let steady = self.sizes.insert(epoch, size) == Some(size);
            let complete = finished || epoch < newest || (steady && TorchFile::open(&path).is_ok());
            if !complete {
                break;
            }
            if finished {
                TorchFile::open(&path)
                    .with_context(|| format!("open_clip's checkpoint {}", path.display()))?;
            }
            let artifact = ctx
                .journal
                .commit(&path)
                .with_context(|| format!("committing {}", path.display()))?;
            ctx.log
                .line(&format!("checkpoint epoch {epoch}: {}", artifact.digest));
            self.committed.push(artifact.digest);
            self.last = epoch;
        }
        Ok(())
    }
}

/// `epoch_N.pt` files of `dir`, by N (open_clip's `epoch_latest.pt` and temp files are
/// not epochs).
fn epoch_files(dir: &Path) -> anyhow::Result<Vec<(u64, PathBuf)>> {
    let mut out = Vec::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e).with_context(|| format!("listing {}", dir.display())),
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let epoch = name
            .strip_prefix("epoch_")
            .and_then(|r| r.strip_suffix(".pt"))
            .and_then(|n| n.parse::<u64>().ok());
        if let Some(n) = epoch {
            out.push((n, entry.path()));
        }
    }
    out.sort();
    Ok(out)
}

/// Puts the last committed checkpoint of an interrupted attempt into `dir` as
/// `epoch_N.pt` (a symlink to the read-only store object) for `--resume latest`;
/// returns N (0 when nothing was committed).
pub fn restore_latest(dir: &Path, committed: &[Artifact]) -> anyhow::Result<u64> {
    let Some(last) = committed.last() else {
        return Ok(0);
    };
    let file = TorchFile::open(&last.path)?;
    let epoch = file
        .root()
        .get("epoch")
        .and_then(|n| n.as_int())
        .filter(|&e| e > 0)
        .with_context(|| format!("committed checkpoint {} has no epoch number", last.digest))?
        as u64;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let link = dir.join(format!("epoch_{epoch}.pt"));
    std::os::unix::fs::symlink(&last.path, &link)
        .with_context(|| format!("linking {}", link.display()))?;
    Ok(epoch)
}
