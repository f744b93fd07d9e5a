//! How two versions of an output differ, for `tureen replay`: per tensor of a
//! safetensors file (largest relative difference), per number of a JSON file (metric
//! deltas), per member of a tree (a checkpoint directory), else the first differing byte.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde_json::Value;
use tureen_artifacts::safetensors::{Dtype, SafetensorsFile, TensorInfo};
use tureen_artifacts::{Digest, Store};

use crate::cache::ArtifactRecord;

/// At most this many lines describe one differing file.
const MAX_LINES: usize = 5;

/// Lines saying how `replayed` differs from `recorded` (both in `store`), each starting
/// with `what` (the output name, and the member's path inside a tree).
pub fn describe(
    store: &Store,
    what: &str,
    recorded: &ArtifactRecord,
    replayed: &ArtifactRecord,
) -> Vec<String> {
    if recorded.digest == replayed.digest {
        return Vec::new();
    }
    if !store.contains(&recorded.digest) {
        return vec![format!(
            "{what}: the recorded {} is no longer in the store (collected?)",
            recorded.digest
        )];
    }
    match (
        store.read_tree(&recorded.digest),
        store.read_tree(&replayed.digest),
    ) {
        (Ok(a), Ok(b)) => describe_trees(store, what, &a.files, &b.files),
        _ => describe_files(
            &store.object_path(&recorded.digest),
            &store.object_path(&replayed.digest),
        )
        .into_iter()
        .map(|line| format!("{what}: {line}"))
        .collect(),
    }
}

fn describe_trees(
    store: &Store,
    what: &str,
    a: &BTreeMap<String, Digest>,
    b: &BTreeMap<String, Digest>,
) -> Vec<String> {
    let names: BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    let mut out = Vec::new();
    for name in names {
        let at = format!("{what}/{name}");
        match (a.get(name), b.get(name)) {
            (Some(x), Some(y)) if x == y => {}
            (Some(x), Some(y)) => {
                let rec = |d: &Digest| ArtifactRecord {
                    digest: *d,
                    tree: false,
                    file_name: None,
                };
                out.extend(describe(store, &at, &rec(x), &rec(y)));
            }
            (Some(_), None) => out.push(format!("{at}: not in the replayed tree")),
            (None, _) => out.push(format!("{at}: only in the replayed tree")),
        }
    }
    out
}

/// How the file `b` differs from `a`.
pub fn describe_files(a: &Path, b: &Path) -> Vec<String> {
    if let (Ok(x), Ok(y)) = (SafetensorsFile::open(a), SafetensorsFile::open(b)) {
        return tensor_differences(&x, &y);
    }
    let (Ok(x), Ok(y)) = (std::fs::read(a), std::fs::read(b)) else {
        return vec!["cannot read both versions".into()];
    };
    if let (Ok(vx), Ok(vy)) = (
        serde_json::from_slice::<Value>(&x),
        serde_json::from_slice::<Value>(&y),
    ) {
        return json_differences(&vx, &vy);
    }
    let first = x
        .iter()
        .zip(&y)
        .position(|(p, q)| p != q)
        .unwrap_or(x.len().min(y.len()));
    vec![format!(
        "{} vs {} bytes, first difference at byte {first}",
        x.len(),
        y.len()
    )]
}

/// One line per tensor that differs, largest relative difference first.
fn tensor_differences(a: &SafetensorsFile, b: &SafetensorsFile) -> Vec<String> {
    let mut rows: Vec<(f64, String)> = Vec::new();
    let mut same = 0;
    for ta in a.tensors() {
        let Some(tb) = b.get(&ta.name) else {
            rows.push((
                f64::INFINITY,
                format!("tensor {}: not in the replayed file", ta.name),
            ));
            continue;
        };
        if a.data(ta) == b.data(tb) {
            same += 1;
            continue;
        }
        if ta.dtype != tb.dtype || ta.shape != tb.shape {
            let line = format!(
                "tensor {}: {} {:?} became {} {:?}",
                ta.name,
                ta.dtype.as_str(),
                ta.shape,
                tb.dtype.as_str(),
                tb.shape
            );
            rows.push((f64::INFINITY, line));
            continue;
        }
        let (Some(x), Some(y)) = (values(ta, a.data(ta)), values(tb, b.data(tb))) else {
            rows.push((
                f64::INFINITY,
                format!("tensor {}: {} bytes differ", ta.name, ta.dtype.as_str()),
            ));
            continue;
        };
        let (rel, abs, n) = largest_difference(&x, &y);
        let line = format!(
            "tensor {}: largest relative difference {rel:.3e} (absolute {abs:.3e}), {n} of {} elements differ",
            ta.name,
            x.len()
        );
        rows.push((rel, line));
    }
    for tb in b.tensors() {
        if a.get(&tb.name).is_none() {
            rows.push((
                f64::INFINITY,
                format!("tensor {}: only in the replayed file", tb.name),
            ));
        }
    }
    if rows.is_empty() {
        return vec![format!(
            "all {same} tensors are identical (the header or metadata differs)"
        )];
    }
    rows.sort_by(|p, q| q.0.total_cmp(&p.0));
    let total = rows.len();
    let mut out: Vec<String> = rows.into_iter().take(MAX_LINES).map(|(_, l)| l).collect();
    if total > MAX_LINES {
        out.push(format!(
            "... and {} more differing tensors ({same} identical)",
            total - MAX_LINES
        ));
    }
    out
}

