//! What a soup records about itself in `__metadata__`: the ingredients (label, BLAKE3,
//! weight), the weights, the numerics mode and the policies.

use std::collections::BTreeMap;
use std::path::PathBuf;

use super::{Accumulate, IntPolicy, SoupOptions};
use crate::Digest;

/// The numerics mode as recorded in the output's metadata.
pub(crate) fn numerics_label(opts: &SoupOptions) -> String {
    let mut s = match opts.accumulate {
        Accumulate::F32 => "f32-fma-sequential".to_string(),
        Accumulate::F64 => "f64-fma-sequential".to_string(),
    };
    if let Some(c) = opts.input_cast {
        s.push_str(&format!(",inputs-cast-to-{c}"));
    }
    s.push_str(if opts.normalize {
        ",divide-by-weight-sum"
    } else {
        ",no-normalize"
    });
    if opts.accumulate == Accumulate::F64 {
        s.push_str(",clamp-f32");
    }
    s.push_str(",round-nearest-even-once");
    s
}

/// The `__metadata__` of a soup of `inputs`.
pub(crate) fn provenance(
    inputs: &[PathBuf],
    digests: &[Digest],
    weights: &[f64],
    numerics: &str,
    opts: &SoupOptions,
) -> BTreeMap<String, String> {
    let mut m = opts.extra_metadata.clone();
    m.insert("format".into(), "pt".into());
    let labels: Vec<String> = match &opts.input_labels {
        Some(labels) => labels.clone(),
        None => inputs.iter().map(|p| p.display().to_string()).collect(),
    };
    let ingredients: Vec<serde_json::Value> = labels
        .iter()
        .zip(digests)
        .zip(weights)
        .map(|((label, d), w)| serde_json::json!({"file": label, "blake3": d.to_string(), "weight": w}))
        .collect();
    m.insert(
        "tureen.soup.ingredients".into(),
        serde_json::Value::Array(ingredients).to_string(),
    );
    m.insert(
        "tureen.soup.weights".into(),
        serde_json::to_string(weights).expect("finite floats serialize"),
    );
    m.insert("tureen.soup.numerics".into(), numerics.to_string());
    m.insert(
        "tureen.soup.out_dtype".into(),
        opts.out_dtype
            .map(|d| d.to_string())
            .unwrap_or_else(|| "input".into()),
    );
    m.insert(
        "tureen.soup.keys".into(),
        format!("{:?}", opts.keys).to_lowercase(),
    );
    m.insert(
        "tureen.soup.int_policy".into(),
        match opts.int_policy {
            IntPolicy::RequireEqual => "require-equal",
            IntPolicy::First => "first",
            IntPolicy::Error => "error",
        }
        .into(),
    );
    m.insert("tureen.version".into(), env!("CARGO_PKG_VERSION").into());
    m
}
