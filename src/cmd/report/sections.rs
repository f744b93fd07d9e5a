//! The sections of the report, each drawn from the run record, its metrics and the
//! store. A section whose data is missing (a run without evals, a soup whose file was
//! collected) says so instead of failing the report.

use serde_json::Value;
use tureen_engine::cache::OutputRecord;
use tureen_engine::record::{RunRecord, StageRecord};

use super::dag::{self, Node};
use super::html::{digest, esc, status, table};
use super::Facts;
use crate::cmd::output::number;
use crate::cmd::plot::{chart, curves};
use crate::cmd::runs::{human_seconds, wall_seconds};

pub fn header(f: &Facts) -> String {
    let r = &f.rec;
    let mut facts = vec![
        (
            "pipeline",
            format!(
                "<code>{}</code> ({})",
                esc(&r.pipeline.display().to_string()),
                digest(&r.pipeline_digest)
            ),
        ),
        ("started", esc(&r.started)),
        ("ended", esc(r.ended.as_deref().unwrap_or("-"))),
        (
            "wall time",
            esc(&wall_seconds(r).map_or("-".into(), human_seconds)),
        ),
        ("host", format!("{} (user {})", esc(&r.host), esc(&r.user))),
        (
            "store",
            format!("<code>{}</code>", esc(&f.store.display().to_string())),
        ),
    ];
    if !r.overrides.is_empty() {
        facts.push((
            "overrides",
            format!("<code>{}</code>", esc(&r.overrides.join(" "))),
        ));
    }
    if let Some(purpose) = r.options.get("purpose").and_then(Value::as_str) {
        facts.push(("purpose", esc(purpose)));
    }
    let dl: String = facts
        .iter()
        .map(|(k, v)| format!("<dt>{k}</dt><dd>{v}</dd>\n"))
        .collect();
    let nav = [
        "dag", "stages", "curves", "evals", "soups", "params", "versions",
    ]
    .iter()
    .map(|s| format!("<a href=\"#{s}\">{s}</a>"))
    .collect::<String>();
    format!(
        "<header>\n<h1>tureen run <code>{}</code> {}</h1>\n<nav>{nav}</nav>\n<dl class=\"facts\">\n{dl}</dl>\n</header>\n",
        esc(&r.run_id),
        status(r.status.as_str())
    )
}

/// The stages a stage's inputs and dependencies name.
fn upstream(r: &RunRecord, s: &StageRecord) -> Vec<usize> {
    let names: Vec<&str> = r.stages.iter().map(|s| s.name.as_str()).collect();
    let refs = s
        .inputs
        .values()
        .flat_map(|i| i.refs.split(", ").map(str::to_string).collect::<Vec<_>>());
    let deps = s
        .fingerprint
        .iter()
        .flat_map(|fp| fp.deps.iter().map(|(text, _)| text.clone()));
    let mut ups: Vec<usize> = refs
        .chain(deps)
        .filter_map(|r| curves::stage_of(&r, &names))
        .filter_map(|n| names.iter().position(|m| *m == n))
        .collect();
    ups.sort_unstable();
    ups.dedup();
    ups
}

pub fn dag(f: &Facts) -> String {
    let r = &f.rec;
    let nodes: Vec<Node> = r
        .stages
        .iter()
        .map(|s| Node {
            name: s.name.clone(),
            kind: s.kind.clone(),
            status: s.status.to_string(),
        })
        .collect();
    let edges: Vec<(usize, usize)> = r
        .stages
        .iter()
        .enumerate()
        .flat_map(|(i, s)| upstream(r, s).into_iter().map(move |u| (u, i)))
        .collect();
    if nodes.is_empty() {
        return "<p class=\"note\">The run recorded no stages (it is still running, or it was killed).</p>\n".into();
    }
    format!(
        "<div class=\"figure\">\n{}</div>\n",
        dag::svg(&nodes, &edges)
    )
}

pub fn stages(f: &Facts) -> String {
    let rows: Vec<Vec<String>> = f.rec.stages.iter().map(|s| stage_row(f, s)).collect();
    table(
        &[
            "stage",
            "kind",
            "status",
            "wall s",
            "key",
            "outputs",
            "executor",
            "why / error",
        ],
        &["wall s"],
        &rows,
    )
}

