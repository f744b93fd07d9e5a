//! Named tensors to and from checkpoint files, with string metadata.
//!
//! Writes go through `tureen_artifacts`' streaming safetensors writer: atomic (temp file
//! in the same directory, fsync, rename), deterministic bytes, one tensor at a time
//! copied from wherever it lives (a CUDA tensor is on the CPU only while it is written).
//! Reads go through `tureen_artifacts::checkpoint` (the workspace's one reader of
//! safetensors, sharded safetensors and `torch.save` files): the file is memory-mapped
//! and validated before any tensor is built. Dtypes are `tureen_artifacts`' [`Dtype`],
//! mapped to tch kinds by [`kind_of`] and [`dtype_of`].

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use tch::{Device, Kind, Tensor};
use tureen_artifacts::checkpoint::{Checkpoint, OpenOptions};
use tureen_artifacts::safetensors::{Dtype, Layout, SafetensorsWriter, TensorSpec};

use super::CheckpointError;

/// The safetensors dtype of a tch kind, when safetensors can store it.
pub fn dtype_of(kind: Kind) -> Option<Dtype> {
    Some(match kind {
        Kind::Bool => Dtype::BOOL,
        Kind::Uint8 => Dtype::U8,
        Kind::Int8 => Dtype::I8,
        Kind::Int16 => Dtype::I16,
        Kind::Half => Dtype::F16,
        Kind::BFloat16 => Dtype::BF16,
        Kind::Int => Dtype::I32,
        Kind::Float => Dtype::F32,
        Kind::Double => Dtype::F64,
        Kind::Int64 => Dtype::I64,
        _ => return None,
    })
}

/// The tch kind of a dtype (unsigned 16/32/64-bit and 8-bit floats have none here).
pub fn kind_of(dtype: Dtype) -> Option<Kind> {
    Some(match dtype {
        Dtype::BOOL => Kind::Bool,
        Dtype::U8 => Kind::Uint8,
        Dtype::I8 => Kind::Int8,
        Dtype::I16 => Kind::Int16,
        Dtype::F16 => Kind::Half,
        Dtype::BF16 => Kind::BFloat16,
        Dtype::I32 => Kind::Int,
        Dtype::F32 => Kind::Float,
        Dtype::F64 => Kind::Double,
        Dtype::I64 => Kind::Int64,
        _ => return None,
    })
}

/// Writes `tensors` (name -> tensor) with `metadata` to `path` atomically, through the
/// artifacts crate's streaming writer: the header is deterministic (sorted metadata,
/// tensors in safetensors' canonical order), so the same tensors give the same bytes,
/// and only one tensor at a time is copied to the CPU.
pub fn write(
    path: &Path,
    tensors: &BTreeMap<String, Tensor>,
    metadata: &BTreeMap<String, String>,
) -> Result<(), CheckpointError> {
    let mut specs = Vec::with_capacity(tensors.len());
    for (name, t) in tensors {
        let dtype = dtype_of(t.kind()).ok_or_else(|| CheckpointError::Tensor {
            path: path.to_path_buf(),
            tensor: name.clone(),
            message: format!("dtype {:?} cannot be stored in safetensors", t.kind()),
        })?;
        specs.push(TensorSpec {
            name: name.clone(),
            dtype,
            shape: t.size().iter().map(|&d| d as u64).collect(),
        });
    }
    let meta = if metadata.is_empty() {
        None
    } else {
        Some(metadata)
    };
    let layout = Layout::new(path, specs, meta)?;
    let writer = SafetensorsWriter::create(path, layout)?;
    for (name, t) in tensors {
        let cpu = t.to_device(Device::Cpu).contiguous();
        let numel = cpu.numel();
        let mut bytes = vec![0u8; numel * cpu.kind().elt_size_in_bytes()];
        cpu.copy_data_u8(&mut bytes, numel);
        writer.write_tensor(name, &bytes)?;
    }
    Ok(writer.finish()?)
}

/// Runs `write` against a temp path next to `path`, fsyncs, then renames over `path`.
/// On failure the temp file is removed and `path` is untouched.
pub fn write_atomic(
    path: &Path,
    write: impl FnOnce(&Path) -> Result<(), CheckpointError>,
) -> Result<(), CheckpointError> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp: PathBuf = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let io = |e: std::io::Error| CheckpointError::Io {
        path: path.to_path_buf(),
        source: e,
    };
    let result = write(&tmp).and_then(|()| {
        File::open(&tmp).and_then(|f| f.sync_all()).map_err(io)?;
        std::fs::rename(&tmp, path).map_err(io)?;
        if let Ok(d) = File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    });
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Writes bytes atomically (for JSON side files).
pub fn write_bytes(path: &Path, bytes: &[u8]) -> Result<(), CheckpointError> {
    write_atomic(path, |tmp| {
        let mut f = File::create(tmp).map_err(|e| CheckpointError::Io {
            path: path.to_path_buf(),
            source: e,
        })?;
        f.write_all(bytes).map_err(|e| CheckpointError::Io {
            path: path.to_path_buf(),
            source: e,
        })
    })
}

/// A checkpoint read into tch tensors (on the CPU), with its metadata.
#[derive(Debug)]
pub struct TensorFile {
    /// Every tensor, by its name in the file (a DDP `module.` prefix stripped unless
    /// the options keep it).
    pub tensors: BTreeMap<String, Tensor>,
    /// The safetensors `__metadata__` (empty for a `torch.save` file).
    pub metadata: BTreeMap<String, String>,
}

/// Reads and validates a whole checkpoint: a safetensors file, or any other format
/// `tureen_artifacts::checkpoint` reads (a `torch.save` file's state dict found as
/// [`OpenOptions::default`] finds it, a sharded checkpoint).
pub fn read(path: &Path) -> Result<TensorFile, CheckpointError> {
    read_with(path, &OpenOptions::default())
}

/// [`read`] with explicit options for `torch.save` files.
pub fn read_with(path: &Path, opts: &OpenOptions) -> Result<TensorFile, CheckpointError> {
    tensors_of(&Checkpoint::open(path, opts)?)
}

/// A CPU tensor holding a copy of `bytes` (little-endian elements of `dtype`).
pub fn tensor_from_bytes(bytes: &[u8], dtype: Dtype, shape: &[u64]) -> Result<Tensor, String> {
    let kind = kind_of(dtype).ok_or_else(|| format!("dtype {dtype} is not supported"))?;
    let shape: Vec<i64> = shape.iter().map(|&d| d as i64).collect();
    Tensor::f_from_data_size(bytes, &shape, kind).map_err(|e| e.to_string())
}

/// Every tensor of an open checkpoint, copied into tch tensors.
pub fn tensors_of(ckpt: &Checkpoint) -> Result<TensorFile, CheckpointError> {
    let path = ckpt.path();
    let mut tensors = BTreeMap::new();
    for entry in ckpt.tensors() {
        let bad = |message: String| CheckpointError::Tensor {
            path: path.to_path_buf(),
            tensor: entry.name.clone(),
            message,
        };
        let t = tensor_from_bytes(ckpt.data(entry), entry.dtype, &entry.shape).map_err(bad)?;
        tensors.insert(entry.name.clone(), t);
    }
    Ok(TensorFile {
        tensors,
        metadata: ckpt.metadata().clone(),
    })
}
