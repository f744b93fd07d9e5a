//! `tureen plan PIPELINE`: what a pipeline will cost before it runs.
//!
//! Per stage: intervals, steps, batch, samples, FLOPs, checkpoint size and count, store
//! space and GPU-hours at a stated throughput; then the totals. The numbers come from
//! each stage kind's estimate (`StageKind::estimate`); see `tureen_stages::plan` for how
//! FLOPs are counted from the model config.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::bail;
use tureen_engine::kind::KindRegistry;
use tureen_engine::pipeline::LoadError;
use tureen_engine::plan::{plan, Plan, Throughput};
use tureen_stages::plan::{ClipEstimate, ModelSummary};

use super::Global;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The pipeline file.
    #[arg(value_name = "PIPELINE")]
    pub pipeline: PathBuf,
    /// Override a param: `-P name=value` or `-P stage.param=value` (repeatable).
    #[arg(short = 'P', long = "param", value_name = "KEY=VALUE")]
    pub params: Vec<String>,
    /// Measured training throughput in samples/s per GPU. Without it, GPU-hours follow
    /// from FLOPs at `--mfu` of `--peak-tflops`.
    #[arg(long, value_name = "SAMPLES_PER_S")]
    pub throughput: Option<f64>,
    /// Peak dense TFLOP/s of one GPU (default: A100 bf16).
    #[arg(long, value_name = "TFLOPS", default_value_t = Throughput::A100_BF16_PEAK / 1e12)]
    pub peak_tflops: f64,
    /// Model FLOP utilisation: the fraction of peak that training achieves (default:
    /// what the model card's A100 runs achieved).
    #[arg(long, value_name = "FRACTION", default_value_t = Throughput::DEFAULT_MFU)]
    pub mfu: f64,
    /// Output format.
    #[arg(long, value_enum, default_value = "text")]
    pub format: OutputFormat,
    /// Print JSON (the same as `--format json`, as `status`, `runs` and `run -n` take it).
    #[arg(long)]
    pub json: bool,
}

#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputFormat {
    Text,
    Json,
}

pub fn run(args: Args, _global: &Global) -> anyhow::Result<ExitCode> {
    if !(args.peak_tflops > 0.0 && args.peak_tflops.is_finite()) {
        bail!("--peak-tflops must be a positive number");
    }
    if !(args.mfu > 0.0 && args.mfu <= 1.0) {
        bail!("--mfu must be in (0, 1]");
    }
    let peak_flops = args.peak_tflops * 1e12;
    let throughput = match args.throughput {
        Some(per_gpu) if per_gpu > 0.0 && per_gpu.is_finite() => Throughput::Samples {
            per_gpu,
            peak_flops,
            mfu: args.mfu,
        },
        Some(_) => bail!("--throughput must be a positive number of samples/s per GPU"),
        None => Throughput::Flops {
            peak_flops,
            mfu: args.mfu,
        },
    };
    let mut registry = KindRegistry::new();
    tureen_stages::register_all(&mut registry);
    let pipeline = match tureen_engine::pipeline::load(&args.pipeline, &registry, &args.params) {
        Ok(p) => p,
        Err(e @ (LoadError::Invalid(_) | LoadError::Override(_))) => {
            tureen_engine::eprintln_lossy!("{e}");
            return Ok(ExitCode::from(2));
        }
        Err(e) => return Err(e.into()),
    };
    let plan = plan(&pipeline, &registry, throughput)?;
    let format = if args.json {
        OutputFormat::Json
    } else {
        args.format
    };
    match format {
        OutputFormat::Json => {
            let value = serde_json::json!({ "pipeline": args.pipeline, "plan": plan });
            println!("{}", serde_json::to_string_pretty(&value)?);
        }
        OutputFormat::Text => print!("{}", render(&args.pipeline.display().to_string(), &plan)),
    }
    Ok(ExitCode::SUCCESS)
}

/// `1,200,576,385`.
pub fn grouped(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Bytes in decimal units, as disks are sold: `14.41 GB`, `3.69 TB`.
pub fn bytes(n: u64) -> String {
    let units = ["B", "kB", "MB", "GB", "TB", "PB", "EB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1000.0 && u + 1 < units.len() {
        v /= 1000.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.2} {}", units[u])
    }
}

