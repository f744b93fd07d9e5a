//! Carrying out the plans: every tensor is cut into chunks that rayon threads average (or
//! copy) independently and write straight to their final offsets, so any schedule gives
//! the same bytes and memory does not grow with the model.
//!
//! Each averaged chunk is checked for results that are not finite. A non-finite result
//! where every input was finite is new garbage (an overflow of the float32 accumulator
//! or of the output dtype): the soup fails naming the tensor. One where an input already
//! held an infinity or NaN is inherited (a `-inf` mask, say) and only reported.

use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};

use rayon::prelude::*;

use super::kernel::{self, Accum, FloatJob};
use super::output::Output;
use super::plan::Plan;
use super::{Accumulate, SoupOptions};
use crate::checkpoint::Checkpoint;
use crate::safetensors::{Dtype, SafetensorsError};

/// A result computed non-finite from finite inputs.
const NEW_NON_FINITE: u8 = 1;
/// A non-finite result where an input was already non-finite.
const INHERITED_NON_FINITE: u8 = 2;

/// What one soup computes.
pub(crate) struct Job<'a> {
    pub files: &'a [Checkpoint],
    pub plans: &'a [(String, Plan)],
    pub weights: &'a [f64],
    pub opts: &'a SoupOptions,
}

/// Tensors whose results are not finite, by kind.
#[derive(Debug, Default)]
pub(crate) struct NonFinite {
    /// From finite inputs: an error.
    pub new: Vec<String>,
    /// Where an input was already non-finite: reported.
    pub inherited: Vec<String>,
}

/// One unit of work: a range of elements (averages) or bytes (copies) of one plan.
struct Item {
    plan: usize,
    start: u64,
    end: u64,
}

/// Runs every plan into `out`, calling `progress(done, total)` with output bytes.
pub(crate) fn execute(
    job: &Job<'_>,
    out: &Output,
    progress: Option<&(dyn Fn(u64, u64) + Sync)>,
) -> Result<NonFinite, SafetensorsError> {
    let placements = out.placements();
    let place: Vec<(usize, usize, u64)> = job
        .plans
        .iter()
        .map(|(name, _)| placements[name.as_str()])
        .collect();
    let items = work_items(job, &place);
    let flags: Vec<AtomicU8> = job.plans.iter().map(|_| AtomicU8::new(0)).collect();
    let total = out.total_len();
    let done = AtomicU64::new(0);
    let writers = out.writers();
    items
        .par_iter()
        .try_for_each_init(Vec::<u8>::new, |buf, item| {
            let (name, plan) = &job.plans[item.plan];
            let (w, index, _) = place[item.plan];
            let bytes = match plan {
                Plan::Copy { input, .. } => {
                    let f = &job.files[*input];
                    let data = f.data(f.get(name).expect("planned"));
                    writers[w].write_at(
                        index,
                        item.start,
                        &data[item.start as usize..item.end as usize],
                    )?;
                    item.end - item.start
                }
                Plan::Average { out_dtype, .. } => {
                    let flag = average_chunk(job, name, plan, item, buf);
                    flags[item.plan].fetch_or(flag, Ordering::Relaxed);
                    writers[w].write_at(index, item.start * out_dtype.size() as u64, buf)?;
                    buf.len() as u64
                }
            };
            let so_far = done.fetch_add(bytes, Ordering::Relaxed) + bytes;
            if let Some(p) = progress {
                p(so_far, total);
            }
            Ok::<(), SafetensorsError>(())
        })?;
    let mut report = NonFinite::default();
    for ((name, _), flag) in job.plans.iter().zip(&flags) {
        let f = flag.load(Ordering::Relaxed);
        if f & NEW_NON_FINITE != 0 {
            report.new.push(name.clone());
        } else if f & INHERITED_NON_FINITE != 0 {
            report.inherited.push(name.clone());
        }
    }
    Ok(report)
}

/// Work items in output file order: each rayon thread works through a contiguous run of
/// them, so the output fills window by window and finished windows go to disk while the
/// rest is computed.
fn work_items(job: &Job<'_>, place: &[(usize, usize, u64)]) -> Vec<Item> {
    let chunk = job.opts.chunk_elems.max(1) as u64;
    let mut order: Vec<usize> = (0..job.plans.len()).collect();
    order.sort_by_key(|&i| (place[i].0, place[i].2));
    let mut items = Vec::new();
    for plan in order {
        let p = &job.plans[plan].1;
        let step = match p {
            Plan::Average { .. } => chunk,
            Plan::Copy { .. } => chunk * 4,
        };
        let len = p.len();
        let mut start = 0;
        while start < len {
            let end = (start + step).min(len);
            items.push(Item { plan, start, end });
            start = end;
        }
    }
    items
}