/// (largest |a-b| / max(|a|, |b|), largest |a-b|, number of differing elements).
pub fn largest_difference(a: &[f64], b: &[f64]) -> (f64, f64, usize) {
    let mut rel: f64 = 0.0;
    let mut abs: f64 = 0.0;
    let mut n = 0;
    for (&x, &y) in a.iter().zip(b) {
        if x == y || (x.is_nan() && y.is_nan()) {
            continue;
        }
        n += 1;
        let d = (x - y).abs();
        abs = abs.max(d);
        let scale = x.abs().max(y.abs());
        rel = rel.max(if scale > 0.0 { d / scale } else { 0.0 });
    }
    (rel, abs, n)
}

/// The elements of a float or integer tensor as f64 (`None` for other dtypes).
fn values(t: &TensorInfo, data: &[u8]) -> Option<Vec<f64>> {
    let v = match t.dtype {
        Dtype::F32 => data
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()) as f64)
            .collect(),
        Dtype::F64 => data
            .chunks_exact(8)
            .map(|c| f64::from_le_bytes(c.try_into().unwrap()))
            .collect(),
        Dtype::F16 => data
            .chunks_exact(2)
            .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f64())
            .collect(),
        Dtype::BF16 => data
            .chunks_exact(2)
            .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f64())
            .collect(),
        Dtype::I64 => data
            .chunks_exact(8)
            .map(|c| i64::from_le_bytes(c.try_into().unwrap()) as f64)
            .collect(),
        Dtype::I32 => data
            .chunks_exact(4)
            .map(|c| i32::from_le_bytes(c.try_into().unwrap()) as f64)
            .collect(),
        _ => return None,
    };
    Some(v)
}

/// One line per number (by JSON path) that differs: `path: recorded -> replayed (delta)`.
pub fn json_differences(a: &Value, b: &Value) -> Vec<String> {
    let (mut fa, mut fb) = (BTreeMap::new(), BTreeMap::new());
    flatten("", a, &mut fa);
    flatten("", b, &mut fb);
    let keys: BTreeSet<&String> = fa.keys().chain(fb.keys()).collect();
    let mut out = Vec::new();
    for k in keys {
        match (fa.get(k), fb.get(k)) {
            (Some(x), Some(y)) if x == y => {}
            (Some(Value::Number(x)), Some(Value::Number(y))) => {
                let (x, y) = (
                    x.as_f64().unwrap_or(f64::NAN),
                    y.as_f64().unwrap_or(f64::NAN),
                );
                out.push(format!("{k}: {x} -> {y} ({:+.3e})", y - x));
            }
            (x, y) => out.push(format!("{k}: {} -> {}", show(x), show(y))),
        }
    }
    if out.is_empty() {
        out.push("the same values, written differently".into());
    }
    if out.len() > MAX_LINES {
        let more = out.len() - MAX_LINES;
        out.truncate(MAX_LINES);
        out.push(format!("... and {more} more differing values"));
    }
    out
}

fn show(v: Option<&Value>) -> String {
    v.map(Value::to_string).unwrap_or_else(|| "(absent)".into())
}

fn flatten(prefix: &str, v: &Value, out: &mut BTreeMap<String, Value>) {
    let join = |k: &str| {
        if prefix.is_empty() {
            k.to_string()
        } else {
            format!("{prefix}.{k}")
        }
    };
    match v {
        Value::Object(map) => map.iter().for_each(|(k, v)| flatten(&join(k), v, out)),
        Value::Array(items) => items
            .iter()
            .enumerate()
            .for_each(|(i, v)| flatten(&format!("{prefix}[{i}]"), v, out)),
        leaf => {
            out.insert(prefix.to_string(), leaf.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn relative_differences_are_relative_to_the_larger_magnitude() {
        let (rel, abs, n) = largest_difference(&[1.0, 2.0, 0.0], &[1.0, 2.002, 0.0]);
        assert_eq!(n, 1);
        assert!((abs - 0.002).abs() < 1e-12);
        assert!((rel - 0.002 / 2.002).abs() < 1e-12);
    }

    #[test]
    fn metric_deltas_name_each_number_by_its_path() {
        let a = json!({"zeroshot": {"top1": 0.25, "top5": 0.5}, "n": 3});
        let b = json!({"zeroshot": {"top1": 0.5, "top5": 0.5}, "n": 3});
        assert_eq!(
            json_differences(&a, &b),
            ["zeroshot.top1: 0.25 -> 0.5 (+2.500e-1)"]
        );
    }
}
