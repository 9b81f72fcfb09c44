//! Search execution on a sandbox: candidate rows from the cohort's indexes (intersected),
//! shadowing by the overlay, the remaining clauses, `_sort` (cohort sort columns for
//! cohort rows), paging, chains and `_include`/`_revinclude`.

use super::cohort::{Method, SortColumn, Version};
use super::sandbox::{MAX_INCLUDED, Sandbox, SearchResult};
use crate::deadline;
use crate::error::{FhirError, FhirResult};
use crate::search::{self, Include, SearchQuery, SearchValue, SortValue};
use crate::values::split_reference;
use serde_json::Value;
use std::collections::HashSet;
use std::sync::Arc;

impl Sandbox {
    fn resolve_chains(&self, query: &mut SearchQuery) -> FhirResult<()> {
        for clause in query.clauses.iter_mut() {
            let Some(chain) = clause.chain.clone() else { continue };
            deadline::check()?;
            let mut keys = Vec::new();
            let mut any_target = false;
            for t in &chain.targets {
                let code = chain.param.split([':', '.']).next().unwrap_or_default();
                if self.cohort.registry().get(t, code).is_none() {
                    continue;
                }
                any_target = true;
                let inner = SearchQuery::parse(t, &[(chain.param.clone(), chain.value.clone())], self.cohort.registry(), true)?;
                for v in self.search_all(&inner)? {
                    keys.push(format!("{}/{}", v.ty, v.id));
                }
            }
            if !any_target {
                return Err(FhirError::BadRequest(format!(
                    "chained parameter '{}': '{}' is not a search parameter of {}",
                    clause.raw_name,
                    chain.param,
                    chain.targets.join(" or ")
                )));
            }
            clause.values = vec![SearchValue::Reference(keys)];
        }
        Ok(())
    }

    /// Candidate cohort rows for a query, and which clauses the indexes answered exactly
    /// (those need no re-check on cohort rows).
    fn candidates(&self, query: &SearchQuery) -> (Vec<u32>, Vec<bool>) {
        use std::borrow::Cow;
        let ty = query.ty.as_str();
        let mut lists: Vec<Cow<'_, [u32]>> = Vec::new();
        let mut exact = vec![false; query.clauses.len()];
        for (ci, clause) in query.clauses.iter().enumerate() {
            // `_id` is answered by the id map, no index needed
            if clause.param.code == "_id"
                && clause.modifier == search::Modifier::None
                && let Some(table) = self.cohort.tables.get(ty)
            {
                let ids: Option<Vec<u32>> = clause
                    .values
                    .iter()
                    .map(|v| match v {
                        SearchValue::Token {
                            system: search::SystemMatch::Any | search::SystemMatch::NoSystem,
                            code: Some(c),
                            ..
                        } => Some(table.by_id.get(c.as_str()).copied()),
                        _ => None,
                    })
                    .collect::<Option<Vec<Option<u32>>>>()
                    .map(|v| v.into_iter().flatten().collect());
                if let Some(mut set) = ids {
                    set.sort_unstable();
                    set.dedup();
                    exact[ci] = true;
                    lists.push(Cow::Owned(set));
                    continue;
                }
            }
            let Some(keys) = search::lookup_keys(clause) else { continue };
            let Some(index) = self.cohort.index(ty, &clause.param.code) else {
                continue;
            };
            exact[ci] = true;
            let found: Vec<&Vec<u32>> = keys.iter().filter_map(|k| index.get(k)).collect();
            lists.push(match found.as_slice() {
                [] => Cow::Owned(Vec::new()),
                // one key: borrow the posting list, no copy
                [one] => Cow::Borrowed(one.as_slice()),
                many => {
                    let mut set: Vec<u32> = many.iter().flat_map(|l| l.iter().copied()).collect();
                    set.sort_unstable();
                    set.dedup();
                    Cow::Owned(set)
                }
            });
        }
        if lists.is_empty() {
            let n = self.cohort.tables.get(ty).map(|t| t.rows.len()).unwrap_or(0) as u32;
            return ((0..n).collect(), exact);
        }
        // intersect from the shortest list up
        lists.sort_by_key(|l| l.len());
        let mut acc: Vec<u32> = lists[0].to_vec();
        for l in &lists[1..] {
            if acc.is_empty() {
                break;
            }
            acc = intersect(&acc, l);
        }
        (acc, exact)
    }

