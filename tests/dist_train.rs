//! Data-parallel training with ranks launched as torchrun would: this test writes a
//! stage job and starts `tureen-torch stage-exec` once per rank with `RANK`,
//! `WORLD_SIZE`, `LOCAL_RANK`, `MASTER_ADDR` and `MASTER_PORT` (gloo on the CPU).
//!
//! - 2 ranks end with the weights and per-step losses of 1 process whose micro-batches
//!   are the ranks' shares; the same 2-rank run twice gives the same bytes.
//! - A rank killed mid-interval fails the other within the collective timeout, naming
//!   it; relaunched, the ranks resume from the last checkpoint and end with the bytes
//!   of an uninterrupted run. A rank that cannot reach rank 0 fails in bounded time.
//! - A rewind from a 2-rank run's checkpoint trains at 1 and at 3 ranks on the same
//!   recomputed schedule.

mod torch_common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Map, Value};
use tureen_artifacts::Store;
use tureen_engine::cache::OutputRecord;
use tureen_engine::job::{
    JobArtifact, JobInput, JobOutput, JobResult, JobRun, JobStage, JobStatus, StageJob,
};
use tureen_engine::kind::Runner;
use tureen_engine::key::{Fingerprint, InputDigests};
use tureen_torch::model::MlpKind;

/// A CLIP small enough that 3 ranks train it in seconds on 2 cores.
fn tiny_model() -> Value {
    serde_json::to_value(torch_common::tiny_clip(1, 1, MlpKind::Conv1x1, 2, 0.2)).unwrap()
}

/// A `train` stage on synthetic data: `intervals` of 3 steps at batch 12.
fn train_params(intervals: u64) -> Map<String, Value> {
    let v = json!({
        "model": tiny_model(),
        "data": "synthetic",
        "batch_size": 12,
        "samples_per_interval": 36,
        "intervals": intervals,
        "lr": 2e-3,
        "warmup": 2,
        "grad_clip_norm": 1.0,
        "seed": 5,
        "threads": 1,
        "log_every": 1,
        "collective_timeout_s": 20.0,
        "rendezvous_timeout_s": 30.0,
    });
    v.as_object().unwrap().clone()
}

/// A stage job in `dir` (its log and result there) on the store `store`. Its key is
/// its own (named after `dir`), so jobs with the same params sharing a store do not
/// hit each other's cache entries.
struct Job {
    dir: PathBuf,
    store: PathBuf,
    job: StageJob,
}

impl Job {
    fn new(
        dir: &Path,
        kind: &str,
        params: Map<String, Value>,
        inputs: BTreeMap<String, JobInput>,
    ) -> Job {
        Job::in_store(dir, &dir.join("store"), kind, params, inputs)
    }

    fn in_store(
        dir: &Path,
        store: &Path,
        kind: &str,
        params: Map<String, Value>,
        inputs: BTreeMap<String, JobInput>,
    ) -> Job {
        std::fs::create_dir_all(dir).unwrap();
        let digests = inputs
            .iter()
            .map(|(k, v)| {
                let d = match v {
                    JobInput::One(a) => InputDigests::One(a.digest),
                    JobInput::Series(s) => {
                        InputDigests::Series(s.iter().map(|a| a.digest).collect())
                    }
                };
                (k.clone(), d)
            })
            .collect();
        let fingerprint = Fingerprint {
            format: 1,
            kind: kind.into(),
            code_version: format!("test {}", dir.display()),
            params: params.clone(),
            inputs: digests,
            deps: Vec::new(),
            env: BTreeMap::new(),
            world: 1,
        };
        let stage = JobStage {
            name: "core".into(),
            key: fingerprint.key(),
            fingerprint,
            runner: Runner::Worker("tureen-torch".into()),
            inputs,
            outputs: vec![
                JobOutput {
                    name: "checkpoints".into(),
                    series: true,
                },
                JobOutput {
                    name: "final".into(),
                    series: false,
                },
            ],
            attempts: 1,
            force: false,
        };
        let run = JobRun {
            run_id: "test",
            run_dir: dir,
            store,
            workspace: dir,
            use_cache: true,
            tensorboard: false,
        };
        let job = StageJob::new(stage, &run);
        job.write(&dir.join("core.job.json")).unwrap();
        Job {
            dir: dir.to_path_buf(),
            store: store.to_path_buf(),
            job,
        }
    }

