//! Checkpoints from anywhere, end to end through the `tureen` binary: `torch.save` files
//! (written by torch, see tests/fixtures/torch/make_fixtures.py), sharded safetensors,
//! `convert` and `inspect`, a corpus of malformed and hostile `.pt` files, and the soup
//! command's output and input checks.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

mod common;
use common::{assert_same_tensors, ok, tureen};

use tureen_artifacts::safetensors::SafetensorsFile;

fn fixtures(tag: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/torch")
        .join(tag)
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// The three inputs of a dtype: a DDP open_clip `.pt`, a bare `.bin` with shared and
/// transposed views, and a `.safetensors`.
fn mixed(tag: &str) -> [PathBuf; 3] {
    let d = fixtures(tag);
    [
        d.join("in0.pt"),
        d.join("in1.bin"),
        d.join("in2.safetensors"),
    ]
}

/// Asserts a clean failure: exit 1, no panic, and returns stderr.
fn fails(out: &Output) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "expected exit 1: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    stderr
}

fn entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn a_soup_of_pt_bin_and_safetensors_matches_torch_bitwise_in_every_dtype() {
    let dir = tempfile::tempdir().unwrap();
    for tag in ["f32", "bf16", "f16"] {
        let [a, b, c] = mixed(tag);
        let out = dir.path().join(format!("{tag}.safetensors"));
        let args = [
            "soup",
            s(&a),
            s(&b),
            s(&c),
            "--weights",
            "0.2,0.3,0.5",
            "-o",
            s(&out),
        ];
        ok(&tureen(
            dir.path(),
            &[&args[..], &["--no-metadata"]].concat(),
        ));
        assert_eq!(
            std::fs::read(&out).unwrap(),
            std::fs::read(fixtures(tag).join("ref_w235.safetensors")).unwrap(),
            "{tag}: byte-identical to safetensors.torch.save_file of the torch reference"
        );
        // With provenance, the same tensors; the ingredients are named by digest.
        ok(&tureen(dir.path(), &args));
        assert_same_tensors(&out, &fixtures(tag).join("ref_w235.safetensors"));
        let meta = SafetensorsFile::open(&out)
            .unwrap()
            .metadata()
            .unwrap()
            .clone();
        let digest = tureen_artifacts::Digest::of_file(&a).unwrap().to_string();
        assert!(meta["tureen.soup.ingredients"].contains(&digest));
        let uniform = dir.path().join(format!("{tag}-uniform.safetensors"));
        ok(&tureen(
            dir.path(),
            &["soup", s(&a), s(&b), s(&c), "-o", s(&uniform)],
        ));
        assert_same_tensors(&uniform, &fixtures(tag).join("ref_uniform.safetensors"));
    }
}

#[test]
fn key_and_prefix_options_pick_the_tensors() {
    let dir = tempfile::tempdir().unwrap();
    let [a, b, _] = mixed("f32");
    let out = dir.path().join("o.safetensors");
    // Keeping the DDP prefix makes the names differ from the bare state dict's.
    let e = fails(&tureen(
        dir.path(),
        &["soup", s(&a), s(&b), "--keep-prefix", "-o", s(&out)],
    ));
    assert!(e.contains("module.encoder.layer0.weight"), "{e}");
    let e = fails(&tureen(
        dir.path(),
        &["soup", s(&a), s(&b), "--key", "optimizer", "-o", s(&out)],
    ));
    assert!(
        e.contains(
            "--key optimizer: the saved object (a dict of 3 entries) has no entry `optimizer`"
        ),
        "{e}"
    );
    ok(&tureen(
        dir.path(),
        &["soup", s(&a), s(&a), "--key", "state_dict", "-o", s(&out)],
    ));
}

