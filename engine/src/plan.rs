//! `tureen plan`: what a pipeline will cost before anything runs — steps, samples,
//! FLOPs, checkpoint sizes, store space and GPU-hours per stage, and totals.
//!
//! The engine knows nothing about models, so each kind estimates its own stages through
//! [`StageKind::estimate`](crate::kind::StageKind::estimate), given the estimates of the
//! stages it reads from ([`EstimateInputs`]): a rewind learns the model and the
//! checkpoint schedule from the train stage it restarts, a soup the size of its
//! ingredients. [`plan`] walks the DAG in dependency order, asks every kind, and adds
//! GPU-hours at a stated [`Throughput`].

use std::collections::BTreeMap;

use serde::Serialize;

use crate::kind::estimate::{EstimateInputs, StageEstimate, UpstreamOutput};
use crate::kind::{KindRegistry, StageDecl};
use crate::pipeline::{Pipeline, Target};

/// How fast hardware is assumed to be, for GPU-hours.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Throughput {
    /// Measured training throughput in samples per second per GPU. Applies to training
    /// stages; other stages use `peak_flops x mfu`.
    Samples {
        /// Training samples per second on one GPU (positive).
        per_gpu: f64,
        /// One GPU's peak FLOP/s, for the stages without a sample count.
        peak_flops: f64,
        /// The fraction of `peak_flops` those stages achieve, in (0, 1].
        mfu: f64,
    },
    /// A fraction `mfu` (model FLOP utilisation) of a GPU's peak FLOP/s.
    Flops {
        /// One GPU's peak FLOP/s (e.g. [`Throughput::A100_BF16_PEAK`]).
        peak_flops: f64,
        /// The fraction of `peak_flops` achieved in model FLOPs, in (0, 1].
        mfu: f64,
    },
}

impl Throughput {
    /// NVIDIA A100's dense bf16 peak, the GPU of the model card's runs.
    pub const A100_BF16_PEAK: f64 = 312e12;
    /// Default utilisation: the card's A100 runs trained the xxlarge CLIP at 50-59
    /// samples/s/GPU, which is 21-25% of the A100's bf16 peak in model FLOPs (3 x
    /// forward; with gradient checkpointing the hardware did a fourth forward on top).
    pub const DEFAULT_MFU: f64 = 0.25;

    /// GPU-seconds `estimate` takes: its samples over `per_gpu` when both count
    /// samples, else its FLOPs over `peak_flops * mfu`.
    pub fn gpu_seconds(&self, estimate: &StageEstimate) -> f64 {
        match *self {
            Throughput::Samples {
                per_gpu,
                peak_flops,
                mfu,
            } => match &estimate.work {
                Some(work) => work.samples as f64 / per_gpu,
                None => estimate.flops / (peak_flops * mfu),
            },
            Throughput::Flops { peak_flops, mfu } => estimate.flops / (peak_flops * mfu),
        }
    }

    /// A one-line statement of the assumption, printed with every plan.
    pub fn describe(&self) -> String {
        match *self {
            Throughput::Samples {
                per_gpu,
                peak_flops,
                mfu,
            } => format!(
                "training at {per_gpu} samples/s per GPU; other stages at {:.0}% of {:.0} TFLOP/s",
                mfu * 100.0,
                peak_flops / 1e12
            ),
            Throughput::Flops { peak_flops, mfu } => format!(
                "{:.0}% model FLOP utilisation of {:.0} TFLOP/s per GPU ({:.1} TFLOP/s effective)",
                mfu * 100.0,
                peak_flops / 1e12,
                peak_flops * mfu / 1e12
            ),
        }
    }
}

impl Default for Throughput {
    fn default() -> Self {
        Throughput::Flops {
            peak_flops: Self::A100_BF16_PEAK,
            mfu: Self::DEFAULT_MFU,
        }
    }
}

/// One stage of a [`Plan`].
#[derive(Debug, Clone, Serialize)]
pub struct StagePlan {
    /// The stage's name (after template expansion).
    pub name: String,
    /// The stage's kind (`train`, `soup`, ...).
    pub kind: String,
    /// GPUs the stage declares (`resources.gpus x resources.nodes`).
    pub gpus: u64,
    /// `None` when the kind has no estimate (e.g. a shell command).
    pub estimate: Option<StageEstimate>,
    /// GPU-hours at the plan's [`Throughput`]; 0 without an estimate.
    pub gpu_hours: f64,
    /// Hours on the declared GPUs (`gpu_hours / gpus`); `None` without GPUs.
    pub wall_hours: Option<f64>,
}

/// Totals over all stages.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Totals {
    /// Optimizer steps of every stage that iterates over data.
    pub steps: u64,
    /// Samples processed by every stage that iterates over data.
    pub samples: u64,
    /// FLOPs of every estimated stage.
    pub flops: f64,
    /// Store space every estimated stage's outputs take, in bytes (before sharing
    /// identical objects).
    pub store_bytes: u64,
    /// GPU-hours of every estimated stage; stages without an estimate add nothing.
    pub gpu_hours: f64,
}

