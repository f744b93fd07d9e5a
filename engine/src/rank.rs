//! Which process of a data-parallel stage this is: [`Rank`], read from the variables a
//! launcher sets (torchrun's `RANK`/`WORLD_SIZE`/`LOCAL_RANK`, or Slurm's
//! `SLURM_PROCID`/`SLURM_NTASKS`/`SLURM_LOCALID` for `srun`).
//!
//! Only rank 0 of a data-parallel stage takes the key's lock, checks and writes the action
//! cache, commits checkpoints and ingests outputs; the other ranks compute and leave the
//! store alone (see [`crate::job::execute_as`]).

use std::fmt;

/// One process's place in a stage's world of processes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Rank {
    /// 0-based, `< world`.
    pub rank: u32,
    /// Number of processes; at least 1.
    pub world: u32,
    /// Index among this node's processes (picks the GPU on a multi-GPU node).
    pub local: u32,
}

/// A launcher variable that is present but unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{name}={value:?}: {problem}")]
pub struct RankError {
    /// The variable, e.g. `WORLD_SIZE` or `SLURM_PROCID`.
    pub name: &'static str,
    /// Its value as set (empty where the variable is missing).
    pub value: String,
    /// What is wrong with it, in words.
    pub problem: String,
}

impl Rank {
    /// A stage that runs as one process.
    pub const SOLE: Rank = Rank {
        rank: 0,
        world: 1,
        local: 0,
    };

    /// Whether this process does the stage's bookkeeping (lock, cache, commits).
    pub fn is_leader(&self) -> bool {
        self.rank == 0
    }

    /// From this process's environment (see [`Rank::from_vars`]).
    pub fn from_env() -> Result<Rank, RankError> {
        Rank::from_vars(|name| std::env::var(name).ok())
    }

    /// torchrun's `RANK`, `WORLD_SIZE` and `LOCAL_RANK` when `WORLD_SIZE` is set (a
    /// site's own launcher inside an allocation wins over the allocation's variables);
    /// else Slurm's `SLURM_PROCID`, `SLURM_NTASKS` and `SLURM_LOCALID` when
    /// `SLURM_NTASKS` is set; else [`Rank::SOLE`].
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<Rank, RankError> {
        let names = if var("WORLD_SIZE").is_some() {
            ["RANK", "WORLD_SIZE", "LOCAL_RANK"]
        } else if var("SLURM_NTASKS").is_some() {
            ["SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID"]
        } else {
            return Ok(Rank::SOLE);
        };
        let number = |name: &'static str, default: Option<u32>| -> Result<u32, RankError> {
            match (var(name), default) {
                (None, Some(d)) => Ok(d),
                (None, None) => Err(RankError {
                    name,
                    value: String::new(),
                    problem: format!("missing (set together with {})", names[1]),
                }),
                (Some(v), _) => v.trim().parse().map_err(|_| RankError {
                    name,
                    value: v.clone(),
                    problem: "expected a non-negative integer".into(),
                }),
            }
        };
        let world = number(names[1], None)?;
        let rank = number(names[0], None)?;
        // torchrun always sets LOCAL_RANK; a bare launcher may not: one process per node.
        let local = number(names[2], Some(0))?;
        if world == 0 {
            return Err(RankError {
                name: names[1],
                value: world.to_string(),
                problem: "must be at least 1".into(),
            });
        }
        if rank >= world {
            return Err(RankError {
                name: names[0],
                value: rank.to_string(),
                problem: format!("must be below {}={world}", names[1]),
            });
        }
        Ok(Rank { rank, world, local })
    }
}

impl fmt::Display for Rank {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "rank {} of {}", self.rank, self.world)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let pairs: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |name| {
            pairs
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        }
    }

    #[test]
    fn no_launcher_variables_mean_one_process() {
        assert_eq!(Rank::from_vars(vars(&[])), Ok(Rank::SOLE));
    }

    #[test]
    fn torchrun_variables_give_rank_world_and_local_rank() {
        let r = Rank::from_vars(vars(&[
            ("RANK", "3"),
            ("WORLD_SIZE", "8"),
            ("LOCAL_RANK", "1"),
        ]));
        assert_eq!(
            r,
            Ok(Rank {
                rank: 3,
                world: 8,
                local: 1
            })
        );
    }

    #[test]
    fn slurm_variables_count_tasks_and_torchrun_wins_over_them() {
        let slurm = [
            ("SLURM_PROCID", "5"),
            ("SLURM_NTASKS", "16"),
            ("SLURM_LOCALID", "5"),
        ];
        assert_eq!(
            Rank::from_vars(vars(&slurm)),
            Ok(Rank {
                rank: 5,
                world: 16,
                local: 5
            })
        );
        let mut both = slurm.to_vec();
        both.extend([("RANK", "0"), ("WORLD_SIZE", "2"), ("LOCAL_RANK", "0")]);
        assert_eq!(Rank::from_vars(vars(&both)).unwrap().world, 2);
    }

    #[test]
    fn bad_values_are_named() {
        let e = Rank::from_vars(vars(&[("RANK", "2"), ("WORLD_SIZE", "2")])).unwrap_err();
        assert_eq!(e.name, "RANK");
        assert!(e.to_string().contains("below WORLD_SIZE=2"), "{e}");
        let e = Rank::from_vars(vars(&[("RANK", "x"), ("WORLD_SIZE", "2")])).unwrap_err();
        assert!(e.to_string().contains("RANK=\"x\""), "{e}");
        let e = Rank::from_vars(vars(&[("WORLD_SIZE", "2")])).unwrap_err();
        assert!(e.to_string().contains("RANK"), "{e}");
        let e = Rank::from_vars(vars(&[("RANK", "0"), ("WORLD_SIZE", "0")])).unwrap_err();
        assert_eq!(e.name, "WORLD_SIZE");
    }
}
