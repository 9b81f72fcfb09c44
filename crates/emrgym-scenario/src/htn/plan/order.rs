//! Execution order: the children of a node in an order that respects the ordering edges,
//! the tree's nodes and primitives in execution order, the reference plan's calls, and a
//! topological order of a method's subtasks (all by [`emrgym_core::topological_order`]).

use super::tree::Tree;
use crate::trajectory::ToolCall;
use emrgym_core::topological_order;

impl Tree {
    /// Children of `n` in an order that respects the ordering edges, declaration order breaking ties.
    pub(crate) fn ordered_children(&self, n: usize) -> Vec<usize> {
        let kids = &self.nodes[n].children;
        let edges: Vec<(usize, usize)> = self
            .before
            .iter()
            .filter_map(|(a, b)| Some((kids.iter().position(|k| k == a)?, kids.iter().position(|k| k == b)?)))
            .collect();
        topological_order(kids.len(), &edges).into_iter().map(|i| kids[i]).collect()
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
    pub(crate) fn linear_all(&self) -> Vec<usize> {
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
