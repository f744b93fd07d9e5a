//! `tureen-fuzz TARGET SECONDS [SEED]`: a mutation fuzzer on stable Rust for tureen's
//! parsers (targets in `targets.rs`). It mutates a corpus (the seeds, plus every mutant
//! the target accepted) for SECONDS, catches panics, saves each crasher under
//! `fuzz/crashes/TARGET/` and each input slower than a second under `fuzz/slow/TARGET/`,
//! and prints the number of inputs tried. There is no coverage feedback: accepted
//! mutants stand in for it. A crasher is then pinned as a regression test in the
//! normal suite.

mod mutate;
mod targets;

use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mutate::{mutate, Rng};
use targets::{MergekitConfig, Pipeline, Safetensors, Target, Torch, TorchPickle};

const MAX_CORPUS: usize = 2000;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (Some(name), Some(secs)) = (args.get(1), args.get(2).and_then(|s| s.parse::<u64>().ok()))
    else {
        eprintln!("usage: tureen-fuzz safetensors|pipeline|mergekit-config|torch|torch-pickle SECONDS [SEED]");
        std::process::exit(2);
    };
    let seed = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(1);
    let scratch = tempfile::Builder::new()
        .prefix("tureen-fuzz")
        .tempdir_in(scratch_root())
        .expect("scratch dir");
    let target: Box<dyn Target> = match name.as_str() {
        "safetensors" => Box::new(Safetensors {
            dir: scratch.path().to_path_buf(),
        }),
        "pipeline" => Box::new(Pipeline::new(scratch.path().to_path_buf())),
        "mergekit-config" => Box::new(MergekitConfig::new(scratch.path().to_path_buf())),
        "torch" => Box::new(Torch {
            dir: scratch.path().to_path_buf(),
        }),
        "torch-pickle" => Box::new(TorchPickle {
            dir: scratch.path().to_path_buf(),
        }),
        other => {
            eprintln!("unknown target {other}");
            std::process::exit(2);
        }
    };
    let out = Path::new(env!("CARGO_MANIFEST_DIR"));
    let report = campaign(target.as_ref(), Duration::from_secs(secs), seed, out);
    println!(
        "{}: {} inputs in {:.0} s ({:.0}/s), {} accepted, corpus {}, {} crashes ({} distinct), {} slow (> 1 s), slowest {:.1} ms",
        target.name(),
        report.execs,
        report.seconds,
        report.execs as f64 / report.seconds.max(1e-9),
        report.accepted,
        report.corpus,
        report.crashes,
        report.distinct.len(),
        report.slow,
        report.slowest_ms
    );
    for (msg, file) in &report.distinct {
        println!("  crash: {msg} ({})", file.display());
    }
    if !report.distinct.is_empty() {
        std::process::exit(1);
    }
}

/// /dev/shm when there is one: each safetensors or torch input is written to a file.
fn scratch_root() -> PathBuf {
    let shm = PathBuf::from("/dev/shm");
    if shm.is_dir() {
        shm
    } else {
        std::env::temp_dir()
    }
}

#[derive(Default)]
struct Report {
    execs: u64,
    accepted: u64,
    corpus: usize,
    crashes: u64,
    distinct: Vec<(String, PathBuf)>,
    slow: u64,
    slowest_ms: f64,
    seconds: f64,
}

fn campaign(target: &dyn Target, length: Duration, seed: u64, out: &Path) -> Report {
    let last_panic = Arc::new(Mutex::new(String::new()));
    let hook_panic = last_panic.clone();
    std::panic::set_hook(Box::new(move |info| {
        let at = info
            .location()
            .map(|l| format!(" at {}:{}", l.file(), l.line()))
            .unwrap_or_default();
        let msg = info
            .payload()
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| info.payload().downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default();
        *hook_panic.lock().unwrap() = format!("{msg}{at}");
    }));
    let mut rng = Rng::new(seed);
    let mut corpus = target.seeds();
    // Seeds that fail validation (a file they name is missing here) still mutate well.
    let rejected = corpus.iter().filter(|s| !target.run(s)).count();
    if rejected > 0 {
        eprintln!(
            "{}: {rejected} of {} seeds are rejected (mutated anyway)",
            target.name(),
            corpus.len()
        );
    }
    let mut report = Report::default();
    let start = Instant::now();
    while start.elapsed() < length {
        let a = rng.below(corpus.len());
        let b = rng.below(corpus.len());
        let input = mutate(&mut rng, &corpus[a], &corpus[b]);
        let t = Instant::now();
        let result = std::panic::catch_unwind(AssertUnwindSafe(|| target.run(&input)));
        let ms = t.elapsed().as_secs_f64() * 1e3;
        report.execs += 1;
        report.slowest_ms = report.slowest_ms.max(ms);
        if ms > 1000.0 {
            report.slow += 1;
            save(out, "slow", target.name(), &input);
        }
        match result {
            Ok(true) => {
                report.accepted += 1;
                if corpus.len() < MAX_CORPUS {
                    corpus.push(input);
                }
            }
            Ok(false) => {}
            Err(_) => {
                report.crashes += 1;
                let msg = last_panic.lock().unwrap().clone();
                if !report.distinct.iter().any(|(m, _)| *m == msg) {
                    let file = save(out, "crashes", target.name(), &input);
                    report.distinct.push((msg, file));
                }
            }
        }
    }
    report.corpus = corpus.len();
    report.seconds = start.elapsed().as_secs_f64();
    report
}

fn save(out: &Path, kind: &str, target: &str, input: &[u8]) -> PathBuf {
    let dir = out.join(kind).join(target);
    std::fs::create_dir_all(&dir).expect("crash dir");
    let file = dir.join(format!("{}.bin", &blake3::hash(input).to_hex()[..16]));
    std::fs::write(&file, input).expect("save input");
    file
}
