//! AdamW over tch tensors, operation for operation `torch.optim.AdamW` (single-tensor
//! path, which torch uses on the CPU), so a run can be saved and resumed bit-exactly
//! and compared with PyTorch.
//!
//! Weight decay follows open_clip: no decay for parameters with fewer than 2 dims and
//! those whose name contains `bn`, `ln`, `bias` or `logit_scale`.

use std::collections::BTreeMap;

use tch::nn::VarStore;
use tch::Tensor;
use tureen_stages::train::{excluded_from_decay, AdamWConfig};

struct ParamState {
    name: String,
    param: Tensor,
    exp_avg: Tensor,
    exp_avg_sq: Tensor,
    decay: bool,
}

/// Two flat buffers as large as the largest parameter, reused by every update so that a
/// step allocates nothing. The update needs two temporaries per parameter (`denom`, and
/// the scaled operand of `addcmul_`/`addcdiv_`, whose `value` tch cannot pass).
/// Allocated afresh, those of the token embedding are above glibc's 32 MiB mmap limit:
/// fresh mappings whose pages the kernel zeroes on first touch, every step, which costs
/// more than the arithmetic.
struct Scratch {
    a: Tensor,
    b: Tensor,
}

impl Scratch {
    fn new(params: &[ParamState]) -> Option<Scratch> {
        let largest = params.iter().max_by_key(|p| p.param.numel())?;
        let numel = largest.param.numel() as i64;
        let options = (largest.param.kind(), largest.param.device());
        Some(Scratch {
            a: Tensor::empty([numel], options),
            b: Tensor::empty([numel], options),
        })
    }

    /// Views of both buffers shaped like `param` (fresh tensors if its kind or device
    /// differs from the buffers').
    fn views(&self, param: &Tensor) -> (Tensor, Tensor) {
        if param.kind() != self.a.kind() || param.device() != self.a.device() {
            return (param.empty_like(), param.empty_like());
        }
        let numel = param.numel() as i64;
        let shape = param.size();
        let view = |t: &Tensor| t.narrow(0, 0, numel).view(shape.as_slice());
        (view(&self.a), view(&self.b))
    }
}

/// The optimizer: one state per trainable variable, in name order.
pub struct AdamW {
    /// Betas, eps and weight decay; the lr is given to each step.
    pub config: AdamWConfig,
    params: Vec<ParamState>,
    /// Allocated on the first step (an optimizer that is only loaded and saved needs
    /// none).
    scratch: Option<Scratch>,
    /// Optimizer steps taken (torch keeps one count per parameter; they are equal here
    /// because every CLIP parameter gets a gradient every step).
    pub step: u64,
}

impl AdamW {
    /// An optimizer over `vs`'s trainable variables, with zero moments at step 0;
    /// weight decay skips norms, biases, `logit_scale` and 1-d parameters (as open_clip).
    pub fn new(vs: &VarStore, config: AdamWConfig) -> AdamW {
        let mut vars: Vec<(String, Tensor)> = vs
            .variables()
            .into_iter()
            .filter(|(_, t)| t.requires_grad())
            .collect();
        vars.sort_by(|a, b| a.0.cmp(&b.0));
        let params = vars
            .into_iter()
            .map(|(name, param)| {
                let decay = !excluded_from_decay(&name, param.dim());
                let exp_avg = param.zeros_like();
                let exp_avg_sq = param.zeros_like();
                ParamState {
                    name,
                    param,
                    exp_avg,
                    exp_avg_sq,
                    decay,
                }
            })
            .collect();
        AdamW {
            config,
            params,
            scratch: None,
            step: 0,
        }
    }

    /// Names of the parameters that get weight decay.
    pub fn decayed(&self) -> impl Iterator<Item = &str> {
        self.params
            .iter()
            .filter(|p| p.decay)
            .map(|p| p.name.as_str())
    }

    /// Zeroes every parameter's gradient (those not yet defined stay undefined).
    pub fn zero_grad(&mut self) {
        for p in &mut self.params {
            let mut g = p.param.grad();
            if g.defined() {
                let _ = g.zero_();
            }
        }
    }

    /// Gradients of all parameters, in name order (undefined ones skipped).
    pub fn grads(&self) -> Vec<Tensor> {
        self.params
            .iter()
            .map(|p| p.param.grad())
            .filter(|g| g.defined())
            .collect()
    }