/// Runs `tureen` with its address space capped, so that any allocation sized by a
/// number read from a hostile file fails instead of succeeding quietly.
fn tureen_capped(dir: &Path, args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tureen"));
    cmd.args(args).current_dir(dir).env_remove("TUREEN_STORE");
    // SAFETY: setrlimit is async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            let limit = libc::rlimit {
                rlim_cur: 2 << 30,
                rlim_max: 2 << 30,
            };
            libc::setrlimit(libc::RLIMIT_AS, &limit);
            Ok(())
        });
    }
    cmd.output().expect("run tureen")
}

#[test]
fn hostile_and_malformed_torch_files_are_refused_cleanly() {
    let hostile = fixtures("hostile");
    let good = mixed("f32")[0].clone();
    let cases = [
        ("truncated.pt", "Could not find central directory end"),
        ("wrong_offsets.pt", "cannot read its local header"),
        ("short_storage.pt", "declares 91 elements of F32 but"),
        (
            "extent.pt",
            "tensor w: size [4], stride [1] at offset 4 reach element 7",
        ),
        ("os_system.pt", "global `posix.system` is not allowed"),
        ("deep_nesting.pt", "no state dict"),
        ("memo_bomb.pt", "no state dict"),
        ("legacy.pt", "legacy torch.save format"),
        ("torchscript.pt", "TorchScript archive"),
    ];
    for (name, expect) in cases {
        let dir = tempfile::tempdir().unwrap();
        let input = hostile.join(name);
        for args in [
            vec!["soup", s(&good), s(&input), "-o", "out.safetensors"],
            vec!["convert", s(&input), "-o", "out.safetensors"],
            vec!["inspect", s(&input)],
        ] {
            let e = fails(&tureen_capped(dir.path(), &args));
            assert!(
                e.contains(expect) && e.contains(name),
                "{name} {args:?}: {e}"
            );
            assert_eq!(e.lines().count(), 1, "one clear line: {e}");
        }
        // Nothing ran (the malicious pickle would `touch` this in the working directory)
        // and nothing was left behind.
        assert!(
            entries(dir.path()).is_empty(),
            "{name}: {:?}",
            entries(dir.path())
        );
    }
}

#[test]
fn convert_and_inspect_read_every_format() {
    let dir = tempfile::tempdir().unwrap();
    let [a, b, c] = mixed("bf16");
    // A sharded copy of the .bin, through convert itself.
    let sharded = dir.path().join("sharded");
    ok(&tureen(
        dir.path(),
        &[
            "convert",
            s(&b),
            "-o",
            s(&sharded),
            "--out-shard-size",
            "1K",
        ],
    ));
    let shards = entries(&sharded);
    assert!(
        shards.len() >= 3 && shards.contains(&"model.safetensors.index.json".to_string()),
        "{shards:?}"
    );
    let index = sharded.join("model.safetensors.index.json");
    for input in [&a, &b, &c, &sharded, &index] {
        let out = dir.path().join("c.safetensors");
        ok(&tureen(dir.path(), &["convert", s(input), "-o", s(&out)]));
        assert_same_tensors(&out, input);
        let meta = SafetensorsFile::open(&out)
            .unwrap()
            .metadata()
            .unwrap()
            .clone();
        assert!(
            meta["tureen.source.blake3"].starts_with("blake3:"),
            "{meta:?}"
        );
        let json = ok(&tureen(dir.path(), &["inspect", s(input), "--json"]));
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(v["tensors"], 8, "{json}");
        assert_eq!(v["parameters"], 1214, "{json}");
        assert_eq!(v["dtypes"]["BF16"]["tensors"], 7, "{json}");
        let text = ok(&tureen(dir.path(), &["inspect", s(input)]));
        assert!(text.contains("parameters  1214"), "{text}");
    }
    let meta = {
        let out = dir.path().join("a.safetensors");
        ok(&tureen(dir.path(), &["convert", s(&a), "-o", s(&out)]));
        SafetensorsFile::open(&out)
            .unwrap()
            .metadata()
            .unwrap()
            .clone()
    };
    assert_eq!(meta["tureen.source.key"], "state_dict");
    assert_eq!(meta["tureen.source.stripped_prefix"], "module.");
    let text = ok(&tureen(dir.path(), &["inspect", s(&a)]));
    assert!(
        text.contains("torch.save (zip)") && text.contains("also        epoch: 1"),
        "{text}"
    );
    let json = ok(&tureen(dir.path(), &["inspect", s(&sharded), "--json"]));
    assert!(json.contains("\"sharded safetensors\""), "{json}");
}

