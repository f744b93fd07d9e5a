//! `executor: slurm` end to end: the `tureen` binary against the real Slurm cluster that
//! `scripts/slurm/up.sh` starts (two slurmd on this host; no stand-in `sbatch` anywhere).
//!
//! The cluster is found through `TUREEN_TEST_SLURM_CONF` (its slurm.conf), which
//! `scripts/test.sh` exports after starting it. Without it these tests fail under CI
//! (`CI=true`) and are skipped, with a note, elsewhere. To run them by hand:
//!
//! ```sh
//! scripts/slurm/up.sh && . /tmp/tureen-slurm/env
//! cargo test --release --test slurm
//! ```

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use tureen_engine::slurm::JobRecord;

mod common;

/// The test cluster's slurm.conf, or `None` (after saying so) outside CI.
fn cluster() -> Option<PathBuf> {
    match std::env::var_os("TUREEN_TEST_SLURM_CONF") {
        Some(conf) => Some(PathBuf::from(conf)),
        None if std::env::var("CI").is_ok_and(|v| v == "true") => panic!(
            "TUREEN_TEST_SLURM_CONF is not set under CI: scripts/test.sh must start the test cluster \
             (scripts/slurm/up.sh) and export it"
        ),
        None => {
            eprintln!("skipped (no cluster): run scripts/slurm/up.sh and `. /tmp/tureen-slurm/env` first");
            None
        }
    }
}

/// A pipeline directory with its own store.
struct Workspace {
    dir: tempfile::TempDir,
    conf: PathBuf,
}

impl Workspace {
    fn new(conf: &Path, pipeline: &str) -> Workspace {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("pipeline.yaml"), pipeline).unwrap();
        Workspace {
            dir,
            conf: conf.to_path_buf(),
        }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    fn store(&self) -> PathBuf {
        self.path(".tureen")
    }

