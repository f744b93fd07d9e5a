//! The run's DAG as an inline SVG: stages in layers (each one below the deepest of its
//! upstreams), coloured by status, with an arrow per dependency. Drawn here rather than
//! by Graphviz or Mermaid so the report needs no program and no script.

use std::fmt::Write as _;

use super::html::{attr, esc};

/// A box of the drawing.
pub struct Node {
    pub name: String,
    pub kind: String,
    pub status: String,
}

const BOX_HEIGHT: f64 = 42.0;
const H_GAP: f64 = 18.0;
const V_GAP: f64 = 46.0;
const MARGIN: f64 = 10.0;
/// Width per character of the 13 px bold name (DejaVu Sans is about this wide).
const CHAR_WIDTH: f64 = 8.0;

/// The SVG of `nodes` (in execution order) with `edges` (upstream, downstream).
pub fn svg(nodes: &[Node], edges: &[(usize, usize)]) -> String {
    let layer = layers(nodes.len(), edges);
    let depth = layer.iter().copied().max().map_or(0, |d| d + 1);
    let width = |n: &Node| {
        (CHAR_WIDTH * n.name.len().max(n.kind.len() + n.status.len() + 3) as f64 + 24.0).max(96.0)
    };
    let rows: Vec<Vec<usize>> = order_rows(nodes.len(), edges, &layer, depth);
    let row_width = |row: &[usize]| -> f64 {
        row.iter().map(|&i| width(&nodes[i])).sum::<f64>()
            + H_GAP * row.len().saturating_sub(1) as f64
    };
    let total_w = rows.iter().map(|r| row_width(r)).fold(0.0, f64::max) + 2.0 * MARGIN;
    let total_h = depth as f64 * (BOX_HEIGHT + V_GAP) - V_GAP + 2.0 * MARGIN;
    // Box centres.
    let mut centre = vec![(0.0, 0.0); nodes.len()];
    for (d, row) in rows.iter().enumerate() {
        let mut x = (total_w - row_width(row)) / 2.0;
        let y = MARGIN + d as f64 * (BOX_HEIGHT + V_GAP) + BOX_HEIGHT / 2.0;
        for &i in row {
            let w = width(&nodes[i]);
            centre[i] = (x + w / 2.0, y);
            x += w + H_GAP;
        }
    }
    let mut out = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{total_w:.0}\" height=\"{total_h:.0}\" \
         viewBox=\"0 0 {total_w:.0} {total_h:.0}\" role=\"img\" aria-label=\"pipeline DAG\" \
         font-family=\"DejaVu Sans, sans-serif\">\n\
         <defs><marker id=\"arrow\" viewBox=\"0 0 10 10\" refX=\"9\" refY=\"5\" markerWidth=\"7\" \
         markerHeight=\"7\" orient=\"auto-start-reverse\"><path d=\"M0,0 L10,5 L0,10 z\" fill=\"#6b7684\"/>\
         </marker></defs>\n"
    );
    for &(u, v) in edges {
        let (x1, y1) = (centre[u].0, centre[u].1 + BOX_HEIGHT / 2.0);
        let (x2, y2) = (centre[v].0, centre[v].1 - BOX_HEIGHT / 2.0 - 1.0);
        let bend = (y2 - y1) / 2.0;
        let _ = writeln!(
            out,
            "<path d=\"M{x1:.1},{y1:.1} C{x1:.1},{:.1} {x2:.1},{:.1} {x2:.1},{y2:.1}\" fill=\"none\" \
             stroke=\"#8a96a5\" stroke-width=\"1.4\" marker-end=\"url(#arrow)\"/>",
            y1 + bend,
            y2 - bend
        );
    }
    for (i, n) in nodes.iter().enumerate() {
        let (fill, stroke) = colours(&n.status);
        let w = width(n);
        let (x, y) = (centre[i].0 - w / 2.0, centre[i].1 - BOX_HEIGHT / 2.0);
        let _ = writeln!(
            out,
            "<g><title>{}</title><rect x=\"{x:.1}\" y=\"{y:.1}\" width=\"{w:.1}\" height=\"{BOX_HEIGHT}\" \
             rx=\"6\" fill=\"{fill}\" stroke=\"{stroke}\" stroke-width=\"1.5\"/>\
             <text x=\"{cx:.1}\" y=\"{:.1}\" text-anchor=\"middle\" font-size=\"13\" font-weight=\"bold\" \
             fill=\"#1d2630\">{}</text><text x=\"{cx:.1}\" y=\"{:.1}\" text-anchor=\"middle\" \
             font-size=\"11\" fill=\"#4a5868\">{} · {}</text></g>",
            attr(&format!("{} ({}): {}", n.name, n.kind, n.status)),
            y + 17.0,
            esc(&n.name),
            y + 33.0,
            esc(&n.kind),
            esc(&n.status),
            cx = centre[i].0,
        );
    }
    out.push_str("</svg>\n");
    out
}

/// Each node's layer: 0 for stages without upstreams, else one below the deepest.
fn layers(n: usize, edges: &[(usize, usize)]) -> Vec<usize> {
    let mut layer = vec![0; n];
    // Longest paths by relaxation: at most n rounds in a DAG.
    for _ in 0..n {
        let mut changed = false;
        for &(u, v) in edges {
            if layer[v] < layer[u] + 1 {
                layer[v] = layer[u] + 1;
                changed = true;
            }
        }
        if !changed {
            break;
        }
    }
    layer
}

/// Nodes of each layer, ordered by the mean position of their upstreams (fewer
/// crossing arrows), ties in execution order.
fn order_rows(
    n: usize,
    edges: &[(usize, usize)],
    layer: &[usize],
    depth: usize,
) -> Vec<Vec<usize>> {
    let mut rows: Vec<Vec<usize>> = vec![Vec::new(); depth];
    for i in 0..n {
        rows[layer[i]].push(i);
    }
    let mut position = vec![0.0; n];
    for row in &mut rows {
        let key = |i: usize| {
            let ups: Vec<f64> = edges
                .iter()
                .filter(|e| e.1 == i)
                .map(|e| position[e.0])
                .collect();
            if ups.is_empty() {
                i as f64
            } else {
                ups.iter().sum::<f64>() / ups.len() as f64
            }
        };
        let mut keyed: Vec<(f64, usize)> = row.iter().map(|&i| (key(i), i)).collect();
        keyed.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        *row = keyed.into_iter().map(|(_, i)| i).collect();
        for (k, &i) in row.iter().enumerate() {
            position[i] = k as f64;
        }
    }
    rows
}

fn colours(status: &str) -> (&'static str, &'static str) {
    match status {
        "ran" => ("#d9f0dd", "#2e7d32"),
        "cached" => ("#e3ecf7", "#4a6fa5"),
        "failed" => ("#f8d7da", "#c62828"),
        _ => ("#f1ecd9", "#9a8440"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str) -> Node {
        Node {
            name: name.into(),
            kind: "eval".into(),
            status: "ran".into(),
        }
    }

    #[test]
    fn stages_sit_below_their_deepest_upstream() {
        // a -> b -> d, a -> c -> d, a -> d
        let edges = [(0, 1), (1, 3), (0, 2), (2, 3), (0, 3)];
        assert_eq!(layers(4, &edges), vec![0, 1, 1, 2]);
        let svg = svg(&[node("a"), node("b"), node("c"), node("d<")], &edges);
        assert_eq!(svg.matches("<rect").count(), 4);
        assert_eq!(svg.matches("marker-end").count(), 5);
        assert!(svg.contains("d&lt;"), "names are escaped");
    }
}
