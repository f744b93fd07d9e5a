//! Evaluation as numbers: the metrics (top-1/top-5/mean per-class recall, recall@1/5/10
//! from score matrices) and the params of an `eval` stage. The encoders that produce the
//! scores are `tureen_torch::eval`.

pub mod metrics;
pub mod params;

pub use metrics::{ClassificationMetrics, RetrievalMetrics};
pub use params::{weights_path, EvalParams};
