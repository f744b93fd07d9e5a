//! Parameter initialisation as open_clip and timm do it (distributions, not bits: torch's
//! RNG streams are not reproduced, only the recipes).

use tch::nn::{Init, Path};
use tch::Tensor;

/// timm's `trunc_normal_(std)` with its absolute bounds of [-2, 2] (for the small stds
/// used here the truncation never bites, so a clamped normal is the same distribution).
pub fn trunc_normal(p: &Path, name: &str, dims: &[i64], std: f64) -> Tensor {
    let t = p.var(
        name,
        dims,
        Init::Randn {
            mean: 0.0,
            stdev: std,
        },
    );
    tch::no_grad(|| {
        let _ = t.shallow_clone().clamp_(-2.0, 2.0);
    });
    t
}

/// A normal init (open_clip's text tower).
pub fn normal(p: &Path, name: &str, dims: &[i64], std: f64) -> Tensor {
    p.var(
        name,
        dims,
        Init::Randn {
            mean: 0.0,
            stdev: std,
        },
    )
}

/// torch's default `nn.Linear` weight init: U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
pub fn linear_default(p: &Path, name: &str, dims: &[i64]) -> Tensor {
    let fan_in: i64 = dims[1..].iter().product();
    let bound = 1.0 / (fan_in as f64).sqrt();
    p.var(
        name,
        dims,
        Init::Uniform {
            lo: -bound,
            up: bound,
        },
    )
}

pub fn zeros(p: &Path, name: &str, dims: &[i64]) -> Tensor {
    p.var(name, dims, Init::Const(0.0))
}

pub fn constant(p: &Path, name: &str, dims: &[i64], value: f64) -> Tensor {
    p.var(name, dims, Init::Const(value))
}

/// A LayerNorm's (weight, bias) = (1, 0).
pub fn layer_norm(p: &Path, dim: i64) -> (Tensor, Tensor) {
    (constant(p, "weight", &[dim], 1.0), zeros(p, "bias", &[dim]))
}