    /// All matches of a query (no paging), in result order.
    pub fn search_all(&self, query: &SearchQuery) -> FhirResult<Vec<Arc<Version>>> {
        let mut q = query.clone();
        self.resolve_chains(&mut q)?;
        let ty = q.ty.as_str();
        self.check_type(ty)?;
        let now = self.opts.clock.peek().timestamp_millis();
        let overlay = self.overlay.get(ty);
        let (cands, exact) = self.candidates(&q);
        let matches_all = |r: &Value| q.clauses.iter().all(|c| search::clause_matches(c, ty, r, now));
        let matches_rest = |r: &Value| {
            q.clauses
                .iter()
                .zip(&exact)
                .all(|(c, done)| *done || search::clause_matches(c, ty, r, now))
        };
        let all_exact = exact.iter().all(|e| *e);
        let mut hits: Vec<(u64, Arc<Version>)> = Vec::new();
        if let Some(table) = self.cohort.tables.get(ty) {
            for (i, pos) in cands.into_iter().enumerate() {
                deadline::check_every(i, 256)?;
                let Some(row) = table.rows.get(pos as usize) else { continue };
                if row.is_deleted() || overlay.is_some_and(|m| m.contains_key(&row.id)) {
                    continue;
                }
                // rows answered entirely by indexes are not even parsed
                if all_exact || row.with_resource(matches_rest).unwrap_or(false) {
                    hits.push((u64::from(pos), row.clone()));
                }
            }
        }
        let base_len = self.cohort.tables.get(ty).map(|t| t.rows.len() as u64).unwrap_or(0);
        if let Some(m) = overlay {
            for (i, h) in m.values().enumerate() {
                deadline::check_every(i, 256)?;
                let Some(v) = h.versions.last() else { continue };
                if let Some(r) = v.resource()
                    && matches_all(&r)
                {
                    // overlay rows sort after every cohort row
                    let order = h.base_pos.map(u64::from).unwrap_or(base_len + h.seq);
                    hits.push((order, v.clone()));
                }
            }
        }
        hits.sort_by_key(|(o, _)| *o);
        if q.sort.is_empty() {
            return Ok(hits.into_iter().map(|(_, v)| v).collect());
        }
        let columns: Vec<Option<SortColumn>> = q.sort.iter().map(|s| self.cohort.sort_column(ty, &s.param, s.descending)).collect();
        // sort keys in one flat vector (hits × keys), then sort positions
        let k = q.sort.len();
        let mut flat: Vec<Option<SortValue>> = Vec::with_capacity(hits.len() * k);
        for (order, v) in &hits {
            let from_cohort = *order < base_len && v.method == Method::Load;
            for (s, col) in q.sort.iter().zip(&columns) {
                flat.push(match col {
                    Some(c) if from_cohort => c.get(*order as usize).cloned().flatten(),
                    _ => v.with_resource(|r| search::sort_value(&s.param, ty, r, s.descending)).flatten(),
                });
            }
        }
        let mut positions: Vec<usize> = (0..hits.len()).collect();
        positions.sort_by(|&a, &b| {
            for (j, s) in q.sort.iter().enumerate() {
                let ord = match (&flat[a * k + j], &flat[b * k + j]) {
                    (None, None) => std::cmp::Ordering::Equal,
                    (None, Some(_)) => std::cmp::Ordering::Greater,
                    (Some(_), None) => std::cmp::Ordering::Less,
                    (Some(x), Some(y)) => {
                        let o = x.partial_cmp(y).unwrap_or(std::cmp::Ordering::Equal);
                        if s.descending { o.reverse() } else { o }
                    }
                };
                if ord != std::cmp::Ordering::Equal {
                    return ord;
                }
            }
            a.cmp(&b)
        });
        Ok(positions.into_iter().filter_map(|i| hits.get(i).map(|h| h.1.clone())).collect())
    }

    /// Run a search: matches for the requested page, includes, total.
    pub fn search(&self, query: &SearchQuery) -> FhirResult<SearchResult> {
        let all = self.search_all(query)?;
        let total = all.len();
        let page: Vec<Arc<Version>> = all.into_iter().skip(query.offset).take(query.count).collect();
        let (included, included_truncated) = self.includes(&page, &query.include, &query.revinclude, MAX_INCLUDED)?;
        Ok(SearchResult {
            matches: page,
            included,
            included_truncated,
            total,
        })
    }