    fn path(&self) -> PathBuf {
        self.dir.join("core.job.json")
    }

    /// Starts rank `rank` of `world` (`world` 1: a plain single process).
    fn spawn(&self, rank: u32, world: u32, port: u16) -> Child {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_tureen-torch"));
        cmd.args(["stage-exec", "--job"])
            .arg(self.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        for v in [
            "RANK",
            "WORLD_SIZE",
            "LOCAL_RANK",
            "MASTER_ADDR",
            "MASTER_PORT",
            "SLURM_NTASKS",
            "SLURM_JOB_ID",
        ] {
            cmd.env_remove(v);
        }
        if world > 1 {
            cmd.env("RANK", rank.to_string())
                .env("WORLD_SIZE", world.to_string())
                .env("LOCAL_RANK", rank.to_string())
                .env("MASTER_ADDR", "127.0.0.1")
                .env("MASTER_PORT", port.to_string());
        }
        cmd.spawn().expect("start tureen-torch")
    }

    /// Runs all `world` ranks to the end; rank 0's result.
    fn run(&self, world: u32) -> JobResult {
        let port = free_port();
        let mut children: Vec<Child> = (0..world).map(|r| self.spawn(r, world, port)).collect();
        for c in &mut children {
            wait_within(c, Duration::from_secs(240));
        }
        self.result(0)
    }

    fn result(&self, rank: u32) -> JobResult {
        let name = match rank {
            0 => "core.job.result.json".to_string(),
            r => format!("core.job.result.rank{r}.json"),
        };
        let bytes = std::fs::read(self.dir.join(&name))
            .unwrap_or_else(|e| panic!("{name}: {e}; log:\n{}", self.log(rank)));
        serde_json::from_slice(&bytes).unwrap()
    }

    fn log(&self, rank: u32) -> String {
        let name = match rank {
            0 => "core.log".to_string(),
            r => format!("core.rank{r}.log"),
        };
        std::fs::read_to_string(self.dir.join(name)).unwrap_or_default()
    }

    /// The bytes of every checkpoint's weights and of `final`.
    fn weights(&self, result: &JobResult) -> (Vec<Vec<u8>>, Vec<u8>) {
        assert_eq!(
            result.status,
            JobStatus::Ran,
            "{:?}\n{}",
            result.error,
            self.log(0)
        );
        let store = Store::open(&self.store).unwrap();
        let checkpoints = result.outputs["checkpoints"]
            .artifacts()
            .iter()
            .map(|a| {
                let dir = self.dir.join(format!("ckpt-{}", &a.digest.to_hex()[..12]));
                if !dir.exists() {
                    store.materialize(&a.digest, &dir).unwrap();
                }
                std::fs::read(dir.join("model.safetensors")).unwrap()
            })
            .collect();
        let final_ = match &result.outputs["final"] {
            OutputRecord::One(a) => std::fs::read(store.object_path(&a.digest)).unwrap(),
            other => panic!("final: {other:?}"),
        };
        (checkpoints, final_)
    }

    /// (step, loss, lr) of every metrics record rank 0 wrote.
    fn steps(&self) -> Vec<(u64, f64, f64)> {
        std::fs::read_to_string(&self.job.metrics)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter_map(|r| Some((r["step"].as_u64()?, r["loss"].as_f64()?, r["lr"].as_f64()?)))
            .collect()
    }

    /// The committed checkpoints of a train result, as the `from` input of a rewind.
    fn checkpoint_input(&self, result: &JobResult, index: usize) -> JobInput {
        let a = &result.outputs["checkpoints"].artifacts()[index];
        JobInput::One(JobArtifact {
            digest: a.digest,
            tree: true,
            path: None,
        })
    }
}

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

fn wait_within(child: &mut Child, limit: Duration) -> std::process::ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            panic!("a rank did not finish within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn max_relative_difference(a: &[u8], b: &[u8]) -> f64 {
    let (ta, tb) = (tensors(a), tensors(b));
    assert_eq!(ta.len(), tb.len());
    ta.iter()
        .map(|(name, x)| {
            let y = &tb[name];
            let scale = x.abs().max().double_value(&[]).max(1e-12);
            (x - y).abs().max().double_value(&[]) / scale
        })
        .fold(0.0, f64::max)
}

fn tensors(bytes: &[u8]) -> BTreeMap<String, tch::Tensor> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.safetensors");
    std::fs::write(&path, bytes).unwrap();
    tch::Tensor::read_safetensors(&path)
        .unwrap()
        .into_iter()
        .collect()
}

