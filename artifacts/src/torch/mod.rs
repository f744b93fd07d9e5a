//! `torch.save` files (`.pt`, `.pth`, `.bin`), read without Python and without executing
//! anything.
//!
//! The format since torch 1.6 is an uncompressed zip archive (the private `container` module):
//! `<prefix>/data.pkl` is a pickle of the saved object in which every tensor is a
//! `torch._utils._rebuild_tensor_v2` call on a storage named by a persistent id, and
//! `<prefix>/data/<key>` holds each storage's bytes. [`TorchFile::open`] memory-maps the
//! file, reads the zip directory, interprets the pickle with an allow-list of globals
//! (the private `pickle` module; nothing is imported or called), and checks every storage against its
//! entry. Tensors are then strided views ([`TensorView`]) whose bytes are slices of the
//! map; a view that is not contiguous is gathered on request, and one whose elements
//! overlap (a broadcast, stride 0) is refused.
//!
//! The legacy format of torch < 1.6 and TorchScript archives are recognised and refused
//! with an error that says so.

mod container;
mod pickle;
mod view;

use std::fs::File;
use std::path::{Path, PathBuf};

pub use pickle::{Global, PickleError, Storage, Tensor, Value, MAX_VALUES};
pub use view::TensorView;

use container::Archive;
use pickle::{Id, Pickle};

/// The largest `data.pkl` accepted. A real convnext_xxlarge checkpoint with optimizer
/// state has a pickle of about 300 KB; the limit keeps a hostile one from making the
/// interpreter's arena large.
pub const MAX_PICKLE_BYTES: usize = 64 << 20;

/// A `torch.save` file that cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum TorchError {
    /// An I/O error on the named file.
    #[error("cannot {action} {}: {error}", path.display())]
    Io {
        /// What was being done.
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The underlying error.
        error: std::io::Error,
    },
    /// The file is not a `torch.save` file tureen can read.
    #[error("{}: {problem}", path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        problem: TorchProblem,
    },
}

/// What is wrong with a `torch.save` file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TorchProblem {
    /// The zip container is unreadable or not what `torch.save` writes.
    #[error("{0}")]
    Zip(String),
    /// A format or feature tureen does not read (legacy format, TorchScript...).
    #[error("{0}")]
    Unsupported(String),
    /// The pickle was refused.
    #[error(transparent)]
    Pickle(#[from] PickleError),
    /// `data.pkl` is over [`MAX_PICKLE_BYTES`].
    #[error("data.pkl is {len} bytes, over the {MAX_PICKLE_BYTES}-byte limit (not a checkpoint of tensors?)")]
    PickleTooLarge {
        /// Size of `data.pkl`, in bytes.
        len: usize,
    },
    /// A storage does not match its archive entry.
    #[error("storage {key:?}: {what}")]
    Storage {
        /// The storage key (`data/<key>`).
        key: String,
        /// What is wrong.
        what: String,
    },
    /// A tensor is not a valid view of its storage.
    #[error("tensor {name}: {what}")]
    Tensor {
        /// The tensor's key path.
        name: String,
        /// What is wrong.
        what: String,
    },
    /// The saved object does not have the structure asked for (e.g. `--key`).
    #[error("{0}")]
    Structure(String),
}

/// An open, validated `torch.save` file.
pub struct TorchFile {
    path: PathBuf,
    map: memmap2::Mmap,
    archive: Archive,
    pickle: Pickle,
}

impl std::fmt::Debug for TorchFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TorchFile")
            .field("path", &self.path)
            .field("prefix", &self.archive.prefix)
            .field("len", &self.map.len())
            .finish()
    }
}

