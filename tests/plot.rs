//! `tureen plot`: a picture of a recorded run's curves, from a run directory written
//! by hand here (record, per-stage metrics logs, eval results in the store).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::json;
use tureen_artifacts::Store;

const RUN: &str = "20261122-120000-abcdef";

fn tureen(store: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tureen"))
        .arg("--store")
        .arg(store)
        .args(args)
        .output()
        .expect("tureen runs")
}

fn stage(
    name: &str,
    kind: &str,
    status: &str,
    inputs: serde_json::Value,
    outputs: serde_json::Value,
) -> serde_json::Value {
    json!({
        "name": name, "kind": kind, "status": status,
        "key": format!("blake3:{}", blake3_hex(name)),
        "why": [], "fingerprint": null, "inputs": inputs, "outputs": outputs,
        "started": null, "ended": null, "seconds": 1.0, "attempts": 1,
        "executor": "local", "exit_status": 0, "error": null, "log": null
    })
}

fn blake3_hex(s: &str) -> String {
    // A stable fake key per stage name: 64 hex digits.
    let mut out = String::new();
    for (i, b) in s.bytes().cycle().take(32).enumerate() {
        out.push_str(&format!("{:02x}", b.wrapping_add(i as u8)));
    }
    out
}

/// A synthetic dataset, a core run of 100 steps at batch 64, a rewind redoing the last 10 steps at batch
/// 75, a soup of the two and an eval of each final model.
fn write_run(store: &Path) {
    let s = Store::open(store).unwrap();
    let eval_out = |top1: f64| {
        let d = s
            .add_bytes(json!({"top1": top1, "top5": 0.9}).to_string().as_bytes())
            .unwrap();
        json!({"metrics": {"digest": d.to_string()}})
    };
    // Evals name their dataset too (`data` sorts before `model`): the marker must still
    // belong to the evaluated model, not to the dataset's stage.
    let stages = vec![
        stage("synth", "command", "ran", json!({}), json!({})),
        stage(
            "core",
            "train",
            "ran",
            json!({"data": {"ref": "synth.dataset", "digest": null}}),
            json!({}),
        ),
        stage(
            "rewind",
            "rewind",
            "ran",
            json!({"from": {"ref": "core.checkpoints[8]", "digest": null}}),
            json!({}),
        ),
        stage(
            "soup",
            "soup",
            "ran",
            json!({"ingredients": {"ref": "core.final, rewind.final", "digest": null}}),
            json!({}),
        ),
        stage(
            "eval_core",
            "eval",
            "ran",
            json!({"data": {"ref": "synth.dataset", "digest": null}, "model": {"ref": "core.final", "digest": null}}),
            eval_out(0.52),
        ),
        stage(
            "eval_rewind",
            "eval",
            "ran",
            json!({"model": {"ref": "rewind.final", "digest": null}}),
            eval_out(0.55),
        ),
        stage(
            "eval_soup",
            "eval",
            "ran",
            json!({"data": {"ref": "synth.dataset", "digest": null}, "model": {"ref": "soup.soup", "digest": null}}),
            eval_out(0.57),
        ),
    ];
    let record = json!({
        "run_id": RUN, "pipeline": "/tmp/p.yaml", "pipeline_digest": "blake3:00", "status": "succeeded",
        "params": {}, "overrides": [], "options": {}, "started": "2026-11-22T12:00:00.000Z",
        "ended": "2026-11-22T12:05:00.000Z", "host": "h", "user": "u", "tools": {}, "stages": stages
    });
    let runs = store.join("runs");
    std::fs::create_dir_all(runs.join(RUN)).unwrap();
    std::fs::write(
        runs.join(format!("{RUN}.json")),
        serde_json::to_vec_pretty(&record).unwrap(),
    )
    .unwrap();

    let mut core = String::new();
    for step in 1..=100u64 {
        let loss = 1.0 + 4.0 * (-(step as f64) / 30.0).exp();
        let mut r = json!({"step": step, "samples": step * 64, "loss": loss, "lr": 1e-3});
        if step % 10 == 0 {
            r["zeroshot_top1"] = json!(0.55 * (1.0 - (-(step as f64) / 40.0).exp()));
        }
        core.push_str(&format!("{r}\n"));
    }
    std::fs::write(runs.join(RUN).join("core.metrics.jsonl"), core).unwrap();
    let mut rewind = String::new();
    for i in 1..=9u64 {
        let samples = 90 * 64 + i * 75;
        let loss = 1.0 + 4.0 * (-(90.0 + i as f64) / 29.0).exp();
        let mut r = json!({"step": 81 + i, "samples": samples, "loss": loss});
        if i % 3 == 0 {
            r["zeroshot_top1"] = json!(0.50 + 0.01 * i as f64);
        }
        rewind.push_str(&format!("{r}\n"));
    }
    // A record cut short by a killed writer: ignored.
    rewind.push_str("{\"step\": 91, \"samp");
    std::fs::write(runs.join(RUN).join("rewind.metrics.jsonl"), rewind).unwrap();
}

fn setup() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    write_run(&store);
    (dir, store)
}

fn png_size(bytes: &[u8]) -> (u32, u32) {
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "PNG signature");
    assert_eq!(&bytes[12..16], b"IHDR");
    let w = u32::from_be_bytes(bytes[16..20].try_into().unwrap());
    let h = u32::from_be_bytes(bytes[20..24].try_into().unwrap());
    (w, h)
}

