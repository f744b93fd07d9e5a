//! How `open_clip_train.main` is started: one local process, or inside a Slurm
//! allocation one process per GPU under `srun`, with the rendezvous variables open_clip
//! expects but does not set (`MASTER_ADDR`, `MASTER_PORT`).

use std::collections::BTreeMap;

/// The program to run (before the python command line) and the variables to add.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Launch {
    /// Prepended to `python -m open_clip_train.main ...` (empty: run it directly).
    pub prefix: Vec<String>,
    /// Exported to the processes.
    pub env: BTreeMap<String, String>,
}

/// What the launcher needs to know about the environment.
pub trait Environment {
    /// A variable of this process's environment.
    fn var(&self, name: &str) -> Option<String>;
    /// `scontrol show hostnames <nodelist>`: the allocation's hosts, in order.
    fn hostnames(&self, nodelist: &str) -> anyhow::Result<Vec<String>>;
}

/// The real environment and `scontrol`.
pub struct System;

impl Environment for System {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok().filter(|v| !v.is_empty())
    }

    fn hostnames(&self, nodelist: &str) -> anyhow::Result<Vec<String>> {
        let out = std::process::Command::new("scontrol")
            .args(["show", "hostnames", nodelist])
            .output()
            .map_err(|e| anyhow::anyhow!("cannot run `scontrol show hostnames {nodelist}`: {e}"))?;
        anyhow::ensure!(
            out.status.success(),
            "`scontrol show hostnames {nodelist}` failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
        Ok(String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect())
    }
}

/// Decides how to launch for `gpus` GPUs visible to this stage. Outside Slurm
/// (`SLURM_JOB_ID` unset): one process. Inside an allocation: `srun` with one task per
/// GPU (at least one) on the node, `MASTER_ADDR` the allocation's first host and
/// `MASTER_PORT` derived from the job id, so concurrent jobs on one node do not collide.
pub fn launch(env: &dyn Environment, gpus: usize) -> anyhow::Result<Launch> {
    let Some(job) = env.var("SLURM_JOB_ID") else {
        return Ok(Launch {
            prefix: Vec::new(),
            env: BTreeMap::new(),
        });
    };
    let nodes: u64 = env
        .var("SLURM_JOB_NUM_NODES")
        .or_else(|| env.var("SLURM_NNODES"))
        .and_then(|n| n.parse().ok())
        .unwrap_or(1);
    anyhow::ensure!(
        nodes == 1,
        "an open_clip stage runs on one node (`resources.nodes: 1`); this allocation has {nodes}, and tureen starts one stage process per node"
    );
    let nodelist = env
        .var("SLURM_JOB_NODELIST")
        .or_else(|| env.var("SLURM_NODELIST"))
        .ok_or_else(|| {
            anyhow::anyhow!("inside Slurm job {job} but SLURM_JOB_NODELIST is not set")
        })?;
    let master = env
        .hostnames(&nodelist)?
        .into_iter()
        .next()
        .ok_or_else(|| anyhow::anyhow!("`scontrol show hostnames {nodelist}` listed no host"))?;
    let tasks = gpus.max(1);
    Ok(Launch {
        prefix: vec![
            "srun".into(),
            // The stage's own step holds the allocation's resources; this one shares them.
            "--overlap".into(),
            "--nodes=1".into(),
            format!("--ntasks={tasks}"),
            format!("--ntasks-per-node={tasks}"),
            "--kill-on-bad-exit=1".into(),
        ],
        env: BTreeMap::from([
            ("MASTER_ADDR".to_string(), master),
            ("MASTER_PORT".to_string(), master_port(&job).to_string()),
        ]),
    })
}

/// A port in 20000..=49999 from the job id (numeric ids map one to one for 30,000
/// consecutive jobs; other ids are hashed).
pub fn master_port(job: &str) -> u16 {
    let n: u64 = job.parse().unwrap_or_else(|_| {
        job.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
        })
    });
    20000 + (n % 30000) as u16
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fake(BTreeMap<&'static str, &'static str>);

    impl Environment for Fake {
        fn var(&self, name: &str) -> Option<String> {
            self.0.get(name).map(|v| v.to_string())
        }
        fn hostnames(&self, nodelist: &str) -> anyhow::Result<Vec<String>> {
            assert_eq!(nodelist, "gpu[07-08]");
            Ok(vec!["gpu07".into(), "gpu08".into()])
        }
    }

    #[test]
    fn outside_slurm_it_is_one_plain_process() {
        let l = launch(&Fake(BTreeMap::new()), 4).unwrap();
        assert!(l.prefix.is_empty() && l.env.is_empty());
    }

    #[test]
    fn inside_an_allocation_it_runs_one_task_per_gpu_under_srun() {
        let env = Fake(BTreeMap::from([
            ("SLURM_JOB_ID", "123456"),
            ("SLURM_JOB_NUM_NODES", "1"),
            ("SLURM_JOB_NODELIST", "gpu[07-08]"),
        ]));
        let l = launch(&env, 8).unwrap();
        assert_eq!(
            l.prefix,
            [
                "srun",
                "--overlap",
                "--nodes=1",
                "--ntasks=8",
                "--ntasks-per-node=8",
                "--kill-on-bad-exit=1"
            ]
        );
        assert_eq!(l.env["MASTER_ADDR"], "gpu07");
        assert_eq!(l.env["MASTER_PORT"], (20000 + 123456 % 30000).to_string());
        // CPU only: still one task under srun.
        assert!(launch(&env, 0)
            .unwrap()
            .prefix
            .contains(&"--ntasks=1".to_string()));
    }

    #[test]
    fn several_nodes_are_refused_with_the_reason() {
        let env = Fake(BTreeMap::from([
            ("SLURM_JOB_ID", "7"),
            ("SLURM_JOB_NUM_NODES", "2"),
            ("SLURM_JOB_NODELIST", "gpu[07-08]"),
        ]));
        let e = launch(&env, 8).unwrap_err().to_string();
        assert!(e.contains("one node"), "{e}");
    }

    #[test]
    fn ports_stay_in_range() {
        for job in ["0", "29999", "30000", "987654321", "abc"] {
            let p = master_port(job);
            assert!((20000..50000).contains(&p), "{job}: {p}");
        }
        assert_ne!(master_port("1"), master_port("2"));
    }
}
