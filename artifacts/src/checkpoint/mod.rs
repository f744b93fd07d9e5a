//! Checkpoints in every format tureen reads, behind one interface: named tensors whose
//! bytes are slices of memory-mapped files.
//!
//! | given | read as |
//! |---|---|
//! | a `.safetensors` file | [`Format::Safetensors`] |
//! | a `*.safetensors.index.json`, or a directory holding one | [`Format::ShardedSafetensors`] (every shard memory-mapped) |
//! | a directory holding `model.safetensors` (a training checkpoint) | that file |
//! | a `torch.save` file (`.pt`, `.pth`, `.bin`, or a store object without extension) | [`Format::Torch`]: the state dict found in it (see [`select`]) |
//!
//! Files are recognised by content, not by extension (store objects have none). Tensor
//! data is never copied, except for the rare `torch.save` tensor that is a
//! non-contiguous view, which is gathered once when the file is opened (at most the
//! file's size in all). A soup over [`Checkpoint`]s therefore streams from the page cache
//! whatever the inputs' formats.

pub mod select;

use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::path::{Path, PathBuf};

use rayon::prelude::*;

use crate::safetensors::{Dtype, SafetensorsError, SafetensorsFile, ShardIndex, INDEX_FILE};
use crate::torch::{TorchError, TorchFile};
use crate::{fsutil, Digest};

pub use select::{Selection, StateDictPath};

/// The weights file of a checkpoint directory (a training checkpoint, or a Hugging
/// Face model directory that is not sharded).
pub const MODEL_FILE: &str = "model.safetensors";

/// The formats a [`Checkpoint`] can be read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// One safetensors file.
    Safetensors,
    /// Shards listed by a `*.safetensors.index.json`.
    ShardedSafetensors,
    /// A `torch.save` zip archive.
    Torch,
}

impl Format {
    /// How the format is named in messages and by `tureen inspect`.
    pub fn name(self) -> &'static str {
        match self {
            Format::Safetensors => "safetensors",
            Format::ShardedSafetensors => "sharded safetensors",
            Format::Torch => "torch.save (zip)",
        }
    }
}

/// How to read a `torch.save` file (ignored for safetensors, which hold one flat map).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OpenOptions {
    /// Where the state dict is in the saved object (`--key`); default: the first of
    /// `state_dict`, `model`, `module` that holds a dict of tensors, else the top level.
    pub key: Option<StateDictPath>,
    /// Keep a `module.` prefix shared by every name (DDP) instead of stripping it.
    pub keep_prefix: bool,
}

/// A checkpoint that cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// A safetensors file (or shard) is invalid or unreadable.
    #[error(transparent)]
    Safetensors(#[from] SafetensorsError),
    /// A `torch.save` file is invalid, unsupported or unreadable.
    #[error(transparent)]
    Torch(#[from] TorchError),
    /// An I/O error on the named path.
    #[error("cannot {action} {}: {error}", path.display())]
    Io {
        /// What was being done.
        action: &'static str,
        /// The path.
        path: PathBuf,
        /// The OS error.
        error: std::io::Error,
    },
    /// The path is not a checkpoint of a shape tureen reads (a directory without
    /// weights, an index naming a missing tensor, a `--key` that leads nowhere...).
    #[error("{}: {message}", path.display())]
    Invalid {
        /// The file or directory.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

/// One tensor of a checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Its name (the state-dict key, after any prefix stripping).
    pub name: String,
    /// Element type.
    pub dtype: Dtype,
    /// Dimensions (empty for a scalar).
    pub shape: Vec<u64>,
    part: usize,
    start: usize,
    end: usize,
}

impl Entry {
    /// Number of elements (1 for a scalar).
    pub fn numel(&self) -> u64 {
        self.shape.iter().product()
    }

    /// Number of data bytes.
    pub fn nbytes(&self) -> u64 {
        (self.end - self.start) as u64
    }
}

/// Where tensor bytes live.
enum Part {
    Safetensors(SafetensorsFile),
    /// A `torch.save` file's map (its pickle is not kept: a soup of 2.4 GB `.pt` files
    /// then holds no more private memory than one of safetensors).
    Map(memmap2::Mmap),
    /// Gathered non-contiguous `torch.save` views.
    Owned(Vec<u8>),
}

impl Part {
    fn bytes(&self) -> &[u8] {
        match self {
            Part::Safetensors(f) => f.bytes(),
            Part::Map(m) => m,
            Part::Owned(v) => v,
        }
    }
}

/// An open checkpoint (see the module docs).
pub struct Checkpoint {
    path: PathBuf,
    format: Format,
    parts: Vec<Part>,
    /// Relative name and part of each file read, for the digest.
    files: Vec<(String, usize)>,
    tensors: Vec<Entry>,
    by_name: HashMap<String, usize>,
    metadata: BTreeMap<String, String>,
    selection: Option<Selection>,
}

impl std::fmt::Debug for Checkpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Checkpoint")
            .field("path", &self.path)
            .field("format", &self.format)
            .field("tensors", &self.tensors.len())
            .finish()
    }
}

