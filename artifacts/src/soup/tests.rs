//! Numerics against committed reference outputs (see tests/fixtures/soup/make_fixtures.py)
//! and the library-level error paths. The command-line tests are in tests/soup.rs.

use std::path::{Path, PathBuf};

use super::*;
use crate::safetensors::SafetensorsFile;

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

fn torch_fixtures(tag: &str) -> (Vec<PathBuf>, PathBuf) {
    let dir = fixtures().join("../torch").join(tag);
    let inputs = ["in0.pt", "in1.bin", "in2.safetensors"]
        .iter()
        .map(|n| dir.join(n))
        .collect();
    (inputs, dir)
}

#[test]
fn torch_save_and_safetensors_inputs_mix_and_match_torch_bitwise() {
    // in0.pt is a DDP open_clip checkpoint, in1.bin a bare state dict with views sharing
    // a storage and a transposed view, in2 safetensors; the references are torch.load +
    // float32 FMA average + cast (tests/fixtures/torch/make_fixtures.py).
    for tag in ["f32", "bf16", "f16"] {
        let (ins, dir) = torch_fixtures(tag);
        let tmp = tempfile::tempdir().unwrap();
        for (weights, reference) in [
            (Some(&[0.2, 0.3, 0.5][..]), "ref_w235.safetensors"),
            (None, "ref_uniform.safetensors"),
        ] {
            let out = tmp.path().join(reference);
            soup_files(&ins, weights, &out, &no_metadata(), None).unwrap();
            assert_eq!(
                std::fs::read(&out).unwrap(),
                std::fs::read(dir.join(reference)).unwrap(),
                "{tag} {reference}"
            );
        }
    }
}

#[test]
fn a_sharded_soup_holds_the_same_tensors_as_a_single_file() {
    let (ins, dir) = torch_fixtures("f32");
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("sharded");
    let opts = SoupOptions {
        out_shard_size: Some(1000),
        ..no_metadata()
    };
    soup_files(&ins, Some(&[0.2, 0.3, 0.5]), &out, &opts, None).unwrap();
    let shards = std::fs::read_dir(&out).unwrap().count() - 1;
    assert!(shards > 2, "{shards} shards");
    let sharded = Checkpoint::open(&out, &OpenOptions::default()).unwrap();
    let single = SafetensorsFile::open(dir.join("ref_w235.safetensors")).unwrap();
    assert_eq!(sharded.tensors().len(), single.tensors().len());
    for t in single.tensors() {
        let s = sharded.get(&t.name).unwrap();
        assert_eq!(sharded.data(s), single.data(t), "{}", t.name);
    }
}

fn f32_file(dir: &Path, name: &str, values: &[f32]) -> PathBuf {
    let p = dir.join(name);
    let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    crate::safetensors::write_file(
        &p,
        &[("w", Dtype::F32, &[values.len() as u64], &bytes)],
        None,
    )
    .unwrap();
    p
}

#[test]
fn results_that_overflow_fail_by_name_and_inherited_infinities_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    let big = [
        f32_file(dir.path(), "a", &[3e38, 1.0]),
        f32_file(dir.path(), "b", &[3e38, 1.0]),
    ];
    let out = dir.path().join("soup.safetensors");
    let err = soup_files(&big, None, &out, &no_metadata(), None).unwrap_err();
    assert!(
        matches!(&err, SoupError::NonFinite(names) if names == "\"w\""),
        "{err}"
    );
    assert!(!out.exists());
    // An f16 output overflows too (70000 is finite in float32).
    let f16 = SoupOptions {
        out_dtype: Some(Dtype::F16),
        ..no_metadata()
    };
    let wide = [
        f32_file(dir.path(), "c", &[7e4]),
        f32_file(dir.path(), "d", &[7e4]),
    ];
    assert!(matches!(
        soup_files(&wide, None, &out, &f16, None),
        Err(SoupError::NonFinite(_))
    ));
    // An input's own -inf (a mask) is kept and reported, not an error.
    let masked = [
        f32_file(dir.path(), "e", &[f32::NEG_INFINITY, 1.0]),
        f32_file(dir.path(), "f", &[f32::NEG_INFINITY, 3.0]),
    ];
    let report = soup_files(&masked, None, &out, &no_metadata(), None).unwrap();
    assert_eq!(report.non_finite_inherited, ["w"]);
}

#[test]
fn weights_that_vanish_in_float32_are_refused() {
    let (ins, _) = torch_fixtures("f32");
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("soup.safetensors");
    for w in [
        &[1e-45, 1e-45, 1e-45][..],
        &[1e-39, 1.0, 1.0],
        &[1e39, 1.0, 1.0],
    ] {
        let err = soup_files(&ins, Some(w), &out, &SoupOptions::default(), None).unwrap_err();
        assert!(err.to_string().contains("in float32"), "{w:?}: {err}");
    }
    // In float64 accumulation tiny weights are fine.
    let f64 = SoupOptions {
        accumulate: Accumulate::F64,
        ..no_metadata()
    };
    soup_files(&ins, Some(&[1e-45, 1e-45, 1e-45]), &out, &f64, None).unwrap();
}

#[test]
fn an_output_that_is_not_a_regular_file_is_never_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("fifo");
    crate::fsutil::make_fifo(&fifo);
    let (ins, _) = torch_fixtures("f32");
    for dest in [fifo.as_path(), dir.path()] {
        let err = soup_files(&ins, None, dest, &no_metadata(), None).unwrap_err();
        assert!(err.to_string().contains("not a regular file"), "{err}");
    }
    use std::os::unix::fs::FileTypeExt;
    assert!(std::fs::symlink_metadata(&fifo)
        .unwrap()
        .file_type()
        .is_fifo());
}
