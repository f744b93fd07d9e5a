//! Where the ranks of a stage meet, from the launcher's environment: torch's
//! `TUREEN_DIST_INIT` / `MASTER_ADDR` + `MASTER_PORT` (what torchrun sets), or under
//! `srun` the first host of the job's node list and a port derived from the job id.

use std::path::PathBuf;

use tureen_engine::kind::Rank;

/// The store the ranks rendezvous through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreAddress {
    /// A `TCPStore` that rank 0 serves on `port` and the others reach at `host:port`.
    Tcp {
        /// Rank 0's host, as the other ranks reach it.
        host: String,
        /// The port rank 0 listens on.
        port: u16,
    },
    /// A `FileStore` on a file every rank sees; it must not exist before the launch.
    File(PathBuf),
}

impl std::fmt::Display for StoreAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreAddress::Tcp { host, port } => write!(f, "tcp://{host}:{port}"),
            StoreAddress::File(p) => write!(f, "file://{}", p.display()),
        }
    }
}

/// This process's rank and where the ranks meet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendezvous {
    /// This process's rank (from the launcher's variables).
    pub rank: Rank,
    /// Where the ranks meet.
    pub store: StoreAddress,
}

/// Slurm ports derived from the job id fall in `[SLURM_PORT_BASE, +SLURM_PORT_SPAN)`,
/// below Linux's ephemeral range (32768+), so an outgoing connection never holds one.
const SLURM_PORT_BASE: u64 = 15000;
const SLURM_PORT_SPAN: u64 = 15000;

impl Rendezvous {
    /// From this process's environment; the Slurm node list is expanded with
    /// `scontrol show hostnames`.
    pub fn from_env(rank: Rank) -> Result<Rendezvous, String> {
        Rendezvous::from_vars(rank, |n| std::env::var(n).ok(), scontrol_hostnames)
    }

    /// In order: `TUREEN_DIST_INIT` (`tcp://HOST:PORT` or `file:///PATH`), then
    /// `MASTER_ADDR` and `MASTER_PORT`, then under Slurm (`SLURM_JOB_ID`) the first host
    /// of `SLURM_JOB_NODELIST` and port `15000 + job id mod 15000` (`MASTER_PORT`, when
    /// set, wins).
    pub fn from_vars(
        rank: Rank,
        var: impl Fn(&str) -> Option<String>,
        hostnames: impl Fn(&str) -> Result<Vec<String>, String>,
    ) -> Result<Rendezvous, String> {
        let store = match var("TUREEN_DIST_INIT") {
            Some(init) => parse_init(&init)?,
            None => {
                let port = var("MASTER_PORT")
                    .map(|p| parse_port("MASTER_PORT", &p))
                    .transpose()?;
                match (var("MASTER_ADDR"), port, var("SLURM_JOB_ID")) {
                    (Some(host), Some(port), _) => StoreAddress::Tcp { host, port },
                    (None, port, Some(job)) => slurm_master(&var, &hostnames, &job, port)?,
                    (Some(_), None, Some(job)) => slurm_master(&var, &hostnames, &job, None)?,
                    _ => {
                        return Err(format!(
                            "{rank}: MASTER_ADDR and MASTER_PORT must be set to the address and \
                             port rank 0 serves the rendezvous on (torchrun sets them), or \
                             TUREEN_DIST_INIT to tcp://HOST:PORT or file:///SHARED/PATH"
                        ))
                    }
                }
            }
        };
        Ok(Rendezvous { rank, store })
    }
}

fn parse_port(name: &str, value: &str) -> Result<u16, String> {
    match value.trim().parse::<u16>() {
        Ok(p) if p > 0 => Ok(p),
        _ => Err(format!(
            "{name}={value:?}: expected a port number (1-65535)"
        )),
    }
}