#[test]
fn two_ranks_equal_one_process_with_their_shares_as_micro_batches() {
    let root = tempfile::tempdir().unwrap();
    let two = Job::new(
        &root.path().join("two"),
        "train",
        train_params(2),
        BTreeMap::new(),
    );
    let again = Job::new(
        &root.path().join("again"),
        "train",
        train_params(2),
        BTreeMap::new(),
    );
    let mut micro = train_params(2);
    micro.insert("micro_batch".into(), json!(6));
    let one = Job::new(&root.path().join("one"), "train", micro, BTreeMap::new());

    let (two_ckpts, two_final) = two.weights(&two.run(2));
    let (again_ckpts, again_final) = again.weights(&again.run(2));
    let (one_ckpts, one_final) = one.weights(&one.run(1));

    // Determinism: the same 2-rank run twice, the same bytes.
    assert_eq!(two_ckpts, again_ckpts);
    assert_eq!(two_final, again_final);
    // Equality with the single process: bit-identical here (the sums have two terms).
    assert_eq!(two_ckpts.len(), 2);
    let diff = max_relative_difference(&two_final, &one_final);
    assert!(diff < 1e-5, "max relative difference {diff:e}");
    assert_eq!(
        two_final, one_final,
        "bit-identical (max relative difference {diff:e})"
    );
    assert_eq!(two_ckpts, one_ckpts);
    let (a, b) = (two.steps(), one.steps());
    assert_eq!(a.len(), 6);
    for ((sa, la, ra), (sb, lb, rb)) in a.iter().zip(&b) {
        assert_eq!((sa, ra), (sb, rb));
        assert!(
            (la - lb).abs() <= 1e-6 * lb.abs(),
            "step {sa}: loss {la} vs {lb}"
        );
    }
    // Rank 1 kept its own log and touched no cache entry.
    assert!(two.log(1).contains("rank 1 of 2"), "{}", two.log(1));
    assert_eq!(two.result(1).status, JobStatus::Ran);
    assert!(two.result(1).outputs.is_empty());
}

/// Sends `SIGNAL` (a name `kill -s` takes) to `child`.
fn signal(child: &Child, name: &str) {
    let status = Command::new("kill")
        .args(["-s", name, &child.id().to_string()])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -s {name} {}", child.id());
}

