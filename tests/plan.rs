//! `tureen plan`: steps, samples, FLOPs, checkpoint sizes and GPU-hours of a pipeline,
//! checked against the convnext_xxlarge model card and against arithmetic by hand.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn tureen(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tureen"))
        .args(args)
        .output()
        .expect("tureen runs")
}

fn plan_json(pipeline: &Path, extra: &[&str]) -> Value {
    let mut args = vec!["plan", pipeline.to_str().unwrap(), "--format", "json"];
    args.extend_from_slice(extra);
    let out = tureen(&args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("plan --format json prints JSON")
}

fn stage<'a>(plan: &'a Value, name: &str) -> &'a Value {
    plan["plan"]["stages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == name)
        .unwrap_or_else(|| panic!("no stage {name}"))
}

fn xxlarge() -> PathBuf {
    repo().join("pipelines/laion2b-convnext-xxlarge.yaml")
}

#[test]
fn xxlarge_core_matches_the_model_card() {
    let plan = plan_json(&xxlarge(), &[]);
    let core = &stage(&plan, "core")["estimate"];
    let t = &core["train"];
    assert_eq!(t["samples_per_interval"], 135_646_078);
    assert_eq!(t["batch"], 81_920);
    // open_clip rounds an interval up to whole batches: ceil(135,646,078 / 81,920).
    assert_eq!(t["steps_per_interval"], 1_656);
    assert_eq!(t["first_interval"], 1);
    assert_eq!(t["last_interval"], 256);
    assert_eq!(t["steps"], 423_936);
    assert_eq!(t["samples"], 34_728_837_120u64); // "~34.7B samples"
    assert_eq!(t["warmup"], 10_000);
    assert_eq!(t["lr"], 1e-3);

    let m = &core["model"];
    assert_eq!(m["params"], 1_200_576_385u64);
    // Card: 846.54M image + 354.03M text params; 198.09 + 23.57 GMACs at 256 px.
    assert_eq!(
        format!("{:.2}", m["image_params"].as_f64().unwrap() / 1e6),
        "846.54"
    );
    assert_eq!(
        format!("{:.2}", m["text_params"].as_f64().unwrap() / 1e6),
        "354.03"
    );
    assert_eq!(
        format!("{:.2}", m["image_macs"].as_f64().unwrap() / 1e9),
        "198.09"
    );
    assert_eq!(
        format!("{:.2}", m["text_macs"].as_f64().unwrap() / 1e9),
        "23.57"
    );
    assert_eq!(m["image_size"], 256);

    // One checkpoint per interval: float32 weights + two float32 AdamW moments.
    assert_eq!(core["outputs"][0]["count"], 256);
    assert_eq!(core["outputs"][0]["bytes_each"], 1_200_576_385u64 * 12);
    // Training FLOPs: 3 x forward (2 FLOPs per MAC) plus the logits over the batch.
    let per_sample = 6.0
        * (m["image_macs"].as_f64().unwrap()
            + m["text_macs"].as_f64().unwrap()
            + 2.0 * 81_920.0 * 1024.0);
    assert_eq!(t["flops_per_sample"].as_f64().unwrap(), per_sample);
    let flops = core["flops"].as_f64().unwrap();
    assert!((flops / (per_sample * 34_728_837_120.0) - 1.0).abs() < 1e-12);
    assert_eq!(stage(&plan, "core")["gpus"], 1024);
}

