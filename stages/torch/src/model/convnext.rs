//! The ConvNeXt image tower, parameter for parameter timm's `ConvNeXt` as open_clip's
//! `TimmModel` wraps it (`visual.trunk.*` and `visual.head.*`).
//!
//! Each block runs the op graph timm runs for its [`MlpKind`]: the 1x1-conv MLP of the
//! small models as 1x1 convolutions on the channels-last-strided output of
//! `LayerNorm2d` (libtorch hands these to oneDNN; on the CPU that trains faster than
//! the same arithmetic as a GEMM over an NHWC view, with so few channels), the `Linear`
//! MLP of the large models as `Linear`s on an NHWC permute.

use rand::Rng;
use rand_chacha::ChaCha8Rng;
use tch::nn::Path;
use tch::{Kind, Tensor};

use super::amp;
use super::init;
use super::recompute::Chain;
use super::{MlpKind, ProjKind, VisionConfig};

/// LayerNorm over the channels of an NCHW tensor (timm's `LayerNorm2d`).
struct LayerNorm2d {
    weight: Tensor,
    bias: Tensor,
    eps: f64,
}

impl LayerNorm2d {
    fn new(p: &Path, dim: i64, eps: f64) -> Self {
        let (weight, bias) = init::layer_norm(p, dim);
        LayerNorm2d { weight, bias, eps }
    }

    fn forward(&self, x: &Tensor) -> Tensor {
        let c = self.weight.size()[0];
        amp::full(x)
            .permute([0, 2, 3, 1])
            .layer_norm([c], Some(&self.weight), Some(&self.bias), self.eps, true)
            .permute([0, 3, 1, 2])
    }

    /// The same norm on an already channels-last tensor.
    fn forward_nhwc(&self, x: &Tensor) -> Tensor {
        let c = self.weight.size()[0];
        amp::full(x).layer_norm([c], Some(&self.weight), Some(&self.bias), self.eps, true)
    }
}

struct Conv {
    weight: Tensor,
    bias: Tensor,
    stride: i64,
    padding: i64,
    groups: i64,
}

impl Conv {
    fn forward(&self, x: &Tensor) -> Tensor {
        amp::cast(x).conv2d(
            &amp::cast(&self.weight),
            Some(amp::cast(&self.bias)),
            [self.stride],
            [self.padding],
            [1],
            self.groups,
        )
    }
}

/// A pointwise layer stored either as `Linear` `[out, in]` or as a 1x1 conv
/// `[out, in, 1, 1]`, applied to channels-last input.
struct Pointwise {
    weight: Tensor,
    bias: Tensor,
    kind: MlpKind,
}

impl Pointwise {
    fn new(p: &Path, input: i64, output: i64, kind: MlpKind) -> Self {
        let dims: Vec<i64> = match kind {
            MlpKind::Linear => vec![output, input],
            MlpKind::Conv1x1 => vec![output, input, 1, 1],
        };
        let weight = init::trunc_normal(p, "weight", &dims, 0.02);
        let bias = init::zeros(p, "bias", &[output]);
        Pointwise { weight, bias, kind }
    }

    /// `Linear` on channels-last `[B, H, W, C]` input (either stored shape).
    fn forward_nhwc(&self, x: &Tensor) -> Tensor {
        let weight = match self.kind {
            MlpKind::Linear => amp::cast(&self.weight),
            MlpKind::Conv1x1 => {
                let s = self.weight.size();
                amp::cast(&self.weight.view([s[0], s[1]]))
            }
        };
        amp::cast(x).linear(&weight, Some(amp::cast(&self.bias)))
    }

    /// 1x1 convolution on `[B, C, H, W]` input (either stored shape).
    fn forward_nchw(&self, x: &Tensor) -> Tensor {
        let s = self.weight.size();
        let weight = amp::cast(&self.weight.view([s[0], s[1], 1, 1]));
        amp::cast(x).conv2d(&weight, Some(amp::cast(&self.bias)), [1], [0], [1], 1)
    }
}

/// Stochastic depth: drops the whole residual branch of a sample with probability
/// `rate` and rescales the survivors by 1/(1-rate) (timm's `DropPath`).
///
/// With `rng` the per-sample draws come from that seeded generator (the trainer seeds
/// it from (seed, step, micro-batch), so runs repeat and resume bit-exactly even with
/// other stages training in the same process); without it from libtorch's global
/// generator.
pub(crate) fn drop_path(x: Tensor, rate: f64, train: bool, rng: Option<&mut ChaCha8Rng>) -> Tensor {
    if !train || rate <= 0.0 {
        return x;
    }
    let keep = 1.0 - rate;
    let batch = x.size()[0];
    let mut shape = vec![1i64; x.dim()];
    shape[0] = batch;
    let mask = match rng {
        Some(rng) => {
            let draws: Vec<f32> = (0..batch)
                .map(|_| if rng.gen::<f64>() < keep { 1.0 } else { 0.0 })
                .collect();
            Tensor::from_slice(&draws)
                .view(shape.as_slice())
                .to_device(x.device())
                .to_kind(x.kind())
        }
        None => Tensor::empty(shape.as_slice(), (x.kind(), x.device())).bernoulli_float_(keep),
    };
    x * (mask / keep)
}