impl Checkpoint {
    /// Opens a checkpoint file or directory in any supported format.
    pub fn open(path: &Path, opts: &OpenOptions) -> Result<Checkpoint, CheckpointError> {
        let meta = std::fs::metadata(path).map_err(|error| CheckpointError::Io {
            action: "open",
            path: path.to_path_buf(),
            error,
        })?;
        if meta.is_dir() {
            return Checkpoint::open_dir(path, opts);
        }
        match sniff(path)? {
            Format::Torch => Checkpoint::open_torch(path, opts),
            Format::ShardedSafetensors => Checkpoint::open_sharded(path, opts),
            Format::Safetensors => Checkpoint::open_safetensors(path, opts),
        }
    }

    fn open_dir(dir: &Path, opts: &OpenOptions) -> Result<Checkpoint, CheckpointError> {
        let index = dir.join(INDEX_FILE);
        if index.is_file() {
            return Checkpoint::open_sharded(&index, opts);
        }
        let indexes = files_ending_with(dir, ".safetensors.index.json")?;
        match indexes.as_slice() {
            [one] => return Checkpoint::open_sharded(one, opts),
            [] => {}
            many => {
                return Err(invalid(
                    dir,
                    format!(
                        "holds {} shard indexes ({}); name the one to read",
                        many.len(),
                        names(many)
                    ),
                ))
            }
        }
        let single = dir.join(MODEL_FILE);
        if single.is_file() {
            return Checkpoint::open_safetensors(&single, opts);
        }
        Err(invalid(
            dir,
            format!("is a directory without {MODEL_FILE} or {INDEX_FILE} (or another *.safetensors.index.json); give the checkpoint file itself"),
        ))
    }

    fn open_safetensors(path: &Path, opts: &OpenOptions) -> Result<Checkpoint, CheckpointError> {
        refuse_torch_options(path, opts, Format::Safetensors)?;
        let file = SafetensorsFile::open(path)?;
        let mut ckpt = Checkpoint::new(path, Format::Safetensors);
        ckpt.metadata = file.metadata().cloned().unwrap_or_default();
        let name = file_name(path);
        ckpt.add_safetensors(file, name);
        ckpt.index()?;
        Ok(ckpt)
    }

    fn open_sharded(index: &Path, opts: &OpenOptions) -> Result<Checkpoint, CheckpointError> {
        refuse_torch_options(index, opts, Format::ShardedSafetensors)?;
        let idx = ShardIndex::read(index)?;
        let dir = fsutil::parent_dir(index);
        let mut ckpt = Checkpoint::new(index, Format::ShardedSafetensors);
        ckpt.files.push((file_name(index), 0));
        ckpt.parts.push(Part::Owned(idx.bytes.clone()));
        let shards = idx.shards();
        let opened: Vec<SafetensorsFile> = shards
            .par_iter()
            .map(|s| SafetensorsFile::open(dir.join(s)))
            .collect::<Result<_, _>>()?;
        for (shard, file) in shards.iter().zip(opened) {
            for t in file.tensors() {
                match idx.weight_map.get(&t.name) {
                    Some(listed) if listed == shard => {}
                    Some(listed) => {
                        return Err(invalid(
                            index,
                            format!(
                                "tensor {:?} is in shard {shard} but the index puts it in {listed}",
                                t.name
                            ),
                        ))
                    }
                    None => {
                        return Err(invalid(
                            index,
                            format!(
                                "shard {shard} holds tensor {:?}, which the index does not list",
                                t.name
                            ),
                        ))
                    }
                }
            }
            for (k, v) in file.metadata().into_iter().flatten() {
                ckpt.metadata.entry(k.clone()).or_insert_with(|| v.clone());
            }
            ckpt.add_safetensors(file, shard.to_string());
        }
        if let Some(missing) = idx.weight_map.keys().find(|n| !ckpt.has_entry(n)) {
            let shard = &idx.weight_map[missing];
            return Err(invalid(
                index,
                format!("the index lists tensor {missing:?} in {shard}, which does not hold it"),
            ));
        }
        ckpt.index()?;
        Ok(ckpt)
    }

