//! The text tower of open_clip's `CLIP`: token + positional embeddings, pre-LN causal
//! transformer blocks (`transformer.resblocks.*`), final LayerNorm, pooling at the
//! end-of-text token (the largest id in each row) and `text_projection`.
//!
//! open_clip keeps the causal mask as a non-persistent `attn_mask` buffer, so it is not
//! in checkpoints; here it is libtorch's built-in causal attention.

use rand_chacha::ChaCha8Rng;
use tch::nn::Path;
use tch::{Kind, Tensor};

use super::amp;
use super::init;
use super::recompute::Chain;
use super::TextConfig;

struct LayerNorm {
    weight: Tensor,
    bias: Tensor,
    eps: f64,
}

impl LayerNorm {
    fn new(p: &Path, dim: i64, eps: f64) -> Self {
        let (weight, bias) = init::layer_norm(p, dim);
        LayerNorm { weight, bias, eps }
    }

    fn forward(&self, x: &Tensor) -> Tensor {
        let c = self.weight.size()[0];
        amp::full(x).layer_norm([c], Some(&self.weight), Some(&self.bias), self.eps, true)
    }
}

struct Linear {
    weight: Tensor,
    bias: Tensor,
}

impl Linear {
    fn forward(&self, x: &Tensor) -> Tensor {
        amp::cast(x).linear(&amp::cast(&self.weight), Some(amp::cast(&self.bias)))
    }
}

struct ResidualAttentionBlock {
    ln_1: LayerNorm,
    in_proj: Linear,
    out_proj: Linear,
    ln_2: LayerNorm,
    c_fc: Linear,
    c_proj: Linear,
    heads: i64,
}

impl ResidualAttentionBlock {
    fn new(p: &Path, cfg: &TextConfig) -> Self {
        let w = cfg.width;
        let hidden = cfg.mlp_ratio * w;
        // open_clip's `TextTransformer.init_parameters`.
        let attn_std = (w as f64).powf(-0.5);
        let proj_std = attn_std * ((2 * cfg.layers) as f64).powf(-0.5);
        let fc_std = ((2 * w) as f64).powf(-0.5);
        let attn = p / "attn";
        let out = &attn / "out_proj";
        let mlp = p / "mlp";
        let (fc, proj) = (&mlp / "c_fc", &mlp / "c_proj");
        ResidualAttentionBlock {
            ln_1: LayerNorm::new(&(p / "ln_1"), w, cfg.norm_eps),
            in_proj: Linear {
                weight: init::normal(&attn, "in_proj_weight", &[3 * w, w], attn_std),
                bias: init::zeros(&attn, "in_proj_bias", &[3 * w]),
            },
            out_proj: Linear {
                weight: init::normal(&out, "weight", &[w, w], proj_std),
                bias: init::zeros(&out, "bias", &[w]),
            },
            ln_2: LayerNorm::new(&(p / "ln_2"), w, cfg.norm_eps),
            c_fc: Linear {
                weight: init::normal(&fc, "weight", &[hidden, w], fc_std),
                bias: init::zeros(&fc, "bias", &[hidden]),
            },
            c_proj: Linear {
                weight: init::normal(&proj, "weight", &[w, hidden], proj_std),
                bias: init::zeros(&proj, "bias", &[w]),
            },
            heads: cfg.heads,
        }
    }

    fn attention(&self, x: &Tensor) -> Tensor {
        let (b, l, w) = x.size3().expect("text activations are [B, L, W]");
        let h = self.heads;
        let qkv = self
            .in_proj
            .forward(x)
            .view([b, l, 3, h, w / h])
            .permute([2, 0, 3, 1, 4]);
        let (q, k, v) = (qkv.get(0), qkv.get(1), qkv.get(2));
        let y = Tensor::scaled_dot_product_attention(
            &q,
            &k,
            &v,
            None::<Tensor>,
            0.0,
            true,
            None,
            false,
        );
        self.out_proj.forward(&y.transpose(1, 2).reshape([b, l, w]))
    }

    fn forward(&self, x: &Tensor) -> Tensor {
        let x = x + self.attention(&self.ln_1.forward(x));
        let y = self
            .c_proj
            .forward(&self.c_fc.forward(&self.ln_2.forward(&x)).gelu("none"));
        x + y
    }
}

/// The text tower, registered at the root of the model's path like open_clip's `CLIP`
/// (`token_embedding`, `positional_embedding`, `transformer`, `ln_final`,
/// `text_projection`).
pub struct TextTower {
    token_embedding: Tensor,
    positional_embedding: Tensor,
    blocks: Vec<ResidualAttentionBlock>,
    ln_final: LayerNorm,
    text_projection: Tensor,
}

impl TextTower {
    pub fn new(p: &Path, cfg: &TextConfig, embed_dim: i64) -> Self {
        let w = cfg.width;
        let te = p / "token_embedding";
        let token_embedding = init::normal(&te, "weight", &[cfg.vocab_size, w], 0.02);
        let positional_embedding =
            init::normal(p, "positional_embedding", &[cfg.context_length, w], 0.01);
        let blocks = (0..cfg.layers)
            .map(|i| ResidualAttentionBlock::new(&(p / "transformer" / "resblocks" / i), cfg))
            .collect();
        let ln_final = LayerNorm::new(&(p / "ln_final"), w, cfg.norm_eps);
        let text_projection =
            init::normal(p, "text_projection", &[w, embed_dim], (w as f64).powf(-0.5));
        TextTower {
            token_embedding,
            positional_embedding,
            blocks,
            ln_final,
            text_projection,
        }
    }

    /// Token ids `[B, context_length]` (int64) to unnormalized embeddings
    /// `[B, embed_dim]`. Shapes are checked by [`super::Clip::check_batch`].
    pub fn forward(&self, tokens: &Tensor) -> Tensor {
        super::recompute::run(&self.chain(tokens), tokens, None)
    }

    /// The tower on `tokens` as a chain of segments (embedding, each residual block,
    /// the final norm with pooling and projection), for recomputation.
    pub(crate) fn chain<'a>(&'a self, tokens: &'a Tensor) -> TextChain<'a> {
        TextChain {
            tower: self,
            tokens,
        }
    }

    fn embed(&self, tokens: &Tensor) -> Tensor {
        Tensor::embedding(&self.token_embedding, tokens, -1, false, false)
            + &self.positional_embedding
    }

    fn pool(&self, x: &Tensor, tokens: &Tensor) -> Tensor {
        let b = tokens.size()[0];
        let x = self.ln_final.forward(x);
        // Pool at the end-of-text token: the largest id in each row.
        let eot = tokens.argmax(-1, false);
        let rows = Tensor::arange(b, (Kind::Int64, tokens.device()));
        let pooled = x.index(&[Some(rows), Some(eot)]);
        amp::cast(&pooled).matmul(&amp::cast(&self.text_projection))
    }
}

/// [`TextTower`] on one batch of token ids as a [`Chain`]: segment 0 takes the ids.
pub(crate) struct TextChain<'a> {
    tower: &'a TextTower,
    tokens: &'a Tensor,
}

impl Chain for TextChain<'_> {
    fn segments(&self) -> usize {
        self.tower.blocks.len() + 2
    }

    fn segment(&self, i: usize, x: &Tensor, _rng: Option<&mut ChaCha8Rng>) -> Tensor {
        let blocks = &self.tower.blocks;
        match i {
            0 => self.tower.embed(x),
            i if i <= blocks.len() => blocks[i - 1].forward(x),
            _ => self.tower.pool(x, self.tokens),
        }
    }
}
