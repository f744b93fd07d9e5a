//! Evaluation image sets: an image folder (one sub-folder per class, as ImageNet's
//! validation set is usually arranged) or webdataset shards, read in a fixed order with
//! the evaluation transform (resize shorter side + center crop).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rayon::prelude::*;
use tch::Tensor;

use crate::batch::BatchTensors;
use crate::data::{DataError, Loader, LoaderConfig, Transform};
use crate::tokenizer::Tokenizer;

/// File extensions read from image folders.
const FOLDER_EXTENSIONS: [&str; 4] = ["jpg", "jpeg", "png", "JPEG"];

/// Where evaluation images come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EvalSource {
    /// `root/<class folder>/<image>`; folders sorted by name give class indices 0, 1, ...
    ImageFolder(PathBuf),
    /// Shard pattern (brace expansion, `pipe:`) resolved against `base_dir`; labels come
    /// from `.cls`, captions from `.txt`.
    WebDataset {
        /// The shard list, as [`LoaderConfig::shards`].
        shards: String,
        /// The directory relative shards and `pipe:` commands resolve in.
        base_dir: PathBuf,
    },
}

impl EvalSource {
    /// A directory is an image folder; anything else is a shard pattern.
    pub fn detect(spec: &str, base_dir: &Path) -> Self {
        let path = base_dir.join(spec);
        if !spec.starts_with("pipe:") && path.is_dir() {
            EvalSource::ImageFolder(path)
        } else {
            EvalSource::WebDataset {
                shards: spec.to_string(),
                base_dir: base_dir.to_path_buf(),
            }
        }
    }
}

/// One evaluation batch: images `[B, 3, S, S]`, labels (if known), raw captions.
pub struct EvalBatch {
    /// `[B, 3, S, S]` float32 on the CPU, CLIP-normalised.
    pub images: Tensor,
    /// Class labels: the folder index, or `.cls` when every sample has one.
    pub labels: Option<Vec<i64>>,
    /// Each sample's `.txt` (empty strings for an image folder).
    pub texts: Vec<String>,
}

/// Errors reading evaluation data.
#[derive(Debug, thiserror::Error)]
pub enum EvalDataError {
    /// The webdataset loader failed (names the shard or setting).
    #[error(transparent)]
    Data(#[from] DataError),
    /// A folder or image file of an image folder cannot be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The folder or file.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// An image file that does not decode.
    #[error("cannot decode image {path}: {message}")]
    Image {
        /// The image file.
        path: PathBuf,
        /// The decoder's message.
        message: String,
    },
    /// The set has nothing to evaluate: no class folders, no images or no samples.
    #[error("{0}")]
    Layout(String),
}

/// The contents of an image folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageFolder {
    /// Class folder names, sorted (index = class label).
    pub classes: Vec<String>,
    /// `(image path, class label)`, in class then file-name order.
    pub items: Vec<(PathBuf, i64)>,
}

/// Lists an image folder: sub-folders sorted by name are classes 0, 1, ...; their
/// `jpg`/`jpeg`/`png` files, sorted by name, are the images.
pub fn list_image_folder(root: &Path) -> Result<ImageFolder, EvalDataError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| EvalDataError::Io { path, source }
    };
    let mut classes: Vec<PathBuf> = std::fs::read_dir(root)
        .map_err(io(root))?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(io(root))?
        .into_iter()
        .filter(|p| p.is_dir())
        .collect();
    classes.sort();
    if classes.is_empty() {
        return Err(EvalDataError::Layout(format!(
            "{}: no class folders",
            root.display()
        )));
    }
    let mut items = Vec::new();
    for (label, dir) in classes.iter().enumerate() {
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(io(dir))?
            .map(|e| e.map(|e| e.path()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(io(dir))?
            .into_iter()
            .filter(|p| {
                p.extension().and_then(|e| e.to_str()).is_some_and(|e| {
                    FOLDER_EXTENSIONS.contains(&e)
                        || FOLDER_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str())
                })
            })
            .collect();
        files.sort();
        items.extend(files.into_iter().map(|f| (f, label as i64)));
    }
    let names = classes
        .iter()
        .map(|c| {
            c.file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    Ok(ImageFolder {
        classes: names,
        items,
    })
}

/// Calls `f` with each batch of `source`, in order. Image folders are decoded on the
/// rayon pool; webdatasets through the [`Loader`] with `workers` threads. An image that
/// cannot be decoded is an error (evaluation numbers must cover the whole set).
pub fn for_each_batch(
    source: &EvalSource,
    image_size: u32,
    batch_size: usize,
    workers: usize,
    mut f: impl FnMut(EvalBatch) -> anyhow::Result<()>,
) -> anyhow::Result<usize> {
    let mut count = 0;
    match source {
        EvalSource::ImageFolder(root) => {
            let items = list_image_folder(root)?.items;
            if items.is_empty() {
                return Err(EvalDataError::Layout(format!("{}: no images", root.display())).into());
            }
            for chunk in items.chunks(batch_size.max(1)) {
                let pixels: Vec<Vec<f32>> = chunk
                    .par_iter()
                    .map(|(path, _)| -> Result<Vec<f32>, EvalDataError> {
                        let bytes = std::fs::read(path).map_err(|source| EvalDataError::Io {
                            path: path.clone(),
                            source,
                        })?;
                        let image = image::load_from_memory(&bytes)
                            .map_err(|e| EvalDataError::Image {
                                path: path.clone(),
                                message: e.to_string(),
                            })?
                            .into_rgb8();
                        let mut unused = rand::rngs::mock::StepRng::new(0, 0);
                        Ok(Transform::Eval.apply(&image, image_size, &mut unused))
                    })
                    .collect::<Result<_, _>>()?;
                let n = chunk.len() as i64;
                let flat: Vec<f32> = pixels.concat();
                let s = i64::from(image_size);
                count += chunk.len();
                f(EvalBatch {
                    images: Tensor::from_slice(&flat).view([n, 3, s, s]),
                    labels: Some(chunk.iter().map(|(_, l)| *l).collect()),
                    texts: vec![String::new(); chunk.len()],
                })?;
            }
        }
        EvalSource::WebDataset { shards, base_dir } => {
            let mut config = LoaderConfig::new(
                shards.clone(),
                base_dir.clone(),
                batch_size.max(1),
                image_size,
            );
            config.transform = Transform::Eval;
            config.shuffle_buffer = 0;
            config.drop_last = false;
            config.workers = workers.max(1);
            // Captions are tokenized by the evaluator (one per line), not by the loader.
            config.tokenizer = Arc::new(Tokenizer::Byte(crate::tokenizer::ByteTokenizer));
            config.context_length = 2;
            let loader = Loader::new(config, 0)?;
            let stats = loader.stats();
            for batch in loader {
                let batch = batch?;
                count += batch.texts.len();
                f(EvalBatch {
                    images: batch.image_tensor(),
                    labels: batch.labels,
                    texts: batch.texts,
                })?;
            }
            if stats.corrupt() > 0 {
                tracing::warn!("{} corrupt samples skipped in {shards}", stats.corrupt());
            }
            if count == 0 {
                return Err(EvalDataError::Layout(format!("{shards}: no samples")).into());
            }
        }
    }
    Ok(count)
}
