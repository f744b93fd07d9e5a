//! Opening checkpoints of every format through one interface.

use std::path::{Path, PathBuf};

use super::*;
use crate::safetensors::{split_into_shards, write_file, ShardedWriter, TensorSpec};
use crate::torch::testutil::{f32s, file, pickle, T};

fn t<'a>(name: &'a str, offset: u64, shape: &'a [u64], stride: &'a [u64]) -> T<'a> {
    T {
        name,
        class: "FloatStorage",
        key: "0",
        numel: 6,
        offset,
        shape,
        stride,
    }
}

fn torch_file(dir: &Path, name: &str, tensors: &[T<'_>], wrap: Option<&str>) -> PathBuf {
    let p = dir.join(name);
    let data = f32s(&[0.0, 1.0, 2.0, 3.0, 4.0, 5.0]);
    std::fs::write(&p, file(&pickle(tensors, wrap), &[("0", &data)])).unwrap();
    p
}

fn floats(b: &[u8]) -> Vec<f32> {
    b.chunks(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

fn open(p: &Path) -> Result<Checkpoint, CheckpointError> {
    Checkpoint::open(p, &OpenOptions::default())
}

#[test]
fn a_ddp_torch_checkpoint_loses_its_module_prefix_unless_kept() {
    let dir = tempfile::tempdir().unwrap();
    let p = torch_file(
        dir.path(),
        "ddp.pt",
        &[t("module.a", 0, &[2], &[1]), t("module.b", 2, &[4], &[1])],
        Some("state_dict"),
    );
    let c = open(&p).unwrap();
    assert_eq!(c.format(), Format::Torch);
    let names: Vec<&str> = c.tensors().iter().map(|e| e.name.as_str()).collect();
    assert_eq!(names, ["a", "b"]);
    assert_eq!(floats(c.data(c.get("b").unwrap())), [2.0, 3.0, 4.0, 5.0]);
    let sel = c.selection().unwrap();
    assert_eq!(sel.key.as_ref().unwrap().to_string(), "state_dict");
    assert_eq!(sel.stripped_prefix.as_deref(), Some("module."));
    assert_eq!(sel.others, [("epoch".to_string(), "1".to_string())]);
    let kept = Checkpoint::open(
        &p,
        &OpenOptions {
            keep_prefix: true,
            ..OpenOptions::default()
        },
    )
    .unwrap();
    assert!(kept.get("module.a").is_some());
    assert_eq!(c.digest(), Digest::of_bytes(&std::fs::read(&p).unwrap()));
}

#[test]
fn a_transposed_view_is_gathered_and_a_bare_state_dict_is_the_top_level() {
    let dir = tempfile::tempdir().unwrap();
    let p = torch_file(dir.path(), "t.pt", &[t("wt", 0, &[3, 2], &[1, 3])], None);
    let c = open(&p).unwrap();
    assert!(c.selection().unwrap().key.is_none());
    assert_eq!(
        floats(c.data(c.get("wt").unwrap())),
        [0.0, 3.0, 1.0, 4.0, 2.0, 5.0]
    );
}

#[test]
fn key_paths_pick_and_explain() {
    let dir = tempfile::tempdir().unwrap();
    let p = torch_file(dir.path(), "m.pt", &[t("w", 0, &[6], &[1])], Some("ema"));
    // `ema` is not searched by default: the error lists what is there.
    let e = open(&p).unwrap_err().to_string();
    assert!(
        e.contains("no state dict") && e.contains("\"ema\" (a dict of 1 entries)"),
        "{e}"
    );
    let with = |key: &str| {
        Checkpoint::open(
            &p,
            &OpenOptions {
                key: Some(key.parse().unwrap()),
                keep_prefix: false,
            },
        )
    };
    assert!(with("ema").unwrap().get("w").is_some());
    let e = with("ema.x").unwrap_err().to_string();
    assert!(
        e.contains("`ema` (a dict of 1 entries) has no entry `x`"),
        "{e}"
    );
    let e = with("epoch").unwrap_err().to_string();
    assert!(e.contains("`epoch` is 1, not a dict of tensors"), "{e}");
    assert!("a..b".parse::<StateDictPath>().is_err());
}

#[test]
fn safetensors_files_and_model_directories_are_recognised_by_content() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("ckpt");
    std::fs::create_dir(&d).unwrap();
    // No extension, as in the store.
    let p = d.join("model.safetensors");
    write_file(&p, &[("w", Dtype::F32, &[2], &f32s(&[1.0, 2.0]))], None).unwrap();
    let obj = dir.path().join("0123abcd");
    std::fs::copy(&p, &obj).unwrap();
    for path in [&p, &obj, &d] {
        let c = open(path).unwrap();
        assert_eq!(c.format(), Format::Safetensors, "{}", path.display());
        assert_eq!(floats(c.data(c.get("w").unwrap())), [1.0, 2.0]);
    }
    let key = OpenOptions {
        key: Some("state_dict".parse().unwrap()),
        keep_prefix: false,
    };
    let e = Checkpoint::open(&p, &key).unwrap_err().to_string();
    assert!(
        e.contains("--key picks a state dict inside a torch.save file"),
        "{e}"
    );
    let e = open(dir.path()).unwrap_err().to_string();
    assert!(
        e.contains("is a directory without model.safetensors"),
        "{e}"
    );
}

fn specs(names: &[&str]) -> Vec<TensorSpec> {
    names
        .iter()
        .map(|n| TensorSpec {
            name: n.to_string(),
            dtype: Dtype::F32,
            shape: vec![4],
        })
        .collect()
}

fn write_sharded(dest: &Path, names: &[&str], max: u64) {
    let w = ShardedWriter::create(dest, split_into_shards(specs(names), max), None).unwrap();
    for (i, n) in names.iter().enumerate() {
        let shard = w
            .writers()
            .iter()
            .find(|s| s.layout().index_of(n).is_some())
            .unwrap();
        shard.write_tensor(n, &f32s(&[i as f32; 4])).unwrap();
    }
    w.finish().unwrap();
}

#[test]
fn sharded_checkpoints_read_from_the_directory_or_the_index() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("sharded");
    write_sharded(&d, &["a", "b", "c"], 32);
    let mut files: Vec<String> = std::fs::read_dir(&d)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    assert_eq!(
        files,
        [
            "model-00001-of-00002.safetensors",
            "model-00002-of-00002.safetensors",
            "model.safetensors.index.json"
        ]
    );
    for p in [d.clone(), d.join(INDEX_FILE)] {
        let c = open(&p).unwrap();
        assert_eq!(c.format(), Format::ShardedSafetensors);
        assert_eq!(floats(c.data(c.get("c").unwrap())), [2.0; 4]);
        assert!(c.single_file().is_none());
    }
    // The digest is the tree digest of the index and the shards.
    let store = crate::Store::open(dir.path().join("store")).unwrap();
    assert_eq!(open(&d).unwrap().digest(), store.add_dir(&d).unwrap());
}

#[test]
fn an_index_that_disagrees_with_its_shards_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("s");
    write_sharded(&d, &["a", "b"], 16);
    let index = d.join(INDEX_FILE);
    let text = std::fs::read_to_string(&index).unwrap();
    std::fs::write(&index, text.replace("\"b\"", "\"z\"")).unwrap();
    let e = open(&d).unwrap_err().to_string();
    assert!(
        e.contains("holds tensor \"b\", which the index does not list"),
        "{e}"
    );
    std::fs::write(&index, text.replace("00002-of", "00009-of")).unwrap();
    let e = open(&d).unwrap_err().to_string();
    assert!(e.contains("model-00009-of-00002.safetensors"), "{e}");
}

#[test]
fn a_sharded_output_never_lands_on_files_and_leaves_nothing_when_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let busy = dir.path().join("busy");
    std::fs::create_dir(&busy).unwrap();
    std::fs::write(busy.join("keep"), b"x").unwrap();
    let e = ShardedWriter::create(&busy, split_into_shards(specs(&["a"]), 16), None).unwrap_err();
    assert!(e.to_string().contains("not empty"), "{e}");
    let fresh = dir.path().join("fresh");
    let w = ShardedWriter::create(&fresh, split_into_shards(specs(&["a"]), 16), None).unwrap();
    drop(w);
    let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert_eq!(left.len(), 1, "only `busy` remains");
}
