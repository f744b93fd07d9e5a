//! A streaming safetensors writer: the header and every tensor's offset are computed up
//! front, so tensors can be written directly at their final positions, in any order and
//! from many threads at once, without holding a whole tensor (let alone a model) in memory.
//!
//! The file is assembled under a hidden temp name in the destination directory and renamed
//! into place by [`SafetensorsWriter::finish`]; if anything fails (or the writer is
//! dropped), the temp file is removed and nothing appears at the destination.
//!
//! Durability is cheap: as each 64 MiB window of the file is completed, its writeback is
//! started (see [`crate::writeback`]), so the `fsync` in `finish` waits only for the tail.

use std::collections::BTreeMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use super::{Dtype, SafetensorsError};
use crate::fsutil;
use crate::writeback::Writeback;

/// A tensor to be written: name, dtype, shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorSpec {
    /// The tensor's name.
    pub name: String,
    /// Element type.
    pub dtype: Dtype,
    /// Dimensions (empty for a scalar).
    pub shape: Vec<u64>,
}

impl TensorSpec {
    /// Data bytes (`None` on overflow).
    pub fn nbytes(&self) -> Option<u64> {
        self.shape
            .iter()
            .try_fold(self.dtype.size() as u64, |acc, &d| acc.checked_mul(d))
    }
}

/// Where everything goes in the output file: the header bytes and each tensor's absolute
/// byte range. Tensors are ordered as the safetensors library orders them (dtype rank
/// descending, then name), so that a file without metadata is byte-identical to
/// `safetensors.torch.save_file`'s.
#[derive(Debug, Clone)]
pub struct Layout {
    header: Vec<u8>,
    tensors: Vec<(TensorSpec, u64, u64)>,
    index: BTreeMap<String, usize>,
    total_len: u64,
}

#[derive(serde::Serialize)]
struct EntryJson<'a> {
    dtype: &'a str,
    shape: &'a [u64],
    data_offsets: (u64, u64),
}

impl Layout {
    /// Computes the layout. `metadata` becomes `__metadata__` (omitted when `None`).
    /// Duplicate names and overflowing shapes are errors (reported against `path`).
    pub fn new(
        path: &Path,
        mut specs: Vec<TensorSpec>,
        metadata: Option<&BTreeMap<String, String>>,
    ) -> Result<Layout, SafetensorsError> {
        let invalid = |what: String, name: &str| SafetensorsError::Invalid {
            path: path.to_path_buf(),
            problem: super::Problem::Tensor {
                name: name.to_string(),
                what,
            },
        };
        specs.sort_by(|a, b| {
            b.dtype
                .rank()
                .cmp(&a.dtype.rank())
                .then_with(|| a.name.cmp(&b.name))
        });
        let mut offset = 0u64;
        let mut entries = Vec::with_capacity(specs.len());
        let mut index = BTreeMap::new();
        for (i, spec) in specs.iter().enumerate() {
            if spec.name == "__metadata__" {
                return Err(invalid(
                    "`__metadata__` is reserved and cannot name a tensor".into(),
                    &spec.name,
                ));
            }
            if index.insert(spec.name.clone(), i).is_some() {
                return Err(invalid("appears twice".into(), &spec.name));
            }
            let n = spec
                .nbytes()
                .ok_or_else(|| invalid(format!("shape {:?} overflows", spec.shape), &spec.name))?;
            entries.push((offset, offset + n));
            offset += n;
        }
        // serde_json's map serializer keeps insertion order through `collect_map` on a Vec.
        let mut header = Vec::with_capacity(64 + specs.len() * 96);
        {
            use serde::ser::{SerializeMap, Serializer};
            let mut ser = serde_json::Serializer::new(&mut header);
            let mut map = ser
                .serialize_map(None)
                .expect("serializing to a Vec cannot fail");
            if let Some(meta) = metadata {
                map.serialize_entry("__metadata__", meta)
                    .expect("string map");
            }
            for (spec, &(b, e)) in specs.iter().zip(&entries) {
                let entry = EntryJson {
                    dtype: spec.dtype.as_str(),
                    shape: &spec.shape,
                    data_offsets: (b, e),
                };
                map.serialize_entry(&spec.name, &entry)
                    .expect("plain entry");
            }
            map.end().expect("serializing to a Vec cannot fail");
        }
        // Pad with spaces to a multiple of 8 so the data section is 8-byte aligned.
        while header.len() % 8 != 0 {
            header.push(b' ');
        }
        let data_start = 8 + header.len() as u64;
        let tensors = specs
            .into_iter()
            .zip(entries)
            .map(|(s, (b, e))| (s, data_start + b, data_start + e))
            .collect();
        Ok(Layout {
            header,
            tensors,
            index,
            total_len: data_start + offset,
        })
    }

    /// Tensors in file order with their absolute byte ranges `[start, end)`.
    pub fn tensors(&self) -> impl Iterator<Item = (&TensorSpec, u64, u64)> {
        self.tensors.iter().map(|(s, b, e)| (s, *b, *e))
    }

