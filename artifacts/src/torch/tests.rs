//! `TorchFile` on synthetic archives: valid files, and each way a file can be broken.

use std::path::{Path, PathBuf};

use super::testutil::{archive, f32s, file, pickle, T};
use super::*;

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

fn problem(path: &Path) -> TorchProblem {
    match TorchFile::open(path) {
        Err(TorchError::Invalid { path: p, problem }) => {
            assert_eq!(p, path);
            problem
        }
        other => panic!("expected Invalid, got {other:?}"),
    }
}

const W: T<'static> = T {
    name: "w",
    class: "FloatStorage",
    key: "0",
    numel: 6,
    offset: 0,
    shape: &[2, 3],
    stride: &[3, 1],
};

#[test]
fn reads_a_state_dict_with_views_sharing_a_storage() {
    let dir = tempfile::tempdir().unwrap();
    let tail = T {
        name: "tail",
        offset: 4,
        shape: &[2],
        stride: &[1],
        ..W
    };
    let pkl = pickle(&[W, tail], Some("state_dict"));
    let data = f32s(&[0.0, 1.0, 2.0, 3.0, 4.0, 5.0]);
    let p = write(dir.path(), "ok.pt", &file(&pkl, &[("0", &data)]));
    let f = TorchFile::open(&p).unwrap();
    assert_eq!(f.prefix(), "archive");
    let root = f.root();
    assert_eq!(root.get("epoch").and_then(|n| n.as_int()), Some(1));
    let sd = root.get("state_dict").unwrap();
    let names: Vec<&str> = sd
        .entries()
        .unwrap()
        .map(|(k, _)| k.as_str().unwrap())
        .collect();
    assert_eq!(names, ["w", "tail"]);
    let t = sd.get("tail").unwrap().as_tensor().unwrap();
    let v = f.view("tail", t).unwrap();
    assert_eq!(f.contiguous_bytes(&v).unwrap(), &f32s(&[4.0, 5.0])[..]);
    let w = f
        .view("w", sd.get("w").unwrap().as_tensor().unwrap())
        .unwrap();
    assert_eq!(f.contiguous_bytes(&w).unwrap(), &data[..]);
}

#[test]
fn the_planted_command_of_a_malicious_pickle_never_runs() {
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("pwned");
    let mut pkl = b"\x80\x02cos\nsystem\n(X".to_vec();
    let cmd = format!("touch {}", marker.display());
    pkl.extend((cmd.len() as u32).to_le_bytes());
    pkl.extend(cmd.as_bytes());
    pkl.extend(b"tR.");
    let p = write(dir.path(), "evil.pt", &file(&pkl, &[]));
    let e = problem(&p).to_string();
    assert!(e.contains("`os.system` is not allowed"), "{e}");
    assert!(!marker.exists());
}

#[test]
fn a_storage_shorter_than_declared_or_missing_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let pkl = pickle(&[W], None);
    let p = write(
        dir.path(),
        "short.pt",
        &file(&pkl, &[("0", &f32s(&[1.0; 5]))]),
    );
    let e = problem(&p).to_string();
    assert!(
        e.contains("declares 6 elements of F32") && e.contains("20 bytes"),
        "{e}"
    );
    let p = write(dir.path(), "none.pt", &file(&pkl, &[]));
    assert!(problem(&p).to_string().contains("no entry archive/data/0"));
}

#[test]
fn a_tensor_reaching_past_its_storage_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let bad = T {
        name: "bad",
        offset: 5,
        shape: &[2],
        stride: &[1],
        ..W
    };
    let pkl = pickle(&[bad], None);
    let p = write(
        dir.path(),
        "extent.pt",
        &file(&pkl, &[("0", &f32s(&[0.0; 6]))]),
    );
    let f = TorchFile::open(&p).unwrap();
    let t = f.root().get("bad").unwrap().as_tensor().unwrap();
    let e = f.view("bad", t).unwrap_err().to_string();
    assert!(
        e.starts_with("tensor bad:") && e.contains("reach element 6"),
        "{e}"
    );
}

#[test]
fn every_truncation_is_an_error_never_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let pkl = pickle(&[W], Some("state_dict"));
    let full = file(&pkl, &[("0", &f32s(&[1.0; 6]))]);
    for len in 0..full.len() {
        let p = write(dir.path(), "t.pt", &full[..len]);
        assert!(TorchFile::open(&p).is_err(), "truncated to {len} bytes");
    }
}

#[test]
fn corrupt_bytes_are_errors_never_panics() {
    // Flip bytes of the zip structures and the pickle (not of tensor data, which any
    // value is valid for): each flip must give an error or a file that still validates.
    let dir = tempfile::tempdir().unwrap();
    let pkl = pickle(&[W], Some("state_dict"));
    let full = file(&pkl, &[("0", &f32s(&[1.0; 6]))]);
    for at in 0..full.len() {
        for flip in [0x01u8, 0x80, 0xff] {
            let mut b = full.clone();
            b[at] ^= flip;
            let p = write(dir.path(), "c.pt", &b);
            if let Ok(f) = TorchFile::open(&p) {
                // Still valid: walking it must not panic either.
                if let Some(sd) = f.root().get("state_dict").and_then(|n| n.entries()) {
                    for (k, v) in sd {
                        if let Some(t) = v.as_tensor() {
                            let _ = f.view(&k.summary(), t);
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn wrong_entry_offsets_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let pkl = pickle(&[W], None);
    let mut b = file(&pkl, &[("0", &f32s(&[1.0; 6]))]);
    // Point the central directory's first local-header offset far past the end.
    let cd = b.windows(4).position(|w| w == b"PK\x01\x02").unwrap();
    b[cd + 42..cd + 46].copy_from_slice(&0x7fff_0000u32.to_le_bytes());
    let p = write(dir.path(), "off.pt", &b);
    assert!(matches!(problem(&p), TorchProblem::Zip(_)));
}

#[test]
fn legacy_files_bare_pickles_and_torchscript_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let mut legacy = vec![0x80, 2];
    legacy.extend(b"\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19.");
    let p = write(dir.path(), "legacy.pt", &legacy);
    assert!(problem(&p).to_string().contains("legacy torch.save format"));
    let p = write(dir.path(), "bare.pkl", b"\x80\x02N.");
    assert!(problem(&p).to_string().contains("bare pickle"));
    let ts = archive(
        "model",
        &[
            ("data.pkl", b"\x80\x02N."),
            ("constants.pkl", b"\x80\x02)."),
            ("code/m.py", b""),
        ],
    );
    let p = write(dir.path(), "script.pt", &ts);
    assert!(problem(&p).to_string().contains("TorchScript"));
    let p = write(dir.path(), "text.pt", b"hello");
    assert!(problem(&p).to_string().contains("zip archive"));
    let big = archive(
        "archive",
        &[("data.pkl", b"\x80\x02N."), ("byteorder", b"big")],
    );
    let p = write(dir.path(), "big.pt", &big);
    assert!(problem(&p).to_string().contains("little-endian"));
}

#[test]
fn a_fifo_is_refused_without_blocking() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("ckpt.pt");
    crate::fsutil::make_fifo(&fifo);
    let e = TorchFile::open(&fifo).unwrap_err().to_string();
    assert!(e.contains("named pipe"), "{e}");
}