    fn open_torch(path: &Path, opts: &OpenOptions) -> Result<Checkpoint, CheckpointError> {
        let file = TorchFile::open(path)?;
        let mut selection =
            select::select(&file, opts).map_err(|message| invalid(path, message))?;
        let mut ckpt = Checkpoint::new(path, Format::Torch);
        let mut owned = Vec::new();
        let mut gathered = 0u64;
        for (name, tensor) in &selection.tensors {
            let view = file
                .view(&selection.display_name(name), tensor)
                .map_err(|problem| TorchError::Invalid {
                    path: path.to_path_buf(),
                    problem,
                })?;
            let (part, start, end) = if let Some(r) = view.contiguous_range() {
                (0, r.start, r.end)
            } else {
                gathered += view.nbytes();
                if gathered > file.bytes().len() as u64 {
                    return Err(invalid(path, format!("its non-contiguous tensors add up to more than the file's size ({gathered} bytes); tensor {name:?} is not gathered")));
                }
                owned.push(file.gather(&view));
                let n = owned.last().map_or(0, Vec::len);
                (owned.len(), 0, n)
            };
            ckpt.tensors.push(Entry {
                name: name.clone(),
                dtype: view.dtype,
                shape: view.shape.clone(),
                part,
                start,
                end,
            });
        }
        ckpt.files.push((file_name(path), 0));
        ckpt.parts.push(Part::Map(file.into_map()));
        ckpt.parts.extend(owned.into_iter().map(Part::Owned));
        // The entries say all there is to say about the tensors now.
        selection.tensors = Vec::new();
        ckpt.selection = Some(selection);
        ckpt.index()?;
        Ok(ckpt)
    }

    fn new(path: &Path, format: Format) -> Checkpoint {
        Checkpoint {
            path: path.to_path_buf(),
            format,
            parts: Vec::new(),
            files: Vec::new(),
            tensors: Vec::new(),
            by_name: HashMap::new(),
            metadata: BTreeMap::new(),
            selection: None,
        }
    }

    fn add_safetensors(&mut self, file: SafetensorsFile, name: String) {
        let part = self.parts.len();
        let base = file.bytes().as_ptr() as usize;
        for t in file.tensors() {
            let data = file.data(t);
            let start = data.as_ptr() as usize - base;
            self.tensors.push(Entry {
                name: t.name.clone(),
                dtype: t.dtype,
                shape: t.shape.clone(),
                part,
                start,
                end: start + data.len(),
            });
        }
        self.files.push((name, part));
        self.parts.push(Part::Safetensors(file));
    }

    fn has_entry(&self, name: &str) -> bool {
        self.tensors.iter().any(|t| t.name == name)
    }

    fn index(&mut self) -> Result<(), CheckpointError> {
        for (i, t) in self.tensors.iter().enumerate() {
            if t.name == "__metadata__" {
                return Err(invalid(
                    &self.path,
                    "a tensor is named `__metadata__`, which safetensors reserves".into(),
                ));
            }
            if self.by_name.insert(t.name.clone(), i).is_some() {
                return Err(invalid(
                    &self.path,
                    format!("tensor {:?} appears twice", t.name),
                ));
            }
        }
        Ok(())
    }

    /// The path as given (for a sharded checkpoint, its index file).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The format it was read from.
    pub fn format(&self) -> Format {
        self.format
    }

    /// Every tensor, in file (or state-dict) order.
    pub fn tensors(&self) -> &[Entry] {
        &self.tensors
    }

    /// One tensor by name.
    pub fn get(&self, name: &str) -> Option<&Entry> {
        self.by_name.get(name).map(|&i| &self.tensors[i])
    }

    /// A tensor's bytes (little-endian elements).
    pub fn data(&self, entry: &Entry) -> &[u8] {
        &self.parts[entry.part].bytes()[entry.start..entry.end]
    }

    /// The safetensors `__metadata__` (merged over shards; empty for `torch.save`).
    pub fn metadata(&self) -> &BTreeMap<String, String> {
        &self.metadata
    }

