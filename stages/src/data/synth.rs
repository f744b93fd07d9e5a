//! A deterministic synthetic image-caption dataset with compositional captions, for
//! running and testing the whole recipe on a CPU with real learning signal.
//!
//! Each image shows one shape (circle, square, triangle, cross) of one colour (six
//! colours) at one of five positions in one of two sizes, on a noisy muted background.
//! Captions describe the attributes in several phrasings. Layout written by
//! [`write_dataset`]:
//!
//! ```text
//! OUT/dataset.json                   parameters, counts, shard pattern
//! OUT/train/000000.tar ...           webdataset shards: <key>.jpg + <key>.txt (one caption)
//! OUT/zeroshot/classnames.txt        one class name per line ("red circle"), 24 classes
//! OUT/zeroshot/templates.txt         one prompt template per line, `{c}` = class name
//! OUT/zeroshot/images/<NNN>/<i>.png  image-folder layout, folder NNN = class index
//! OUT/retrieval/000000.tar           <key>.png + <key>.txt (5 captions, one per line)
//! ```
//!
//! Every file is a pure function of the parameters: tar headers carry fixed metadata
//! (mtime 0, uid/gid 0, mode 0644), images are encoded by deterministic encoders, and
//! each image draws from its own seeded RNG, so generation is parallel yet the same
//! seed gives the same bytes.

use std::io::Write;
use std::path::{Path, PathBuf};

use image::{Rgb, RgbImage};
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use serde::Serialize;

use super::rng;

/// Shapes drawn; class names are `<colour> <shape>`.
pub const SHAPES: [&str; 4] = ["circle", "square", "triangle", "cross"];
/// Colour names and their RGB values.
pub const COLOURS: [(&str, [u8; 3]); 6] = [
    ("red", [215, 40, 40]),
    ("green", [40, 175, 60]),
    ("blue", [45, 80, 215]),
    ("yellow", [230, 210, 40]),
    ("purple", [145, 55, 195]),
    ("white", [240, 240, 240]),
];
/// Positions: name and the shape centre as a fraction of the image side.
pub const POSITIONS: [(&str, (f64, f64)); 5] = [
    ("left", (0.27, 0.5)),
    ("right", (0.73, 0.5)),
    ("top", (0.5, 0.27)),
    ("bottom", (0.5, 0.73)),
    ("center", (0.5, 0.5)),
];
/// Sizes: name and the shape radius as a fraction of the image side.
pub const SIZES: [(&str, f64); 2] = [("small", 0.16), ("large", 0.26)];

/// Zero-shot prompt templates written to `zeroshot/templates.txt`.
/// Short enough that a byte tokenizer with context 32 keeps the whole prompt.
pub const ZEROSHOT_TEMPLATES: [&str; 4] =
    ["a photo of a {c}.", "a {c}.", "a picture of a {c}.", "{c}"];

const SPLIT_TRAIN: u64 = 1;
const SPLIT_ZEROSHOT: u64 = 2;
const SPLIT_RETRIEVAL: u64 = 3;

/// Parameters of [`write_dataset`].
#[derive(Debug, Clone, Serialize)]
pub struct SynthConfig {
    /// Training shards (`train/000000.tar`, ...); at least 1.
    pub shards: usize,
    /// Training samples per shard.
    pub per_shard: usize,
    /// Image side in pixels.
    pub size: u32,
    /// Seed of every image and caption: the same seed and sizes give the same bytes.
    pub seed: u64,
    /// Zero-shot images per class (24 classes).
    pub zeroshot_per_class: usize,
    /// Images in the retrieval set (5 captions each).
    pub retrieval: usize,
}

/// What one synthetic image shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scene {
    /// Index into [`SHAPES`].
    pub shape: usize,
    /// Index into [`COLOURS`].
    pub colour: usize,
    /// Index into [`POSITIONS`].
    pub position: usize,
    /// Index into [`SIZES`].
    pub size: usize,
}

impl Scene {
    /// Draws every attribute uniformly.
    pub fn random(rng: &mut ChaCha8Rng) -> Self {
        Scene {
            shape: rng.gen_range(0..SHAPES.len()),
            colour: rng.gen_range(0..COLOURS.len()),
            position: rng.gen_range(0..POSITIONS.len()),
            size: rng.gen_range(0..SIZES.len()),
        }
    }

