//! `tureen data synth`: a deterministic synthetic dataset the loader and eval can read.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use tureen_stages::data::{Loader, LoaderConfig, Transform};

fn synth(out: &Path, seed: u64) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_tureen"))
        .args([
            "data",
            "synth",
            "--shards",
            "2",
            "--per-shard",
            "12",
            "--size",
            "32",
        ])
        .args([
            "--zeroshot-per-class",
            "2",
            "--retrieval",
            "6",
            "--seed",
            &seed.to_string(),
            "--out",
        ])
        .arg(out)
        .output()
        .unwrap()
}

/// Relative path -> bytes of every file under `dir`.
fn snapshot(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut files = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                let rel = path
                    .strip_prefix(dir)
                    .unwrap()
                    .to_string_lossy()
                    .into_owned();
                files.insert(rel, std::fs::read(&path).unwrap());
            }
        }
    }
    files
}

#[test]
fn same_seed_gives_the_same_bytes_and_another_seed_does_not() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b, c) = (
        tmp.path().join("a"),
        tmp.path().join("b"),
        tmp.path().join("c"),
    );
    for (dir, seed) in [(&a, 7), (&b, 7), (&c, 8)] {
        let out = synth(dir, seed);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let (sa, sb, sc) = (snapshot(&a), snapshot(&b), snapshot(&c));
    assert_eq!(sa.keys().collect::<Vec<_>>(), sb.keys().collect::<Vec<_>>());
    assert!(sa == sb, "same seed, different bytes");
    assert_ne!(sa["train/000000.tar"], sc["train/000000.tar"]);
    for expected in [
        "dataset.json",
        "train/000001.tar",
        "zeroshot/classnames.txt",
        "zeroshot/templates.txt",
        "retrieval/000000.tar",
    ] {
        assert!(sa.contains_key(expected), "missing {expected}");
    }
    // 24 classes x 2 images, in one folder per class.
    assert_eq!(
        sa.keys()
            .filter(|k| k.starts_with("zeroshot/images/"))
            .count(),
        48
    );
    let names = String::from_utf8(sa["zeroshot/classnames.txt"].clone()).unwrap();
    assert_eq!(names.lines().count(), 24);
    // No temporary directory is left beside the outputs.
    let leftovers: Vec<_> = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(leftovers.len(), 3, "{leftovers:?}");
}

#[test]
fn the_loader_reads_the_training_shards_with_compositional_captions() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("d");
    assert!(synth(&out, 1).status.success());
    let mut config = LoaderConfig::new("train/{000000..000001}.tar", &out, 8, 32);
    config.transform = Transform::Eval;
    config.context_length = 32;
    let loader = Loader::new(config, 0).unwrap();
    let stats = loader.stats();
    let texts: Vec<String> = loader.flat_map(|b| b.unwrap().texts).collect();
    assert_eq!(texts.len(), 24);
    assert_eq!(stats.corrupt(), 0);
    let shapes = ["circle", "square", "triangle", "cross"];
    assert!(
        texts.iter().all(|t| shapes.iter().any(|s| t.contains(s))),
        "{texts:?}"
    );
}

#[test]
fn refuses_to_overwrite_a_non_empty_directory() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("keep.txt"), "precious").unwrap();
    let out = synth(tmp.path(), 1);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("already exists"), "{stderr}");
    assert_eq!(
        std::fs::read_to_string(tmp.path().join("keep.txt")).unwrap(),
        "precious"
    );
}

#[test]
fn bad_sizes_are_rejected_with_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_tureen"))
        .args(["data", "synth", "--shards", "0", "--out"])
        .arg(tmp.path().join("x"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--shards"));
    assert!(!tmp.path().join("x").exists());
}
