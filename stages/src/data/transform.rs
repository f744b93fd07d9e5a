//! Image transforms: the training augmentation of the recipe (RandomResizedCrop with
//! bicubic resampling, CLIP normalisation, random erasing) and the evaluation transform
//! (resize shorter side + center crop).
//!
//! Random draws follow torchvision's/timm's algorithms (same distributions, same order
//! of draws, same rounding), from the sample's own seeded generator.

use image::imageops::{self, FilterType};
use image::RgbImage;
use rand::Rng;
use rand_distr::StandardNormal;
use serde::{Deserialize, Serialize};

/// CLIP's per-channel mean (RGB, on 0..1 pixel values).
pub const CLIP_MEAN: [f32; 3] = [0.481_454_66, 0.457_827_5, 0.408_210_73];
/// CLIP's per-channel standard deviation.
#[allow(clippy::excessive_precision)] // the published values, digit for digit
pub const CLIP_STD: [f32; 3] = [0.268_629_54, 0.261_302_58, 0.275_777_11];

/// Training augmentation parameters (the recipe's `--aug-cfg`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AugmentConfig {
    /// RandomResizedCrop area range, as a fraction of the image (open_clip default
    /// (0.9, 1.0); the recipe uses (0.33, 1.0), the rewind (0.3, 1.0)).
    pub scale: (f64, f64),
    /// RandomResizedCrop aspect-ratio range (width / height), sampled log-uniformly.
    pub ratio: (f64, f64),
    /// Probability of random erasing (timm's `re_prob`; 0.35 in the recipe, 0.4 in the
    /// rewind); YAML key `re_prob` (or `erase_prob`). Erasing uses timm's defaults: one box of 2%..33% of the area, aspect
    /// 0.3..3.3 (log-uniform), filled per pixel with N(0, 1) in normalised space.
    #[serde(rename = "re_prob", alias = "erase_prob")]
    pub erase_prob: f64,
}

impl Default for AugmentConfig {
    fn default() -> Self {
        AugmentConfig {
            scale: (0.9, 1.0),
            ratio: (3.0 / 4.0, 4.0 / 3.0),
            erase_prob: 0.0,
        }
    }
}

impl AugmentConfig {
    /// Checks ranges; the message names the field.
    pub fn validate(&self) -> Result<(), String> {
        let (s0, s1) = self.scale;
        if !(s0 > 0.0 && s0 <= s1 && s1 <= 1.0) {
            return Err(format!(
                "augment.scale: expected 0 < min <= max <= 1, got ({s0}, {s1})"
            ));
        }
        let (r0, r1) = self.ratio;
        if !(r0 > 0.0 && r0 <= r1 && r1.is_finite()) {
            return Err(format!(
                "augment.ratio: expected 0 < min <= max, got ({r0}, {r1})"
            ));
        }
        if !(0.0..=1.0).contains(&self.erase_prob) {
            return Err(format!(
                "augment.re_prob: expected a probability in [0, 1], got {}",
                self.erase_prob
            ));
        }
        Ok(())
    }
}

/// Which transform a loader applies.
#[derive(Debug, Clone, PartialEq)]
pub enum Transform {
    /// Random resized crop + normalisation + random erasing.
    Train(AugmentConfig),
    /// Resize the shorter side to the output size (bicubic), center crop, normalise.
    Eval,
}

impl Transform {
    /// Transforms `image` into a `3 x size x size` CHW float buffer, CLIP-normalised.
    pub fn apply<R: Rng>(&self, image: &RgbImage, size: u32, rng: &mut R) -> Vec<f32> {
        match self {
            Transform::Train(aug) => {
                let (top, left, h, w) =
                    rrc_params(image.width(), image.height(), aug.scale, aug.ratio, rng);
                let crop = imageops::crop_imm(image, left, top, w, h).to_image();
                let resized = resize_exact(&crop, size, size);
                let mut chw = normalize(&resized);
                random_erase(&mut chw, size as usize, size as usize, aug.erase_prob, rng);
                chw
            }
            Transform::Eval => normalize(&resize_center_crop(image, size)),
        }
    }
}