impl TorchFile {
    /// Opens and validates a `torch.save` file (zip directory, pickle, storages). A FIFO
    /// or device is refused before it is read.
    pub fn open(path: impl AsRef<Path>) -> Result<TorchFile, TorchError> {
        let path = path.as_ref();
        let io = |action: &'static str| {
            let path = path.to_path_buf();
            move |error| TorchError::Io {
                action,
                path,
                error,
            }
        };
        let file: File = crate::fsutil::open_regular(path).map_err(io("open"))?;
        // SAFETY: read-only map; like every mmap reader we assume the file is not
        // truncated while it is open (checkpoints are written once, then renamed).
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(io("memory-map"))?;
        let (archive, pickle) = parse(&map).map_err(|problem| TorchError::Invalid {
            path: path.to_path_buf(),
            problem,
        })?;
        Ok(TorchFile {
            path: path.to_path_buf(),
            map,
            archive,
            pickle,
        })
    }

    /// The path as given to [`TorchFile::open`].
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The whole file (e.g. to hash it).
    pub fn bytes(&self) -> &[u8] {
        &self.map
    }

    /// The memory map alone, for a reader that has taken what it needs from the pickle
    /// (its value tree is freed).
    pub fn into_map(self) -> memmap2::Mmap {
        self.map
    }

    /// The folder the archive's entries sit in.
    pub fn prefix(&self) -> &str {
        &self.archive.prefix
    }

    /// The saved object.
    pub fn root(&self) -> Node<'_> {
        Node {
            pickle: &self.pickle,
            id: self.pickle.root,
        }
    }

    /// The storage a tensor views.
    pub fn storage(&self, tensor: &Tensor) -> &Storage {
        match self.pickle.value(tensor.storage) {
            Value::Storage(s) => s,
            _ => unreachable!("the interpreter only builds tensors on storages"),
        }
    }

    /// Checks that `tensor` (named `name` in messages) lies within its storage and says
    /// where its bytes are.
    pub fn view(&self, name: &str, tensor: &Tensor) -> Result<TensorView, TorchProblem> {
        let storage = self.storage(tensor);
        let entry = self
            .archive
            .entry(&format!("data/{}", storage.key))
            .expect("storages were checked against their entries when the file was opened");
        TensorView::new(tensor, storage, entry).map_err(|what| TorchProblem::Tensor {
            name: name.to_string(),
            what,
        })
    }

    /// A contiguous view's bytes, straight from the map.
    pub fn contiguous_bytes(&self, view: &TensorView) -> Option<&[u8]> {
        view.contiguous_range().map(|r| &self.map[r])
    }

    /// A view's elements in row-major order, copied (for views that are not contiguous).
    pub fn gather(&self, view: &TensorView) -> Vec<u8> {
        view.gather(&self.map)
    }
}

/// Reads the archive and the pickle and checks every storage against its entry.
fn parse(bytes: &[u8]) -> Result<(Archive, Pickle), TorchProblem> {
    let archive = Archive::read(bytes)?;
    let pkl = archive.entry("data.pkl").expect("checked by Archive::read");
    if pkl.len() > MAX_PICKLE_BYTES {
        return Err(TorchProblem::PickleTooLarge { len: pkl.len() });
    }
    let pickle = pickle::interpret(&bytes[pkl])?;
    for value in &pickle.values {
        let Value::Storage(s) = value else { continue };
        let name = format!("data/{}", s.key);
        let entry = archive.entry(&name).ok_or_else(|| TorchProblem::Storage {
            key: s.key.clone(),
            what: format!("the archive has no entry {}/{name}", archive.prefix),
        })?;
        let needed = s.numel.checked_mul(s.dtype.size() as u64);
        if needed != Some(entry.len() as u64) {
            return Err(TorchProblem::Storage {
                key: s.key.clone(),
                what: format!(
                    "the pickle declares {} elements of {} but {}/{name} holds {} bytes (truncated or corrupt)",
                    s.numel,
                    s.dtype,
                    archive.prefix,
                    entry.len()
                ),
            });
        }
    }
    Ok((archive, pickle))
}

/// Whether a file's first bytes look like a zip archive or a pickle, i.e. something
/// [`TorchFile::open`] reads or explains (format detection by content: store objects
/// have no file extension).
pub fn looks_like_torch(head: &[u8]) -> bool {
    container::looks_like_torch(head)
}

