//! The FHIR RESTful API as plain functions over a sandbox, independent of HTTP: request
//! routing by path segments, read/vread/search/create/update/delete/history, search
//! Bundles with paging links, and the response shape the server and Bundles reuse.

use super::bundle;
use super::capability;
use super::error::{FhirError, FhirResult, outcome};
use super::search::{SearchQuery, Summary, TotalMode};
use super::store::{CreateOutcome, MAX_INCLUDED, Sandbox, SearchResult, Version};
use super::validate::check_id;
use serde_json::{Map, Value, json};
use std::sync::Arc;

/// HTTP-ish verbs the API understands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verb {
    /// GET
    Get,
    /// POST
    Post,
    /// PUT
    Put,
    /// DELETE
    Delete,
    /// Anything else (PATCH, HEAD, ...): answered 405.
    Other,
}

/// `Prefer: return=` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Return {
    /// The resource (default).
    #[default]
    Representation,
    /// No body.
    Minimal,
    /// An OperationOutcome.
    OperationOutcome,
}

/// One request against a FHIR base.
#[derive(Debug, Clone)]
pub struct FhirRequest {
    /// Verb.
    pub verb: Verb,
    /// Path segments after the FHIR base (`["Patient", "1", "_history"]`).
    pub path: Vec<String>,
    /// Query parameters in order.
    pub query: Vec<(String, String)>,
    /// `If-Match` header.
    pub if_match: Option<String>,
    /// `If-None-Exist` header.
    pub if_none_exist: Option<String>,
    /// `Prefer: handling=strict`.
    pub strict: bool,
    /// `Prefer: return=...`.
    pub prefer_return: Return,
    /// Parsed JSON body, if any.
    pub body: Option<Value>,
}

impl FhirRequest {
    /// A request with no headers and no body.
    pub fn new(verb: Verb, path: &str) -> FhirRequest {
        let (p, q) = match path.split_once('?') {
            Some((p, q)) => (p, q),
            None => (path, ""),
        };
        FhirRequest {
            verb,
            path: p
                .split('/')
                .filter(|s| !s.is_empty())
                .map(|s| percent_encoding::percent_decode_str(s).decode_utf8_lossy().into_owned())
                .collect(),
            query: super::store::parse_query_string(q),
            if_match: None,
            if_none_exist: None,
            strict: false,
            prefer_return: Return::Representation,
            body: None,
        }
    }

    /// Attach a JSON body.
    pub fn with_body(mut self, body: Value) -> FhirRequest {
        self.body = Some(body);
        self
    }

    /// Does this request change state?
    pub fn is_write(&self) -> bool {
        match self.verb {
            Verb::Get | Verb::Other => false,
            Verb::Post => self.path.last().is_none_or(|s| s != "_search"),
            Verb::Put | Verb::Delete => true,
        }
    }
}

/// A response: status, body and the headers FHIR cares about.
#[derive(Debug, Clone, PartialEq)]
pub struct FhirResponse {
    /// HTTP status.
    pub status: u16,
    /// JSON body.
    pub body: Option<Value>,
    /// `Location`/`Content-Location`.
    pub location: Option<String>,
    /// `ETag`.
    pub etag: Option<String>,
    /// `meta.lastUpdated` of the returned version (for `Last-Modified`).
    pub last_modified: Option<String>,
}

impl FhirResponse {
    /// A response with only a status and body.
    pub fn json(status: u16, body: Value) -> FhirResponse {
        FhirResponse {
            status,
            body: Some(body),
            location: None,
            etag: None,
            last_modified: None,
        }
    }

    /// The error rendered as an OperationOutcome.
    pub fn error(e: &FhirError) -> FhirResponse {
        FhirResponse::json(e.status(), e.to_outcome())
    }

    /// A response carrying one version: body per `Prefer: return`, Location/ETag/Last-Modified.
    pub fn version(status: u16, base: &str, v: &Version, ret: Return, message: Option<String>) -> FhirResponse {
        let body = match ret {
            Return::Representation => v.resource().map(Arc::unwrap_or_clone),
            Return::Minimal => None,
            Return::OperationOutcome => Some(outcome(
                "information",
                "informational",
                &[message.unwrap_or_else(|| format!("{}/{} version {}", v.ty, v.id, v.version_id))],
            )),
        };
        FhirResponse {
            status,
            body,
            location: Some(format!("{base}/{}/{}/_history/{}", v.ty, v.id, v.version_id)),
            etag: Some(v.etag()),
            last_modified: Some(v.last_updated.to_string()),
        }
    }
}