fn resize_exact(image: &RgbImage, w: u32, h: u32) -> RgbImage {
    if image.width() == w && image.height() == h {
        image.clone()
    } else {
        // Catmull-Rom is the bicubic kernel with a = -0.5, PIL's and torchvision's choice;
        // `image` widens the kernel when downscaling (antialiasing), as PIL does.
        imageops::resize(image, w, h, FilterType::CatmullRom)
    }
}

/// Python's `int(round(x))`: round half to even.
fn round_half_even(x: f64) -> i64 {
    x.round_ties_even() as i64
}

/// RandomResizedCrop's crop box `(top, left, height, width)` for an image of
/// `width x height`: up to 10 tries of an area fraction uniform in `scale` and a
/// log-uniform aspect ratio in `ratio`; if no box fits, a center crop with the ratio
/// clamped to `ratio` (torchvision's and timm's algorithm).
pub fn rrc_params<R: Rng>(
    width: u32,
    height: u32,
    scale: (f64, f64),
    ratio: (f64, f64),
    rng: &mut R,
) -> (u32, u32, u32, u32) {
    let (img_w, img_h) = (i64::from(width), i64::from(height));
    let area = (img_w * img_h) as f64;
    let log_ratio = (ratio.0.ln(), ratio.1.ln());
    for _ in 0..10 {
        let target_area = area * uniform(rng, scale.0, scale.1);
        let aspect = uniform(rng, log_ratio.0, log_ratio.1).exp();
        let w = round_half_even((target_area * aspect).sqrt());
        let h = round_half_even((target_area / aspect).sqrt());
        if 0 < w && w <= img_w && 0 < h && h <= img_h {
            let top = rng.gen_range(0..=img_h - h);
            let left = rng.gen_range(0..=img_w - w);
            return (top as u32, left as u32, h as u32, w as u32);
        }
    }
    let in_ratio = img_w as f64 / img_h as f64;
    let (w, h) = if in_ratio < ratio.0 {
        (img_w, round_half_even(img_w as f64 / ratio.0))
    } else if in_ratio > ratio.1 {
        (round_half_even(img_h as f64 * ratio.1), img_h)
    } else {
        (img_w, img_h)
    };
    (
        ((img_h - h) / 2) as u32,
        ((img_w - w) / 2) as u32,
        h as u32,
        w as u32,
    )
}

/// Python's `random.uniform(a, b)`.
fn uniform<R: Rng>(rng: &mut R, a: f64, b: f64) -> f64 {
    a + (b - a) * rng.gen::<f64>()
}

/// timm's `RandomErasing` in `pixel` mode with one box, on a normalised CHW buffer:
/// with probability `p`, up to 10 tries to place a box of area fraction U(0.02, 1/3)
/// and log-uniform aspect in (0.3, 1/0.3) strictly inside the image; the first box that
/// fits is filled with standard normal noise, per pixel and channel.
pub fn random_erase<R: Rng>(chw: &mut [f32], height: usize, width: usize, p: f64, rng: &mut R) {
    if p <= 0.0 || rng.gen::<f64>() > p {
        return;
    }
    let area = (height * width) as f64;
    let log_aspect = (0.3f64.ln(), (1.0f64 / 0.3).ln());
    for _ in 0..10 {
        let target_area = uniform(rng, 0.02, 1.0 / 3.0) * area;
        let aspect = uniform(rng, log_aspect.0, log_aspect.1).exp();
        let h = round_half_even((target_area * aspect).sqrt());
        let w = round_half_even((target_area / aspect).sqrt());
        if w < width as i64 && h < height as i64 {
            let top = rng.gen_range(0..=height as i64 - h) as usize;
            let left = rng.gen_range(0..=width as i64 - w) as usize;
            let plane = height * width;
            for c in 0..3 {
                for y in top..top + h as usize {
                    let row = c * plane + y * width;
                    for value in &mut chw[row + left..row + left + w as usize] {
                        *value = rng.sample(StandardNormal);
                    }
                }
            }
            return;
        }
    }
}