    fn tureen(&self) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_tureen"));
        cmd.current_dir(self.dir.path())
            .env("SLURM_CONF", &self.conf)
            .arg("--store")
            .arg(self.store())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        cmd
    }

    fn spawn_run(&self) -> Child {
        self.tureen()
            .arg("run")
            .arg("pipeline.yaml")
            .spawn()
            .unwrap()
    }

    /// `tureen run pipeline.yaml`, killed if it takes more than two minutes.
    fn run(&self) -> Output {
        finish(self.spawn_run(), Duration::from_secs(120))
    }

    /// The Slurm directory of the (single) Slurm stage: `<store>/slurm/<key>/`.
    fn slurm_dirs(&self) -> Vec<PathBuf> {
        let Ok(entries) = std::fs::read_dir(self.store().join("slurm")) else {
            return Vec::new();
        };
        let mut dirs: Vec<PathBuf> = entries
            .map(|e| e.unwrap().path())
            .filter(|p| p.is_dir())
            .collect();
        dirs.sort();
        dirs
    }

    /// The job id recorded for the single Slurm stage, once there is one.
    fn recorded_job(&self) -> Option<(String, bool)> {
        let dir = self.slurm_dirs().into_iter().next()?;
        let record = JobRecord::load(&dir).ok()??;
        Some((record.job_id, record.finished))
    }

    /// Job logs (`slurm-<id>.log`) of the single Slurm stage: one per submitted job.
    fn job_logs(&self) -> Vec<PathBuf> {
        let Some(dir) = self.slurm_dirs().into_iter().next() else {
            return Vec::new();
        };
        let mut logs: Vec<PathBuf> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "log"))
            .collect();
        logs.sort();
        logs
    }

    /// Stage `name`'s record in the latest run, as `tureen show latest --json` prints it.
    fn latest_stage_record(&self, name: &str) -> serde_json::Value {
        let shown = self
            .tureen()
            .args(["show", "latest", "--json"])
            .output()
            .unwrap();
        assert!(shown.status.success(), "{}", stderr(&shown));
        let record: serde_json::Value = serde_json::from_slice(&shown.stdout).unwrap();
        common::stage_record(&record, name).clone()
    }

    fn slurm(&self, args: &[&str]) -> String {
        let out = Command::new(args[0])
            .args(&args[1..])
            .env("SLURM_CONF", &self.conf)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn job_state(&self, job_id: &str) -> String {
        let shown = self.slurm(&["scontrol", "show", "job", "-o", job_id]);
        shown
            .split_whitespace()
            .find_map(|t| t.strip_prefix("JobState="))
            .unwrap_or_else(|| panic!("no JobState in {shown}"))
            .to_string()
    }

    /// Waits (bounded) until the stage's job is recorded and RUNNING; returns its id.
    fn wait_running(&self, child: &mut Child) -> String {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                panic!("tureen exited ({status}) before its Slurm job ran");
            }
            if let Some((id, _)) = self.recorded_job() {
                if self.job_state(&id) == "RUNNING" {
                    return id;
                }
            }
            assert!(
                Instant::now() < deadline,
                "the Slurm job did not start within 60 s"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The line the cluster's jobcomp file has for `job_id` (waits for slurmctld to write it).
    fn jobcomp_line(&self, job_id: &str) -> String {
        let conf = std::fs::read_to_string(&self.conf).unwrap();
        let loc = conf
            .lines()
            .find_map(|l| l.strip_prefix("JobCompLoc="))
            .expect("JobCompLoc in slurm.conf");
        let needle = format!("JobId={job_id} ");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let text = std::fs::read_to_string(loc.trim()).unwrap_or_default();
            // The newest line for this id (ids restart when a cluster is set up afresh).
            if let Some(line) = text.lines().rev().find(|l| l.starts_with(&needle)) {
                return line.to_string();
            }
            assert!(
                Instant::now() < deadline,
                "job {job_id} never reached the jobcomp file {loc}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

/// Waits for `child`, killing it after `limit`; returns its output.
fn finish(mut child: Child, limit: Duration) -> Output {
    let deadline = Instant::now() + limit;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "tureen did not finish within {limit:?}; stderr:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Polling settings that keep the tests in seconds (defaults suit a real cluster).
const FAST: &str = "slurm:\n  poll_interval: 0.1\n  query_interval: 0.3\n  sentinel_grace: 1\n";

fn pipeline(stage: &str) -> String {
    format!("tureen: 1\n{FAST}stages:\n{stage}")
}

#[test]
fn slurm_stage_runs_through_sbatch_and_its_output_lands_in_the_store() {
    let Some(conf) = cluster() else { return };
    let ws = Workspace::new(
        &conf,
        &pipeline(
            "  hello:\n    kind: command\n    executor: slurm\n    cmd: echo \"hello from $SLURM_JOB_NAME\" > ${outs.greeting}\n    outs: {greeting: out/greeting.txt}\n",
        ),
    );
    let out = ws.run();
    assert!(out.status.success(), "tureen run failed:\n{}", stderr(&out));

    let (job_id, finished) = ws.recorded_job().expect("a Slurm job record");
    assert!(finished);
    let greeting = std::fs::read_to_string(ws.path("out/greeting.txt")).unwrap();
    assert!(
        greeting.starts_with("hello from tureen-") && greeting.trim_end().ends_with("-hello"),
        "{greeting:?}"
    );
    // The job really ran under Slurm, under the run's name, and completed.
    let line = ws.jobcomp_line(&job_id);
    assert!(line.contains("JobState=COMPLETED"), "{line}");
    assert!(
        line.contains(&format!(
            "Name={}",
            greeting.trim_end().trim_start_matches("hello from ")
        )),
        "{line}"
    );
    // The output is in the store: some object holds exactly these bytes.
    let stored = walk(&ws.store().join("objects"))
        .into_iter()
        .any(|p| std::fs::read(&p).unwrap() == greeting.as_bytes());
    assert!(stored, "no store object holds the stage's output");

    // Cached now: a second run submits nothing.
    let logs = ws.job_logs();
    let again = ws.run();
    assert!(
        again.status.success(),
        "second run failed:\n{}",
        stderr(&again)
    );
    assert_eq!(
        ws.recorded_job().unwrap().0,
        job_id,
        "the cached stage was submitted again"
    );
    assert_eq!(ws.job_logs(), logs);
}

#[test]
fn ctrl_c_cancels_the_slurm_job() {
    let Some(conf) = cluster() else { return };
    let ws = Workspace::new(
        &conf,
        &pipeline("  long:\n    kind: command\n    executor: slurm\n    cmd: sleep 300; echo late > ${outs.o}\n    outs: {o: o.txt}\n"),
    );
    let mut child = ws.spawn_run();
    let job_id = ws.wait_running(&mut child);
    let started = Instant::now();
    let status = Command::new("kill")
        .arg("-INT")
        .arg(child.id().to_string())
        .status()
        .unwrap();
    assert!(status.success());
    let out = finish(child, Duration::from_secs(60));
    assert!(!out.status.success(), "an interrupted run must fail");
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "cancelling took {:?}",
        started.elapsed()
    );
    assert_eq!(ws.job_state(&job_id), "CANCELLED");
    let err = stderr(&out);
    assert!(
        err.contains(&job_id) && err.to_lowercase().contains("cancel"),
        "{err}"
    );
    assert!(!ws.path("o.txt").exists());
}

#[test]
fn job_cancelled_outside_tureen_fails_the_stage_with_a_clear_error() {
    let Some(conf) = cluster() else { return };
    let ws = Workspace::new(
        &conf,
        &pipeline(
            "  victim:\n    kind: command\n    executor: slurm\n    retries: 2\n    cmd: sleep 300; echo late > ${outs.o}\n    outs: {o: o.txt}\n",
        ),
    );
    let mut child = ws.spawn_run();
    let job_id = ws.wait_running(&mut child);
    ws.slurm(&["scancel", &job_id]);
    let out = finish(child, Duration::from_secs(60));
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains(&format!("Slurm job {job_id}")) && err.contains("cancelled outside tureen"),
        "{err}"
    );
    // Somebody chose to stop it: no retry was submitted.
    assert_eq!(ws.job_logs().len(), 1, "{:?}", ws.job_logs());
}

#[test]
fn failing_slurm_stage_is_retried_up_to_retries() {
    let Some(conf) = cluster() else { return };
    // Fails twice, then succeeds: `retries: 2` is just enough.
    let ws = Workspace::new(
        &conf,
        &pipeline(
            "  flaky:\n    kind: command\n    executor: slurm\n    retries: 2\n    cmd: echo try >> tries.txt; [ $(wc -l < tries.txt) -ge 3 ] && echo ok > ${outs.o}\n    outs: {o: o.txt}\n",
        ),
    );
    let out = ws.run();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        std::fs::read_to_string(ws.path("tries.txt"))
            .unwrap()
            .lines()
            .count(),
        3
    );
    assert_eq!(ws.job_logs().len(), 3, "one Slurm job per attempt");

    // Always fails: `retries: 1` means two attempts, then the run fails.
    let ws = Workspace::new(
        &conf,
        &pipeline(
            "  doomed:\n    kind: command\n    executor: slurm\n    retries: 1\n    cmd: echo try >> tries.txt; exit 7\n    outs: {o: o.txt}\n",
        ),
    );
    let out = ws.run();
    assert!(!out.status.success());
    assert_eq!(
        std::fs::read_to_string(ws.path("tries.txt"))
            .unwrap()
            .lines()
            .count(),
        2
    );
    assert_eq!(ws.job_logs().len(), 2);
    assert!(stderr(&out).contains("doomed"), "{}", stderr(&out));
}

#[test]
fn restarted_tureen_reattaches_to_its_running_job_instead_of_resubmitting() {
    let Some(conf) = cluster() else { return };
    let ws = Workspace::new(
        &conf,
        &pipeline("  steady:\n    kind: command\n    executor: slurm\n    cmd: sleep 4; echo done > ${outs.o}\n    outs: {o: o.txt}\n"),
    );
    let mut first = ws.spawn_run();
    let job_id = ws.wait_running(&mut first);
    // tureen dies hard (no chance to cancel anything); the job keeps running.
    first.kill().unwrap();
    first.wait().unwrap();
    assert_eq!(ws.recorded_job(), Some((job_id.clone(), false)));

    let out = ws.run();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(std::fs::read_to_string(ws.path("o.txt")).unwrap(), "done\n");
    assert_eq!(
        ws.recorded_job(),
        Some((job_id, true)),
        "a second job was submitted"
    );
    assert_eq!(ws.job_logs().len(), 1, "{:?}", ws.job_logs());
}

#[test]
fn gpu_stage_gets_a_gres_gpu() {
    let Some(conf) = cluster() else { return };
    let ws = Workspace::new(
        &conf,
        &pipeline(
            "  gpu:\n    kind: command\n    executor: slurm\n    resources: {gpus: 1}\n    cmd: echo \"$SLURM_JOB_GPUS|$CUDA_VISIBLE_DEVICES\" > ${outs.o}\n    outs: {o: gpus.txt}\n",
        ),
    );
    let out = ws.run();
    assert!(out.status.success(), "{}", stderr(&out));
    let (job_id, _) = ws.recorded_job().unwrap();
    let shown = ws.slurm(&["scontrol", "show", "job", "-d", &job_id]);
    assert!(shown.contains("TresPerNode=gres:gpu:1"), "{shown}");
    // The stage saw the GPU Slurm gave it.
    let seen = std::fs::read_to_string(ws.path("gpus.txt")).unwrap();
    let (job_gpus, visible) = seen.trim_end().split_once('|').unwrap();
    assert!(
        !job_gpus.is_empty() && job_gpus.bytes().all(|b| b.is_ascii_digit() || b == b','),
        "{seen:?}"
    );
    assert!(
        !visible.is_empty(),
        "CUDA_VISIBLE_DEVICES is empty in a GPU stage on Slurm: {seen:?}"
    );
}

/// A CLIP small enough that 2 ranks train it in seconds on 2 cores (tests/dist_pipeline.rs's).
const DIST_MODEL: &str = "{embed_dim: 16, init_logit_scale: 2.659260036932778, vision: {timm_model_name: null, depths: [1, 1], dims: [8, 16], mlp: conv1x1, mlp_ratio: 2, kernel_size: 7, ls_init_value: 0.5, norm_eps: 1.0e-6, drop_path: 0.2, image_size: 16, patch_size: 4, proj: linear, proj_bias: false}, text: {context_length: 8, vocab_size: 64, width: 16, heads: 2, layers: 1, mlp_ratio: 2, norm_eps: 1.0e-5}}";

/// A 2-rank gloo `train` stage (one node, two CPU tasks) run by `executor`.
fn two_rank_train(executor: &str) -> String {
    pipeline(&format!(
        "  core:\n    kind: train\n    executor: {executor}\n    params:\n      model: {DIST_MODEL}\n      batch_size: 12\n      data: synthetic\n      samples_per_interval: 36\n      intervals: 2\n      lr: 2.0e-3\n      warmup: 2\n      grad_clip_norm: 1.0\n      seed: 5\n      device: cpu\n      backend: gloo\n      threads: 1\n      log_every: 1\n      collective_timeout_s: 30.0\n      rendezvous_timeout_s: 60.0\n    resources: {{nodes: 1, tasks_per_node: 2}}\n"
    ))
}

#[test]
fn two_rank_train_stage_on_slurm_ends_with_the_local_two_rank_checkpoint() {
    let Some(conf) = cluster() else { return };
    let on_slurm = Workspace::new(&conf, &two_rank_train("slurm"));
    let out = finish(on_slurm.spawn_run(), Duration::from_secs(300));
    assert!(
        out.status.success(),
        "tureen run (slurm) failed:\n{}",
        stderr(&out)
    );
    let local = Workspace::new(&conf, &two_rank_train("local"));
    let out = finish(local.spawn_run(), Duration::from_secs(300));
    assert!(
        out.status.success(),
        "tureen run (local) failed:\n{}",
        stderr(&out)
    );

    // One job of two srun tasks (ranks) on the one node, both of which finished.
    let (job_id, finished) = on_slurm.recorded_job().expect("a Slurm job record");
    assert!(finished);
    let shown = on_slurm.slurm(&["scontrol", "show", "job", "-o", &job_id]);
    assert!(
        shown.contains("NumNodes=1 ") && shown.contains("NumTasks=2 "),
        "{shown}"
    );
    assert!(on_slurm
        .jobcomp_line(&job_id)
        .contains("JobState=COMPLETED"));
    let log = std::fs::read_to_string(&on_slurm.job_logs()[0]).unwrap();
    assert!(
        log.contains("rank 1 of 2"),
        "rank 1 did not run under srun:\n{log}"
    );

    let bytes = |ws: &Workspace| {
        let path = ws.path("outputs/core/final.safetensors");
        std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    };
    let (slurm_final, local_final) = (bytes(&on_slurm), bytes(&local));
    assert!(!slurm_final.is_empty());
    assert!(
        slurm_final == local_final,
        "the final checkpoint on Slurm differs from the local 2-rank launch's"
    );
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                files.push(p);
            }
        }
    }
    files
}

