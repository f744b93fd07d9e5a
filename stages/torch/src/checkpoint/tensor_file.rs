//! Named tensors to and from safetensors files, with string metadata.
//!
//! Writes go through `tureen_artifacts`' streaming safetensors writer: atomic (temp file
//! in the same directory, fsync, rename), deterministic bytes, one tensor at a time
//! copied from wherever it lives (a CUDA tensor is on the CPU only while it is written). Reads memory-map the file and validate it before any tensor is
//! built.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use safetensors::tensor::{Dtype, SafeTensors};
use tch::{Device, Kind, Tensor};

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

/// The tch kind of a safetensors dtype (unsigned 16/32/64-bit have none).
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

/// The store's (helper A's) dtype for a safetensors dtype.
fn artifact_dtype(d: Dtype) -> tureen_artifacts::safetensors::Dtype {
    use tureen_artifacts::safetensors::Dtype as A;
    match d {
        Dtype::BOOL => A::BOOL,
        Dtype::U8 => A::U8,
        Dtype::I8 => A::I8,
        Dtype::I16 => A::I16,
        Dtype::U16 => A::U16,
        Dtype::F16 => A::F16,
        Dtype::BF16 => A::BF16,
        Dtype::I32 => A::I32,
        Dtype::U32 => A::U32,
        Dtype::F32 => A::F32,
        Dtype::F64 => A::F64,
        Dtype::I64 => A::I64,
        Dtype::U64 => A::U64,
        _ => A::U8,
    }
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
    use tureen_artifacts::safetensors::{Layout, SafetensorsWriter, TensorSpec};
    let mut specs = Vec::with_capacity(tensors.len());
    for (name, t) in tensors {
        let dtype = dtype_of(t.kind()).ok_or_else(|| CheckpointError::Tensor {
            path: path.to_path_buf(),
            tensor: name.clone(),
            message: format!("dtype {:?} cannot be stored in safetensors", t.kind()),
        })?;
        specs.push(TensorSpec {
            name: name.clone(),
            dtype: artifact_dtype(dtype),
            shape: t.size().iter().map(|&d| d as u64).collect(),
        });
    }
    let format = |e: tureen_artifacts::safetensors::SafetensorsError| CheckpointError::Format {
        path: path.to_path_buf(),
        message: e.to_string(),
    };
    let meta = if metadata.is_empty() {
        None
    } else {
        Some(metadata)
    };
    let layout = Layout::new(path, specs, meta).map_err(format)?;
    let writer = SafetensorsWriter::create(path, layout).map_err(format)?;
    for (name, t) in tensors {
        let cpu = t.to_device(Device::Cpu).contiguous();
        let numel = cpu.numel();
        let mut bytes = vec![0u8; numel * cpu.kind().elt_size_in_bytes()];
        cpu.copy_data_u8(&mut bytes, numel);
        writer.write_tensor(name, &bytes).map_err(format)?;
    }
    writer.finish().map_err(format)
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

/// A safetensors file read into tch tensors (on the CPU), with its metadata.
#[derive(Debug)]
pub struct TensorFile {
    pub tensors: BTreeMap<String, Tensor>,
    pub metadata: BTreeMap<String, String>,
}

/// Reads and validates a whole safetensors file.
pub fn read(path: &Path) -> Result<TensorFile, CheckpointError> {
    let file = File::open(path).map_err(|e| CheckpointError::Io {
        path: path.to_path_buf(),
        source: e,
    })?;
    // Safety: checkpoints in the store are read-only files; nothing truncates them while
    // mapped.
    let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| CheckpointError::Io {
        path: path.to_path_buf(),
        source: e,
    })?;
    let format = |message: String| CheckpointError::Format {
        path: path.to_path_buf(),
        message,
    };
    let (_, header) = SafeTensors::read_metadata(&map).map_err(|e| format(e.to_string()))?;
    let st = SafeTensors::deserialize(&map).map_err(|e| format(e.to_string()))?;
    let metadata = header
        .metadata()
        .clone()
        .unwrap_or_default()
        .into_iter()
        .collect();
    let mut tensors = BTreeMap::new();
    for (name, view) in st.tensors() {
        let kind = kind_of(view.dtype()).ok_or_else(|| CheckpointError::Tensor {
            path: path.to_path_buf(),
            tensor: name.clone(),
            message: format!("dtype {:?} is not supported", view.dtype()),
        })?;
        let shape: Vec<i64> = view.shape().iter().map(|&d| d as i64).collect();
        let t = Tensor::f_from_data_size(view.data(), &shape, kind).map_err(|e| {
            CheckpointError::Tensor {
                path: path.to_path_buf(),
                tensor: name.clone(),
                message: e.to_string(),
            }
        })?;
        tensors.insert(name, t);
    }
    Ok(TensorFile { tensors, metadata })
}
