//! `tureen soup` end to end: numerics against committed mergekit / naive_avg.py references,
//! the YAML form, determinism across thread counts, and every error path with real
//! malformed files (each must fail cleanly and leave nothing behind).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

mod common;
use common::{ok, tureen};

use tureen_artifacts::safetensors::{write_file, Dtype, SafetensorsFile};
use tureen_artifacts::Digest;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/soup")
}

fn fixture_inputs(tag: &str) -> Vec<PathBuf> {
    (0..3)
        .map(|i| fixtures().join(tag).join(format!("in{i}.safetensors")))
        .collect()
}

/// Asserts failure, returns stderr, and checks no file other than `allowed` is in `dir`.
fn fails_cleanly(out: &Output, dir: &Path, allowed: &[&str]) -> String {
    assert!(
        !out.status.success(),
        "expected failure, got success: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(
        out.status.code().is_none_or(|c| c != 101),
        "tureen panicked: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!stderr.contains("panicked"), "{stderr}");
    let left: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !allowed.contains(&n.as_str()))
        .collect();
    assert!(left.is_empty(), "left behind after failure: {left:?}");
    stderr
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn f32s(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// A small valid checkpoint: `w` (F32 [2,3]) and `steps` (I64 [2]).
fn checkpoint(dir: &Path, name: &str, scale: f32, steps: i64) -> PathBuf {
    let p = dir.join(name);
    let w = f32s(&[
        1.0 * scale,
        2.0 * scale,
        3.0 * scale,
        4.0 * scale,
        5.0 * scale,
        6.0 * scale,
    ]);
    let st: Vec<u8> = [steps, 7].iter().flat_map(|x| x.to_le_bytes()).collect();
    write_file(
        &p,
        &[
            ("w", Dtype::F32, &[2, 3], &w),
            ("steps", Dtype::I64, &[2], &st),
        ],
        None,
    )
    .unwrap();
    p
}

/// Writes a raw safetensors image with the given header text and data.
fn raw(dir: &Path, name: &str, header_len: u64, header: &str, data: &[u8]) -> PathBuf {
    let mut bytes = header_len.to_le_bytes().to_vec();
    bytes.extend_from_slice(header.as_bytes());
    bytes.extend_from_slice(data);
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

#[test]
fn weighted_soup_is_byte_identical_to_mergekit_linear() {
    let dir = tempfile::tempdir().unwrap();
    for tag in ["f32", "bf16", "f16"] {
        let ins = fixture_inputs(tag);
        let out = dir.path().join(format!("{tag}.safetensors"));
        ok(&tureen(
            dir.path(),
            &[
                "soup",
                s(&ins[0]),
                s(&ins[1]),
                s(&ins[2]),
                "-o",
                s(&out),
                "--weights",
                "0.2,0.3,0.5",
                "--no-metadata",
            ],
        ));
        let reference = fixtures().join(tag).join("mergekit_w235.safetensors");
        assert!(
            std::fs::read(&out).unwrap() == std::fs::read(&reference).unwrap(),
            "{tag} differs from mergekit"
        );
    }
}

#[test]
fn uniform_bf16_soup_matches_naive_avg_py_tensor_for_tensor() {
    let dir = tempfile::tempdir().unwrap();
    let ins = fixture_inputs("bf16");
    let out = dir.path().join("soup.safetensors");
    ok(&tureen(
        dir.path(),
        &["soup", s(&ins[0]), s(&ins[1]), s(&ins[2]), "-o", s(&out)],
    ));
    let ours = SafetensorsFile::open(&out).unwrap();
    let naive = SafetensorsFile::open(fixtures().join("bf16/naive.safetensors")).unwrap();
    for t in naive
        .tensors()
        .iter()
        .filter(|t| t.name != "num_batches_tracked")
    {
        assert_eq!(
            ours.data(ours.get(&t.name).unwrap()),
            naive.data(t),
            "{}",
            t.name
        );
    }
    // The int64 tensor is copied, not averaged into bf16 as naive_avg.py does.
    assert_eq!(ours.get("num_batches_tracked").unwrap().dtype, Dtype::I64);
    assert_eq!(ours.metadata().unwrap()["format"], "pt");
}

#[test]
fn mergekit_yaml_config_gives_the_same_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let ins = fixture_inputs("f16");
    let yaml = format!(
        "merge_method: linear\nmodels:\n  - model: {}\n    parameters:\n      weight: 1\n  - model: {}\n    parameters: {{weight: 2}}\n  - model: {}\n    parameters:\n      weight: 4.0\ndtype: float16\n",
        s(&ins[0]), s(&ins[1]), s(&ins[2])
    );
    std::fs::write(dir.path().join("soup.yaml"), yaml).unwrap();
    ok(&tureen(
        dir.path(),
        &[
            "soup",
            "--config",
            "soup.yaml",
            "-o",
            "out.safetensors",
            "--no-metadata",
        ],
    ));
    let reference = fixtures().join("f16/mergekit_w124.safetensors");
    assert!(
        std::fs::read(dir.path().join("out.safetensors")).unwrap()
            == std::fs::read(reference).unwrap()
    );
}

#[test]
fn yaml_config_errors_name_the_file_and_position() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("bad.yaml"),
        "merge_method: linear\nmodels:\n  - model: a\n    parameters: {weight: [1, 2]}\n",
    )
    .unwrap();
    let err = fails_cleanly(
        &tureen(
            dir.path(),
            &["soup", "--config", "bad.yaml", "-o", "o.safetensors"],
        ),
        dir.path(),
        &["bad.yaml"],
    );
    assert!(err.contains("bad.yaml") && err.contains("lists"), "{err}");
    std::fs::write(
        dir.path().join("slerp.yaml"),
        "merge_method: slerp\nmodels: []\n",
    )
    .unwrap();
    let err = fails_cleanly(
        &tureen(
            dir.path(),
            &["soup", "--config", "slerp.yaml", "-o", "o.safetensors"],
        ),
        dir.path(),
        &["bad.yaml", "slerp.yaml"],
    );
    assert!(err.contains("\"slerp\" is not supported"), "{err}");
    std::fs::write(
        dir.path().join("typo.yaml"),
        "merge_method: linear\nmodles: []\n",
    )
    .unwrap();
    let err = fails_cleanly(
        &tureen(
            dir.path(),
            &["soup", "--config", "typo.yaml", "-o", "o.safetensors"],
        ),
        dir.path(),
        &["bad.yaml", "slerp.yaml", "typo.yaml"],
    );
    assert!(err.contains("typo.yaml") && err.contains("line 2"), "{err}");
}

