//! Checks a pipeline must pass before a run touches anything, beyond what loading
//! checks: what depends on the run's store and machine. A stage whose `outs` would
//! delete the store, or whose `resources` this machine can never give, is refused with
//! its position, as a validation error.

use std::path::Path;

use crate::diag::{Diagnostics, Sink};
use crate::pipeline::{resolved_path, Executor, Pipeline, Resolved};

use super::pool::{detect_gpus, machine_cpus, machine_memory};

/// Every problem of `pipeline` for a run against `store` here; `gpus` as `--gpus`.
pub fn preflight(
    pipeline: &Pipeline,
    store: &Path,
    gpus: Option<&[u32]>,
) -> Result<(), Diagnostics> {
    let mut sink = Sink::new(&pipeline.file);
    outs_spare_the_store(&mut sink, pipeline, store);
    local_resources_exist(&mut sink, pipeline, gpus);
    sink.finish()
}

fn outs_spare_the_store(sink: &mut Sink, pipeline: &Pipeline, store: &Path) {
    let store = resolved_path(&std::path::absolute(store).unwrap_or_else(|_| store.to_path_buf()));
    let mut paths = Resolved::new(&pipeline.file);
    for stage in &pipeline.stages {
        for rel in stage.workspace_paths.values() {
            let out = paths.of(&pipeline.root.join(rel));
            if out.starts_with(&store) || store.starts_with(&out) {
                sink.error(
                    stage.pos_of("outs"),
                    format!(
                        "stage `{}`: output `{rel}` is, holds or lies in the store {}: the run would delete it",
                        stage.name,
                        store.display()
                    ),
                );
            }
        }
    }
}

fn local_resources_exist(sink: &mut Sink, pipeline: &Pipeline, gpus: Option<&[u32]>) {
    let mut pool: Option<usize> = None;
    for stage in pipeline
        .stages
        .iter()
        .filter(|s| s.executor == Executor::Local)
    {
        let r = &stage.resources;
        let at = stage.pos_of("resources");
        let mut refuse = |what: String| {
            sink.error(at, format!("stage `{}`: {what}", stage.name));
        };
        if r.nodes > 1 {
            refuse(format!(
                "resources.nodes: {} nodes need `executor: slurm` (the local executor runs on this machine)",
                r.nodes
            ));
        }
        let cpus = machine_cpus();
        if r.cpus > cpus {
            refuse(format!(
                "resources.cpus: {} CPUs asked, this machine has {cpus}",
                r.cpus
            ));
        }
        if let Some(mem) = r.memory.filter(|&m| m > machine_memory()) {
            refuse(format!(
                "resources.memory: {:.1} GiB asked, this machine has {:.1} GiB",
                mem as f64 / (1u64 << 30) as f64,
                machine_memory() as f64 / (1u64 << 30) as f64
            ));
        }
        if r.gpus > 0 {
            let have =
                *pool.get_or_insert_with(|| gpus.map_or_else(|| detect_gpus().len(), <[u32]>::len));
            if r.gpus as usize > have {
                refuse(format!(
                    "resources.gpus: {} GPU(s) asked, {have} available here (set --gpus or TUREEN_GPUS)",
                    r.gpus
                ));
            }
        }
    }
}
