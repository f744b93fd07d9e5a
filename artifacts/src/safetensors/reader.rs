//! A validating safetensors reader over a memory map.
//!
//! Nothing in the header is trusted until all of it has been checked: the 8-byte header
//! length against the file size (and a 100 MB cap), the JSON shape, every dtype, every
//! shape's element count (overflow-checked), every `data_offsets` pair against the data
//! section, and that the tensors tile the data section exactly (no overlaps, no holes).
//! Only then are tensor bytes handed out, as slices of the map. No allocation is ever sized
//! by a number read from the file.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};

use serde::de::{self, MapAccess, Visitor};

use super::{Dtype, Problem, SafetensorsError};

/// The largest header we accept (the reference implementation's limit).
pub const MAX_HEADER_LEN: u64 = 100_000_000;

/// One tensor's header entry, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorInfo {
    /// The tensor's name (key in the header).
    pub name: String,
    /// Element type.
    pub dtype: Dtype,
    /// Dimensions (empty for a scalar).
    pub shape: Vec<u64>,
    /// Byte range relative to the start of the data section.
    pub data_offsets: (u64, u64),
}

impl TensorInfo {
    /// Number of elements (1 for a scalar).
    pub fn numel(&self) -> u64 {
        self.shape.iter().product()
    }

    /// Number of data bytes.
    pub fn nbytes(&self) -> u64 {
        self.data_offsets.1 - self.data_offsets.0
    }
}

/// An open, fully validated safetensors file. Tensor data is read straight from the
/// memory map; opening a 10 GB checkpoint costs a header parse.
pub struct SafetensorsFile {
    path: PathBuf,
    map: memmap2::Mmap,
    data_start: usize,
    tensors: Vec<TensorInfo>,
    by_name: HashMap<String, usize>,
    metadata: Option<BTreeMap<String, String>>,
}

impl fmt::Debug for SafetensorsFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SafetensorsFile")
            .field("path", &self.path)
            .field("tensors", &self.tensors.len())
            .field("len", &self.map.len())
            .finish()
    }
}

impl SafetensorsFile {
    /// Opens and validates a safetensors file. Every problem is an error naming the file
    /// (and the tensor, where there is one).
    pub fn open(path: impl AsRef<Path>) -> Result<SafetensorsFile, SafetensorsError> {
        let path = path.as_ref();
        let io = |action| SafetensorsError::io(action, path);
        // Never blocks on a FIFO and never reads a device: refused before any read.
        let file = crate::fsutil::open_regular(path).map_err(io("open"))?;
        let len = file.metadata().map_err(io("stat"))?.len();
        let invalid = |problem| SafetensorsError::Invalid {
            path: path.to_path_buf(),
            problem,
        };
        if len < 8 {
            return Err(invalid(Problem::TooShort { len }));
        }
        // SAFETY: the map is read-only. Like every mmap reader (the safetensors library
        // included) we assume the file is not truncated while we hold it; checkpoints are
        // written once and renamed into place.
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(io("memory-map"))?;
        let header = parse_header(&map).map_err(invalid)?;
        Ok(SafetensorsFile {
            path: path.to_path_buf(),
            data_start: header.data_start,
            by_name: header
                .tensors
                .iter()
                .enumerate()
                .map(|(i, t)| (t.name.clone(), i))
                .collect(),
            tensors: header.tensors,
            metadata: header.metadata,
            map,
        })
    }

    /// The file's path as given to [`SafetensorsFile::open`].
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// All tensors, in data-section order.
    pub fn tensors(&self) -> &[TensorInfo] {
        &self.tensors
    }

    /// One tensor's header entry by name.
    pub fn get(&self, name: &str) -> Option<&TensorInfo> {
        self.by_name.get(name).map(|&i| &self.tensors[i])
    }

    /// The `__metadata__` string map, if the file has one.
    pub fn metadata(&self) -> Option<&BTreeMap<String, String>> {
        self.metadata.as_ref()
    }

