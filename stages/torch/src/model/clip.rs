//! [`Clip`]: the two towers, the learned temperature and the contrastive loss.

use std::cell::Cell;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use tch::nn::Path;
use tch::{Kind, Reduction, Tensor};

use super::convnext::ConvNext;
use super::init;
use super::recompute;
use super::text::TextTower;
use super::ClipConfig;

/// A batch that does not fit the model, naming the tensor.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{tensor}: expected {expected}, got {got:?}")]
pub struct ShapeError {
    /// `images` or `tokens`.
    pub tensor: &'static str,
    /// The dtype and shape the config calls for, in words.
    pub expected: String,
    /// The tensor's actual shape.
    pub got: Vec<i64>,
}

/// What recomputing a training pass needs: see [`Clip::encode_recomputable`].
pub struct Recompute {
    image: recompute::Tape,
    text: recompute::Tape,
    tokens: Tensor,
}

/// open_clip's `CLIP` with a timm ConvNeXt image tower. Parameters are registered in a
/// tch `VarStore` under exactly open_clip's `state_dict` names.
pub struct Clip {
    visual: ConvNext,
    text: TextTower,
    logit_scale: Tensor,
    cfg: ClipConfig,
    drop_path_seed: Cell<Option<u64>>,
}

impl Clip {
    /// Registers and initialises every parameter under `vs` (normally the store's root).
    /// Initialisation follows open_clip/timm's recipes; seed libtorch
    /// (`tch::manual_seed`) first for repeatable weights.
    pub fn new(vs: &Path, cfg: &ClipConfig) -> Clip {
        let visual = ConvNext::new(&(vs / "visual"), &cfg.vision, cfg.embed_dim);
        let text = TextTower::new(vs, &cfg.text, cfg.embed_dim);
        let logit_scale = init::constant(vs, "logit_scale", &[], cfg.init_logit_scale);
        Clip {
            visual,
            text,
            logit_scale,
            cfg: cfg.clone(),
            drop_path_seed: Cell::new(None),
        }
    }

    /// The config the model was built from.
    pub fn config(&self) -> &ClipConfig {
        &self.cfg
    }

    /// Checks a batch's shapes and dtypes against the config: images `[B, 3, S, S]`
    /// floating point, tokens `[B, context_length]` int64 (either may be `None`).
    pub fn check_batch(
        &self,
        images: Option<&Tensor>,
        tokens: Option<&Tensor>,
    ) -> Result<(), ShapeError> {
        let s = self.cfg.vision.image_size;
        if let Some(images) = images {
            let size = images.size();
            if size.len() != 4
                || size[1] != 3
                || size[2] != s
                || size[3] != s
                || !images.is_floating_point()
            {
                return Err(ShapeError {
                    tensor: "images",
                    expected: format!("float [B, 3, {s}, {s}]"),
                    got: size,
                });
            }
        }
        if let Some(tokens) = tokens {
            let size = tokens.size();
            let l = self.cfg.text.context_length;
            if size.len() != 2 || size[1] != l || tokens.kind() != Kind::Int64 {
                return Err(ShapeError {
                    tensor: "tokens",
                    expected: format!("int64 [B, {l}]"),
                    got: size,
                });
            }
        }
        if let (Some(i), Some(t)) = (images, tokens) {
            if i.size()[0] != t.size()[0] {
                return Err(ShapeError {
                    tensor: "tokens",
                    expected: format!("as many rows as images ({})", i.size()[0]),
                    got: t.size(),
                });
            }
        }
        Ok(())
    }

    /// Images `[B, 3, S, S]` (normalized) to unnormalized image features
    /// `[B, embed_dim]`. `train` enables stochastic depth (see
    /// [`Clip::seed_stochastic_depth`]).
    pub fn encode_image(&self, images: &Tensor, train: bool) -> Tensor {
        match self.drop_path_rng() {
            Some(mut rng) if train => self.visual.forward(images, train, Some(&mut rng)),
            _ => self.visual.forward(images, train, None),
        }
    }

    /// The drop-path generator a training-mode image pass starts from.
    fn drop_path_rng(&self) -> Option<ChaCha8Rng> {
        self.drop_path_seed.get().map(ChaCha8Rng::seed_from_u64)
    }

    /// Training-mode features of both towers (image, text; unnormalized) computed
    /// without autograd, keeping only what [`Clip::backward_recomputed`] needs to
    /// recompute each block in the backward pass (gradient checkpointing).
    pub fn encode_recomputable(
        &self,
        images: &Tensor,
        tokens: &Tensor,
    ) -> (Tensor, Tensor, Recompute) {
        let (image, image_tape) =
            recompute::forward(&self.visual.chain(), images, self.drop_path_rng());
        let (text, text_tape) = recompute::forward(&self.text.chain(tokens), tokens, None);
        let r = Recompute {
            image: image_tape,
            text: text_tape,
            tokens: tokens.shallow_clone(),
        };
        (image, text, r)
    }

