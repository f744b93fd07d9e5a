//! What `tureen plan` counts for an `open_clip` stage: open_clip's steps and epochs,
//! on the CLIP compute model of [`crate::plan`].

use tureen_engine::kind::estimate::{EstimateInputs, StageEstimate};
use tureen_engine::kind::{ParamError, StageDecl};

use super::OpenClipParams;
use crate::plan::{
    model_from_params, train_estimate, train_flops_per_sample, ClipEstimate, TrainWork,
};

/// Estimate of an `open_clip` stage (`python -m open_clip_train.main`), from its params
/// as open_clip reads them. `batch_size` is per GPU and the world is what the kind
/// launches: one process per GPU (at least one per node) under `srun` on Slurm, one
/// process locally. Steps per epoch are those of open_clip's webdataset loader
/// (`ceil(train_num_samples / global batch)`, rounded up to a multiple of `workers`);
/// each epoch is one interval and one checkpoint of weights and AdamW moments. The
/// compute needs the model's config: the `model` param gives it unless `extra_args` pass
/// another `--model`, and then FLOPs and checkpoint sizes are unknown (`NaN` FLOPs, no
/// model), as a note says.
pub(super) fn estimate(
    decl: &StageDecl<'_>,
    inputs: &EstimateInputs<'_>,
) -> Result<Option<StageEstimate>, ParamError> {
    let p = OpenClipParams::from_params(decl.params)?;
    let world = if inputs.slurm {
        // One process per GPU, and at least one on each node (as `launch` starts them).
        u32::try_from(inputs.gpus.max(u64::from(inputs.nodes))).unwrap_or(u32::MAX)
    } else {
        1
    };
    let too_large = || ParamError::params("batch_size x processes x steps overflows 64 bits");
    let global = p
        .batch_size
        .checked_mul(u64::from(world))
        .ok_or_else(too_large)?;
    let workers = p.workers.unwrap_or(1).max(1);
    let steps_per_epoch = p.train_num_samples.div_ceil(global).div_ceil(workers) * workers;
    let steps = steps_per_epoch
        .checked_mul(p.epochs)
        .ok_or_else(too_large)?;
    let samples = steps.checked_mul(global).ok_or_else(too_large)?;
    let mut notes = vec![format!(
        "open_clip: batch_size {} per GPU x {world} {} = {global} per step; an epoch is ceil(train_num_samples / {global}) steps rounded up to a multiple of {workers} worker{}",
        p.batch_size,
        match (inputs.slurm, world) {
            (true, 1) => "process (one per GPU under srun)",
            (true, _) => "processes (one per GPU under srun)",
            (false, _) => "local process",
        },
        if workers == 1 { "" } else { "s" },
    )];
    if !p.extra_args.is_empty() {
        notes.push(format!(
            "extra_args {:?} go to open_clip as they are; the estimate does not read them",
            p.extra_args
        ));
    }
    let work = |flops_per_sample: f64| TrainWork {
        batch: global,
        world,
        per_rank_batch: p.batch_size,
        samples_per_interval: p.train_num_samples,
        steps_per_interval: steps_per_epoch,
        intervals: p.epochs,
        first_interval: 1,
        last_interval: p.epochs,
        steps,
        samples,
        schedule_steps: steps,
        warmup: p.warmup,
        lr: p.lr,
        flops_per_sample,
        checkpoints_from: 1,
    };
    if let Some(other) = other_model(&p.extra_args) {
        notes.push(format!(
            "compute unknown: extra_args train the model {other:?}, which tureen has no config for (FLOPs, checkpoint sizes and FLOP-based GPU-hours are not counted)"
        ));
        let estimate = ClipEstimate {
            model: None,
            train: Some(work(f64::NAN)),
        };
        return Ok(Some(estimate.into_estimate(f64::NAN, vec![], notes)));
    }
    let (cfg, name) = model_from_params(decl.params)?;
    let mut estimate = train_estimate(&cfg, &name, work(train_flops_per_sample(&cfg, global)));
    estimate.notes.extend(notes);
    Ok(Some(estimate))
}

/// The model `--model` in open_clip's extra arguments names, if they name one.
fn other_model(args: &[String]) -> Option<String> {
    args.iter()
        .enumerate()
        .find_map(|(i, a)| match a.strip_prefix("--model") {
            Some("") => Some(args.get(i + 1).cloned().unwrap_or_default()),
            Some(rest) => rest.strip_prefix('=').map(str::to_string),
            None => None,
        })
}
