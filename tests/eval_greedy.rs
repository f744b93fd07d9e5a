//! Greedy soups: ingredients are tried best first and kept only when the held-out score
//! of the running average does not drop.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use tch::Tensor;
use tureen_artifacts::soup::SoupOptions;
use tureen_torch::checkpoint::{self, tensor_file};
use tureen_torch::eval::greedy::greedy_soup;

/// Writes a checkpoint whose every weight is `value`.
fn ingredient(dir: &Path, name: &str, value: f32) -> PathBuf {
    ingredient_with(dir, name, value, BTreeMap::new())
}

fn ingredient_with(
    dir: &Path,
    name: &str,
    value: f32,
    metadata: BTreeMap<String, String>,
) -> PathBuf {
    let path = dir.join(format!("{name}.safetensors"));
    let tensors = BTreeMap::from([
        ("w".to_string(), Tensor::from_slice(&[value; 4])),
        ("b".to_string(), Tensor::from_slice(&[value; 2])),
    ]);
    tensor_file::write(&path, &tensors, &metadata).unwrap();
    path
}

fn mean_weight(path: &Path) -> f64 {
    tensor_file::read(path).unwrap().tensors["w"]
        .mean(tch::Kind::Double)
        .double_value(&[])
}

/// Held-out score: closeness of the weights to 1.0.
fn score(path: &Path) -> anyhow::Result<f64> {
    Ok(-(mean_weight(path) - 1.0).powi(2))
}

#[test]
fn ingredients_are_added_best_first_only_while_the_score_does_not_drop() {
    let dir = tempfile::tempdir().unwrap();
    // Given worst first: far (3.0, score -4), low (0.7, -0.09), near (1.2, -0.04).
    let inputs = vec![
        ingredient(dir.path(), "far", 3.0),
        ingredient(dir.path(), "low", 0.7),
        ingredient(dir.path(), "near", 1.2),
    ];
    let out = dir.path().join("soup.safetensors");
    let mut calls = Vec::new();
    let outcome = greedy_soup(
        &inputs,
        &out,
        &SoupOptions::default(),
        &mut |p| {
            calls.push(p.to_path_buf());
            score(p)
        },
        dir.path(),
    )
    .unwrap();
    assert_eq!(outcome.order, [2, 1, 0]);
    // near + low = 0.95 (score -0.0025 >= -0.04): kept; + far = 1.63: dropped.
    assert_eq!(outcome.selected, [2, 1]);
    assert_eq!(
        outcome.steps.iter().map(|s| s.added).collect::<Vec<_>>(),
        [true, false]
    );
    assert!(
        (mean_weight(&out) - 0.95).abs() < 1e-6,
        "{}",
        mean_weight(&out)
    );
    assert!((outcome.score - score(&out).unwrap()).abs() < 1e-9);
    // 3 individual scores + 2 candidate soups.
    assert_eq!(calls.len(), 5);
    // Candidates are cleaned up; only inputs and the soup remain.
    let mut names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "far.safetensors",
            "low.safetensors",
            "near.safetensors",
            "soup.safetensors"
        ]
    );
}

#[test]
fn an_equal_score_still_adds_the_ingredient() {
    let dir = tempfile::tempdir().unwrap();
    // Two identical ingredients: their average scores the same, which does not drop.
    let inputs = vec![
        ingredient(dir.path(), "a", 1.5),
        ingredient(dir.path(), "b", 1.5),
    ];
    let out = dir.path().join("soup.safetensors");
    let outcome = greedy_soup(
        &inputs,
        &out,
        &SoupOptions::default(),
        &mut score,
        dir.path(),
    )
    .unwrap();
    assert_eq!(outcome.selected, [0, 1]);
}

#[test]
fn one_ingredient_is_its_own_soup() {
    let dir = tempfile::tempdir().unwrap();
    let inputs = vec![ingredient(dir.path(), "only", 0.25)];
    let out = dir.path().join("soup.safetensors");
    let outcome = greedy_soup(
        &inputs,
        &out,
        &SoupOptions::default(),
        &mut score,
        dir.path(),
    )
    .unwrap();
    assert_eq!(outcome.selected, [0]);
    assert!(outcome.steps.is_empty());
    assert_eq!(mean_weight(&out), 0.25);
}

#[test]
fn a_non_finite_score_or_no_ingredients_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let inputs = vec![ingredient(dir.path(), "a", 1.0)];
    let out = dir.path().join("soup.safetensors");
    let err = greedy_soup(
        &inputs,
        &out,
        &SoupOptions::default(),
        &mut |_| Ok(f64::NAN),
        dir.path(),
    )
    .unwrap_err();
    assert!(err.to_string().contains("a.safetensors"), "{err}");
    assert!(!out.exists());
    assert!(greedy_soup(&[], &out, &SoupOptions::default(), &mut score, dir.path()).is_err());
}

#[test]
fn soups_keep_the_model_config_and_record_only_their_own_ingredients() {
    let dir = tempfile::tempdir().unwrap();
    let config = BTreeMap::from([(
        tureen_torch::checkpoint::CONFIG_KEY.to_string(),
        "{\"model\": 1}".to_string(),
    )]);
    let inputs = vec![
        ingredient_with(dir.path(), "far", 3.0, config.clone()),
        ingredient_with(dir.path(), "low", 0.7, config.clone()),
        ingredient_with(dir.path(), "near", 1.2, config.clone()),
    ];
    let digests: Vec<tureen_artifacts::Digest> = (0..3u8)
        .map(|i| tureen_artifacts::Digest::from_hex(&format!("{:02x}", i + 1).repeat(32)).unwrap())
        .collect();
    let opts = SoupOptions {
        input_digests: Some(digests.clone()),
        ..SoupOptions::default()
    };
    let out = dir.path().join("soup.safetensors");
    let mut scored_configs = Vec::new();
    let outcome = greedy_soup(
        &inputs,
        &out,
        &opts,
        &mut |p| {
            // Every file scored, candidates included, carries the model config.
            scored_configs.push(
                checkpoint::read_metadata(p)
                    .unwrap()
                    .contains_key(tureen_torch::checkpoint::CONFIG_KEY),
            );
            score(p)
        },
        dir.path(),
    )
    .unwrap();
    assert_eq!(outcome.selected, [2, 1]);
    assert!(scored_configs.iter().all(|&c| c), "{scored_configs:?}");
    let header = checkpoint::read_metadata(&out).unwrap();
    assert_eq!(
        header[tureen_torch::checkpoint::CONFIG_KEY],
        "{\"model\": 1}"
    );
    let recorded = &header["tureen.soup.ingredients"];
    assert!(
        recorded.contains(&digests[2].to_string()) && recorded.contains(&digests[1].to_string()),
        "{recorded}"
    );
    assert!(!recorded.contains(&digests[0].to_string()), "{recorded}");
}
