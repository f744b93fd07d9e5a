//! Pass 6: the graph must be acyclic. Every cycle is reported once, with its path, at
//! the first stage on it.

use std::collections::{HashMap, HashSet, VecDeque};

use super::{Stage, Target};
use crate::diag::Sink;

/// Reports every dependency cycle among `stages`.
pub(super) fn check(sink: &mut Sink, stages: &[Stage]) {
    let mut graph = petgraph::graph::DiGraph::<usize, ()>::new();
    let nodes: Vec<_> = (0..stages.len()).map(|i| graph.add_node(i)).collect();
    for (i, s) in stages.iter().enumerate() {
        for &u in &s.upstream {
            graph.add_edge(nodes[u], nodes[i], ());
        }
    }
    for scc in petgraph::algo::tarjan_scc(&graph) {
        if scc.len() < 2 {
            continue;
        }
        let members: HashSet<usize> = scc.iter().map(|n| graph[*n]).collect();
        let start = *members.iter().min().expect("a component is not empty");
        let names: Vec<&str> = path(stages, start, &members)
            .iter()
            .map(|&i| stages[i].name.as_str())
            .collect();
        let at = stages[start]
            .refs()
            .find(|r| matches!(r.target, Target::Output { stage, .. } if members.contains(&stage)))
            .map(|r| r.pos)
            .unwrap_or(stages[start].pos);
        sink.error(at, format!("dependency cycle: {}", names.join(" -> ")));
    }
}

/// A path around the cycle through `start`, following producer -> consumer edges
/// within `members` (breadth-first, so the shortest), ending back at `start`.
fn path(stages: &[Stage], start: usize, members: &HashSet<usize>) -> Vec<usize> {
    let mut down: HashMap<usize, Vec<usize>> = HashMap::new();
    for &m in members {
        for &u in &stages[m].upstream {
            if members.contains(&u) {
                down.entry(u).or_default().push(m);
            }
        }
    }
    for v in down.values_mut() {
        v.sort_unstable();
    }
    let mut prev: HashMap<usize, usize> = HashMap::new();
    let mut queue = VecDeque::from([start]);
    while let Some(n) = queue.pop_front() {
        for &d in down.get(&n).map(Vec::as_slice).unwrap_or(&[]) {
            if d == start {
                let mut path = vec![start];
                let mut cur = n;
                while cur != start {
                    path.push(cur);
                    cur = prev[&cur];
                }
                path.push(start);
                let last = path.len() - 1;
                path[1..last].reverse();
                return path;
            }
            if let std::collections::hash_map::Entry::Vacant(e) = prev.entry(d) {
                e.insert(n);
                queue.push_back(d);
            }
        }
    }
    vec![start, start]
}
