//! The cohort's search structures: lazily built inverted indexes and sort columns, the
//! reverse-reference map, and the one-pass parallel warm-up that builds the usual ones.

use super::cohort::{Cohort, Index, Referrers, SortColumn, WARM_INDEXES, WARM_SORTS};
use super::collect_references;
use crate::search::{self, SortValue};
use crate::values::normalize_reference;
use std::collections::HashMap;
use std::sync::Arc;

impl Cohort {
    /// Build the usual indexes and sort columns now, in one pass per resource type over
    /// all cores (otherwise each is built on first use). `emrgym serve` runs this in the
    /// background right after it starts listening.
    pub fn warm(&self) {
        self.warm_tables();
        self.warm.store(true, std::sync::atomic::Ordering::Release);
    }

    /// Has `warm` finished?
    pub(crate) fn is_warm(&self) -> bool {
        self.warm.load(std::sync::atomic::Ordering::Acquire)
    }

    fn warm_tables(&self) {
        for (ty, table) in &self.tables {
            let params: Vec<Arc<crate::params::ParamDef>> = WARM_INDEXES
                .iter()
                .filter(|p| table.indexes.get(**p).is_some_and(|c| c.get().is_none()))
                .filter_map(|p| self.registry().get(ty, p).cloned())
                .collect();
            let sorts: Vec<(Arc<crate::params::ParamDef>, bool)> = WARM_SORTS
                .iter()
                .filter_map(|(p, d)| self.registry().get(ty, p).map(|def| (def.clone(), *d)))
                .filter(|(p, d)| !emrgym_core::sync::lock(&table.sort_columns).contains_key(&(p.code.clone(), *d)))
                .collect();
            if params.is_empty() && sorts.is_empty() {
                continue;
            }
            table.set_warming(true);
            let mut fields: Option<Vec<String>> = Some(Vec::new());
            for e in params
                .iter()
                .map(|p| p.expr_for(ty))
                .chain(sorts.iter().map(|(p, _)| p.expr_for(ty)))
            {
                fields = match (fields, crate::fhirpath::top_fields(e)) {
                    (Some(mut all), Some(more)) => {
                        all.extend(more);
                        Some(all)
                    }
                    _ => None,
                };
            }
            let fields = fields.as_deref();
            let threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1).clamp(1, 8);
            let chunk = table.rows.len().div_ceil(threads).max(1);
            type Part = (Vec<Index>, Vec<Vec<Option<SortValue>>>);
            // a part is None when its thread panicked: then nothing is stored, and each index is
            // built whole on first use (a merged index missing rows would answer searches wrongly)
            let parts: Option<Vec<Part>> = std::thread::scope(|scope| {
                let handles: Vec<_> = table
                    .rows
                    .chunks(chunk)
                    .enumerate()
                    .map(|(ci, rows)| {
                        let params = &params;
                        let sorts = &sorts;
                        scope.spawn(move || {
                            let mut idx: Vec<Index> = vec![Index::default(); params.len()];
                            let mut cols: Vec<Vec<Option<SortValue>>> = vec![Vec::with_capacity(rows.len()); sorts.len()];
                            for (i, row) in rows.iter().enumerate() {
                                let pos = (ci * chunk + i) as u32;
                                row.with_fields(fields, |r| {
                                    for (k, p) in params.iter().enumerate() {
                                        for key in search::index_keys(p, ty, r) {
                                            idx[k].entry(key).or_default().push(pos);
                                        }
                                    }
                                    for (k, (p, d)) in sorts.iter().enumerate() {
                                        cols[k].push(search::sort_value(p, ty, r, *d));
                                    }
                                });
                            }
                            (idx, cols)
                        })
                    })
                    .collect();
                handles.into_iter().map(|h| h.join().ok()).collect()
            });
            let Some(parts) = parts else {
                tracing::warn!(resource_type = %ty, "warming the indexes failed; they are built on first use");
                table.set_warming(false);
                continue;
            };
            let mut merged_idx: Vec<Index> = vec![Index::default(); params.len()];
            let mut merged_cols: Vec<Vec<Option<SortValue>>> = vec![Vec::with_capacity(table.rows.len()); sorts.len()];
            for (idx, cols) in parts {
                for (k, part) in idx.into_iter().enumerate() {
                    for (key, list) in part {
                        merged_idx[k].entry(key).or_default().extend(list);
                    }
                }
                for (k, col) in cols.into_iter().enumerate() {
                    merged_cols[k].extend(col);
                }
            }
            for (p, idx) in params.iter().zip(merged_idx) {
                if let Some(cell) = table.indexes.get(&p.code) {
                    // already set: a query built this index first, from the same rows
                    let _ = cell.set(idx);
                }
            }
            {
                let mut m = emrgym_core::sync::lock(&table.sort_columns);
                for ((p, d), col) in sorts.iter().zip(merged_cols) {
                    if col.len() == table.rows.len() {
                        m.entry((p.code.clone(), *d)).or_insert_with(|| Arc::new(col));
                    }
                }
            }
            table.set_warming(false);
        }
    }

    pub(super) fn index(&self, ty: &str, code: &str) -> Option<&Index> {
        let table = self.tables.get(ty)?;
        let cell = table.indexes.get(code)?;
        if cell.get().is_none() {
            table.wait_for_warm();
        }
        Some(cell.get_or_init(|| {
            let mut idx: Index = Index::default();
            if let Some(param) = self.registry().get(ty, code) {
                let fields = crate::fhirpath::top_fields(param.expr_for(ty));
                for (pos, row) in table.rows.iter().enumerate() {
                    row.with_fields(fields.as_deref(), |r| {
                        for k in search::index_keys(param, ty, r) {
                            idx.entry(k).or_default().push(pos as u32);
                        }
                    });
                }
            }
            idx
        }))
    }

    /// The sort values of every row of `ty` for a parameter and direction (built once).
    pub(super) fn sort_column(&self, ty: &str, param: &crate::params::ParamDef, descending: bool) -> Option<SortColumn> {
        let table = self.tables.get(ty)?;
        let key = (param.code.clone(), descending);
        if let Some(c) = emrgym_core::sync::lock(&table.sort_columns).get(&key) {
            return Some(c.clone());
        }
        table.wait_for_warm();
        if let Some(c) = emrgym_core::sync::lock(&table.sort_columns).get(&key) {
            return Some(c.clone());
        }
        let fields = crate::fhirpath::top_fields(param.expr_for(ty));
        let col: Vec<Option<SortValue>> = table
            .rows
            .iter()
            .map(|row| {
                row.with_fields(fields.as_deref(), |r| search::sort_value(param, ty, r, descending))
                    .flatten()
            })
            .collect();
        let col = Arc::new(col);
        emrgym_core::sync::lock(&table.sort_columns).insert(key, col.clone());
        Some(col)
    }

    pub(super) fn referrers(&self) -> &Referrers {
        self.referrers.get_or_init(|| {
            let mut map: Referrers = HashMap::new();
            for table in self.tables.values() {
                for row in &table.rows {
                    let refs = row
                        .with_resource(|r| {
                            let mut refs = Vec::new();
                            collect_references(r, &mut refs);
                            refs
                        })
                        // None only for a row that is not JSON, which the loader refused already
                        .unwrap_or_default();
                    for target in refs {
                        map.entry(normalize_reference(&target))
                            .or_default()
                            .push((row.ty.clone(), row.id.clone()));
                    }
                }
            }
            map
        })
    }
}