    /// The resources `_include`/`_revinclude` add to `page`, at most `cap` of them (and
    /// whether more were left out).
    fn includes(
        &self,
        page: &[Arc<Version>],
        include: &[Include],
        revinclude: &[Include],
        cap: usize,
    ) -> FhirResult<(Vec<Arc<Version>>, bool)> {
        let mut seen: HashSet<(Arc<str>, Arc<str>)> = page.iter().map(|v| (v.ty.clone(), v.id.clone())).collect();
        let mut out: Vec<Arc<Version>> = Vec::new();
        let mut frontier: Vec<Arc<Version>> = page.to_vec();
        let mut truncated = false;
        'rounds: for round in 0..5 {
            deadline::check()?;
            let mut next = Vec::new();
            for inc in include.iter().filter(|i| round == 0 || i.iterate) {
                for v in &frontier {
                    let Some(r) = v.resource() else { continue };
                    if inc.source != "*" && inc.source != *v.ty {
                        continue;
                    }
                    let params: Vec<Arc<crate::params::ParamDef>> = match &inc.param {
                        Some(p) => self.cohort.registry().get(&v.ty, p).cloned().into_iter().collect(),
                        None => self.cohort.registry().reference_params(&v.ty).into_iter().cloned().collect(),
                    };
                    for p in params {
                        let items = search::extract(&p, &v.ty, &r);
                        for target in crate::values::references(&items) {
                            let Some((t, id)) = split_reference(&target) else { continue };
                            if inc.target.as_ref().is_some_and(|want| *want != t) {
                                continue;
                            }
                            if let Some(tv) = self.current(&t, &id).filter(|x| !x.is_deleted())
                                && seen.insert((tv.ty.clone(), tv.id.clone()))
                            {
                                if out.len() + next.len() >= cap {
                                    truncated = true;
                                    out.append(&mut next);
                                    break 'rounds;
                                }
                                next.push(tv.clone());
                            }
                        }
                    }
                }
            }
            for inc in revinclude.iter().filter(|i| round == 0 || i.iterate) {
                let Some(pcode) = &inc.param else { continue };
                for (i, v) in frontier.iter().enumerate() {
                    deadline::check_every(i, 16)?;
                    let key = format!("{}/{}", v.ty, v.id);
                    let q = SearchQuery::parse(&inc.source, &[(pcode.clone(), key)], self.cohort.registry(), true)?;
                    for found in self.search_all(&q)? {
                        if seen.insert((found.ty.clone(), found.id.clone())) {
                            if out.len() + next.len() >= cap {
                                truncated = true;
                                out.append(&mut next);
                                break 'rounds;
                            }
                            next.push(found);
                        }
                    }
                }
            }
            if next.is_empty() {
                break;
            }
            out.extend(next.iter().cloned());
            frontier = next;
        }
        Ok((out, truncated))
    }
}

/// Intersect two sorted position lists. When one is much shorter, gallop through the
/// longer one (a patient's rows against a common code's rows).
pub(super) fn intersect(a: &[u32], b: &[u32]) -> Vec<u32> {
    let (small, large) = if a.len() <= b.len() { (a, b) } else { (b, a) };
    let mut out = Vec::with_capacity(small.len());
    if small.len().saturating_mul(8) < large.len() {
        let mut lo = 0;
        for &x in small {
            // exponential search for the first position >= x in large[lo..]
            let mut bound = 1;
            while lo + bound < large.len() && large[lo + bound] < x {
                bound *= 2;
            }
            let hi = (lo + bound + 1).min(large.len());
            match large[lo..hi].binary_search(&x) {
                Ok(i) => {
                    out.push(x);
                    lo += i + 1;
                }
                Err(i) => lo += i,
            }
            if lo >= large.len() {
                break;
            }
        }
        return out;
    }
    let (mut i, mut j) = (0, 0);
    while i < a.len() && j < b.len() {
        match a[i].cmp(&b[j]) {
            std::cmp::Ordering::Less => i += 1,
            std::cmp::Ordering::Greater => j += 1,
            std::cmp::Ordering::Equal => {
                out.push(a[i]);
                i += 1;
                j += 1;
            }
        }
    }
    out
}
