//! Reading and writing safetensors files: round trips, the reference layout, every
//! malformed header or data section refused, and atomic (early-writeback) writes.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::*;

/// Writes a raw safetensors image: header JSON (as given) + data bytes.
fn raw(dir: &Path, name: &str, header: &str, data: &[u8]) -> PathBuf {
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(header.as_bytes());
    bytes.extend_from_slice(data);
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

fn problem(path: &Path) -> Problem {
    match SafetensorsFile::open(path) {
        Err(SafetensorsError::Invalid { path: p, problem }) => {
            assert_eq!(p, path);
            problem
        }
        other => panic!("expected Invalid, got {other:?}"),
    }
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

#[test]
fn round_trip_with_metadata() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("m.safetensors");
    let a = f32_bytes(&[1.0, 2.0, 3.0]);
    let b = 7i64.to_le_bytes();
    let mut meta = BTreeMap::new();
    meta.insert("format".to_string(), "pt".to_string());
    write_file(
        &p,
        &[("a", Dtype::F32, &[3], &a), ("step", Dtype::I64, &[], &b)],
        Some(&meta),
    )
    .unwrap();
    let f = SafetensorsFile::open(&p).unwrap();
    assert_eq!(f.metadata().unwrap()["format"], "pt");
    assert_eq!(f.data(f.get("a").unwrap()), &a[..]);
    assert_eq!(f.get("step").unwrap().shape, Vec::<u64>::new());
    assert_eq!(f.data(f.get("step").unwrap()), &b[..]);
    // The header is padded so data starts 8-byte aligned.
    let raw = std::fs::read(&p).unwrap();
    assert_eq!(u64::from_le_bytes(raw[..8].try_into().unwrap()) % 8, 0);
}

#[test]
fn layout_orders_like_the_reference_library() {
    let specs = vec![
        TensorSpec {
            name: "z".into(),
            dtype: Dtype::BF16,
            shape: vec![1],
        },
        TensorSpec {
            name: "a".into(),
            dtype: Dtype::BF16,
            shape: vec![1],
        },
        TensorSpec {
            name: "i".into(),
            dtype: Dtype::I64,
            shape: vec![1],
        },
        TensorSpec {
            name: "f".into(),
            dtype: Dtype::F32,
            shape: vec![1],
        },
    ];
    let layout = Layout::new(Path::new("x"), specs, None).unwrap();
    let names: Vec<_> = layout.tensors().map(|(s, _, _)| s.name.as_str()).collect();
    assert_eq!(names, ["i", "f", "a", "z"]);
}

#[test]
fn truncated_file_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("t.safetensors");
    write_file(&p, &[("a", Dtype::F32, &[4], &f32_bytes(&[1.0; 4]))], None).unwrap();
    let full = std::fs::read(&p).unwrap();
    std::fs::write(&p, &full[..full.len() - 3]).unwrap();
    let msg = problem(&p).to_string();
    assert!(msg.contains("\"a\"") && msg.contains("truncated"), "{msg}");
    std::fs::write(&p, &full[..5]).unwrap();
    assert!(matches!(problem(&p), Problem::TooShort { len: 5 }));
}

#[test]
fn absurd_header_length_is_rejected_without_allocating() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("huge.safetensors");
    let mut bytes = (1u64 << 60).to_le_bytes().to_vec();
    bytes.extend_from_slice(b"{}");
    std::fs::write(&p, bytes).unwrap();
    assert!(matches!(problem(&p), Problem::HeaderTooLarge { header_len } if header_len == 1 << 60));
}

#[test]
fn header_length_past_end_of_file_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("lying.safetensors");
    let mut bytes = 1000u64.to_le_bytes().to_vec();
    bytes.extend_from_slice(b"{}");
    std::fs::write(&p, bytes).unwrap();
    assert!(matches!(
        problem(&p),
        Problem::HeaderPastEnd {
            header_len: 1000,
            available: 2
        }
    ));
}