#[test]
fn plot_writes_a_png_with_core_rewind_and_soup() {
    let (dir, store) = setup();
    let out = dir.path().join("curves.png");
    let o = tureen(&store, &["plot", RUN, "-o", out.to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let bytes = std::fs::read(&out).unwrap();
    assert_eq!(png_size(&bytes), (1400, 900));
    // A blank or single-colour picture compresses to almost nothing; text and curves
    // do not.
    assert!(
        bytes.len() > 20_000,
        "suspiciously small PNG: {} bytes",
        bytes.len()
    );
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(
        stderr.contains("eval_soup") && stderr.contains("57.00%"),
        "{stderr}"
    );
    // Nothing else left next to the output (the temporary file was renamed).
    let names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(
        names
            .iter()
            .filter(|n| n.starts_with(".tureen-"))
            .count(),
        0,
        "{names:?}"
    );
}

#[test]
fn plot_writes_an_svg_with_labelled_series() {
    let (dir, store) = setup();
    let out = dir.path().join("curves.svg");
    let o = tureen(&store, &["plot", "latest", "-o", out.to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let svg = std::fs::read_to_string(&out).unwrap();
    assert!(svg.starts_with("<svg"), "{}", &svg[..100.min(svg.len())]);
    assert!(svg.trim_end().ends_with("</svg>"));
    for label in [
        "core (train)",
        "rewind (rewind)",
        "soup (eval_soup): 57.00%",
        "final 10%",
        "samples seen",
    ] {
        assert!(svg.contains(label), "missing `{label}` in the SVG");
    }
    // Two loss panels and two accuracy panels each draw the core curve.
    assert!(svg.matches("<polyline").count() >= 4, "too few curves");
}

#[test]
fn plot_of_a_cached_stage_uses_the_log_of_the_run_that_computed_it() {
    let (dir, store) = setup();
    // A second run in which every stage was restored from the cache: same keys, no
    // metrics logs of its own.
    let first: serde_json::Value = serde_json::from_slice(
        &std::fs::read(store.join("runs").join(format!("{RUN}.json"))).unwrap(),
    )
    .unwrap();
    let mut second = first.clone();
    let id = "20261122-130000-fedcba";
    second["run_id"] = json!(id);
    for s in second["stages"].as_array_mut().unwrap() {
        s["status"] = json!("cached");
    }
    std::fs::write(
        store.join("runs").join(format!("{id}.json")),
        second.to_string(),
    )
    .unwrap();
    let out = dir.path().join("cached.svg");
    let o = tureen(&store, &["plot", id, "-o", out.to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(std::fs::read_to_string(&out)
        .unwrap()
        .contains("core (train)"));
}

#[test]
fn unknown_extension_is_refused_before_anything_is_written() {
    let (dir, store) = setup();
    let out = dir.path().join("curves.pdf");
    let o = tureen(&store, &["plot", RUN, "-o", out.to_str().unwrap()]);
    assert!(!o.status.success());
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(
        stderr.contains("curves.pdf") && stderr.contains(".png or .svg"),
        "{stderr}"
    );
    assert!(!out.exists());
}

#[test]
fn corrupt_metrics_line_is_an_error_naming_file_and_line() {
    let (dir, store) = setup();
    let log = store.join("runs").join(RUN).join("core.metrics.jsonl");
    let mut text = std::fs::read_to_string(&log).unwrap();
    text.insert_str(0, "{\"step\": 0}\nnot json\n");
    std::fs::write(&log, text).unwrap();
    let out = dir.path().join("curves.png");
    let o = tureen(&store, &["plot", RUN, "-o", out.to_str().unwrap()]);
    assert!(!o.status.success());
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(stderr.contains("core.metrics.jsonl:2"), "{stderr}");
    assert!(!out.exists(), "no picture after a failure");
}

#[test]
fn unknown_run_is_an_error() {
    let (dir, store) = setup();
    let out = dir.path().join("curves.png");
    let o = tureen(&store, &["plot", "nosuchrun", "-o", out.to_str().unwrap()]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("nosuchrun"));
}

#[test]
fn run_without_metrics_is_an_error_not_an_empty_picture() {
    let (dir, store) = setup();
    for f in ["core.metrics.jsonl", "rewind.metrics.jsonl"] {
        std::fs::remove_file(store.join("runs").join(RUN).join(f)).unwrap();
    }
    // Drop the evals too: nothing left to draw.
    let path = store.join("runs").join(format!("{RUN}.json"));
    let mut record: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    record["stages"]
        .as_array_mut()
        .unwrap()
        .retain(|s| s["kind"] != "eval");
    std::fs::write(&path, record.to_string()).unwrap();
    let out = dir.path().join("curves.png");
    let o = tureen(&store, &["plot", RUN, "-o", out.to_str().unwrap()]);
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("no training metrics"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(!out.exists());
}

#[test]
fn the_picture_is_as_readable_as_any_new_file_and_run_defaults_to_latest() {
    let (dir, store) = setup();
    let out = dir.path().join("shared.png");
    // Through a shell with the usual umask: the file is 0644, not a temp file's 0600.
    let o = std::process::Command::new("sh")
        .arg("-c")
        .arg("umask 022; exec \"$0\" --store \"$1\" plot -o \"$2\"")
        .arg(env!("CARGO_BIN_EXE_tureen"))
        .arg(&store)
        .arg(&out)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&out).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o644, "mode {mode:o}");
}