    /// The zero-shot class of this scene: `colour * 4 + shape`.
    pub fn class(&self) -> usize {
        self.colour * SHAPES.len() + self.shape
    }

    /// Caption number `phrasing` (0..[`PHRASINGS`]) of this scene.
    pub fn caption(&self, phrasing: usize) -> String {
        let (shape, colour) = (SHAPES[self.shape], COLOURS[self.colour].0);
        let (position, size) = (POSITIONS[self.position].0, SIZES[self.size].0);
        let place = if position == "center" {
            "in the center".to_string()
        } else {
            format!("on the {position}")
        };
        // Colour and shape come first, so a short context never cuts them off.
        match phrasing % PHRASINGS {
            0 => format!("a {size} {colour} {shape} {place}"),
            1 => format!("a photo of a {colour} {shape}"),
            2 => format!("{colour} {shape} {place}, {size}"),
            3 => format!("a {colour} {shape}"),
            4 => format!("{size} {colour} {shape} {place}"),
            _ => format!("the {shape} is {colour}, {place}"),
        }
    }
}

/// Number of caption phrasings.
pub const PHRASINGS: usize = 6;

/// Every class name, in label order.
pub fn class_names() -> Vec<String> {
    COLOURS
        .iter()
        .flat_map(|(c, _)| SHAPES.iter().map(move |s| format!("{c} {s}")))
        .collect()
}

/// Renders `scene` as a `size x size` image, with background and jitter from `rng`.
pub fn render(scene: &Scene, size: u32, rng: &mut ChaCha8Rng) -> RgbImage {
    let side = f64::from(size);
    let base: [f64; 3] = {
        let grey = rng.gen_range(60.0..120.0);
        std::array::from_fn(|_| grey + rng.gen_range(-15.0..15.0))
    };
    let colour: [f64; 3] =
        std::array::from_fn(|c| f64::from(COLOURS[scene.colour].1[c]) + rng.gen_range(-18.0..18.0));
    let (px, py) = POSITIONS[scene.position].1;
    let cx = (px + rng.gen_range(-0.06..0.06)) * side;
    let cy = (py + rng.gen_range(-0.06..0.06)) * side;
    let r = SIZES[scene.size].1 * side * rng.gen_range(0.85..1.15);
    let mut image = RgbImage::new(size, size);
    for (x, y, pixel) in image.enumerate_pixels_mut() {
        // 2x2 supersampling for smooth edges.
        let mut cover = 0.0;
        for (ox, oy) in [(0.25, 0.25), (0.75, 0.25), (0.25, 0.75), (0.75, 0.75)] {
            let dx = (f64::from(x) + ox - cx) / r;
            let dy = (f64::from(y) + oy - cy) / r;
            if inside(SHAPES[scene.shape], dx, dy) {
                cover += 0.25;
            }
        }
        let noise = rng.gen_range(-8.0..8.0);
        *pixel = Rgb(std::array::from_fn(|c| {
            let v = cover * colour[c] + (1.0 - cover) * (base[c] + noise);
            v.round().clamp(0.0, 255.0) as u8
        }));
    }
    image
}

/// Whether the point `(dx, dy)` (in units of the shape radius) is inside `shape`.
fn inside(shape: &str, dx: f64, dy: f64) -> bool {
    match shape {
        "circle" => dx * dx + dy * dy <= 1.0,
        "square" => dx.abs() <= 0.8 && dy.abs() <= 0.8,
        "triangle" => (-0.9..=0.9).contains(&dy) && dx.abs() <= (dy + 0.9) / 1.8 * 1.0,
        "cross" => (dx.abs() <= 0.3 && dy.abs() <= 1.0) || (dy.abs() <= 0.3 && dx.abs() <= 1.0),
        _ => false,
    }
}

/// Deterministic tar writer: fixed header metadata, entries in the given order.
struct TarWriter {
    builder: tar::Builder<std::io::BufWriter<std::fs::File>>,
}

impl TarWriter {
    fn create(path: &Path) -> std::io::Result<Self> {
        let file = std::fs::File::create(path)?;
        Ok(TarWriter {
            builder: tar::Builder::new(std::io::BufWriter::new(file)),
        })
    }

