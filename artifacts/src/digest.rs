//! BLAKE3 content digests and the fast ways to compute them.
//!
//! A [`Digest`] is written `blake3:<64 lowercase hex>` everywhere tureen writes one (run
//! records, cache entries, manifests, safetensors metadata), so that `tureen store gc` can
//! find every reference by scanning text for that pattern (see [`Digest::find_all`]).

use std::fmt;
use std::fs::File;
use std::io::{self, Read};
use std::path::Path;
use std::str::FromStr;

/// The prefix every digest string starts with.
pub const DIGEST_PREFIX: &str = "blake3:";

/// Files at least this large are hashed from a memory map with BLAKE3's multi-threaded
/// hasher; smaller ones are read, because mapping and thread hand-off cost more than they
/// save on a few hundred KiB.
pub const MMAP_THRESHOLD: u64 = 1 << 20;

/// The 32-byte BLAKE3 hash of an object's bytes.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest([u8; 32]);

/// A string that is not `blake3:<64 lowercase hex>`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid digest {input:?}: expected `blake3:` followed by 64 lowercase hex digits")]
pub struct ParseDigestError {
    /// The rejected input (truncated to 100 characters).
    pub input: String,
}

impl Digest {
    /// Wraps raw hash bytes.
    pub const fn from_bytes(bytes: [u8; 32]) -> Digest {
        Digest(bytes)
    }

    /// The raw 32 hash bytes.
    pub const fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Hashes an in-memory byte string.
    pub fn of_bytes(bytes: &[u8]) -> Digest {
        Digest(*blake3::hash(bytes).as_bytes())
    }

    /// Hashes everything a reader yields (single-threaded, streaming).
    pub fn of_reader(mut reader: impl Read) -> io::Result<Digest> {
        let mut hasher = blake3::Hasher::new();
        let mut buf = vec![0u8; 1 << 16];
        loop {
            let n = match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            hasher.update(&buf[..n]);
        }
        Ok(Digest::from(hasher.finalize()))
    }

    /// Hashes a file's contents. Large files are memory-mapped and hashed with BLAKE3's
    /// multi-threaded (rayon) hasher, which runs at memory bandwidth on a warm page cache.
    pub fn of_file(path: &Path) -> io::Result<Digest> {
        let file = File::open(path)?;
        Digest::of_open_file(&file)
    }

    /// Like [`Digest::of_file`] for a file that is already open (read from offset 0).
    pub fn of_open_file(file: &File) -> io::Result<Digest> {
        let len = file.metadata()?.len();
        if len < MMAP_THRESHOLD {
            let mut reader = file;
            return Digest::of_reader(&mut reader);
        }
        // SAFETY: the map is read-only and dropped before returning. If another process
        // truncates the file meanwhile we may get SIGBUS; objects in the store are
        // read-only and never truncated, and user files are hashed at the user's risk just
        // like b3sum does.
        let map = unsafe { memmap2::Mmap::map(file)? };
        Ok(Digest::of_slice_parallel(&map))
    }

    /// Hashes a large in-memory slice (e.g. a memory map) on all rayon threads.
    pub fn of_slice_parallel(bytes: &[u8]) -> Digest {
        let mut hasher = blake3::Hasher::new();
        hasher.update_rayon(bytes);
        Digest::from(hasher.finalize())
    }

    /// The 64 lowercase hex digits, without the `blake3:` prefix (used for object paths).
    pub fn to_hex(&self) -> String {
        let text = self.prefixed_hex();
        std::str::from_utf8(&text[DIGEST_PREFIX.len()..])
            .expect("ASCII")
            .to_string()
    }

    /// Parses 64 lowercase hex digits (no prefix).
    pub fn from_hex(hex: &str) -> Result<Digest, ParseDigestError> {
        let err = || ParseDigestError {
            input: hex.chars().take(100).collect(),
        };
        let bytes = hex.as_bytes();
        if bytes.len() != 64 {
            return Err(err());
        }
        // One table lookup per digit and one check at the end: a no-op run of 10,000
        // stages parses some 50,000 digests (cache log, stat cache, records).
        let mut out = [0u8; 32];
        let mut invalid = 0u8;
        for (byte, pair) in out.iter_mut().zip(bytes.chunks_exact(2)) {
            let (hi, lo) = (HEX_VALUES[pair[0] as usize], HEX_VALUES[pair[1] as usize]);
            invalid |= hi | lo;
            *byte = (hi << 4) | (lo & 0x0f);
        }
        if invalid & INVALID_HEX != 0 {
            return Err(err());
        }
        Ok(Digest(out))
    }

