//! Greedy soups (Wortsman et al., "Model soups", Recipe 1).
//!
//! Ingredients are sorted by their own held-out score, best first. The soup starts as
//! the best ingredient; each next ingredient is added only if the held-out score of the
//! uniform average of the soup plus that ingredient is at least the current soup's score
//! (it "does not drop"). The averages are made by `tureen_artifacts::soup::soup_files`,
//! so the numerics are those of every other tureen soup.
//!
//! The held-out score is a callback, so any evaluation can drive it; [`ZeroShotScorer`]
//! is the usual one (zero-shot top-1 on a held-out set).

use std::path::{Path, PathBuf};

use serde::Serialize;
use tureen_artifacts::soup::{soup_files, SoupOptions};

/// One decision of the greedy loop.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct GreedyStep {
    /// Index of the ingredient tried (into the caller's list).
    pub ingredient: usize,
    /// Held-out score of the soup with this ingredient added.
    pub score: f64,
    /// Whether it was kept (score did not drop).
    pub added: bool,
}

/// What [`greedy_soup`] did.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct GreedyOutcome {
    /// Each ingredient's own held-out score, in the caller's order.
    pub individual_scores: Vec<f64>,
    /// Ingredient indices, best first (stable: ties keep the caller's order).
    pub order: Vec<usize>,
    /// Indices of the ingredients in the soup, in the order they were added.
    pub selected: Vec<usize>,
    /// Every candidate tried after the first.
    pub steps: Vec<GreedyStep>,
    /// Held-out score of the final soup.
    pub score: f64,
}

/// Makes a greedy soup of `ingredients` into `output` (a safetensors file, written
/// atomically by `soup_files`).
///
/// * `opts`: soup numerics and metadata, as for any soup (the averages are uniform).
///   `input_digests`, if given, are those of all `ingredients` (each soup records the
///   digests of the ingredients it contains). The first ingredient's model config
///   (`tureen.clip_config`) is copied into every soup's metadata.
/// * `score`: held-out score of a checkpoint file (higher is better); called once per
///   ingredient, then once per candidate soup. It must be deterministic for the result to
///   be.
/// * `scratch`: a directory for the candidate soup (deleted at the end).
///
/// With one ingredient the soup is that ingredient (re-written through `soup_files`).
/// Errors: no ingredients, a score that is not finite, any soup error.
pub fn greedy_soup(
    ingredients: &[PathBuf],
    output: &Path,
    opts: &SoupOptions,
    score: &mut dyn FnMut(&Path) -> anyhow::Result<f64>,
    scratch: &Path,
) -> anyhow::Result<GreedyOutcome> {
    anyhow::ensure!(
        !ingredients.is_empty(),
        "a greedy soup needs at least one ingredient"
    );
    let mut checked = |path: &Path| -> anyhow::Result<f64> {
        let value = score(path)?;
        anyhow::ensure!(
            value.is_finite(),
            "held-out score of {} is {value}",
            path.display()
        );
        Ok(value)
    };
    let individual_scores = ingredients
        .iter()
        .map(|p| checked(p))
        .collect::<anyhow::Result<Vec<f64>>>()?;
    let mut order: Vec<usize> = (0..ingredients.len()).collect();
    order.sort_by(|&a, &b| individual_scores[b].total_cmp(&individual_scores[a]));

    let opts = crate::checkpoint::inherit_model_config(opts, ingredients)?;
    let mut selected = vec![order[0]];
    let mut best = individual_scores[order[0]];
    let mut steps = Vec::new();
    let candidate = scratch.join("greedy-candidate.safetensors");
    for &next in &order[1..] {
        let mut trial = selected.clone();
        trial.push(next);
        let paths: Vec<PathBuf> = trial.iter().map(|&i| ingredients[i].clone()).collect();
        soup_files(
            &paths,
            None,
            &candidate,
            &subset_options(&opts, &trial),
            None,
        )?;
        let value = checked(&candidate)?;
        let added = value >= best;
        if added {
            selected = trial;
            best = value;
        }
        steps.push(GreedyStep {
            ingredient: next,
            score: value,
            added,
        });
    }
    let _ = std::fs::remove_file(&candidate);
    let paths: Vec<PathBuf> = selected.iter().map(|&i| ingredients[i].clone()).collect();
    soup_files(
        &paths,
        None,
        output,
        &subset_options(&opts, &selected),
        None,
    )?;
    Ok(GreedyOutcome {
        individual_scores,
        order,
        selected,
        steps,
        score: best,
    })
}

/// The options for a soup of the ingredients `chosen`: their digests when the caller
/// gave the digests of all ingredients.
fn subset_options(opts: &SoupOptions, chosen: &[usize]) -> SoupOptions {
    let input_digests = opts
        .input_digests
        .as_ref()
        .map(|all| chosen.iter().map(|&i| all[i]).collect());
    SoupOptions {
        input_digests,
        ..opts.clone()
    }
}

/// The usual held-out score of a greedy soup: zero-shot top-1 of a checkpoint on a
/// held-out set, computed exactly like an `eval` stage with `params` (which must
/// configure `data`, `classnames` and `templates`).
pub struct ZeroShotScorer {
    /// The held-out set and how to evaluate it (the soup's `heldout` param).
    pub params: tureen_stages::eval::EvalParams,
    /// Relative paths in `params` resolve against this directory.
    pub base_dir: PathBuf,
    /// Where each candidate is evaluated.
    pub device: tch::Device,
}

impl ZeroShotScorer {
    /// Zero-shot top-1 of the checkpoint at `path` (a weights file).
    pub fn score(&self, path: &Path) -> anyhow::Result<f64> {
        anyhow::ensure!(
            self.params.data.is_some(),
            "greedy soup: the held-out set needs `data`, `classnames` and `templates`"
        );
        let metrics = crate::eval::suite::evaluate(
            &self.params,
            path,
            &self.base_dir,
            self.device,
            &mut |line| tracing::info!("greedy soup, {}: {line}", path.display()),
        )?;
        metrics["zeroshot"]["top1"]
            .as_f64()
            .ok_or_else(|| anyhow::anyhow!("no zero-shot top-1 in the metrics"))
    }
}
