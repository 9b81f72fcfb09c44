//! Transaction and batch Bundles POSTed to the base: transactions are all-or-nothing
//! (processed on a snapshot, committed at the end), with `urn:uuid` fullUrls and
//! conditional references rewritten; batches run each entry independently.

use super::deadline;
use super::error::{FhirError, FhirResult};
use super::load::rewrite_references;
use super::rest::{self, FhirRequest, FhirResponse, Return, Verb};
use super::search::SearchQuery;
use super::store::{Sandbox, collect_references, parse_query_string};
use serde_json::{Map, Value, json};
use std::collections::HashMap;

fn status_line(code: u16) -> String {
    let text = match code {
        200 => "OK",
        201 => "Created",
        204 => "No Content",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        409 => "Conflict",
        410 => "Gone",
        412 => "Precondition Failed",
        422 => "Unprocessable Entity",
        _ => "",
    };
    format!("{code} {text}").trim().to_string()
}

struct Entry {
    index: usize,
    verb: Verb,
    url: String,
    full_url: Option<String>,
    resource: Option<Value>,
    if_match: Option<String>,
    if_none_exist: Option<String>,
}

fn parse_entries(bundle: &Value) -> FhirResult<Vec<Entry>> {
    let mut out = Vec::new();
    for (index, e) in bundle.get("entry").and_then(Value::as_array).into_iter().flatten().enumerate() {
        let req = e
            .get("request")
            .ok_or_else(|| FhirError::BadRequest(format!("Bundle.entry[{index}] has no request")))?;
        let method = req.get("method").and_then(Value::as_str).unwrap_or_default();
        let verb = match method {
            "GET" => Verb::Get,
            "POST" => Verb::Post,
            "PUT" => Verb::Put,
            "DELETE" => Verb::Delete,
            other => {
                return Err(FhirError::NotSupported(format!(
                    "Bundle.entry[{index}].request.method '{other}' is not supported (GET, POST, PUT, DELETE)"
                )));
            }
        };
        let url = req
            .get("url")
            .and_then(Value::as_str)
            .ok_or_else(|| FhirError::BadRequest(format!("Bundle.entry[{index}].request has no url")))?
            .to_string();
        // a POST to the base inside a Bundle is a Bundle inside a Bundle: processing it would
        // recurse once per level of nesting, so it is refused at any depth
        if verb == Verb::Post && FhirRequest::new(verb, &url).path.is_empty() {
            return Err(FhirError::BadRequest(format!(
                "Bundle.entry[{index}].request.url '{url}' posts to the base: Bundles inside Bundles are not processed"
            )));
        }
        out.push(Entry {
            index,
            verb,
            url,
            full_url: e.get("fullUrl").and_then(Value::as_str).map(str::to_string),
            resource: e.get("resource").cloned(),
            if_match: req.get("ifMatch").and_then(Value::as_str).map(str::to_string),
            if_none_exist: req.get("ifNoneExist").and_then(Value::as_str).map(str::to_string),
        });
    }
    Ok(out)
}

fn to_request(e: &Entry) -> FhirRequest {
    let mut r = FhirRequest::new(e.verb, &e.url);
    r.body = e.resource.clone();
    r.if_match = e.if_match.clone();
    r.if_none_exist = e.if_none_exist.clone();
    r
}

fn response_entry(resp: &FhirResponse) -> Value {
    let mut response = Map::new();
    response.insert("status".into(), json!(status_line(resp.status)));
    if let Some(l) = &resp.location {
        response.insert("location".into(), json!(l));
    }
    if let Some(e) = &resp.etag {
        response.insert("etag".into(), json!(e));
    }
    if let Some(m) = &resp.last_modified {
        response.insert("lastModified".into(), json!(m));
    }
    let mut entry = Map::new();
    if resp.status >= 400 {
        if let Some(b) = &resp.body {
            response.insert("outcome".into(), b.clone());
        }
    } else if let Some(b) = &resp.body {
        entry.insert("resource".into(), b.clone());
    }
    entry.insert("response".into(), Value::Object(response));
    Value::Object(entry)
}

/// Process a Bundle POSTed to the base. Returns the response Bundle.
pub fn process(sb: &mut Sandbox, base: &str, bundle: Value) -> FhirResult<Value> {
    if bundle.get("resourceType").and_then(Value::as_str) != Some("Bundle") {
        return Err(FhirError::BadRequest(
            "POST to the base needs a Bundle of type transaction or batch".into(),
        ));
    }
    let kind = bundle.get("type").and_then(Value::as_str).unwrap_or_default().to_string();
    let entries = parse_entries(&bundle)?;
    match kind.as_str() {
        "batch" => {
            let mut out: Vec<Value> = Vec::with_capacity(entries.len());
            for e in &entries {
                deadline::check()?;
                out.push(response_entry(&rest::handle(sb, base, &to_request(e))));
            }
            Ok(json!({"resourceType": "Bundle", "type": "batch-response", "entry": out}))
        }
        "transaction" => transaction(sb, base, entries),
        other => Err(FhirError::BadRequest(format!(
            "Bundle.type '{other}' cannot be processed: POST a transaction or batch Bundle"
        ))),
    }
}