/// Resize so the shorter side is `size` (bicubic; the longer side is
/// `int(size * long / short)` as in torchvision), then crop the center `size x size`.
pub fn resize_center_crop(image: &RgbImage, size: u32) -> RgbImage {
    let (w, h) = (image.width(), image.height());
    let (new_w, new_h) = if w <= h {
        (
            size,
            ((u64::from(size) * u64::from(h)) / u64::from(w)) as u32,
        )
    } else {
        (
            ((u64::from(size) * u64::from(w)) / u64::from(h)) as u32,
            size,
        )
    };
    let resized = resize_exact(image, new_w.max(size), new_h.max(size));
    let top = round_half_even(f64::from(resized.height() - size) / 2.0) as u32;
    let left = round_half_even(f64::from(resized.width() - size) / 2.0) as u32;
    imageops::crop_imm(&resized, left, top, size, size).to_image()
}

/// RGB8 HWC -> float CHW, `(x / 255 - mean) / std` per channel.
pub fn normalize(image: &RgbImage) -> Vec<f32> {
    let (w, h) = (image.width() as usize, image.height() as usize);
    let plane = w * h;
    let mut out = vec![0f32; 3 * plane];
    let scale: [f32; 3] = std::array::from_fn(|c| 1.0 / (255.0 * CLIP_STD[c]));
    let shift: [f32; 3] = std::array::from_fn(|c| CLIP_MEAN[c] / CLIP_STD[c]);
    for (i, pixel) in image.as_raw().chunks_exact(3).enumerate() {
        for c in 0..3 {
            out[c * plane + i] = f32::from(pixel[c]) * scale[c] - shift[c];
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    #[test]
    fn rrc_boxes_stay_inside_and_respect_scale_and_ratio() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        for _ in 0..2000 {
            let (top, left, h, w) = rrc_params(200, 120, (0.33, 1.0), (0.75, 4.0 / 3.0), &mut rng);
            assert!(top + h <= 120 && left + w <= 200);
            let frac = f64::from(h * w) / (200.0 * 120.0);
            // Rounding of the sides moves the area a little; the fallback is the full image.
            assert!(frac > 0.3 && frac <= 1.0, "area fraction {frac}");
            let r = f64::from(w) / f64::from(h);
            assert!(r > 0.7 && r < 1.4, "ratio {r}");
        }
    }

    #[test]
    fn rrc_falls_back_to_a_center_crop_with_clamped_ratio() {
        // A 1000x10 strip: no box with ratio <= 4/3 covering >= 90% fits in 10 tries.
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let (top, left, h, w) = rrc_params(1000, 10, (0.9, 1.0), (0.75, 4.0 / 3.0), &mut rng);
        assert_eq!((top, h, w), (0, 10, 13));
        assert_eq!(left, (1000 - 13) / 2);
    }

    #[test]
    fn erasing_with_probability_one_changes_a_bounded_box() {
        let (h, w) = (32, 32);
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        let mut changed_fracs = Vec::new();
        for _ in 0..200 {
            let mut buf = vec![100.0f32; 3 * h * w];
            random_erase(&mut buf, h, w, 1.0, &mut rng);
            let changed = buf.iter().filter(|&&v| v != 100.0).count();
            changed_fracs.push(changed as f64 / (3 * h * w) as f64);
        }
        assert!(changed_fracs.iter().all(|&f| f < 0.34 + 0.05));
        let erased = changed_fracs.iter().filter(|&&f| f > 0.0).count();
        assert!(erased >= 190, "erased {erased} of 200");
    }

    #[test]
    fn erasing_with_probability_zero_is_identity() {
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        let mut buf = vec![1.0f32; 3 * 16 * 16];
        random_erase(&mut buf, 16, 16, 0.0, &mut rng);
        assert!(buf.iter().all(|&v| v == 1.0));
    }

    #[test]
    fn eval_transform_center_crops_to_a_square() {
        let mut image = RgbImage::new(40, 20);
        for (x, _, p) in image.enumerate_pixels_mut() {
            *p = image::Rgb([if (10..30).contains(&x) { 255 } else { 0 }, 0, 0]);
        }
        let out = resize_center_crop(&image, 20);
        assert_eq!(out.dimensions(), (20, 20));
        assert_eq!(out.get_pixel(10, 10).0[0], 255);
        let chw = normalize(&out);
        assert_eq!(chw.len(), 3 * 400);
        assert!((chw[210] - (1.0 - CLIP_MEAN[0]) / CLIP_STD[0]).abs() < 1e-5);
    }
}