#[test]
fn output_bytes_do_not_depend_on_the_thread_count() {
    let dir = tempfile::tempdir().unwrap();
    let ins = fixture_inputs("bf16");
    let mut outs = Vec::new();
    for threads in ["1", "2", "5"] {
        let out = dir.path().join(format!("t{threads}.safetensors"));
        let o = Command::new(env!("CARGO_BIN_EXE_tureen"))
            .args([
                "soup",
                s(&ins[0]),
                s(&ins[1]),
                s(&ins[2]),
                "-o",
                s(&out),
                "--weights",
                "0.2,0.3,0.5",
            ])
            .env("RAYON_NUM_THREADS", threads)
            .env_remove("TUREEN_STORE")
            .output()
            .unwrap();
        ok(&o);
        outs.push(std::fs::read(&out).unwrap());
    }
    assert!(outs[0] == outs[1] && outs[1] == outs[2]);
}

#[test]
fn store_flag_adds_the_soup_and_records_ingredient_hashes() {
    let dir = tempfile::tempdir().unwrap();
    let ins = fixture_inputs("f32");
    let stdout = ok(&tureen(
        dir.path(),
        &[
            "--store",
            "st",
            "soup",
            s(&ins[0]),
            s(&ins[1]),
            s(&ins[2]),
            "-o",
            "soup.safetensors",
            "--accumulate",
            "f64",
        ],
    ));
    let line = stdout
        .lines()
        .find(|l| l.starts_with("stored as "))
        .expect("stored line");
    let digest = line.trim_start_matches("stored as ");
    let soup = std::fs::read(dir.path().join("soup.safetensors")).unwrap();
    assert_eq!(digest, Digest::of_bytes(&soup).to_string());
    let f = SafetensorsFile::open(dir.path().join("soup.safetensors")).unwrap();
    let meta = f.metadata().unwrap();
    for p in &ins {
        let h = Digest::of_bytes(&std::fs::read(p).unwrap()).to_string();
        assert!(meta["tureen.soup.ingredients"].contains(&h));
    }
    assert!(meta["tureen.soup.numerics"].starts_with("f64"));
    assert_eq!(f.get("encoder.layer0.weight").unwrap().dtype, Dtype::F32);
}

