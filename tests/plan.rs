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
    let core = row_of(&text, "core");
    assert!(core.windows(3).any(|w| w == ["81,920", "1,024", "80"]), "{core:?}");
    let rewind = row_of(&text, "rewind");
    assert!(rewind.windows(3).any(|w| w == ["95,744", "1,088", "88"]), "{rewind:?}");
}

/// An `open_clip` stage (`executor` and `extra` substituted) beside a `train` stage of
/// the same model and global batch, and a soup of the open_clip checkpoints.
fn open_clip_pipeline(executor: &str, resources: &str, extra: &str) -> String {
    format!(
        r#"
tureen: 1
stages:
  oc:
    kind: open_clip
    executor: {executor}
    resources: {resources}
    params:
      train_data: "/data/train/{{000000..000007}}.tar"
      train_num_samples: 1000
      batch_size: 64
      epochs: 3
      warmup: 5
      lr: 1.0e-3
      workers: 3
      model: convnext_atto_64
{extra}  soup:
    kind: soup
    inputs: {{checkpoints: oc.checkpoints}}
"#
    )
}

fn plan_of(yaml: &str) -> (Value, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("oc.yaml");
    std::fs::write(&path, yaml).unwrap();
    let json = plan_json(&path, &[]);
    let out = tureen(&["plan", path.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
    (json, text)
}

/// The cells of the row of stage `name` in a text plan.
fn row_of(text: &str, name: &str) -> Vec<String> {
    text.lines()
        .find(|l| l.split_whitespace().next() == Some(name))
        .unwrap_or_else(|| panic!("no row {name}:\n{text}"))
        .split_whitespace()
        .map(str::to_string)
        .collect()
}

#[test]
fn a_local_open_clip_stage_is_estimated_as_open_clip_counts_its_steps() {
    let (plan, text) = plan_of(&open_clip_pipeline("local", "{cpus: 1}", ""));
    let oc = &stage(&plan, "oc")["estimate"];
    let t = &oc["train"];
    // One local process: the global batch is batch_size. open_clip's loader makes
    // ceil(1000 / 64) = 16 batches, rounded up to a multiple of 3 workers: 18 per epoch.
    assert_eq!(t["world"], 1);
    assert_eq!(t["batch"], 64);
    assert_eq!(t["per_rank_batch"], 64);
    assert_eq!(t["steps_per_interval"], 18);
    assert_eq!((t["first_interval"].clone(), t["last_interval"].clone()), (1.into(), 3.into()));
    assert_eq!(t["steps"], 3 * 18);
    assert_eq!(t["samples"], 3 * 18 * 64);
    assert_eq!(t["warmup"], 5);
    // The model's compute, counted as for a train stage at the same global batch.
    let params = oc["model"]["params"].as_u64().unwrap();
    assert_eq!(params, 19_338_169);
    let m = &oc["model"];
    let per_sample = 6.0
        * (m["image_macs"].as_f64().unwrap()
            + m["text_macs"].as_f64().unwrap()
            + 2.0 * 64.0 * m["embed_dim"].as_f64().unwrap());
    assert_eq!(t["flops_per_sample"].as_f64().unwrap(), per_sample);
    assert_eq!(oc["flops"].as_f64().unwrap(), per_sample * (3 * 18 * 64) as f64);
    // An epoch_N.pt per epoch: float32 weights and AdamW's two moments.
    assert_eq!(oc["outputs"][0]["count"], 3);
    assert_eq!(oc["outputs"][0]["bytes_each"], params * 12);
    // A soup downstream knows the model from it.
    assert_eq!(stage(&plan, "soup")["estimate"]["outputs"][0]["bytes_each"], params * 4);

    let row = row_of(&text, "oc");
    assert!(
        row.windows(6).any(|w| w == ["1-3", "18", "54", "64", "1", "64"]),
        "{row:?}\n{text}"
    );
    assert!(row.contains(&"3,456".to_string()), "{row:?}");
    assert!(text.contains("x 1 local process = 64 per step"), "{text}");
}

#[test]
fn an_open_clip_stage_on_slurm_runs_one_process_per_gpu() {
    let (plan, text) = plan_of(&open_clip_pipeline("slurm", "{gpus: 8, cpus: 6}", ""));
    let t = &stage(&plan, "oc")["estimate"]["train"];
    // 8 processes of 64: ceil(1000 / 512) = 2 batches, a multiple of 3 workers: 3.
    assert_eq!(t["world"], 8);
    assert_eq!(t["per_rank_batch"], 64);
    assert_eq!(t["batch"], 512);
    assert_eq!(t["steps_per_interval"], 3);
    assert_eq!(t["samples"], 3 * 3 * 512);
    let row = row_of(&text, "oc");
    assert!(row.windows(3).any(|w| w == ["512", "8", "64"]), "{row:?}\n{text}");
}

#[test]
fn an_open_clip_model_tureen_has_no_config_for_is_said_to_be_unknown() {
    let extra = "      extra_args: [--model, ViT-B-32]\n";
    let (plan, text) = plan_of(&open_clip_pipeline("local", "{cpus: 1}", extra));
    let oc = &stage(&plan, "oc")["estimate"];
    // Steps and samples do not depend on the model; its compute and sizes do.
    assert_eq!(oc["train"]["steps"], 3 * 18);
    assert!(oc["model"].is_null(), "{oc}");
    assert!(oc["flops"].is_null(), "unknown FLOPs are null, not 0: {oc}");
    assert!(plan["plan"]["totals"]["flops"].is_null(), "{}", plan["plan"]["totals"]);
    let row = row_of(&text, "oc");
    assert!(row.contains(&"54".to_string()), "{row:?}");
    assert!(row.iter().filter(|c| *c == "unknown").count() >= 3, "{row:?}\n{text}");
    assert!(text.contains("compute unknown") && text.contains("ViT-B-32"), "{text}");
    let total = row_of(&text, "total");
    assert!(total.contains(&"unknown".to_string()), "{total:?}");
}