    /// Index of a tensor in [`Layout::tensors`] order.
    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.index.get(name).copied()
    }

    /// The complete file size.
    pub fn total_len(&self) -> u64 {
        self.total_len
    }
}

/// Writes one safetensors file at precomputed offsets (see the module docs). `&self`
/// methods may be called from many threads at once.
#[derive(Debug)]
pub struct SafetensorsWriter {
    file: File,
    temp: PathBuf,
    dest: PathBuf,
    layout: Layout,
    written: Vec<AtomicU64>,
    writeback: Writeback,
    durable: bool,
    finished: bool,
}

impl SafetensorsWriter {
    /// Creates the temp file next to `dest`, reserves the full size (so a full disk fails
    /// now, not halfway) and writes the header. `dest` must be missing or a regular file
    /// (which is replaced when the writer finishes): a device, FIFO, directory or
    /// symlink is refused, because renaming over it would replace it (as root, even
    /// `/dev/full`). I/O errors name `dest`, never the temp file.
    pub fn create(dest: &Path, layout: Layout) -> Result<SafetensorsWriter, SafetensorsError> {
        check_replaceable(dest)?;
        let dir = fsutil::parent_dir(dest);
        let stem = dest
            .file_name()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        // A soup killed while writing here left its temp file: gone now.
        fsutil::remove_stale_temps(dir, &stem);
        let temp = fsutil::unique_temp_path(dir, &stem);
        let io = SafetensorsError::io;
        let file = fsutil::create_new(&temp).map_err(io("write", dest))?;
        let writer = SafetensorsWriter {
            file,
            written: layout.tensors.iter().map(|_| AtomicU64::new(0)).collect(),
            writeback: Writeback::new(layout.total_len),
            temp,
            dest: dest.to_path_buf(),
            layout,
            durable: true,
            finished: false,
        };
        writer.reserve().map_err(io("reserve space for", dest))?;
        let mut head = Vec::with_capacity(8 + writer.layout.header.len());
        head.extend_from_slice(&(writer.layout.header.len() as u64).to_le_bytes());
        head.extend_from_slice(&writer.layout.header);
        writer
            .file
            .write_all_at(&head, 0)
            .map_err(io("write", dest))?;
        writer.writeback.wrote(&writer.file, 0, head.len() as u64);
        Ok(writer)
    }

    fn reserve(&self) -> std::io::Result<()> {
        fsutil::preallocate(&self.file, self.layout.total_len)
    }

    /// Whether `finish` fsyncs the file (and its directory) before and after the rename,
    /// and whether completed regions are handed to the kernel for writeback while the rest
    /// is still being written. On by default; turning it off keeps the all-or-nothing
    /// rename but gives up durability across a power loss.
    pub fn set_durable(&mut self, durable: bool) {
        self.durable = durable;
    }

    /// Replaces the writeback tracker's window size and in-flight bound (tests use tiny
    /// windows to exercise many of them on small files). Call before writing any tensor.
    #[cfg(test)]
    pub(crate) fn set_writeback_window(&mut self, window: u64, max_in_flight: usize) {
        let header = 8 + self.layout.header.len() as u64;
        self.writeback = Writeback::with_window(self.layout.total_len, window, max_in_flight);
        self.writeback.wrote(&self.file, 0, header);
    }

    /// Windows whose early writeback has been started so far.
    #[cfg(test)]
    pub(crate) fn writeback_windows_started(&self) -> (usize, usize) {
        (self.writeback.windows_started(), self.writeback.windows())
    }

    /// Whether `finish` will fsync (see [`SafetensorsWriter::set_durable`]).
    pub fn is_durable(&self) -> bool {
        self.durable
    }

    /// The layout being written.
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// The temp file being written (renamed to the destination by `finish`).
    pub fn temp_path(&self) -> &Path {
        &self.temp
    }

    /// Writes `bytes` into tensor number `index` (in [`Layout::tensors`] order) starting at
    /// byte `offset` within that tensor. Thread-safe; writes to disjoint ranges may run
    /// concurrently.
    pub fn write_at(
        &self,
        index: usize,
        offset: u64,
        bytes: &[u8],
    ) -> Result<(), SafetensorsError> {
        let (spec, start, end) = &self.layout.tensors[index];
        let at = start + offset;
        if at + bytes.len() as u64 > *end {
            return Err(SafetensorsError::Invalid {
                path: self.dest.clone(),
                problem: super::Problem::Tensor {
                    name: spec.name.clone(),
                    what: format!(
                        "write of {} bytes at offset {offset} overruns the tensor",
                        bytes.len()
                    ),
                },
            });
        }
        self.file
            .write_all_at(bytes, at)
            .map_err(SafetensorsError::io("write", &self.dest))?;
        self.written[index].fetch_add(bytes.len() as u64, Ordering::Relaxed);
        if self.durable {
            self.writeback.wrote(&self.file, at, bytes.len() as u64);
        }
        Ok(())
    }

