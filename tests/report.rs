//! `tureen report` (issue 13, item 5): one self-contained HTML page about a run, tested
//! on a real (toy) recipe run, and rendered in Debian's headless `chromium` when it is
//! installed (`scripts/setup.sh` installs it): no console messages at all (the page
//! forbids loading anything, so a reference to the network would log a violation), and
//! the screenshot shows the curves and the tables.

mod recipe;

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

fn record(dir: &Path) -> (PathBuf, Value) {
    let runs = dir.join(".tureen/runs");
    let mut ids: Vec<PathBuf> = std::fs::read_dir(&runs)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    ids.sort();
    let path = ids.pop().expect("a run record");
    let rec = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    (path, rec)
}

fn stage<'r>(rec: &'r Value, name: &str) -> &'r Value {
    rec["stages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == name)
        .unwrap_or_else(|| panic!("no stage {name}"))
}

/// Marks `core` as run on Slurm with two job attempts, as the Slurm executor records
/// them (`<store>/slurm/<key>/slurm-job.json`), so the stage table must show the ids.
fn pretend_core_ran_on_slurm(dir: &Path) {
    let (path, mut rec) = record(dir);
    let stages = rec["stages"].as_array_mut().unwrap();
    let core = stages.iter_mut().find(|s| s["name"] == "core").unwrap();
    core["executor"] = "slurm".into();
    let key = core["key"]
        .as_str()
        .unwrap()
        .trim_start_matches("blake3:")
        .to_string();
    std::fs::write(&path, serde_json::to_vec_pretty(&rec).unwrap()).unwrap();
    let slurm = dir.join(".tureen/slurm").join(key);
    std::fs::create_dir_all(&slurm).unwrap();
    std::fs::write(
        slurm.join("slurm-job.json"),
        r#"{"job_id": "4243", "job_name": "tureen-x-core", "attempt": 2,
            "submitted_at": 0, "finished": true, "previous_jobs": ["4242"]}"#,
    )
    .unwrap();
}

#[test]
fn the_report_of_a_recipe_run_is_one_self_contained_page_that_chromium_renders() {
    let dir = tempfile::tempdir().unwrap();
    recipe::run(dir.path(), &recipe::full(3));
    pretend_core_ran_on_slurm(dir.path());
    let out = recipe::tureen(dir.path(), &["report", "-o", "report.html"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", recipe::log(&out));
    let page = std::fs::read_to_string(dir.path().join("report.html")).unwrap();
    let (_, rec) = record(dir.path());

    // Nothing to fetch: no script, stylesheet, image or font from anywhere.
    for banned in [
        "<script",
        "<link",
        "src=",
        "href=\"http",
        "url(http",
        "@import",
        "@font-face",
    ] {
        assert!(!page.contains(banned), "the page contains `{banned}`");
    }
    assert!(page.contains("default-src 'none'"));
    // The DAG (one box per stage), then the chart.
    assert_eq!(page.matches("<svg").count(), 2, "the DAG and the curves");
    let stages = rec["stages"].as_array().unwrap();
    assert!(page.matches("<rect x=").count() >= stages.len());
    // The stage table: every stage with its key and output digests, and the Slurm ids.
    for s in stages {
        let name = s["name"].as_str().unwrap();
        assert!(
            page.contains(&format!("<td><code>{name}</code></td>")),
            "no row for {name}"
        );
        let key = s["key"].as_str().unwrap();
        assert!(
            page.contains(&format!("title=\"{key}\"")),
            "no key for {name}"
        );
    }
    let core_final = stage(&rec, "core")["outputs"]["final"]["digest"]
        .as_str()
        .unwrap();
    assert!(page.contains(core_final), "core's final digest");
    assert!(page.contains("slurm job 4242, 4243"), "the Slurm job ids");
    // The evaluations with their standard error, the soup's ingredients by digest and
    // weight, the params, versions and host.
    for eval in [
        "eval_core",
        "eval_soup",
        "zeroshot@core-1",
        "zeroshot@rewind-0",
    ] {
        assert!(
            page.contains(&format!("<td><code>{eval}</code></td><td><code>")),
            "no eval row {eval}"
        );
    }
    assert!(page.contains(" ± "), "top-1 with its standard error");
    let rewind_final = stage(&rec, "rewind")["outputs"]["final"]["digest"]
        .as_str()
        .unwrap();
    assert!(page.contains("<td>core.final</td>") && page.contains("<td>rewind.final</td>"));
    assert!(page.contains(&format!("title=\"{rewind_final}\"")));
    assert!(
        page.contains("<td class=\"num\">50.0</td>"),
        "equal shares of a uniform soup"
    );
    assert!(page.contains("<code>intervals</code>"));
    for tool in ["tureen.git", "tureen.build", "libtorch", "kind:train"] {
        assert!(
            page.contains(&format!("<td>{tool}</td>")),
            "no version of {tool}"
        );
    }
    assert!(page.contains(rec["host"].as_str().unwrap()));

    match chromium() {
        Some(browser) => render_in_chromium(&browser, dir.path()),
        None => eprintln!("skipped the browser check: no chromium on PATH (scripts/setup.sh installs it on Debian)"),
    }
}

fn chromium() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .flat_map(|d| ["chromium", "chromium-browser"].map(|n| d.join(n)))
        .find(|p| p.is_file())
}

fn render_in_chromium(browser: &Path, dir: &Path) {
    let shot = dir.join("report.png");
    let url = format!("file://{}", dir.join("report.html").display());
    let out = Command::new(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
        ])
        .args([
            "--enable-logging=stderr",
            "--v=0",
            "--window-size=1400,5200",
        ])
        .arg(format!(
            "--user-data-dir={}",
            dir.join("chromium-profile").display()
        ))
        .arg(format!("--screenshot={}", shot.display()))
        .arg(&url)
        .output()
        .expect("chromium runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "chromium failed:\n{stderr}");
    let console: Vec<&str> = stderr.lines().filter(|l| l.contains(":CONSOLE")).collect();
    assert!(
        console.is_empty(),
        "the page logged to the console:\n{}",
        console.join("\n")
    );

    let img = image::open(&shot).expect("a PNG screenshot").to_rgb8();
    let count = |rgb: [u8; 3]| img.pixels().filter(|p| p.0 == rgb).count();
    // The chart's curves (core blue, rewind orange), the table headers, the DAG's boxes.
    let core_blue = count([31, 119, 180]);
    let rewind_orange = count([255, 127, 14]);
    let header = count([0xe4, 0xeb, 0xf5]);
    assert!(
        core_blue > 300,
        "core's curve is not on the screenshot ({core_blue} px)"
    );
    assert!(
        rewind_orange > 100,
        "the rewind's curve is not on the screenshot ({rewind_orange} px)"
    );
    assert!(
        header > 5000,
        "the tables are not on the screenshot ({header} px of header)"
    );
}
