//! Where the trainer's batches come from: one iterator of `(images, tokens)` per
//! checkpoint interval.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;
use tch::Tensor;

use crate::batch::BatchTensors;
use crate::data::{Loader, LoaderConfig};

/// One interval's batches: images `[B, 3, S, S]` float32, tokens `[B, L]` int64.
pub type Batches<'a> = Box<dyn Iterator<Item = Result<(Tensor, Tensor), String>> + 'a>;

/// A deterministic source of training batches, addressed by interval so a resumed run
/// asks for exactly the data an uninterrupted one got.
pub trait DataSource {
    /// The batches of interval `interval` (0-based), each of `batch_size` samples.
    fn interval(&mut self, interval: u64, batch_size: u64) -> Result<Batches<'_>, String>;
}

/// Random batches derived from `(seed, interval, index)`: images from a normal
/// distribution, token rows of random ids ending in the end-of-text id (the vocabulary's
/// largest). For tests and the throughput benchmark.
pub struct SyntheticSource {
    /// Seed of every batch (with the interval and batch index).
    pub seed: u64,
    /// Side of the square images, in pixels (the model's `image_size`).
    pub image_size: i64,
    /// Ids per token row (the model's `context_length`).
    pub context_length: i64,
    /// The model's vocabulary; ids are below it and `vocab_size - 1` ends each caption.
    pub vocab_size: i64,
    /// Reuse one batch per interval (benchmarks measure the model, not the generator).
    pub fixed: bool,
}

impl DataSource for SyntheticSource {
    fn interval(&mut self, interval: u64, batch_size: u64) -> Result<Batches<'_>, String> {
        let (seed, s, l, v, fixed) = (
            self.seed,
            self.image_size,
            self.context_length,
            self.vocab_size,
            self.fixed,
        );
        let b = batch_size as i64;
        let make = move |index: u64| {
            let index = if fixed { 0 } else { index };
            let mut rng = ChaCha8Rng::seed_from_u64(tureen_stages::rng::mix(&[
                seed, 0xda7a, interval, index,
            ]));
            let pixels: Vec<f32> = (0..b * 3 * s * s)
                .map(|_| rng.sample(StandardNormal))
                .collect();
            let images = Tensor::from_slice(&pixels).view([b, 3, s, s]);
            // Each caption: random ids, the end-of-text id (the largest), then padding.
            let mut ids = vec![0i64; (b * l) as usize];
            for row in ids.chunks_mut(l as usize) {
                let len = rng.gen_range(2..=l as usize);
                for id in &mut row[..len - 1] {
                    *id = rng.gen_range(1..(v - 1).max(2));
                }
                row[len - 1] = v - 1;
            }
            let tokens = Tensor::from_slice(&ids).view([b, l]);
            (images, tokens)
        };
        Ok(Box::new((0u64..).map(move |i| Ok(make(i)))))
    }
}

/// Batches from the webdataset [`Loader`], one loader epoch per interval.
pub struct LoaderSource {
    /// The loader config; `batch_size` and `samples_per_epoch` are set per interval.
    pub config: LoaderConfig,
    /// Steps (batches) per interval.
    pub steps_per_interval: u64,
}

impl DataSource for LoaderSource {
    fn interval(&mut self, interval: u64, batch_size: u64) -> Result<Batches<'_>, String> {
        let mut config = self.config.clone();
        config.batch_size = batch_size as usize;
        // An epoch of exactly `steps_per_interval` full batches.
        config.samples_per_epoch = Some(self.steps_per_interval * batch_size);
        let loader = Loader::new(config, interval).map_err(|e| e.to_string())?;
        Ok(Box::new(loader.map(|b| {
            b.map(|b| (b.image_tensor(), b.token_tensor()))
                .map_err(|e| e.to_string())
        })))
    }
}