fn parse_init(init: &str) -> Result<StoreAddress, String> {
    let bad = |why: &str| format!("TUREEN_DIST_INIT={init:?}: {why}");
    if let Some(path) = init.strip_prefix("file://") {
        if !path.starts_with('/') {
            return Err(bad(
                "a file:// rendezvous needs an absolute path (file:///shared/x)",
            ));
        }
        return Ok(StoreAddress::File(PathBuf::from(path)));
    }
    let rest = init
        .strip_prefix("tcp://")
        .ok_or_else(|| bad("expected tcp://HOST:PORT or file:///PATH"))?;
    let (host, port) = rest
        .rsplit_once(':')
        .ok_or_else(|| bad("expected tcp://HOST:PORT"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return Err(bad("the host is empty"));
    }
    Ok(StoreAddress::Tcp {
        host: host.to_string(),
        port: parse_port("TUREEN_DIST_INIT", port)?,
    })
}

fn slurm_master(
    var: &impl Fn(&str) -> Option<String>,
    hostnames: &impl Fn(&str) -> Result<Vec<String>, String>,
    job: &str,
    port: Option<u16>,
) -> Result<StoreAddress, String> {
    let host = match var("MASTER_ADDR") {
        Some(h) => h,
        None => {
            let list = var("SLURM_JOB_NODELIST")
                .or_else(|| var("SLURM_NODELIST"))
                .ok_or(
                    "SLURM_JOB_ID is set but SLURM_JOB_NODELIST is not: cannot find rank 0's host",
                )?;
            hostnames(&list)?
                .into_iter()
                .next()
                .ok_or_else(|| format!("SLURM_JOB_NODELIST={list:?} names no host"))?
        }
    };
    let port = match port {
        Some(p) => p,
        None => {
            let id: u64 = job
                .trim()
                .parse()
                .map_err(|_| format!("SLURM_JOB_ID={job:?}: expected a number"))?;
            (SLURM_PORT_BASE + id % SLURM_PORT_SPAN) as u16
        }
    };
    Ok(StoreAddress::Tcp { host, port })
}

/// `scontrol show hostnames LIST`: Slurm's compressed node list, one host per line.
fn scontrol_hostnames(list: &str) -> Result<Vec<String>, String> {
    let out = std::process::Command::new("scontrol")
        .args(["show", "hostnames", list])
        .output()
        .map_err(|e| format!("cannot run `scontrol show hostnames {list}`: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "`scontrol show hostnames {list}` failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    const R1: Rank = Rank {
        rank: 1,
        world: 2,
        local: 1,
    };

    fn from(pairs: &[(&str, &str)]) -> Result<Rendezvous, String> {
        let pairs: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let var = move |n: &str| pairs.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
        let hosts = |list: &str| match list {
            "node[07-08]" => Ok(vec!["node07".to_string(), "node08".to_string()]),
            other => Err(format!("unexpected list {other}")),
        };
        Rendezvous::from_vars(R1, var, hosts)
    }

    fn tcp(host: &str, port: u16) -> StoreAddress {
        StoreAddress::Tcp {
            host: host.into(),
            port,
        }
    }

    #[test]
    fn torchrun_variables_name_the_master() {
        let r = from(&[("MASTER_ADDR", "10.0.0.1"), ("MASTER_PORT", "29500")]).unwrap();
        assert_eq!(r.store, tcp("10.0.0.1", 29500));
        assert_eq!(r.rank, R1);
    }

    #[test]
    fn an_init_url_wins_and_may_name_a_shared_file() {
        let r = from(&[
            ("TUREEN_DIST_INIT", "file:///shared/rdv"),
            ("MASTER_ADDR", "h"),
            ("MASTER_PORT", "1"),
        ]);
        assert_eq!(r.unwrap().store, StoreAddress::File("/shared/rdv".into()));
        let r = from(&[("TUREEN_DIST_INIT", "tcp://[::1]:2345")]).unwrap();
        assert_eq!(r.store, tcp("::1", 2345));
        for bad in [
            "file://rel",
            "udp://h:1",
            "tcp://h",
            "tcp://h:0",
            "tcp://:5",
        ] {
            let e = from(&[("TUREEN_DIST_INIT", bad)]).unwrap_err();
            assert!(e.contains("TUREEN_DIST_INIT"), "{bad}: {e}");
        }
    }

    #[test]
    fn under_slurm_the_first_node_serves_on_a_port_from_the_job_id() {
        let r = from(&[
            ("SLURM_JOB_ID", "123456"),
            ("SLURM_JOB_NODELIST", "node[07-08]"),
        ]);
        assert_eq!(
            r.unwrap().store,
            tcp("node07", (15000 + 123456u64 % 15000) as u16)
        );
        let r = from(&[
            ("SLURM_JOB_ID", "1"),
            ("SLURM_JOB_NODELIST", "node[07-08]"),
            ("MASTER_PORT", "4000"),
        ]);
        assert_eq!(r.unwrap().store, tcp("node07", 4000));
    }

    #[test]
    fn missing_or_bad_variables_say_what_to_set() {
        let e = from(&[]).unwrap_err();
        assert!(e.contains("MASTER_ADDR and MASTER_PORT"), "{e}");
        assert!(e.contains("rank 1 of 2"), "{e}");
        let e = from(&[("MASTER_ADDR", "h"), ("MASTER_PORT", "http")]).unwrap_err();
        assert!(e.contains("MASTER_PORT=\"http\""), "{e}");
        let e = from(&[("SLURM_JOB_ID", "9")]).unwrap_err();
        assert!(e.contains("SLURM_JOB_NODELIST"), "{e}");
    }
}
