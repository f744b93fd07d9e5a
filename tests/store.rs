//! `tureen store ...` end to end: add/ls/cat/hash, verify catching a flipped byte, gc
//! keeping what runs and pins reference, materialize never exposing an object to edits.

use std::path::Path;
use std::process::Command;

mod common;
use common::{ok, tureen};

/// `tureen store add` prints `<digest>  <path>`; returns the digest of the first line.
fn add(dir: &Path, path: &str) -> String {
    let out = ok(&tureen(dir, &["store", "add", path]));
    out.split_whitespace().next().unwrap().to_string()
}

fn object_path(dir: &Path, digest: &str) -> std::path::PathBuf {
    let hex = digest.trim_start_matches("blake3:");
    dir.join(".tureen/objects").join(&hex[..2]).join(&hex[2..])
}

#[test]
fn add_ls_cat_and_hash_agree() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("a.txt"), b"hello soup").unwrap();
    let d = add(dir.path(), "a.txt");
    assert!(d.starts_with("blake3:") && d.len() == 71, "{d}");
    let ls = ok(&tureen(dir.path(), &["store", "ls"]));
    assert!(
        ls.contains(&d) && ls.contains("10 B") && ls.contains("file"),
        "{ls}"
    );
    let cat = tureen(dir.path(), &["store", "cat", &d]);
    assert_eq!(ok(&cat), "hello soup");
    // A unique prefix works too.
    let prefix = &d["blake3:".len().."blake3:".len() + 8];
    assert_eq!(
        ok(&tureen(dir.path(), &["store", "cat", prefix])),
        "hello soup"
    );
    // `hash` is b3sum-compatible output and needs no store.
    let other = tempfile::tempdir().unwrap();
    std::fs::write(other.path().join("a.txt"), b"hello soup").unwrap();
    let h = ok(&tureen(other.path(), &["store", "hash", "a.txt"]));
    assert_eq!(
        h.trim(),
        format!("{}  a.txt", d.trim_start_matches("blake3:"))
    );
    assert!(!other.path().join(".tureen").exists());
}

#[test]
fn verify_detects_a_flipped_byte_and_exits_non_zero() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("big.bin"), vec![42u8; 3 << 20]).unwrap();
    let d = add(dir.path(), "big.bin");
    std::fs::write(dir.path().join("small.bin"), b"small").unwrap();
    add(dir.path(), "small.bin");
    let good = ok(&tureen(dir.path(), &["store", "verify"]));
    assert!(good.contains("verified 2 objects"), "{good}");

    let obj = object_path(dir.path(), &d);
    let mut perms = std::fs::metadata(&obj).unwrap().permissions();
    #[allow(clippy::permissions_set_readonly_false)]
    perms.set_readonly(false);
    std::fs::set_permissions(&obj, perms).unwrap();
    let mut bytes = std::fs::read(&obj).unwrap();
    bytes[1 << 20] ^= 0x10;
    std::fs::write(&obj, bytes).unwrap();

    let out = tureen(dir.path(), &["store", "verify"]);
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(&d) && stdout.contains("CORRUPT"),
        "{stdout}"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("1 problem"));
}

