//! Conventions (issue 13, item 8): `--version` with the git commit, build profile and
//! libtorch version, recorded in run records; shell completions and man pages; `tureen
//! init` writing a commented starter pipeline that runs; `show` defaulting to `latest`,
//! and `latest~1`.

mod engine_common;

use engine_common::Workspace;

#[test]
fn version_names_the_commit_profile_and_libtorch_and_runs_record_them() {
    let ws = Workspace::new();
    let version = ws.ok(&["--version"]);
    let git = std::process::Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    let commit = git.unwrap_or_else(|| "unknown".into());
    assert!(
        version.starts_with(&format!("tureen {}", env!("CARGO_PKG_VERSION"))),
        "{version}"
    );
    assert!(version.contains(&format!("git {commit}")), "{version}");
    assert!(
        version.contains("release build") || version.contains("debug build"),
        "{version}"
    );
    assert!(version.contains("libtorch "), "{version}");

    ws.write(
        "p.yaml",
        "tureen: 1\nstages:\n  a:\n    kind: command\n    cmd: 'true'\n",
    );
    ws.ok(&["run", "p.yaml"]);
    let id = engine_common::runs(&ws.store())[0].clone();
    let tools = &engine_common::record(&ws.store(), &id)["tools"];
    assert_eq!(tools["tureen.git"], commit.as_str());
    assert!(version.contains(&format!("libtorch {}", tools["libtorch"].as_str().unwrap())));
    assert!(tools["tureen.build"].is_string());
}

#[test]
fn completions_and_man_pages_cover_every_subcommand() {
    let ws = Workspace::new();
    for shell in ["bash", "zsh", "fish"] {
        let script = ws.ok(&["completions", shell]);
        for sub in ["run", "diff", "report", "logs", "status"] {
            assert!(script.contains(sub), "{shell} completions lack {sub}");
        }
    }
    let page = ws.ok(&["man"]);
    assert!(page.contains(".TH tureen 1"), "{page}");
    ws.ok(&["man", "-o", "man"]);
    for page in [
        "tureen.1",
        "tureen-run.1",
        "tureen-diff.1",
        "tureen-report.1",
    ] {
        assert!(ws.exists(&format!("man/{page}")), "no {page}");
    }
}

#[test]
fn init_writes_a_commented_starter_that_runs_and_is_not_overwritten() {
    let ws = Workspace::new();
    ws.ok(&["init"]);
    let text = ws.read("pipeline.yaml");
    assert!(
        text.lines()
            .filter(|l| l.trim_start().starts_with('#'))
            .count()
            > 20,
        "commented"
    );
    let run = ws.ok(&["run", "pipeline.yaml"]);
    assert!(run.contains("2 ran"), "{run}");
    assert_eq!(ws.read("build/lines.txt").trim(), "3");

    let again = ws.tureen(&["init"]);
    assert_eq!(again.status.code(), Some(1));
    assert!(engine_common::both(&again).contains("already exists"));

    // The commented-out recipe is a valid pipeline once uncommented.
    let uncommented: String = text
        .lines()
        .map(|l| {
            l.strip_prefix('#')
                .filter(|r| r.starts_with("  "))
                .unwrap_or(l)
        })
        .map(|l| format!("{l}\n"))
        .collect();
    ws.write("recipe.yaml", &uncommented);
    let dag = ws.ok(&["dag", "recipe.yaml"]);
    for stage in [
        "core (train)",
        "rewind (rewind)",
        "soup (soup)",
        "eval_soup (eval)",
    ] {
        assert!(dag.contains(stage), "{dag}");
    }
    ws.ok(&["plan", "recipe.yaml"]);
}

#[test]
fn show_defaults_to_the_latest_run_and_latest_tilde_goes_back() {
    let ws = Workspace::new();
    ws.write(
        "p.yaml",
        "tureen: 1\nparams: {n: 1}\nstages:\n  a:\n    kind: command\n    cmd: 'true'\n",
    );
    ws.ok(&["run", "p.yaml"]);
    ws.ok(&["run", "p.yaml", "-P", "n=2"]);
    let ids = engine_common::runs(&ws.store());
    assert!(ws
        .ok(&["show"])
        .starts_with(&format!("run       {}", ids[0])));
    assert!(ws
        .ok(&["show", "latest~1"])
        .starts_with(&format!("run       {}", ids[1])));
    let out = ws.tureen(&["show", "latest~5"]);
    assert!(engine_common::both(&out).contains("only 2 run(s)"));
}