    fn add(&mut self, name: &str, data: &[u8]) -> std::io::Result<()> {
        let mut header = tar::Header::new_ustar();
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        header.set_mtime(0);
        header.set_uid(0);
        header.set_gid(0);
        header.set_entry_type(tar::EntryType::Regular);
        self.builder.append_data(&mut header, name, data)
    }

    fn finish(self) -> std::io::Result<()> {
        let mut out = self.builder.into_inner()?;
        out.flush()?;
        out.into_inner().map_err(|e| e.into_error())?.sync_all()
    }
}

fn encode(image: &RgbImage, format: image::ImageFormat) -> Vec<u8> {
    let mut bytes = std::io::Cursor::new(Vec::new());
    image
        .write_to(&mut bytes, format)
        .expect("encoding an in-memory RGB image");
    bytes.into_inner()
}

fn encode_jpeg(image: &RgbImage) -> Vec<u8> {
    let mut bytes = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut bytes, 92)
        .encode_image(image)
        .expect("encoding an in-memory RGB image");
    bytes
}

/// Writes the dataset into `out`, which must not exist (or be an empty directory).
/// Everything is generated in a temporary sibling directory that is renamed into place
/// at the end, so `out` is either complete or absent.
pub fn write_dataset(out: &Path, config: &SynthConfig) -> anyhow::Result<SynthSummary> {
    use anyhow::Context;
    anyhow::ensure!(
        config.shards >= 1 && config.per_shard >= 1,
        "--shards and --per-shard must be at least 1"
    );
    anyhow::ensure!(
        config.size >= 16,
        "--size must be at least 16 pixels, got {}",
        config.size
    );
    if out.exists() {
        let empty = out.is_dir()
            && std::fs::read_dir(out)
                .with_context(|| format!("reading {}", out.display()))?
                .next()
                .is_none();
        anyhow::ensure!(
            empty,
            "{} already exists; choose a new --out directory",
            out.display()
        );
        std::fs::remove_dir(out)
            .with_context(|| format!("replacing empty directory {}", out.display()))?;
    }
    let parent = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&parent).with_context(|| format!("creating {}", parent.display()))?;
    let name = out
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "dataset".into());
    let tmp = tempfile::Builder::new()
        .prefix(&format!(".{name}.tmp-"))
        .tempdir_in(&parent)
        .with_context(|| format!("creating a temporary directory in {}", parent.display()))?;
    let summary = write_into(tmp.path(), config)?;
    let tmp = tmp.keep();
    std::fs::rename(&tmp, out)
        .with_context(|| format!("renaming {} to {}", tmp.display(), out.display()))?;
    Ok(summary)
}

/// Counts of what [`write_dataset`] wrote.
#[derive(Debug, Clone, Serialize)]
pub struct SynthSummary {
    /// Training samples over all shards.
    pub train_samples: usize,
    /// The training shards as one brace pattern, relative to the dataset directory
    /// (`train/{000000..000007}.tar`): a `data:` param can name it as is.
    pub train_shards: String,
    /// Zero-shot classes (`<colour> <shape>`).
    pub classes: usize,
    /// Zero-shot images over all classes.
    pub zeroshot_images: usize,
    /// Images of the retrieval set.
    pub retrieval_images: usize,
    /// Captions of the retrieval set (several per image).
    pub retrieval_captions: usize,
}