    /// One update at learning rate `lr`, exactly torch's `_single_tensor_adam` with
    /// decoupled weight decay.
    pub fn step(&mut self, lr: f64) {
        self.step += 1;
        let step = self.step as f64;
        let AdamWConfig {
            beta1,
            beta2,
            eps,
            weight_decay,
        } = self.config;
        let bias_correction1 = 1.0 - beta1.powf(step);
        let bias_correction2 = 1.0 - beta2.powf(step);
        let step_size = lr / bias_correction1;
        let bias_correction2_sqrt = bias_correction2.powf(0.5);
        if self.scratch.is_none() {
            self.scratch = Scratch::new(&self.params);
        }
        let Some(scratch) = &self.scratch else {
            return;
        };
        tch::no_grad(|| {
            for p in &mut self.params {
                let grad = p.param.grad();
                if !grad.defined() {
                    continue;
                }
                let mut param = p.param.shallow_clone();
                let (scaled, mut denom) = scratch.views(&param);
                if p.decay && weight_decay != 0.0 {
                    let _ = param.g_mul_scalar_(1.0 - lr * weight_decay);
                }
                let _ = p.exp_avg.lerp_(&grad, 1.0 - beta1);
                // torch: exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2).
                // tch has no `value`; the kernel computes (value * t1) * t2, so scaling
                // t1 first is the same arithmetic.
                // `mul.out` with a 0-dim tensor: libtorch's `mul.Scalar_out` is a
                // generated wrapper that allocates the product and copies it. The
                // factor has the parameter's kind, as a Python-number factor would be
                // taken (a 0-dim double would promote a 0-dim parameter's product).
                let kind = param.kind();
                let factor = |v: f64| Tensor::from(v).to_kind(kind);
                let _ = grad.mul_out(&scaled, &factor(1.0 - beta2));
                let _ = p.exp_avg_sq.g_mul_scalar_(beta2).addcmul_(&scaled, &grad);
                // torch: denom = (exp_avg_sq.sqrt() / bias_correction2_sqrt).add_(eps).
                let _ = p.exp_avg_sq.sqrt_out(&denom);
                let _ = denom.g_div_scalar_(bias_correction2_sqrt);
                let _ = denom.g_add_scalar_(eps);
                // torch: param.addcdiv_(exp_avg, denom, value=-step_size); the kernel
                // computes (value * t1) / t2, so scale t1 first here too.
                let _ = p.exp_avg.mul_out(&scaled, &factor(-step_size));
                let _ = param.addcdiv_(&scaled, &denom);
            }
        });
    }

    /// The state as tensors: `exp_avg.<param>` and `exp_avg_sq.<param>`.
    pub fn state_tensors(&self) -> BTreeMap<String, Tensor> {
        let mut out = BTreeMap::new();
        for p in &self.params {
            out.insert(format!("exp_avg.{}", p.name), p.exp_avg.shallow_clone());
            out.insert(
                format!("exp_avg_sq.{}", p.name),
                p.exp_avg_sq.shallow_clone(),
            );
        }
        out
    }

    /// Restores the state saved by [`AdamW::state_tensors`] (strict: every parameter's
    /// moments must be present with its shape).
    pub fn load_state(
        &mut self,
        tensors: &BTreeMap<String, Tensor>,
        step: u64,
    ) -> Result<(), String> {
        if tensors.len() != 2 * self.params.len() {
            return Err(format!(
                "{} tensors for {} parameters (expected exp_avg and exp_avg_sq for each)",
                tensors.len(),
                self.params.len()
            ));
        }
        for p in &mut self.params {
            for (key, dst) in [
                ("exp_avg", &mut p.exp_avg),
                ("exp_avg_sq", &mut p.exp_avg_sq),
            ] {
                let name = format!("{key}.{}", p.name);
                let src = tensors
                    .get(&name)
                    .ok_or_else(|| format!("missing tensor `{name}`"))?;
                if src.size() != dst.size() {
                    return Err(format!(
                        "tensor `{name}`: shape {:?}, parameter has {:?}",
                        src.size(),
                        dst.size()
                    ));
                }
                tch::no_grad(|| dst.copy_(src));
            }
        }
        self.step = step;
        Ok(())
    }
}