/// Sets a file's mtime a minute back: files modified within the last two seconds are never
/// stat-cached ("racily clean").
fn settle(path: &Path) {
    let old = std::time::SystemTime::now() - std::time::Duration::from_secs(60);
    std::fs::File::options()
        .write(true)
        .open(path)
        .unwrap()
        .set_modified(old)
        .unwrap();
}

#[test]
fn an_existing_store_here_lends_its_stat_cache_to_ingredient_digests() {
    let dir = tempfile::tempdir().unwrap();
    let ins: Vec<PathBuf> = (0..3)
        .map(|i| checkpoint(dir.path(), &format!("c{i}.safetensors"), i as f32 + 1.0, 5))
        .collect();
    ins.iter().for_each(|p| settle(p));
    let args = [
        "soup",
        "c0.safetensors",
        "c1.safetensors",
        "c2.safetensors",
        "-o",
        "soup.safetensors",
    ];

    // No store here: nothing is created.
    ok(&tureen(dir.path(), &args));
    assert!(!dir.path().join(".tureen").exists());

    // With a `.tureen` here, the digests computed during the soup are remembered...
    std::fs::create_dir(dir.path().join(".tureen")).unwrap();
    ok(&tureen(dir.path(), &args));
    let cache_file = dir.path().join(".tureen/statcache.json");
    let cache = std::fs::read_to_string(&cache_file).unwrap();
    let digests: Vec<String> = ins
        .iter()
        .map(|p| Digest::of_bytes(&std::fs::read(p).unwrap()).to_string())
        .collect();
    for d in &digests {
        assert!(cache.contains(d.as_str()), "{d} not in {cache}");
    }
    let objects = std::fs::read_dir(dir.path().join(".tureen/objects"))
        .unwrap()
        .count();
    assert_eq!(objects, 0, "the soup is not added without --store");

    // ... and the next soup takes them from the cache instead of reading the files again:
    // a digest planted in the cache shows up in the provenance.
    let planted = Digest::of_bytes(b"planted").to_string();
    std::fs::write(&cache_file, cache.replace(digests[1].as_str(), &planted)).unwrap();
    ok(&tureen(dir.path(), &args));
    let f = SafetensorsFile::open(dir.path().join("soup.safetensors")).unwrap();
    let ingredients = &f.metadata().unwrap()["tureen.soup.ingredients"];
    assert!(ingredients.contains(&planted), "{ingredients}");
    assert!(ingredients.contains(&digests[0]), "{ingredients}");
}

#[test]
fn truncated_input_is_an_error_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let a = checkpoint(dir.path(), "a.safetensors", 1.0, 3);
    let b = checkpoint(dir.path(), "b.safetensors", 2.0, 3);
    let bytes = std::fs::read(&b).unwrap();
    std::fs::write(&b, &bytes[..bytes.len() - 5]).unwrap();
    let err = fails_cleanly(
        &tureen(dir.path(), &["soup", s(&a), s(&b), "-o", "out.safetensors"]),
        dir.path(),
        &["a.safetensors", "b.safetensors"],
    );
    assert!(
        err.contains("b.safetensors") && err.contains("truncated"),
        "{err}"
    );
}

#[test]
fn lying_header_length_and_2_pow_60_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let a = checkpoint(dir.path(), "a.safetensors", 1.0, 3);
    let lie = raw(dir.path(), "lie.safetensors", 4096, "{}", &[]);
    let huge = raw(dir.path(), "huge.safetensors", 1 << 60, "{}", &[]);
    let allowed = ["a.safetensors", "lie.safetensors", "huge.safetensors"];
    let err = fails_cleanly(
        &tureen(
            dir.path(),
            &["soup", s(&a), s(&lie), "-o", "out.safetensors"],
        ),
        dir.path(),
        &allowed,
    );
    assert!(
        err.contains("lie.safetensors") && err.contains("header length 4096"),
        "{err}"
    );
    let err = fails_cleanly(
        &tureen(
            dir.path(),
            &["soup", s(&a), s(&huge), "-o", "out.safetensors"],
        ),
        dir.path(),
        &allowed,
    );
    assert!(
        err.contains("huge.safetensors") && err.contains("1152921504606846976"),
        "{err}"
    );
}

