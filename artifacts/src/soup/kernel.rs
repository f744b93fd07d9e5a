//! The per-element soup arithmetic.
//!
//! For every element, independently of every other (so chunking and thread count cannot
//! change a single bit):
//!
//! ```text
//! acc = +0
//! for each input i, in the order given:  acc = fma(x_i, w_i, acc)   (one rounding each)
//! out = round_to_out_dtype(acc / sum(w))                            (one division, one rounding)
//! ```
//!
//! `acc` is float32 (float64 when the inputs are float64, as in mergekit), or float64 in
//! `--accumulate f64` mode. This is mergekit 0.1.5's `linear` merge (`addcmul_` into a
//! float32 zero tensor, which torch compiles to FMA, then `div_` by the float32 sum of the
//! weights, then `.to(dtype)`), and for unit weights it is also `naive_avg.py`'s
//! `sum(x.float()) / n` because products by 1 are exact.

use half::f16;

use crate::safetensors::Dtype;

/// Elements per inner block: the accumulator and one decoded input block stay in L1.
const BLOCK: usize = 1024;

/// How many blocks ahead of the one being averaged the inputs are prefetched. The inputs
/// are memory maps of the page cache, read through 4 KiB pages: the hardware prefetcher
/// stops at every page boundary, so without this each page of each input starts with a
/// stall on DRAM.
const PREFETCH_BLOCKS: usize = 4;

/// Asks the CPU to start loading `bytes` into the cache (a hint: no effect on results).
#[inline(always)]
fn prefetch(bytes: &[u8]) {
    #[cfg(target_arch = "x86_64")]
    for line in bytes.chunks(64) {
        // SAFETY: prefetching is only a hint, and `line` is a valid slice.
        unsafe {
            core::arch::x86_64::_mm_prefetch::<{ core::arch::x86_64::_MM_HINT_T0 }>(
                line.as_ptr().cast(),
            )
        };
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = bytes;
}

/// Floating accumulator types.
pub(crate) trait Accum: Copy + Send + Sync + 'static {
    const ZERO: Self;
    fn from_f64(v: f64) -> Self;
    fn fma(x: Self, w: Self, acc: Self) -> Self;
    fn div(self, den: Self) -> Self;
    /// Decodes `n` little-endian elements of `dtype` into `out`.
    fn decode(dtype: Dtype, bytes: &[u8], out: &mut [Self]);
    /// Rounds to `dtype` and appends little-endian bytes.
    fn encode(dtype: Dtype, vals: &[Self], clamp_f32: bool, out: &mut [u8]);
}

impl Accum for f32 {
    const ZERO: f32 = 0.0;
    #[inline(always)]
    fn from_f64(v: f64) -> f32 {
        v as f32
    }
    #[inline(always)]
    fn fma(x: f32, w: f32, acc: f32) -> f32 {
        x.mul_add(w, acc)
    }
    #[inline(always)]
    fn div(self, den: f32) -> f32 {
        self / den
    }
    #[inline(always)]
    fn decode(dtype: Dtype, bytes: &[u8], out: &mut [f32]) {
        match dtype {
            Dtype::F32 => {
                for (o, b) in out.iter_mut().zip(bytes.chunks_exact(4)) {
                    *o = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
                }
            }
            Dtype::BF16 => {
                for (o, b) in out.iter_mut().zip(bytes.chunks_exact(2)) {
                    *o = f32::from_bits(u32::from(u16::from_le_bytes([b[0], b[1]])) << 16);
                }
            }
            Dtype::F16 => {
                for (o, b) in out.iter_mut().zip(bytes.chunks_exact(2)) {
                    *o = f16::from_bits(u16::from_le_bytes([b[0], b[1]])).to_f32();
                }
            }
            // Callers accumulate float64 inputs in f64; a narrowing here would be a bug.
            other => unreachable!("f32 accumulator cannot decode {other}"),
        }
    }
    #[inline(always)]
    fn encode(dtype: Dtype, vals: &[f32], _clamp: bool, out: &mut [u8]) {
        encode_f32(dtype, vals, out)
    }
}

