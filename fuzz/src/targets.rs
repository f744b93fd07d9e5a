//! The fuzz targets: what each feeds an input to, the invariants it checks, and its seeds.

use std::collections::BTreeMap;
use std::path::PathBuf;

use tureen_artifacts::checkpoint::{Checkpoint, OpenOptions};
use tureen_artifacts::safetensors::{write_file, Dtype, SafetensorsFile};
use tureen_artifacts::soup::config::SoupConfig;
use tureen_artifacts::torch::{TorchError, TorchFile, TorchProblem};
use tureen_engine::kind::KindRegistry;

/// A tensor as `write_file` takes it: name, dtype, shape, data.
type Tensor<'a> = (&'a str, Dtype, &'a [u64], &'a [u8]);

/// A seed file: its tensors and metadata.
type Seed<'a> = (Vec<Tensor<'a>>, Option<&'a BTreeMap<String, String>>);

/// One target: runs an input; `Ok(true)` if it was accepted (it then joins the corpus).
pub trait Target {
    fn name(&self) -> &'static str;
    fn seeds(&self) -> Vec<Vec<u8>>;
    fn run(&self, input: &[u8]) -> bool;
}

/// `SafetensorsFile::open` on the bytes as a file, then every tensor's data.
pub struct Safetensors {
    pub dir: PathBuf,
}

impl Target for Safetensors {
    fn name(&self) -> &'static str {
        "safetensors"
    }

    fn seeds(&self) -> Vec<Vec<u8>> {
        let path = self.dir.join("seed.safetensors");
        let f32s: Vec<u8> = (0..12)
            .flat_map(|i| (i as f32 * 0.5).to_le_bytes())
            .collect();
        let bf16: Vec<u8> = (0..8u16).flat_map(|i| (0x3f80 + i).to_le_bytes()).collect();
        let meta = BTreeMap::from([("format".to_string(), "pt".to_string())]);
        let cases: Vec<Seed> = vec![
            (vec![("w", Dtype::F32, &[3, 4], &f32s)], None),
            (
                vec![
                    ("a", Dtype::BF16, &[8], &bf16),
                    ("b", Dtype::F32, &[2, 2, 3], &f32s),
                ],
                Some(&meta),
            ),
            (
                vec![
                    ("s", Dtype::F32, &[], &f32s[..4]),
                    ("e", Dtype::I64, &[0], &[]),
                ],
                None,
            ),
            (
                vec![
                    ("u", Dtype::U8, &[4], &[1, 2, 3, 4]),
                    ("h", Dtype::F16, &[2], &[0, 60, 0, 188]),
                ],
                Some(&meta),
            ),
        ];
        cases
            .into_iter()
            .map(|(tensors, meta)| {
                write_file(&path, &tensors, meta).expect("seed safetensors");
                std::fs::read(&path).expect("read seed")
            })
            .collect()
    }

    fn run(&self, input: &[u8]) -> bool {
        let path = self.dir.join("input.safetensors");
        std::fs::write(&path, input).expect("write input");
        let Ok(file) = SafetensorsFile::open(&path) else {
            return false;
        };
        let data_len = file.len();
        for t in file.tensors() {
            let data = file.data(t);
            // Invariants a validated file must keep.
            assert_eq!(
                data.len() as u64,
                t.nbytes(),
                "tensor {}: data length",
                t.name
            );
            assert_eq!(
                t.numel().checked_mul(t.dtype.size() as u64),
                Some(t.nbytes()),
                "tensor {}: size",
                t.name
            );
            assert!(
                t.data_offsets.1 <= data_len,
                "tensor {}: past the end",
                t.name
            );
            std::hint::black_box(data.first());
            std::hint::black_box(data.last());
            assert!(file.get(&t.name).is_some());
        }
        let _ = file.metadata();
        true
    }
}

/// `tureen_engine::pipeline::load_str` with every kind tureen registers.
pub struct Pipeline {
    pub registry: KindRegistry,
    pub dir: PathBuf,
}

impl Pipeline {
    pub fn new(dir: PathBuf) -> Pipeline {
        let mut registry = KindRegistry::new();
        tureen_stages::register_all(&mut registry);
        std::fs::write(dir.join("data.csv"), "a,b\n1,2\n").expect("seed input");
        Pipeline { registry, dir }
    }
}

