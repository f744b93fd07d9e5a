//! Builders of small `torch.save`-format files for unit tests: the opcodes torch's
//! pickler emits for state dicts, in a STORED zip archive.

use std::io::{Cursor, Write};

/// A tensor to write: name, storage class, storage key, storage numel, offset, shape,
/// stride.
pub(crate) struct T<'a> {
    pub name: &'a str,
    pub class: &'a str,
    pub key: &'a str,
    pub numel: u64,
    pub offset: u64,
    pub shape: &'a [u64],
    pub stride: &'a [u64],
}

/// Appends pickle opcodes.
pub(crate) struct Pickler(pub Vec<u8>);

impl Pickler {
    pub fn new() -> Pickler {
        Pickler(vec![0x80, 2])
    }

    pub fn op(&mut self, op: u8) -> &mut Self {
        self.0.push(op);
        self
    }

    pub fn str(&mut self, s: &str) -> &mut Self {
        self.0.push(b'X');
        self.0.extend((s.len() as u32).to_le_bytes());
        self.0.extend(s.as_bytes());
        self
    }

    pub fn int(&mut self, v: i64) -> &mut Self {
        self.0.push(0x8a);
        self.0.push(8);
        self.0.extend(v.to_le_bytes());
        self
    }

    pub fn global(&mut self, module: &str, name: &str) -> &mut Self {
        self.0.push(b'c');
        self.0.extend(format!("{module}\n{name}\n").as_bytes());
        self
    }

    pub fn ints(&mut self, v: &[u64]) -> &mut Self {
        self.op(b'(');
        for &x in v {
            self.int(x as i64);
        }
        self.op(b't')
    }

    pub fn tensor(&mut self, t: &T<'_>) -> &mut Self {
        self.global("torch._utils", "_rebuild_tensor_v2").op(b'(');
        self.op(b'(')
            .str("storage")
            .global("torch", t.class)
            .str(t.key)
            .str("cpu")
            .int(t.numel as i64)
            .op(b't')
            .op(b'Q');
        self.int(t.offset as i64).ints(t.shape).ints(t.stride);
        self.op(0x89)
            .global("collections", "OrderedDict")
            .op(b')')
            .op(b'R')
            .op(b't')
            .op(b'R')
    }

    /// An OrderedDict of the tensors, with the `_metadata` BUILD a real state dict has.
    pub fn state_dict(&mut self, tensors: &[T<'_>]) -> &mut Self {
        self.global("collections", "OrderedDict")
            .op(b')')
            .op(b'R')
            .op(b'(');
        for t in tensors {
            self.str(t.name).tensor(t);
        }
        self.op(b'u');
        self.op(b'}').str("_metadata").op(b'}').op(b's').op(b'b')
    }
}

/// A pickle of `tensors` as a bare state dict, or as `{"epoch": 1, "<wrap>": sd}`.
pub(crate) fn pickle(tensors: &[T<'_>], wrap: Option<&str>) -> Vec<u8> {
    let mut p = Pickler::new();
    if let Some(key) = wrap {
        p.op(b'}').op(b'(').str("epoch").int(1).str(key);
        p.state_dict(tensors);
        p.op(b'u');
    } else {
        p.state_dict(tensors);
    }
    p.op(b'.');
    p.0
}

/// A STORED zip archive with `entries` under `prefix/`, as torch.save lays it out.
pub(crate) fn archive(prefix: &str, entries: &[(&str, &[u8])]) -> Vec<u8> {
    let mut zip = zip::ZipWriter::new(Cursor::new(Vec::new()));
    let options =
        zip::write::FileOptions::default().compression_method(zip::CompressionMethod::Stored);
    for (name, bytes) in entries {
        zip.start_file(format!("{prefix}/{name}"), options)
            .expect("zip entry");
        zip.write_all(bytes).expect("zip write");
    }
    zip.finish().expect("zip finish").into_inner()
}

/// A complete torch.save-format file: pickle + storages + byteorder + version.
pub(crate) fn file(pickle: &[u8], storages: &[(&str, &[u8])]) -> Vec<u8> {
    let names: Vec<String> = storages.iter().map(|(k, _)| format!("data/{k}")).collect();
    let mut entries: Vec<(&str, &[u8])> = vec![("data.pkl", pickle), ("byteorder", b"little")];
    for ((_, bytes), name) in storages.iter().zip(&names) {
        entries.push((name, bytes));
    }
    entries.push(("version", b"3\n"));
    archive("archive", &entries)
}

pub(crate) fn f32s(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}
