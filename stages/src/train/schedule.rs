//! The learning-rate schedule: linear warmup, then cosine decay to zero (open_clip's
//! `cosine_lr`).

use serde::{Deserialize, Serialize};

/// Warmup + cosine over `total_steps` optimizer steps.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Schedule {
    /// The peak learning rate, reached at the last warmup step.
    pub base_lr: f64,
    /// Steps of linear warmup; 0 starts the cosine at `base_lr`.
    pub warmup_steps: u64,
    /// Steps of the whole schedule, warmup included; the lr reaches zero here.
    pub total_steps: u64,
}

impl Schedule {
    /// The learning rate for optimizer step `step` (0-based):
    /// `base * (step + 1) / warmup` during warmup, then
    /// `0.5 * (1 + cos(pi * (step - warmup) / (total - warmup))) * base`.
    pub fn lr(&self, step: u64) -> f64 {
        if step < self.warmup_steps {
            return self.base_lr * (step + 1) as f64 / self.warmup_steps as f64;
        }
        let e = (step - self.warmup_steps) as f64;
        let es = self.total_steps.saturating_sub(self.warmup_steps) as f64;
        if es <= 0.0 {
            // No decay phase at all: stay at the base rate.
            return self.base_lr;
        }
        0.5 * (1.0 + (std::f64::consts::PI * e / es).cos()) * self.base_lr
    }
}

/// How a checkpoint interval's sample count becomes whole steps.
///
/// open_clip's webdataset training (`get_wds_dataset`, not resampled) rounds *up*:
/// 135,646,078 samples at batch 81,920 are 1,656 steps (the model card's 423,936 steps
/// over 256 intervals); `floor` drops the partial batch instead (1,655).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepRounding {
    /// Round up: a partial last batch still makes a step, as in open_clip (the default).
    #[default]
    Ceil,
    /// Round down: a partial last batch makes no step.
    Floor,
}

/// Optimizer steps in one checkpoint interval: `ceil` or `floor` of `samples / batch`.
pub fn steps_per_interval(
    samples_per_interval: u64,
    batch_size: u64,
    rounding: StepRounding,
) -> u64 {
    match rounding {
        StepRounding::Ceil => samples_per_interval.div_ceil(batch_size),
        StepRounding::Floor => samples_per_interval / batch_size,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warmup_rises_linearly_from_base_over_warmup() {
        let s = Schedule {
            base_lr: 1e-3,
            warmup_steps: 10_000,
            total_steps: 423_936,
        };
        assert_eq!(s.lr(0), 1e-3 / 10_000.0);
        assert_eq!(s.lr(4_999), 1e-3 * 5_000.0 / 10_000.0);
        assert_eq!(s.lr(9_999), 1e-3);
    }

    #[test]
    fn cosine_starts_at_base_and_ends_near_zero() {
        let s = Schedule {
            base_lr: 1e-3,
            warmup_steps: 10_000,
            total_steps: 423_936,
        };
        assert_eq!(s.lr(10_000), 1e-3);
        let mid = 10_000 + (423_936 - 10_000) / 2;
        assert!((s.lr(mid) - 0.5e-3).abs() < 1e-12);
        assert!(s.lr(423_935) < 1e-12 * 1e3);
    }

    #[test]
    fn recipe_numbers_match_the_model_card() {
        // Core: 135,646,078 samples per interval at batch 81,920.
        let c = StepRounding::Ceil;
        assert_eq!(steps_per_interval(135_646_078, 81_920, c), 1_656);
        assert_eq!(steps_per_interval(135_646_078, 81_920, c) * 256, 423_936);
        assert_eq!(
            steps_per_interval(135_646_078, 81_920, StepRounding::Floor),
            1_655
        );
        // Rewind at batch 95,744: the lr jumps at the restart after interval 230.
        let spi = steps_per_interval(135_646_078, 95_744, c);
        assert_eq!(spi, 1_417);
        let rewind = Schedule {
            base_lr: 2e-3,
            warmup_steps: 10_000,
            total_steps: spi * 256,
        };
        let core = Schedule {
            base_lr: 1e-3,
            warmup_steps: 10_000,
            total_steps: 423_936,
        };
        let before = core.lr(230 * 1_656 - 1);
        let after = rewind.lr(230 * spi);
        let expected = 0.5
            * (1.0
                + (std::f64::consts::PI * (230.0 * 1417.0 - 10_000.0)
                    / (1417.0 * 256.0 - 10_000.0))
                    .cos())
            * 2e-3;
        assert_eq!(after, expected);
        assert!(
            after > before,
            "lr jumps up at the rewind: {before} -> {after}"
        );
    }
}