#[test]
fn lying_offsets_are_rejected() {
    let dir = tempfile::tempdir().unwrap();
    // Shape says 4 floats (16 bytes), offsets say 8.
    let p = raw(
        dir.path(),
        "a",
        r#"{"w":{"dtype":"F32","shape":[4],"data_offsets":[0,8]}}"#,
        &[0; 8],
    );
    let msg = problem(&p).to_string();
    assert!(
        msg.contains("\"w\"") && msg.contains("needs 16 bytes"),
        "{msg}"
    );
    // Offsets past the data section.
    let p = raw(
        dir.path(),
        "b",
        r#"{"w":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}"#,
        &[0; 8],
    );
    assert!(problem(&p).to_string().contains("past the end"));
    // begin > end
    let p = raw(
        dir.path(),
        "c",
        r#"{"w":{"dtype":"F32","shape":[0],"data_offsets":[8,0]}}"#,
        &[0; 8],
    );
    assert!(problem(&p).to_string().contains("end before they begin"));
}

#[test]
fn overlapping_tensors_are_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let h = r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}"#;
    let p = raw(dir.path(), "o", h, &[0; 12]);
    assert!(
        matches!(problem(&p), Problem::Overlap { first, second, at: 4 } if first == "a" && second == "b")
    );
}

#[test]
fn gaps_and_trailing_bytes_are_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let h = r#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}"#;
    assert!(matches!(
        problem(&raw(dir.path(), "g", h, &[0; 8])),
        Problem::Gap { start: 0, end: 4 }
    ));
    let h = r#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#;
    assert!(matches!(
        problem(&raw(dir.path(), "t", h, &[0; 8])),
        Problem::TrailingBytes { .. }
    ));
}

#[test]
fn wrong_dtype_string_is_rejected_naming_the_tensor() {
    let dir = tempfile::tempdir().unwrap();
    let p = raw(
        dir.path(),
        "d",
        r#"{"w":{"dtype":"float32","shape":[1],"data_offsets":[0,4]}}"#,
        &[0; 4],
    );
    let msg = problem(&p).to_string();
    assert!(
        msg.contains("\"w\"") && msg.contains("unknown dtype \"float32\""),
        "{msg}"
    );
}

#[test]
fn malformed_json_shapes_are_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("not json", "header is not valid"),
        ("[1,2]", "JSON object"),
        (r#"{"w":[1]}"#, "entry must be an object"),
        (
            r#"{"w":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}}"#,
            "non-negative",
        ),
        (
            r#"{"w":{"dtype":"F32","shape":[1],"data_offsets":[0]}}"#,
            "data_offsets",
        ),
        (
            r#"{"w":{"dtype":"F32","shape":[1]}}"#,
            "missing field \"data_offsets\"",
        ),
        (
            r#"{"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4],"x":1}}"#,
            "unexpected field",
        ),
        (
            r#"{"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#,
            "duplicate key",
        ),
        (r#"{"__metadata__":{"a":1}}"#, "must be a string"),
        (r#"{"__metadata__":[]}"#, "object of strings"),
        (
            r#"{"w":{"dtype":"F32","shape":[4294967296,4294967296,4294967296],"data_offsets":[0,4]}}"#,
            "overflows",
        ),
    ];
    for (i, (header, expect)) in cases.iter().enumerate() {
        let p = raw(dir.path(), &format!("c{i}"), header, &[0; 4]);
        let msg = SafetensorsFile::open(&p).unwrap_err().to_string();
        assert!(msg.contains(expect), "case {i}: {msg}");
        assert!(msg.starts_with(&p.display().to_string()), "{msg}");
    }
}

#[test]
fn non_utf8_header_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let mut bytes = 4u64.to_le_bytes().to_vec();
    bytes.extend_from_slice(&[b'{', 0xff, b'}', b' ']);
    let p = dir.path().join("u");
    std::fs::write(&p, bytes).unwrap();
    assert!(matches!(problem(&p), Problem::HeaderNotUtf8 { at: 1 }));
}

#[test]
fn unfinished_writer_leaves_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("out.safetensors");
    let layout = Layout::new(
        &p,
        vec![TensorSpec {
            name: "a".into(),
            dtype: Dtype::F32,
            shape: vec![2],
        }],
        None,
    )
    .unwrap();
    let w = SafetensorsWriter::create(&p, layout).unwrap();
    w.write_at(0, 0, &[0; 4]).unwrap();
    assert!(w.write_at(0, 4, &[0; 8]).is_err(), "overrun is refused");
    let err = w.finish().unwrap_err();
    assert!(err.to_string().contains("only 4 of 8 bytes"), "{err}");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