impl Accum for f64 {
    const ZERO: f64 = 0.0;
    #[inline(always)]
    fn from_f64(v: f64) -> f64 {
        v
    }
    #[inline(always)]
    fn fma(x: f64, w: f64, acc: f64) -> f64 {
        x.mul_add(w, acc)
    }
    #[inline(always)]
    fn div(self, den: f64) -> f64 {
        self / den
    }
    #[inline(always)]
    fn decode(dtype: Dtype, bytes: &[u8], out: &mut [f64]) {
        if dtype == Dtype::F64 {
            for (o, b) in out.iter_mut().zip(bytes.chunks_exact(8)) {
                *o = f64::from_le_bytes(b.try_into().expect("8 bytes"));
            }
        } else {
            let mut tmp = [0f32; BLOCK];
            let n = out.len();
            f32::decode(dtype, bytes, &mut tmp[..n]);
            for (o, t) in out.iter_mut().zip(&tmp[..n]) {
                *o = f64::from(*t);
            }
        }
    }
    #[inline(always)]
    fn encode(dtype: Dtype, vals: &[f64], clamp_f32: bool, out: &mut [u8]) {
        if dtype == Dtype::F64 {
            for (v, o) in vals.iter().zip(out.chunks_exact_mut(8)) {
                o.copy_from_slice(&v.to_le_bytes());
            }
            return;
        }
        // Narrow to float32 first (timm clamps to the float32 range there, so huge values
        // saturate instead of becoming infinities), then to the output type.
        let mut tmp = [0f32; BLOCK];
        let n = vals.len();
        for (t, v) in tmp.iter_mut().zip(vals) {
            let v = if clamp_f32 && !v.is_nan() {
                v.clamp(f64::from(f32::MIN), f64::from(f32::MAX))
            } else {
                *v
            };
            *t = v as f32;
        }
        encode_f32(dtype, &tmp[..n], out)
    }
}

/// float32 -> output dtype, round to nearest even.
#[inline(always)]
fn encode_f32(dtype: Dtype, vals: &[f32], out: &mut [u8]) {
    match dtype {
        Dtype::F32 => {
            for (v, o) in vals.iter().zip(out.chunks_exact_mut(4)) {
                o.copy_from_slice(&v.to_le_bytes());
            }
        }
        Dtype::BF16 => {
            for (v, o) in vals.iter().zip(out.chunks_exact_mut(2)) {
                o.copy_from_slice(&f32_to_bf16_bits(*v).to_le_bytes());
            }
        }
        Dtype::F16 => {
            for (v, o) in vals.iter().zip(out.chunks_exact_mut(2)) {
                o.copy_from_slice(&f16::from_f32(*v).to_bits().to_le_bytes());
            }
        }
        Dtype::F64 => {
            for (v, o) in vals.iter().zip(out.chunks_exact_mut(8)) {
                o.copy_from_slice(&f64::from(*v).to_le_bytes());
            }
        }
        other => unreachable!("soup output dtype {other} is not a float type"),
    }
}

/// float32 -> bfloat16 bits, round to nearest even; every NaN becomes the canonical quiet
/// NaN 0x7FC0, exactly as torch's `Tensor.to(torch.bfloat16)` does.
#[inline(always)]
pub(crate) fn f32_to_bf16_bits(v: f32) -> u16 {
    let bits = v.to_bits();
    if v.is_nan() {
        return 0x7FC0;
    }
    let rounding_bias = 0x7FFF + ((bits >> 16) & 1);
    (bits.wrapping_add(rounding_bias) >> 16) as u16
}

/// Rounds a value through `dtype` and back (mergekit's `dtype:` option casts inputs to it
/// before merging).
#[inline(always)]
fn round_through<A: Accum>(dtype: Dtype, vals: &mut [A]) {
    let n = vals.len();
    let size = dtype.size();
    let mut buf = [0u8; BLOCK * 8];
    A::encode(dtype, vals, false, &mut buf[..n * size]);
    A::decode(dtype, &buf[..n * size], vals);
}

/// What one chunk of one float tensor needs.
pub(crate) struct FloatJob<'a, A> {
    /// The chunk's bytes in each contributing input (same element count in each).
    pub inputs: &'a [&'a [u8]],
    /// The weight of each contributing input, already in the accumulator type.
    pub weights: &'a [A],
    /// Input element type.
    pub in_dtype: Dtype,
    /// Inputs are rounded through this type first (mergekit's `dtype:`), if set.
    pub cast: Option<Dtype>,
    /// Divide by this (the sum of the weights), or not at all.
    pub den: Option<A>,
    /// Output element type.
    pub out_dtype: Dtype,
    /// Clamp to the float32 range before narrowing (timm's behaviour, f64 mode).
    pub clamp_f32: bool,
}