/// FLOPs in scientific notation: `4.622e22`; `unknown` for what a kind could not count.
pub fn flops(x: f64) -> String {
    if x.is_nan() {
        "unknown".into()
    } else if x == 0.0 {
        "0".into()
    } else {
        format!("{x:.3e}")
    }
}

fn hours(h: f64) -> String {
    if h.is_nan() {
        "unknown".into()
    } else if h >= 100.0 {
        grouped(h.round() as u64)
    } else {
        format!("{h:.2}")
    }
}

fn model_lines(m: &ModelSummary) -> Vec<String> {
    vec![
        format!(
            "model {}: {} params (image {} + text {} + logit_scale), {} px",
            m.name,
            grouped(m.params),
            grouped(m.image_params),
            grouped(m.text_params),
            m.image_size
        ),
        format!(
            "  forward per sample: image {:.2} GMACs + text {:.2} GMACs = {:.2} GMACs \
             (fvcore's count: convs, linears, attention matmuls, norms)",
            m.image_macs as f64 / 1e9,
            m.text_macs as f64 / 1e9,
            (m.image_macs + m.text_macs) as f64 / 1e9
        ),
        format!(
            "  checkpoint: {} (float32 weights {} + AdamW moments)",
            bytes(m.checkpoint_bytes),
            bytes(m.params * 4)
        ),
    ]
}

/// The plan as a table with the model summaries and assumptions above it.
pub fn render(pipeline: &str, plan: &Plan) -> String {
    let mut out = format!("plan for {pipeline}\n");
    let mut seen = BTreeSet::new();
    for stage in &plan.stages {
        let Some(clip) = stage.estimate.as_ref().and_then(ClipEstimate::of) else {
            continue;
        };
        let Some(m) = &clip.model else {
            out.push_str(&format!(
                "model of {}: unknown to tureen (no config; compute not counted)\n",
                stage.name
            ));
            continue;
        };
        if clip.train.is_some() && seen.insert(m.name.clone()) {
            for line in model_lines(m) {
                out.push_str(&line);
                out.push('\n');
            }
        }
    }
    out.push_str(&format!("throughput: {}\n", plan.throughput.describe()));
    out.push_str(
        "FLOPs: training = 3 x forward (forward + backward) + contrastive logits, per sample; \
         sizes in decimal units\n\n",
    );

    let header = [
        "stage",
        "kind",
        "intervals",
        "steps/int",
        "steps",
        "batch",
        "ranks",
        "batch/rank",
        "samples",
        "FLOPs",
        "TFLOP/sample",
        "outputs",
        "store",
        "GPU-h",
        "GPUs",
        "wall-h",
    ];
    let mut rows: Vec<Vec<String>> = Vec::new();
    let mut unknown_sizes = false;
    for s in &plan.stages {
        let mut row = vec![s.name.clone(), s.kind.clone()];
        match &s.estimate {
            None => {
                row.extend(std::iter::repeat_n("-".to_string(), header.len() - 2));
                row[header.len() - 2] = if s.gpus > 0 {
                    s.gpus.to_string()
                } else {
                    "-".into()
                };
            }
            Some(e) => {
                match ClipEstimate::of(e).and_then(|c| c.train.as_ref()) {
                    Some(t) => row.extend([
                        format!("{}-{}", t.first_interval, t.last_interval),
                        grouped(t.steps_per_interval),
                        grouped(t.steps),
                        grouped(t.batch),
                        grouped(u64::from(t.world)),
                        grouped(t.per_rank_batch),
                        grouped(t.samples),
                        flops(e.flops),
                        if t.flops_per_sample.is_nan() {
                            "unknown".into()
                        } else {
                            format!("{:.3}", t.flops_per_sample / 1e12)
                        },
                    ]),
                    None => row.extend([
                        "-".into(),
                        "-".into(),
                        "-".into(),
                        "-".into(),
                        "-".into(),
                        "-".into(),
                        "-".into(),
                        flops(e.flops),
                        "-".into(),
                    ]),
                }
                let outputs: Vec<String> = e
                    .outputs
                    .iter()
                    .map(|o| {
                        if o.count == 1 {
                            bytes(o.bytes_each)
                        } else {
                            format!("{} x {}", o.count, bytes(o.bytes_each))
                        }
                    })
                    .collect();
                if sizes_unknown(e) {
                    unknown_sizes = true;
                    row.extend(["unknown".to_string(), "unknown".to_string()]);
                } else {
                    row.push(if outputs.is_empty() {
                        "-".into()
                    } else {
                        outputs.join(" + ")
                    });
                    row.push(bytes(e.store_bytes()));
                }
                row.push(hours(s.gpu_hours));
                row.push(if s.gpus > 0 {
                    s.gpus.to_string()
                } else {
                    "-".into()
                });
                row.push(s.wall_hours.map_or("-".into(), hours));
            }
        }
        rows.push(row);
    }
    let t = &plan.totals;
    let store = if unknown_sizes {
        format!("{} + unknown", bytes(t.store_bytes))
    } else {
        bytes(t.store_bytes)
    };
    // One cell per column of `header`.
    let total = vec![
        "total".to_string(),
        String::new(), // kind
        String::new(), // intervals
        String::new(), // steps/int
        grouped(t.steps),
        String::new(), // batch
        String::new(), // ranks
        String::new(), // batch/rank
        grouped(t.samples),
        flops(t.flops),
        String::new(), // TFLOP/sample
        String::new(), // outputs
        store,
        hours(t.gpu_hours),
        String::new(), // GPUs
        String::new(), // wall-h
    ];
    out.push_str(&table(&header, &rows, &total));
    // The same note from several stages is printed once, naming them.
    let mut notes: Vec<(&String, Vec<&str>)> = Vec::new();
    for s in &plan.stages {
        for n in s.estimate.iter().flat_map(|e| &e.notes) {
            match notes.iter_mut().find(|(text, _)| *text == n) {
                Some((_, stages)) => stages.push(&s.name),
                None => notes.push((n, vec![&s.name])),
            }
        }
    }
    if !notes.is_empty() {
        out.push('\n');
        for (text, stages) in notes {
            out.push_str(&format!("note ({}): {text}\n", stages.join(", ")));
        }
    }
    out
}

