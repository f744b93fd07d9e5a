//! One step's forward and backward passes, the same arithmetic for one process and for
//! the ranks of a data-parallel run.
//!
//! The global batch is cut into *shards* of `micro_batch` rows (the whole per-rank
//! batch when unset), numbered in batch order across ranks: rank r's shards follow rank
//! r-1's, so rank r's share plays the part of micro-batch r of one process. Each shard
//! draws its drop-path masks from `(seed, step, shard)`. A step is then
//!
//! 1. the features of this rank's shards (kept with their graph, or their recompute
//!    tape, when the rank has one shard; else computed without autograd);
//! 2. all ranks' features, all-gathered (rank order = batch order);
//! 3. the loss: with one shard in all, [`clip_loss`] of the batch; else each shard's
//!    open_clip local loss ([`clip_loss_rows`], its rows against every row) weighted by
//!    its share of the batch, so the sum is the batch's loss. Its gradients with respect
//!    to all features and `logit_scale`, shard by shard, summed in shard order;
//! 4. the feature gradients reduce-scattered (each rank gets the sum over ranks for its
//!    rows: the backward of gather-with-grad);
//! 5. each shard's towers back-propagated from its feature gradients (again forward
//!    with autograd first, or block by block with gradient checkpointing);
//! 6. the parameter gradients (and the loss) summed over the ranks in buckets.
//!
//! The sums of steps 4 and 6 have two terms with two ranks, so a 2-rank run and one
//! process with `micro_batch` = half the batch add the same numbers and end with the
//! same bits on the CPU. `logit_scale`'s gradient comes from step 3 only, counted once.

use tch::{Kind, Tensor};

use tureen_stages::rng::mix;

use super::error::TrainError;
use super::trainer::Trainer;
use crate::model::{amp, clip_loss, clip_loss_rows, Recompute};

/// Rows of the global batch one forward/backward pass covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Shard {
    /// Position among all ranks' shards (seeds the drop-path masks).
    pub index: u64,
    /// First row within this rank's share.
    pub start: i64,
    pub len: i64,
}

/// This rank's shards of a per-rank batch of `rows`, `micro` rows each (the last may be
/// shorter), given the rank's place.
pub(super) fn shards(rows: i64, micro: i64, rank: u32) -> Vec<Shard> {
    let micro = micro.clamp(1, rows.max(1));
    let per_rank = (rows + micro - 1) / micro;
    (0..per_rank)
        .map(|j| {
            let start = j * micro;
            Shard {
                index: rank as u64 * per_rank as u64 + j as u64,
                start,
                len: micro.min(rows - start),
            }
        })
        .collect()
}

/// What a shard's feature pass leaves for its backward pass.
enum Pass {
    /// Float32 features with their autograd graph.
    Graph(Tensor, Tensor),
    /// The recompute tape (gradient checkpointing).
    Tape(Recompute),
    /// Nothing: the backward pass recomputes the features.
    Redo,
}

/// The outcome of a step's passes, before the optimizer.
pub(super) struct Passes {
    /// The global batch's loss (summed over ranks).
    pub loss: f64,
    /// Whether some rank was asked to stop.
    pub stop: bool,
}

impl Trainer {
    fn reseed(&self, shard: &Shard) {
        let seed = mix(&[self.config.seed, 0xd409, self.step, shard.index]);
        self.model.seed_stochastic_depth(seed);
    }

    /// Steps 1-6 on this rank's share (`images`, `tokens`) of the global batch;
    /// gradients end up in the parameters. `stop`: this rank was asked to stop.
    pub(super) fn passes(
        &mut self,
        images: &Tensor,
        tokens: &Tensor,
        stop: bool,
    ) -> Result<Passes, TrainError> {
        let rows = images.size()[0];
        let (rank, world) = match &self.parallel {
            Some(p) => (p.rank().rank, p.rank().world as i64),
            None => (0, 1),
        };
        let micro = self.config.micro_batch.map_or(rows, |m| m as i64);
        let shards = shards(rows, micro, rank);
        let keep = shards.len() == 1;
        let mut passes = Vec::with_capacity(shards.len());
        let mut features = Vec::with_capacity(shards.len());
        for s in &shards {
            let (pass, f) = self.features(s, images, tokens, keep);
            passes.push(pass);
            features.push(f);
        }
        let local = Tensor::cat(&features, 0);
        let all = match &mut self.parallel {
            Some(p) => p.all_gather(&local)?,
            None => local,
        };
        let whole_batch = shards.len() == 1 && world == 1;
        let (grads, scale_grad, loss) =
            self.loss_gradients(&all, &shards, rank as i64 * rows, whole_batch);
        let grads = match &mut self.parallel {
            Some(p) => p.reduce_scatter(&grads)?,
            None => grads,
        };
        for (s, pass) in shards.iter().zip(passes) {
            self.backward_shard(s, pass, images, tokens, &grads.narrow(0, s.start, s.len))
                .map_err(|message| TrainError::Batch {
                    step: self.step,
                    message,
                })?;
        }
        crate::autograd::backward(&[self.model.logit_scale()], &[&scale_grad]).map_err(
            |message| TrainError::Batch {
                step: self.step,
                message,
            },
        )?;
        let loss = loss.double_value(&[]);
        match &mut self.parallel {
            Some(p) => {
                let (loss, stop) = p.reduce_grads(&self.optimizer.grads(), loss, stop)?;
                Ok(Passes { loss, stop })
            }
            None => Ok(Passes { loss, stop }),
        }
    }