fn transaction(sb: &mut Sandbox, base: &str, mut entries: Vec<Entry>) -> FhirResult<Value> {
    let mut work = sb.snapshot();
    // entries may refer to each other in any order: check references once all have landed
    let check_refs = work.options().check_references;
    work.set_check_references(false);
    // 1. resolve fullUrls: POSTs get their ids now (or their If-None-Exist match), PUTs keep theirs
    let mut map: HashMap<String, String> = HashMap::new();
    let mut existing: HashMap<usize, String> = HashMap::new();
    for e in &entries {
        deadline::check()?;
        let Some(full) = &e.full_url else { continue };
        let ty = e.url.split(['/', '?']).next().unwrap_or_default().to_string();
        match e.verb {
            Verb::Post => {
                if let Some(cond) = &e.if_none_exist {
                    let q = SearchQuery::parse(&ty, &parse_query_string(cond), work.cohort().registry(), true)
                        .map_err(|err| FhirError::BadRequest(format!("Bundle.entry[{}].request.ifNoneExist: {err}", e.index)))?;
                    let found = work.search_all(&q)?;
                    if found.len() > 1 {
                        return Err(FhirError::PreconditionFailed(format!(
                            "Bundle.entry[{}]: ifNoneExist '{cond}' matched {} resources",
                            e.index,
                            found.len()
                        )));
                    }
                    if let Some(v) = found.first() {
                        map.insert(full.clone(), format!("{}/{}", v.ty, v.id));
                        existing.insert(e.index, v.id.to_string());
                        continue;
                    }
                }
                let id = work.next_id(&ty);
                map.insert(full.clone(), format!("{ty}/{id}"));
            }
            Verb::Put => {
                map.insert(full.clone(), e.url.split('?').next().unwrap_or_default().to_string());
            }
            _ => {}
        }
    }
    // 2. rewrite references: fullUrls, then conditional references
    for e in entries.iter_mut() {
        if let Some(r) = e.resource.as_mut() {
            rewrite_references(r, &map);
            let mut refs = Vec::new();
            collect_references(r, &mut refs);
            let mut cond = HashMap::new();
            for c in refs.into_iter().filter(|c| c.contains('?')) {
                let resolved = work.resolve_conditional(&c).map_err(|err| prefix_entry(e.index, err))?;
                cond.insert(c, resolved);
            }
            if !cond.is_empty() {
                rewrite_references(r, &cond);
            }
        }
    }
    // 3. process in the order the spec gives: DELETE, POST, PUT, GET
    let mut responses: Vec<Option<Value>> = vec![None; entries.len()];
    for phase in [Verb::Delete, Verb::Post, Verb::Put, Verb::Get] {
        for e in entries.iter().filter(|e| e.verb == phase) {
            deadline::check()?;
            let resp = if let Some(id) = existing.get(&e.index) {
                let ty = e.url.split(['/', '?']).next().unwrap_or_default();
                let v = work.read(ty, id)?;
                FhirResponse::version(200, base, &v, Return::Representation, None)
            } else if e.verb == Verb::Post && e.full_url.as_ref().is_some_and(|u| map.contains_key(u)) {
                let target = e.full_url.as_ref().and_then(|u| map.get(u)).cloned().unwrap_or_default();
                let (ty, id) = target.split_once('/').unwrap_or_default();
                let body = e
                    .resource
                    .clone()
                    .ok_or_else(|| FhirError::BadRequest(format!("Bundle.entry[{}] POST has no resource", e.index)))?;
                let v = work.create_with_id(ty, id, body).map_err(|err| prefix_entry(e.index, err))?;
                FhirResponse::version(201, base, &v, Return::Representation, None)
            } else {
                rest::handle(&mut work, base, &to_request(e))
            };
            if resp.status >= 400 {
                let msg = resp
                    .body
                    .as_ref()
                    .and_then(|b| b.pointer("/issue/0/diagnostics"))
                    .and_then(Value::as_str)
                    .unwrap_or("failed")
                    .to_string();
                let err = status_error(
                    resp.status,
                    format!(
                        "Bundle.entry[{}] ({:?} {}): {msg}; the transaction was rolled back",
                        e.index, e.verb, e.url
                    ),
                );
                return Err(err);
            }
            responses[e.index] = Some(response_entry(&resp));
        }
    }
    if check_refs {
        for e in &entries {
            let Some(resp) = &responses[e.index] else { continue };
            if matches!(e.verb, Verb::Post | Verb::Put)
                && let Some(r) = resp.get("resource")
            {
                work.check_references(r).map_err(|err| prefix_entry(e.index, err))?;
            }
        }
    }
    work.set_check_references(check_refs);
    *sb = work;
    let out: Vec<Value> = responses.into_iter().map(|r| r.unwrap_or(Value::Null)).collect();
    Ok(json!({"resourceType": "Bundle", "type": "transaction-response", "entry": out}))
}

fn prefix_entry(index: usize, e: FhirError) -> FhirError {
    let msg = format!("Bundle.entry[{index}]: {e}; the transaction was rolled back");
    status_error(e.status(), msg)
}

fn status_error(status: u16, msg: String) -> FhirError {
    match status {
        400 => FhirError::BadRequest(msg),
        404 => FhirError::NotFound(msg),
        405 => FhirError::MethodNotAllowed(msg),
        408 => FhirError::Timeout(msg),
        503 => FhirError::Busy(msg),
        409 => FhirError::Conflict(msg),
        410 => FhirError::Gone(msg),
        412 => FhirError::PreconditionFailed(msg),
        _ => FhirError::Unprocessable(vec![msg]),
    }
}