    /// Back-propagates the gradients of the features [`Clip::encode_recomputable`]
    /// returned, block by block, into the parameters. Equal to back-propagating them
    /// through a pass that kept its activations.
    pub fn backward_recomputed(
        &self,
        r: Recompute,
        image_grad: &Tensor,
        text_grad: &Tensor,
    ) -> Result<(), String> {
        recompute::backward(&self.visual.chain(), r.image, image_grad)?;
        recompute::backward(&self.text.chain(&r.tokens), r.text, text_grad)
    }

    /// Makes every following training-mode [`Clip::encode_image`] draw its
    /// stochastic-depth masks from a generator seeded with `seed` (the same masks for
    /// the same seed and batch size), instead of libtorch's process-global generator.
    pub fn seed_stochastic_depth(&self, seed: u64) {
        self.drop_path_seed.set(Some(seed));
    }

    /// Token ids `[B, context_length]` to unnormalized text features `[B, embed_dim]`.
    pub fn encode_text(&self, tokens: &Tensor) -> Tensor {
        self.text.forward(tokens)
    }

    /// The learned log-temperature (a scalar parameter).
    pub fn logit_scale(&self) -> &Tensor {
        &self.logit_scale
    }

    /// Clamps `logit_scale` into [0, ln 100] in place, as open_clip does after every
    /// optimizer step.
    pub fn clamp_logit_scale(&self) {
        tch::no_grad(|| {
            let _ = self.logit_scale.shallow_clone().clamp_(0.0, 100f64.ln());
        });
    }

    /// Forward both towers and return the contrastive loss of the batch.
    pub fn loss(&self, images: &Tensor, tokens: &Tensor, train: bool) -> Tensor {
        let image_features = self.encode_image(images, train);
        let text_features = self.encode_text(tokens);
        clip_loss(&image_features, &text_features, &self.logit_scale)
    }
}

/// L2-normalizes rows like `F.normalize(x, dim=-1)` (norm floored at 1e-12).
pub fn normalize(x: &Tensor) -> Tensor {
    let norm = x
        .norm_scalaropt_dim(2.0, [-1i64].as_slice(), true)
        .clamp_min(1e-12);
    x / norm
}

/// Symmetric InfoNCE: the mean of image->text and text->image cross-entropy over the
/// batch, with logits `exp(logit_scale) * norm(img) . norm(txt)` (open_clip's
/// `ClipLoss` on one device). Computed in float32 whatever the features' dtype.
pub fn clip_loss(image_features: &Tensor, text_features: &Tensor, logit_scale: &Tensor) -> Tensor {
    let img = normalize(&image_features.to_kind(Kind::Float));
    let txt = normalize(&text_features.to_kind(Kind::Float));
    let logits = img.matmul(&txt.tr()) * logit_scale.to_kind(Kind::Float).exp();
    let n = logits.size()[0];
    let labels = Tensor::arange(n, (Kind::Int64, logits.device()));
    let a = logits.cross_entropy_loss(&labels, None::<Tensor>, Reduction::Mean, -100, 0.0);
    let b = logits
        .tr()
        .cross_entropy_loss(&labels, None::<Tensor>, Reduction::Mean, -100, 0.0);
    (a + b) / 2.0
}

/// open_clip's local loss (`--local-loss`) of the rows `start..start + len` of a global
/// batch: logits of those images against every text and of those texts against every
/// image, cross-entropy averaged over the rows, the two directions averaged. Summed over
/// disjoint row ranges that cover the batch, each weighted by `len / batch`, it is the
/// [`clip_loss`] of the whole batch; each rank (or micro-batch) needs only its rows.
pub fn clip_loss_rows(
    image_features: &Tensor,
    text_features: &Tensor,
    logit_scale: &Tensor,
    start: i64,
    len: i64,
) -> Tensor {
    let img = normalize(&image_features.to_kind(Kind::Float));
    let txt = normalize(&text_features.to_kind(Kind::Float));
    let scale = logit_scale.to_kind(Kind::Float).exp();
    let labels = Tensor::arange_start(start, start + len, (Kind::Int64, img.device()));
    let ce = |logits: Tensor| {
        logits.cross_entropy_loss(&labels, None::<Tensor>, Reduction::Mean, -100, 0.0)
    };
    let i2t = ce(img.narrow(0, start, len).matmul(&txt.tr()) * &scale);
    let t2i = ce(txt.narrow(0, start, len).matmul(&img.tr()) * &scale);
    (i2t + t2i) / 2.0
}