#[test]
fn xxlarge_rewind_redoes_intervals_231_to_256_at_the_larger_batch() {
    let plan = plan_json(&xxlarge(), &[]);
    let rewind = &stage(&plan, "rewind")["estimate"];
    let t = &rewind["train"];
    assert_eq!(t["batch"], 95_744);
    assert_eq!(t["first_interval"], 231);
    assert_eq!(t["last_interval"], 256);
    assert_eq!(t["steps_per_interval"], 1_417); // ceil(135,646,078 / 95,744)
    assert_eq!(t["steps"], 26 * 1_417);
    assert_eq!(t["samples"], 26 * 1_417 * 95_744u64);
    assert_eq!(t["schedule_steps"], 256 * 1_417);
    assert_eq!(t["lr"], 2e-3);
    assert_eq!(rewind["model"]["params"], 1_200_576_385u64);
    assert_eq!(rewind["outputs"][0]["count"], 26);
    assert_eq!(stage(&plan, "rewind")["gpus"], 1088);

    let soup = &stage(&plan, "soup")["estimate"];
    assert_eq!(soup["outputs"][0]["bytes_each"], 1_200_576_385u64 * 4);

    let totals = &plan["plan"]["totals"];
    assert_eq!(totals["steps"], 423_936 + 26 * 1_417);
    assert_eq!(totals["samples"], 34_728_837_120u64 + 26 * 1_417 * 95_744);
}

#[test]
fn floor_rounding_gives_the_floor_step_counts() {
    let plan = plan_json(
        &xxlarge(),
        &[
            "-P",
            "core.step_rounding=floor",
            "-P",
            "rewind.step_rounding=floor",
        ],
    );
    assert_eq!(
        stage(&plan, "core")["estimate"]["train"]["steps_per_interval"],
        1_655
    );
    assert_eq!(
        stage(&plan, "rewind")["estimate"]["train"]["steps_per_interval"],
        1_416
    );
}

#[test]
fn measured_throughput_sets_training_gpu_hours() {
    let plan = plan_json(&xxlarge(), &["--throughput", "50"]);
    let core = stage(&plan, "core");
    let expected = 34_728_837_120.0 / 50.0 / 3600.0;
    assert!((core["gpu_hours"].as_f64().unwrap() - expected).abs() < 1e-6);
    assert!((core["wall_hours"].as_f64().unwrap() - expected / 1024.0).abs() < 1e-9);
    // FLOP-based at the default 25% of 312 TFLOP/s.
    let plan = plan_json(&xxlarge(), &[]);
    let core = stage(&plan, "core");
    let flops = core["estimate"]["flops"].as_f64().unwrap();
    assert!((core["gpu_hours"].as_f64().unwrap() - flops / (312e12 * 0.25) / 3600.0).abs() < 1e-6);
}

