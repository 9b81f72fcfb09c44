//! The resource store: an immutable, indexed cohort snapshot and copy-on-write sandboxes
//! forked from it in O(1). Sandboxes keep full version history, assign deterministic ids,
//! validate writes and answer searches using the cohort's lazy indexes.

use super::clock::{Clock, fhir_instant};
use super::error::{FhirError, FhirResult};
use super::params::{ParamType, Registry};
use super::search::{self, Include, SearchQuery, SearchValue, SortValue};
use super::validate::{SchemaValidator, check_id};
use super::values::{normalize_reference, split_reference};
use rustc_hash::FxHashMap;
use serde_json::{Map, Value};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex, OnceLock};

/// What produced a version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Method {
    /// Loaded with the cohort.
    Load,
    /// POST.
    Create,
    /// PUT.
    Update,
    /// DELETE.
    Delete,
}

/// One version of one resource.
#[derive(Debug)]
pub struct Version {
    /// Resource type.
    pub ty: Arc<str>,
    /// Logical id.
    pub id: Arc<str>,
    /// `meta.versionId`.
    pub version_id: u64,
    /// `meta.lastUpdated` (FHIR instant).
    pub last_updated: Arc<str>,
    /// How this version came about.
    pub method: Method,
    body: Body,
}

/// A version's content. Cohort rows loaded from NDJSON stay compact JSON text and are
/// parsed when used, never kept as trees: parsing 785k resources into trees costs seconds at
/// start-up and gigabytes for as long as they are kept, a page of 20 costs microseconds.
#[derive(Debug)]
enum Body {
    Deleted,
    Parsed(Arc<Value>),
    Raw(RawText),
}

/// A resource's JSON text: a range of a shared buffer (a whole NDJSON file, read once).
#[derive(Debug, Clone)]
struct RawText {
    buf: Arc<String>,
    start: usize,
    end: usize,
}

impl RawText {
    fn as_str(&self) -> &str {
        self.buf.get(self.start..self.end).unwrap_or("null")
    }
}

impl PartialEq for Version {
    fn eq(&self, other: &Self) -> bool {
        self.ty == other.ty
            && self.id == other.id
            && self.version_id == other.version_id
            && self.last_updated == other.last_updated
            && self.method == other.method
            && self.resource() == other.resource()
    }
}

impl Version {
    fn parse_raw(&self, text: &str) -> Value {
        // the text was checked to be a JSON object when it was loaded
        let mut v: Value = serde_json::from_str(text).unwrap_or(Value::Null);
        stamp_meta(&mut v, self.version_id, &self.last_updated);
        v
    }

    /// The resource (`None` for a deletion). A compact cohort row is parsed on each call.
    pub fn resource(&self) -> Option<Arc<Value>> {
        match &self.body {
            Body::Deleted => None,
            Body::Parsed(v) => Some(v.clone()),
            Body::Raw(text) => Some(Arc::new(self.parse_raw(text.as_str()))),
        }
    }

    /// Run `f` on the resource without allocating a shared copy.
    pub fn with_resource<T>(&self, f: impl FnOnce(&Value) -> T) -> Option<T> {
        match &self.body {
            Body::Deleted => None,
            Body::Parsed(v) => Some(f(v)),
            Body::Raw(text) => Some(f(&self.parse_raw(text.as_str()))),
        }
    }

    /// Like `with_resource`, but a compact row is only partly parsed: `resourceType`, `id`
    /// and the top-level elements named in `fields` (a name also matches its polymorphic
    /// forms: `effective` matches `effectiveDateTime`). `None` for `fields` parses everything.
    pub fn with_fields<T>(&self, fields: Option<&[String]>, f: impl FnOnce(&Value) -> T) -> Option<T> {
        let (Body::Raw(text), Some(fields)) = (&self.body, fields) else {
            return self.with_resource(f);
        };
        type Top<'a> = Vec<(std::borrow::Cow<'a, str>, &'a serde_json::value::RawValue)>;
        #[derive(serde::Deserialize)]
        struct Borrowed<'a>(#[serde(borrow, with = "top_map")] Top<'a>);
        let Ok(Borrowed(top)) = serde_json::from_str::<Borrowed<'_>>(text.as_str()) else {
            return self.with_resource(f);
        };
        let wanted = |k: &str| {
            k == "resourceType"
                || k == "id"
                || fields
                    .iter()
                    .any(|n| k == n || (k.starts_with(n.as_str()) && k[n.len()..].starts_with(|c: char| c.is_ascii_uppercase())))
        };
        let mut partial = Map::new();
        for (k, raw) in top {
            if wanted(&k)
                && let Ok(v) = serde_json::from_str::<Value>(raw.get())
            {
                partial.insert(k.into_owned(), v);
            }
        }
        Some(f(&Value::Object(partial)))
    }

    /// Is this version a deletion?
    pub fn is_deleted(&self) -> bool {
        matches!(self.body, Body::Deleted)
    }

    /// The weak ETag for this version.
    pub fn etag(&self) -> String {
        format!("W/\"{}\"", self.version_id)
    }
}

type Index = FxHashMap<String, Vec<u32>>;
/// Reference target (`Type/id`) → the resources that refer to it.
type Referrers = HashMap<String, Vec<(Arc<str>, Arc<str>)>>;

#[derive(Debug)]
struct Table {
    rows: Vec<Arc<Version>>,
    by_id: FxHashMap<Arc<str>, u32>,
    indexes: HashMap<String, OnceLock<Index>>,
    sort_columns: Mutex<HashMap<(String, bool), SortColumn>>,
    /// True while `Cohort::warm` is building this table's indexes (queries wait for it
    /// rather than building the same index twice).
    warming: (Mutex<bool>, std::sync::Condvar),
}

impl Table {
    fn wait_for_warm(&self) {
        let (lock, cv) = &self.warming;
        if let Ok(mut busy) = lock.lock() {
            while *busy {
                match cv.wait(busy) {
                    Ok(b) => busy = b,
                    Err(_) => return,
                }
            }
        }
    }

    fn set_warming(&self, on: bool) {
        let (lock, cv) = &self.warming;
        if let Ok(mut busy) = lock.lock() {
            *busy = on;
        }
        cv.notify_all();
    }
}

/// The sort value of every row for one (parameter, direction).
type SortColumn = Arc<Vec<Option<SortValue>>>;

/// Parameters indexed and sort columns built by `Cohort::warm`.
pub const WARM_INDEXES: &[&str] = &["patient", "subject", "code"];
/// Sort keys prepared by `Cohort::warm`: (parameter, descending).
pub const WARM_SORTS: &[(&str, bool)] = &[("date", true), ("date", false)];

