//! tureen's stage kinds (`command`, `soup`, `train`, `rewind`, `eval`) and the model,
//! data, training and evaluation code behind them. This is the only crate that links
//! libtorch (through tch).

pub mod kinds;

pub use kinds::register_all;
