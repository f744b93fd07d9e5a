//! Everything tureen knows about bytes at rest: the content-addressed store, safetensors
//! files read through memory maps, and the soup (weighted checkpoint average) math.
//!
//! This crate never links libtorch: soups and hashing work on checkpoints from anywhere.