fn method_not_allowed(verb: Verb, what: &str) -> FhirError {
    let v = format!("{verb:?}").to_uppercase();
    FhirError::MethodNotAllowed(format!("{v} is not allowed on {what}"))
}

/// Handle a read-only request (GET, or POST `_search`).
pub fn handle_read(sb: &Sandbox, base: &str, req: &FhirRequest) -> FhirResponse {
    match read_inner(sb, base, req) {
        Ok(r) => r,
        Err(e) => FhirResponse::error(&e),
    }
}

/// Handle any request; writes need the sandbox mutably.
pub fn handle(sb: &mut Sandbox, base: &str, req: &FhirRequest) -> FhirResponse {
    if !req.is_write() {
        return handle_read(sb, base, req);
    }
    match write_inner(sb, base, req) {
        Ok(r) => r,
        Err(e) => FhirResponse::error(&e),
    }
}

fn segs(req: &FhirRequest) -> Vec<&str> {
    req.path.iter().map(String::as_str).collect()
}

fn read_inner(sb: &Sandbox, base: &str, req: &FhirRequest) -> FhirResult<FhirResponse> {
    let p = segs(req);
    match (req.verb, p.as_slice()) {
        (Verb::Get, []) => Err(FhirError::NotSupported(
            "system-level search is not supported; search a resource type, e.g. GET [base]/Patient?name=smith".into(),
        )),
        (Verb::Get, ["metadata"]) => Ok(FhirResponse::json(
            200,
            capability::capability_statement(sb.cohort().registry(), base),
        )),
        (Verb::Get, [ty]) => search(sb, base, ty, &req.query, req.strict),
        (Verb::Post, [ty, "_search"]) => {
            // form body is merged into the query by the server; a JSON body is not allowed
            search(sb, base, ty, &req.query, req.strict)
        }
        (Verb::Get, [ty, "_history"]) => Err(FhirError::NotSupported(format!(
            "type-level history (GET {ty}/_history) is not supported; use {ty}/[id]/_history"
        ))),
        (Verb::Get, [ty, id]) => {
            let v = sb.read(ty, id)?;
            Ok(FhirResponse::version(200, base, &v, Return::Representation, None))
        }
        (Verb::Get, [ty, id, "_history"]) => history(sb, base, ty, id),
        (Verb::Get, [ty, id, "_history", vid]) => {
            let v = sb.vread(ty, id, vid)?;
            Ok(FhirResponse::version(200, base, &v, Return::Representation, None))
        }
        (Verb::Other, _) => Err(FhirError::MethodNotAllowed(format!(
            "this method is not supported on '{}' (supported: GET, POST, PUT, DELETE)",
            req.path.join("/")
        ))),
        (_, _) => Err(FhirError::NotFound(format!("no FHIR interaction at '{}'", req.path.join("/")))),
    }
}

fn parse_if_match(h: &str) -> FhirResult<u64> {
    let t = h.trim();
    let inner = t.strip_prefix("W/").unwrap_or(t).trim_matches('"');
    inner
        .parse()
        .map_err(|_| FhirError::BadRequest(format!("If-Match '{h}' is not a version ETag like W/\"3\"")))
}

fn require_body(req: &FhirRequest) -> FhirResult<&Value> {
    req.body
        .as_ref()
        .ok_or_else(|| FhirError::BadRequest("this interaction needs a JSON resource body".into()))
}