const PIPELINE_SEEDS: &[&str] = &[
    include_str!("../../pipelines/small-soup.yaml"),
    include_str!("../../pipelines/command-soup.yaml"),
    include_str!("../../pipelines/laion2b-convnext-xxlarge.yaml"),
    "tureen: 1\nparams: {n: 3, lr: 1.0e-3, name: x}\nstages:\n  a:\n    kind: command\n    cmd: echo ${params.n} > ${outs.o}\n    inputs: {raw: data.csv}\n    outs: {o: a.txt}\n  b:\n    kind: command\n    cmd: [cat ${inputs.x} > ${outs.o}, echo done]\n    inputs: {x: a.o}\n    deps: [data.csv]\n    outs: {o: b.txt}\n",
    "tureen: 1\nstages:\n  s:\n    foreach: [u, w]\n    kind: command\n    cmd: echo ${item} > ${outs.o}\n    outs: {o: \"s-${item}.txt\"}\n  m:\n    matrix: {lr: [1, 2], wd: [0, 1]}\n    kind: command\n    cmd: echo ${item.lr} ${item.wd} > ${outs.o}\n    outs: {o: \"m-${key}.txt\"}\n    resources: {cpus: 1, memory: 1G, time: \"01:00:00\"}\n    retries: 1\n",
    "tureen: 1\nstages:\n  core:\n    kind: train\n    params: {model: convnext_atto_64, data: synthetic, batch_size: 8, samples_per_interval: 16, intervals: 4, lr: 1.0e-3, numerics: native, threads: 2}\n  soup:\n    kind: soup\n    inputs: {checkpoints: \"core.checkpoints[1:]\"}\n    params: {method: weighted, weights: [1, 2, 3]}\n  ev:\n    kind: eval\n    inputs: {model: soup.soup}\n    params: {retrieval: \"r/{000000..000002}.tar\", device: cpu}\n",
];

impl Target for Pipeline {
    fn name(&self) -> &'static str {
        "pipeline"
    }

    fn seeds(&self) -> Vec<Vec<u8>> {
        PIPELINE_SEEDS
            .iter()
            .map(|s| s.as_bytes().to_vec())
            .collect()
    }

    fn run(&self, input: &[u8]) -> bool {
        let text = String::from_utf8_lossy(input);
        let path = self.dir.join("p.yaml");
        match tureen_engine::pipeline::load_str(&path, &text, &self.registry, &[]) {
            Ok(p) => {
                // Whatever loads must order and describe itself.
                std::hint::black_box(p.topo_order());
                true
            }
            Err(e) => {
                std::hint::black_box(e.to_string());
                false
            }
        }
    }
}

/// mergekit `linear` configs: `SoupConfig::parse`, in a directory holding the models the
/// seeds name (the parser resolves them).
pub struct MergekitConfig {
    pub dir: PathBuf,
}

impl MergekitConfig {
    pub fn new(dir: PathBuf) -> MergekitConfig {
        for f in [
            "a.safetensors",
            "b.safetensors",
            "ckpt/a/model.safetensors",
            "ckpt/b/model.safetensors",
        ] {
            let p = dir.join(f);
            std::fs::create_dir_all(p.parent().expect("parent")).expect("seed dir");
            std::fs::write(&p, b"").expect("seed model");
        }
        MergekitConfig { dir }
    }
}

const CONFIG_SEEDS: &[&str] = &[
    "merge_method: linear\nmodels:\n  - model: a.safetensors\n    parameters: {weight: 0.2}\n  - model: b.safetensors\n    parameters: {weight: 0.8}\ndtype: float32\n",
    "merge_method: linear\nmodels:\n  - model: ./ckpt/a\n    parameters:\n      weight: 1\n  - model: ./ckpt/b\n    parameters:\n      weight: 2\nparameters:\n  normalize: false\nout_dtype: bfloat16\nbase_model: x\ntokenizer_source: union\n",
    "merge_method: linear\nmodels: [{model: a.safetensors, parameters: {weight: 1.0e-3}}, {model: b.safetensors, parameters: {weight: -0.5}}]\ndtype: float16\nout_dtype: float64\n",
];