    /// Parses either `blake3:<hex>` or bare `<hex>`; for command-line convenience only.
    /// Everything tureen writes uses the prefixed form.
    pub fn parse_lenient(s: &str) -> Result<Digest, ParseDigestError> {
        let s = s.trim();
        match s.strip_prefix(DIGEST_PREFIX) {
            Some(hex) => Digest::from_hex(hex),
            None => Digest::from_hex(s).map_err(|_| ParseDigestError {
                input: s.chars().take(100).collect(),
            }),
        }
    }

    /// Every well-formed `blake3:<64 lowercase hex>` substring of `text`, in order of
    /// appearance (duplicates included). This is how garbage collection finds references
    /// in run records, cache entries and journals without knowing their schema.
    pub fn find_all(text: &str) -> impl Iterator<Item = Digest> + '_ {
        let bytes = text.as_bytes();
        text.match_indices(DIGEST_PREFIX)
            .filter_map(move |(at, _)| {
                let start = at + DIGEST_PREFIX.len();
                let hex = bytes.get(start..start + 64)?;
                // A longer hex run is not a digest of ours (e.g. part of a bigger token).
                if bytes
                    .get(start + 64)
                    .is_some_and(|&b| hex_value(b).is_some())
                {
                    return None;
                }
                let hex = std::str::from_utf8(hex).ok()?;
                Digest::from_hex(hex).ok()
            })
    }
}

const fn hex_value(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    }
}

/// Set in [`HEX_VALUES`] for a byte that is not a lowercase hex digit.
const INVALID_HEX: u8 = 0x80;

/// [`hex_value`] of every byte, [`INVALID_HEX`] where it has none.
const HEX_VALUES: [u8; 256] = {
    let mut table = [INVALID_HEX; 256];
    let mut c = 0;
    while c < 256 {
        if let Some(v) = hex_value(c as u8) {
            table[c] = v;
        }
        c += 1;
    }
    table
};

impl From<blake3::Hash> for Digest {
    fn from(hash: blake3::Hash) -> Digest {
        Digest(*hash.as_bytes())
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(std::str::from_utf8(&self.prefixed_hex()).expect("ASCII"))
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl FromStr for Digest {
    type Err = ParseDigestError;

    /// Accepts exactly `blake3:<64 lowercase hex>`.
    fn from_str(s: &str) -> Result<Digest, ParseDigestError> {
        match s.strip_prefix(DIGEST_PREFIX) {
            Some(hex) => Digest::from_hex(hex).map_err(|_| ParseDigestError {
                input: s.chars().take(100).collect(),
            }),
            None => Err(ParseDigestError {
                input: s.chars().take(100).collect(),
            }),
        }
    }
}

impl Digest {
    /// `blake3:<hex>` in a buffer on the stack (records and keys serialize many digests).
    fn prefixed_hex(&self) -> [u8; DIGEST_PREFIX.len() + 64] {
        let mut out = [0u8; DIGEST_PREFIX.len() + 64];
        out[..DIGEST_PREFIX.len()].copy_from_slice(DIGEST_PREFIX.as_bytes());
        for (i, b) in self.0.iter().enumerate() {
            let at = DIGEST_PREFIX.len() + 2 * i;
            out[at] = b"0123456789abcdef"[usize::from(b >> 4)];
            out[at + 1] = b"0123456789abcdef"[usize::from(b & 15)];
        }
        out
    }
}

impl serde::Serialize for Digest {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let text = self.prefixed_hex();
        serializer.serialize_str(std::str::from_utf8(&text).expect("ASCII"))
    }
}

impl<'de> serde::Deserialize<'de> for Digest {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Digest, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Digest;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a digest `blake3:<64 lowercase hex digits>`")
            }
            // Borrowed or not, the text is only read: no String is made for it.
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Digest, E> {
                s.parse().map_err(E::custom)
            }
        }
        deserializer.deserialize_str(Visitor)
    }
}

/// A [`std::io::Write`] adapter that hashes everything written through it, for writers
/// that produce an object sequentially and want its digest without a second read.
pub struct HashingWriter<W> {
    inner: W,
    hasher: blake3::Hasher,
    written: u64,
}

impl<W: io::Write> HashingWriter<W> {
    /// Wraps `inner`; nothing hashed yet.
    pub fn new(inner: W) -> Self {
        HashingWriter {
            inner,
            hasher: blake3::Hasher::new(),
            written: 0,
        }
    }

    /// Bytes written so far.
    pub fn bytes_written(&self) -> u64 {
        self.written
    }

    /// The digest of everything written so far.
    pub fn digest(&self) -> Digest {
        Digest::from(self.hasher.finalize())
    }

    /// The wrapped writer and the digest of everything written.
    #[cfg(test)]
    pub fn finish(self) -> (W, Digest) {
        let digest = self.digest();
        (self.inner, digest)
    }

    /// The wrapped writer, e.g. to fsync it.
    pub fn get_ref(&self) -> &W {
        &self.inner
    }
}

