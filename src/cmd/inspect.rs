//! `tureen inspect`: what a checkpoint holds, in any format tureen reads.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

use serde::Serialize;
use tureen_artifacts::checkpoint::Checkpoint;

use super::ckpt_args::SourceArgs;
use super::Global;

/// Describe a checkpoint: format, tensor count, dtypes, total parameters, metadata.
///
/// Reads safetensors (single or sharded) and torch.save files (whose pickle is
/// interpreted with an allow-list, never executed). For a torch.save file it also says
/// where the state dict was found and what else the file holds (epoch, optimizer...).
#[derive(clap::Args, Debug)]
#[command(
    after_help = "Examples:\n  tureen inspect epoch_32.pt\n  tureen inspect hf-model/ --json\n  tureen inspect soup.safetensors --tensors"
)]
pub struct Args {
    /// The checkpoint (file or directory).
    #[arg(value_name = "CHECKPOINT")]
    pub input: PathBuf,
    #[command(flatten)]
    pub source: SourceArgs,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
    /// Also list every tensor (name, dtype, shape).
    #[arg(long)]
    pub tensors: bool,
}

/// What `inspect` reports (also its `--json` form).
#[derive(Serialize)]
struct Report {
    path: String,
    format: &'static str,
    files: Vec<String>,
    tensors: usize,
    parameters: u64,
    bytes: u64,
    dtypes: BTreeMap<String, DtypeCount>,
    metadata: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    torch: Option<TorchReport>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tensor_list: Option<Vec<TensorLine>>,
}

#[derive(Serialize, Default)]
struct DtypeCount {
    tensors: usize,
    parameters: u64,
}

#[derive(Serialize)]
struct TorchReport {
    /// Where the state dict was (`""`: the saved object itself).
    key: String,
    stripped_prefix: Option<String>,
    /// Other top-level entries and a short rendering of each.
    other_entries: BTreeMap<String, String>,
}

#[derive(Serialize)]
struct TensorLine {
    name: String,
    dtype: String,
    shape: Vec<u64>,
}

fn report(ckpt: &Checkpoint, list: bool) -> Report {
    let mut dtypes: BTreeMap<String, DtypeCount> = BTreeMap::new();
    for t in ckpt.tensors() {
        let d = dtypes.entry(t.dtype.to_string()).or_default();
        d.tensors += 1;
        d.parameters += t.numel();
    }
    Report {
        path: ckpt.path().display().to_string(),
        format: ckpt.format().name(),
        files: ckpt.files().map(str::to_string).collect(),
        tensors: ckpt.tensors().len(),
        parameters: ckpt.tensors().iter().map(|t| t.numel()).sum(),
        bytes: ckpt.data_bytes(),
        dtypes,
        metadata: ckpt.metadata().clone(),
        torch: ckpt.selection().map(|s| TorchReport {
            key: s.key.as_ref().map_or_else(String::new, |k| k.to_string()),
            stripped_prefix: s.stripped_prefix.clone(),
            other_entries: s.others.iter().cloned().collect(),
        }),
        tensor_list: list.then(|| {
            ckpt.tensors()
                .iter()
                .map(|t| TensorLine {
                    name: t.name.clone(),
                    dtype: t.dtype.to_string(),
                    shape: t.shape.clone(),
                })
                .collect()
        }),
    }
}

pub fn run(args: Args, _global: &Global) -> anyhow::Result<ExitCode> {
    let ckpt = Checkpoint::open(&args.input, &args.source.options())?;
    let r = report(&ckpt, args.tensors);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&r)?);
    } else {
        print_text(&r);
    }
    Ok(ExitCode::SUCCESS)
}

fn print_text(r: &Report) {
    println!("{}", r.path);
    println!("  format      {}", r.format);
    if r.files.len() > 1 {
        println!("  files       {} ({})", r.files.len(), r.files.join(", "));
    }
    println!("  tensors     {}", r.tensors);
    println!(
        "  parameters  {} ({})",
        r.parameters,
        super::store::human_bytes(r.bytes)
    );
    for (dtype, c) in &r.dtypes {
        println!(
            "  {dtype:<11} {} tensors, {} parameters",
            c.tensors, c.parameters
        );
    }
    if let Some(t) = &r.torch {
        let key = if t.key.is_empty() {
            "(top level)"
        } else {
            t.key.as_str()
        };
        println!("  state dict  {key}");
        if let Some(p) = &t.stripped_prefix {
            println!("  stripped    {p:?} from every name (--keep-prefix keeps it)");
        }
        for (k, v) in &t.other_entries {
            println!("  also        {k}: {v}");
        }
    }
    for (k, v) in &r.metadata {
        let v: String = if v.chars().count() > 100 {
            format!("{}...", v.chars().take(100).collect::<String>())
        } else {
            v.clone()
        };
        println!("  metadata    {k}: {v}");
    }
    for t in r.tensor_list.iter().flatten() {
        println!("  {} {} {:?}", t.name, t.dtype, t.shape);
    }
}
