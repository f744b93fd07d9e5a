//! Data-parallel communication over libtorch's c10d, the layer under
//! `torch.distributed` and DDP, through a small C++ shim (`shim.cpp`, compiled by this
//! crate's build script against the libtorch tch links; tch binds none of it).
//!
//! - [`Rendezvous`]: where the ranks meet, from torchrun's or Slurm's variables.
//! - [`ProcessGroup::join`]: a `TCPStore` served by rank 0 (or a `FileStore` on a shared
//!   path), then `ProcessGroupGloo` (CPU) or `ProcessGroupNCCL` (CUDA, in builds made
//!   with the CUDA headers). Every step is bounded by a timeout and cancellable.
//! - Collectives: all-reduce (coalesced into buckets by [`GradBuckets`]), all-gather,
//!   reduce-scatter, broadcast, barrier. No C++ exception reaches Rust: a failure is a
//!   [`DistError`] naming the operation, this rank and the peer at fault, which the
//!   ranks' heartbeats in the store tell apart (stopped, or alive but stalled).

mod buckets;
pub(crate) mod ffi;
mod group;
mod rendezvous;
mod store;

pub use buckets::{GradBuckets, BUCKET_BYTES};
pub use group::{Backend, DistError, GroupOptions, Op, Peer, ProcessGroup};
pub use rendezvous::{Rendezvous, StoreAddress};
pub use store::HEARTBEAT;
pub use tureen_engine::kind::Rank;