/// An immutable, loaded patient cohort. Shared by every sandbox forked from it.
#[derive(Debug)]
pub struct Cohort {
    name: String,
    tables: BTreeMap<String, Table>,
    registry: Arc<Registry>,
    count: usize,
    referrers: OnceLock<Referrers>,
    warm: std::sync::atomic::AtomicBool,
}

/// Builds a cohort from resources; references between them must already be literal
/// (`Type/id`), see `load` for bundle and NDJSON input.
#[derive(Debug)]
pub struct CohortBuilder {
    name: String,
    tables: BTreeMap<String, PendingTable>,
    count: usize,
    merged: usize,
}

/// Deserialize a JSON object's top level as borrowed (key, raw value) pairs, in order.
mod top_map {
    use serde::de::{Deserializer, MapAccess, Visitor};
    use serde_json::value::RawValue;
    use std::borrow::Cow;

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<(Cow<'de, str>, &'de RawValue)>, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Vec<(Cow<'de, str>, &'de RawValue)>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<Self::Value, A::Error> {
                let mut out = Vec::new();
                while let Some(k) = m.next_key::<Cow<'de, str>>()? {
                    let v: &'de RawValue = m.next_value()?;
                    out.push((k, v));
                }
                Ok(out)
            }
        }
        d.deserialize_map(V)
    }
}

/// Rows of one type being built, with their id → row map.
type PendingTable = (Vec<Body>, FxHashMap<Arc<str>, u32>);

/// The head of a resource, read without building its tree.
#[derive(serde::Deserialize)]
struct Head<'a> {
    #[serde(rename = "resourceType", borrow)]
    ty: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow)]
    id: Option<std::borrow::Cow<'a, str>>,
}

/// Where the cohort builder refused a resource.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CohortError {
    /// Not an object with a known resourceType.
    #[error("resource #{index}: {reason}")]
    BadResource {
        /// Position in the input.
        index: usize,
        /// Why.
        reason: String,
    },
    /// The same Type/id twice.
    #[error("duplicate resource {0}")]
    Duplicate(String),
}

impl CohortBuilder {
    /// Start an empty cohort called `name`.
    pub fn new(name: &str) -> Self {
        CohortBuilder {
            name: name.to_string(),
            tables: BTreeMap::new(),
            count: 0,
            merged: 0,
        }
    }

    /// Number of resources added so far.
    pub fn len(&self) -> usize {
        self.count
    }

    /// True when nothing was added.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Identical duplicates that were merged (e.g. an Organization repeated in several
    /// Synthea patient bundles).
    pub fn merged(&self) -> usize {
        self.merged
    }

    fn check_head(&self, ty: Option<&str>, id: Option<&str>) -> Result<(), CohortError> {
        let index = self.count;
        let ty = ty.ok_or(CohortError::BadResource {
            index,
            reason: "no resourceType".into(),
        })?;
        if !SchemaValidator::r4().is_resource_type(ty) {
            return Err(CohortError::BadResource {
                index,
                reason: format!("'{ty}' is not a FHIR R4 resource type"),
            });
        }
        let id = id.ok_or(CohortError::BadResource {
            index,
            reason: format!("{ty} has no id"),
        })?;
        check_id(id).map_err(|e| CohortError::BadResource {
            index,
            reason: e.to_string(),
        })
    }

    fn insert(&mut self, ty: &str, id: &str, body: Body) -> Result<(), CohortError> {
        if !self.tables.contains_key(ty) {
            self.tables.insert(ty.to_string(), PendingTable::default());
        }
        let Some((rows, by_id)) = self.tables.get_mut(ty) else {
            return Ok(());
        };
        if let Some(&pos) = by_id.get(id) {
            let same = match (rows.get(pos as usize), &body) {
                (Some(Body::Parsed(a)), Body::Parsed(b)) => a == b,
                (Some(Body::Raw(a)), Body::Raw(b)) => a.as_str() == b.as_str(),
                _ => false,
            };
            if same {
                self.merged += 1;
                return Ok(());
            }
            return Err(CohortError::Duplicate(format!("{ty}/{id} (with different content)")));
        }
        by_id.insert(Arc::from(id), rows.len() as u32);
        rows.push(body);
        self.count += 1;
        Ok(())
    }

    /// Add one resource (must have `resourceType` and `id`). An exact duplicate of a
    /// resource already added is merged; a different resource with the same type and id is
    /// an error.
    pub fn add(&mut self, resource: Value) -> Result<(), CohortError> {
        let ty = resource.get("resourceType").and_then(Value::as_str).map(str::to_string);
        let id = resource.get("id").and_then(Value::as_str).map(str::to_string);
        self.check_head(ty.as_deref(), id.as_deref())?;
        let (Some(ty), Some(id)) = (ty, id) else { return Ok(()) };
        self.insert(&ty, &id, Body::Parsed(Arc::new(resource)))
    }

    /// Add one resource given as JSON text (one NDJSON line). The text is checked to be a
    /// JSON object and kept compact; it is parsed when used.
    pub fn add_json(&mut self, text: &str) -> Result<(), CohortError> {
        self.add_ndjson(Arc::new(text.trim().to_string())).map_err(|(_, e)| e)
    }