/// Whether a stage trains a model tureen has no config for, so its checkpoints' sizes
/// are not known.
fn sizes_unknown(e: &tureen_engine::kind::estimate::StageEstimate) -> bool {
    ClipEstimate::of(e).is_some_and(|c| c.model.is_none())
}

/// Left-aligned names, right-aligned numbers, a rule above the totals.
fn table(header: &[&str], rows: &[Vec<String>], total: &[String]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows.iter().chain(std::iter::once(&total.to_vec())) {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: &mut dyn Iterator<Item = &str>| {
        let mut s = String::new();
        for (i, cell) in cells.enumerate() {
            if i > 0 {
                s.push_str("  ");
            }
            if i < 2 {
                s.push_str(&format!("{cell:<w$}", w = widths[i]));
            } else {
                s.push_str(&format!("{cell:>w$}", w = widths[i]));
            }
        }
        s.trim_end().to_string() + "\n"
    };
    let mut out = line(&mut header.iter().copied());
    for row in rows {
        out.push_str(&line(&mut row.iter().map(String::as_str)));
    }
    let width: usize = widths.iter().sum::<usize>() + 2 * (widths.len() - 1);
    out.push_str(&"-".repeat(width));
    out.push('\n');
    out.push_str(&line(&mut total.iter().map(String::as_str)));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_grouped_and_sized_for_people() {
        assert_eq!(grouped(1_200_576_385), "1,200,576,385");
        assert_eq!(grouped(999), "999");
        assert_eq!(grouped(1_000), "1,000");
        assert_eq!(bytes(14_406_916_620), "14.41 GB");
        assert_eq!(bytes(512), "512 B");
        assert_eq!(flops(4.62e22), "4.620e22");
    }
}
