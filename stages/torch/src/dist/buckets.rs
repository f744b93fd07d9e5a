//! Gradients summed across ranks in a few large messages instead of one per parameter
//! (DDP's buckets): [`GradBuckets`] copies the gradients into flat buffers of about
//! [`BUCKET_BYTES`], all-reduces them back to back, and copies the sums back.

use tch::{Kind, Tensor};

use super::group::{DistError, ProcessGroup};

/// DDP's default bucket size (25 MiB).
pub const BUCKET_BYTES: usize = 25 << 20;

/// Flat buffers laid out once for a list of gradients (same kind and device, e.g. the
/// optimizer's, in its order) plus `extra` float slots at the end of the last bucket
/// (the step's loss and stop flag travel with the gradients instead of in a message of
/// their own).
pub struct GradBuckets {
    /// Per bucket: the flat buffer and the numel of each gradient it holds.
    buckets: Vec<(Tensor, Vec<i64>)>,
    extra: usize,
}

impl GradBuckets {
    /// Lays out buckets for gradients shaped like `grads`.
    pub fn new(
        grads: &[Tensor],
        extra: usize,
        bucket_bytes: usize,
    ) -> Result<GradBuckets, DistError> {
        let first = grads
            .first()
            .ok_or_else(|| DistError::Usage("no gradients to all-reduce".into()))?;
        let (kind, device) = (first.kind(), first.device());
        if grads
            .iter()
            .any(|g| g.kind() != kind || g.device() != device)
        {
            return Err(DistError::Usage(
                "gradients of several dtypes or devices cannot share buckets".into(),
            ));
        }
        let per_bucket = (bucket_bytes / kind.elt_size_in_bytes()).max(1) as i64;
        let mut layout: Vec<Vec<i64>> = vec![Vec::new()];
        let mut filled = 0i64;
        for g in grads {
            let n = g.numel() as i64;
            if filled > 0 && filled + n > per_bucket {
                layout.push(Vec::new());
                filled = 0;
            }
            layout.last_mut().expect("one bucket").push(n);
            filled += n;
        }
        let last = layout.len() - 1;
        let buckets = layout
            .into_iter()
            .enumerate()
            .map(|(i, sizes)| {
                let len: i64 = sizes.iter().sum::<i64>() + if i == last { extra as i64 } else { 0 };
                (Tensor::empty([len], (kind, device)), sizes)
            })
            .collect();
        Ok(GradBuckets { buckets, extra })
    }

    /// Replaces each of `grads` (the layout's) by its sum over the ranks of `group`, and
    /// `extra` by its sums. Returns the summed extras.
    pub fn all_reduce(
        &mut self,
        group: &ProcessGroup,
        grads: &[Tensor],
        extra: &[f64],
    ) -> Result<Vec<f64>, DistError> {
        let expected: usize = self.buckets.iter().map(|(_, s)| s.len()).sum();
        if grads.len() != expected || extra.len() != self.extra {
            return Err(DistError::Usage(format!(
                "all-reduce of {} gradients and {} extras into buckets laid out for {expected} and {}",
                grads.len(),
                extra.len(),
                self.extra
            )));
        }
        tch::no_grad(|| {
            self.pack(grads, extra);
            let flats: Vec<&Tensor> = self.buckets.iter().map(|(t, _)| t).collect();
            group.all_reduce_sum(&flats)?;
            Ok(self.unpack(grads))
        })
    }

    fn pack(&self, grads: &[Tensor], extra: &[f64]) {
        let mut g = grads.iter();
        for (flat, sizes) in &self.buckets {
            let mut at = 0;
            for &n in sizes {
                let grad = g.next().expect("counted");
                flat.narrow(0, at, n).copy_(&grad.reshape([-1]));
                at += n;
            }
        }
        if !extra.is_empty() {
            let (flat, _) = self.buckets.last().expect("one bucket");
            let values = Tensor::from_slice(extra)
                .to_kind(flat.kind())
                .to_device(flat.device());
            flat.narrow(
                0,
                flat.numel() as i64 - extra.len() as i64,
                extra.len() as i64,
            )
            .copy_(&values);
        }
    }

    fn unpack(&self, grads: &[Tensor]) -> Vec<f64> {
        let mut g = grads.iter();
        for (flat, sizes) in &self.buckets {
            let mut at = 0;
            for &n in sizes {
                let mut grad = g.next().expect("counted").shallow_clone();
                grad.copy_(&flat.narrow(0, at, n).view(grad.size().as_slice()));
                at += n;
            }
        }
        let (flat, _) = self.buckets.last().expect("one bucket");
        let n = self.extra as i64;
        let tail = flat
            .narrow(0, flat.numel() as i64 - n, n)
            .to_kind(Kind::Double);
        Vec::<f64>::try_from(&tail.to_device(tch::Device::Cpu)).unwrap_or_default()
    }
}