fn stage_row(f: &Facts, s: &StageRecord) -> Vec<String> {
    let outputs: Vec<String> = s
        .outputs
        .iter()
        .map(|(name, o)| match o {
            OutputRecord::One(a) => format!("{} {}", esc(name), digest(&a.digest.to_string())),
            OutputRecord::Series { series } => {
                let last = series
                    .last()
                    .map(|a| digest(&a.digest.to_string()))
                    .unwrap_or_default();
                format!("{} {} artifacts, last {last}", esc(name), series.len())
            }
        })
        .collect();
    let why = match (&s.error, s.status.as_str()) {
        (Some(e), _) => esc(e),
        (None, "cached") => "up to date (restored from the cache)".into(),
        (None, _) => esc(&s.why.join("; ")),
    };
    vec![
        format!("<code>{}</code>", esc(&s.name)),
        esc(&s.kind),
        status(s.status.as_str()),
        s.seconds.map_or("-".into(), |x| format!("{x:.2}")),
        s.key.map_or("-".into(), |k| digest(&k.to_string())),
        outputs.join("<br>"),
        executor(f, s),
        why,
    ]
}

/// `local`, or `slurm` with the job ids (the earlier attempts' first), from the job
/// record the Slurm executor keeps per key (`<store>/slurm/<key>/slurm-job.json`).
fn executor(f: &Facts, s: &StageRecord) -> String {
    let Some(key) = s.key.filter(|_| s.executor == tureen_engine::pipeline::Executor::Slurm) else {
        return esc(s.executor.as_str());
    };
    let path = f
        .store
        .join("slurm")
        .join(key.to_hex())
        .join("slurm-job.json");
    let job: Option<Value> = std::fs::read(&path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok());
    let ids: Vec<String> = job
        .iter()
        .flat_map(|j| {
            let earlier = j
                .get("previous_jobs")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            earlier.into_iter().chain(j.get("job_id").cloned())
        })
        .filter_map(|v| v.as_str().map(str::to_string))
        .collect();
    match ids.as_slice() {
        [] => "slurm".into(),
        ids => format!("slurm job {}", esc(&ids.join(", "))),
    }
}

pub fn curves(f: &Facts) -> String {
    let drawn = curves::read_run(&f.store, &f.rec.run_id).and_then(|c| {
        if c.loss.is_empty() && c.top1.is_empty() && c.evals.is_empty() {
            anyhow::bail!("the run logged no training metrics and no evaluations");
        }
        chart::svg(&c)
    });
    match drawn {
        Ok(svg) => format!(
            "<div class=\"figure\">\n{svg}</div>\n<p class=\"note\">Training loss and zero-shot top-1 against \
             samples seen; the right column is the final 10%. Markers are evaluations (bars: one standard \
             error of the accuracy, over the images evaluated), the soup a star.</p>\n"
        ),
        Err(e) => format!("<p class=\"note\">No curves: {}</p>\n", esc(&format!("{e:#}"))),
    }
}

pub fn evals(f: &Facts) -> String {
    let pct = |m: &tureen_engine::run_metrics::StageMetrics, k: &str| {
        m.get(k).map_or("-".into(), |v| format!("{:.2}", 100.0 * v))
    };
    let mut rows = Vec::new();
    for s in &f.rec.stages {
        let Some(m) = f
            .metrics
            .stages
            .get(&s.name)
            .filter(|m| m.contains_key("zeroshot.top1"))
        else {
            continue;
        };
        let top1 = m["zeroshot.top1"];
        let n = m.get("zeroshot.samples").copied();
        let se = n
            .filter(|n| *n > 0.0)
            .map(|n| 100.0 * (top1 * (1.0 - top1) / n).sqrt());
        let model = s
            .inputs
            .get("model")
            .map_or("-".to_string(), |i| i.refs.clone());
        rows.push(vec![
            format!("<code>{}</code>", esc(&s.name)),
            format!("<code>{}</code>", esc(&model)),
            match se {
                Some(se) => format!("{:.2} ± {se:.2}", 100.0 * top1),
                None => format!("{:.2}", 100.0 * top1),
            },
            pct(m, "zeroshot.top5"),
            pct(m, "zeroshot.mean_per_class_recall"),
            pct(m, "retrieval.image_to_text_r1"),
            pct(m, "retrieval.text_to_image_r1"),
            n.map_or("-".into(), number),
        ]);
    }
    if rows.is_empty() {
        return "<p class=\"note\">No evaluation stage in this run.</p>\n".into();
    }
    let cols = [
        "eval",
        "model",
        "top-1 %",
        "top-5 %",
        "mean per-class %",
        "image→text R@1 %",
        "text→image R@1 %",
        "images",
    ];
    format!(
        "{}<p class=\"note\">± is one standard error, √(p(1−p)/n) over the n images evaluated: \
         differences within about two of them are noise.</p>\n",
        table(&cols, &cols[2..], &rows)
    )
}

