//! The seam to the Slurm executor: a stage with `executor: slurm` is written as a fully
//! resolved job file that `tureen stage-exec` executes on its own, against the shared
//! store; its result lands in the action cache, and cached stages are never submitted.

mod engine_common;

use engine_common::{both, status_of, Workspace};

#[test]
fn a_slurm_stage_job_file_runs_with_stage_exec_and_is_then_cached() {
    let ws = Workspace::new();
    // The real `sbatch`, pointed at an empty cluster configuration, refuses the job at
    // once (and where Slurm is not installed, running it fails): either way nothing
    // reaches a cluster and no fake `sbatch` stands in for the real one. (A missing file
    // would make sbatch retry for a minute.)
    let no_cluster = ws.path().join("no-cluster.conf");
    std::fs::write(&no_cluster, "").unwrap();
    ws.write(
        "p.yaml",
        r#"
tureen: 1
params: {n: 7}
stages:
  local:
    kind: command
    cmd: echo ${params.n} > n.txt
    outs: [n.txt]
  remote:
    kind: command
    executor: slurm
    resources: {cpus: 1, time: "00:05:00"}
    cmd: echo "remote saw $(cat ${inputs.n})" > remote.txt
    inputs: {n: local.n.txt}
    outs: [remote.txt]
"#,
    );

    let out = ws
        .cmd(&["run", "p.yaml", "--plain"])
        .env("SLURM_CONF", &no_cluster)
        .output()
        .unwrap();
    let text = both(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("sbatch"),
        "the sbatch failure should be shown:\n{text}"
    );
    assert_eq!(status_of(&ws.store(), "local"), "ran");
    assert_eq!(status_of(&ws.store(), "remote"), "failed");

    // The job file carries everything: run it as a compute node would.
    let slurm_dir = ws.store().join("slurm");
    let key_dir = std::fs::read_dir(&slurm_dir)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let job = key_dir.join("job.json");
    let spec: serde_json::Value = serde_json::from_slice(&std::fs::read(&job).unwrap()).unwrap();
    assert_eq!(spec["stage"], "remote");
    assert!(spec["inputs"]["n"]["digest"]
        .as_str()
        .unwrap()
        .starts_with("blake3:"));
    let exec = ws
        .cmd(&["stage-exec", "--job", job.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(exec.status.success(), "{}", both(&exec));
    let result: serde_json::Value =
        serde_json::from_slice(&std::fs::read(key_dir.join("job.result.json")).unwrap()).unwrap();
    assert_eq!(result["status"], "ran");

    // Now cached: the failing sbatch is never called.
    let out = ws
        .cmd(&["run", "p.yaml", "--plain"])
        .env("SLURM_CONF", &no_cluster)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", both(&out));
    assert_eq!(status_of(&ws.store(), "remote"), "cached");
    assert_eq!(ws.read("remote.txt"), "remote saw 7\n");
}
