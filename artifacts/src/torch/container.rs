//! The zip container of a `torch.save` file (torch >= 1.6): which entries it holds and
//! where each one's bytes are in the file.
//!
//! The `zip` crate reads the central directory and each entry's local header; tureen then
//! takes every entry's payload as a byte range of the memory-mapped file, so a multi-GB
//! storage is never copied. torch writes every entry STORED (uncompressed) and pads local
//! headers so that storages start on 64-byte boundaries; a compressed entry is refused.

use std::collections::HashMap;
use std::io::Cursor;
use std::ops::Range;

use super::TorchProblem;

/// The first bytes of a zip file (a local file header).
const ZIP_MAGIC: &[u8] = b"PK\x03\x04";

/// The magic number `torch.save` wrote before torch 1.6, as pickled right after `PROTO`
/// (`LONG1` of 10 bytes): the legacy format is a sequence of pickles, not a zip.
const LEGACY_MAGIC: &[u8] = b"\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19";

/// The entries of one archive, by name relative to its prefix folder.
#[derive(Debug)]
pub(crate) struct Archive {
    /// The folder every entry sits in (`archive` or the file's stem when saved).
    pub(crate) prefix: String,
    entries: HashMap<String, Range<usize>>,
}

impl Archive {
    /// Reads the directory of the archive in `bytes` (the whole file).
    pub(crate) fn read(bytes: &[u8]) -> Result<Archive, TorchProblem> {
        sniff(bytes)?;
        let mut zip = zip::ZipArchive::new(Cursor::new(bytes))
            .map_err(|e| TorchProblem::Zip(format!("not a readable zip archive: {e}")))?;
        if zip.file_names().any(is_torchscript_entry) {
            return Err(TorchProblem::Unsupported(
                "a TorchScript archive (torch.jit.save) is not supported; load it in Python and torch.save its state_dict()".into(),
            ));
        }
        let mut prefix: Option<String> = None;
        let mut entries = HashMap::new();
        for i in 0..zip.len() {
            let entry = zip.by_index_raw(i).map_err(|e| {
                TorchProblem::Zip(format!(
                    "entry {i}: cannot read its local header (wrong offsets in the zip directory, or a truncated file): {e}"
                ))
            })?;
            let full = entry.name().to_string();
            if entry.is_dir() {
                continue;
            }
            let (head, rest) = full.split_once('/').ok_or_else(|| {
                TorchProblem::Zip(format!(
                    "entry {full:?} is not inside a folder (torch.save puts every entry under one)"
                ))
            })?;
            match &prefix {
                None => prefix = Some(head.to_string()),
                Some(p) if p != head => {
                    return Err(TorchProblem::Zip(format!(
                        "entries under two folders, {p:?} and {head:?} (torch.save writes one)"
                    )))
                }
                Some(_) => {}
            }
            if entry.compression() != zip::CompressionMethod::Stored {
                return Err(TorchProblem::Zip(format!(
                    "entry {full:?} is compressed ({}); torch.save stores entries uncompressed",
                    entry.compression()
                )));
            }
            if entry.size() != entry.compressed_size() {
                return Err(TorchProblem::Zip(format!(
                    "entry {full:?} is stored but its sizes differ ({} vs {})",
                    entry.size(),
                    entry.compressed_size()
                )));
            }
            let range = payload(entry.data_start(), entry.size(), bytes.len())
                .ok_or_else(|| {
                    TorchProblem::Zip(format!(
                        "entry {full:?}: {} bytes at offset {} reach past the end of the {}-byte file (truncated, or wrong offsets)",
                        entry.size(),
                        entry.data_start(),
                        bytes.len()
                    ))
                })?;
            if entries.insert(rest.to_string(), range).is_some() {
                return Err(TorchProblem::Zip(format!("entry {full:?} appears twice")));
            }
        }
        let prefix = prefix.ok_or_else(|| TorchProblem::Zip("the archive is empty".into()))?;
        let archive = Archive { prefix, entries };
        archive.check_kind(bytes)?;
        Ok(archive)
    }

    /// An entry's byte range in the file.
    pub(crate) fn entry(&self, name: &str) -> Option<Range<usize>> {
        self.entries.get(name).cloned()
    }

    /// Refuses anything but little-endian `torch.save` files.
    fn check_kind(&self, bytes: &[u8]) -> Result<(), TorchProblem> {
        if !self.entries.contains_key("data.pkl") {
            return Err(TorchProblem::Zip(format!(
                "no {}/data.pkl entry: a zip file, but not one written by torch.save",
                self.prefix
            )));
        }
        if let Some(range) = self.entry("byteorder") {
            let order = &bytes[range];
            if order != b"little" {
                return Err(TorchProblem::Unsupported(format!(
                    "byte order {:?}: only little-endian files are supported",
                    String::from_utf8_lossy(order)
                )));
            }
        }
        Ok(())
    }
}

/// TorchScript archives hold their code and constants beside the data.
fn is_torchscript_entry(name: &str) -> bool {
    let rest = name.split_once('/').map_or(name, |(_, r)| r);
    rest == "constants.pkl" || rest.starts_with("code/")
}

/// `start..start+len` if it lies within a file of `file_len` bytes.
fn payload(start: u64, len: u64, file_len: usize) -> Option<Range<usize>> {
    let end = start.checked_add(len)?;
    if end > file_len as u64 {
        return None;
    }
    Some(start as usize..end as usize)
}

/// Recognises what a file is before the zip reader sees it, so that the legacy format
/// and plain pickles get an error that says what they are.
fn sniff(bytes: &[u8]) -> Result<(), TorchProblem> {
    if bytes.starts_with(ZIP_MAGIC) {
        return Ok(());
    }
    if bytes.first() == Some(&0x80) {
        if bytes.get(2..2 + LEGACY_MAGIC.len()) == Some(LEGACY_MAGIC) {
            return Err(TorchProblem::Unsupported(
                "the legacy torch.save format (torch < 1.6) is not supported; load it with torch and save it again (torch.save writes the zip format since 1.6)".into(),
            ));
        }
        return Err(TorchProblem::Unsupported(
            "a bare pickle file, not a torch.save zip archive; pickles are never executed here"
                .into(),
        ));
    }
    Err(TorchProblem::Zip(
        "does not start like a zip archive (torch.save's format since torch 1.6)".into(),
    ))
}

/// True when `bytes` start like a zip archive or a pickle (what [`super::TorchFile`]
/// reads or explains), for format detection by content.
pub(crate) fn looks_like_torch(bytes: &[u8]) -> bool {
    bytes.starts_with(ZIP_MAGIC) || bytes.first() == Some(&0x80)
}
