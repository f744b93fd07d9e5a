//! A trainer's place among the ranks of a data-parallel stage: [`DataParallel`] holds
//! the process group and does the step's three exchanges (features all-gathered,
//! feature gradients reduce-scattered, parameter gradients all-reduced in buckets),
//! timing them for the metrics.

use std::time::{Duration, Instant};

use tch::Tensor;

use super::error::TrainError;
use crate::dist::{GradBuckets, ProcessGroup, Rank, BUCKET_BYTES};

/// The process group of a data-parallel run and what its steps need.
pub struct DataParallel {
    group: ProcessGroup,
    buckets: Option<GradBuckets>,
    /// Time spent in collectives since [`DataParallel::take_comm_time`].
    comm: Duration,
}

/// The step's loss and stop flag travel in the gradient all-reduce's last bucket.
const EXTRAS: usize = 2;

impl DataParallel {
    pub fn new(group: ProcessGroup) -> DataParallel {
        DataParallel {
            group,
            buckets: None,
            comm: Duration::ZERO,
        }
    }

    pub fn rank(&self) -> Rank {
        self.group.rank()
    }

    fn timed<T>(
        &mut self,
        f: impl FnOnce(&ProcessGroup) -> Result<T, crate::dist::DistError>,
    ) -> Result<T, TrainError> {
        let start = Instant::now();
        let out = f(&self.group);
        self.comm += start.elapsed();
        Ok(out?)
    }

    /// Every rank's rows of `local` (features), in rank order.
    pub fn all_gather(&mut self, local: &Tensor) -> Result<Tensor, TrainError> {
        self.timed(|g| g.all_gather(local))
    }

    /// This rank's rows of the sum over ranks of `all` (feature gradients).
    pub fn reduce_scatter(&mut self, all: &Tensor) -> Result<Tensor, TrainError> {
        self.timed(|g| g.reduce_scatter_sum(all))
    }

    /// Sums `grads` across ranks in place, and the step's `loss` and `stop` (whether
    /// this rank was asked to stop); returns the summed loss and whether any rank
    /// stops.
    pub fn reduce_grads(
        &mut self,
        grads: &[Tensor],
        loss: f64,
        stop: bool,
    ) -> Result<(f64, bool), TrainError> {
        if self.buckets.is_none() {
            self.buckets = Some(GradBuckets::new(grads, EXTRAS, BUCKET_BYTES)?);
        }
        let mut buckets = self.buckets.take().expect("just laid out");
        let extras = [loss, if stop { 1.0 } else { 0.0 }];
        let sums = self.timed(|g| buckets.all_reduce(g, grads, &extras));
        self.buckets = Some(buckets);
        let sums = sums?;
        Ok((sums[0], sums[1] > 0.0))
    }

    pub fn barrier(&mut self) -> Result<(), TrainError> {
        self.timed(|g| g.barrier())
    }

    /// Overwrites every tensor with rank 0's (DDP's start: identical replicas).
    pub fn broadcast_from_leader(&mut self, tensors: &[Tensor]) -> Result<(), TrainError> {
        tch::no_grad(|| {
            for t in tensors {
                if t.is_contiguous() {
                    self.timed(|g| g.broadcast(t, 0))?;
                } else {
                    let c = t.contiguous();
                    self.timed(|g| g.broadcast(&c, 0))?;
                    t.shallow_clone().copy_(&c);
                }
            }
            Ok(())
        })
    }

    /// Checks that every rank holds the same `values` (where the run starts), naming
    /// the first rank that differs from rank 0.
    pub fn agree(&mut self, what: &str, values: &[i64]) -> Result<(), TrainError> {
        let all = self.timed(|g| g.all_gather_i64(values))?;
        let n = values.len();
        let leader = &all[..n];
        for (r, theirs) in all.chunks(n).enumerate() {
            if theirs != leader {
                return Err(TrainError::Config(format!(
                    "{what}: rank {r} has {theirs:?} but rank 0 has {leader:?}; every rank must \
                     start from the same checkpoint"
                )));
            }
        }
        Ok(())
    }

    /// Time spent in collectives since the last call.
    pub fn take_comm_time(&mut self) -> Duration {
        std::mem::take(&mut self.comm)
    }
}
