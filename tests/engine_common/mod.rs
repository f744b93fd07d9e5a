//! Helpers for the engine's end-to-end tests: a scratch workspace with its own store,
//! and the `tureen` binary run inside it.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A temporary workspace (pipeline files, inputs) with a store at `<dir>/.tureen`.
pub struct Workspace {
    pub dir: tempfile::TempDir,
}

impl Workspace {
    pub fn new() -> Workspace {
        Workspace {
            dir: tempfile::tempdir().expect("temp dir"),
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn store(&self) -> PathBuf {
        self.dir.path().join(".tureen")
    }

    pub fn write(&self, rel: &str, text: &str) -> PathBuf {
        let p = self.dir.path().join(rel);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).unwrap();
        }
        // Replace rather than write through: the path may be a restored output.
        let _ = std::fs::remove_file(&p);
        std::fs::write(&p, text).unwrap();
        p
    }

    pub fn read(&self, rel: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(rel))
            .unwrap_or_else(|e| panic!("read {rel}: {e}"))
    }

    pub fn exists(&self, rel: &str) -> bool {
        self.dir.path().join(rel).exists()
    }

    /// A `tureen` command in this workspace, using its store.
    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_tureen"));
        c.args(args)
            .current_dir(self.dir.path())
            .env("TUREEN_STORE", self.store())
            .env_remove("RUST_LOG");
        c
    }

    pub fn tureen(&self, args: &[&str]) -> Output {
        self.cmd(args).output().expect("run tureen")
    }

    /// Runs tureen and asserts success; returns stdout + stderr.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.tureen(args);
        let text = both(&out);
        assert!(
            out.status.success(),
            "tureen {args:?} failed ({:?}):\n{text}",
            out.status
        );
        text
    }
}

pub fn both(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Every object in the store has the name of its content's BLAKE3 hash (no partial
/// object is visible); returns how many there are.
pub fn assert_store_consistent(store: &Path) -> usize {
    let mut n = 0;
    let objects = store.join("objects");
    for shard in std::fs::read_dir(&objects).into_iter().flatten().flatten() {
        for obj in std::fs::read_dir(shard.path()).unwrap().flatten() {
            let name = format!(
                "{}{}",
                shard.file_name().to_string_lossy(),
                obj.file_name().to_string_lossy()
            );
            let bytes = std::fs::read(obj.path()).unwrap();
            assert_eq!(
                blake3::hash(&bytes).to_hex().as_str(),
                name,
                "object {} is corrupt or partial",
                obj.path().display()
            );
            n += 1;
        }
    }
    n
}

/// The run ids recorded in the store, newest first.
pub fn runs(store: &Path) -> Vec<String> {
    let mut ids: Vec<String> = std::fs::read_dir(store.join("runs"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            e.file_name()
                .to_string_lossy()
                .strip_suffix(".json")
                .map(str::to_string)
        })
        .collect();
    ids.sort_unstable_by(|a, b| b.cmp(a));
    ids
}

pub fn record(store: &Path, id: &str) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(store.join("runs").join(format!("{id}.json"))).unwrap())
        .unwrap()
}

/// The status of each stage in the newest run.
pub fn last_statuses(store: &Path) -> Vec<(String, String)> {
    let id = runs(store).into_iter().next().expect("a run");
    let rec = record(store, &id);
    rec["stages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["name"].as_str().unwrap().to_string(),
                s["status"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

pub fn status_of(store: &Path, stage: &str) -> String {
    last_statuses(store)
        .into_iter()
        .find(|(n, _)| n == stage)
        .map(|(_, s)| s)
        .unwrap_or_else(|| panic!("no stage {stage}"))
}

/// A process seen in `/proc`: its pid and command line (arguments joined by NULs).
pub struct Process {
    pub pid: u32,
    pub cmdline: String,
}

impl Process {
    /// Whether its environment holds exactly `var` (`NAME=value`).
    pub fn has_env(&self, var: &str) -> bool {
        let environ = std::fs::read(format!("/proc/{}/environ", self.pid)).unwrap_or_default();
        environ.split(|&b| b == 0).any(|v| v == var.as_bytes())
    }
}

/// The processes alive now; zombies, which have finished, are left out.
pub fn live_processes() -> Vec<Process> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            !stat.is_empty() && !stat.contains(") Z ")
        })
        .map(|pid| {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            Process {
                pid,
                cmdline: String::from_utf8_lossy(&cmdline).into_owned(),
            }
        })
        .collect()
}
