//! `tureen store ...`: inspect and maintain the content-addressed store.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context};
use tureen_artifacts::store::{GcOptions, ObjectKind, Placement};
use tureen_artifacts::{Digest, Store};

use super::Global;

#[derive(clap::Subcommand, Debug)]
pub enum StoreCommand {
    /// Add files or directories (as tree objects); prints `<digest>  <path>` per argument.
    Add {
        /// Files or directories to copy into the store.
        #[arg(required = true, value_name = "PATH")]
        paths: Vec<PathBuf>,
        /// Also pin what was added, so gc keeps it.
        #[arg(long)]
        pin: bool,
    },
    /// Print BLAKE3 digests of files without storing them (like b3sum, multi-threaded).
    /// With an explicit --store (or TUREEN_STORE), digests go through that store's stat
    /// cache: unchanged files are not read again, and later soups reuse the digests.
    Hash {
        /// Files to hash.
        #[arg(required = true, value_name = "FILE")]
        files: Vec<PathBuf>,
    },
    /// List objects: digest, size, kind, and whether pinned.
    Ls {
        /// One JSON object per line instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Rehash every object; exits non-zero if any is corrupt or missing.
    Verify,
    /// Remove objects that no run record, cache entry, journal or pin references.
    Gc {
        /// Only report what would be removed.
        #[arg(long)]
        dry_run: bool,
    },
    /// Write an object's bytes to stdout (a tree prints its JSON manifest).
    Cat {
        /// Digest (`blake3:<hex>`, bare hex, or a unique hex prefix).
        #[arg(value_name = "DIGEST")]
        digest: String,
    },
    /// Place an object at DEST (a tree becomes a directory): reflink, else read-only hard
    /// link (not as root), else copy. Materialized files are read-only.
    Materialize {
        /// Digest (`blake3:<hex>`, bare hex, or a unique hex prefix).
        #[arg(value_name = "DIGEST")]
        digest: String,
        /// Destination path (must not be an existing directory).
        #[arg(value_name = "DEST")]
        dest: PathBuf,
    },
    /// Pin objects so gc keeps them.
    Pin {
        /// Digests to pin.
        #[arg(required = true, value_name = "DIGEST")]
        digests: Vec<String>,
    },
    /// Unpin objects.
    Unpin {
        /// Digests to unpin.
        #[arg(required = true, value_name = "DIGEST")]
        digests: Vec<String>,
    },
}

pub fn run(command: StoreCommand, global: &Global) -> anyhow::Result<ExitCode> {
    if let StoreCommand::Hash { files } = &command {
        return hash(files, global);
    }
    let dir = global.store_dir();
    let store =
        Store::open(&dir).with_context(|| format!("opening the store {}", dir.display()))?;
    match command {
        StoreCommand::Hash { .. } => unreachable!("handled above"),
        StoreCommand::Add { paths, pin } => add(&store, &paths, pin)?,
        StoreCommand::Ls { json } => ls(&store, json)?,
        StoreCommand::Verify => return verify(&store, global),
        StoreCommand::Gc { dry_run } => gc(&store, dry_run, global)?,
        StoreCommand::Cat { digest } => cat(&store, &digest)?,
        StoreCommand::Materialize { digest, dest } => materialize(&store, &digest, &dest, global)?,
        StoreCommand::Pin { digests } => pin(&store, &digests)?,
        StoreCommand::Unpin { digests } => unpin(&store, &digests)?,
    }
    Ok(ExitCode::SUCCESS)
}

/// `store hash`: needs no store (and must not create one). With an explicit `--store`
/// (or TUREEN_STORE), that store's stat cache is used and updated, so that later soups
/// and pipelines using the store do not hash the same files again.
fn hash(files: &[PathBuf], global: &Global) -> anyhow::Result<ExitCode> {
    let store = match &global.store {
        Some(dir) => {
            Some(Store::open(dir).with_context(|| format!("opening the store {}", dir.display()))?)
        }
        None => None,
    };
    for f in files {
        let d = match &store {
            Some(store) => store.hash_file_cached(f).map_err(anyhow::Error::from),
            None => Digest::of_file(f).map_err(anyhow::Error::from),
        }
        .with_context(|| format!("hashing {}", f.display()))?;
        println!("{}  {}", d.to_hex(), f.display());
    }
    Ok(ExitCode::SUCCESS)
}

fn add(store: &Store, paths: &[PathBuf], pin: bool) -> anyhow::Result<()> {
    // A killed `store add` left its temp object: gone now.
    store.remove_stale_temps();
    for p in paths {
        let meta = std::fs::metadata(p).with_context(|| format!("cannot add {}", p.display()))?;
        let d = if meta.is_dir() {
            store.add_dir(p)?
        } else {
            store.add_file(p)?
        };
        if pin {
            store.pin(&d)?;
        }
        println!("{d}  {}", p.display());
    }
    Ok(())
}

fn ls(store: &Store, json: bool) -> anyhow::Result<()> {
    let pins = store.pins()?;
    let mut out = std::io::stdout().lock();
    for o in store.list()? {
        let pinned = pins.contains(&o.digest);
        let r = if json {
            let v = serde_json::json!({"digest": o.digest, "size": o.size, "kind": o.kind, "pinned": pinned});
            writeln!(out, "{v}")
        } else {
            writeln!(
                out,
                "{}  {:>10}  {}{}",
                o.digest,
                human_bytes(o.size),
                o.kind,
                if pinned { "  pinned" } else { "" }
            )
        };
        if ignore_broken_pipe(r)? {
            break;
        }
    }
    Ok(())
}

/// `store verify`: exit code 1 when an object is damaged.
fn verify(store: &Store, global: &Global) -> anyhow::Result<ExitCode> {
    let report = store.verify()?;
    for p in &report.stale_removed {
        println!("removed {} (left by a process that died)", p.display());
    }
    for p in &report.problems {
        println!("{p}");
    }
    if !report.problems.is_empty() {
        tureen_engine::eprintln_lossy!(
            "error: {} problem(s) in {} objects ({}) of {}",
            report.problems.len(),
            report.checked,
            human_bytes(report.bytes),
            store.root().display()
        );
        return Ok(ExitCode::from(1));
    }
    if !global.quiet {
        println!(
            "verified {} objects ({}): all intact",
            report.checked,
            human_bytes(report.bytes)
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn gc(store: &Store, dry_run: bool, global: &Global) -> anyhow::Result<()> {
    if !dry_run {
        // Superseded lines of the cache's log would keep their objects alive.
        tureen_engine::cache::compact_log(store)
            .context("cannot compact the action cache's log")?;
    }
    let report = store.gc(&GcOptions { dry_run })?;
    let verb = if dry_run { "would remove" } else { "removed" };
    for (d, size) in &report.removed {
        if global.verbose > 0 || dry_run {
            println!("{verb} {d}  {}", human_bytes(*size));
        }
    }
    if !global.quiet {
        println!(
            "{verb} {} objects ({}), kept {}{}",
            report.removed.len(),
            human_bytes(report.freed_bytes),
            report.kept,
            if report.stale_temps_removed > 0 {
                format!(", {} stale temp files", report.stale_temps_removed)
            } else {
                String::new()
            }
        );
    }
    Ok(())
}

fn cat(store: &Store, digest: &str) -> anyhow::Result<()> {
    let d = resolve(store, digest)?;
    let mut f = store.open_object(&d)?;
    let mut out = std::io::stdout().lock();
    let r = std::io::copy(&mut f, &mut out)
        .map(|_| ())
        .and_then(|_| out.flush());
    ignore_broken_pipe(r)?;
    Ok(())
}

fn materialize(store: &Store, digest: &str, dest: &Path, global: &Global) -> anyhow::Result<()> {
    let d = resolve(store, digest)?;
    let kind = store.kind(&d)?;
    let how = store.materialize(&d, dest)?;
    if !global.quiet {
        let how = match how {
            Placement::Reflink => "reflinked",
            Placement::Hardlink => "hard-linked (read-only)",
            Placement::Copy => "copied",
        };
        let what = if kind == ObjectKind::Tree {
            "tree"
        } else {
            "file"
        };
        println!("{d} -> {} ({what}, {how})", dest.display());
    }
    Ok(())
}

fn pin(store: &Store, digests: &[String]) -> anyhow::Result<()> {
    for s in digests {
        let d = resolve(store, s)?;
        let new = store.pin(&d)?;
        println!("{d} {}", if new { "pinned" } else { "already pinned" });
    }
    Ok(())
}

/// `store unpin` also takes a full digest that is no longer in the store.
fn unpin(store: &Store, digests: &[String]) -> anyhow::Result<()> {
    for s in digests {
        let d = match Digest::parse_lenient(s) {
            Ok(d) => d,
            Err(_) => resolve(store, s)?,
        };
        let was = store.unpin(&d)?;
        println!("{d} {}", if was { "unpinned" } else { "was not pinned" });
    }
    Ok(())
}

/// Resolves `blake3:<hex>`, bare hex, or a unique hex prefix (at least 4 digits) of an
/// object in the store.
fn resolve(store: &Store, s: &str) -> anyhow::Result<Digest> {
    if let Ok(d) = Digest::parse_lenient(s) {
        if !store.contains(&d) {
            bail!("object {d} is not in the store {}", store.root().display());
        }
        return Ok(d);
    }
    let prefix = s.trim().trim_start_matches("blake3:");
    if prefix.len() < 4
        || prefix.len() > 64
        || !prefix
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        bail!("{s:?} is not a digest (blake3:<64 hex digits>, or a unique prefix of at least 4 hex digits)");
    }
    let shard = store.root().join("objects").join(&prefix[..2]);
    let mut found = Vec::new();
    if let Ok(rd) = std::fs::read_dir(&shard) {
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with(&prefix[2..]) {
                if let Ok(d) = Digest::from_hex(&format!("{}{name}", &prefix[..2])) {
                    found.push(d);
                }
            }
        }
    }
    match found.as_slice() {
        [d] => Ok(*d),
        [] => bail!(
            "no object in {} starts with {prefix}",
            store.root().display()
        ),
        many => bail!(
            "{prefix} is ambiguous: {} objects start with it",
            many.len()
        ),
    }
}

/// `Ok(true)` when stdout was closed by the reader (e.g. `| head`): stop quietly.
fn ignore_broken_pipe(r: std::io::Result<()>) -> anyhow::Result<bool> {
    match r {
        Ok(()) => Ok(false),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(true),
        Err(e) => Err(e).context("writing to stdout"),
    }
}

/// `1.50 GB`-style sizes (decimal units, like `ls -h --si`).
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1000.0 && u + 1 < UNITS.len() {
        v /= 1000.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.2} {}", UNITS[u])
    }
}
