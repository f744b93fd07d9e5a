//! `tureen convert`: any checkpoint [`Checkpoint::open`] reads, rewritten as safetensors
//! (one file or shards), tensor bytes unchanged.
//!
//! The output's `__metadata__` keeps the input's own metadata (safetensors inputs) and
//! adds provenance: `format: pt`, the input's BLAKE3 (`tureen.source.blake3`, see
//! [`Checkpoint::digest`]), its format, and for `torch.save` files the key path of the
//! state dict and any stripped prefix. Tensors are copied chunk by chunk on all cores,
//! straight from the memory maps to their final offsets (the soup's writer), so memory
//! does not grow with the checkpoint; the output appears only when complete.

use std::collections::BTreeMap;
use std::path::Path;

use crate::checkpoint::{Checkpoint, CheckpointError, OpenOptions};
use crate::safetensors::SafetensorsError;
use crate::soup::output::Output;
use crate::soup::plan::{self, Plan};
use crate::soup::{run, SoupOptions};
use crate::Digest;

/// How to convert.
#[derive(Debug, Clone)]
pub struct ConvertOptions {
    /// How a `torch.save` input is read.
    pub source: OpenOptions,
    /// Write shards of at most this many bytes of tensor data (and an index).
    pub out_shard_size: Option<u64>,
    /// Write provenance into `__metadata__` (default).
    pub provenance: bool,
    /// fsync before the rename (default).
    pub fsync: bool,
}

impl Default for ConvertOptions {
    fn default() -> Self {
        ConvertOptions {
            source: OpenOptions::default(),
            out_shard_size: None,
            provenance: true,
            fsync: true,
        }
    }
}

/// What a conversion did.
#[derive(Debug, Clone)]
pub struct ConvertReport {
    /// Tensors written.
    pub tensors: usize,
    /// Bytes of the output file(s).
    pub output_bytes: u64,
    /// BLAKE3 of the input.
    pub input_digest: Digest,
    /// The metadata written.
    pub metadata: BTreeMap<String, String>,
}

/// Why a conversion failed.
#[derive(Debug, thiserror::Error)]
pub enum ConvertError {
    /// The input cannot be read.
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    /// The output cannot be written.
    #[error(transparent)]
    Safetensors(#[from] SafetensorsError),
}

/// Converts `input` to safetensors at `output` (a file, or a directory of shards).
pub fn convert(
    input: &Path,
    output: &Path,
    opts: &ConvertOptions,
) -> Result<ConvertReport, ConvertError> {
    let ckpt = Checkpoint::open(input, &opts.source)?;
    let input_digest = ckpt.digest();
    let metadata = provenance(&ckpt, input_digest);
    let files = std::slice::from_ref(&ckpt);
    let plans: Vec<(String, Plan)> = ckpt
        .tensors()
        .iter()
        .map(|t| {
            let plan = Plan::Copy {
                input: 0,
                nbytes: t.nbytes(),
            };
            (t.name.clone(), plan)
        })
        .collect();
    let out = Output::create(
        output,
        plan::specs(&plans, files),
        opts.provenance.then_some(&metadata),
        opts.out_shard_size,
        opts.fsync,
    )?;
    let soup = SoupOptions::default();
    let job = run::Job {
        files,
        plans: &plans,
        weights: &[],
        opts: &soup,
    };
    run::execute(&job, &out, None)?;
    let output_bytes = out.total_len();
    out.finish()?;
    Ok(ConvertReport {
        tensors: plans.len(),
        output_bytes,
        input_digest,
        metadata,
    })
}

/// The input's own metadata plus where the tensors came from.
fn provenance(ckpt: &Checkpoint, digest: Digest) -> BTreeMap<String, String> {
    let mut m = ckpt.metadata().clone();
    m.insert("format".into(), "pt".into());
    m.insert("tureen.source.blake3".into(), digest.to_string());
    m.insert("tureen.source.format".into(), ckpt.format().name().into());
    if let Some(sel) = ckpt.selection() {
        let key = sel.key.as_ref().map_or_else(String::new, |k| k.to_string());
        m.insert("tureen.source.key".into(), key);
        if let Some(prefix) = &sel.stripped_prefix {
            m.insert("tureen.source.stripped_prefix".into(), prefix.clone());
        }
    }
    m.insert("tureen.version".into(), env!("CARGO_PKG_VERSION").into());
    m
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::safetensors::SafetensorsFile;

    #[test]
    fn a_ddp_torch_checkpoint_converts_with_its_provenance() {
        let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/torch/bf16");
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out.safetensors");
        let report = convert(&fixtures.join("in0.pt"), &out, &ConvertOptions::default()).unwrap();
        let f = SafetensorsFile::open(&out).unwrap();
        let meta = f.metadata().unwrap();
        assert_eq!(meta["tureen.source.key"], "state_dict");
        assert_eq!(meta["tureen.source.stripped_prefix"], "module.");
        assert_eq!(meta["tureen.source.format"], "torch.save (zip)");
        let digest = Digest::of_file(&fixtures.join("in0.pt")).unwrap();
        assert_eq!(meta["tureen.source.blake3"], digest.to_string());
        assert_eq!(report.input_digest, digest);
        let src = Checkpoint::open(&fixtures.join("in0.pt"), &OpenOptions::default()).unwrap();
        assert_eq!(f.tensors().len(), src.tensors().len());
        for t in src.tensors() {
            assert_eq!(f.data(f.get(&t.name).unwrap()), src.data(t), "{}", t.name);
        }
    }
}