#[test]
fn bad_slurm_options_are_reported_with_file_line_and_column_before_anything_runs() {
    // Validation only: no cluster needed, nothing is submitted.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("pipeline.yaml"),
        "tureen: 1\nslurm: {partiton: gpu}\nstages:\n  s:\n    kind: command\n    executor: slurm\n    resources: {time: two hours}\n    cmd: echo hi > ${outs.o}\n    outs: {o: o.txt}\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_tureen"))
        .current_dir(dir.path())
        .args(["--store", ".tureen", "run", "pipeline.yaml"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("pipeline.yaml:2:8")
            && err.contains("slurm.partiton")
            && err.contains("partition"),
        "{err}"
    );
    assert!(
        err.contains("pipeline.yaml:7:23") && err.contains("`two hours` is not a Slurm time limit"),
        "{err}"
    );
    assert!(
        !dir.path().join(".tureen/slurm").exists(),
        "something was submitted"
    );
}

#[test]
fn open_clip_stage_trains_under_srun_on_slurm_and_its_checkpoints_land_in_the_store() {
    let Some(conf) = cluster() else { return };
    let Some(py) = common::venv_python("the open_clip Slurm test") else {
        return;
    };
    let ws = Workspace::new(
        &conf,
        &format!(
            "tureen: 1\n{FAST}params:\n  model: {}\nstages:\n{}",
            common::OPEN_CLIP_MODEL,
            common::open_clip_stages(&py, "    executor: slurm\n"),
        ),
    );
    let out = finish(ws.spawn_run(), Duration::from_secs(600));
    assert!(out.status.success(), "tureen run failed:\n{}", stderr(&out));

    let (job_id, finished) = ws.recorded_job().expect("a Slurm job record");
    assert!(finished);
    let line = ws.jobcomp_line(&job_id);
    assert!(line.contains("JobState=COMPLETED"), "{line}");
    // tureen launched open_clip under srun, and open_clip itself logged its training.
    let logs = ws.job_logs();
    assert_eq!(logs.len(), 1, "{logs:?}");
    let log = std::fs::read_to_string(&logs[0]).unwrap();
    assert!(
        log.contains("$ srun ") && log.contains("-m open_clip_train.main"),
        "no srun launch in the job log:\n{log}"
    );
    assert!(
        log.contains("Train Epoch: 1"),
        "no open_clip training lines:\n{log}"
    );

    let core = ws.latest_stage_record("core");
    let series = core["outputs"]["checkpoints"]["series"].as_array().unwrap();
    assert_eq!(series.len(), 2, "one checkpoint per epoch: {core}");
    let object = |digest: &serde_json::Value| {
        let hex = digest.as_str().unwrap().strip_prefix("blake3:").unwrap();
        ws.store().join("objects").join(&hex[..2]).join(&hex[2..])
    };
    for epoch in series {
        assert!(object(&epoch["digest"]).is_file(), "{epoch}");
    }
    let last = object(&series[1]["digest"]);
    let final_pt = object(&core["outputs"]["final"]["digest"]);
    assert_eq!(final_pt, last, "`final` is the last epoch");

    // The final checkpoint reads back as open_clip's torch.save file.
    let inspect = ws
        .tureen()
        .arg("inspect")
        .arg("--json")
        .arg(&final_pt)
        .output()
        .unwrap();
    assert!(
        inspect.status.success(),
        "tureen inspect: {}",
        stderr(&inspect)
    );
    let info: serde_json::Value = serde_json::from_slice(&inspect.stdout).unwrap();
    assert!(info["tensors"].as_u64().unwrap_or(0) > 0, "{info}");
    assert_eq!(info["torch"]["key"], "state_dict", "{info}");
}

