//! Sharded safetensors, as Hugging Face and mergekit lay them out: a directory of
//! `model-00001-of-00003.safetensors`... and `model.safetensors.index.json`, which maps
//! every tensor name to its shard:
//!
//! ```json
//! {"metadata": {"total_size": 28966928384}, "weight_map": {"lm_head.weight": "model-00003-of-00003.safetensors", ...}}
//! ```
//!
//! [`ShardIndex::read`] validates an index; [`ShardedWriter`] writes a sharded checkpoint
//! atomically: the shards and the index are assembled in a hidden temp directory beside
//! the destination, which is renamed into place only when every shard is complete.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::{Layout, SafetensorsError, SafetensorsWriter, TensorSpec};
use crate::fsutil;
use crate::store::is_safe_relative_path;

/// The index file name of a sharded checkpoint.
pub const INDEX_FILE: &str = "model.safetensors.index.json";

/// A parsed `model.safetensors.index.json`: which shard file holds each tensor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardIndex {
    /// The index file.
    pub path: PathBuf,
    /// Tensor name -> shard file name (relative to the index's directory).
    pub weight_map: BTreeMap<String, String>,
    /// The index file's bytes (hashed for provenance).
    pub bytes: Vec<u8>,
}

#[derive(serde::Deserialize)]
struct RawIndex {
    #[serde(default)]
    #[allow(dead_code)]
    metadata: Option<serde_json::Value>,
    weight_map: BTreeMap<String, String>,
}

impl ShardIndex {
    /// Reads and checks an index: JSON with a `weight_map` of non-empty, relative shard
    /// names that stay inside the index's directory.
    pub fn read(path: &Path) -> Result<ShardIndex, SafetensorsError> {
        let invalid = |message: String| SafetensorsError::Invalid {
            path: path.to_path_buf(),
            problem: super::Problem::HeaderJson { message },
        };
        let io = |action| SafetensorsError::io(action, path);
        let file = fsutil::open_regular(path).map_err(io("open"))?;
        let mut bytes = Vec::new();
        // An index is a few hundred KB; the header limit bounds what a hostile one costs.
        std::io::Read::read_to_end(
            &mut std::io::Read::take(file, super::MAX_HEADER_LEN + 1),
            &mut bytes,
        )
        .map_err(io("read"))?;
        if bytes.len() as u64 > super::MAX_HEADER_LEN {
            return Err(invalid(format!(
                "larger than {} bytes: not a shard index",
                super::MAX_HEADER_LEN
            )));
        }
        let raw: RawIndex = serde_json::from_slice(&bytes)
            .map_err(|e| invalid(format!("not a shard index (`weight_map`): {e}")))?;
        if raw.weight_map.is_empty() {
            return Err(invalid("`weight_map` is empty".into()));
        }
        for (name, shard) in &raw.weight_map {
            if !is_safe_relative_path(shard) {
                return Err(invalid(format!(
                    "tensor {name:?} is in shard {shard:?}, which is not a file name inside the index's directory"
                )));
            }
        }
        Ok(ShardIndex {
            path: path.to_path_buf(),
            weight_map: raw.weight_map,
            bytes,
        })
    }

    /// The distinct shard files, in name order.
    pub fn shards(&self) -> Vec<&str> {
        let mut v: Vec<&str> = self.weight_map.values().map(String::as_str).collect();
        v.sort_unstable();
        v.dedup();
        v
    }
}

/// `model-00002-of-00005.safetensors` (1-based, as Hugging Face and mergekit name them).
pub fn shard_name(index: usize, count: usize) -> String {
    format!("model-{:05}-of-{count:05}.safetensors", index + 1)
}

/// Splits tensors into shards of at most `max_bytes` of tensor data each (a tensor larger
/// than that gets a shard of its own), in safetensors' canonical order, filling each
/// shard before starting the next, as mergekit's writer does.
pub fn split_into_shards(mut specs: Vec<TensorSpec>, max_bytes: u64) -> Vec<Vec<TensorSpec>> {
    specs.sort_by(|a, b| {
        b.dtype
            .rank()
            .cmp(&a.dtype.rank())
            .then_with(|| a.name.cmp(&b.name))
    });
    let mut shards: Vec<Vec<TensorSpec>> = Vec::new();
    let mut current = 0u64;
    for spec in specs {
        let n = spec.nbytes().unwrap_or(u64::MAX);
        match shards.last_mut() {
            Some(shard) if current.saturating_add(n) <= max_bytes => shard.push(spec),
            _ => {
                shards.push(vec![spec]);
                current = 0;
            }
        }
        current = current.saturating_add(n);
    }
    shards
}