#[inline(always)]
fn run_generic<A: Accum>(job: &FloatJob<'_, A>, out: &mut [u8]) {
    let in_size = job.in_dtype.size();
    let out_size = job.out_dtype.size();
    let n = out.len() / out_size;
    let mut acc = [A::ZERO; BLOCK];
    let mut x = [A::ZERO; BLOCK];
    let mut start = 0;
    while start < n {
        let len = BLOCK.min(n - start);
        let acc = &mut acc[..len];
        acc.fill(A::ZERO);
        let ahead = (start + PREFETCH_BLOCKS * BLOCK).min(n);
        let until = (ahead + BLOCK).min(n);
        for input in job.inputs {
            prefetch(&input[ahead * in_size..until * in_size]);
        }
        for (input, &w) in job.inputs.iter().zip(job.weights) {
            let x = &mut x[..len];
            A::decode(
                job.in_dtype,
                &input[start * in_size..(start + len) * in_size],
                x,
            );
            if let Some(cast) = job.cast {
                round_through(cast, x);
            }
            for (a, &v) in acc.iter_mut().zip(x.iter()) {
                *a = A::fma(v, w, *a);
            }
        }
        if let Some(den) = job.den {
            for a in acc.iter_mut() {
                *a = a.div(den);
            }
        }
        A::encode(
            job.out_dtype,
            acc,
            job.clamp_f32,
            &mut out[start * out_size..(start + len) * out_size],
        );
        start += len;
    }
}

/// Same code compiled with FMA/AVX2 enabled, so `mul_add` is one instruction and the loops
/// vectorize; results are identical because FMA is exactly specified either way.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn run_avx2<A: Accum>(job: &FloatJob<'_, A>, out: &mut [u8]) {
    run_generic(job, out)
}

/// Averages one chunk into `out` (whose length fixes the element count).
pub(crate) fn run<A: Accum>(job: &FloatJob<'_, A>, out: &mut [u8]) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::is_x86_feature_detected!("avx2")
            && std::is_x86_feature_detected!("fma")
            && std::is_x86_feature_detected!("f16c")
        {
            // SAFETY: the CPU supports every feature the function was compiled for.
            return unsafe { run_avx2(job, out) };
        }
    }
    run_generic(job, out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bf16_rounding_is_nearest_even_with_canonical_nan() {
        assert_eq!(f32_to_bf16_bits(1.0), 0x3F80);
        // 1 + 2^-8 is exactly halfway between two bf16 values: ties to even (down).
        assert_eq!(f32_to_bf16_bits(f32::from_bits(0x3F80_8000)), 0x3F80);
        // Next odd mantissa rounds up on the tie.
        assert_eq!(f32_to_bf16_bits(f32::from_bits(0x3F81_8000)), 0x3F82);
        assert_eq!(f32_to_bf16_bits(f32::from_bits(0x3F80_8001)), 0x3F81);
        assert_eq!(f32_to_bf16_bits(f32::NAN), 0x7FC0);
        assert_eq!(f32_to_bf16_bits(f32::INFINITY), 0x7F80);
        assert_eq!(f32_to_bf16_bits(f32::MAX), 0x7F80, "overflows to infinity");
    }

    #[test]
    fn uses_a_fused_multiply_add_per_input() {
        // acc = -1, then acc = fma(x, x, acc) with x = 1 + 2^-12: the exact product
        // 1 + 2^-11 + 2^-24 meets -1 before any rounding, so the 2^-24 term survives; a
        // separate multiply rounds it away (it is below float32's resolution near 1).
        let e = 2f32.powi(-12);
        let x = 1.0f32 + e;
        let job = FloatJob {
            inputs: &[&(-1.0f32).to_le_bytes(), &x.to_le_bytes()],
            weights: &[1.0f32, x],
            in_dtype: Dtype::F32,
            cast: None,
            den: None,
            out_dtype: Dtype::F32,
            clamp_f32: false,
        };
        let mut out = [0u8; 4];
        run(&job, &mut out);
        assert_eq!(f32::from_le_bytes(out), 2.0 * e + e * e);
        assert_eq!(x * x - 1.0, 2.0 * e, "the unfused result for contrast");
        assert_ne!(f32::from_le_bytes(out), x * x - 1.0);
    }

    #[test]
    fn generic_and_vectorized_paths_agree_on_every_length() {
        let data: Vec<Vec<u8>> = (0..3)
            .map(|k| {
                (0..5000u32)
                    .flat_map(|i| {
                        (((i * 7919 + k * 104729) % 10007) as f32 * 1.37e-3 - 6.0).to_le_bytes()
                    })
                    .collect()
            })
            .collect();
        for n in [1usize, 7, 1023, 1024, 1025, 5000] {
            let inputs: Vec<&[u8]> = data.iter().map(|d| &d[..n * 4]).collect();
            let job = FloatJob {
                inputs: &inputs,
                weights: &[0.2f32, 0.3, 0.5],
                in_dtype: Dtype::F32,
                cast: None,
                den: Some(1.0f32),
                out_dtype: Dtype::BF16,
                clamp_f32: false,
            };
            let mut a = vec![0u8; n * 2];
            let mut b = vec![0u8; n * 2];
            run(&job, &mut a);
            run_generic(&job, &mut b);
            assert_eq!(a, b, "n = {n}");
        }
    }
}