pub fn soups(f: &Facts) -> String {
    let soups: Vec<String> = f
        .rec
        .stages
        .iter()
        .filter(|s| s.kind == "soup")
        .map(|s| soup(f, s))
        .collect();
    if soups.is_empty() {
        return "<p class=\"note\">No soup in this run.</p>\n".into();
    }
    soups.concat()
}

/// One soup: its ingredients (from the provenance in the soup file's header) by digest,
/// named by the stage output that produced each, with weights.
fn soup(f: &Facts, s: &StageRecord) -> String {
    let heading = format!("<h3><code>{}</code></h3>\n", esc(&s.name));
    let Some(OutputRecord::One(out)) = s.outputs.values().next() else {
        return format!(
            "{heading}<p class=\"note\">No soup was made ({}).</p>\n",
            esc(s.status.as_str())
        );
    };
    let hex = out.digest.to_hex();
    let path = f.store.join("objects").join(&hex[..2]).join(&hex[2..]);
    let meta = match tureen_artifacts::safetensors::SafetensorsFile::open(&path) {
        Ok(file) => file.metadata().cloned().unwrap_or_default(),
        Err(e) => {
            return format!(
                "{heading}<p class=\"note\">Cannot read the soup {}: {}</p>\n",
                digest(&out.digest.to_string()),
                esc(&e.to_string())
            )
        }
    };
    let ingredients: Vec<Value> = meta
        .get("tureen.soup.ingredients")
        .and_then(|j| serde_json::from_str(j).ok())
        .unwrap_or_default();
    let total: f64 = ingredients
        .iter()
        .filter_map(|i| i["weight"].as_f64())
        .sum();
    let rows: Vec<Vec<String>> = ingredients
        .iter()
        .map(|i| {
            let d = i["blake3"].as_str().unwrap_or("-");
            let w = i["weight"].as_f64();
            vec![
                esc(&produced_by(&f.rec, d)
                    .unwrap_or_else(|| i["file"].as_str().unwrap_or("-").to_string())),
                digest(d),
                w.map_or("-".into(), number),
                w.filter(|_| total != 0.0)
                    .map_or("-".into(), |w| format!("{:.1}", 100.0 * w / total)),
            ]
        })
        .collect();
    let settings: Vec<String> = ["numerics", "out_dtype", "keys", "int_policy"]
        .iter()
        .filter_map(|k| {
            meta.get(&format!("tureen.soup.{k}"))
                .map(|v| format!("{k} <code>{}</code>", esc(v)))
        })
        .collect();
    format!(
        "{heading}<p>{} = soup of {} ingredients; {}</p>\n{}",
        digest(&out.digest.to_string()),
        ingredients.len(),
        settings.join(", "),
        table(
            &["ingredient", "digest", "weight", "share %"],
            &["weight", "share %"],
            &rows
        )
    )
}

/// `core.final` for the digest of core's final output in this run.
fn produced_by(r: &RunRecord, d: &str) -> Option<String> {
    r.stages.iter().find_map(|s| {
        s.outputs.iter().find_map(|(name, o)| match o {
            OutputRecord::One(a) => {
                (a.digest.to_string() == d).then(|| format!("{}.{name}", s.name))
            }
            OutputRecord::Series { series } => series
                .iter()
                .position(|a| a.digest.to_string() == d)
                .map(|i| format!("{}.{name}[{i}]", s.name)),
        })
    })
}

pub fn params(f: &Facts) -> String {
    let rows: Vec<Vec<String>> = f
        .rec
        .params
        .iter()
        .map(|(k, v)| {
            vec![
                format!("<code>{}</code>", esc(k)),
                format!("<code>{}</code>", esc(&v.to_string())),
            ]
        })
        .collect();
    if rows.is_empty() {
        return "<p class=\"note\">The pipeline declares no params.</p>\n".into();
    }
    table(&["param", "value"], &[], &rows)
}

pub fn versions(f: &Facts) -> String {
    let mut rows: Vec<Vec<String>> = f
        .rec
        .tools
        .iter()
        .map(|(k, v)| vec![esc(k), format!("<code>{}</code>", esc(v))])
        .collect();
    rows.push(vec!["host".into(), esc(&f.rec.host)]);
    rows.push(vec![
        "report written by".into(),
        format!("<code>tureen {}</code>", esc(crate::cmd::version::LONG)),
    ]);
    table(&["tool", "version"], &[], &rows)
}

pub fn footer() -> String {
    format!(
        "<footer>Written by tureen {} at {}. Self-contained: no script, font or network resource.</footer>\n",
        esc(crate::cmd::version::LONG),
        esc(&tureen_engine::now_rfc3339())
    )
}
