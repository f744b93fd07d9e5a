//! Where a tensor's elements are: a strided view of a storage, checked to lie inside it.

use std::ops::Range;

use super::{Storage, Tensor};
use crate::safetensors::Dtype;

/// A validated tensor view: every element it names lies inside its storage, and no two
/// elements share bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorView {
    /// Element type.
    pub dtype: Dtype,
    /// Size of each dimension, in elements (empty for a scalar).
    pub shape: Vec<u64>,
    /// Number of elements: the product of `shape`.
    pub numel: u64,
    stride: Vec<u64>,
    /// Byte offset of element 0 in the file.
    first: usize,
    contiguous: bool,
}

impl TensorView {
    /// Checks `tensor` against its `storage`, whose bytes are `entry` in the file.
    pub(crate) fn new(
        tensor: &Tensor,
        storage: &Storage,
        entry: Range<usize>,
    ) -> Result<TensorView, String> {
        let size = storage.dtype.size() as u64;
        let overflow = || format!("size {:?} overflows 64 bits", tensor.shape);
        let numel = tensor
            .shape
            .iter()
            .try_fold(1u64, |acc, &d| acc.checked_mul(d))
            .ok_or_else(overflow)?;
        numel.checked_mul(size).ok_or_else(overflow)?;
        if numel > 0 {
            let last = tensor
                .shape
                .iter()
                .zip(&tensor.stride)
                .try_fold(tensor.offset, |acc, (&d, &s)| {
                    (d - 1).checked_mul(s).and_then(|x| acc.checked_add(x))
                })
                .ok_or_else(overflow)?;
            if last >= storage.numel {
                return Err(format!(
                    "size {:?}, stride {:?} at offset {} reach element {last} of storage {:?}, which holds {} elements (corrupt file)",
                    tensor.shape, tensor.stride, tensor.offset, storage.key, storage.numel
                ));
            }
        }
        let contiguous = numel == 0 || is_contiguous(&tensor.shape, &tensor.stride);
        if !contiguous && !is_non_overlapping(&tensor.shape, &tensor.stride) {
            return Err(format!(
                "stride {:?} for size {:?} makes elements overlap (a broadcast or expanded view); save a contiguous copy (.contiguous()) instead",
                tensor.stride, tensor.shape
            ));
        }
        Ok(TensorView {
            dtype: storage.dtype,
            shape: tensor.shape.clone(),
            numel,
            stride: tensor.stride.clone(),
            // In range: offset < storage numel (or the tensor is empty and starts at most
            // at the entry's end, clamped below), and the entry lies inside the file.
            first: entry.start + (tensor.offset.min(storage.numel) * size) as usize,
            contiguous,
        })
    }

    /// Bytes of the tensor's data.
    pub fn nbytes(&self) -> u64 {
        self.numel * self.dtype.size() as u64
    }

    /// Whether the elements are stored in row-major order without gaps.
    pub fn is_contiguous(&self) -> bool {
        self.contiguous
    }

    /// The file byte range of a contiguous view.
    pub(crate) fn contiguous_range(&self) -> Option<Range<usize>> {
        self.contiguous
            .then(|| self.first..self.first + self.nbytes() as usize)
    }

    /// The elements in row-major order, copied out of `file`.
    pub(crate) fn gather(&self, file: &[u8]) -> Vec<u8> {
        if let Some(r) = self.contiguous_range() {
            return file[r].to_vec();
        }
        let size = self.dtype.size();
        let mut out = Vec::with_capacity(self.nbytes() as usize);
        let mut index = vec![0u64; self.shape.len()];
        for _ in 0..self.numel {
            let offset: u64 = index.iter().zip(&self.stride).map(|(i, s)| i * s).sum();
            let at = self.first + offset as usize * size;
            out.extend_from_slice(&file[at..at + size]);
            // Odometer over the row-major index.
            for d in (0..index.len()).rev() {
                index[d] += 1;
                if index[d] < self.shape[d] {
                    break;
                }
                index[d] = 0;
            }
        }
        out
    }
}

/// Row-major without gaps (dimensions of size 1 may have any stride, as in torch).
fn is_contiguous(shape: &[u64], stride: &[u64]) -> bool {
    let mut expected = 1u64;
    for (&d, &s) in shape.iter().zip(stride).rev() {
        if d != 1 && s != expected {
            return false;
        }
        expected = expected.saturating_mul(d);
    }
    true
}

/// No two index tuples address the same element: with the dimensions of size > 1 sorted
/// by stride, each stride is at least the span of the ones before it.
fn is_non_overlapping(shape: &[u64], stride: &[u64]) -> bool {
    let mut dims: Vec<(u64, u64)> = shape
        .iter()
        .zip(stride)
        .filter(|(&d, _)| d > 1)
        .map(|(&d, &s)| (s, d))
        .collect();
    dims.sort_unstable();
    let mut span = 1u64;
    for (s, d) in dims {
        if s < span {
            return false;
        }
        span = s.saturating_mul(d);
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn storage(numel: u64) -> Storage {
        Storage {
            dtype: Dtype::F32,
            key: "0".into(),
            numel,
        }
    }

    fn tensor(offset: u64, shape: &[u64], stride: &[u64]) -> Tensor {
        Tensor {
            storage: 0,
            offset,
            shape: shape.to_vec(),
            stride: stride.to_vec(),
        }
    }

    fn floats(n: usize) -> Vec<u8> {
        (0..n).flat_map(|i| (i as f32).to_le_bytes()).collect()
    }

    #[test]
    fn a_contiguous_view_is_a_slice_of_its_storage() {
        let v = TensorView::new(&tensor(4, &[2, 2], &[2, 1]), &storage(12), 100..148).unwrap();
        assert!(v.is_contiguous());
        assert_eq!(v.contiguous_range(), Some(116..132));
    }

    #[test]
    fn a_transposed_view_is_gathered_in_row_major_order() {
        let file = floats(6);
        let v = TensorView::new(&tensor(0, &[3, 2], &[1, 3]), &storage(6), 0..24).unwrap();
        assert!(!v.is_contiguous());
        let out: Vec<f32> = v
            .gather(&file)
            .chunks(4)
            .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
            .collect();
        assert_eq!(out, [0.0, 3.0, 1.0, 4.0, 2.0, 5.0]);
    }

    #[test]
    fn views_past_the_storage_or_overlapping_are_refused() {
        let e = TensorView::new(&tensor(10, &[4], &[1]), &storage(12), 0..48).unwrap_err();
        assert!(e.contains("reach element 13"), "{e}");
        let e = TensorView::new(&tensor(0, &[1000], &[0]), &storage(1), 0..4).unwrap_err();
        assert!(e.contains("overlap"), "{e}");
        let e =
            TensorView::new(&tensor(0, &[u64::MAX, 3], &[1, 1]), &storage(4), 0..16).unwrap_err();
        assert!(e.contains("overflows"), "{e}");
    }

    #[test]
    fn empty_and_scalar_tensors() {
        let v = TensorView::new(&tensor(12, &[0, 5], &[5, 1]), &storage(12), 0..48).unwrap();
        assert_eq!(v.contiguous_range(), Some(48..48));
        let v = TensorView::new(&tensor(3, &[], &[]), &storage(12), 0..48).unwrap();
        assert_eq!(v.contiguous_range(), Some(12..16));
    }
}
