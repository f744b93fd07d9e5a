//! Zero-shot over training in `tureen plot` (issue 13, item 4), on a real toy recipe
//! run whose evals follow the card's pattern (evaluations of core's and the rewind's
//! checkpoints via `foreach`, the finals, the soup): each training stage's evaluations
//! are one curve, the soup a star, every marker has a standard-error bar, and no marker
//! is hidden under another.

mod recipe;

/// The centre of every filled marker polygon (diamonds, stars) in a plotters SVG.
fn marker_centres(svg: &str) -> Vec<(f64, f64)> {
    svg.split("<polygon")
        .skip(1)
        .filter_map(|tag| {
            let points = tag.split("points=\"").nth(1)?.split('"').next()?;
            let xy: Vec<(f64, f64)> = points
                .split_whitespace()
                .filter_map(|p| {
                    let (x, y) = p.split_once(',')?;
                    Some((x.parse().ok()?, y.parse().ok()?))
                })
                .collect();
            let n = xy.len() as f64;
            (n >= 4.0).then(|| {
                (
                    xy.iter().map(|p| p.0).sum::<f64>() / n,
                    xy.iter().map(|p| p.1).sum::<f64>() / n,
                )
            })
        })
        .collect()
}

#[test]
fn evaluations_over_training_are_curves_with_error_bars_and_no_hidden_markers() {
    let dir = tempfile::tempdir().unwrap();
    recipe::run(dir.path(), &recipe::full(4));
    let out = recipe::tureen(dir.path(), &["plot", "-o", "curves.svg"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", recipe::log(&out));
    let svg = std::fs::read_to_string(dir.path().join("curves.svg")).unwrap();

    // core: checkpoints [1], [2] and the final; the rewind: its checkpoint [0]; the soup.
    assert!(
        svg.contains("core: 3 evaluations, last"),
        "core's zero-shot curve"
    );
    assert!(
        svg.contains("rewind: zeroshot@rewind-0"),
        "the rewind's evaluation"
    );
    assert!(
        svg.contains("soup (eval_soup): "),
        "the soup as its own point"
    );
    assert!(svg.contains("bars: one standard error"));

    let centres = marker_centres(&svg);
    // Two accuracy panels with 5 markers each (the zoom keeps those of the last 10%),
    // plus legend markers.
    assert!(centres.len() >= 8, "{} markers", centres.len());
    for (i, a) in centres.iter().enumerate() {
        for b in &centres[..i] {
            let d = ((a.0 - b.0).powi(2) + (a.1 - b.1).powi(2)).sqrt();
            assert!(d >= 5.0, "a marker at {a:?} hides one at {b:?}");
        }
    }
    // Every evaluation has its standard error (the bars).
    let summary = recipe::log(&out);
    assert_eq!(summary.matches("top-1").count(), 5, "{summary}");
    assert_eq!(summary.matches(" ± ").count(), 5, "{summary}");
}
