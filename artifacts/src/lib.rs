//! Everything tureen knows about bytes at rest: the content-addressed store, safetensors
//! files read through memory maps, and the soup (weighted checkpoint average) math.
//!
//! This crate never links libtorch: soups and hashing work on checkpoints from anywhere.
//!
//! - [`Digest`]: a BLAKE3 hash, written `blake3:<hex>`.
//! - [`Store`]: the content-addressed object store (`.tureen/`).
//! - [`safetensors`]: validated reading over memory maps; streaming, atomic writing.
//! - [`torch`]: `torch.save` files, read by an allow-list pickle interpreter (nothing is
//!   ever executed) with storages memory-mapped.
//! - [`checkpoint`]: any of those formats (and sharded safetensors) as named tensors.
//! - [`soup`]: streaming, deterministic weighted averages of checkpoints.
//! - [`convert`]: any checkpoint rewritten as safetensors, with provenance.
//! - [`fsutil`]: atomic writes and fast copies shared with the engine.
//! - `writeback` (internal): early writeback of large files, so that their final `fsync`
//!   is short.

#![warn(missing_docs)]

pub mod checkpoint;
pub mod convert;
mod digest;
pub mod fsutil;
pub mod safetensors;
pub mod stale;
pub mod store;
pub mod torch;
mod writeback;

pub use digest::{Digest, ParseDigestError};
pub use store::{Store, StoreError};
pub mod soup;