    /// For a `torch.save` file: where the state dict was and what else the file holds.
    pub fn selection(&self) -> Option<&Selection> {
        self.selection.as_ref()
    }

    /// The one file this checkpoint was read from, when it is one file (not sharded).
    pub fn single_file(&self) -> Option<&Path> {
        match self.format {
            Format::ShardedSafetensors => None,
            Format::Safetensors | Format::Torch => Some(&self.path),
        }
    }

    /// BLAKE3 of what was read: the file's bytes for a single file (as `b3sum`); for a
    /// sharded checkpoint, the digest of the tree manifest of the index and the shards
    /// (what `tureen store add` gives a directory holding exactly those files).
    pub fn digest(&self) -> Digest {
        let files: Vec<&[u8]> = self
            .files
            .iter()
            .map(|&(_, p)| self.file_bytes(p))
            .collect();
        if let (Format::Safetensors | Format::Torch, [one]) = (self.format, files.as_slice()) {
            return Digest::of_slice_parallel(one);
        }
        let mut tree = crate::store::Tree::new();
        for ((name, _), bytes) in self.files.iter().zip(files) {
            tree.files
                .insert(name.clone(), Digest::of_slice_parallel(bytes));
        }
        Digest::of_bytes(&tree.to_bytes())
    }

    fn file_bytes(&self, part: usize) -> &[u8] {
        self.parts[part].bytes()
    }

    /// The files read, relative to the checkpoint (one, or the index and the shards).
    pub fn files(&self) -> impl Iterator<Item = &str> {
        self.files.iter().map(|(name, _)| name.as_str())
    }

    /// Bytes of all tensor data.
    pub fn data_bytes(&self) -> u64 {
        self.tensors.iter().map(Entry::nbytes).sum()
    }
}

fn invalid(path: &Path, message: String) -> CheckpointError {
    CheckpointError::Invalid {
        path: path.to_path_buf(),
        message,
    }
}

fn refuse_torch_options(
    path: &Path,
    opts: &OpenOptions,
    format: Format,
) -> Result<(), CheckpointError> {
    if opts.key.is_some() {
        return Err(invalid(
            path,
            format!(
                "is {}: --key picks a state dict inside a torch.save file",
                format.name()
            ),
        ));
    }
    Ok(())
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.display().to_string())
}

fn names(paths: &[PathBuf]) -> String {
    paths
        .iter()
        .map(|p| file_name(p))
        .collect::<Vec<_>>()
        .join(", ")
}

fn files_ending_with(dir: &Path, suffix: &str) -> Result<Vec<PathBuf>, CheckpointError> {
    let rd = std::fs::read_dir(dir).map_err(|error| CheckpointError::Io {
        action: "list",
        path: dir.to_path_buf(),
        error,
    })?;
    let mut found: Vec<PathBuf> = rd
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_file() && file_name(p).ends_with(suffix))
        .collect();
    found.sort();
    Ok(found)
}

/// What a file is, from its first bytes: a safetensors header (8-byte length, then
/// `{`), a zip archive or pickle (torch.save or something it explains), or a JSON
/// shard index. Anything else is handed to the safetensors reader, whose errors say
/// precisely what is wrong.
fn sniff(path: &Path) -> Result<Format, CheckpointError> {
    let mut file = fsutil::open_regular(path).map_err(|error| CheckpointError::Io {
        action: "open",
        path: path.to_path_buf(),
        error,
    })?;
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let mut head = [0u8; 9];
    let mut got = 0;
    while got < head.len() {
        match file.read(&mut head[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(error) => {
                return Err(CheckpointError::Io {
                    action: "read",
                    path: path.to_path_buf(),
                    error,
                })
            }
        }
    }
    let head = &head[..got];
    if head.len() == 9 {
        let header_len = u64::from_le_bytes(head[..8].try_into().expect("8 bytes"));
        if head[8] == b'{' && header_len.checked_add(8).is_some_and(|n| n <= len) {
            return Ok(Format::Safetensors);
        }
    }
    if crate::torch::looks_like_torch(head) {
        return Ok(Format::Torch);
    }
    if head.first() == Some(&b'{') || file_name(path).ends_with(".json") {
        return Ok(Format::ShardedSafetensors);
    }
    Ok(Format::Safetensors)
}

#[cfg(test)]
mod tests;
