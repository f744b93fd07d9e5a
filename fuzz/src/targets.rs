//! The fuzz targets: what each feeds an input to, the invariants it checks, and its seeds.

use std::collections::BTreeMap;
use std::path::PathBuf;

use tureen_artifacts::safetensors::{write_file, Dtype, SafetensorsFile};
use tureen_artifacts::soup::config::SoupConfig;
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
