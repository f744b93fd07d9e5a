//! Deciding, before any work, how each output tensor is produced: which inputs have it,
//! whether they agree in shape and dtype, and whether it is averaged or copied.

use std::collections::BTreeSet;

use super::{Accumulate, IntPolicy, KeyPolicy, SoupError, SoupOptions, SoupReport};
use crate::checkpoint::{Checkpoint, Entry};
use crate::safetensors::{Dtype, TensorSpec};

/// Lists at most this many offending tensors in one error message.
pub(crate) const MAX_LISTED: usize = 20;

/// One output tensor and how to produce it.
pub(crate) enum Plan {
    Average {
        inputs: Vec<usize>,
        in_dtype: Dtype,
        out_dtype: Dtype,
        numel: u64,
        wide: bool,
    },
    Copy {
        input: usize,
        nbytes: u64,
    },
}

impl Plan {
    /// The elements (averages) or bytes (copies) to produce.
    pub(crate) fn len(&self) -> u64 {
        match self {
            Plan::Average { numel, .. } => *numel,
            Plan::Copy { nbytes, .. } => *nbytes,
        }
    }

    /// The first input that has the tensor.
    fn first_input(&self) -> usize {
        match self {
            Plan::Average { inputs, .. } => inputs[0],
            Plan::Copy { input, .. } => *input,
        }
    }
}

/// The output tensors' names, dtypes and shapes, in plan order.
pub(crate) fn specs(plans: &[(String, Plan)], files: &[Checkpoint]) -> Vec<TensorSpec> {
    plans
        .iter()
        .map(|(name, plan)| {
            let info = files[plan.first_input()]
                .get(name)
                .expect("planned tensors exist");
            let dtype = match plan {
                Plan::Average { out_dtype, .. } => *out_dtype,
                Plan::Copy { .. } => info.dtype,
            };
            TensorSpec {
                name: name.clone(),
                dtype,
                shape: info.shape.clone(),
            }
        })
        .collect()
}

/// Resolves tensor names, checks compatibility, and decides how to produce each tensor.
pub(crate) fn plan(
    files: &[Checkpoint],
    opts: &SoupOptions,
) -> Result<(Vec<(String, Plan)>, SoupReport), SoupError> {
    let mut report = SoupReport::default();
    let all: BTreeSet<&str> = files
        .iter()
        .flat_map(|f| f.tensors().iter().map(|t| t.name.as_str()))
        .collect();
    if opts.keys == KeyPolicy::Strict {
        check_same_names(files, &all)?;
    }
    let mut plans = Vec::new();
    let mut problems = Vec::new();
    for name in all {
        let present: Vec<usize> = (0..files.len())
            .filter(|&i| files[i].get(name).is_some())
            .collect();
        if present.len() < files.len() {
            match opts.keys {
                KeyPolicy::Intersection => {
                    report.dropped.push(name.to_string());
                    continue;
                }
                KeyPolicy::Union => report.partial.push(name.to_string()),
                KeyPolicy::Strict => unreachable!("checked above"),
            }
        }
        if let Some(problem) = mismatch(files, name, &present) {
            problems.push(problem);
            continue;
        }
        let first = files[present[0]].get(name).expect("present");
        let plan = if first.dtype.is_averageable_float() {
            report.averaged += 1;
            average_plan(first, present, opts)
        } else {
            report.copied += 1;
            copy_plan(files, name, first, present, opts)?
        };
        plans.push((name.to_string(), plan));
    }
    if !problems.is_empty() {
        return Err(SoupError::Incompatible(listing(problems)));
    }
    Ok((plans, report))
}

fn check_same_names(files: &[Checkpoint], all: &BTreeSet<&str>) -> Result<(), SoupError> {
    let mut lines = Vec::new();
    for f in files {
        let missing: Vec<&str> = all.iter().copied().filter(|n| f.get(n).is_none()).collect();
        if !missing.is_empty() {
            lines.push(format!(
                "  {} lacks {} tensor(s): {}",
                f.path().display(),
                missing.len(),
                list(&missing)
            ));
        }
    }
    if lines.is_empty() {
        Ok(())
    } else {
        Err(SoupError::KeyMismatch(lines.join("\n")))
    }
}

/// A line naming the first input whose `name` differs in shape or dtype from the first.
fn mismatch(files: &[Checkpoint], name: &str, present: &[usize]) -> Option<String> {
    let first = files[present[0]].get(name).expect("present");
    present[1..].iter().find_map(|&i| {
        let t = files[i].get(name).expect("present");
        (t.shape != first.shape || t.dtype != first.dtype).then(|| {
            format!(
                "  {name:?}: {} {:?} in {} but {} {:?} in {}",
                first.dtype,
                first.shape,
                files[present[0]].path().display(),
                t.dtype,
                t.shape,
                files[i].path().display()
            )
        })
    })
}

fn average_plan(first: &Entry, present: Vec<usize>, opts: &SoupOptions) -> Plan {
    let wide = opts.accumulate == Accumulate::F64
        || first.dtype == Dtype::F64
        || opts.input_cast == Some(Dtype::F64);
    let default_out = match opts.accumulate {
        Accumulate::F64 => Dtype::F32,
        Accumulate::F32 => opts.input_cast.unwrap_or(first.dtype),
    };
    Plan::Average {
        inputs: present,
        in_dtype: first.dtype,
        out_dtype: opts.out_dtype.unwrap_or(default_out),
        numel: first.numel(),
        wide,
    }
}

/// Integer, bool and 8-bit float tensors are copied, per the int policy.
fn copy_plan(
    files: &[Checkpoint],
    name: &str,
    first: &Entry,
    present: Vec<usize>,
    opts: &SoupOptions,
) -> Result<Plan, SoupError> {
    let source = &files[present[0]];
    match opts.int_policy {
        IntPolicy::Error => {
            return Err(SoupError::IntForbidden {
                tensor: name.to_string(),
                dtype: first.dtype,
                path: source.path().to_path_buf(),
            })
        }
        IntPolicy::RequireEqual => {
            let reference = source.data(first);
            for &i in &present[1..] {
                let other = &files[i];
                if other.data(other.get(name).expect("present")) != reference {
                    return Err(SoupError::IntMismatch {
                        tensor: name.to_string(),
                        dtype: first.dtype,
                        first: source.path().to_path_buf(),
                        other: other.path().to_path_buf(),
                    });
                }
            }
        }
        IntPolicy::First => {}
    }
    Ok(Plan::Copy {
        input: present[0],
        nbytes: first.nbytes(),
    })
}

/// Joins problem lines, listing at most [`MAX_LISTED`].
pub(crate) fn listing(problems: Vec<String>) -> String {
    let n = problems.len();
    let mut text = problems
        .into_iter()
        .take(MAX_LISTED)
        .collect::<Vec<_>>()
        .join("\n");
    if n > MAX_LISTED {
        text.push_str(&format!("\n  ... and {} more", n - MAX_LISTED));
    }
    text
}

/// Names, quoted and comma-separated, at most [`MAX_LISTED`].
pub(crate) fn list(names: &[&str]) -> String {
    let mut s = names
        .iter()
        .take(MAX_LISTED)
        .map(|n| format!("{n:?}"))
        .collect::<Vec<_>>()
        .join(", ");
    if names.len() > MAX_LISTED {
        s.push_str(&format!(", ... and {} more", names.len() - MAX_LISTED));
    }
    s
}
