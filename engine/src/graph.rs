//! Drawing a pipeline's DAG: an indented text tree, Graphviz `dot`, or Mermaid.

use std::collections::BTreeSet;
use std::fmt::Write as _;

use crate::pipeline::{Pipeline, Target};

/// Edge labels: for each stage, (upstream, output names it consumes).
fn edges(p: &Pipeline) -> Vec<(usize, usize, String)> {
    let mut out = Vec::new();
    for (i, s) in p.stages.iter().enumerate() {
        for &u in &s.upstream {
            let names: BTreeSet<&str> = s
                .refs()
                .filter_map(|r| match &r.target {
                    Target::Output { stage, output, .. } if *stage == u => Some(output.as_str()),
                    _ => None,
                })
                .collect();
            out.push((u, i, names.into_iter().collect::<Vec<_>>().join(", ")));
        }
    }
    out
}

/// A tree from each root (stage without upstreams). A stage reached again is shown
/// once more by name with `(see above)` instead of repeating its subtree. Walked with an
/// explicit stack: a pipeline may be thousands of stages deep.
pub fn text(p: &Pipeline) -> String {
    let down = p.downstream();
    let mut out = String::new();
    let mut seen = vec![false; p.stages.len()];
    // (stage, prefix of its line, last child of its parent, a root)
    let mut stack: Vec<(usize, String, bool, bool)> = p
        .stages
        .iter()
        .enumerate()
        .rev()
        .filter(|(_, s)| s.upstream.is_empty())
        .map(|(i, _)| (i, String::new(), true, true))
        .collect();
    while let Some((i, prefix, last, top)) = stack.pop() {
        let s = &p.stages[i];
        let branch = match (top, last) {
            (true, _) => "",
            (false, true) => "└── ",
            (false, false) => "├── ",
        };
        let repeat = seen[i];
        let see_above = if repeat && !down[i].is_empty() { " (see above)" } else { "" };
        let _ = writeln!(out, "{prefix}{branch}{} ({}){see_above}", s.name, s.kind);
        if repeat {
            continue;
        }
        seen[i] = true;
        let child_prefix = match (top, last) {
            (true, _) => String::new(),
            (false, true) => format!("{prefix}    "),
            (false, false) => format!("{prefix}│   "),
        };
        let n = down[i].len();
        for (k, &d) in down[i].iter().enumerate().rev() {
            stack.push((d, child_prefix.clone(), k + 1 == n, false));
        }
    }
    out
}

fn quote(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// Graphviz: `tureen dag p.yaml --format dot | dot -Tsvg > dag.svg`.
pub fn dot(p: &Pipeline) -> String {
    let mut out =
        String::from("digraph tureen {\n  rankdir=LR;\n  node [shape=box, style=rounded];\n");
    for s in &p.stages {
        let _ = writeln!(
            out,
            "  {} [label={}];",
            quote(&s.name),
            quote(&format!("{}\n{}", s.name, s.kind))
        );
    }
    for (u, d, label) in edges(p) {
        let _ = writeln!(
            out,
            "  {} -> {} [label={}];",
            quote(&p.stages[u].name),
            quote(&p.stages[d].name),
            quote(&label)
        );
    }
    out.push_str("}\n");
    out
}

/// Mermaid flowchart (renders in GitHub and GitLab markdown).
pub fn mermaid(p: &Pipeline) -> String {
    let esc = |s: &str| s.replace('"', "#quot;");
    let mut out = String::from("flowchart LR\n");
    for (i, s) in p.stages.iter().enumerate() {
        let _ = writeln!(
            out,
            "  s{i}[\"{}<br/><i>{}</i>\"]",
            esc(&s.name),
            esc(&s.kind)
        );
    }
    for (u, d, label) in edges(p) {
        if label.is_empty() {
            let _ = writeln!(out, "  s{u} --> s{d}");
        } else {
            let _ = writeln!(out, "  s{u} -->|\"{}\"| s{d}", esc(&label));
        }
    }
    out
}
