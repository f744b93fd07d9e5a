//! The example pipelines under `pipelines/` that need no GPU run end to end.

mod engine_common;

use std::path::Path;

use engine_common::{last_statuses, Workspace};

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap().flatten() {
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            if entry.file_name() != "build" {
                copy_dir(&entry.path(), &target);
            }
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

#[test]
fn command_soup_pipeline_runs_from_a_clean_checkout_and_replays_bit_exactly() {
    let ws = Workspace::new();
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("pipelines");
    std::fs::copy(
        repo.join("command-soup.yaml"),
        ws.path().join("command-soup.yaml"),
    )
    .unwrap();
    copy_dir(&repo.join("command-soup"), &ws.path().join("command-soup"));

    ws.ok(&["run", "command-soup.yaml"]);
    let report = ws.read("command-soup/build/soup-check.txt");
    assert_eq!(
        report.matches("\nok\n").count() + usize::from(report.starts_with("ok\n")),
        2,
        "{report}"
    );
    for soup in ["uniform", "weighted", "with_dir"] {
        assert!(
            ws.exists(&format!("outputs/{soup}/soup.safetensors")),
            "{soup} not materialized"
        );
    }
    assert!(last_statuses(&ws.store()).iter().all(|(_, s)| s == "ran"));

    ws.ok(&["run", "command-soup.yaml"]);
    assert!(last_statuses(&ws.store())
        .iter()
        .all(|(_, s)| s == "cached"));

    let replay = ws.ok(&["replay", "latest"]);
    assert!(replay.contains("8 same, 0 diverged"), "{replay}");
}
