//! Portable numerics (`numerics: portable`, the default of libtorch stages): a CPU
//! training stage gives the same bytes whatever the machine's AVX-512, oneDNN or MKL
//! dispatch would pick (on every AMD CPU seen; an Intel CPU gives bytes of its own, see
//! `golden_final`), and the run keeps what it ran with (CPU, capability, library
//! versions, threads) beside the stage's log.

mod engine_common;

use engine_common::{record, runs, Workspace};

/// A tiny train stage on synthetic data: 2 intervals of 2 steps at batch 8 (seconds).
fn tiny_train(extra: &str) -> String {
    format!(
        "tureen: 1
stages:
  tiny:
    kind: train
    params:
      model:
        preset: convnext_atto_64
        embed_dim: 16
        vision: {{timm_model_name: null, depths: [1, 1, 1, 1], dims: [8, 16, 24, 32], image_size: 32, drop_path: 0.1}}
        text: {{vocab_size: 259, width: 16, heads: 2, layers: 1, context_length: 8}}
      data: synthetic
      batch_size: 8
      samples_per_interval: 16
      intervals: 2
      lr: 1.0e-3
      warmup: 1
      grad_clip_norm: 5.0
      seed: 0
      device: cpu
{extra}"
    )
}

/// The final checkpoint of [`tiny_train`] in portable mode, by CPU vendor. It is the
/// same on every AMD CPU seen (EPYC Zen 1, AVX2 only; Zen 4 and Zen 5, AVX-512), and
/// another on the one Intel seen (a Xeon of family 6 model 207, with AVX-512 FP16 and
/// AMX, 2026-12), the same there whatever the caller's kernel settings: some kernel
/// still dispatches on the vendor (README, known gaps). It changes only with the model
/// code, the trainer or libtorch (then bump the kind's code version).
fn golden_final() -> &'static str {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    if cpuinfo.contains("GenuineIntel") {
        "blake3:b0ddbff0d716dd19cfd46730e7261e95ef73c16445690b9bda6705df2a195b62"
    } else {
        "blake3:df18e40a14a001b2d697f468aedb5f02af505113cea269b490cfc023234b598d"
    }
}

fn final_digest(ws: &Workspace) -> String {
    let id = runs(&ws.store()).into_iter().next().expect("a run");
    let rec = record(&ws.store(), &id);
    rec["stages"][0]["outputs"]["final"]["digest"]
        .as_str()
        .expect("final digest")
        .to_string()
}

fn machine(ws: &Workspace) -> serde_json::Value {
    let id = runs(&ws.store()).into_iter().next().expect("a run");
    let path = ws.store().join("runs").join(id).join("tiny.machine.json");
    serde_json::from_slice(&std::fs::read(&path).expect("machine file")).expect("json")
}

#[test]
fn a_portable_train_stage_gives_the_golden_bytes_and_records_its_machine() {
    let ws = Workspace::new();
    ws.write("p.yaml", &tiny_train(""));
    ws.ok(&["run", "p.yaml", "--plain"]);
    assert_eq!(final_digest(&ws), golden_final());

    let m = machine(&ws);
    assert!(!m["cpu_model"].as_str().unwrap().is_empty(), "{m}");
    assert!(
        m["cpu_flags"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f == "avx2"),
        "{m}"
    );
    let n = &m["numerics"];
    assert_eq!(n["mode"], "portable", "{m}");
    assert_eq!(n["cpu_capability"], "AVX2", "{m}");
    assert_eq!(n["threads"], 2, "{m}");
    assert_eq!(n["onednn_convolutions"], false, "{m}");
    assert_eq!(n["nnpack_convolutions"], false, "{m}");
    assert_eq!(n["torch"], "2.11.0", "{m}");
    assert!(
        n["mkl"].as_str().unwrap().contains("Math Kernel Library"),
        "{m}"
    );
    assert!(n["onednn"].as_str().unwrap().contains("v3."), "{m}");
    assert_eq!(n["env"]["MKL_CBWR"], "COMPATIBLE", "{m}");
}

#[test]
fn portable_bytes_ignore_the_callers_kernel_settings() {
    let ws = Workspace::new();
    ws.write("p.yaml", &tiny_train(""));
    let out = ws
        .cmd(&["run", "p.yaml", "--plain"])
        .env("ATEN_CPU_CAPABILITY", "avx512")
        .env("ONEDNN_MAX_CPU_ISA", "AVX512_CORE_AMX")
        .env("MKL_CBWR", "AUTO")
        .env("OMP_NUM_THREADS", "1")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", engine_common::both(&out));
    assert_eq!(final_digest(&ws), golden_final());
}

