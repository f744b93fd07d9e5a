//! Webdataset loading: shard lists, tar reading, shuffling, decoding and augmentation on
//! worker threads, and batching.
//!
//! A dataset is a list of tar shards. Inside a shard, files that share a *key* (the path
//! up to the first `.` of the file name) form one sample: `000042.jpg` + `000042.txt`
//! (+ optional `000042.cls`, an integer class label). Images may be `jpg`, `jpeg` or
//! `png`.
//!
//! The [`Loader`] is deterministic: the batches of a given `(config, epoch)` are the same
//! bytes whatever the number of workers, because
//! - one reader thread walks the shards in a seeded order and feeds a seeded shuffle
//!   buffer, numbering the samples it emits 0, 1, 2, ...;
//! - each sample's augmentation draws from its own RNG seeded by `(seed, epoch, number)`;
//! - a collector puts decoded samples back in number order before batching, and skips
//!   corrupt ones in that order.
//!
//! So a resumed run that asks for `(seed, epoch)` again and skips the batches it already
//! consumed ([`Loader::resume`]) sees exactly the data an uninterrupted run saw.
//! Decoding runs ahead of the consumer by [`LoaderConfig::prefetch`] batches, so the
//! model does not wait on the loader as long as the loader is faster than a step.

mod loader;
use crate::rng;
pub mod shards;
pub mod synth;
pub mod transform;
pub mod webdataset;

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

pub use loader::{Loader, LoaderStats};
pub use shards::{expand_braces, ShardSource};
pub use transform::{AugmentConfig, Transform, CLIP_MEAN, CLIP_STD};
pub use webdataset::RawSample;

use crate::tokenizer::Tokenizer;

/// Errors of the data layer. Every variant names the shard, file or setting at fault.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// A shard pattern that does not expand (bad braces), or a list with no shards.
    #[error("shard pattern {pattern:?}: {message}")]
    Pattern {
        /// The pattern (or the whole list when it names no shard).
        pattern: String,
        /// What is wrong with it.
        message: String,
    },
    /// A local shard file that does not exist (resolved against the base directory).
    #[error("missing shard {0}")]
    MissingShard(PathBuf),
    /// A shard file that exists but cannot be opened.
    #[error("cannot read shard {shard}: {source}")]
    Read {
        /// The shard's path.
        shard: String,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// A `pipe:` shard whose command could not start or exited unsuccessfully.
    #[error("shard source `{command}` failed: {message}")]
    Pipe {
        /// The shell command (without `pipe:`).
        command: String,
        /// Why it failed (its exit status, or the spawn error).
        message: String,
    },
    /// A [`LoaderConfig`] whose numbers cannot work (zero batch size, bad augmentation...).
    #[error("invalid loader config: {0}")]
    Config(String),
    /// A whole pass over the shards (or many resampled draws) gave no usable sample.
    #[error("no valid samples in {0}")]
    Empty(String),
    /// A loader thread went away before the data ended.
    #[error("data loader worker stopped unexpectedly")]
    Disconnected,
}

/// Everything that decides which batches a [`Loader`] yields. With `serde` defaults so
/// a stage can take it (minus `base_dir`, `image_size`, `tokenizer`) from YAML params.
#[derive(Debug, Clone)]
pub struct LoaderConfig {
    /// Shard list: one or more patterns separated by `::` (as open_clip's
    /// `--train-data`), each with brace expansion (`data/{000000..000099}.tar`,
    /// `{a,b}`). A pattern starting with `pipe:` is a shell command whose standard output
    /// is read as one tar stream (`pipe:curl -s https://host/{0..9}.tar`).
    pub shards: String,
    /// Relative shard paths and `pipe:` commands resolve/run in this directory.
    pub base_dir: PathBuf,
    /// Samples per batch.
    pub batch_size: usize,
    /// Output images are `image_size` x `image_size`.
    pub image_size: u32,
    /// Training augmentation or the evaluation transform.
    pub transform: Transform,
    /// Turns captions into ids.
    pub tokenizer: std::sync::Arc<Tokenizer>,
    /// Ids per caption (the text tower's context length).
    pub context_length: usize,
    /// Size of the seeded shuffle buffer; 0 disables shuffling entirely (shards are read
    /// in list order and samples in file order), as for evaluation.
    pub shuffle_buffer: usize,
    /// Draw shards uniformly at random *with replacement* forever (open_clip's
    /// `--dataset-resampled`) instead of one pass over the list per epoch.
    pub resampled: bool,
    /// Base seed of shard order, shuffle buffer and augmentation.
    pub seed: u64,
    /// Decoding threads (at least 1 is used).
    pub workers: usize,
    /// Decoded batches kept ready ahead of the consumer.
    pub prefetch: usize,
    /// If set, an epoch is exactly `samples_per_epoch / batch_size` batches (a
    /// checkpoint interval); without `resampled`, the shard list is passed over again
    /// (reshuffled) as often as needed. If unset, an epoch is one pass (or endless when
    /// `resampled`).
    pub samples_per_epoch: Option<u64>,
    /// Drop a final partial batch of a pass (training); keep it for evaluation.
    pub drop_last: bool,
}

impl LoaderConfig {
    /// A config with sensible defaults for training: byte tokenizer, context 77,
    /// shuffle buffer 1000, not resampled, 2 workers, 4 batches of prefetch, drop_last.
    pub fn new(
        shards: impl Into<String>,
        base_dir: impl Into<PathBuf>,
        batch_size: usize,
        image_size: u32,
    ) -> Self {
        LoaderConfig {
            shards: shards.into(),
            base_dir: base_dir.into(),
            batch_size,
            image_size,
            transform: Transform::Train(AugmentConfig::default()),
            tokenizer: std::sync::Arc::new(Tokenizer::Byte(crate::tokenizer::ByteTokenizer)),
            context_length: 77,
            shuffle_buffer: 1000,
            resampled: false,
            seed: 0,
            workers: 2,
            prefetch: 4,
            samples_per_epoch: None,
            drop_last: true,
        }
    }