/// Writes a sharded checkpoint into a directory (see the module docs). The destination
/// must not exist or be an empty directory.
#[derive(Debug)]
pub struct ShardedWriter {
    dest: PathBuf,
    temp: PathBuf,
    writers: Vec<SafetensorsWriter>,
    weight_map: BTreeMap<String, String>,
    total_size: u64,
    finished: bool,
}

impl ShardedWriter {
    /// Creates the temp directory and one writer per shard (`shards` from
    /// [`split_into_shards`]); `metadata` goes into every shard's `__metadata__`.
    pub fn create(
        dest: &Path,
        shards: Vec<Vec<TensorSpec>>,
        metadata: Option<&BTreeMap<String, String>>,
    ) -> Result<ShardedWriter, SafetensorsError> {
        check_destination(dest)?;
        let parent = fsutil::parent_dir(dest);
        let stem = dest
            .file_name()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let temp = fsutil::unique_temp_path(parent, &stem);
        std::fs::create_dir(&temp).map_err(SafetensorsError::io("write", dest))?;
        let mut writer = ShardedWriter {
            dest: dest.to_path_buf(),
            temp,
            writers: Vec::new(),
            weight_map: BTreeMap::new(),
            total_size: 0,
            finished: false,
        };
        let count = shards.len();
        for (i, specs) in shards.into_iter().enumerate() {
            let name = shard_name(i, count);
            for s in &specs {
                writer.weight_map.insert(s.name.clone(), name.clone());
                writer.total_size += s.nbytes().unwrap_or(0);
            }
            let path = writer.temp.join(&name);
            let layout = Layout::new(&path, specs, metadata)?;
            writer
                .writers
                .push(SafetensorsWriter::create(&path, layout)?);
        }
        Ok(writer)
    }

    /// The shard writers, in shard order (write tensors through them).
    pub fn writers(&self) -> &[SafetensorsWriter] {
        &self.writers
    }

    /// Mutable access, e.g. to replace metadata or set durability.
    pub fn writers_mut(&mut self) -> &mut [SafetensorsWriter] {
        &mut self.writers
    }

    /// Finishes every shard, writes the index and renames the directory into place.
    pub fn finish(mut self) -> Result<(), SafetensorsError> {
        let durable = self.writers.first().is_none_or(|w| w.is_durable());
        for w in std::mem::take(&mut self.writers) {
            w.finish()?;
        }
        let index = serde_json::json!({
            "metadata": {"total_size": self.total_size},
            "weight_map": self.weight_map,
        });
        let mut bytes = serde_json::to_vec_pretty(&index).expect("an index serializes");
        bytes.push(b'\n');
        let io = SafetensorsError::io;
        let index_path = self.temp.join(INDEX_FILE);
        fsutil::write_atomic(&index_path, &bytes).map_err(io("write", &index_path))?;
        // An empty directory at the destination (checked at creation) gives way.
        if self.dest.is_dir() {
            std::fs::remove_dir(&self.dest)
                .map_err(io("replace the empty directory", &self.dest))?;
        }
        super::writer::publish(&self.temp, &self.dest, durable)?;
        self.finished = true;
        Ok(())
    }
}

impl Drop for ShardedWriter {
    fn drop(&mut self) {
        if !self.finished {
            self.writers.clear();
            let _ = std::fs::remove_dir_all(&self.temp);
        }
    }
}

/// A sharded output goes to a missing path or an empty directory, never over files.
fn check_destination(dest: &Path) -> Result<(), SafetensorsError> {
    let refuse = |what: String| SafetensorsError::Invalid {
        path: dest.to_path_buf(),
        problem: super::Problem::Output { what },
    };
    match std::fs::symlink_metadata(dest) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(error) => Err(SafetensorsError::io("inspect", dest)(error)),
        Ok(m) if m.is_dir() => {
            let empty = std::fs::read_dir(dest)
                .map(|mut d| d.next().is_none())
                .unwrap_or(false);
            if empty {
                Ok(())
            } else {
                Err(refuse(
                    "is a directory that is not empty; a sharded checkpoint is written to a new or empty directory".into(),
                ))
            }
        }
        Ok(m) => Err(refuse(format!(
            "is {}; a sharded checkpoint is written to a new or empty directory",
            fsutil::describe_file_type(m.file_type())
        ))),
    }
}