    /// Add every non-empty line of an NDJSON buffer; the rows keep ranges of the shared
    /// buffer (no copies). Lines are checked on all cores. On error, returns the 1-based line
    /// number with the problem; nothing from the buffer is added then.
    pub fn add_ndjson(&mut self, buf: Arc<String>) -> Result<(), (usize, CohortError)> {
        let t0 = std::time::Instant::now();
        let mut lines: Vec<(usize, usize, usize)> = Vec::new(); // (line number, start, end)
        let mut pos = 0;
        for (n, line) in buf.split('\n').enumerate() {
            let start = pos;
            pos += line.len() + 1;
            let trimmed = line.trim();
            if !trimmed.is_empty() {
                let lead = line.len() - line.trim_start().len();
                lines.push((n + 1, start + lead, start + lead + trimmed.len()));
            }
        }
        type Heads<'b> = Result<Vec<(std::borrow::Cow<'b, str>, std::borrow::Cow<'b, str>)>, (usize, CohortError)>;
        let threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1).clamp(1, 8);
        let chunk = lines.len().div_ceil(threads).max(1);
        let first_index = self.count;
        let parts: Vec<Heads<'_>> = std::thread::scope(|scope| {
            let handles: Vec<_> = lines
                .chunks(chunk)
                .map(|part| {
                    let buf: &str = buf.as_str();
                    scope.spawn(move || {
                        part.iter()
                            .map(|&(n, a, b)| {
                                let text = buf.get(a..b).unwrap_or_default();
                                let head: Head<'_> = serde_json::from_str(text).map_err(|e| {
                                    (
                                        n,
                                        CohortError::BadResource {
                                            index: first_index,
                                            reason: format!("not a JSON object: {e}"),
                                        },
                                    )
                                })?;
                                Ok((head.ty.unwrap_or_default(), head.id.unwrap_or_default()))
                            })
                            .collect::<Heads>()
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join().unwrap_or_else(|_| {
                        Err((
                            0,
                            CohortError::BadResource {
                                index: first_index,
                                reason: "parser thread failed".into(),
                            },
                        ))
                    })
                })
                .collect()
        });
        let t1 = t0.elapsed().as_millis() as u64;
        let mut heads = Vec::with_capacity(lines.len());
        for p in parts {
            heads.extend(p?);
        }
        // bulk NDJSON files hold one resource type: size that table once
        if let Some((ty, _)) = heads.first()
            && !ty.is_empty()
        {
            let (rows, by_id) = self.tables.entry(ty.to_string()).or_default();
            rows.reserve(heads.len());
            by_id.reserve(heads.len());
        }
        for ((n, a, b), (ty, id)) in lines.into_iter().zip(heads) {
            let ty_opt = Some(&*ty).filter(|t| !t.is_empty());
            let id_opt = Some(&*id).filter(|t| !t.is_empty());
            self.check_head(ty_opt, id_opt).map_err(|e| (n, e))?;
            self.insert(
                &ty,
                &id,
                Body::Raw(RawText {
                    buf: buf.clone(),
                    start: a,
                    end: b,
                }),
            )
            .map_err(|e| (n, e))?;
        }
        tracing::debug!(
            split_and_check_ms = t1,
            total_ms = t0.elapsed().as_millis() as u64,
            "ndjson rows added"
        );
        Ok(())
    }

    /// Freeze into a cohort. Every resource is version 1 with `meta.lastUpdated` set to
    /// the load time from `clock` (the server manages meta). Indexes are built on first use
    /// or by `Cohort::warm`.
    pub fn build(self, clock: &Clock) -> Arc<Cohort> {
        let registry = Registry::r4();
        let stamp: Arc<str> = Arc::from(fhir_instant(clock.now()));
        let mut tables = BTreeMap::new();
        for (ty, (bodies, by_id)) in self.tables {
            let tyarc: Arc<str> = Arc::from(ty.as_str());
            let mut ids: Vec<Arc<str>> = vec![Arc::from(""); bodies.len()];
            for (id, &pos) in &by_id {
                ids[pos as usize] = id.clone();
            }
            let rows: Vec<Arc<Version>> = bodies
                .into_iter()
                .zip(ids)
                .map(|(body, id)| {
                    let body = match body {
                        Body::Parsed(v) => {
                            let mut v = Arc::unwrap_or_clone(v);
                            stamp_meta(&mut v, 1, &stamp);
                            Body::Parsed(Arc::new(v))
                        }
                        other => other,
                    };
                    Arc::new(Version {
                        ty: tyarc.clone(),
                        id,
                        version_id: 1,
                        last_updated: stamp.clone(),
                        method: Method::Load,
                        body,
                    })
                })
                .collect();
            let mut indexes = HashMap::new();
            for p in registry.for_type(&ty).values() {
                if matches!(p.ty, ParamType::Token | ParamType::Reference) {
                    indexes.insert(p.code.clone(), OnceLock::new());
                }
            }
            tables.insert(
                ty,
                Table {
                    rows,
                    by_id,
                    indexes,
                    sort_columns: Mutex::new(HashMap::new()),
                    warming: (Mutex::new(false), std::sync::Condvar::new()),
                },
            );
        }
        Arc::new(Cohort {
            name: self.name,
            tables,
            registry,
            count: self.count,
            referrers: OnceLock::new(),
            warm: std::sync::atomic::AtomicBool::new(false),
        })
    }
}

/// Put `resourceType`, `id` and `meta` first (in that order), then the other elements as given.
fn canonical_order(r: Value, id: &str) -> Value {
    let Value::Object(mut o) = r else { return r };
    let mut out = Map::new();
    if let Some(t) = o.shift_remove("resourceType") {
        out.insert("resourceType".into(), t);
    }
    o.shift_remove("id");
    out.insert("id".into(), Value::String(id.to_string()));
    if let Some(m) = o.shift_remove("meta") {
        out.insert("meta".into(), m);
    } else {
        out.insert("meta".into(), Value::Object(Map::new()));
    }
    out.extend(o);
    Value::Object(out)
}

/// Set meta.versionId and meta.lastUpdated (meta placed right after resourceType and id).
fn stamp_meta(r: &mut Value, version: u64, stamp: &str) {
    let Some(obj) = r.as_object_mut() else { return };
    if !obj.get("meta").is_some_and(Value::is_object) {
        let at = usize::from(obj.contains_key("resourceType")) + usize::from(obj.contains_key("id"));
        obj.shift_remove("meta");
        obj.shift_insert(at.min(obj.len()), "meta".into(), Value::Object(Map::new()));
    }
    if let Some(meta) = obj.get_mut("meta").and_then(Value::as_object_mut) {
        meta.insert("versionId".into(), Value::String(version.to_string()));
        meta.insert("lastUpdated".into(), Value::String(stamp.to_string()));
    }
}

impl Cohort {
    /// An empty cohort.
    pub fn empty(name: &str) -> Arc<Cohort> {
        CohortBuilder::new(name).build(&Clock::System)
    }

    /// The cohort's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Number of resources.
    pub fn len(&self) -> usize {
        self.count
    }

    /// True if the cohort holds nothing.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Resource counts per type.
    pub fn counts(&self) -> BTreeMap<String, usize> {
        self.tables.iter().map(|(k, t)| (k.clone(), t.rows.len())).collect()
    }

    /// The search parameter registry.
    pub fn registry(&self) -> &Arc<Registry> {
        &self.registry
    }

    /// Build the usual indexes and sort columns now, in one pass per resource type over
    /// all cores (otherwise each is built on first use). `emrgym serve` runs this in the
    /// background right after it starts listening.
    pub fn warm(&self) {
        self.warm_tables();
        self.warm.store(true, std::sync::atomic::Ordering::Release);
    }

    /// Has `warm` finished?
    pub fn is_warm(&self) -> bool {
        self.warm.load(std::sync::atomic::Ordering::Acquire)
    }