#[test]
fn the_numerics_mode_and_thread_count_are_part_of_the_key() {
    let ws = Workspace::new();
    ws.write("p.yaml", &tiny_train(""));
    ws.ok(&["run", "p.yaml", "--plain"]);
    ws.write("p.yaml", &tiny_train("      numerics: native\n"));
    let plan = ws.ok(&["run", "p.yaml", "--dry-run", "--plain"]);
    assert!(plan.contains("numerics"), "{plan}");
    ws.write("p.yaml", &tiny_train("      threads: 1\n"));
    let plan = ws.ok(&["run", "p.yaml", "--dry-run", "--plain"]);
    assert!(plan.contains("threads"), "{plan}");
}

#[test]
fn an_unknown_numerics_mode_is_refused_before_anything_runs() {
    let ws = Workspace::new();
    ws.write("p.yaml", &tiny_train("      numerics: fast\n"));
    let out = ws.tureen(&["run", "p.yaml", "--plain"]);
    assert_eq!(out.status.code(), Some(2), "{}", engine_common::both(&out));
    let text = engine_common::both(&out);
    assert!(
        text.contains("numerics") && text.contains("portable"),
        "{text}"
    );
}

/// Rewrites the run record `id` with `edit`.
fn edit_record(ws: &Workspace, id: &str, edit: impl FnOnce(&mut serde_json::Value)) {
    let path = ws.store().join("runs").join(format!("{id}.json"));
    let mut rec: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    edit(&mut rec);
    std::fs::write(&path, serde_json::to_vec_pretty(&rec).unwrap()).unwrap();
}

/// Makes the record of run `id` (and the machine file beside it) say stage `stage` ran
/// on an Intel CPU.
fn pretend_recorded_on_intel(ws: &Workspace, id: &str, stage: &str) {
    let intel = |m: &mut serde_json::Value| {
        m["cpu_model"] = "Intel(R) Xeon(R) Platinum 8375C CPU @ 2.90GHz".into();
        m["cpu_flags"]
            .as_array_mut()
            .unwrap()
            .push("tureen_recorded_only".into());
    };
    edit_record(ws, id, |rec| {
        let stages = rec["stages"].as_array_mut().unwrap();
        let s = stages.iter_mut().find(|s| s["name"] == stage).unwrap();
        intel(&mut s["machine"]);
    });
    let path = ws
        .store()
        .join("runs")
        .join(id)
        .join(format!("{stage}.machine.json"));
    let mut m: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    intel(&mut m);
    std::fs::write(&path, serde_json::to_vec_pretty(&m).unwrap()).unwrap();
}

#[test]
fn replay_on_another_machine_shows_both_machines_and_how_much_tensors_differ() {
    let ws = Workspace::new();
    ws.write("p.yaml", &tiny_train(""));
    ws.ok(&["run", "p.yaml", "--plain"]);
    let recorded = runs(&ws.store()).into_iter().next().unwrap();
    // Another seed gives other weights: make the record claim those.
    ws.write("q.yaml", &tiny_train("").replace("seed: 0", "seed: 1"));
    ws.ok(&["run", "q.yaml", "--plain"]);
    let other = runs(&ws.store()).into_iter().next().unwrap();
    let other_outputs = record(&ws.store(), &other)["stages"][0]["outputs"].clone();
    edit_record(&ws, &recorded, |rec| {
        rec["stages"][0]["outputs"] = other_outputs
    });
    pretend_recorded_on_intel(&ws, &recorded, "tiny");

    let out = ws.tureen(&["replay", &recorded, "--plain"]);
    let text = engine_common::both(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("differs"), "{text}");
    assert!(text.contains("largest relative difference"), "{text}");
    assert!(text.contains("final: tensor "), "{text}");
    assert!(text.contains("checkpoints: 2 of 2 differ"), "{text}");
    assert!(
        text.contains("checkpoints[1]/model.safetensors: tensor "),
        "{text}"
    );
    assert!(text.contains("recorded vs this replay"), "{text}");
    assert!(text.contains("Intel(R) Xeon(R) Platinum 8375C"), "{text}");
    assert!(text.contains("tureen_recorded_only"), "{text}");
}

#[test]
fn replay_prints_metric_deltas_for_json_outputs() {
    let ws = Workspace::new();
    // A "metric" that changes on every run.
    ws.write(
        "p.yaml",
        "tureen: 1
stages:
  score:
    kind: command
    cmd: |
      printf '{\"top1\": 0.%s, \"n\": 3}' \"$(od -An -N4 -tu4 /dev/urandom | tr -d ' ')\" > ${outs.m}
    outs: {m: m.json}
",
    );
    ws.ok(&["run", "p.yaml", "--plain"]);
    let id = runs(&ws.store()).into_iter().next().unwrap();
    let out = ws.tureen(&["replay", &id, "--plain"]);
    let text = engine_common::both(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("m: top1: 0."), "{text}");
    assert!(
        !text.contains(" n: "),
        "unchanged values are not listed: {text}"
    );
    assert!(text.contains("machine (score): as recorded"), "{text}");
}