    /// Writes a whole tensor by name.
    pub fn write_tensor(&self, name: &str, bytes: &[u8]) -> Result<(), SafetensorsError> {
        let index = self
            .layout
            .index_of(name)
            .ok_or_else(|| SafetensorsError::Invalid {
                path: self.dest.clone(),
                problem: super::Problem::Tensor {
                    name: name.to_string(),
                    what: "is not in the layout".into(),
                },
            })?;
        let (_, start, end) = self.layout.tensors[index];
        if bytes.len() as u64 != end - start {
            return Err(SafetensorsError::Invalid {
                path: self.dest.clone(),
                problem: super::Problem::Tensor {
                    name: name.to_string(),
                    what: format!("expected {} bytes, got {}", end - start, bytes.len()),
                },
            });
        }
        self.write_at(index, 0, bytes)
    }

    /// Rewrites the header with different `__metadata__` values of the same serialized
    /// length (e.g. digests that were placeholders when the layout was computed, because
    /// the inputs were still being hashed). Errors if the length would change.
    pub fn replace_metadata(
        &mut self,
        metadata: &BTreeMap<String, String>,
    ) -> Result<(), SafetensorsError> {
        let specs = self
            .layout
            .tensors
            .iter()
            .map(|(s, _, _)| s.clone())
            .collect();
        let layout = Layout::new(&self.dest, specs, Some(metadata))?;
        if layout.header.len() != self.layout.header.len()
            || layout.total_len != self.layout.total_len
        {
            return Err(SafetensorsError::Invalid {
                path: self.dest.clone(),
                problem: super::Problem::Metadata {
                    message: format!(
                        "replacement changes the header length ({} -> {} bytes)",
                        self.layout.header.len(),
                        layout.header.len()
                    ),
                },
            });
        }
        self.file
            .write_all_at(&layout.header, 8)
            .map_err(SafetensorsError::io("write", &self.dest))?;
        self.layout = layout;
        Ok(())
    }

    /// Checks every tensor was completely written, fsyncs, and renames the file into place.
    pub fn finish(mut self) -> Result<(), SafetensorsError> {
        for ((spec, start, end), written) in self.layout.tensors.iter().zip(&self.written) {
            let w = written.load(Ordering::Relaxed);
            if w != end - start {
                return Err(SafetensorsError::Invalid {
                    path: self.dest.clone(),
                    problem: super::Problem::Tensor {
                        name: spec.name.clone(),
                        what: format!("only {w} of {} bytes were written", end - start),
                    },
                });
            }
        }
        let io = SafetensorsError::io;
        if self.durable {
            // A writeback error seen early would not be reported again by fsync.
            if let Some(e) = self.writeback.take_error() {
                return Err(io("write back", &self.dest)(e));
            }
            self.file.sync_all().map_err(io("fsync", &self.dest))?;
        }
        publish(&self.temp, &self.dest, self.durable)?;
        self.finished = true;
        Ok(())
    }
}

impl Drop for SafetensorsWriter {
    fn drop(&mut self) {
        if !self.finished {
            let _ = std::fs::remove_file(&self.temp);
        }
    }
}

/// Renames a completed `temp` (file or directory) to `dest` and, when `durable`, fsyncs
/// the directory so the rename survives a crash.
pub(super) fn publish(temp: &Path, dest: &Path, durable: bool) -> Result<(), SafetensorsError> {
    std::fs::rename(temp, dest).map_err(SafetensorsError::io("rename into place", dest))?;
    if durable {
        let dir = fsutil::parent_dir(dest);
        fsutil::sync_dir(dir).map_err(SafetensorsError::io("fsync", dir))?;
    }
    Ok(())
}

/// Refuses a destination that exists and is not a regular file.
fn check_replaceable(dest: &Path) -> Result<(), SafetensorsError> {
    match std::fs::symlink_metadata(dest) {
        Ok(m) if !m.is_file() => Err(SafetensorsError::Invalid {
            path: dest.to_path_buf(),
            problem: super::Problem::Output {
                what: format!(
                    "is {}, not a regular file: refusing to replace it with the output",
                    fsutil::describe_file_type(m.file_type())
                ),
            },
        }),
        _ => Ok(()),
    }
}

/// Writes a complete safetensors file from in-memory tensors (name, dtype, shape, bytes),
/// atomically. Convenient for small files (tests, fixtures, metadata-only files).
pub fn write_file(
    dest: &Path,
    tensors: &[(&str, Dtype, &[u64], &[u8])],
    metadata: Option<&BTreeMap<String, String>>,
) -> Result<(), SafetensorsError> {
    let specs = tensors
        .iter()
        .map(|(n, d, s, _)| TensorSpec {
            name: n.to_string(),
            dtype: *d,
            shape: s.to_vec(),
        })
        .collect();
    let layout = Layout::new(dest, specs, metadata)?;
    let writer = SafetensorsWriter::create(dest, layout)?;
    for (name, _, _, bytes) in tensors {
        writer.write_tensor(name, bytes)?;
    }
    writer.finish()
}