    /// A tensor's bytes (little-endian elements), straight from the map.
    pub fn data(&self, tensor: &TensorInfo) -> &[u8] {
        let start = self.data_start + tensor.data_offsets.0 as usize;
        let end = self.data_start + tensor.data_offsets.1 as usize;
        &self.map[start..end]
    }

    /// The whole file's bytes (header included), e.g. to hash it.
    pub fn bytes(&self) -> &[u8] {
        &self.map
    }

    /// Total file size in bytes.
    pub fn len(&self) -> u64 {
        self.map.len() as u64
    }

    /// Whether the file holds no tensors.
    pub fn is_empty(&self) -> bool {
        self.tensors.is_empty()
    }

    /// Advises the kernel that the data will be read sequentially (more read-ahead).
    pub fn advise_sequential(&self) {
        let _ = self.map.advise(memmap2::Advice::Sequential);
    }
}

/// A validated header.
pub(crate) struct Header {
    pub(crate) data_start: usize,
    pub(crate) tensors: Vec<TensorInfo>,
    pub(crate) metadata: Option<BTreeMap<String, String>>,
}

/// Validates the header of a complete safetensors file image.
pub(crate) fn parse_header(bytes: &[u8]) -> Result<Header, Problem> {
    let len = bytes.len() as u64;
    if len < 8 {
        return Err(Problem::TooShort { len });
    }
    let header_len = u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes"));
    if header_len > MAX_HEADER_LEN {
        return Err(Problem::HeaderTooLarge { header_len });
    }
    if header_len > len - 8 {
        return Err(Problem::HeaderPastEnd {
            header_len,
            available: len - 8,
        });
    }
    let data_start = 8 + header_len as usize;
    let text = std::str::from_utf8(&bytes[8..data_start]).map_err(|e| Problem::HeaderNotUtf8 {
        at: e.valid_up_to(),
    })?;
    if !text.starts_with('{') {
        return Err(Problem::HeaderJson {
            message: "the header must be a JSON object starting with `{`".into(),
        });
    }
    let raw: RawHeader = serde_json::from_str(text).map_err(|e| Problem::HeaderJson {
        message: e.to_string(),
    })?;

    let data_len = len - data_start as u64;
    let mut metadata = None;
    let mut tensors = Vec::with_capacity(raw.0.len());
    for (name, value) in raw.0 {
        if name == "__metadata__" {
            metadata = Some(parse_metadata(value)?);
            continue;
        }
        tensors.push(parse_entry(name, value, data_len)?);
    }

    // The tensors must tile the data section: sorted by start, each begins where the
    // previous one ended, and the last ends at the end of the file.
    tensors.sort_by(|a, b| {
        a.data_offsets
            .cmp(&b.data_offsets)
            .then_with(|| a.name.cmp(&b.name))
    });
    let mut cursor = 0u64;
    let mut prev: Option<&TensorInfo> = None;
    for t in &tensors {
        let (begin, end) = t.data_offsets;
        if begin < cursor {
            let other = prev.map(|p| p.name.clone()).unwrap_or_default();
            return Err(Problem::Overlap {
                first: other,
                second: t.name.clone(),
                at: begin,
            });
        }
        if begin > cursor {
            return Err(Problem::Gap {
                start: cursor,
                end: begin,
            });
        }
        cursor = end;
        prev = Some(t);
    }
    if cursor != data_len {
        return Err(Problem::TrailingBytes {
            data_len,
            covered: cursor,
        });
    }
    Ok(Header {
        data_start,
        tensors,
        metadata,
    })
}

fn parse_metadata(value: serde_json::Value) -> Result<BTreeMap<String, String>, Problem> {
    let serde_json::Value::Object(map) = value else {
        return Err(Problem::Metadata {
            message: format!("must be an object of strings, found {}", kind(&value)),
        });
    };
    map.into_iter()
        .map(|(k, v)| match v {
            serde_json::Value::String(s) => Ok((k, s)),
            other => Err(Problem::Metadata {
                message: format!("value of {k:?} must be a string, found {}", kind(&other)),
            }),
        })
        .collect()
}

