//! safetensors files: a validating reader over memory maps and a streaming writer.
//!
//! Format: an 8-byte little-endian header length `N`, `N` bytes of JSON mapping tensor
//! names to `{"dtype", "shape", "data_offsets": [begin, end]}` (offsets relative to the
//! data section that follows the header) plus an optional `"__metadata__"` string map,
//! then the data section.

mod dtype;
mod reader;
pub mod sharded;
mod writer;

use std::path::PathBuf;

pub use dtype::{Dtype, UnknownDtype, ALL_DTYPES};
pub use reader::{SafetensorsFile, TensorInfo, MAX_HEADER_LEN};
pub use sharded::{shard_name, split_into_shards, ShardIndex, ShardedWriter, INDEX_FILE};
pub use writer::{write_file, Layout, SafetensorsWriter, TensorSpec};

/// A safetensors file that cannot be read or written.
#[derive(Debug, thiserror::Error)]
pub enum SafetensorsError {
    /// An I/O error on the named file (the path the caller gave, never a temp file).
    /// The OS error is part of the message, not a separate source, so that it is
    /// printed once.
    #[error("cannot {action} {}: {error}", path.display())]
    Io {
        /// What was being done.
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The underlying error.
        error: std::io::Error,
    },
    /// The file is not a valid safetensors file.
    #[error("{}: {problem}", path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        problem: Problem,
    },
}

impl SafetensorsError {
    /// A closure turning an `io::Error` into [`SafetensorsError::Io`] for `path`.
    pub(crate) fn io(
        action: &'static str,
        path: &std::path::Path,
    ) -> impl FnOnce(std::io::Error) -> SafetensorsError {
        let path = path.to_path_buf();
        move |error| SafetensorsError::Io {
            action,
            path,
            error,
        }
    }
}

/// What is wrong with a safetensors file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    /// Fewer than 8 bytes: not even a header length.
    #[error("file is {len} bytes long, too short for a safetensors header (truncated?)")]
    TooShort {
        /// File size.
        len: u64,
    },
    /// The header length is over [`MAX_HEADER_LEN`].
    #[error("header length {header_len} is larger than the {MAX_HEADER_LEN}-byte limit (corrupt or not a safetensors file)")]
    HeaderTooLarge {
        /// The claimed header length.
        header_len: u64,
    },
    /// The header length points past the end of the file.
    #[error("header length {header_len} exceeds the {available} bytes after the length field (truncated file or lying header)")]
    HeaderPastEnd {
        /// The claimed header length.
        header_len: u64,
        /// Bytes actually available.
        available: u64,
    },
    /// The header is not UTF-8.
    #[error("header is not valid UTF-8 (at byte {at})")]
    HeaderNotUtf8 {
        /// Offset of the first bad byte within the header.
        at: usize,
    },
    /// The header is not the expected JSON.
    #[error("header is not valid safetensors JSON: {message}")]
    HeaderJson {
        /// The parser's message (with line and column).
        message: String,
    },
    /// `__metadata__` is not a string -> string map.
    #[error("__metadata__ {message}")]
    Metadata {
        /// What is wrong.
        message: String,
    },
    /// One tensor's entry is invalid.
    #[error("tensor {name:?}: {what}")]
    Tensor {
        /// The tensor.
        name: String,
        /// What is wrong.
        what: String,
    },
    /// Two tensors share bytes.
    #[error("tensors {first:?} and {second:?} overlap (at data offset {at})")]
    Overlap {
        /// The earlier tensor.
        first: String,
        /// The tensor starting inside it.
        second: String,
        /// Where the second starts.
        at: u64,
    },
    /// Bytes of the data section belong to no tensor.
    #[error("data bytes {start}..{end} belong to no tensor")]
    Gap {
        /// First byte of the hole, as an offset into the data section.
        start: u64,
        /// One past its last byte, as an offset into the data section.
        end: u64,
    },
    /// The output path is something a file must not replace.
    #[error("{what}")]
    Output {
        /// What the path is, and why it is refused.
        what: String,
    },
    /// The data section is longer than the tensors.
    #[error("the data section is {data_len} bytes but the tensors cover only {covered}")]
    TrailingBytes {
        /// Data section size.
        data_len: u64,
        /// Bytes covered by tensors.
        covered: u64,
    },
}

#[cfg(test)]
mod tests;