fn write_inner(sb: &mut Sandbox, base: &str, req: &FhirRequest) -> FhirResult<FhirResponse> {
    let p = segs(req);
    match (req.verb, p.as_slice()) {
        (Verb::Post, []) => {
            let body = require_body(req)?.clone();
            let out = bundle::process(sb, base, body)?;
            Ok(FhirResponse::json(200, out))
        }
        (Verb::Post, [ty]) => {
            let body = require_body(req)?.clone();
            match sb.create(ty, body, req.if_none_exist.as_deref())? {
                CreateOutcome::Created(v) => Ok(FhirResponse::version(
                    201,
                    base,
                    &v,
                    req.prefer_return,
                    Some(format!("created {}/{}", v.ty, v.id)),
                )),
                CreateOutcome::Existing(v) => Ok(FhirResponse::version(
                    200,
                    base,
                    &v,
                    req.prefer_return,
                    Some(format!("If-None-Exist matched {}/{}; nothing created", v.ty, v.id)),
                )),
            }
        }
        (Verb::Put, [ty, id]) => {
            let body = require_body(req)?.clone();
            let if_match = req.if_match.as_deref().map(parse_if_match).transpose()?;
            let (v, created) = sb.update(ty, id, body, if_match)?;
            Ok(FhirResponse::version(
                if created { 201 } else { 200 },
                base,
                &v,
                req.prefer_return,
                None,
            ))
        }
        (Verb::Put, [ty]) => Err(FhirError::NotSupported(format!(
            "conditional update (PUT {ty}?...) is not supported; PUT {ty}/[id]"
        ))),
        (Verb::Delete, [ty, id]) => {
            check_id(id)?;
            match sb.delete(ty, id)? {
                Some(v) => Ok(FhirResponse {
                    status: 200,
                    body: Some(outcome(
                        "information",
                        "informational",
                        &[format!("deleted {ty}/{id} (version {})", v.version_id)],
                    )),
                    location: None,
                    etag: Some(v.etag()),
                    last_modified: Some(v.last_updated.to_string()),
                }),
                None => Ok(FhirResponse::json(
                    200,
                    outcome(
                        "warning",
                        "not-found",
                        &[format!("{ty}/{id} did not exist or was already deleted; nothing to do")],
                    ),
                )),
            }
        }
        (Verb::Delete, [ty]) => Err(FhirError::NotSupported(format!(
            "conditional delete (DELETE {ty}?...) is not supported"
        ))),
        (Verb::Put | Verb::Delete, []) => Err(FhirError::MethodNotAllowed(
            "PUT and DELETE are not allowed on the FHIR base".into(),
        )),
        (Verb::Post, [_, _]) => Err(FhirError::MethodNotAllowed(format!(
            "POST is not allowed on '{}': use PUT to update, POST [base]/{} to create",
            req.path.join("/"),
            req.path[0]
        ))),
        (Verb::Put | Verb::Delete | Verb::Post, [_, _, ..]) => Err(method_not_allowed(req.verb, &format!("'{}'", req.path.join("/")))),
        _ => Err(FhirError::NotFound(format!("no FHIR interaction at '{}'", req.path.join("/")))),
    }
}

/// Run a search and render the searchset Bundle.
pub fn search(sb: &Sandbox, base: &str, ty: &str, params: &[(String, String)], strict: bool) -> FhirResult<FhirResponse> {
    if !super::validate::SchemaValidator::r4().is_resource_type(ty) {
        return Err(FhirError::NotFound(format!("'{ty}' is not a FHIR R4 resource type")));
    }
    let query = SearchQuery::parse(ty, params, sb.cohort().registry(), strict)?;
    let result = sb.search(&query)?;
    Ok(FhirResponse::json(200, search_bundle(base, &query, &result)))
}

fn link(base: &str, q: &SearchQuery, offset: usize) -> String {
    let mut ser = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in &q.used {
        ser.append_pair(k, v);
    }
    ser.append_pair("_count", &q.count.to_string());
    ser.append_pair("_offset", &offset.to_string());
    format!("{base}/{}?{}", q.ty, ser.finish())
}