impl<W: io::Write + Send> HashingWriter<W> {
    /// Writes all of `buf` while hashing it on the other rayon threads at the same time,
    /// instead of one after the other as [`io::Write::write`] does. For large buffers
    /// (copies of multi-GB files), where writing and hashing each take a core.
    pub fn write_all_overlapped(&mut self, buf: &[u8]) -> io::Result<()> {
        let (inner, hasher) = (&mut self.inner, &mut self.hasher);
        let (written, _) = rayon::join(
            || inner.write_all(buf),
            || {
                hasher.update_rayon(buf);
            },
        );
        // On error the hasher has seen bytes the file may lack; the caller must discard
        // the writer (as it must after any failed `write_all`).
        written?;
        self.written += buf.len() as u64;
        Ok(())
    }
}

impl<W: fmt::Debug> fmt::Debug for HashingWriter<W> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HashingWriter")
            .field("inner", &self.inner)
            .field("written", &self.written)
            .finish_non_exhaustive()
    }
}

impl<W: io::Write> io::Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        // Large writes are where the time goes; hash them on all threads.
        if n >= 1 << 20 {
            self.hasher.update_rayon(&buf[..n]);
        } else {
            self.hasher.update(&buf[..n]);
        }
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_and_parse_round_trip() {
        let d = Digest::of_bytes(b"hello");
        let s = d.to_string();
        assert!(s.starts_with("blake3:"));
        assert_eq!(s.len(), 7 + 64);
        assert_eq!(s.parse::<Digest>().unwrap(), d);
        assert_eq!(Digest::parse_lenient(&d.to_hex()).unwrap(), d);
    }

    #[test]
    fn known_answer_matches_blake3_reference() {
        // BLAKE3 of the empty input (from the BLAKE3 specification's test vectors).
        assert_eq!(
            Digest::of_bytes(b"").to_hex(),
            "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262"
        );
    }

    #[test]
    fn parse_rejects_uppercase_missing_prefix_and_wrong_length() {
        let hex = Digest::of_bytes(b"x").to_hex();
        assert!(hex.parse::<Digest>().is_err());
        assert!(format!("blake3:{}", hex.to_uppercase())
            .parse::<Digest>()
            .is_err());
        assert!(format!("blake3:{}", &hex[..63]).parse::<Digest>().is_err());
        assert!(format!("sha256:{hex}").parse::<Digest>().is_err());
    }

    #[test]
    fn from_hex_accepts_exactly_the_lowercase_hex_digits_at_every_position() {
        let hex = Digest::of_bytes(b"y").to_hex();
        for pos in [0, 1, 62, 63] {
            for c in (0u8..128).map(char::from) {
                let mut text = hex.clone();
                text.replace_range(pos..pos + 1, &c.to_string());
                let want = c.is_ascii_digit() || ('a'..='f').contains(&c);
                assert_eq!(Digest::from_hex(&text).is_ok(), want, "{c:?} at {pos}");
            }
        }
        let d = Digest::from_hex(&hex).unwrap();
        assert_eq!(d.to_hex(), hex);
    }

    #[test]
    fn serde_uses_the_prefixed_string() {
        let d = Digest::of_bytes(b"abc");
        let json = serde_json::to_string(&d).unwrap();
        assert_eq!(json, format!("\"{d}\""));
        assert_eq!(serde_json::from_str::<Digest>(&json).unwrap(), d);
        assert!(serde_json::from_str::<Digest>("\"blake3:zz\"").is_err());
    }

    #[test]
    fn find_all_extracts_digests_from_arbitrary_text() {
        let a = Digest::of_bytes(b"a");
        let b = Digest::of_bytes(b"b");
        let text = format!("{{\"x\": \"{a}\", \"nested\": [\"{b}\"], \"bad\": \"blake3:1234\", \"long\": \"{a}ff\"}}");
        let found: Vec<_> = Digest::find_all(&text).collect();
        assert_eq!(found, vec![a, b]);
    }

    #[test]
    fn file_hash_equals_bytes_hash_for_small_and_large_files() {
        let dir = tempfile::tempdir().unwrap();
        for len in [0usize, 10, (MMAP_THRESHOLD as usize) * 3 + 7] {
            let data: Vec<u8> = (0..len).map(|i| (i * 31 % 251) as u8).collect();
            let p = dir.path().join(format!("f{len}"));
            std::fs::write(&p, &data).unwrap();
            assert_eq!(Digest::of_file(&p).unwrap(), Digest::of_bytes(&data));
        }
    }

    #[test]
    fn hashing_writer_matches_one_shot_hash() {
        use std::io::Write;
        let mut w = HashingWriter::new(Vec::new());
        w.write_all(b"hello ").unwrap();
        w.write_all(&vec![7u8; 3 << 20]).unwrap();
        let (bytes, d) = w.finish();
        assert_eq!(d, Digest::of_bytes(&bytes));
    }
}