#[test]
fn sharded_soups_are_written_and_read_like_mergekit_s() {
    let dir = tempfile::tempdir().unwrap();
    let [a, b, c] = mixed("f16");
    let out = dir.path().join("soup_dir");
    ok(&tureen(
        dir.path(),
        &[
            "soup",
            s(&a),
            s(&b),
            s(&c),
            "--weights",
            "0.2,0.3,0.5",
            "-o",
            s(&out),
            "--out-shard-size",
            "2KB",
        ],
    ));
    assert_same_tensors(&out, &fixtures("f16").join("ref_w235.safetensors"));
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("model.safetensors.index.json")).unwrap())
            .unwrap();
    assert_eq!(index["weight_map"].as_object().unwrap().len(), 8);
    assert!(index["metadata"]["total_size"].as_u64().unwrap() > 2000);
    // A soup of sharded checkpoints (directory and index forms).
    let again = dir.path().join("again.safetensors");
    let idx = out.join("model.safetensors.index.json");
    ok(&tureen(
        dir.path(),
        &["soup", s(&out), s(&idx), "-o", s(&again)],
    ));
    assert_same_tensors(&again, &fixtures("f16").join("ref_w235.safetensors"));
    // A sharded output never lands on an existing non-empty directory.
    let e = fails(&tureen(
        dir.path(),
        &[
            "soup",
            s(&a),
            s(&b),
            "-o",
            s(&out),
            "--out-shard-size",
            "2KB",
        ],
    ));
    assert!(e.contains("not empty"), "{e}");
}

#[test]
fn a_checkpoint_directory_and_out_dir_slash_work_as_in_mergekit() {
    let dir = tempfile::tempdir().unwrap();
    let [a, _, c] = mixed("f32");
    let ckpt = dir.path().join("ckpt");
    std::fs::create_dir(&ckpt).unwrap();
    std::fs::copy(&c, ckpt.join("model.safetensors")).unwrap();
    ok(&tureen(
        dir.path(),
        &["soup", s(&a), s(&ckpt), "-o", "out_dir/"],
    ));
    assert_eq!(entries(&dir.path().join("out_dir")), ["model.safetensors"]);
    // An existing directory given without the slash means the same.
    ok(&tureen(
        dir.path(),
        &["soup", s(&a), s(&ckpt), "-o", "out_dir"],
    ));
    // A failed soup removes the directory it created for its output.
    let e = fails(&tureen(
        dir.path(),
        &["soup", s(&a), "missing.pt", "-o", "new_dir/"],
    ));
    assert!(e.contains("missing.pt"), "{e}");
    assert!(!dir.path().join("new_dir").exists());
}

#[test]
fn one_input_and_vanishing_weights_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let [a, b, _] = mixed("f32");
    let e = fails(&tureen(dir.path(), &["soup", s(&a), "-o", "s.safetensors"]));
    assert!(
        e.contains("only one checkpoint") && e.contains("tureen convert"),
        "{e}"
    );
    let e = fails(&tureen(
        dir.path(),
        &[
            "soup",
            s(&a),
            s(&b),
            "--weights",
            "1e-45,1e-45",
            "-o",
            "s.safetensors",
        ],
    ));
    assert!(e.contains("in float32") && e.contains("1e-45"), "{e}");
    assert!(entries(dir.path()).is_empty());
}