fn parse_entry(
    name: String,
    value: serde_json::Value,
    data_len: u64,
) -> Result<TensorInfo, Problem> {
    let bad = |what: String| Problem::Tensor {
        name: name.clone(),
        what,
    };
    let serde_json::Value::Object(fields) = value else {
        return Err(bad(format!(
            "entry must be an object, found {}",
            kind(&value)
        )));
    };
    for key in fields.keys() {
        if !matches!(key.as_str(), "dtype" | "shape" | "data_offsets") {
            return Err(bad(format!(
                "unexpected field {key:?} (expected dtype, shape, data_offsets)"
            )));
        }
    }
    let dtype = match fields.get("dtype") {
        Some(serde_json::Value::String(s)) => s.parse::<Dtype>().map_err(|e| bad(e.to_string()))?,
        Some(other) => {
            return Err(bad(format!(
                "dtype must be a string, found {}",
                kind(other)
            )))
        }
        None => return Err(bad("missing field \"dtype\"".into())),
    };
    let shape = match fields.get("shape") {
        Some(serde_json::Value::Array(dims)) => dims
            .iter()
            .map(|d| {
                d.as_u64().ok_or_else(|| {
                    bad(format!(
                        "shape entries must be non-negative integers, found {d}"
                    ))
                })
            })
            .collect::<Result<Vec<u64>, _>>()?,
        Some(other) => {
            return Err(bad(format!(
                "shape must be an array, found {}",
                kind(other)
            )))
        }
        None => return Err(bad("missing field \"shape\"".into())),
    };
    let data_offsets = match fields.get("data_offsets") {
        Some(serde_json::Value::Array(pair)) if pair.len() == 2 => {
            match (pair[0].as_u64(), pair[1].as_u64()) {
                (Some(b), Some(e)) => (b, e),
                _ => return Err(bad("data_offsets must be two non-negative integers".into())),
            }
        }
        Some(_) => return Err(bad("data_offsets must be an array [begin, end]".into())),
        None => return Err(bad("missing field \"data_offsets\"".into())),
    };
    let (begin, end) = data_offsets;
    if begin > end {
        return Err(bad(format!(
            "data_offsets [{begin}, {end}] end before they begin"
        )));
    }
    if end > data_len {
        return Err(bad(format!(
            "data_offsets [{begin}, {end}] reach past the end of the data section ({data_len} bytes; truncated file?)"
        )));
    }
    let nbytes = shape
        .iter()
        .try_fold(1u64, |acc, &d| acc.checked_mul(d))
        .and_then(|n| n.checked_mul(dtype.size() as u64))
        .ok_or_else(|| bad(format!("shape {shape:?} of {dtype} overflows 64 bits")))?;
    if nbytes != end - begin {
        return Err(bad(format!(
            "shape {shape:?} of {dtype} needs {nbytes} bytes but data_offsets [{begin}, {end}] hold {}",
            end - begin
        )));
    }
    Ok(TensorInfo {
        name,
        dtype,
        shape,
        data_offsets,
    })
}

fn kind(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

/// The top-level header object as (key, value) pairs, rejecting duplicate keys (which
/// `serde_json::Map` would silently collapse, hiding a second, conflicting entry).
struct RawHeader(Vec<(String, serde_json::Value)>);

impl<'de> serde::Deserialize<'de> for RawHeader {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<RawHeader, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawHeader;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object mapping tensor names to entries")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawHeader, A::Error> {
                let mut seen = std::collections::HashSet::new();
                let mut out = Vec::new();
                while let Some((k, v)) = map.next_entry::<String, serde_json::Value>()? {
                    if !seen.insert(k.clone()) {
                        return Err(de::Error::custom(format!("duplicate key {k:?}")));
                    }
                    out.push((k, v));
                }
                Ok(RawHeader(out))
            }
        }
        d.deserialize_map(V)
    }
}