struct Block {
    conv_dw: Conv,
    norm: LayerNorm2d,
    fc1: Pointwise,
    fc2: Pointwise,
    gamma: Option<Tensor>,
    drop_path: f64,
}

impl Block {
    fn new(p: &Path, dim: i64, cfg: &VisionConfig, drop_path: f64) -> Self {
        let k = cfg.kernel_size;
        let dw = p / "conv_dw";
        let conv_dw = Conv {
            weight: init::trunc_normal(&dw, "weight", &[dim, 1, k, k], 0.02),
            bias: init::zeros(&dw, "bias", &[dim]),
            stride: 1,
            padding: k / 2,
            groups: dim,
        };
        let norm = LayerNorm2d::new(&(p / "norm"), dim, cfg.norm_eps);
        let hidden = cfg.mlp_ratio * dim;
        let mlp = p / "mlp";
        let fc1 = Pointwise::new(&(&mlp / "fc1"), dim, hidden, cfg.mlp);
        let fc2 = Pointwise::new(&(&mlp / "fc2"), hidden, dim, cfg.mlp);
        let gamma = cfg
            .ls_init_value
            .map(|v| init::constant(p, "gamma", &[dim], v));
        Block {
            conv_dw,
            norm,
            fc1,
            fc2,
            gamma,
            drop_path,
        }
    }

    fn forward(&self, x: &Tensor, train: bool, rng: Option<&mut ChaCha8Rng>) -> Tensor {
        let y = self.conv_dw.forward(x);
        let y = match self.fc1.kind {
            MlpKind::Conv1x1 => {
                let y = self.norm.forward(&y);
                let y = self.fc1.forward_nchw(&y).gelu("none");
                let y = self.fc2.forward_nchw(&y);
                match &self.gamma {
                    Some(g) => y * g.view([-1, 1, 1]),
                    None => y,
                }
            }
            MlpKind::Linear => {
                let y = self.norm.forward_nhwc(&y.permute([0, 2, 3, 1]));
                let y = self.fc1.forward_nhwc(&y).gelu("none");
                let mut y = self.fc2.forward_nhwc(&y).permute([0, 3, 1, 2]);
                if let Some(g) = &self.gamma {
                    // Not `*=`: tch's `MulAssign` multiplies in place, on a permuted view
                    // that autograd needs as it was.
                    #[allow(clippy::assign_op_pattern)]
                    {
                        y = y * g.view([-1, 1, 1]);
                    }
                }
                y
            }
        };
        drop_path(y, self.drop_path, train, rng) + x
    }
}

struct Stage {
    downsample: Option<(LayerNorm2d, Conv)>,
    blocks: Vec<Block>,
}

/// The projection from pooled features to the joint embedding.
enum Head {
    Linear {
        weight: Tensor,
        bias: Option<Tensor>,
    },
    Mlp {
        fc1_w: Tensor,
        fc1_b: Tensor,
        fc2_w: Tensor,
        fc2_b: Option<Tensor>,
    },
}

/// A piece of the tower between two saved activations when recomputing (see
/// [`super::recompute`]): every ConvNeXt block is one.
#[derive(Debug, Clone, Copy)]
enum Segment {
    Stem,
    Downsample(usize),
    Block(usize, usize),
    Head,
}

/// `visual`: ConvNeXt trunk + pooling head + projection.
pub struct ConvNext {
    stem: Conv,
    stem_norm: LayerNorm2d,
    stages: Vec<Stage>,
    head_norm: LayerNorm2d,
    head: Head,
    /// The forward pass in order.
    segments: Vec<Segment>,
}