impl Target for MergekitConfig {
    fn name(&self) -> &'static str {
        "mergekit-config"
    }

    fn seeds(&self) -> Vec<Vec<u8>> {
        CONFIG_SEEDS.iter().map(|s| s.as_bytes().to_vec()).collect()
    }

    fn run(&self, input: &[u8]) -> bool {
        let text = String::from_utf8_lossy(input);
        match SoupConfig::parse(&text, &self.dir.join("soup.yaml")) {
            Ok(c) => {
                assert_eq!(c.inputs.len(), c.weights.len(), "one weight per input");
                true
            }
            Err(e) => {
                std::hint::black_box(e.to_string());
                false
            }
        }
    }
}

/// The seed `torch.save` files (`bench/fuzz/torch_seeds.py` writes them).
fn torch_seed_files() -> Vec<Vec<u8>> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("seeds/torch");
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e} (run bench/fuzz/torch_seeds.py)", dir.display()))
        .map(|e| e.expect("seed dir entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "pt"))
        .collect();
    paths.sort();
    paths
        .iter()
        .map(|p| std::fs::read(p).expect("read seed"))
        .collect()
}

/// The most tree nodes one input's walk visits: memo references let a small pickle
/// describe a huge tree (a list holding itself twice, 30 deep), and the walk below is
/// the harness's, not tureen's.
const WALK_BUDGET: usize = 100_000;

/// Reads `path` the way tureen does: [`TorchFile::open`], every tensor's view and bytes
/// (a walk of the saved object), then [`Checkpoint::open`] (state dict selection, prefix
/// stripping) and every tensor's data. `true` if `TorchFile::open` accepted it.
fn read_torch(path: &std::path::Path) -> bool {
    let file = match TorchFile::open(path) {
        Ok(f) => f,
        Err(e) => {
            let msg = e.to_string();
            assert!(
                msg.contains(&path.display().to_string()),
                "the error names the file: {msg}"
            );
            return false;
        }
    };
    let mut stack = vec![(String::new(), file.root())];
    let mut budget = WALK_BUDGET;
    while let Some((name, node)) = stack.pop() {
        if budget == 0 {
            break;
        }
        budget -= 1;
        std::hint::black_box(node.summary());
        if let Some(t) = node.as_tensor() {
            if let Ok(view) = file.view(&name, t) {
                let bytes = match file.contiguous_bytes(&view) {
                    Some(b) => b.to_vec(),
                    None => file.gather(&view),
                };
                assert_eq!(bytes.len() as u64, view.nbytes(), "tensor {name}: bytes");
                assert_eq!(
                    view.numel.checked_mul(view.dtype.size() as u64),
                    Some(view.nbytes()),
                    "tensor {name}: size"
                );
            }
        } else if let Some(entries) = node.entries() {
            for (k, v) in entries {
                stack.push((format!("{name}.{}", k.summary()), v));
            }
        } else if let Some(items) = node.items() {
            for (i, v) in items.into_iter().enumerate() {
                stack.push((format!("{name}[{i}]"), v));
            }
        }
    }
    drop(file);
    for keep_prefix in [false, true] {
        let opts = OpenOptions {
            key: None,
            keep_prefix,
        };
        let Ok(ckpt) = Checkpoint::open(path, &opts) else {
            continue;
        };
        for e in ckpt.tensors() {
            let data = ckpt.data(e);
            assert_eq!(data.len() as u64, e.nbytes(), "tensor {}: data", e.name);
            assert_eq!(
                e.numel().checked_mul(e.dtype.size() as u64),
                Some(e.nbytes()),
                "tensor {}: size",
                e.name
            );
            assert!(ckpt.get(&e.name).is_some(), "tensor {}: by name", e.name);
        }
        std::hint::black_box(ckpt.digest());
    }
    true
}

/// Whole `torch.save` files, mutated as bytes. Entries are stored uncompressed and the
/// reader does not check CRCs, so a flip inside `data.pkl` reaches the pickle; but an
/// insertion or deletion moves every offset after it, so most mutants die in the zip
/// directory: [`TorchPickle`] is the deep target.
pub struct Torch {
    pub dir: PathBuf,
}

impl Target for Torch {
    fn name(&self) -> &'static str {
        "torch"
    }

    fn seeds(&self) -> Vec<Vec<u8>> {
        torch_seed_files()
    }

    fn run(&self, input: &[u8]) -> bool {
        let path = self.dir.join("input.pt");
        std::fs::write(&path, input).expect("write input");
        read_torch(&path)
    }
}

