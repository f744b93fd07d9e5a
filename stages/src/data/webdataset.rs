//! Reading webdataset tar streams: consecutive entries that share a key form a sample.

use std::collections::BTreeMap;
use std::io::Read;

/// Image extensions the loader decodes, in order of preference.
pub const IMAGE_EXTENSIONS: [&str; 3] = ["jpg", "jpeg", "png"];

/// One undecoded sample: its key and the bytes of each member, by extension
/// (`"jpg"`, `"txt"`, `"cls"`, ...; lower-cased).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawSample {
    /// `<shard>/<key>`, unique within a dataset.
    pub key: String,
    /// Each member's bytes, by lower-cased extension (the file name after the key's `.`).
    pub files: BTreeMap<String, Vec<u8>>,
}

impl RawSample {
    /// The image member's bytes, if any.
    pub fn image(&self) -> Option<&[u8]> {
        IMAGE_EXTENSIONS
            .iter()
            .find_map(|ext| self.files.get(*ext))
            .map(Vec::as_slice)
    }

    /// The caption (`.txt`), if present and UTF-8.
    pub fn text(&self) -> Option<Result<&str, std::str::Utf8Error>> {
        self.files
            .get("txt")
            .map(|bytes| std::str::from_utf8(bytes))
    }

    /// Why this sample cannot be used, if it cannot: it needs an image and a caption
    /// or class label.
    pub fn problem(&self) -> Option<String> {
        if self.image().is_none() {
            let members: Vec<&str> = self.files.keys().map(String::as_str).collect();
            return Some(format!("no image member (has: {})", members.join(", ")));
        }
        if !self.files.contains_key("txt") && !self.files.contains_key("cls") {
            return Some("no .txt caption or .cls label".into());
        }
        None
    }
}

/// Splits a member path into (key, extension): the key is everything up to the first
/// `.` of the file name, the extension the rest, lower-cased. `None` for names without
/// an extension (directories, stray files).
pub fn split_member(path: &str) -> Option<(&str, String)> {
    let name_start = path.rfind('/').map_or(0, |i| i + 1);
    let dot = path[name_start..].find('.')? + name_start;
    if dot == name_start {
        return None; // hidden file such as `.DS_Store`
    }
    Some((&path[..dot], path[dot + 1..].to_ascii_lowercase()))
}

/// Reads all samples of one tar stream, calling `emit` for each in file order. A tar
/// error (truncated or corrupt shard) ends the shard and is returned with the number of
/// complete samples emitted before it; `emit` returning `false` stops early.
pub fn read_samples<R: Read>(
    shard_name: &str,
    reader: R,
    mut emit: impl FnMut(RawSample) -> bool,
) -> Result<usize, (usize, std::io::Error)> {
    let mut archive = tar::Archive::new(reader);
    let mut emitted = 0;
    let mut current: Option<RawSample> = None;
    let entries = archive.entries().map_err(|e| (0, e))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| (emitted, e))?;
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let path = entry
            .path()
            .map_err(|e| (emitted, e))?
            .to_string_lossy()
            .into_owned();
        let Some((key, ext)) = split_member(&path) else {
            continue;
        };
        let mut bytes = Vec::with_capacity(entry.size() as usize);
        entry.read_to_end(&mut bytes).map_err(|e| (emitted, e))?;
        let full_key = format!("{shard_name}/{key}");
        match &mut current {
            Some(sample) if sample.key == full_key => {
                sample.files.insert(ext, bytes);
            }
            _ => {
                if let Some(done) = current.take() {
                    emitted += 1;
                    if !emit(done) {
                        return Ok(emitted);
                    }
                }
                current = Some(RawSample {
                    key: full_key,
                    files: BTreeMap::from([(ext, bytes)]),
                });
            }
        }
    }
    if let Some(done) = current.take() {
        emitted += 1;
        emit(done);
    }
    Ok(emitted)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_split_at_the_first_dot_of_the_file_name() {
        assert_eq!(
            split_member("a.b/000001.seg.png"),
            Some(("a.b/000001", "seg.png".to_string()))
        );
        assert_eq!(
            split_member("000001.JPG"),
            Some(("000001", "jpg".to_string()))
        );
        assert_eq!(split_member("dir/.hidden"), None);
        assert_eq!(split_member("noext"), None);
    }

    #[test]
    fn consecutive_members_with_one_key_form_a_sample() {
        let mut builder = tar::Builder::new(Vec::new());
        for (name, data) in [
            ("a.txt", "x"),
            ("a.jpg", "j"),
            ("b.txt", "y"),
            ("b.png", "p"),
        ] {
            let mut header = tar::Header::new_gnu();
            header.set_size(data.len() as u64);
            header.set_mode(0o644);
            header.set_cksum();
            builder
                .append_data(&mut header, name, data.as_bytes())
                .unwrap();
        }
        let bytes = builder.into_inner().unwrap();
        let mut samples = Vec::new();
        let n = read_samples("s", &bytes[..], |s| {
            samples.push(s);
            true
        })
        .unwrap();
        assert_eq!(n, 2);
        assert_eq!(samples[0].key, "s/a");
        assert_eq!(samples[0].image(), Some(&b"j"[..]));
        assert_eq!(samples[1].image(), Some(&b"p"[..]));
        assert!(samples[1].problem().is_none());
    }
}