#[test]
fn a_killed_rank_fails_the_other_naming_it_and_a_relaunch_resumes_to_the_same_bytes() {
    // Enough intervals after the first that rank 0 cannot finish while the test reacts.
    const INTERVALS: u64 = 6;
    let root = tempfile::tempdir().unwrap();
    let whole = Job::new(
        &root.path().join("whole"),
        "train",
        train_params(INTERVALS),
        BTreeMap::new(),
    );
    let (_, whole_final) = whole.weights(&whole.run(2));

    let job = Job::new(
        &root.path().join("killed"),
        "train",
        train_params(INTERVALS),
        BTreeMap::new(),
    );
    let port = free_port();
    let mut rank0 = job.spawn(0, 2, port);
    let mut rank1 = job.spawn(1, 2, port);
    // Freeze rank 1 once the first checkpoint is committed: from then on rank 0 can get
    // no further than its next collective, however fast the machine. Then kill it.
    let start = Instant::now();
    while !job.log(0).contains("checkpoint interval 1:") {
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "no checkpoint:\n{}",
            job.log(0)
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    signal(&rank1, "STOP");
    assert!(
        !job.log(0).contains(&format!("checkpoint interval {INTERVALS}:")),
        "rank 0 finished before rank 1 could be stopped:\n{}",
        job.log(0)
    );
    rank1.kill().unwrap();
    let killed_at = Instant::now();
    let status = wait_within(&mut rank0, Duration::from_secs(20));
    let _ = rank1.wait();
    assert!(!status.success(), "rank 0:\n{}", job.log(0));
    assert!(
        killed_at.elapsed() < Duration::from_secs(20),
        "{:?}",
        killed_at.elapsed()
    );
    let failed = job.result(0);
    assert_eq!(failed.status, JobStatus::Failed);
    let error = failed.error.unwrap_or_default();
    assert!(error.contains("rank 0 of 2"), "{error}");
    assert!(error.contains("peer rank 1 has stopped"), "{error}");

    // Relaunched, both resume from what rank 0 committed and end as if never stopped.
    let resumed = job.run(2);
    assert!(
        resumed.resumed_from >= 1,
        "resumed from {}",
        resumed.resumed_from
    );
    assert!(
        job.log(1).contains("resuming from committed checkpoint"),
        "{}",
        job.log(1)
    );
    let (_, resumed_final) = job.weights(&resumed);
    assert_eq!(resumed_final, whole_final);
}

#[test]
fn a_rank_that_cannot_reach_rank_0_fails_in_bounded_time() {
    let root = tempfile::tempdir().unwrap();
    let mut params = train_params(1);
    params.insert("rendezvous_timeout_s".into(), json!(3.0));
    let job = Job::new(root.path(), "train", params, BTreeMap::new());
    let start = Instant::now();
    let mut rank1 = job.spawn(1, 2, free_port());
    let status = wait_within(&mut rank1, Duration::from_secs(30));
    assert!(!status.success());
    assert!(
        start.elapsed() < Duration::from_secs(20),
        "{:?}",
        start.elapsed()
    );
    let error = job.result(1).error.unwrap_or_default();
    assert!(error.contains("rank 1 of 2"), "{error}");
    assert!(
        error.contains("cannot reach rank 0's store at 127.0.0.1:"),
        "{error}"
    );
}

#[test]
fn a_rewind_of_a_two_rank_run_follows_the_recomputed_schedule_at_one_and_three_ranks() {
    let root = tempfile::tempdir().unwrap();
    let core = Job::new(
        &root.path().join("core"),
        "train",
        train_params(3),
        BTreeMap::new(),
    );
    let core_result = core.run(2);
    core.weights(&core_result);

    // From the checkpoint after interval 2, at batch 18 (divisible by 1, 2 and 3). One
    // process in micro-batches of 6 draws the drop-path masks the 3 ranks draw.
    let rewind = |name: &str, world: u32| {
        let mut p = train_params(3);
        p.remove("model");
        p.insert("batch_size".into(), json!(18));
        p.insert("lr".into(), json!(4e-3));
        if world == 1 {
            p.insert("micro_batch".into(), json!(6));
        }
        let from = BTreeMap::from([("from".to_string(), core.checkpoint_input(&core_result, 1))]);
        let job = Job::in_store(&root.path().join(name), &core.store, "rewind", p, from);
        let result = job.run(world);
        let (_, weights) = job.weights(&result);
        (job.steps(), weights)
    };
    let (one, one_weights) = rewind("one", 1);
    let (three, three_weights) = rewind("three", 3);
    // 36 samples per interval at batch 18: 2 steps, the schedule entered at 2 x 2.
    let steps: Vec<u64> = one.iter().map(|s| s.0).collect();
    assert_eq!(steps, vec![5, 6]);
    let schedule = tureen_torch::train::Schedule {
        base_lr: 4e-3,
        warmup_steps: 2,
        total_steps: 6,
    };
    for (&(step, loss, lr), &(s3, l3, lr3)) in one.iter().zip(&three) {
        assert_eq!((step, lr), (s3, lr3));
        assert_eq!(lr, schedule.lr(step - 1), "step {step}");
        assert!(
            (loss - l3).abs() <= 1e-5 * loss.abs(),
            "step {step}: {loss} vs {l3}"
        );
    }
    let diff = max_relative_difference(&one_weights, &three_weights);
    assert!(
        diff < 1e-4,
        "1 vs 3 ranks: max relative difference {diff:e}"
    );
}