    fn warm_tables(&self) {
        for (ty, table) in &self.tables {
            let params: Vec<Arc<super::params::ParamDef>> = WARM_INDEXES
                .iter()
                .filter(|p| table.indexes.get(**p).is_some_and(|c| c.get().is_none()))
                .filter_map(|p| self.registry.get(ty, p).cloned())
                .collect();
            let sorts: Vec<(Arc<super::params::ParamDef>, bool)> = WARM_SORTS
                .iter()
                .filter_map(|(p, d)| self.registry.get(ty, p).map(|def| (def.clone(), *d)))
                .filter(|(p, d)| {
                    table
                        .sort_columns
                        .lock()
                        .map(|m| !m.contains_key(&(p.code.clone(), *d)))
                        .unwrap_or(false)
                })
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
                fields = match (fields, super::fhirpath::top_fields(e)) {
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
            let parts: Vec<Part> = std::thread::scope(|scope| {
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
                handles.into_iter().filter_map(|h| h.join().ok()).collect()
            });
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
                    let _ = cell.set(idx);
                }
            }
            if let Ok(mut m) = table.sort_columns.lock() {
                for ((p, d), col) in sorts.iter().zip(merged_cols) {
                    if col.len() == table.rows.len() {
                        m.entry((p.code.clone(), *d)).or_insert_with(|| Arc::new(col));
                    }
                }
            }
            table.set_warming(false);
        }
    }

    fn get(&self, ty: &str, id: &str) -> Option<&Arc<Version>> {
        let t = self.tables.get(ty)?;
        t.by_id.get(id).and_then(|&i| t.rows.get(i as usize))
    }

    fn index(&self, ty: &str, code: &str) -> Option<&Index> {
        let table = self.tables.get(ty)?;
        let cell = table.indexes.get(code)?;
        if cell.get().is_none() {
            table.wait_for_warm();
        }
        Some(cell.get_or_init(|| {
            let mut idx: Index = Index::default();
            if let Some(param) = self.registry.get(ty, code) {
                let fields = super::fhirpath::top_fields(param.expr_for(ty));
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
    fn sort_column(&self, ty: &str, param: &super::params::ParamDef, descending: bool) -> Option<SortColumn> {
        let table = self.tables.get(ty)?;
        let key = (param.code.clone(), descending);
        if let Some(c) = table.sort_columns.lock().ok()?.get(&key) {
            return Some(c.clone());
        }
        table.wait_for_warm();
        if let Some(c) = table.sort_columns.lock().ok()?.get(&key) {
            return Some(c.clone());
        }
        let fields = super::fhirpath::top_fields(param.expr_for(ty));
        let col: Vec<Option<SortValue>> = table
            .rows
            .iter()
            .map(|row| {
                row.with_fields(fields.as_deref(), |r| search::sort_value(param, ty, r, descending))
                    .flatten()
            })
            .collect();
        let col = Arc::new(col);
        table.sort_columns.lock().ok()?.insert(key, col.clone());
        Some(col)
    }

    fn referrers(&self) -> &Referrers {
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

/// Every `reference` string anywhere in a JSON value.
pub fn collect_references(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(o) => {
            for (k, x) in o {
                if k == "reference"
                    && let Value::String(s) = x
                {
                    out.push(s.clone());
                } else {
                    collect_references(x, out);
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|x| collect_references(x, out)),
        _ => {}
    }
}

/// Options of a sandbox.
#[derive(Debug, Clone)]
pub struct SandboxOptions {
    /// Seed of the id generator.
    pub seed: u64,
    /// The sandbox's clock.
    pub clock: Clock,
    /// Validate writes against the R4 schema.
    pub validate: bool,
    /// Check that literal references in writes resolve inside the sandbox.
    pub check_references: bool,
}

impl Default for SandboxOptions {
    fn default() -> Self {
        SandboxOptions {
            seed: 0,
            clock: Clock::System,
            validate: true,
            check_references: true,
        }
    }
}

#[derive(Debug, Clone)]
struct History {
    seq: u64,
    base_pos: Option<u32>,
    versions: Vec<Arc<Version>>,
}

/// One change relative to the cohort, for graders and trajectories.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    /// Resource type.
    pub ty: String,
    /// Logical id.
    pub id: String,
    /// The cohort's version (None if the resource was created in the sandbox).
    pub before: Option<Arc<Value>>,
    /// The current version (None if deleted).
    pub after: Option<Arc<Value>>,
}

/// One write, in order.
#[derive(Debug, Clone, PartialEq)]
pub struct WriteRecord {
    /// Sequence number, from 1.
    pub seq: u64,
    /// The version written.
    pub version: Arc<Version>,
}

/// A copy-on-write view of a cohort: reads fall through to the cohort, writes land in
/// the sandbox's own overlay. Forking costs one `Arc` clone, whatever the cohort's size.
#[derive(Debug, Clone)]
pub struct Sandbox {
    cohort: Arc<Cohort>,
    overlay: BTreeMap<String, BTreeMap<Arc<str>, History>>,
    opts: SandboxOptions,
    next_id: u64,
    log: Vec<WriteRecord>,
}

/// What a search returned.
#[derive(Debug, Clone)]
pub struct SearchResult {
    /// Matches on this page.
    pub matches: Vec<Arc<Version>>,
    /// Resources added by `_include`/`_revinclude`.
    pub included: Vec<Arc<Version>>,
    /// Total number of matches (all pages).
    pub total: usize,
}

/// Outcome of a create.
#[derive(Debug, Clone)]
pub enum CreateOutcome {
    /// A new resource.
    Created(Arc<Version>),
    /// `If-None-Exist` matched this one; nothing was written.
    Existing(Arc<Version>),
}

fn splitmix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl Sandbox {
    /// Fork a sandbox from a cohort: O(1), nothing is copied.
    pub fn fork(cohort: &Arc<Cohort>, opts: SandboxOptions) -> Sandbox {
        Sandbox {
            cohort: cohort.clone(),
            overlay: BTreeMap::new(),
            opts,
            next_id: 0,
            log: Vec::new(),
        }
    }

    /// Fork this sandbox (its writes included) into an independent copy; costs O(writes).
    pub fn snapshot(&self) -> Sandbox {
        self.clone()
    }

    /// The cohort this sandbox was forked from.
    pub fn cohort(&self) -> &Arc<Cohort> {
        &self.cohort
    }

    /// The sandbox's options.
    pub fn options(&self) -> &SandboxOptions {
        &self.opts
    }

    /// Turn reference-integrity checks on or off (transactions defer them to the end).
    pub fn set_check_references(&mut self, on: bool) {
        self.opts.check_references = on;
    }

    /// The sandbox's clock.
    pub fn clock(&self) -> &Clock {
        &self.opts.clock
    }

    /// Writes in order.
    pub fn writes(&self) -> &[WriteRecord] {
        &self.log
    }

    /// Changes relative to the cohort, ordered by type then id.
    pub fn diff(&self) -> Vec<Change> {
        let mut out = Vec::new();
        for (ty, entries) in &self.overlay {
            for (id, h) in entries {
                let before = h.base_pos.and_then(|_| self.cohort.get(ty, id)).and_then(|v| v.resource());
                let after = h.versions.last().and_then(|v| v.resource());
                if before.is_none() && after.is_none() {
                    continue;
                }
                out.push(Change {
                    ty: ty.clone(),
                    id: id.to_string(),
                    before,
                    after,
                });
            }
        }
        out
    }

    fn current(&self, ty: &str, id: &str) -> Option<Arc<Version>> {
        if let Some(h) = self.overlay.get(ty).and_then(|m| m.get(id)) {
            return h.versions.last().cloned();
        }
        self.cohort.get(ty, id).cloned()
    }

    fn check_type(&self, ty: &str) -> FhirResult<()> {
        if SchemaValidator::r4().is_resource_type(ty) {
            Ok(())
        } else {
            Err(FhirError::NotFound(format!("'{ty}' is not a FHIR R4 resource type")))
        }
    }

    /// Read the current version.
    pub fn read(&self, ty: &str, id: &str) -> FhirResult<Arc<Version>> {
        self.check_type(ty)?;
        check_id(id)?;
        match self.current(ty, id) {
            Some(v) if !v.is_deleted() => Ok(v),
            Some(v) => Err(FhirError::Gone(format!("{ty}/{id} was deleted (version {})", v.version_id))),
            None => Err(FhirError::NotFound(format!("{ty}/{id} is not known"))),
        }
    }

    /// Every version, oldest first.
    pub fn history(&self, ty: &str, id: &str) -> FhirResult<Vec<Arc<Version>>> {
        self.check_type(ty)?;
        check_id(id)?;
        if let Some(h) = self.overlay.get(ty).and_then(|m| m.get(id)) {
            return Ok(h.versions.clone());
        }
        self.cohort
            .get(ty, id)
            .map(|v| vec![v.clone()])
            .ok_or_else(|| FhirError::NotFound(format!("{ty}/{id} is not known")))
    }

    /// Read one version.
    pub fn vread(&self, ty: &str, id: &str, vid: &str) -> FhirResult<Arc<Version>> {
        let n: u64 = vid
            .parse()
            .map_err(|_| FhirError::BadRequest(format!("'{vid}' is not a version id (a positive integer)")))?;
        let hist = self.history(ty, id)?;
        let v = hist
            .into_iter()
            .find(|v| v.version_id == n)
            .ok_or_else(|| FhirError::NotFound(format!("{ty}/{id} has no version {n}")))?;
        if v.is_deleted() {
            return Err(FhirError::Gone(format!("version {n} of {ty}/{id} is a deletion")));
        }
        Ok(v)
    }

    /// Allocate the next deterministic id for `ty`.
    pub fn next_id(&mut self, ty: &str) -> String {
        loop {
            self.next_id += 1;
            let h = splitmix(self.opts.seed ^ splitmix(self.next_id));
            let id = format!("{:016x}", h);
            if self.current(ty, &id).is_none() {
                return id;
            }
        }
    }

    fn prepare(&self, ty: &str, body: &Value) -> FhirResult<()> {
        self.check_type(ty)?;
        let Some(obj) = body.as_object() else {
            return Err(FhirError::BadRequest("the body must be a JSON object (a FHIR resource)".into()));
        };
        match obj.get("resourceType").and_then(Value::as_str) {
            Some(t) if t == ty => {}
            Some(t) => {
                return Err(FhirError::BadRequest(format!(
                    "resourceType '{t}' in the body does not match '{ty}' in the URL"
                )));
            }
            None => return Err(FhirError::BadRequest("the body has no resourceType".into())),
        }
        if self.opts.validate {
            SchemaValidator::r4().validate(ty, body)?;
        }
        if self.opts.check_references {
            self.check_references(body)?;
        }
        Ok(())
    }

    /// Every literal relative reference must name an existing, undeleted resource.
    pub fn check_references(&self, body: &Value) -> FhirResult<()> {
        let mut refs = Vec::new();
        collect_references(body, &mut refs);
        let mut problems = Vec::new();
        for r in refs {
            if r.starts_with('#') || r.starts_with("http://") || r.starts_with("https://") {
                continue;
            }
            if r.starts_with("urn:") {
                problems.push(format!("reference '{r}' cannot be resolved outside a transaction Bundle"));
                continue;
            }
            match split_reference(&r) {
                Some((t, id)) if r.matches('/').count() == 1 || r.contains("/_history/") => {
                    if !SchemaValidator::r4().is_resource_type(&t) {
                        problems.push(format!("reference '{r}': '{t}' is not a resource type"));
                    } else if self.current(&t, &id).is_none_or(|v| v.is_deleted()) {
                        problems.push(format!("reference '{r}' does not resolve: no {t}/{id} in this sandbox"));
                    }
                }
                _ => problems.push(format!("reference '{r}' is not a literal reference of the form Type/id")),
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(FhirError::Unprocessable(problems))
        }
    }

    fn put(&mut self, ty: &str, id: &str, method: Method, resource: Option<Value>) -> Arc<Version> {
        let stamp = fhir_instant(self.opts.clock.now());
        let prev = self.current(ty, id);
        let version_id = prev.as_ref().map(|v| v.version_id + 1).unwrap_or(1);
        let body = match resource {
            Some(r) => {
                let mut r = canonical_order(r, id);
                stamp_meta(&mut r, version_id, &stamp);
                Body::Parsed(Arc::new(r))
            }
            None => Body::Deleted,
        };
        let seq = self.log.len() as u64 + 1;
        let base_pos = self.cohort.tables.get(ty).and_then(|t| t.by_id.get(id).copied());
        let v = Arc::new(Version {
            ty: Arc::from(ty),
            id: Arc::from(id),
            version_id,
            last_updated: Arc::from(stamp),
            method,
            body,
        });
        let entry = self
            .overlay
            .entry(ty.to_string())
            .or_default()
            .entry(Arc::from(id))
            .or_insert_with(|| History {
                seq,
                base_pos,
                versions: prev.into_iter().collect(),
            });
        entry.versions.push(v.clone());
        self.log.push(WriteRecord { seq, version: v.clone() });
        v
    }

    /// Create with a server-assigned id. With `if_none_exist` (a query string), an existing
    /// single match is returned instead; several matches are a 412.
    pub fn create(&mut self, ty: &str, body: Value, if_none_exist: Option<&str>) -> FhirResult<CreateOutcome> {
        self.prepare(ty, &body)?;
        if let Some(q) = if_none_exist {
            let params = parse_query_string(q);
            if params.is_empty() {
                return Err(FhirError::BadRequest(format!("If-None-Exist '{q}' has no search parameters")));
            }
            let query = SearchQuery::parse(ty, &params, &self.cohort.registry, true)?;
            let found = self.search_all(&query)?;
            match found.len() {
                0 => {}
                1 => return Ok(CreateOutcome::Existing(found[0].clone())),
                n => {
                    return Err(FhirError::PreconditionFailed(format!(
                        "If-None-Exist '{q}' matched {n} {ty} resources; it must match at most one"
                    )));
                }
            }
        }
        let id = self.next_id(ty);
        Ok(CreateOutcome::Created(self.put(ty, &id, Method::Create, Some(body))))
    }

    /// Create with a given id (used by transactions that pre-assign ids).
    pub fn create_with_id(&mut self, ty: &str, id: &str, body: Value) -> FhirResult<Arc<Version>> {
        check_id(id)?;
        self.prepare(ty, &body)?;
        if self.current(ty, id).is_some_and(|v| !v.is_deleted()) {
            return Err(FhirError::Conflict(format!("{ty}/{id} already exists")));
        }
        Ok(self.put(ty, id, Method::Create, Some(body)))
    }

    /// Update (or create with a client id). `if_match` is the expected current version.
    /// Returns the version and whether it was newly created.
    pub fn update(&mut self, ty: &str, id: &str, body: Value, if_match: Option<u64>) -> FhirResult<(Arc<Version>, bool)> {
        self.check_type(ty)?;
        check_id(id)?;
        match body.get("id").and_then(Value::as_str) {
            Some(bid) if bid == id => {}
            Some(bid) => {
                return Err(FhirError::BadRequest(format!(
                    "id '{bid}' in the body does not match '{id}' in the URL"
                )));
            }
            None => {
                return Err(FhirError::BadRequest(format!(
                    "the body has no id; an update of {ty}/{id} must carry \"id\": \"{id}\""
                )));
            }
        }
        self.prepare(ty, &body)?;
        let cur = self.current(ty, id);
        if let Some(want) = if_match {
            match &cur {
                Some(v) if !v.is_deleted() && v.version_id == want => {}
                Some(v) if !v.is_deleted() => {
                    return Err(FhirError::PreconditionFailed(format!(
                        "If-Match version {want} does not match the current version {} of {ty}/{id}",
                        v.version_id
                    )));
                }
                _ => {
                    return Err(FhirError::PreconditionFailed(format!(
                        "If-Match version {want} given but {ty}/{id} does not exist"
                    )));
                }
            }
        }
        let created = cur.as_ref().is_none_or(|v| v.is_deleted());
        let method = if created { Method::Create } else { Method::Update };
        Ok((self.put(ty, id, method, Some(body)), created))
    }

    /// Delete. Deleting a resource that others reference is a 409; deleting a missing or
    /// already deleted resource is a no-op (returns `None`).
    pub fn delete(&mut self, ty: &str, id: &str) -> FhirResult<Option<Arc<Version>>> {
        self.check_type(ty)?;
        check_id(id)?;
        match self.current(ty, id) {
            Some(v) if !v.is_deleted() => {}
            _ => return Ok(None),
        }
        let referrers = self.referrers_of(ty, id);
        if !referrers.is_empty() {
            let shown: Vec<String> = referrers.iter().take(5).cloned().collect();
            return Err(FhirError::Conflict(format!(
                "{ty}/{id} is referenced by {} resource(s) ({}{}); delete or update them first",
                referrers.len(),
                shown.join(", "),
                if referrers.len() > 5 { ", ..." } else { "" }
            )));
        }
        Ok(Some(self.put(ty, id, Method::Delete, None)))
    }

    fn referrers_of(&self, ty: &str, id: &str) -> BTreeSet<String> {
        let key = format!("{ty}/{id}");
        let mut out = BTreeSet::new();
        if let Some(list) = self.cohort.referrers().get(&key) {
            for (rt, rid) in list {
                if self.overlay.get(&**rt).is_some_and(|m| m.contains_key(rid)) {
                    continue; // judged on its current version below
                }
                out.insert(format!("{rt}/{rid}"));
            }
        }
        for (rt, entries) in &self.overlay {
            for (rid, h) in entries {
                if let Some(r) = h.versions.last().and_then(|v| v.resource()) {
                    let mut refs = Vec::new();
                    collect_references(&r, &mut refs);
                    if refs.iter().any(|x| normalize_reference(x) == key) && !(rt == ty && &**rid == id) {
                        out.insert(format!("{rt}/{rid}"));
                    }
                }
            }
        }
        out
    }

    // ------------------------------------------------------------ search

    fn resolve_chains(&self, query: &mut SearchQuery) -> FhirResult<()> {
        for clause in query.clauses.iter_mut() {
            let Some(chain) = clause.chain.clone() else { continue };
            let mut keys = Vec::new();
            let mut any_target = false;
            for t in &chain.targets {
                let code = chain.param.split([':', '.']).next().unwrap_or_default();
                if self.cohort.registry.get(t, code).is_none() {
                    continue;
                }
                any_target = true;
                let inner = SearchQuery::parse(t, &[(chain.param.clone(), chain.value.clone())], &self.cohort.registry, true)?;
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
            for pos in cands {
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
            for h in m.values() {
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
        let included = self.includes(&page, &query.include, &query.revinclude)?;
        Ok(SearchResult {
            matches: page,
            included,
            total,
        })
    }

    fn includes(&self, page: &[Arc<Version>], include: &[Include], revinclude: &[Include]) -> FhirResult<Vec<Arc<Version>>> {
        let mut seen: HashSet<(Arc<str>, Arc<str>)> = page.iter().map(|v| (v.ty.clone(), v.id.clone())).collect();
        let mut out: Vec<Arc<Version>> = Vec::new();
        let mut frontier: Vec<Arc<Version>> = page.to_vec();
        for round in 0..5 {
            let mut next = Vec::new();
            for inc in include.iter().filter(|i| round == 0 || i.iterate) {
                for v in &frontier {
                    let Some(r) = v.resource() else { continue };
                    if inc.source != "*" && inc.source != *v.ty {
                        continue;
                    }
                    let params: Vec<Arc<super::params::ParamDef>> = match &inc.param {
                        Some(p) => self.cohort.registry.get(&v.ty, p).cloned().into_iter().collect(),
                        None => self.cohort.registry.reference_params(&v.ty).into_iter().cloned().collect(),
                    };
                    for p in params {
                        let items = search::extract(&p, &v.ty, &r);
                        for target in super::values::references(&items) {
                            let Some((t, id)) = split_reference(&target) else { continue };
                            if inc.target.as_ref().is_some_and(|want| *want != t) {
                                continue;
                            }
                            if let Some(tv) = self.current(&t, &id).filter(|x| !x.is_deleted())
                                && seen.insert((tv.ty.clone(), tv.id.clone()))
                            {
                                next.push(tv.clone());
                            }
                        }
                    }
                }
            }
            for inc in revinclude.iter().filter(|i| round == 0 || i.iterate) {
                let Some(pcode) = &inc.param else { continue };
                for v in &frontier {
                    let key = format!("{}/{}", v.ty, v.id);
                    let q = SearchQuery::parse(&inc.source, &[(pcode.clone(), key)], &self.cohort.registry, true)?;
                    for found in self.search_all(&q)? {
                        if seen.insert((found.ty.clone(), found.id.clone())) {
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
        Ok(out)
    }

    /// Resolve a conditional reference `Type?params` to `Type/id` (exactly one match).
    pub fn resolve_conditional(&self, reference: &str) -> FhirResult<String> {
        let (ty, q) = reference
            .split_once('?')
            .ok_or_else(|| FhirError::BadRequest(format!("'{reference}' is not a conditional reference")))?;
        let params = parse_query_string(q);
        let query = SearchQuery::parse(ty, &params, &self.cohort.registry, true)?;
        let found = self.search_all(&query)?;
        match found.as_slice() {
            [one] => Ok(format!("{}/{}", one.ty, one.id)),
            [] => Err(FhirError::PreconditionFailed(format!(
                "conditional reference '{reference}' matched no resource"
            ))),
            many => Err(FhirError::PreconditionFailed(format!(
                "conditional reference '{reference}' matched {} resources; it must match one",
                many.len()
            ))),
        }
    }

    /// Number of live resources of a type (cohort plus overlay).
    pub fn count(&self, ty: &str) -> usize {
        let base = self.cohort.tables.get(ty).map(|t| t.rows.len()).unwrap_or(0);
        let Some(m) = self.overlay.get(ty) else { return base };
        let mut n = base as i64;
        for h in m.values() {
            let live_now = h.versions.last().is_some_and(|v| !v.is_deleted());
            let in_base = h.base_pos.is_some();
            n += i64::from(live_now) - i64::from(in_base);
        }
        n.max(0) as usize
    }
}

/// Intersect two sorted position lists. When one is much shorter, gallop through the
/// longer one (a patient's rows against a common code's rows).
fn intersect(a: &[u32], b: &[u32]) -> Vec<u32> {
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

/// Parse `a=1&b=2` (percent-decoded, `+` as space) into ordered pairs.
pub fn parse_query_string(q: &str) -> Vec<(String, String)> {
    url::form_urlencoded::parse(q.trim_start_matches('?').as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

/// A resource as JSON for output (clone of the stored value; `null` for a deletion).
pub fn resource_json(v: &Version) -> Value {
    v.resource().map(Arc::unwrap_or_clone).unwrap_or(Value::Null)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fhir::clock::parse_instant;
    use serde_json::json;

    fn cohort() -> Arc<Cohort> {
        let mut b = CohortBuilder::new("t");
        b.add(json!({"resourceType":"Patient","id":"p1","name":[{"family":"Ng"}]})).unwrap();
        b.add(json!({"resourceType":"Patient","id":"p2"})).unwrap();
        for i in 0..20 {
            b.add(json!({"resourceType":"Observation","id":format!("o{i}"),"status":"final",
                "code":{"coding":[{"system":"http://loinc.org","code": if i % 2 == 0 {"2823-3"} else {"2345-7"}}]},
                "subject":{"reference": if i < 15 {"Patient/p1"} else {"Patient/p2"}},
                "effectiveDateTime": format!("2023-01-{:02}T08:00:00Z", i + 1),
                "valueQuantity":{"value": 3.0 + (i as f64) / 10.0, "unit":"mmol/L"}}))
                .unwrap();
        }
        b.build(&Clock::fixed(parse_instant("2024-01-01T00:00:00Z").unwrap()))
    }

    fn opts() -> SandboxOptions {
        SandboxOptions {
            seed: 7,
            clock: Clock::ticking(parse_instant("2024-02-01T00:00:00Z").unwrap(), 1000),
            ..Default::default()
        }
    }

    fn qs(ty: &str, s: &str) -> SearchQuery {
        SearchQuery::parse(ty, &parse_query_string(s), &Registry::r4(), true).unwrap()
    }

    #[test]
    fn writes_do_not_leak_between_forks() {
        let c = cohort();
        let mut a = Sandbox::fork(&c, opts());
        let b = Sandbox::fork(&c, opts());
        let CreateOutcome::Created(v) = a.create("Patient", json!({"resourceType":"Patient"}), None).unwrap() else {
            panic!()
        };
        assert!(a.read("Patient", &v.id).is_ok());
        assert_eq!(b.read("Patient", &v.id).unwrap_err().status(), 404);
        assert_eq!(a.count("Patient"), 3);
        assert_eq!(b.count("Patient"), 2);
        assert_eq!(c.len(), 22);
    }

    #[test]
    fn ids_are_deterministic_per_seed() {
        let c = cohort();
        let ids = |seed| {
            let mut s = Sandbox::fork(&c, SandboxOptions { seed, ..opts() });
            (0..3).map(|_| s.next_id("Patient")).collect::<Vec<_>>()
        };
        assert_eq!(ids(1), ids(1));
        assert_ne!(ids(1), ids(2));
    }

    #[test]
    fn update_versions_and_if_match() {
        let c = cohort();
        let mut s = Sandbox::fork(&c, opts());
        let (v2, created) = s
            .update(
                "Patient",
                "p1",
                json!({"resourceType":"Patient","id":"p1","gender":"male"}),
                Some(1),
            )
            .unwrap();
        assert!(!created);
        assert_eq!(v2.version_id, 2);
        assert_eq!(v2.resource().unwrap()["meta"]["versionId"], "2");
        assert_eq!(v2.resource().unwrap()["meta"]["lastUpdated"], "2024-02-01T00:00:00.000Z");
        let e = s
            .update("Patient", "p1", json!({"resourceType":"Patient","id":"p1"}), Some(1))
            .unwrap_err();
        assert_eq!(e.status(), 412);
        assert_eq!(s.history("Patient", "p1").unwrap().len(), 2);
        assert_eq!(s.vread("Patient", "p1", "1").unwrap().version_id, 1);
        let d = s.diff();
        assert_eq!(d.len(), 1);
        assert!(d[0].before.as_ref().unwrap().get("gender").is_none());
    }

    #[test]
    fn delete_guards_references_and_marks_gone() {
        let c = cohort();
        let mut s = Sandbox::fork(&c, opts());
        assert_eq!(s.delete("Patient", "p1").unwrap_err().status(), 409);
        for i in 0..15 {
            s.delete("Observation", &format!("o{i}")).unwrap();
        }
        assert!(s.delete("Patient", "p1").unwrap().is_some());
        assert_eq!(s.read("Patient", "p1").unwrap_err().status(), 410);
        assert_eq!(s.vread("Patient", "p1", "2").unwrap_err().status(), 410);
        assert!(s.delete("Patient", "p1").unwrap().is_none());
        // a fresh fork still has it
        assert!(Sandbox::fork(&c, opts()).read("Patient", "p1").is_ok());
    }

    #[test]
    fn search_uses_index_and_sees_overlay() {
        let c = cohort();
        let mut s = Sandbox::fork(&c, opts());
        let q = qs("Observation", "patient=p1&code=2823-3&_sort=-date");
        let r = s.search_all(&q).unwrap();
        assert_eq!(r.len(), 8);
        assert_eq!(&*r[0].id, "o14");
        // update one so it no longer matches; create one that does
        s.update(
            "Observation",
            "o14",
            json!({"resourceType":"Observation","id":"o14","status":"final","code":{"text":"x"},"subject":{"reference":"Patient/p1"}}),
            None,
        )
        .unwrap();
        s.create("Observation", json!({"resourceType":"Observation","status":"final","code":{"coding":[{"system":"http://loinc.org","code":"2823-3"}]},"subject":{"reference":"Patient/p1"},"effectiveDateTime":"2023-06-01"}), None).unwrap();
        let r = s.search_all(&q).unwrap();
        assert_eq!(r.len(), 8);
        assert_eq!(r[0].resource().unwrap()["effectiveDateTime"], "2023-06-01");
        assert!(!r.iter().any(|v| &*v.id == "o14"));
    }

    #[test]
    fn if_none_exist_and_bad_references() {
        let c = cohort();
        let mut s = Sandbox::fork(&c, opts());
        let out = s.create("Patient", json!({"resourceType":"Patient"}), Some("_id=p1")).unwrap();
        assert!(matches!(out, CreateOutcome::Existing(v) if &*v.id == "p1"));
        let e = s
            .create("Patient", json!({"resourceType":"Patient"}), Some("_id=p1,p2"))
            .unwrap_err();
        assert_eq!(e.status(), 412);
        let e = s
            .create(
                "Observation",
                json!({"resourceType":"Observation","status":"final","code":{"text":"x"},"subject":{"reference":"Patient/nope"}}),
                None,
            )
            .unwrap_err();
        assert_eq!(e.status(), 422);
        assert!(e.to_string().contains("Patient/nope"), "{e}");
        assert!(s.writes().is_empty(), "failed writes leave nothing behind");
    }

    #[test]
    fn warm_compact_rows_search_like_parsed_rows() {
        let text = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/fhir-fixtures/cohorts/demo/Observation.ndjson"
        ))
        .unwrap();
        let mut raw = CohortBuilder::new("raw");
        let mut parsed = CohortBuilder::new("parsed");
        for line in text.lines() {
            raw.add_json(line).unwrap();
            parsed.add(serde_json::from_str(line).unwrap()).unwrap();
        }
        let clock = Clock::fixed(parse_instant("2023-11-13T10:15:00Z").unwrap());
        let raw = raw.build(&clock);
        raw.warm();
        assert!(raw.is_warm());
        let parsed = parsed.build(&clock);
        let (a, b) = (Sandbox::fork(&raw, opts()), Sandbox::fork(&parsed, opts()));
        for q in [
            "patient=S3241217&code=K&_sort=-date",
            "code=http://loinc.org|2823-3&_sort=date",
            "subject=Patient/S6307599&_sort=-date,_id",
            "_id=obs-3,obs-9",
            "code=GLU&date=ge2023-11-12T10:15:00Z",
            "combo-code=8480-6&_sort=-date",
        ] {
            let ids = |s: &Sandbox| {
                s.search_all(&qs("Observation", q))
                    .unwrap()
                    .iter()
                    .map(|v| v.id.to_string())
                    .collect::<Vec<_>>()
            };
            let (x, y) = (ids(&a), ids(&b));
            assert!(!x.is_empty(), "{q}");
            assert_eq!(x, y, "{q}");
        }
        // a compact row reads back complete, with meta
        let v = a.read("Observation", "obs-1").unwrap();
        let r = v.resource().unwrap();
        assert_eq!(r["meta"]["versionId"], "1");
        assert_eq!(r["meta"]["lastUpdated"], "2023-11-13T10:15:00.000Z");
        assert_eq!(*r, {
            let mut p = (*b.read("Observation", "obs-1").unwrap().resource().unwrap()).clone();
            p["meta"] = r["meta"].clone();
            p
        });
    }

    #[test]
    fn intersect_linear_and_galloping_agree() {
        let mut seed = 7u64;
        for _ in 0..200 {
            seed = splitmix(seed);
            let n_small = (seed % 50) as usize;
            let n_large = n_small * ((seed >> 8) % 40) as usize + 1;
            let mut a: Vec<u32> = (0..n_small).map(|i| (splitmix(seed + i as u64) % 5000) as u32).collect();
            let mut b: Vec<u32> = (0..n_large).map(|i| (splitmix(seed ^ (i as u64 + 99)) % 5000) as u32).collect();
            a.sort_unstable();
            a.dedup();
            b.sort_unstable();
            b.dedup();
            let expect: Vec<u32> = a.iter().copied().filter(|x| b.binary_search(x).is_ok()).collect();
            assert_eq!(intersect(&a, &b), expect);
            assert_eq!(intersect(&b, &a), expect);
        }
    }

    #[test]
    fn chained_search() {
        let c = cohort();
        let s = Sandbox::fork(&c, opts());
        let r = s.search_all(&qs("Observation", "subject:Patient.name=ng")).unwrap();
        assert_eq!(r.len(), 15);
    }
}