impl ConvNext {
    /// Registers the tower's parameters under `p` (normally `visual`).
    pub fn new(p: &Path, cfg: &VisionConfig, embed_dim: i64) -> Self {
        let trunk = p / "trunk";
        let eps = cfg.norm_eps;
        let d0 = cfg.dims[0];
        let ps = cfg.patch_size;
        let stem_p = &trunk / "stem";
        let s0 = &stem_p / "0";
        let stem = Conv {
            weight: init::trunc_normal(&s0, "weight", &[d0, 3, ps, ps], 0.02),
            bias: init::zeros(&s0, "bias", &[d0]),
            stride: ps,
            padding: 0,
            groups: 1,
        };
        let stem_norm = LayerNorm2d::new(&(&stem_p / "1"), d0, eps);
        let rates = cfg.drop_path_rates();
        let mut stages = Vec::new();
        let mut prev = d0;
        for (i, (&depth, &dim)) in cfg.depths.iter().zip(&cfg.dims).enumerate() {
            let sp = &trunk / "stages" / i;
            let downsample = (i > 0).then(|| {
                let dp = &sp / "downsample";
                let norm = LayerNorm2d::new(&(&dp / "0"), prev, eps);
                let c = &dp / "1";
                let conv = Conv {
                    weight: init::trunc_normal(&c, "weight", &[dim, prev, 2, 2], 0.02),
                    bias: init::zeros(&c, "bias", &[dim]),
                    stride: 2,
                    padding: 0,
                    groups: 1,
                };
                (norm, conv)
            });
            let blocks = (0..depth)
                .map(|b| Block::new(&(&sp / "blocks" / b), dim, cfg, rates[i][b as usize]))
                .collect();
            stages.push(Stage { downsample, blocks });
            prev = dim;
        }
        let head_norm = LayerNorm2d::new(&(&trunk / "head" / "norm"), prev, eps);
        let hp = p / "head";
        let head = match cfg.proj {
            ProjKind::Linear => {
                let pp = &hp / "proj";
                Head::Linear {
                    weight: init::linear_default(&pp, "weight", &[embed_dim, prev]),
                    bias: cfg
                        .proj_bias
                        .then(|| init::zeros(&pp, "bias", &[embed_dim])),
                }
            }
            ProjKind::Mlp => {
                let m = &hp / "mlp";
                let (f1, f2) = (&m / "fc1", &m / "fc2");
                Head::Mlp {
                    fc1_w: init::linear_default(&f1, "weight", &[2 * embed_dim, prev]),
                    fc1_b: init::zeros(&f1, "bias", &[2 * embed_dim]),
                    fc2_w: init::linear_default(&f2, "weight", &[embed_dim, 2 * embed_dim]),
                    fc2_b: cfg
                        .proj_bias
                        .then(|| init::zeros(&f2, "bias", &[embed_dim])),
                }
            }
        };
        let mut segments = vec![Segment::Stem];
        for (i, stage) in stages.iter().enumerate() {
            if stage.downsample.is_some() {
                segments.push(Segment::Downsample(i));
            }
            segments.extend((0..stage.blocks.len()).map(|b| Segment::Block(i, b)));
        }
        segments.push(Segment::Head);
        ConvNext {
            stem,
            stem_norm,
            stages,
            head_norm,
            head,
            segments,
        }
    }

    /// Images `[B, 3, H, W]` to unnormalized embeddings `[B, embed_dim]`. `train`
    /// enables stochastic depth, drawn from `rng` when given.
    pub fn forward(&self, images: &Tensor, train: bool, rng: Option<&mut ChaCha8Rng>) -> Tensor {
        let mut rng = rng;
        let mut x = images.shallow_clone();
        for &segment in &self.segments {
            x = self.run_segment(segment, &x, train, rng.as_deref_mut());
        }
        x
    }

    /// The tower as a chain of segments in training mode (for recomputation).
    pub(crate) fn chain(&self) -> TrainingChain<'_> {
        TrainingChain(self)
    }

    fn run_segment(
        &self,
        segment: Segment,
        x: &Tensor,
        train: bool,
        rng: Option<&mut ChaCha8Rng>,
    ) -> Tensor {
        match segment {
            Segment::Stem => self.stem_norm.forward(&self.stem.forward(x)),
            Segment::Downsample(i) => {
                let (norm, conv) = self.stages[i]
                    .downsample
                    .as_ref()
                    .expect("listed stages downsample");
                conv.forward(&norm.forward(x))
            }
            Segment::Block(i, b) => self.stages[i].blocks[b].forward(x, train, rng),
            Segment::Head => self.head(x),
        }
    }

    /// Global average pool, the head LayerNorm over channels, the projection.
    fn head(&self, x: &Tensor) -> Tensor {
        let pooled = x.mean_dim([2i64, 3].as_slice(), false, None::<Kind>);
        let pooled = self.head_norm.forward_nhwc(&pooled);
        match &self.head {
            Head::Linear { weight, bias } => {
                amp::cast(&pooled).linear(&amp::cast(weight), bias.as_ref().map(amp::cast))
            }
            Head::Mlp {
                fc1_w,
                fc1_b,
                fc2_w,
                fc2_b,
            } => amp::cast(&pooled)
                .linear(&amp::cast(fc1_w), Some(amp::cast(fc1_b)))
                .gelu("none")
                .linear(&amp::cast(fc2_w), fc2_b.as_ref().map(amp::cast)),
        }
    }
}

/// [`ConvNext`] in training mode as a [`Chain`].
pub(crate) struct TrainingChain<'a>(&'a ConvNext);

impl Chain for TrainingChain<'_> {
    fn segments(&self) -> usize {
        self.0.segments.len()
    }

    fn segment(&self, i: usize, x: &Tensor, rng: Option<&mut ChaCha8Rng>) -> Tensor {
        self.0.run_segment(self.0.segments[i], x, true, rng)
    }
}