/// Render a searchset Bundle with paging links, includes and warnings.
pub(crate) fn search_bundle(base: &str, q: &SearchQuery, r: &SearchResult) -> Value {
    let mut links = vec![json!({"relation": "self", "url": link(base, q, q.offset)})];
    if q.summary != Summary::Count {
        links.push(json!({"relation": "first", "url": link(base, q, 0)}));
        if q.count > 0 && q.offset.saturating_add(q.count) < r.total {
            links.push(json!({"relation": "next", "url": link(base, q, q.offset.saturating_add(q.count))}));
        }
        if q.offset > 0 {
            links.push(json!({"relation": "previous", "url": link(base, q, q.offset.saturating_sub(q.count.max(1)))}));
        }
        if let Some(pages_before_last) = r.total.saturating_sub(1).checked_div(q.count) {
            let last = pages_before_last * q.count;
            links.push(json!({"relation": "last", "url": link(base, q, last)}));
        }
    }
    let mut bundle = Map::new();
    bundle.insert("resourceType".into(), json!("Bundle"));
    bundle.insert("type".into(), json!("searchset"));
    if q.total != TotalMode::None || q.summary == Summary::Count {
        bundle.insert("total".into(), json!(r.total));
    }
    bundle.insert("link".into(), Value::Array(links));
    let mut entries = Vec::new();
    if q.summary != Summary::Count {
        for v in &r.matches {
            entries.push(entry(base, v, "match", q));
        }
        for v in &r.included {
            entries.push(entry(base, v, "include", q));
        }
    }
    if !q.warnings.is_empty() {
        entries.push(json!({"resource": outcome("warning", "not-supported", &q.warnings), "search": {"mode": "outcome"}}));
    }
    if r.included_truncated {
        let msg = format!(
            "_include/_revinclude would add more than {MAX_INCLUDED} resources to this page: the first {MAX_INCLUDED} are included, the rest left out (ask for a smaller _count or fewer includes)"
        );
        entries.push(json!({"resource": outcome("warning", "too-costly", &[msg]), "search": {"mode": "outcome"}}));
    }
    if !entries.is_empty() {
        bundle.insert("entry".into(), Value::Array(entries));
    }
    Value::Object(bundle)
}

fn entry(base: &str, v: &Arc<Version>, mode: &str, q: &SearchQuery) -> Value {
    let resource = v.with_resource(|r| shape(r, q)).unwrap_or(Value::Null);
    json!({"fullUrl": format!("{base}/{}/{}", v.ty, v.id), "resource": resource, "search": {"mode": mode}})
}

fn subsetted(obj: &mut Map<String, Value>) {
    let meta = obj.entry("meta").or_insert_with(|| json!({}));
    if let Some(m) = meta.as_object_mut() {
        let tags = m.entry("tag").or_insert_with(|| json!([]));
        if let Some(a) = tags.as_array_mut() {
            a.push(json!({"system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue", "code": "SUBSETTED"}));
        }
    }
}

/// Apply `_summary` and `_elements` to one resource.
pub fn shape(r: &Value, q: &SearchQuery) -> Value {
    let Some(obj) = r.as_object() else { return r.clone() };
    let mut out: Map<String, Value>;
    match (q.summary, &q.elements) {
        (_, Some(elements)) => {
            out = obj
                .iter()
                .filter(|(k, _)| matches!(k.as_str(), "resourceType" | "id" | "meta") || elements.iter().any(|e| e == *k))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            subsetted(&mut out);
        }
        (Summary::Data, None) => {
            out = obj
                .iter()
                .filter(|(k, _)| k.as_str() != "text")
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            subsetted(&mut out);
        }
        (Summary::Text, None) => {
            out = obj
                .iter()
                .filter(|(k, _)| matches!(k.as_str(), "resourceType" | "id" | "meta" | "text"))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            subsetted(&mut out);
        }
        _ => return r.clone(),
    }
    Value::Object(out)
}

fn history(sb: &Sandbox, base: &str, ty: &str, id: &str) -> FhirResult<FhirResponse> {
    let versions = sb.history(ty, id)?;
    let entries: Vec<Value> = versions
        .iter()
        .rev()
        .map(|v| {
            let (method, url, status) = if v.is_deleted() {
                ("DELETE", format!("{ty}/{id}"), "200 OK")
            } else if v.version_id == 1 {
                ("POST", ty.to_string(), "201 Created")
            } else {
                ("PUT", format!("{ty}/{id}"), "200 OK")
            };
            let mut e = Map::new();
            e.insert("fullUrl".into(), json!(format!("{base}/{ty}/{id}")));
            if let Some(r) = v.resource() {
                e.insert("resource".into(), Arc::unwrap_or_clone(r));
            }
            e.insert("request".into(), json!({"method": method, "url": url}));
            e.insert(
                "response".into(),
                json!({"status": status, "etag": v.etag(), "lastModified": &*v.last_updated}),
            );
            Value::Object(e)
        })
        .collect();
    Ok(FhirResponse::json(
        200,
        json!({"resourceType": "Bundle", "type": "history", "total": entries.len(), "entry": entries}),
    ))
}