/// Averages one chunk into `buf`; returns the non-finite flags of its results.
fn average_chunk(job: &Job<'_>, name: &str, plan: &Plan, item: &Item, buf: &mut Vec<u8>) -> u8 {
    let Plan::Average {
        inputs: which,
        in_dtype,
        out_dtype,
        wide,
        ..
    } = plan
    else {
        unreachable!("only averages are averaged")
    };
    let in_size = in_dtype.size() as u64;
    let range = (item.start * in_size) as usize..(item.end * in_size) as usize;
    let slices: Vec<&[u8]> = which
        .iter()
        .map(|&k| {
            let f = &job.files[k];
            &f.data(f.get(name).expect("planned"))[range.clone()]
        })
        .collect();
    let w: Vec<f64> = which.iter().map(|&k| job.weights[k]).collect();
    buf.resize(((item.end - item.start) as usize) * out_dtype.size(), 0);
    let avg = Average {
        slices: &slices,
        weights: &w,
        in_dtype: *in_dtype,
        out_dtype: *out_dtype,
        opts: job.opts,
    };
    if *wide {
        avg.run::<f64>(buf);
    } else {
        avg.run::<f32>(buf);
    }
    if !any_non_finite(*out_dtype, buf) {
        return 0;
    }
    let inherited = non_finite_positions(*out_dtype, buf).all(|i| {
        slices
            .iter()
            .any(|s| is_non_finite(*in_dtype, &s[i * in_dtype.size()..]))
    });
    if inherited {
        INHERITED_NON_FINITE
    } else {
        NEW_NON_FINITE
    }
}

/// One chunk of one averaged tensor.
struct Average<'a> {
    slices: &'a [&'a [u8]],
    weights: &'a [f64],
    in_dtype: Dtype,
    out_dtype: Dtype,
    opts: &'a SoupOptions,
}

impl Average<'_> {
    /// Averages with accumulator type `A`.
    fn run<A: Accum>(&self, out: &mut [u8]) {
        let w: Vec<A> = self.weights.iter().map(|&x| A::from_f64(x)).collect();
        // The denominator is the sum of the weights in the accumulator type, left to
        // right. (fma(x, 1, acc) is exactly one rounded addition.)
        let den = self.opts.normalize.then(|| {
            w.iter()
                .fold(A::ZERO, |acc, &x| A::fma(x, A::from_f64(1.0), acc))
        });
        let job = FloatJob {
            inputs: self.slices,
            weights: &w,
            in_dtype: self.in_dtype,
            cast: self.opts.input_cast.filter(|&c| c != self.in_dtype),
            den,
            out_dtype: self.out_dtype,
            clamp_f32: self.opts.accumulate == Accumulate::F64,
        };
        kernel::run(&job, out);
    }
}

/// The exponent bits of a float dtype (all ones: infinity or NaN).
fn exponent_mask(dtype: Dtype) -> u64 {
    match dtype {
        Dtype::F16 => 0x7C00,
        Dtype::BF16 => 0x7F80,
        Dtype::F32 => 0x7F80_0000,
        Dtype::F64 => 0x7FF0_0000_0000_0000,
        _ => 0,
    }
}

fn bits(dtype: Dtype, b: &[u8]) -> u64 {
    match dtype.size() {
        2 => u16::from_le_bytes([b[0], b[1]]).into(),
        4 => u32::from_le_bytes([b[0], b[1], b[2], b[3]]).into(),
        _ => u64::from_le_bytes(b[..8].try_into().expect("8 bytes")),
    }
}

fn is_non_finite(dtype: Dtype, b: &[u8]) -> bool {
    let mask = exponent_mask(dtype);
    mask != 0 && bits(dtype, b) & mask == mask
}

/// Whether any element of `bytes` (little-endian `dtype`) is an infinity or NaN.
fn any_non_finite(dtype: Dtype, bytes: &[u8]) -> bool {
    let mask = exponent_mask(dtype);
    if mask == 0 {
        return false;
    }
    match dtype.size() {
        2 => bytes.chunks_exact(2).fold(false, |acc, b| {
            acc | (u64::from(u16::from_le_bytes([b[0], b[1]])) & mask == mask)
        }),
        4 => bytes.chunks_exact(4).fold(false, |acc, b| {
            acc | (u64::from(u32::from_le_bytes([b[0], b[1], b[2], b[3]])) & mask == mask)
        }),
        _ => bytes.chunks_exact(8).any(|b| is_non_finite(dtype, b)),
    }
}

fn non_finite_positions(dtype: Dtype, bytes: &[u8]) -> impl Iterator<Item = usize> + '_ {
    bytes
        .chunks_exact(dtype.size())
        .enumerate()
        .filter(move |(_, b)| is_non_finite(dtype, b))
        .map(|(i, _)| i)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_finite_values_are_found_in_every_float_dtype() {
        let f32s: Vec<u8> = [1.0f32, f32::INFINITY, 2.0, f32::NAN]
            .iter()
            .flat_map(|x| x.to_le_bytes())
            .collect();
        assert!(any_non_finite(Dtype::F32, &f32s));
        assert_eq!(
            non_finite_positions(Dtype::F32, &f32s).collect::<Vec<_>>(),
            [1, 3]
        );
        assert!(!any_non_finite(Dtype::F32, &f32s[..4]));
        let bf16 = [0x80, 0x3F, 0x80, 0x7F]; // 1.0, +inf
        assert!(any_non_finite(Dtype::BF16, &bf16));
        let f16 = [0x00, 0x3C, 0xFF, 0x7B]; // 1.0, 65504 (the largest finite)
        assert!(!any_non_finite(Dtype::F16, &f16));
        assert!(is_non_finite(Dtype::F64, &f64::NEG_INFINITY.to_le_bytes()));
        assert!(!any_non_finite(Dtype::I64, &[0xFF; 8]));
    }
}