#[test]
fn gc_keeps_pinned_and_run_referenced_objects() {
    let dir = tempfile::tempdir().unwrap();
    for (name, body) in [("keep-pin", "p"), ("keep-run", "r"), ("drop", "d")] {
        std::fs::write(dir.path().join(name), body).unwrap();
    }
    let pinned = add(dir.path(), "keep-pin");
    let referenced = add(dir.path(), "keep-run");
    let garbage = add(dir.path(), "drop");
    std::fs::create_dir_all(dir.path().join("ds/sub")).unwrap();
    std::fs::write(dir.path().join("ds/sub/x"), "member").unwrap();
    let tree = add(dir.path(), "ds");
    ok(&tureen(dir.path(), &["store", "pin", &pinned, &tree]));
    std::fs::write(
        dir.path().join(".tureen/runs/run-1.json"),
        format!("{{\"outputs\": [\"{referenced}\"]}}"),
    )
    .unwrap();

    let dry = ok(&tureen(dir.path(), &["store", "gc", "--dry-run"]));
    assert!(
        dry.contains(&garbage) && dry.contains("would remove 1 objects"),
        "{dry}"
    );
    assert!(object_path(dir.path(), &garbage).exists());

    let out = ok(&tureen(dir.path(), &["store", "gc"]));
    assert!(out.contains("removed 1 objects"), "{out}");
    assert!(!object_path(dir.path(), &garbage).exists());
    for d in [&pinned, &referenced, &tree] {
        assert!(object_path(dir.path(), d).exists(), "{d}");
    }
    // The tree's member survives through the pinned tree.
    ok(&tureen(
        dir.path(),
        &["store", "materialize", &tree, "restored"],
    ));
    assert_eq!(
        std::fs::read_to_string(dir.path().join("restored/sub/x")).unwrap(),
        "member"
    );

    ok(&tureen(dir.path(), &["store", "unpin", &pinned]));
    ok(&tureen(dir.path(), &["store", "gc"]));
    assert!(!object_path(dir.path(), &pinned).exists());
}

#[test]
fn materialized_file_is_read_only_and_edits_never_reach_the_object() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("w.bin"), b"weights").unwrap();
    let d = add(dir.path(), "w.bin");
    let out = ok(&tureen(
        dir.path(),
        &["store", "materialize", &d, "work/w.bin"],
    ));
    assert!(out.contains("work/w.bin"), "{out}");
    let target = dir.path().join("work/w.bin");
    assert!(std::fs::metadata(&target).unwrap().permissions().readonly());
    // Whatever the user does to the materialized file (root can write read-only files),
    // the object keeps its bytes.
    let _ = std::fs::write(&target, b"tampered");
    assert_eq!(
        std::fs::read(object_path(dir.path(), &d)).unwrap(),
        b"weights"
    );
    ok(&tureen(dir.path(), &["store", "verify"]));
}

#[test]
fn unknown_digests_and_bad_input_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let missing = format!("blake3:{}", "ab".repeat(32));
    let out = tureen(dir.path(), &["store", "cat", &missing]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not in the store"));
    let out = tureen(dir.path(), &["store", "pin", "zz-not-hex"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a digest"));
    let out = tureen(dir.path(), &["store", "add", "no-such-file"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no-such-file"));
}

#[test]
fn store_location_follows_the_store_flag_and_env() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("f"), b"x").unwrap();
    ok(&tureen(
        dir.path(),
        &["--store", "elsewhere", "store", "add", "f"],
    ));
    assert!(dir.path().join("elsewhere/objects").is_dir());
    let out = Command::new(env!("CARGO_BIN_EXE_tureen"))
        .args(["store", "ls"])
        .current_dir(dir.path())
        .env("TUREEN_STORE", "elsewhere")
        .output()
        .unwrap();
    assert_eq!(ok(&out).lines().count(), 1);
}

#[test]
fn hash_with_an_explicit_store_records_digests_in_its_stat_cache() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("ckpt.bin");
    std::fs::write(&f, b"weights").unwrap();
    // Files modified within the last two seconds are never cached ("racily clean").
    let old = std::time::SystemTime::now() - std::time::Duration::from_secs(60);
    std::fs::File::options()
        .write(true)
        .open(&f)
        .unwrap()
        .set_modified(old)
        .unwrap();
    let plain = ok(&tureen(dir.path(), &["store", "hash", "ckpt.bin"]));
    assert!(
        !dir.path().join(".tureen").exists(),
        "no store without --store"
    );
    let cached = ok(&tureen(
        dir.path(),
        &["--store", "s", "store", "hash", "ckpt.bin"],
    ));
    assert_eq!(plain, cached, "same b3sum-style output either way");
    let hex = plain.split_whitespace().next().unwrap();
    let cache = std::fs::read_to_string(dir.path().join("s/statcache.json")).unwrap();
    assert!(
        cache.contains(&format!("blake3:{hex}")) && cache.contains("ckpt.bin"),
        "{cache}"
    );
    assert_eq!(
        std::fs::read_dir(dir.path().join("s/objects"))
            .unwrap()
            .count(),
        0,
        "hashing stores nothing"
    );
}