#[test]
fn text_plan_prints_the_cards_figures() {
    let out = tureen(&["plan", xxlarge().to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    for needle in [
        "1,200,576,385 params",
        "image 198.09 GMACs + text 23.57 GMACs = 221.66 GMACs",
        "423,936",
        "34,728,837,120",
        "231-256",
        "256 x 14.41 GB",
        "throughput: 25% model FLOP utilisation of 312 TFLOP/s",
    ] {
        assert!(text.contains(needle), "missing `{needle}` in:\n{text}");
    }
}

/// A small train -> rewind -> soup pipeline whose numbers are easy to check by hand.
const SMALL: &str = r#"
tureen: 1
stages:
  core:
    kind: train
    params:
      model: convnext_atto_64
      data: synthetic
      batch_size: 64
      samples_per_interval: 1000
      intervals: 10
      lr: 1.0e-3
  rewind:
    kind: rewind
    inputs:
      from: core.checkpoints[8]
    params:
      data: synthetic
      batch_size: 75
      samples_per_interval: 1000
      intervals: 10
      lr: 2.0e-3
  soup:
    kind: soup
    inputs: {checkpoints: [core.final, rewind.final]}
    params: {out_dtype: bfloat16}
  report:
    kind: command
    cmd: echo done > done.txt
    outs: [done.txt]
    deps: [soup.soup]
"#;

#[test]
fn small_pipeline_counts_match_arithmetic_by_hand() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("small.yaml");
    std::fs::write(&path, SMALL).unwrap();
    let plan = plan_json(&path, &[]);
    let core = &stage(&plan, "core")["estimate"]["train"];
    assert_eq!(core["steps_per_interval"], 16); // ceil(1000 / 64)
    assert_eq!(core["steps"], 160);
    assert_eq!(core["samples"], 160 * 64);
    let rewind = &stage(&plan, "rewind")["estimate"]["train"];
    // checkpoints[8] is the one after interval 9: the rewind runs interval 10 only.
    assert_eq!(rewind["first_interval"], 10);
    assert_eq!(rewind["steps_per_interval"], 14); // ceil(1000 / 75)
    assert_eq!(rewind["steps"], 14);
    let params = stage(&plan, "core")["estimate"]["model"]["params"]
        .as_u64()
        .unwrap();
    assert_eq!(params, 19_338_169);
    let soup = &stage(&plan, "soup")["estimate"];
    assert_eq!(soup["outputs"][0]["bytes_each"], params * 2);
    // A shell command has no estimate; it is listed, not counted.
    assert!(stage(&plan, "report")["estimate"].is_null());
    let totals = &plan["plan"]["totals"];
    assert_eq!(totals["steps"], 160 + 14);
    let store = 10 * params * 12 + params * 12 + params * 2;
    assert_eq!(totals["store_bytes"], store);
}

#[test]
fn invalid_pipeline_is_a_validation_error_with_position() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.yaml");
    std::fs::write(
        &path,
        SMALL.replace("core.checkpoints[8]", "cor.checkpoints[8]"),
    )
    .unwrap();
    let out = tureen(&["plan", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("bad.yaml:") && stderr.contains("cor.checkpoints[8]"),
        "{stderr}"
    );
}

#[test]
fn nonsense_throughput_is_refused() {
    for args in [
        ["--throughput", "0"],
        ["--mfu", "1.5"],
        ["--peak-tflops", "0"],
    ] {
        let out = tureen(&["plan", xxlarge().to_str().unwrap(), args[0], args[1]]);
        assert!(!out.status.success(), "{args:?} accepted");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains(args[0]),
            "{args:?}"
        );
    }
}

#[test]
fn imagenet_metadata_files_have_1000_classes_and_80_templates() {
    let data = repo().join("pipelines/data");
    let classes = std::fs::read_to_string(data.join("imagenet-classnames.txt")).unwrap();
    let classes: Vec<&str> = classes.lines().collect();
    assert_eq!(classes.len(), 1000);
    assert_eq!((classes[0], classes[999]), ("tench", "toilet paper"));
    assert!(classes
        .iter()
        .all(|c| !c.trim().is_empty() && c.trim() == *c));
    let templates = std::fs::read_to_string(data.join("imagenet-templates.txt")).unwrap();
    let templates: Vec<&str> = templates.lines().collect();
    assert_eq!(templates.len(), 80);
    assert!(
        templates.iter().all(|t| t.matches("{c}").count() == 1),
        "every template names the class once"
    );
    assert_eq!(templates[0], "a bad photo of a {c}.");
}

#[test]
fn xxlarge_trains_on_1024_then_1088_ranks_of_80_and_88_rows() {
    let plan = plan_json(&xxlarge(), &[]);
    for (name, world, per_rank) in [("core", 1024, 80), ("rewind", 1088, 88)] {
        let t = &stage(&plan, name)["estimate"]["train"];
        assert_eq!(t["world"], world, "{name}");
        assert_eq!(t["per_rank_batch"], per_rank, "{name}");
    }
    let out = tureen(&["plan", xxlarge().to_str().unwrap()]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("ranks") && text.contains("batch/rank"), "{text}");
    let row = |name: &str| {
        text.lines()
            .find(|l| l.split_whitespace().next() == Some(name))
            .unwrap_or_else(|| panic!("no row {name}:\n{text}"))
            .split_whitespace()
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    let core = row("core");
    assert!(core.windows(3).any(|w| w == ["81,920", "1,024", "80"]), "{core:?}");
    let rewind = row("rewind");
    assert!(rewind.windows(3).any(|w| w == ["95,744", "1,088", "88"]), "{rewind:?}");
}