#[test]
fn overlapping_offsets_are_an_error_naming_both_tensors() {
    let dir = tempfile::tempdir().unwrap();
    let h = r#"{"w":{"dtype":"F32","shape":[2,3],"data_offsets":[0,24]},"steps":{"dtype":"I64","shape":[2],"data_offsets":[8,24]}}"#;
    let bad = raw(
        dir.path(),
        "overlap.safetensors",
        h.len() as u64,
        h,
        &[0; 24],
    );
    let a = checkpoint(dir.path(), "a.safetensors", 1.0, 3);
    let err = fails_cleanly(
        &tureen(
            dir.path(),
            &["soup", s(&a), s(&bad), "-o", "out.safetensors"],
        ),
        dir.path(),
        &["a.safetensors", "overlap.safetensors"],
    );
    assert!(
        err.contains("overlap.safetensors") && err.contains("\"w\" and \"steps\" overlap"),
        "{err}"
    );
}

#[test]
fn wrong_dtype_string_is_an_error_naming_the_tensor() {
    let dir = tempfile::tempdir().unwrap();
    let h = r#"{"w":{"dtype":"float32","shape":[2,3],"data_offsets":[0,24]}}"#;
    let bad = raw(dir.path(), "dtype.safetensors", h.len() as u64, h, &[0; 24]);
    let a = checkpoint(dir.path(), "a.safetensors", 1.0, 3);
    let err = fails_cleanly(
        &tureen(
            dir.path(),
            &["soup", s(&a), s(&bad), "-o", "out.safetensors"],
        ),
        dir.path(),
        &["a.safetensors", "dtype.safetensors"],
    );
    assert!(
        err.contains("dtype.safetensors")
            && err.contains("tensor \"w\"")
            && err.contains("float32"),
        "{err}"
    );
}

#[test]
fn nan_and_zero_sum_weights_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let a = checkpoint(dir.path(), "a.safetensors", 1.0, 3);
    let b = checkpoint(dir.path(), "b.safetensors", 2.0, 3);
    let allowed = ["a.safetensors", "b.safetensors"];
    let err = fails_cleanly(
        &tureen(
            dir.path(),
            &[
                "soup",
                s(&a),
                s(&b),
                "-o",
                "out.safetensors",
                "--weights",
                "0.5,nan",
            ],
        ),
        dir.path(),
        &allowed,
    );
    assert!(err.contains("weight 2") && err.contains("finite"), "{err}");
    let err = fails_cleanly(
        &tureen(
            dir.path(),
            &[
                "soup",
                s(&a),
                s(&b),
                "-o",
                "out.safetensors",
                "--weights",
                "1,-1",
            ],
        ),
        dir.path(),
        &allowed,
    );
    assert!(err.contains("non-zero"), "{err}");
    let err = fails_cleanly(
        &tureen(
            dir.path(),
            &[
                "soup",
                s(&a),
                s(&b),
                "-o",
                "out.safetensors",
                "--weights",
                "1,abc",
            ],
        ),
        dir.path(),
        &allowed,
    );
    assert!(err.contains("\"abc\""), "{err}");
}

#[test]
fn missing_key_is_an_error_unless_keys_policy_allows_it() {
    let dir = tempfile::tempdir().unwrap();
    let a = checkpoint(dir.path(), "a.safetensors", 1.0, 3);
    let b = dir.path().join("b.safetensors");
    write_file(&b, &[("w", Dtype::F32, &[2, 3], &f32s(&[3.0; 6]))], None).unwrap();
    let err = fails_cleanly(
        &tureen(dir.path(), &["soup", s(&a), s(&b), "-o", "out.safetensors"]),
        dir.path(),
        &["a.safetensors", "b.safetensors"],
    );
    assert!(
        err.contains("b.safetensors lacks 1 tensor(s): \"steps\""),
        "{err}"
    );

    ok(&tureen(
        dir.path(),
        &[
            "soup",
            s(&a),
            s(&b),
            "-o",
            "inter.safetensors",
            "--keys",
            "intersection",
        ],
    ));
    let f = SafetensorsFile::open(dir.path().join("inter.safetensors")).unwrap();
    assert!(f.get("steps").is_none());
    assert_eq!(
        f.data(f.get("w").unwrap()),
        &f32s(&[2.0, 2.5, 3.0, 3.5, 4.0, 4.5])[..]
    );

    ok(&tureen(
        dir.path(),
        &[
            "soup",
            s(&a),
            s(&b),
            "-o",
            "union.safetensors",
            "--keys",
            "union",
        ],
    ));
    let f = SafetensorsFile::open(dir.path().join("union.safetensors")).unwrap();
    assert_eq!(f.get("steps").unwrap().dtype, Dtype::I64);
}

