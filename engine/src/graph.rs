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
/// once more by name with `(see above)` instead of repeating its subtree.
pub fn text(p: &Pipeline) -> String {
    let down = p.downstream();
    let mut out = String::new();
    let mut seen = vec![false; p.stages.len()];
    fn walk(
        p: &Pipeline,
        down: &[Vec<usize>],
        i: usize,
        prefix: &str,
        last: bool,
        top: bool,
        seen: &mut [bool],
        out: &mut String,
    ) {
        let s = &p.stages[i];
        let branch = if top {
            ""
        } else if last {
            "└── "
        } else {
            "├── "
        };
        let repeat = seen[i];
        let _ = writeln!(
            out,
            "{prefix}{branch}{} ({}){}",
            s.name,
            s.kind,
            if repeat && !down[i].is_empty() {
                " (see above)"
            } else {
                ""
            }
        );
        if repeat {
            return;
        }
        seen[i] = true;
        let child_prefix = if top {
            String::new()
        } else {
            format!("{prefix}{}", if last { "    " } else { "│   " })
        };
        for (k, &d) in down[i].iter().enumerate() {
            walk(
                p,
                down,
                d,
                &child_prefix,
                k + 1 == down[i].len(),
                false,
                seen,
                out,
            );
        }
    }
    for (i, s) in p.stages.iter().enumerate() {
        if s.upstream.is_empty() {
            walk(p, &down, i, "", true, true, &mut seen, &mut out);
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