/// `data.pkl` alone, mutated as bytes and zipped again the way `torch.save` lays a file
/// out, with a storage entry of the size the pickle declares for every storage it names
/// (learned from the reader's own "has no entry" / "declares N elements" errors, so
/// nothing here parses pickles). The pickle interpreter is private to tureen-artifacts;
/// this reaches it through the public [`TorchFile::open`].
pub struct TorchPickle {
    pub dir: PathBuf,
}

/// The largest storage the harness makes for a mutated pickle (larger declarations are
/// read with an empty entry, which the reader refuses as truncated).
const MAX_STORAGE_BYTES: u64 = 1 << 20;

impl TorchPickle {
    /// Writes the archive of `pickle` and `storages` to `path`.
    fn write(path: &std::path::Path, pickle: &[u8], storages: &BTreeMap<String, Vec<u8>>) {
        use std::io::Write as _;
        let file = std::fs::File::create(path).expect("create input");
        let mut zip = zip::ZipWriter::new(file);
        let stored =
            zip::write::FileOptions::default().compression_method(zip::CompressionMethod::Stored);
        let mut entry = |name: &str, bytes: &[u8]| {
            zip.start_file(format!("archive/{name}"), stored)
                .expect("zip entry");
            zip.write_all(bytes).expect("zip data");
        };
        entry("data.pkl", pickle);
        entry("byteorder", b"little");
        for (key, bytes) in storages {
            entry(&format!("data/{key}"), bytes);
        }
        entry("version", b"3\n");
        zip.finish().expect("zip directory");
    }

    /// The storage that the reader's complaint `problem` asks for, if it is one.
    fn wanted(problem: &TorchProblem) -> Option<(String, Option<u64>)> {
        let TorchProblem::Storage { key, what } = problem else {
            return None;
        };
        if what.starts_with("the archive has no entry") {
            return Some((key.clone(), None));
        }
        // "the pickle declares {numel} elements of {dtype} but ..."
        let rest = what.strip_prefix("the pickle declares ")?;
        let mut words = rest.split(' ');
        let numel: u64 = words.next()?.parse().ok()?;
        let dtype: Dtype = words.nth(2)?.parse().ok()?;
        Some((key.clone(), numel.checked_mul(dtype.size() as u64)))
    }
}

impl Target for TorchPickle {
    fn name(&self) -> &'static str {
        "torch-pickle"
    }

    fn seeds(&self) -> Vec<Vec<u8>> {
        let path = self.dir.join("seed.pt");
        torch_seed_files()
            .into_iter()
            .map(|bytes| {
                std::fs::write(&path, &bytes).expect("write seed");
                let mut zip = zip::ZipArchive::new(std::fs::File::open(&path).expect("seed"))
                    .expect("a seed is a zip");
                let name = zip
                    .file_names()
                    .find(|n| n.ends_with("/data.pkl"))
                    .expect("a seed has data.pkl")
                    .to_string();
                let mut pkl = Vec::new();
                std::io::Read::read_to_end(&mut zip.by_name(&name).expect("data.pkl"), &mut pkl)
                    .expect("read data.pkl");
                pkl
            })
            .collect()
    }

    fn run(&self, input: &[u8]) -> bool {
        let path = self.dir.join("input.pt");
        let mut storages: BTreeMap<String, Vec<u8>> = BTreeMap::new();
        // One round per storage the pickle names, twice (its name, then its size).
        for _ in 0..64 {
            Self::write(&path, input, &storages);
            let problem = match TorchFile::open(&path) {
                Err(TorchError::Invalid { problem, .. }) => problem,
                _ => break,
            };
            let Some((key, bytes)) = Self::wanted(&problem) else {
                break;
            };
            match bytes {
                None => storages.insert(key, Vec::new()),
                Some(n)
                    if n <= MAX_STORAGE_BYTES && storages.get(&key).is_none_or(Vec::is_empty) =>
                {
                    // A recognisable pattern, different in every storage.
                    let salt = storages.len() as u8;
                    storages.insert(key, (0..n).map(|i| (i as u8).wrapping_add(salt)).collect())
                }
                Some(_) => break,
            };
        }
        read_torch(&path)
    }
}