/// What [`write_with_tiny_windows`] did.
struct TinyWindowsRun {
    finished: Result<(), SafetensorsError>,
    data: Vec<(String, Vec<u8>)>,
    windows_started: usize,
    windows: usize,
}

/// Three tensors written in 1000-byte pieces from four threads, in an order unrelated to
/// the file's, with 4 KiB writeback windows (so dozens of windows start early and the
/// oldest are waited for).
fn write_with_tiny_windows(p: &Path, durable: bool, stop_after: Option<usize>) -> TinyWindowsRun {
    let data: Vec<(String, Vec<u8>)> = ["a", "b", "c"]
        .iter()
        .enumerate()
        .map(|(k, n)| {
            let bytes = (0..40_000 + 4 * k).map(|i| (i * 7 + k) as u8).collect();
            (n.to_string(), bytes)
        })
        .collect();
    let specs = data
        .iter()
        .map(|(n, b)| TensorSpec {
            name: n.clone(),
            dtype: Dtype::F32,
            shape: vec![b.len() as u64 / 4],
        })
        .collect();
    let layout = Layout::new(p, specs, None).unwrap();
    let mut w = SafetensorsWriter::create(p, layout).unwrap();
    w.set_durable(durable);
    w.set_writeback_window(4096, 3);
    let mut pieces = Vec::new();
    for (n, bytes) in &data {
        let index = w.layout().index_of(n).unwrap();
        for start in (0..bytes.len()).step_by(1000) {
            pieces.push((index, start, &bytes[start..(start + 1000).min(bytes.len())]));
        }
    }
    pieces.reverse();
    let pieces = &pieces[..stop_after.unwrap_or(pieces.len())];
    std::thread::scope(|s| {
        for t in 0..4 {
            let w = &w;
            s.spawn(move || {
                for (index, start, bytes) in pieces.iter().skip(t).step_by(4) {
                    w.write_at(*index, *start as u64, bytes).unwrap();
                }
            });
        }
    });
    let (windows_started, windows) = w.writeback_windows_started();
    TinyWindowsRun {
        finished: w.finish(),
        data,
        windows_started,
        windows,
    }
}

#[test]
fn early_writeback_gives_the_same_bytes_as_writing_without_it() {
    let dir = tempfile::tempdir().unwrap();
    let (durable, plain) = (
        dir.path().join("d.safetensors"),
        dir.path().join("p.safetensors"),
    );
    let run = write_with_tiny_windows(&durable, true, None);
    run.finished.unwrap();
    let (started, windows) = (run.windows_started, run.windows);
    assert!(
        windows > 25,
        "the test should exercise many windows, got {windows}"
    );
    assert_eq!(
        started, windows,
        "every window's writeback started before finish"
    );
    let run_plain = write_with_tiny_windows(&plain, false, None);
    run_plain.finished.unwrap();
    assert_eq!(
        run_plain.windows_started, 0,
        "no early writeback without durability"
    );
    assert_eq!(
        std::fs::read(&durable).unwrap(),
        std::fs::read(&plain).unwrap()
    );
    let f = SafetensorsFile::open(&durable).unwrap();
    for (name, bytes) in &run.data {
        assert_eq!(f.data(f.get(name).unwrap()), &bytes[..], "{name}");
    }
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 2);
}

#[test]
fn incomplete_write_with_early_writeback_leaves_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("out.safetensors");
    std::fs::write(&p, b"previous").unwrap();
    // Stop after 100 of 122 pieces: some windows went to disk, the file is incomplete.
    let run = write_with_tiny_windows(&p, true, Some(100));
    let (started, windows) = (run.windows_started, run.windows);
    assert!(started > 0 && started < windows, "{started} of {windows}");
    let err = run.finished.unwrap_err();
    assert!(err.to_string().contains("bytes were written"), "{err}");
    assert_eq!(
        std::fs::read(&p).unwrap(),
        b"previous",
        "destination untouched"
    );
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        1,
        "temp file removed"
    );
}
