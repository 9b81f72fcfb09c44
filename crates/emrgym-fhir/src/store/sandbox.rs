//! Sandboxes: copy-on-write views of a cohort with version history, deterministic ids,
//! validated writes, diffs, and search execution (indexes, sorting, paging, includes).

use super::cohort::{Body, Cohort, Method, Version, canonical_order, stamp_meta};
use super::{collect_references, parse_query_string};
use crate::clock::{Clock, fhir_instant};
use crate::error::{FhirError, FhirResult};
use crate::search::SearchQuery;
use crate::validate::{SchemaValidator, check_id};
use crate::values::{normalize_reference, split_reference};
use emrgym_core::{Write, splitmix64};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

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
pub(super) struct History {
    pub(super) seq: u64,
    pub(super) base_pos: Option<u32>,
    pub(super) versions: Vec<Arc<Version>>,
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
    pub(super) cohort: Arc<Cohort>,
    pub(super) overlay: BTreeMap<String, BTreeMap<Arc<str>, History>>,
    pub(super) opts: SandboxOptions,
    next_id: u64,
    log: Vec<WriteRecord>,
}

/// Most resources `_include` and `_revinclude` (`:iterate` rounds included) add to one
/// search answer. Beyond it the answer keeps the first `MAX_INCLUDED` and carries a warning
/// (`too-costly`), as HAPI FHIR stops at `maximumIncludesToLoadPerPage` (1000 by default)
/// and the Microsoft FHIR server cuts includes with a warning OperationOutcome in the Bundle;
/// a 400 would refuse common searches (`Patient?_revinclude=Observation:subject`) whose
/// page of matches is fine. docs/reliability.md.
pub const MAX_INCLUDED: usize = 1000;

/// What a search returned.
#[derive(Debug, Clone)]
pub struct SearchResult {
    /// Matches on this page.
    pub matches: Vec<Arc<Version>>,
    /// Resources added by `_include`/`_revinclude` (at most [`MAX_INCLUDED`]).
    pub included: Vec<Arc<Version>>,
    /// More resources would have been included than [`MAX_INCLUDED`]: the rest were left
    /// out (the Bundle says so in a warning).
    pub included_truncated: bool,
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
    pub(crate) fn set_check_references(&mut self, on: bool) {
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

    /// The writes relative to the cohort, ordered by type then id (versions shared).
    pub fn diff(&self) -> Vec<Write> {
        let mut out = Vec::new();
        for (ty, entries) in &self.overlay {
            for (id, h) in entries {
                let before = h.base_pos.and_then(|_| self.cohort.get(ty, id)).and_then(|v| v.resource());
                let after = h.versions.last().and_then(|v| v.resource());
                out.extend(Write::between(ty, id, before, after));
            }
        }
        out
    }

    pub(super) fn current(&self, ty: &str, id: &str) -> Option<Arc<Version>> {
        if let Some(h) = self.overlay.get(ty).and_then(|m| m.get(id)) {
            return h.versions.last().cloned();
        }
        self.cohort.get(ty, id).cloned()
    }

    pub(super) fn check_type(&self, ty: &str) -> FhirResult<()> {
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
    pub(crate) fn next_id(&mut self, ty: &str) -> String {
        loop {
            self.next_id += 1;
            let h = splitmix64(self.opts.seed ^ splitmix64(self.next_id));
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
            let query = SearchQuery::parse(ty, &params, self.cohort.registry(), true)?;
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
    pub(crate) fn create_with_id(&mut self, ty: &str, id: &str, body: Value) -> FhirResult<Arc<Version>> {
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

    /// Resolve a conditional reference `Type?params` to `Type/id` (exactly one match).
    pub(crate) fn resolve_conditional(&self, reference: &str) -> FhirResult<String> {
        let (ty, q) = reference
            .split_once('?')
            .ok_or_else(|| FhirError::BadRequest(format!("'{reference}' is not a conditional reference")))?;
        let params = parse_query_string(q);
        let query = SearchQuery::parse(ty, &params, self.cohort.registry(), true)?;
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
