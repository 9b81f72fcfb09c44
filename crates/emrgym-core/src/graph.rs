//! The one topological sort: Kahn's algorithm (Kahn, "Topological sorting of large networks",
//! CACM 1962) with the smallest index first among the ready nodes, so ties keep declaration
//! order and the result is deterministic.

/// Nodes `0..n` in an order where every edge `(a, b)` has `a` before `b`; among nodes that
/// are ready at once, the smallest index comes first. Nodes on a cycle (which library lints
/// reject before this runs) follow in index order rather than being dropped. Edges naming a
/// node `>= n` are ignored.
pub fn topological_order(n: usize, edges: &[(usize, usize)]) -> Vec<usize> {
    let edges: Vec<(usize, usize)> = edges.iter().copied().filter(|&(a, b)| a < n && b < n).collect();
    let mut indeg = vec![0usize; n];
    for &(_, b) in &edges {
        indeg[b] += 1;
    }
    let mut done = vec![false; n];
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let Some(next) = (0..n).find(|&i| !done[i] && indeg[i] == 0) else {
            out.extend((0..n).filter(|&i| !done[i]));
            break;
        };
        done[next] = true;
        out.push(next);
        for &(a, b) in &edges {
            if a == next {
                indeg[b] = indeg[b].saturating_sub(1);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::topological_order;

    #[test]
    fn edges_are_respected_and_ties_keep_index_order() {
        assert_eq!(topological_order(4, &[]), vec![0, 1, 2, 3]);
        assert_eq!(topological_order(4, &[(3, 0), (2, 1)]), vec![2, 1, 3, 0]);
        // a repeated edge counts once per copy on both sides
        assert_eq!(topological_order(3, &[(2, 0), (2, 0), (1, 2)]), vec![1, 2, 0]);
    }

    #[test]
    fn a_cycle_keeps_every_node_and_bad_edges_are_ignored() {
        let o = topological_order(3, &[(0, 1), (1, 0)]);
        assert_eq!(o, vec![2, 0, 1]);
        assert_eq!(topological_order(2, &[(0, 7), (9, 1)]), vec![0, 1]);
    }
}