#[test]
fn a_two_node_open_clip_stage_trains_one_world_across_both_nodes() {
    let Some(conf) = cluster() else { return };
    let Some(py) = common::venv_python("the two-node open_clip Slurm test") else {
        return;
    };
    // open_clip's own CPU runs under DDP need one change (tests/open_clip/cpu_ddp.py);
    // tureen launches it as it launches the real thing.
    let dir = tempfile::tempdir().unwrap();
    let wrapper = dir.path().join("python-cpu-ddp");
    let ddp = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/open_clip/cpu_ddp.py");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\nexec {} {} \"$@\"\n",
            py.display(),
            ddp.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(
        &wrapper,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let ranks = dir.path().join("ranks");
    std::fs::create_dir(&ranks).unwrap();
    let ws = Workspace::new(
        &conf,
        &format!(
            "tureen: 1\n{FAST}  partition: multi\nparams:\n  model: {}\nstages:\n{}",
            common::OPEN_CLIP_MODEL,
            common::open_clip_stages(
                &wrapper,
                &format!(
                    "    executor: slurm\n    resources: {{nodes: 2, cpus: 1}}\n    env: {{TUREEN_TEST_RANKS: {}}}\n",
                    ranks.display()
                )
            ),
        ),
    );
    let out = finish(ws.spawn_run(), Duration::from_secs(600));
    assert!(out.status.success(), "tureen run failed:\n{}", stderr(&out));

    // One job of two nodes; tureen's own task ran on the first, and launched one
    // open_clip rank on each node, which met at the first node.
    let (job_id, finished) = ws.recorded_job().expect("a Slurm job record");
    assert!(finished);
    let line = ws.jobcomp_line(&job_id);
    assert!(
        line.contains("JobState=COMPLETED") && line.contains("NodeCnt=2"),
        "{line}"
    );
    let logs = ws.job_logs();
    assert_eq!(logs.len(), 1, "{logs:?}");
    let log = std::fs::read_to_string(&logs[0]).unwrap();
    assert!(
        log.contains("$ srun --overlap --nodes=2 --ntasks=2 --ntasks-per-node=1"),
        "no two-node launch in the job log:\n{log}"
    );
    assert!(
        log.contains("Running in distributed mode")
            && log.contains("total 2.")
            && log.contains("Train Epoch: 1"),
        "open_clip did not train as a world of two:\n{log}"
    );
    let mut seen: Vec<serde_json::Value> = (0..2)
        .map(|r| {
            let path = ranks.join(format!("rank-{r}.json"));
            let text = std::fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("rank {r} did not report ({e}); job log:\n{log}"));
            serde_json::from_str(&text).unwrap()
        })
        .collect();
    seen.sort_by_key(|s| s["rank"].as_u64());
    for (r, s) in seen.iter().enumerate() {
        assert_eq!(s["rank"], r as u64, "{s}");
        assert_eq!(s["world"], 2, "{s}");
    }
    assert_ne!(
        seen[0]["node"], seen[1]["node"],
        "both ranks on one node: {seen:?}"
    );
    // Rank 0 runs on the allocation's first node, where MASTER_ADDR points.
    assert_eq!(seen[0]["node"], seen[0]["master_addr"], "{seen:?}");
    assert_eq!(seen[0]["master_addr"], seen[1]["master_addr"], "{seen:?}");

    // Rank 0 wrote a checkpoint per epoch; tureen committed both.
    let core = ws.latest_stage_record("core");
    let series = core["outputs"]["checkpoints"]["series"].as_array().unwrap();
    assert_eq!(series.len(), 2, "one checkpoint per epoch: {core}");
}
