//! Arguments and helpers shared by the commands that read and write checkpoints
//! (`soup`, `convert`, `inspect`).

use std::path::{Path, PathBuf};

use anyhow::Context;
use tureen_artifacts::checkpoint::{OpenOptions, StateDictPath, MODEL_FILE};

/// How `torch.save` inputs are read.
#[derive(clap::Args, Debug, Clone)]
pub struct SourceArgs {
    /// Where the state dict is in a torch.save file: dict keys joined by dots (default:
    /// the first of `state_dict`, `model`, `module` holding tensors, else the top level).
    #[arg(long, value_name = "PATH", value_parser = parse_key)]
    pub key: Option<StateDictPath>,
    /// Keep a `module.` prefix shared by every tensor name (DDP); stripped by default.
    #[arg(long)]
    pub keep_prefix: bool,
}

impl SourceArgs {
    pub fn options(&self) -> OpenOptions {
        OpenOptions {
            key: self.key.clone(),
            keep_prefix: self.keep_prefix,
        }
    }
}

fn parse_key(s: &str) -> Result<StateDictPath, String> {
    s.parse()
}

/// `--out-shard-size`: bytes, with mergekit's suffixes (K, M, B: thousand, million,
/// billion) or Hugging Face's (KB, MB, GB, TB; KiB, MiB, GiB).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let factor: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" => 1.0,
        "k" | "kb" => 1e3,
        "m" | "mb" => 1e6,
        "b" | "g" | "gb" => 1e9,
        "t" | "tb" => 1e12,
        "kib" => 1024.0,
        "mib" => 1024.0 * 1024.0,
        "gib" => 1024.0 * 1024.0 * 1024.0,
        _ => {
            return Err(format!(
                "{s:?}: unknown unit (use bytes, or K/M/B, KB/MB/GB, KiB/MiB/GiB)"
            ))
        }
    };
    let n: f64 = number
        .parse()
        .map_err(|_| format!("{s:?} is not a size (e.g. 5GB, 500M, 2GiB)"))?;
    let bytes = n * factor;
    if !(bytes >= 1.0 && bytes < u64::MAX as f64) {
        return Err(format!("{s:?}: the shard size must be at least 1 byte"));
    }
    Ok(bytes as u64)
}

/// Where a command's output goes, resolved from `-o`.
pub struct OutputPath {
    /// The file (or, sharded, directory) to write.
    pub path: PathBuf,
    /// A directory created for it, removed again if the command fails.
    created_dir: Option<PathBuf>,
}

impl OutputPath {
    /// Resolves `-o`: with shards, the directory itself; else a file, where a directory
    /// (an existing one, or any path ending in `/`, mergekit's habit) means
    /// `DIR/model.safetensors`, the directory being created if missing.
    pub fn resolve(given: &Path, sharded: bool) -> anyhow::Result<OutputPath> {
        let names_dir = given.as_os_str().to_string_lossy().ends_with('/') || given.is_dir();
        if sharded || !names_dir {
            return Ok(OutputPath {
                path: given.to_path_buf(),
                created_dir: None,
            });
        }
        let created_dir = (!given.exists())
            .then(|| {
                std::fs::create_dir_all(given)
                    .with_context(|| {
                        format!("cannot create the output directory {}", given.display())
                    })
                    .map(|()| given.to_path_buf())
            })
            .transpose()?;
        Ok(OutputPath {
            path: given.join(MODEL_FILE),
            created_dir,
        })
    }

    /// Keeps the created directory (the command succeeded).
    pub fn keep(mut self) -> PathBuf {
        self.created_dir = None;
        std::mem::take(&mut self.path)
    }
}

impl Drop for OutputPath {
    fn drop(&mut self) {
        if let Some(dir) = &self.created_dir {
            let _ = std::fs::remove_dir(dir);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_take_mergekit_and_hugging_face_units() {
        assert_eq!(parse_size("5B"), Ok(5_000_000_000));
        assert_eq!(parse_size("5GB"), Ok(5_000_000_000));
        assert_eq!(parse_size("500M"), Ok(500_000_000));
        assert_eq!(parse_size("2GiB"), Ok(2 << 30));
        assert_eq!(parse_size("1.5kb"), Ok(1500));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert!(parse_size("0").is_err());
        assert!(parse_size("5 parsecs").is_err());
        assert!(parse_size("GB").is_err());
    }
}
