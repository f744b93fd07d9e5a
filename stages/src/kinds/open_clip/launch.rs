//! How `open_clip_train.main` is started: one local process, or inside a Slurm
//! allocation one process per GPU on every node under `srun`, with the rendezvous
//! variables open_clip expects but does not set (`MASTER_ADDR`, `MASTER_PORT`).

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

/// Decides how to launch for `gpus` GPUs visible to this stage on its node. Outside
/// Slurm (`SLURM_JOB_ID` unset): one process. Inside an allocation of N nodes: `srun`
/// with one task per GPU (at least one) on each of the N nodes, as open_clip expects
/// (it reads its rank and world from `SLURM_PROCID`, `SLURM_NTASKS`, `SLURM_LOCALID`);
/// `MASTER_ADDR` is the allocation's first host (where rank 0 runs) and `MASTER_PORT`
/// derived from the job id, so concurrent jobs on one node do not collide.
pub fn launch(env: &dyn Environment, gpus: usize) -> anyhow::Result<Launch> {
    let Some(job) = env.var("SLURM_JOB_ID") else {
        return Ok(Launch {
            prefix: Vec::new(),
            env: BTreeMap::new(),
        });
    };
    // The job's node count, not the step's: tureen's own step spans the first node only.
    let nodes = match env
        .var("SLURM_JOB_NUM_NODES")
        .or_else(|| env.var("SLURM_NNODES"))
    {
        None => 1,
        Some(n) => n.parse::<usize>().ok().filter(|&n| n >= 1).ok_or_else(|| {
            anyhow::anyhow!(
                "inside Slurm job {job}: SLURM_JOB_NUM_NODES is {n:?}, not a node count"
            )
        })?,
    };
    let nodelist = env
        .var("SLURM_JOB_NODELIST")
        .or_else(|| env.var("SLURM_NODELIST"))
        .ok_or_else(|| {
            anyhow::anyhow!("inside Slurm job {job} but SLURM_JOB_NODELIST is not set")
        })?;
    let hosts = env.hostnames(&nodelist)?;
    anyhow::ensure!(
        hosts.len() == nodes,
        "Slurm job {job} has {nodes} node(s) but `scontrol show hostnames {nodelist}` listed {}: {}",
        hosts.len(),
        hosts.join(", ")
    );
    let per_node = gpus.max(1);
    Ok(Launch {
        prefix: vec![
            "srun".into(),
            // The stage's own step holds the first node's resources; this one shares them.
            "--overlap".into(),
            format!("--nodes={nodes}"),
            format!("--ntasks={}", nodes * per_node),
            format!("--ntasks-per-node={per_node}"),
            "--kill-on-bad-exit=1".into(),
        ],
        env: BTreeMap::from([
            ("MASTER_ADDR".to_string(), hosts[0].clone()),
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
            Ok(match nodelist {
                "gpu07" => vec!["gpu07".into()],
                "gpu[07-08]" => vec!["gpu07".into(), "gpu08".into()],
                other => panic!("unexpected node list {other}"),
            })
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
            ("SLURM_JOB_NODELIST", "gpu07"),
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
    fn several_nodes_run_one_task_per_gpu_on_every_node_with_rank_0_on_the_first() {
        let env = Fake(BTreeMap::from([
            ("SLURM_JOB_ID", "7"),
            ("SLURM_JOB_NUM_NODES", "2"),
            // The step tureen runs in spans one node; the job's count is the one that counts.
            ("SLURM_NNODES", "1"),
            ("SLURM_JOB_NODELIST", "gpu[07-08]"),
        ]));
        let l = launch(&env, 8).unwrap();
        assert_eq!(
            l.prefix,
            [
                "srun",
                "--overlap",
                "--nodes=2",
                "--ntasks=16",
                "--ntasks-per-node=8",
                "--kill-on-bad-exit=1"
            ]
        );
        assert_eq!(l.env["MASTER_ADDR"], "gpu07");
        // CPU nodes: one process on each.
        let cpu = launch(&env, 0).unwrap();
        assert!(cpu.prefix.contains(&"--ntasks=2".to_string()), "{cpu:?}");
        assert!(
            cpu.prefix.contains(&"--ntasks-per-node=1".to_string()),
            "{cpu:?}"
        );
    }

    #[test]
    fn a_node_count_that_disagrees_with_the_node_list_is_an_error() {
        let env = Fake(BTreeMap::from([
            ("SLURM_JOB_ID", "7"),
            ("SLURM_JOB_NUM_NODES", "3"),
            ("SLURM_JOB_NODELIST", "gpu[07-08]"),
        ]));
        let e = launch(&env, 8).unwrap_err().to_string();
        assert!(e.contains("3 node(s)") && e.contains("gpu07, gpu08"), "{e}");
        let env = Fake(BTreeMap::from([
            ("SLURM_JOB_ID", "7"),
            ("SLURM_JOB_NUM_NODES", "two"),
            ("SLURM_JOB_NODELIST", "gpu[07-08]"),
        ]));
        let e = launch(&env, 8).unwrap_err().to_string();
        assert!(e.contains("\"two\""), "{e}");
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
