//! Execution order: the children of a node in an order that respects the ordering edges,
//! the tree's nodes and primitives in execution order, the reference plan's calls, and a
//! topological order of a method's subtasks.

use super::tree::Tree;
use crate::trajectory::ToolCall;
use petgraph::graph::DiGraph;

impl Tree {
    /// Children of `n` in an order that respects the ordering edges, declaration order breaking ties.
    pub fn ordered_children(&self, n: usize) -> Vec<usize> {
        let kids = &self.nodes[n].children;
        let mut g: DiGraph<usize, ()> = DiGraph::new();
        let idx: Vec<_> = kids.iter().map(|k| g.add_node(*k)).collect();
        for (a, b) in &self.before {
            if let (Some(ia), Some(ib)) = (kids.iter().position(|k| k == a), kids.iter().position(|k| k == b)) {
                g.add_edge(idx[ia], idx[ib], ());
            }
        }
        // Kahn's algorithm with the smallest declaration index first
        let mut indeg: Vec<usize> = idx
            .iter()
            .map(|i| g.neighbors_directed(*i, petgraph::Direction::Incoming).count())
            .collect();
        let mut out = Vec::new();
        let mut done = vec![false; kids.len()];
        while out.len() < kids.len() {
            let Some(next) = (0..kids.len()).find(|i| !done[*i] && indeg[*i] == 0) else {
                break; // a cycle: the library lint rejects these
            };
            done[next] = true;
            out.push(kids[next]);
            for m in g.neighbors_directed(idx[next], petgraph::Direction::Outgoing) {
                indeg[m.index()] = indeg[m.index()].saturating_sub(1);
            }
        }
        out
    }

    /// Primitive nodes in execution order (depth first, siblings in a valid order).
    pub fn linear(&self) -> Vec<usize> {
        let mut out = Vec::new();
        self.walk(0, &mut out);
        out
    }

    fn walk(&self, n: usize, out: &mut Vec<usize>) {
        if self.nodes[n].kind == "primitive" {
            out.push(n);
        }
        for c in self.ordered_children(n) {
            self.walk(c, out);
        }
    }

    /// Every node in execution order (compounds before their children).
    pub fn linear_all(&self) -> Vec<usize> {
        let mut out = Vec::new();
        self.walk_all(0, &mut out);
        out
    }

    fn walk_all(&self, n: usize, out: &mut Vec<usize>) {
        if n >= self.nodes.len() {
            return;
        }
        out.push(n);
        for c in self.ordered_children(n) {
            self.walk_all(c, out);
        }
    }

    /// The reference plan: tool calls in order.
    pub fn reference_calls(&self) -> Vec<(usize, ToolCall)> {
        self.linear()
            .into_iter()
            .filter_map(|n| self.nodes[n].call.clone().map(|c| (n, c)))
            .collect()
    }
}

pub(super) fn topo(n: usize, edges: &[(usize, usize)]) -> Vec<usize> {
    let mut indeg = vec![0usize; n];
    for (_, b) in edges {
        indeg[*b] += 1;
    }
    let mut done = vec![false; n];
    let mut out = Vec::new();
    while out.len() < n {
        let Some(next) = (0..n).find(|i| !done[*i] && indeg[*i] == 0) else {
            // cycle: fall back to declaration order for the rest
            out.extend((0..n).filter(|i| !done[*i]));
            break;
        };
        done[next] = true;
        out.push(next);
        for (a, b) in edges {
            if *a == next {
                indeg[*b] = indeg[*b].saturating_sub(1);
            }
        }
    }
    out
}