    /// Checks the numbers that would otherwise fail deep inside a thread.
    pub fn validate(&self) -> Result<(), DataError> {
        if self.batch_size == 0 {
            return Err(DataError::Config("batch_size must be at least 1".into()));
        }
        if self.image_size == 0 {
            return Err(DataError::Config("image_size must be at least 1".into()));
        }
        if self.context_length < 2 {
            return Err(DataError::Config(
                "context_length must be at least 2 (start and end of text)".into(),
            ));
        }
        if let Transform::Train(aug) = &self.transform {
            aug.validate().map_err(DataError::Config)?;
        }
        Ok(())
    }
}

/// The `data:` block of a training stage: `shards` (or `data`), `shuffle_buffer`,
/// `resampled`, `workers`, `prefetch`, `augment`, `tokenizer`. Unknown keys are errors.
/// Combine with the model's image size via [`DataParams::loader_config`].
///
/// ```yaml
/// data:
///   shards: "train/{000000..000099}.tar"
///   resampled: true
///   augment: {scale: [0.33, 1.0], re_prob: 0.35}
///   tokenizer: {kind: bpe, vocab: bpe_simple_vocab_16e6.txt.gz}
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataParams {
    /// The shard list, see [`LoaderConfig::shards`]. YAML key `shards` (or `data`).
    #[serde(rename = "shards", alias = "data")]
    pub data: String,
    /// Samples in the seeded shuffle buffer (default 1000; 0: read in order), see
    /// [`LoaderConfig::shuffle_buffer`].
    #[serde(default = "default_shuffle_buffer")]
    pub shuffle_buffer: usize,
    /// Draw shards at random with replacement (open_clip's `--dataset-resampled`;
    /// default false), see [`LoaderConfig::resampled`].
    #[serde(default)]
    pub resampled: bool,
    /// Decoding threads (default 2). The batches do not depend on it.
    #[serde(default = "default_workers")]
    pub workers: usize,
    /// Decoded batches kept ready ahead of the trainer (default 4).
    #[serde(default = "default_prefetch")]
    pub prefetch: usize,
    /// Training augmentation (`scale`, `ratio`, `re_prob`).
    #[serde(default)]
    pub augment: AugmentConfig,
    /// `byte` (default) or `{bpe: path}`.
    #[serde(default)]
    pub tokenizer: crate::tokenizer::TokenizerSpec,
}

fn default_shuffle_buffer() -> usize {
    1000
}
fn default_workers() -> usize {
    2
}
fn default_prefetch() -> usize {
    4
}

impl DataParams {
    /// A training [`LoaderConfig`] from these params.
    pub fn loader_config(
        &self,
        base_dir: impl Into<PathBuf>,
        batch_size: usize,
        image_size: u32,
        context_length: usize,
        seed: u64,
    ) -> Result<LoaderConfig, crate::tokenizer::TokenizerError> {
        let base_dir = base_dir.into();
        let tokenizer = std::sync::Arc::new(self.tokenizer.build(&base_dir)?);
        Ok(LoaderConfig {
            shards: self.data.clone(),
            base_dir,
            batch_size,
            image_size,
            transform: Transform::Train(self.augment.clone()),
            tokenizer,
            context_length,
            shuffle_buffer: self.shuffle_buffer,
            resampled: self.resampled,
            seed,
            workers: self.workers,
            prefetch: self.prefetch,
            samples_per_epoch: None,
            drop_last: true,
        })
    }
}

/// One batch, in sample order, as plain row-major buffers (the training and evaluation
/// code turns them into tensors; `tureen_torch::batch`).
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    /// `[len, 3, image_size, image_size]` float32, CLIP mean/std normalised (erasing
    /// applied if configured).
    pub images: Vec<f32>,
    /// Side of each (square) image, in pixels.
    pub image_size: usize,
    /// `[len, context_length]` token ids.
    pub tokens: Vec<i64>,
    /// Ids per caption row of `tokens`.
    pub context_length: usize,
    /// `[len]` class labels when every sample has a `.cls` entry.
    pub labels: Option<Vec<i64>>,
    /// Webdataset keys (`<shard>/<key>`), for debugging and evaluation reports.
    pub keys: Vec<String>,
    /// Raw captions (the `.txt` contents), e.g. for retrieval with several captions.
    pub texts: Vec<String>,
}

impl Batch {
    /// Samples in the batch.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether the batch has no samples.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_params_take_the_pipeline_keys_and_reject_typos() {
        let p: DataParams = serde_json::from_value(serde_json::json!({
            "shards": "train/{0..3}.tar",
            "resampled": true,
            "augment": {"scale": [0.33, 1.0], "re_prob": 0.35},
            "tokenizer": "byte",
        }))
        .unwrap();
        assert_eq!(p.data, "train/{0..3}.tar");
        assert!(p.resampled);
        assert_eq!(p.augment.erase_prob, 0.35);
        assert_eq!(p.augment.scale, (0.33, 1.0));
        assert_eq!(p.shuffle_buffer, 1000);
        let err = serde_json::from_value::<DataParams>(
            serde_json::json!({"shards": "x", "resample": true}),
        )
        .unwrap_err();
        assert!(err.to_string().contains("resample"), "{err}");
    }
}