/// The whole plan, stages in dependency order.
#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    /// The assumed hardware speed the GPU-hours are computed at.
    pub throughput: Throughput,
    /// Every stage of the pipeline, upstreams before the stages that read them.
    pub stages: Vec<StagePlan>,
    /// Sums over `stages`.
    pub totals: Totals,
}

/// An estimate that failed, naming the stage.
#[derive(Debug, Clone, thiserror::Error)]
#[error("stage `{stage}`: {message}")]
pub struct PlanError {
    /// Name of the stage whose kind could not estimate it.
    pub stage: String,
    /// The kind's error, rendered.
    pub message: String,
}

/// Estimates every stage of `pipeline` (already validated) in dependency order.
pub fn plan(
    pipeline: &Pipeline,
    registry: &KindRegistry,
    throughput: Throughput,
) -> Result<Plan, PlanError> {
    let mut estimates: Vec<Option<StageEstimate>> = vec![None; pipeline.stages.len()];
    let mut stages = Vec::with_capacity(pipeline.stages.len());
    let mut totals = Totals::default();
    for i in pipeline.topo_order() {
        let stage = &pipeline.stages[i];
        let gpus = u64::from(stage.resources.gpus) * u64::from(stage.resources.nodes.max(1));
        let estimate = {
            let mut inputs = EstimateInputs {
                inputs: BTreeMap::new(),
                workspace: &pipeline.root,
                gpus,
                nodes: stage.resources.nodes.max(1),
                slurm: stage.executor == crate::pipeline::Executor::Slurm,
            };
            for (name, input) in &stage.inputs {
                let refs = inputs.inputs.entry(name.as_str()).or_default();
                for r in input.refs() {
                    if let Target::Output {
                        stage: up,
                        output,
                        select,
                    } = &r.target
                    {
                        refs.push(UpstreamOutput {
                            stage: &pipeline.stages[*up].name,
                            kind: &pipeline.stages[*up].kind,
                            output,
                            select: *select,
                            estimate: estimates[*up].as_ref(),
                        });
                    }
                }
            }
            let decl = StageDecl {
                name: &stage.name,
                params: &stage.params,
                input_names: stage.inputs.keys().map(String::as_str).collect(),
                world: stage.world,
            };
            match registry.get(&stage.kind) {
                Some(kind) => kind.estimate(&decl, &inputs).map_err(|e| PlanError {
                    stage: stage.name.clone(),
                    message: e.to_string(),
                })?,
                None => None,
            }
        };
        let gpu_hours = estimate
            .as_ref()
            .map_or(0.0, |e| throughput.gpu_seconds(e) / 3600.0);
        let wall_hours = (gpus > 0 && estimate.is_some()).then(|| gpu_hours / gpus as f64);
        if let Some(e) = &estimate {
            if let Some(w) = &e.work {
                totals.steps += w.steps;
                totals.samples += w.samples;
            }
            totals.flops += e.flops;
            totals.store_bytes += e.store_bytes();
            totals.gpu_hours += gpu_hours;
        }
        estimates[i] = estimate.clone();
        stages.push(StagePlan {
            name: stage.name.clone(),
            kind: stage.kind.clone(),
            gpus,
            estimate,
            gpu_hours,
            wall_hours,
        });
    }
    Ok(Plan {
        throughput,
        stages,
        totals,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kind::estimate::{OutputSize, Work};

    fn train_estimate(samples: u64) -> StageEstimate {
        StageEstimate {
            work: Some(Work {
                steps: samples / 10,
                samples,
            }),
            flops: samples as f64 * 1e9,
            outputs: vec![OutputSize {
                name: "checkpoints".into(),
                count: 3,
                bytes_each: 7,
            }],
            ..Default::default()
        }
    }

    #[test]
    fn gpu_seconds_follow_the_stated_throughput() {
        let e = train_estimate(1000);
        let flops = Throughput::Flops {
            peak_flops: 1e12,
            mfu: 0.5,
        };
        assert_eq!(flops.gpu_seconds(&e), 2.0);
        let samples = Throughput::Samples {
            per_gpu: 100.0,
            peak_flops: 1e12,
            mfu: 0.5,
        };
        assert_eq!(samples.gpu_seconds(&e), 10.0);
        let eval = StageEstimate {
            flops: 1e12,
            ..Default::default()
        };
        assert_eq!(samples.gpu_seconds(&eval), 2.0);
    }

    #[test]
    fn store_bytes_add_every_output() {
        let mut e = train_estimate(10);
        e.outputs.push(OutputSize {
            name: "final".into(),
            count: 1,
            bytes_each: 5,
        });
        assert_eq!(e.store_bytes(), 26);
    }
}