    /// Step 1 for one shard: its pass and its float32 features `[rows, 2 * embed]`
    /// (image, text) without a graph.
    fn features(&self, s: &Shard, images: &Tensor, tokens: &Tensor, keep: bool) -> (Pass, Tensor) {
        self.reseed(s);
        let (im, tk) = (
            images.narrow(0, s.start, s.len),
            tokens.narrow(0, s.start, s.len),
        );
        let detached = |i: &Tensor, t: &Tensor| {
            Tensor::cat(
                &[
                    i.detach().to_kind(Kind::Float),
                    t.detach().to_kind(Kind::Float),
                ],
                1,
            )
        };
        amp::autocast(self.compute, || match (keep, self.grad_checkpointing) {
            (true, false) => {
                let i = self.model.encode_image(&im, true).to_kind(Kind::Float);
                let t = self.model.encode_text(&tk).to_kind(Kind::Float);
                let f = detached(&i, &t);
                (Pass::Graph(i, t), f)
            }
            (true, true) => {
                let (i, t, tape) = self.model.encode_recomputable(&im, &tk);
                (Pass::Tape(tape), detached(&i, &t))
            }
            (false, _) => tch::no_grad(|| {
                let i = self.model.encode_image(&im, true);
                let t = self.model.encode_text(&tk);
                (Pass::Redo, detached(&i, &t))
            }),
        })
    }

    /// Step 3: the gradients of the loss with respect to all features (`[B, 2 * embed]`,
    /// this rank's shards' contributions) and to `logit_scale`, and this rank's part of
    /// the loss. `offset`: this rank's first row in the global batch.
    fn loss_gradients(
        &self,
        all: &Tensor,
        shards: &[Shard],
        offset: i64,
        whole_batch: bool,
    ) -> (Tensor, Tensor, Tensor) {
        let batch = all.size()[0];
        let d = all.size()[1] / 2;
        let image = all.narrow(1, 0, d).contiguous().set_requires_grad(true);
        let text = all.narrow(1, d, d).contiguous().set_requires_grad(true);
        let scale = self.model.logit_scale().detach().set_requires_grad(true);
        let mut sums: Option<(Tensor, Tensor, Tensor)> = None;
        for s in shards {
            let loss = match whole_batch {
                true => clip_loss(&image, &text, &scale),
                false => {
                    clip_loss_rows(&image, &text, &scale, offset + s.start, s.len)
                        * (s.len as f64 / batch as f64)
                }
            };
            let g = Tensor::run_backward(&[&loss], &[&image, &text, &scale], false, false);
            let features = Tensor::cat(&[&g[0], &g[1]], 1);
            let loss = loss.detach();
            sums = Some(match sums {
                None => (features, g[2].shallow_clone(), loss),
                Some((f, sc, l)) => (f + features, sc + &g[2], l + loss),
            });
        }
        sums.expect("a rank has at least one shard")
    }

    /// Step 5 for one shard, from `grads` (`[rows, 2 * embed]`, its feature gradients).
    fn backward_shard(
        &self,
        s: &Shard,
        pass: Pass,
        images: &Tensor,
        tokens: &Tensor,
        grads: &Tensor,
    ) -> Result<(), String> {
        let d = grads.size()[1] / 2;
        let gi = grads.narrow(1, 0, d).contiguous();
        let gt = grads.narrow(1, d, d).contiguous();
        let (im, tk) = (
            images.narrow(0, s.start, s.len),
            tokens.narrow(0, s.start, s.len),
        );
        amp::autocast(self.compute, || match pass {
            Pass::Graph(i, t) => crate::autograd::backward(&[&i, &t], &[&gi, &gt]),
            Pass::Tape(tape) => self.model.backward_recomputed(tape, &gi, &gt),
            Pass::Redo => {
                self.reseed(s);
                if self.grad_checkpointing {
                    let (_, _, tape) = self.model.encode_recomputable(&im, &tk);
                    self.model.backward_recomputed(tape, &gi, &gt)
                } else {
                    let i = self.model.encode_image(&im, true).to_kind(Kind::Float);
                    let t = self.model.encode_text(&tk).to_kind(Kind::Float);
                    crate::autograd::backward(&[&i, &t], &[&gi, &gt])
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_number_micro_batches_across_ranks_in_batch_order() {
        let s = shards(8, 3, 0);
        let spans: Vec<(u64, i64, i64)> = s.iter().map(|s| (s.index, s.start, s.len)).collect();
        assert_eq!(spans, vec![(0, 0, 3), (1, 3, 3), (2, 6, 2)]);
        // Rank 1 of a run with 4 rows per rank in micro-batches of 2: shards 2 and 3.
        let s = shards(4, 2, 1);
        assert_eq!(s.iter().map(|s| s.index).collect::<Vec<_>>(), vec![2, 3]);
        // No micro-batching: one shard per rank, numbered by rank.
        assert_eq!(
            shards(4, 4, 3),
            vec![Shard {
                index: 3,
                start: 0,
                len: 4
            }]
        );
    }
}
