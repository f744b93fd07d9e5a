//! Where a soup goes: one safetensors file, or a sharded directory (shards + index).
//! Either way tensors are written at precomputed offsets from many threads, and nothing
//! appears at the destination until every byte is written.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use crate::safetensors::{
    split_into_shards, Layout, SafetensorsError, SafetensorsWriter, ShardedWriter, TensorSpec,
};

/// The open output of a soup.
pub(crate) enum Output {
    File(SafetensorsWriter),
    Sharded(ShardedWriter),
}

impl Output {
    /// Lays out `specs` and creates the temp file(s). With `shard_size`, `dest` is a
    /// directory of shards of at most that many bytes of tensor data each.
    pub(crate) fn create(
        dest: &Path,
        specs: Vec<TensorSpec>,
        metadata: Option<&BTreeMap<String, String>>,
        shard_size: Option<u64>,
        durable: bool,
    ) -> Result<Output, SafetensorsError> {
        let mut out = match shard_size {
            None => Output::File(SafetensorsWriter::create(
                dest,
                Layout::new(dest, specs, metadata)?,
            )?),
            Some(max) => Output::Sharded(ShardedWriter::create(
                dest,
                split_into_shards(specs, max),
                metadata,
            )?),
        };
        for w in out.writers_mut() {
            w.set_durable(durable);
        }
        Ok(out)
    }

    /// The file writers (one, or one per shard).
    pub(crate) fn writers(&self) -> &[SafetensorsWriter] {
        match self {
            Output::File(w) => std::slice::from_ref(w),
            Output::Sharded(s) => s.writers(),
        }
    }

    fn writers_mut(&mut self) -> &mut [SafetensorsWriter] {
        match self {
            Output::File(w) => std::slice::from_mut(w),
            Output::Sharded(s) => s.writers_mut(),
        }
    }

    /// Where each tensor goes: name -> (writer, index in its layout, file offset).
    pub(crate) fn placements(&self) -> HashMap<&str, (usize, usize, u64)> {
        let mut map = HashMap::new();
        for (w, writer) in self.writers().iter().enumerate() {
            for (index, (spec, start, _)) in writer.layout().tensors().enumerate() {
                map.insert(spec.name.as_str(), (w, index, start));
            }
        }
        map
    }

    /// Bytes of all output files.
    pub(crate) fn total_len(&self) -> u64 {
        self.writers().iter().map(|w| w.layout().total_len()).sum()
    }

    /// Rewrites every file's `__metadata__` (same serialized length).
    pub(crate) fn replace_metadata(
        &mut self,
        metadata: &BTreeMap<String, String>,
    ) -> Result<(), SafetensorsError> {
        self.writers_mut()
            .iter_mut()
            .try_for_each(|w| w.replace_metadata(metadata))
    }

    /// Makes the output appear at its destination.
    pub(crate) fn finish(self) -> Result<(), SafetensorsError> {
        match self {
            Output::File(w) => w.finish(),
            Output::Sharded(s) => s.finish(),
        }
    }
}
