//! The cohort: an immutable snapshot of patient data shared by every sandbox. Versions and
//! their (compact or parsed) bodies, and the builder used by loaders. Its indexes live in
//! `index.rs`.

use crate::clock::{Clock, fhir_instant};
use crate::params::{ParamType, Registry};
use crate::search::SortValue;
use crate::validate::{SchemaValidator, check_id};
use rustc_hash::FxHashMap;
use serde_json::{Map, Value};
use std::collections::{BTreeMap, HashMap};
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
    pub(super) body: Body,
}

/// A version's content. Cohort rows loaded from NDJSON stay compact JSON text and are
/// parsed when used, never kept as trees: parsing 785k resources into trees costs seconds at
/// start-up and gigabytes for as long as they are kept, a page of 20 costs microseconds.
#[derive(Debug)]
pub(super) enum Body {
    Deleted,
    Parsed(Arc<Value>),
    Raw(RawText),
}

/// A resource's JSON text: a range of a shared buffer (a whole NDJSON file, read once).
#[derive(Debug, Clone)]
pub(super) struct RawText {
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
    pub(crate) fn with_resource<T>(&self, f: impl FnOnce(&Value) -> T) -> Option<T> {
        match &self.body {
            Body::Deleted => None,
            Body::Parsed(v) => Some(f(v)),
            Body::Raw(text) => Some(f(&self.parse_raw(text.as_str()))),
        }
    }

    /// Like `with_resource`, but a compact row is only partly parsed: `resourceType`, `id`
    /// and the top-level elements named in `fields` (a name also matches its polymorphic
    /// forms: `effective` matches `effectiveDateTime`). `None` for `fields` parses everything.
    pub(crate) fn with_fields<T>(&self, fields: Option<&[String]>, f: impl FnOnce(&Value) -> T) -> Option<T> {
        let (Body::Raw(text), Some(fields)) = (&self.body, fields) else {
            return self.with_resource(f);
        };
        use serde::de::DeserializeSeed;
        let mut de = serde_json::Deserializer::from_str(text.as_str());
        let Ok(partial) = Partial(fields).deserialize(&mut de) else {
            return self.with_resource(f);
        };
        Some(f(&Value::Object(partial)))
    }

    /// Is this version a deletion?
    pub(crate) fn is_deleted(&self) -> bool {
        matches!(self.body, Body::Deleted)
    }

    /// The weak ETag for this version.
    pub fn etag(&self) -> String {
        format!("W/\"{}\"", self.version_id)
    }
}

pub(super) type Index = FxHashMap<String, Vec<u32>>;
/// Reference target (`Type/id`) → the resources that refer to it.
pub(super) type Referrers = HashMap<String, Vec<(Arc<str>, Arc<str>)>>;

#[derive(Debug)]
pub(super) struct Table {
    pub(super) rows: Vec<Arc<Version>>,
    pub(super) by_id: FxHashMap<Arc<str>, u32>,
    pub(super) indexes: HashMap<String, OnceLock<Index>>,
    pub(super) sort_columns: Mutex<HashMap<(String, bool), SortColumn>>,
    /// True while `Cohort::warm` is building this table's indexes (queries wait for it
    /// rather than building the same index twice).
    warming: (Mutex<bool>, std::sync::Condvar),
}

impl Table {
    pub(super) fn wait_for_warm(&self) {
        let (lock, cv) = &self.warming;
        let mut busy = emrgym_core::sync::lock(lock);
        while *busy {
            busy = cv.wait(busy).unwrap_or_else(std::sync::PoisonError::into_inner);
        }
    }

    pub(super) fn set_warming(&self, on: bool) {
        let (lock, cv) = &self.warming;
        *emrgym_core::sync::lock(lock) = on;
        cv.notify_all();
    }
}

/// The sort value of every row for one (parameter, direction).
pub(super) type SortColumn = Arc<Vec<Option<SortValue>>>;

/// Parameters indexed and sort columns built by `Cohort::warm`.
pub(crate) const WARM_INDEXES: &[&str] = &["patient", "subject", "code"];
/// Sort keys prepared by `Cohort::warm`: (parameter, descending).
pub(crate) const WARM_SORTS: &[(&str, bool)] = &[("date", true), ("date", false)];

/// An immutable, loaded patient cohort. Shared by every sandbox forked from it.
#[derive(Debug)]
pub struct Cohort {
    name: String,
    pub(super) tables: BTreeMap<String, Table>,
    registry: Arc<Registry>,
    count: usize,
    pub(super) referrers: OnceLock<Referrers>,
    pub(super) warm: std::sync::atomic::AtomicBool,
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

/// Deserializes only some top-level elements of a resource (plus `resourceType` and `id`)
/// in one pass, skipping the rest without building it. A name also matches its polymorphic
/// forms (`effective` matches `effectiveDateTime`).
struct Partial<'f>(&'f [String]);

impl Partial<'_> {
    fn wanted(&self, k: &str) -> bool {
        k == "resourceType"
            || k == "id"
            || self
                .0
                .iter()
                .any(|n| k == n || (k.starts_with(n.as_str()) && k[n.len()..].starts_with(|c: char| c.is_ascii_uppercase())))
    }
}

impl<'de> serde::de::DeserializeSeed<'de> for Partial<'_> {
    type Value = Map<String, Value>;
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> serde::de::Visitor<'de> for Partial<'_> {
    type Value = Map<String, Value>;
    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON object")
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut m: A) -> Result<Self::Value, A::Error> {
        let mut out = Map::new();
        while let Some(k) = m.next_key::<std::borrow::Cow<'de, str>>()? {
            if self.wanted(&k) {
                let v: Value = m.next_value()?;
                out.insert(k.into_owned(), v);
            } else {
                m.next_value::<serde::de::IgnoredAny>()?;
            }
        }
        Ok(out)
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
pub(super) fn canonical_order(r: Value, id: &str) -> Value {
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
pub(super) fn stamp_meta(r: &mut Value, version: u64, stamp: &str) {
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

    pub(super) fn get(&self, ty: &str, id: &str) -> Option<&Arc<Version>> {
        let t = self.tables.get(ty)?;
        t.by_id.get(id).and_then(|&i| t.rows.get(i as usize))
    }
}