fn write_into(dir: &Path, config: &SynthConfig) -> anyhow::Result<SynthSummary> {
    use anyhow::Context;
    let io = |what: &Path| format!("writing {}", what.display());
    let train = dir.join("train");
    std::fs::create_dir_all(&train).with_context(|| io(&train))?;
    let width = 6;
    (0..config.shards)
        .into_par_iter()
        .try_for_each(|shard| -> anyhow::Result<()> {
            let path = train.join(format!("{shard:0width$}.tar"));
            let mut tar = TarWriter::create(&path).with_context(|| io(&path))?;
            for i in 0..config.per_shard {
                let index = shard * config.per_shard + i;
                let mut rng = rng::stream(config.seed, &[SPLIT_TRAIN, index as u64]);
                let scene = Scene::random(&mut rng);
                let caption = scene.caption(rng.gen_range(0..PHRASINGS));
                let image = render(&scene, config.size, &mut rng);
                let key = format!("{index:08}");
                tar.add(&format!("{key}.jpg"), &encode_jpeg(&image))
                    .with_context(|| io(&path))?;
                tar.add(&format!("{key}.txt"), caption.as_bytes())
                    .with_context(|| io(&path))?;
            }
            tar.finish().with_context(|| io(&path))
        })?;

    let zeroshot = dir.join("zeroshot");
    let names = class_names();
    write_file(
        &zeroshot.join("classnames.txt"),
        format!("{}\n", names.join("\n")).as_bytes(),
    )?;
    write_file(
        &zeroshot.join("templates.txt"),
        format!("{}\n", ZEROSHOT_TEMPLATES.join("\n")).as_bytes(),
    )?;
    (0..names.len())
        .into_par_iter()
        .try_for_each(|class| -> anyhow::Result<()> {
            let folder = zeroshot.join("images").join(format!("{class:03}"));
            std::fs::create_dir_all(&folder).with_context(|| io(&folder))?;
            for i in 0..config.zeroshot_per_class {
                let mut rng = rng::stream(config.seed, &[SPLIT_ZEROSHOT, class as u64, i as u64]);
                let mut scene = Scene::random(&mut rng);
                scene.colour = class / SHAPES.len();
                scene.shape = class % SHAPES.len();
                let image = render(&scene, config.size, &mut rng);
                write_file(
                    &folder.join(format!("{i:05}.png")),
                    &encode(&image, image::ImageFormat::Png),
                )?;
            }
            Ok(())
        })?;

    let retrieval = dir.join("retrieval");
    std::fs::create_dir_all(&retrieval).with_context(|| io(&retrieval))?;
    let path = retrieval.join("000000.tar");
    let mut tar = TarWriter::create(&path).with_context(|| io(&path))?;
    let mut captions = 0;
    for i in 0..config.retrieval {
        let mut rng = rng::stream(config.seed, &[SPLIT_RETRIEVAL, i as u64]);
        let scene = Scene::random(&mut rng);
        let lines: Vec<String> = [0, 2, 3, 4, 5].iter().map(|&p| scene.caption(p)).collect();
        captions += lines.len();
        let image = render(&scene, config.size, &mut rng);
        let key = format!("{i:08}");
        tar.add(
            &format!("{key}.png"),
            &encode(&image, image::ImageFormat::Png),
        )
        .with_context(|| io(&path))?;
        tar.add(&format!("{key}.txt"), lines.join("\n").as_bytes())
            .with_context(|| io(&path))?;
    }
    tar.finish().with_context(|| io(&path))?;

    let summary = SynthSummary {
        train_samples: config.shards * config.per_shard,
        train_shards: format!("train/{{{:06}..{:06}}}.tar", 0, config.shards - 1),
        classes: names.len(),
        zeroshot_images: names.len() * config.zeroshot_per_class,
        retrieval_images: config.retrieval,
        retrieval_captions: captions,
    };
    let manifest =
        serde_json::json!({ "format": "tureen-synth-1", "config": config, "summary": summary });
    write_file(
        &dir.join("dataset.json"),
        format!("{}\n", serde_json::to_string_pretty(&manifest)?).as_bytes(),
    )?;
    Ok(summary)
}

fn write_file(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    use anyhow::Context;
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    let mut file =
        std::fs::File::create(path).with_context(|| format!("writing {}", path.display()))?;
    file.write_all(bytes)
        .and_then(|_| file.sync_all())
        .with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn class_index_matches_class_name_order() {
        let names = class_names();
        let scene = Scene {
            shape: 2,
            colour: 3,
            position: 0,
            size: 1,
        };
        assert_eq!(names[scene.class()], "yellow triangle");
        assert_eq!(names.len(), 24);
    }

    #[test]
    fn rendered_shape_has_its_colour_at_the_centre() {
        let scene = Scene {
            shape: 1,
            colour: 2,
            position: 4,
            size: 1,
        };
        let mut rng = rng::stream(1, &[0]);
        let image = render(&scene, 64, &mut rng);
        let p = image.get_pixel(32, 32).0;
        assert!(p[2] > 150 && p[0] < 100, "{p:?}");
    }
}
