//! Numerics against committed reference outputs (see tests/fixtures/soup/make_fixtures.py)
//! and the library-level error paths. The command-line tests are in tests/soup.rs.

use std::path::{Path, PathBuf};

use super::*;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/soup")
}

fn inputs(tag: &str) -> Vec<PathBuf> {
    (0..3)
        .map(|i| fixtures().join(tag).join(format!("in{i}.safetensors")))
        .collect()
}

fn no_metadata() -> SoupOptions {
    SoupOptions {
        provenance: false,
        ..SoupOptions::default()
    }
}

/// Asserts that every tensor of `reference` has byte-identical data in `actual` (same dtype
/// and shape), optionally skipping some names.
fn assert_tensors_equal(actual: &Path, reference: &Path, skip: &[&str]) {
    let a = SafetensorsFile::open(actual).unwrap();
    let r = SafetensorsFile::open(reference).unwrap();
    for t in r.tensors() {
        if skip.contains(&t.name.as_str()) {
            continue;
        }
        let at = a
            .get(&t.name)
            .unwrap_or_else(|| panic!("{} missing", t.name));
        assert_eq!((at.dtype, &at.shape), (t.dtype, &t.shape), "{}", t.name);
        let (ad, rd) = (a.data(at), r.data(t));
        let diff = ad.iter().zip(rd).filter(|(x, y)| x != y).count();
        assert!(
            ad == rd,
            "{}: {diff} bytes differ from {}",
            t.name,
            reference.display()
        );
    }
}

#[test]
fn mergekit_linear_weights_235_is_bit_identical_for_every_dtype() {
    for tag in ["f32", "bf16", "f16"] {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("soup.safetensors");
        soup_files(
            &inputs(tag),
            Some(&[0.2, 0.3, 0.5]),
            &out,
            &no_metadata(),
            None,
        )
        .unwrap();
        let reference = fixtures().join(tag).join("mergekit_w235.safetensors");
        assert_tensors_equal(&out, &reference, &[]);
        // Without metadata the whole file matches safetensors' own serialization.
        assert_eq!(
            std::fs::read(&out).unwrap(),
            std::fs::read(&reference).unwrap(),
            "{tag}"
        );
    }
}

#[test]
fn mergekit_linear_unnormalized_weights_124_is_bit_identical() {
    for tag in ["f32", "bf16", "f16"] {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("soup.safetensors");
        soup_files(
            &inputs(tag),
            Some(&[1.0, 2.0, 4.0]),
            &out,
            &no_metadata(),
            None,
        )
        .unwrap();
        assert_tensors_equal(
            &out,
            &fixtures().join(tag).join("mergekit_w124.safetensors"),
            &[],
        );
    }
}

#[test]
fn uniform_soup_matches_naive_avg_py() {
    // naive_avg.py always writes bfloat16 and (wrongly) averages the int64 tensor too, so
    // compare the float tensors with a bf16 output.
    for tag in ["f32", "bf16", "f16"] {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("soup.safetensors");
        let opts = SoupOptions {
            out_dtype: Some(Dtype::BF16),
            ..no_metadata()
        };
        soup_files(&inputs(tag), None, &out, &opts, None).unwrap();
        assert_tensors_equal(
            &out,
            &fixtures().join(tag).join("naive.safetensors"),
            &["num_batches_tracked"],
        );
    }
}

#[test]
fn accumulate_f64_matches_timm_semantics() {
    for tag in ["f32", "bf16", "f16"] {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("soup.safetensors");
        let opts = SoupOptions {
            accumulate: Accumulate::F64,
            ..no_metadata()
        };
        soup_files(&inputs(tag), None, &out, &opts, None).unwrap();
        let reference = fixtures().join(tag).join("timm_f64.safetensors");
        assert_eq!(
            std::fs::read(&out).unwrap(),
            std::fs::read(&reference).unwrap(),
            "{tag}"
        );
    }
}

#[test]
fn chunk_size_and_thread_count_do_not_change_a_bit() {
    let dir = tempfile::tempdir().unwrap();
    let mut outputs = Vec::new();
    for (threads, chunk) in [(1, 1 << 18), (4, 7), (3, 1)] {
        let out = dir
            .path()
            .join(format!("soup{threads}_{chunk}.safetensors"));
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        let opts = SoupOptions {
            chunk_elems: chunk,
            ..SoupOptions::default()
        };
        pool.install(|| soup_files(&inputs("bf16"), Some(&[0.2, 0.3, 0.5]), &out, &opts, None))
            .unwrap();
        outputs.push(std::fs::read(&out).unwrap());
    }
    assert!(outputs.windows(2).all(|w| w[0] == w[1]));
}

#[test]
fn provenance_records_hashes_weights_and_numerics() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("soup.safetensors");
    let ins = inputs("f32");
    let report = soup_files(
        &ins,
        Some(&[0.2, 0.3, 0.5]),
        &out,
        &SoupOptions::default(),
        None,
    )
    .unwrap();
    let f = SafetensorsFile::open(&out).unwrap();
    let meta = f.metadata().unwrap();
    assert_eq!(meta["format"], "pt");
    assert_eq!(meta["tureen.soup.weights"], "[0.2,0.3,0.5]");
    assert!(meta["tureen.soup.numerics"].starts_with("f32-fma-sequential"));
    for (p, d) in ins.iter().zip(&report.input_digests) {
        assert_eq!(*d, Digest::of_file(p).unwrap());
        assert!(meta["tureen.soup.ingredients"].contains(&d.to_string()));
    }
    // Tensor data is unaffected by the metadata.
    assert_tensors_equal(&out, &fixtures().join("f32/mergekit_w235.safetensors"), &[]);
}

#[test]
fn weight_errors_are_reported_before_any_work() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("soup.safetensors");
    let cases: [(&[f64], &str); 4] = [
        (&[f64::NAN, 1.0, 1.0], "must be finite"),
        (&[f64::INFINITY, 1.0, 1.0], "must be finite"),
        (&[1.0, -1.0, 0.0], "non-zero"),
        (&[1.0, 1.0], "2 weights given for 3"),
    ];
    for (w, expect) in cases {
        let err =
            soup_files(&inputs("f32"), Some(w), &out, &SoupOptions::default(), None).unwrap_err();
        assert!(err.to_string().contains(expect), "{err}");
        assert!(!out.exists());
    }
}

#[test]
fn config_apply_sets_cast_and_output_dtype() {
    let cfg = config::SoupConfig {
        inputs: vec![],
        weights: vec![],
        dtype: Some(Dtype::F32),
        out_dtype: Some(Dtype::BF16),
        normalize: false,
    };
    let mut opts = SoupOptions::default();
    cfg.apply(&mut opts);
    assert_eq!(
        (opts.input_cast, opts.out_dtype, opts.normalize),
        (Some(Dtype::F32), Some(Dtype::BF16), false)
    );
}
