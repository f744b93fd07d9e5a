//! The store as its callers see it: layout, adding and ingesting, materializing,
//! verification, pins, garbage collection, listing and the hash cache.

use super::*;

fn store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("store")).unwrap();
    (dir, store)
}

fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn open_creates_the_layout() {
    let (_d, s) = store();
    for sub in ["objects", "tmp", "runs", "cache", "journal", "locks"] {
        assert!(s.root().join(sub).is_dir(), "{sub}");
    }
    assert!(s.root().is_absolute());
}

#[test]
fn add_file_stores_read_only_object_named_by_its_hash() {
    let (d, s) = store();
    let src = d.path().join("a.bin");
    let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 253) as u8).collect();
    fs::write(&src, &data).unwrap();
    let digest = s.add_file(&src).unwrap();
    assert_eq!(digest, Digest::of_bytes(&data));
    assert!(s.contains(&digest));
    let obj = s.object_path(&digest);
    assert_eq!(fs::read(&obj).unwrap(), data);
    assert_eq!(mode(&obj), 0o444);
    assert!(src.exists(), "add_file copies");
    assert_eq!(
        fs::read_dir(s.tmp_dir()).unwrap().count(),
        0,
        "no temp files left"
    );
    // Adding again is idempotent.
    assert_eq!(s.add_file(&src).unwrap(), digest);
}

#[test]
fn ingest_moves_the_file_into_the_store() {
    let (d, s) = store();
    let src = d.path().join("ckpt.bin");
    fs::write(&src, b"weights").unwrap();
    let digest = s.ingest(&src).unwrap();
    assert!(!src.exists());
    assert_eq!(fs::read(s.object_path(&digest)).unwrap(), b"weights");
    assert_eq!(mode(&s.object_path(&digest)), 0o444);
    // Ingesting identical content again just removes the source.
    fs::write(&src, b"weights").unwrap();
    assert_eq!(s.ingest(&src).unwrap(), digest);
    assert!(!src.exists());
}

#[test]
fn add_dir_is_deterministic_and_materializes_back() {
    let (d, s) = store();
    let src = d.path().join("ds");
    fs::create_dir_all(src.join("sub/deeper")).unwrap();
    fs::write(src.join("a.txt"), b"a").unwrap();
    fs::write(src.join("sub/b.txt"), b"b").unwrap();
    fs::write(src.join("sub/deeper/c.txt"), b"c").unwrap();
    let tree = s.add_dir(&src).unwrap();
    assert_eq!(s.kind(&tree).unwrap(), ObjectKind::Tree);
    assert_eq!(s.add_dir(&src).unwrap(), tree, "same contents, same digest");
    let t = s.read_tree(&tree).unwrap();
    assert_eq!(
        t.files.keys().cloned().collect::<Vec<_>>(),
        ["a.txt", "sub/b.txt", "sub/deeper/c.txt"]
    );

    let out = d.path().join("work/ds");
    s.materialize(&tree, &out).unwrap();
    assert_eq!(fs::read(out.join("sub/deeper/c.txt")).unwrap(), b"c");
    assert!(matches!(
        s.materialize(&tree, &out),
        Err(StoreError::DestinationExists { .. })
    ));
}

#[test]
fn add_dir_rejects_symlinks() {
    let (d, s) = store();
    let src = d.path().join("ds");
    fs::create_dir_all(&src).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", src.join("link")).unwrap();
    let err = s.add_dir(&src).unwrap_err();
    assert!(matches!(err, StoreError::UnsupportedFileType { .. }));
    assert!(err.to_string().contains("link"));
}