/// A value in the saved object, for walking it (state dicts, optimizer state).
#[derive(Clone, Copy)]
pub struct Node<'a> {
    pickle: &'a Pickle,
    id: Id,
}

impl std::fmt::Debug for Node<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Node({})", self.kind())
    }
}

impl<'a> Node<'a> {
    /// The unpickled value this node stands for.
    pub fn value(&self) -> &'a Value {
        self.pickle.value(self.id)
    }

    /// "a dict", "a tensor", ... for messages.
    pub fn kind(&self) -> &'static str {
        self.value().kind()
    }

    fn node(&self, id: Id) -> Node<'a> {
        Node {
            pickle: self.pickle,
            id,
        }
    }

    /// A dict's entries in order (`None` if this is not a dict).
    pub fn entries(&self) -> Option<impl Iterator<Item = (Node<'a>, Node<'a>)> + 'a> {
        let pickle = self.pickle;
        match self.value() {
            Value::Dict(d) => Some(
                d.entries
                    .iter()
                    .map(move |&(k, v)| (Node { pickle, id: k }, Node { pickle, id: v })),
            ),
            _ => None,
        }
    }

    /// The value of a dict's string key.
    pub fn get(&self, key: &str) -> Option<Node<'a>> {
        self.entries()?
            .find(|(k, _)| k.as_str() == Some(key))
            .map(|(_, v)| v)
    }

    /// The value of a dict's int key.
    pub fn get_int(&self, key: i64) -> Option<Node<'a>> {
        self.entries()?
            .find(|(k, _)| k.as_int() == Some(key))
            .map(|(_, v)| v)
    }

    /// A list's or tuple's items.
    pub fn items(&self) -> Option<Vec<Node<'a>>> {
        match self.value() {
            Value::List(v) | Value::Tuple(v) => Some(v.iter().map(|&id| self.node(id)).collect()),
            _ => None,
        }
    }

    /// A string's text; `None` for any other value (bytes included).
    pub fn as_str(&self) -> Option<&'a str> {
        match self.value() {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    /// An int's value; `None` for any other value (a float is not truncated).
    pub fn as_int(&self) -> Option<i64> {
        match self.value() {
            Value::Int(i) => Some(*i),
            _ => None,
        }
    }

    /// A float, or an int taken as a float (Python mixes them freely).
    pub fn as_f64(&self) -> Option<f64> {
        match self.value() {
            Value::Float(f) => Some(*f),
            Value::Int(i) => Some(*i as f64),
            _ => None,
        }
    }

    /// A bool's value; `None` for any other value (ints are not taken as bools).
    pub fn as_bool(&self) -> Option<bool> {
        match self.value() {
            Value::Bool(b) => Some(*b),
            _ => None,
        }
    }

    /// A tensor's description (storage, offset, shape, strides); `None` for any other
    /// value. Its bytes come from [`TorchFile::view`].
    pub fn as_tensor(&self) -> Option<&'a Tensor> {
        match self.value() {
            Value::Tensor(t) => Some(t),
            _ => None,
        }
    }

    /// A short rendering of a scalar (`3`, `"epoch_3"`, `0.001`, `True`), `None` for
    /// containers and tensors.
    pub fn scalar_text(&self) -> Option<String> {
        Some(match self.value() {
            Value::None => "None".into(),
            Value::Bool(b) => if *b { "True" } else { "False" }.into(),
            Value::Int(i) => i.to_string(),
            Value::Float(f) => format!("{f:?}"),
            Value::Str(s) => format!("{s:?}"),
            _ => return None,
        })
    }

    /// "a dict of 3 entries", "a tensor", ... for listings.
    pub fn summary(&self) -> String {
        match self.value() {
            Value::Dict(d) => format!("a dict of {} entries", d.entries.len()),
            Value::List(v) => format!("a list of {}", v.len()),
            Value::Tuple(v) => format!("a tuple of {}", v.len()),
            other => self
                .scalar_text()
                .unwrap_or_else(|| other.kind().to_string()),
        }
    }
}

#[cfg(test)]
mod tests;
#[cfg(test)]
pub(crate) mod testutil;
