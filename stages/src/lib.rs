//! tureen's stage kinds (`command`, `soup`, `train`, `rewind`, `eval`) and the model,
//! data, training and evaluation code behind them. This is the only crate that links
//! libtorch (through tch).

pub mod checkpoint;
pub mod data;
pub mod eval;
pub mod kinds;
pub mod model;
pub mod plan;
pub mod tokenizer;
pub mod train;

pub use kinds::register_all;