#[test]
fn materialized_files_cannot_modify_the_object() {
    let (d, s) = store();
    let src = d.path().join("a.bin");
    fs::write(&src, b"original").unwrap();
    let digest = s.add_file(&src).unwrap();
    let out = d.path().join("out.bin");
    let placement = s.materialize(&digest, &out).unwrap();
    assert_eq!(fs::read(&out).unwrap(), b"original");
    assert_eq!(mode(&out), 0o444);
    // Root ignores permission bits, so as root the store must never hand out a hard link.
    if fsutil::running_as_root() {
        assert_ne!(placement, Placement::Hardlink);
        fs::write(&out, b"edited!!").unwrap();
        assert_eq!(fs::read(s.object_path(&digest)).unwrap(), b"original");
    } else {
        assert!(fs::OpenOptions::new().write(true).open(&out).is_err());
    }
    // Re-materializing replaces the file atomically.
    s.materialize(&digest, &out).unwrap();
    assert_eq!(fs::read(&out).unwrap(), b"original");
    let leftovers: Vec<_> = fs::read_dir(d.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(
        leftovers
            .iter()
            .all(|n| !n.to_string_lossy().ends_with(".tmp")),
        "{leftovers:?}"
    );
}

#[test]
fn materialize_missing_object_names_the_digest() {
    let (d, s) = store();
    let missing = Digest::of_bytes(b"nope");
    let err = s.materialize(&missing, &d.path().join("x")).unwrap_err();
    assert!(err.to_string().contains(&missing.to_string()));
    assert!(!d.path().join("x").exists());
}

#[test]
fn temp_objects_commit_or_vanish() {
    let (_d, s) = store();
    let mut t = s.open_temp().unwrap();
    t.write_all(b"streamed").unwrap();
    let d1 = t.commit().unwrap();
    assert_eq!(d1, Digest::of_bytes(b"streamed"));

    let mut t = s.open_temp().unwrap();
    {
        use std::os::unix::fs::FileExt;
        t.file().write_all_at(b"positional", 0).unwrap();
    }
    assert_eq!(t.commit().unwrap(), Digest::of_bytes(b"positional"));

    let mut t = s.open_temp().unwrap();
    t.write_all(b"abandoned").unwrap();
    let p = t.path().to_path_buf();
    drop(t);
    assert!(!p.exists());
    assert_eq!(fs::read_dir(s.tmp_dir()).unwrap().count(), 0);
}

#[test]
fn verify_detects_a_flipped_byte() {
    let (d, s) = store();
    let src = d.path().join("a.bin");
    fs::write(&src, vec![1u8; 5000]).unwrap();
    let digest = s.add_file(&src).unwrap();
    assert!(s.verify().unwrap().problems.is_empty());
    let obj = s.object_path(&digest);
    fsutil::set_mode(&obj, 0o644).unwrap();
    let mut bytes = fs::read(&obj).unwrap();
    bytes[1234] ^= 0x01;
    fs::write(&obj, bytes).unwrap();
    let report = s.verify().unwrap();
    assert_eq!(report.checked, 1);
    assert!(
        matches!(report.problems.as_slice(), [VerifyProblem::Mismatch { digest: d, .. }] if *d == digest)
    );
}

#[test]
fn gc_keeps_pinned_and_referenced_objects_and_tree_members() {
    let (d, s) = store();
    let mk = |name: &str, body: &[u8]| {
        let p = d.path().join(name);
        fs::write(&p, body).unwrap();
        s.add_file(&p).unwrap()
    };
    let pinned = mk("p", b"pinned");
    let in_run = mk("r", b"referenced by a run");
    let in_cache = mk("c", b"referenced by the cache");
    let garbage = mk("g", b"garbage");
    let ds = d.path().join("ds");
    fs::create_dir_all(&ds).unwrap();
    fs::write(ds.join("member.txt"), b"tree member").unwrap();
    let tree = s.add_dir(&ds).unwrap();
    let member = Digest::of_bytes(b"tree member");

    s.pin(&pinned).unwrap();
    fs::write(
        s.root().join("runs/r1.json"),
        format!("{{\"outputs\":{{\"x\":\"{in_run}\",\"t\":\"{tree}\"}}}}"),
    )
    .unwrap();
    fs::create_dir_all(s.root().join("cache/ab")).unwrap();
    fs::write(
        s.root().join("cache/ab/k.json"),
        format!("[\"{in_cache}\"]"),
    )
    .unwrap();

    let dry = s.gc(&GcOptions { dry_run: true }).unwrap();
    assert_eq!(dry.removed.len(), 1);
    assert!(s.contains(&garbage));

    let report = s.gc(&GcOptions::default()).unwrap();
    assert_eq!(
        report.removed.iter().map(|r| r.0).collect::<Vec<_>>(),
        vec![garbage]
    );
    for kept in [pinned, in_run, in_cache, tree, member] {
        assert!(s.contains(&kept), "{kept}");
    }
    assert!(!s.contains(&garbage));

    assert!(s.unpin(&pinned).unwrap());
    s.gc(&GcOptions::default()).unwrap();
    assert!(!s.contains(&pinned));
}

#[test]
fn gc_refuses_while_a_run_holds_the_shared_lock() {
    let (_d, s) = store();
    let guard = s.lock_shared().unwrap();
    // flock locks belong to open file descriptions, so a second open in this process
    // conflicts just like another process would.
    assert!(matches!(
        s.gc(&GcOptions::default()),
        Err(StoreError::Busy { .. })
    ));
    drop(guard);
    s.gc(&GcOptions::default()).unwrap();
}

#[test]
fn pin_requires_the_object_and_bad_pins_lines_are_reported() {
    let (_d, s) = store();
    assert!(matches!(
        s.pin(&Digest::of_bytes(b"x")),
        Err(StoreError::NotFound { .. })
    ));
    fs::write(s.pins_path(), "blake3:nothex\n").unwrap();
    let err = s.pins().unwrap_err();
    assert!(err.to_string().contains("pins:1"), "{err}");
}

#[test]
fn list_reports_sizes_and_kinds() {
    let (d, s) = store();
    let f = d.path().join("f");
    fs::write(&f, b"12345").unwrap();
    let fd = s.add_file(&f).unwrap();
    let ds = d.path().join("ds");
    fs::create_dir_all(&ds).unwrap();
    fs::copy(&f, ds.join("f")).unwrap();
    let td = s.add_dir(&ds).unwrap();
    let list = s.list().unwrap();
    assert_eq!(list.len(), 2);
    let file = list.iter().find(|o| o.digest == fd).unwrap();
    assert_eq!((file.size, file.kind), (5, ObjectKind::File));
    assert_eq!(
        list.iter().find(|o| o.digest == td).unwrap().kind,
        ObjectKind::Tree
    );
}

#[test]
fn hash_file_cached_does_not_reread_an_untouched_file() {
    let (d, s) = store();
    let f = d.path().join("f");
    fs::write(&f, b"content").unwrap();
    // Backdate the file so it is not "racily clean".
    let old = std::time::SystemTime::now() - std::time::Duration::from_secs(60);
    File::options()
        .write(true)
        .open(&f)
        .unwrap()
        .set_modified(old)
        .unwrap();
    let digest = s.hash_file_cached(&f).unwrap();
    assert_eq!(digest, Digest::of_bytes(b"content"));
    // Prove the cache answered: a fresh Store (reading statcache.json) returns the cached
    // digest even for an entry we doctor to a different digest. (A store persists what it
    // learnt when it flushes, at the latest when it is dropped.)
    s.flush_stat_cache();
    let text = fs::read_to_string(s.root().join("statcache.json")).unwrap();
    let fake = Digest::of_bytes(b"fake");
    fs::write(
        s.root().join("statcache.json"),
        text.replace(&digest.to_string(), &fake.to_string()),
    )
    .unwrap();
    let s2 = Store::open(s.root()).unwrap();
    assert_eq!(s2.hash_file_cached(&f).unwrap(), fake);
    // Any change to the file invalidates the entry.
    fs::write(&f, b"changed").unwrap();
    assert_eq!(
        s2.hash_file_cached(&f).unwrap(),
        Digest::of_bytes(b"changed")
    );
}

/// The digests a fresh store finds in the stat cache on disk, by file.
fn cached_on_disk(s: &Store, f: &Path) -> Option<Digest> {
    Store::open(s.root()).unwrap().cached_file_digest(f)
}

#[test]
fn a_file_hashed_just_after_it_was_written_is_cached_once_it_settles() {
    let (d, s) = store();
    let f = d.path().join("out.txt");
    fs::write(&f, b"fresh output").unwrap();
    let digest = s.hash_file_cached(&f).unwrap();
    // Too recent to trust its stamp: a plain flush leaves it out.
    s.flush_stat_cache();
    assert_eq!(cached_on_disk(&s, &f), None);
    let margin = Margin::of_filesystem(d.path());
    if !margin.is_short() {
        eprintln!(
            "skipped: {} has coarse timestamps ({margin:?})",
            d.path().display()
        );
        return;
    }
    // Settling waits out the file system's margin and confirms the digest.
    let t = std::time::Instant::now();
    s.settle_and_flush_stat_cache();
    assert!(
        t.elapsed() < std::time::Duration::from_millis(500),
        "waited only the margin"
    );
    assert_eq!(cached_on_disk(&s, &f), Some(digest));
}

#[test]
fn a_file_rewritten_before_it_settles_keeps_no_stale_digest() {
    let (d, s) = store();
    let f = d.path().join("out.txt");
    fs::write(&f, b"first").unwrap();
    s.hash_file_cached(&f).unwrap();
    // Same size, written at once: possibly within the same timestamp tick, so its stamp
    // may not change. The digest taken before must not be cached either way.
    fs::write(&f, b"secnd").unwrap();
    s.settle_and_flush_stat_cache();
    let fresh = Store::open(s.root()).unwrap();
    assert_eq!(
        fresh.hash_file_cached(&f).unwrap(),
        Digest::of_bytes(b"secnd")
    );
}

#[test]
fn add_file_copies_multi_block_files_exactly_with_overlapped_hashing() {
    let (d, s) = store();
    let src = d.path().join("big.bin");
    // Three 16 MiB copy blocks, the last one partial.
    let data: Vec<u8> = (0..(40u32 << 20) + 12_345)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    fs::write(&src, &data).unwrap();
    let digest = s.add_file(&src).unwrap();
    assert_eq!(digest, Digest::of_bytes(&data));
    let object = s.object_path(&digest);
    assert!(
        fs::read(&object).unwrap() == data,
        "object bytes equal the source's"
    );
    assert_eq!(fs::read_dir(s.root().join("tmp")).unwrap().count(), 0);
}