#[test]
fn an_overflowing_soup_names_the_tensor_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let big: Vec<u8> = [3e38f32, 1.0]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    for name in ["a.safetensors", "b.safetensors"] {
        tureen_artifacts::safetensors::write_file(
            &dir.path().join(name),
            &[(
                "head.weight",
                tureen_artifacts::safetensors::Dtype::F32,
                &[2],
                &big,
            )],
            None,
        )
        .unwrap();
    }
    let e = fails(&tureen(
        dir.path(),
        &[
            "soup",
            "a.safetensors",
            "b.safetensors",
            "-o",
            "s.safetensors",
        ],
    ));
    assert!(
        e.contains("\"head.weight\"") && e.contains("infinities"),
        "{e}"
    );
    assert_eq!(entries(dir.path()), ["a.safetensors", "b.safetensors"]);
}

#[test]
fn unwritable_outputs_name_the_given_path_and_the_os_error_once() {
    let dir = tempfile::tempdir().unwrap();
    let [a, b, _] = mixed("f32");
    let file = dir.path().join("file");
    std::fs::write(&file, b"x").unwrap();
    let under_file = file.join("x");
    for (out, os) in [
        (Path::new("/proc/x"), "(os error"),
        (under_file.as_path(), "Not a directory (os error 20)"),
    ] {
        let e = fails(&tureen(dir.path(), &["soup", s(&a), s(&b), "-o", s(out)]));
        assert!(
            e.contains(&format!("cannot write {}:", out.display())),
            "{e}"
        );
        assert_eq!(e.matches("(os error").count(), 1, "{e}");
        assert!(e.contains(os), "{e}");
        assert!(!e.contains("/.x."), "names a temp file: {e}");
    }
}

fn mkfifo(path: &Path) {
    let c = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
    // SAFETY: a plain syscall on a NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
}

#[test]
fn fifos_and_devices_are_never_read_from_or_replaced() {
    use std::os::unix::fs::FileTypeExt;
    let dir = tempfile::tempdir().unwrap();
    let [a, b, _] = mixed("f32");
    let fifo = dir.path().join("fifo.pt");
    mkfifo(&fifo);
    // As input: refused at once, not a hang waiting for a writer.
    let started = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_tureen"))
        .args(["soup", s(&a), s(&fifo), "-o", "o.safetensors"])
        .current_dir(dir.path())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > Duration::from_secs(20) {
            let _ = child.kill();
            panic!("tureen soup hangs on a FIFO input");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let e = fails(&child.wait_with_output().unwrap());
    assert!(e.contains("named pipe (FIFO), not a regular file"), "{e}");
    // As output: the FIFO stays a FIFO.
    let e = fails(&tureen(dir.path(), &["soup", s(&a), s(&b), "-o", s(&fifo)]));
    assert!(
        e.contains("is a named pipe (FIFO), not a regular file"),
        "{e}"
    );
    assert!(std::fs::symlink_metadata(&fifo)
        .unwrap()
        .file_type()
        .is_fifo());
    // A character device (as root, a copy of /dev/full's node) is never replaced.
    if tureen_artifacts::fsutil::running_as_root() {
        let full = dir.path().join("full");
        let c = std::ffi::CString::new(full.to_str().unwrap()).unwrap();
        // SAFETY: a plain syscall on a NUL-terminated path; makedev(1, 7) is /dev/full.
        assert_eq!(
            unsafe { libc::mknod(c.as_ptr(), libc::S_IFCHR | 0o666, libc::makedev(1, 7)) },
            0
        );
        let e = fails(&tureen(dir.path(), &["soup", s(&a), s(&b), "-o", s(&full)]));
        assert!(
            e.contains("is a character device, not a regular file"),
            "{e}"
        );
        assert!(std::fs::symlink_metadata(&full)
            .unwrap()
            .file_type()
            .is_char_device());
    }
    let names = entries(dir.path());
    assert!(
        names.iter().all(|n| !n.starts_with('.')),
        "temp files left: {names:?}"
    );
}