#[test]
fn int_tensor_mismatch_is_an_error_unless_first_is_requested() {
    let dir = tempfile::tempdir().unwrap();
    let a = checkpoint(dir.path(), "a.safetensors", 1.0, 3);
    let b = checkpoint(dir.path(), "b.safetensors", 2.0, 4);
    let allowed = ["a.safetensors", "b.safetensors", "first.safetensors"];
    let err = fails_cleanly(
        &tureen(dir.path(), &["soup", s(&a), s(&b), "-o", "out.safetensors"]),
        dir.path(),
        &allowed,
    );
    assert!(
        err.contains("\"steps\"") && err.contains("a.safetensors") && err.contains("b.safetensors"),
        "{err}"
    );
    let err = fails_cleanly(
        &tureen(
            dir.path(),
            &[
                "soup",
                s(&a),
                s(&a),
                "-o",
                "out.safetensors",
                "--int-policy",
                "error",
            ],
        ),
        dir.path(),
        &allowed,
    );
    assert!(err.contains("\"steps\"") && err.contains("I64"), "{err}");
    ok(&tureen(
        dir.path(),
        &[
            "soup",
            s(&a),
            s(&b),
            "-o",
            "first.safetensors",
            "--int-policy",
            "first",
        ],
    ));
    let f = SafetensorsFile::open(dir.path().join("first.safetensors")).unwrap();
    assert_eq!(&f.data(f.get("steps").unwrap())[..8], &3i64.to_le_bytes());
}

#[test]
fn shape_and_dtype_mismatches_list_the_offending_tensors() {
    let dir = tempfile::tempdir().unwrap();
    let a = checkpoint(dir.path(), "a.safetensors", 1.0, 3);
    let b = dir.path().join("b.safetensors");
    let st: Vec<u8> = [3i64, 7].iter().flat_map(|x| x.to_le_bytes()).collect();
    write_file(
        &b,
        &[
            ("w", Dtype::F32, &[3, 2], &f32s(&[1.0; 6])),
            ("steps", Dtype::I64, &[2], &st),
        ],
        None,
    )
    .unwrap();
    let err = fails_cleanly(
        &tureen(dir.path(), &["soup", s(&a), s(&b), "-o", "out.safetensors"]),
        dir.path(),
        &["a.safetensors", "b.safetensors"],
    );
    assert!(
        err.contains("\"w\": F32 [2, 3]") && err.contains("[3, 2]"),
        "{err}"
    );
    let c = dir.path().join("c.safetensors");
    write_file(
        &c,
        &[
            ("w", Dtype::F64, &[2, 3], &[0u8; 48]),
            ("steps", Dtype::I64, &[2], &st),
        ],
        None,
    )
    .unwrap();
    let err = fails_cleanly(
        &tureen(dir.path(), &["soup", s(&a), s(&c), "-o", "out.safetensors"]),
        dir.path(),
        &["a.safetensors", "b.safetensors", "c.safetensors"],
    );
    assert!(err.contains("\"w\"") && err.contains("F64"), "{err}");
}

#[test]
fn failure_keeps_an_existing_output_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let a = checkpoint(dir.path(), "a.safetensors", 1.0, 3);
    let b = checkpoint(dir.path(), "b.safetensors", 2.0, 4);
    std::fs::write(dir.path().join("out.safetensors"), b"previous").unwrap();
    fails_cleanly(
        &tureen(dir.path(), &["soup", s(&a), s(&b), "-o", "out.safetensors"]),
        dir.path(),
        &["a.safetensors", "b.safetensors", "out.safetensors"],
    );
    assert_eq!(
        std::fs::read(dir.path().join("out.safetensors")).unwrap(),
        b"previous"
    );
}

#[test]
fn missing_input_file_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let a = checkpoint(dir.path(), "a.safetensors", 1.0, 3);
    let err = fails_cleanly(
        &tureen(
            dir.path(),
            &["soup", s(&a), "nope.safetensors", "-o", "out.safetensors"],
        ),
        dir.path(),
        &["a.safetensors"],
    );
    assert!(err.contains("nope.safetensors"), "{err}");
}
