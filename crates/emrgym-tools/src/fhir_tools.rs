//! The FHIR tools an agent uses on its sandbox: search, read, create and update, with
//! typed arguments, turned into [`FhirRequest`]s for the same handler the HTTP server
//! uses; plus [`SandboxBackend`], which runs them on an in-process sandbox.

use super::{Example, FhirBackend, MANIFEST_VERSION, Manifest, Observation};
use emrgym_fhir::Sandbox;
use emrgym_fhir::rest::{self, FhirRequest, FhirResponse, Verb};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde_json::{Value, json};
use std::sync::{Arc, RwLock};

/// Characters escaped in query values (everything but unreserved; `|`, `,` and `:` stay
/// readable because FHIR token and composite values use them).
const QUERY: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~')
    .remove(b'|')
    .remove(b',')
    .remove(b':');

/// Page size of `fhir_search` when the agent gives no `_count`.
pub const DEFAULT_COUNT: usize = 10;

/// Arguments that do not make a FHIR request ([`FhirTool::request`]); each names the bad value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// `resource` is not a JSON object.
    #[error("resource must be a JSON object")]
    NotAnObject,
    /// `resource.resourceType` is not the `resource_type` argument.
    #[error("resource.resourceType '{given}' does not match resource_type '{expected}'")]
    TypeMismatch {
        /// The body's `resourceType`.
        given: String,
        /// The `resource_type` argument.
        expected: String,
    },
}

/// The FHIR tools.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FhirTool {
    /// `fhir_search`.
    Search,
    /// `fhir_read`.
    Read,
    /// `fhir_create`.
    Create,
    /// `fhir_update`.
    Update,
}

const TYPE_DOC: &str = "FHIR R4 resource type, e.g. Patient, Observation, Condition, MedicationRequest, ServiceRequest, Procedure, Encounter, AllergyIntolerance, Immunization, DiagnosticReport.";

fn resource_type_schema() -> Value {
    json!({"type": "string", "pattern": "^[A-Z][A-Za-z]+$", "description": TYPE_DOC})
}

impl FhirTool {
    /// All FHIR tools in catalogue order.
    pub const ALL: [FhirTool; 4] = [FhirTool::Search, FhirTool::Read, FhirTool::Create, FhirTool::Update];

    /// Tool name.
    pub fn name(self) -> &'static str {
        match self {
            FhirTool::Search => "fhir_search",
            FhirTool::Read => "fhir_read",
            FhirTool::Create => "fhir_create",
            FhirTool::Update => "fhir_update",
        }
    }

    /// The manifest.
    pub fn manifest(self) -> Manifest {
        let (description, parameters, examples) = match self {
            FhirTool::Search => (
                "Search the patient record (FHIR R4 search). Give the resource type and search parameters; returns a searchset Bundle with the matching resources (newest first when sorted by -date). Useful parameters: Patient: identifier (MRN), name, family, given, birthdate; Observation: patient, code (system|code, e.g. http://loinc.org|2160-0), date (ge2023-01-01), category, _sort=-date, _count; Condition: patient, code, clinical-status; MedicationRequest: patient, status, intent, code. Repeat a parameter by giving a list. Returns at most 10 resources unless _count is given (page on with _offset). Unknown parameters are an error.",
                json!({
                    "type": "object",
                    "properties": {
                        "resource_type": resource_type_schema(),
                        "params": {
                            "type": "object",
                            "description": "Search parameters: name -> value (string or number), or a list of values to repeat the parameter (AND).",
                            "additionalProperties": {
                                "type": ["string", "number", "array"],
                                "items": {"type": ["string", "number"]}
                            }
                        }
                    },
                    "required": ["resource_type"],
                    "additionalProperties": false
                }),
                vec![
                    Example {
                        description: "Find a patient by medical record number".into(),
                        arguments: json!({"resource_type": "Patient", "params": {"identifier": "S6534835"}}),
                    },
                    Example {
                        description: "The latest magnesium result of a patient".into(),
                        arguments: json!({"resource_type": "Observation", "params": {"patient": "Patient/S6534835", "code": "MG", "_sort": "-date", "_count": 1}}),
                    },
                ],
            ),
            FhirTool::Read => (
                "Read one resource by type and id (FHIR read). Returns the resource, or an error if it does not exist.",
                json!({
                    "type": "object",
                    "properties": {
                        "resource_type": resource_type_schema(),
                        "id": {"type": "string", "pattern": "^[A-Za-z0-9.-]{1,64}$", "description": "The logical id."}
                    },
                    "required": ["resource_type", "id"],
                    "additionalProperties": false
                }),
                vec![Example {
                    description: "Read a patient".into(),
                    arguments: json!({"resource_type": "Patient", "id": "S6534835"}),
                }],
            ),
            FhirTool::Create => (
                "Create a resource in the patient record (FHIR create), e.g. a MedicationRequest (order), ServiceRequest (referral or lab order) or Observation (recorded vital sign). The resource is validated against FHIR R4; references (subject, encounter) must point to existing resources. Returns the stored resource with its new id.",
                json!({
                    "type": "object",
                    "properties": {
                        "resource_type": resource_type_schema(),
                        "resource": {"type": "object", "description": "The resource body as FHIR JSON (resourceType is filled in if omitted)."}
                    },
                    "required": ["resource_type", "resource"],
                    "additionalProperties": false
                }),
                vec![Example {
                    description: "Record a blood pressure".into(),
                    arguments: json!({"resource_type": "Observation", "resource": {
                        "resourceType": "Observation",
                        "status": "final",
                        "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "vital-signs", "display": "Vital Signs"}]}],
                        "code": {"text": "BP"},
                        "subject": {"reference": "Patient/S6534835"},
                        "effectiveDateTime": "2023-11-13T10:15:00+00:00",
                        "valueString": "118/77 mmHg"
                    }}),
                }],
            ),
            FhirTool::Update => (
                "Replace a resource (FHIR update): give the full new version, e.g. to change a MedicationRequest's status to stopped. Returns the stored resource with its new version.",
                json!({
                    "type": "object",
                    "properties": {
                        "resource_type": resource_type_schema(),
                        "id": {"type": "string", "pattern": "^[A-Za-z0-9.-]{1,64}$", "description": "The logical id."},
                        "resource": {"type": "object", "description": "The complete new resource (its id must match; filled in if omitted)."}
                    },
                    "required": ["resource_type", "id", "resource"],
                    "additionalProperties": false
                }),
                vec![Example {
                    description: "Update a patient's telecom".into(),
                    arguments: json!({"resource_type": "Patient", "id": "S6534835", "resource": {
                        "resourceType": "Patient", "id": "S6534835", "name": [{"family": "Example"}],
                        "telecom": [{"system": "phone", "value": "555-0100"}]
                    }}),
                }],
            ),
        };
        Manifest {
            manifest_version: MANIFEST_VERSION,
            name: self.name().into(),
            kind: "fhir".into(),
            description: description.into(),
            parameters,
            examples,
        }
    }

    /// Build the FHIR request for validated arguments.
    pub fn request(self, args: &Value) -> Result<FhirRequest, RequestError> {
        let ty = args.get("resource_type").and_then(Value::as_str).unwrap_or_default();
        let id = args.get("id").and_then(Value::as_str).unwrap_or_default();
        let body = |args: &Value| -> Result<Value, RequestError> {
            let mut r = args.get("resource").cloned().unwrap_or(Value::Null);
            let Some(obj) = r.as_object_mut() else {
                return Err(RequestError::NotAnObject);
            };
            match obj.get("resourceType").and_then(Value::as_str) {
                None => {
                    obj.insert("resourceType".into(), json!(ty));
                }
                Some(rt) if rt != ty => {
                    return Err(RequestError::TypeMismatch {
                        given: rt.to_string(),
                        expected: ty.to_string(),
                    });
                }
                Some(_) => {}
            }
            if self == FhirTool::Update && !obj.contains_key("id") {
                obj.insert("id".into(), json!(id));
            }
            Ok(r)
        };
        Ok(match self {
            FhirTool::Search => {
                let mut q = Vec::new();
                if let Some(params) = args.get("params").and_then(Value::as_object) {
                    for (k, v) in params {
                        let values: Vec<&Value> = match v {
                            Value::Array(items) => items.iter().collect(),
                            other => vec![other],
                        };
                        for item in values {
                            let text = match item {
                                Value::String(s) => s.clone(),
                                other => other.to_string(),
                            };
                            q.push(format!("{}={}", utf8_percent_encode(k, QUERY), utf8_percent_encode(&text, QUERY)));
                        }
                    }
                }
                // a page of at most DEFAULT_COUNT unless the agent asks for more: bundles stay small
                if !args
                    .get("params")
                    .and_then(Value::as_object)
                    .is_some_and(|p| p.contains_key("_count"))
                {
                    q.push(format!("_count={DEFAULT_COUNT}"));
                }
                let mut req = FhirRequest::new(Verb::Get, &format!("{ty}?{}", q.join("&")));
                // unknown or malformed parameters are errors the agent can act on, not silently ignored
                req.strict = true;
                req
            }
            FhirTool::Read => FhirRequest::new(Verb::Get, &format!("{ty}/{id}")),
            FhirTool::Create => FhirRequest::new(Verb::Post, ty).with_body(body(args)?),
            FhirTool::Update => FhirRequest::new(Verb::Put, &format!("{ty}/{id}")).with_body(body(args)?),
        })
    }

    /// Run with validated arguments.
    pub fn call(self, name: &str, args: &Value, fhir: &mut dyn FhirBackend) -> Observation {
        let req = match self.request(args) {
            Ok(r) => r,
            Err(m) => return Observation::fail(name, 400, format!("invalid arguments for {name}: {m}")),
        };
        observe(name, fhir.call(req))
    }
}

/// Turn a FHIR response into an observation.
pub fn observe(name: &str, resp: FhirResponse) -> Observation {
    if resp.status < 400 {
        let mut o = Observation::ok(name, resp.body.unwrap_or(Value::Null));
        o.status = resp.status;
        return o;
    }
    let diagnostics: Vec<String> = resp
        .body
        .as_ref()
        .and_then(|b| b.get("issue"))
        .and_then(Value::as_array)
        .map(|issues| {
            issues
                .iter()
                .filter_map(|i| i.get("diagnostics").and_then(Value::as_str).map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    let message = if diagnostics.is_empty() {
        format!("HTTP {}", resp.status)
    } else {
        diagnostics.join("; ")
    };
    let mut o = Observation::fail(name, resp.status, format!("{name} failed ({}): {message}", resp.status));
    if let (Some(obj), Some(body)) = (o.content.as_object_mut(), resp.body) {
        obj.insert("outcome".into(), body);
    }
    o
}

/// Runs FHIR tools on a shared, in-process sandbox.
#[derive(Debug, Clone)]
pub struct SandboxBackend {
    sandbox: Arc<RwLock<Sandbox>>,
    base: String,
}

impl SandboxBackend {
    /// A backend for `sandbox`, whose resources are addressed under `base` (e.g. `http://localhost:8080/fhir`).
    pub fn new(sandbox: Arc<RwLock<Sandbox>>, base: impl Into<String>) -> SandboxBackend {
        SandboxBackend {
            sandbox,
            base: base.into(),
        }
    }
}

impl FhirBackend for SandboxBackend {
    fn call(&mut self, req: FhirRequest) -> FhirResponse {
        let unavailable = || {
            FhirResponse::error(&emrgym_fhir::FhirError::Conflict(
                "sandbox is unavailable after an earlier failure".into(),
            ))
        };
        if req.is_write() {
            match self.sandbox.write() {
                Ok(mut g) => rest::handle(&mut g, &self.base, &req),
                Err(_) => unavailable(),
            }
        } else {
            match self.sandbox.read() {
                Ok(g) => rest::handle_read(&g, &self.base, &req),
                Err(_) => unavailable(),
            }
        }
    }
}

impl FhirBackend for (&mut Sandbox, &str) {
    fn call(&mut self, req: FhirRequest) -> FhirResponse {
        rest::handle(self.0, self.1, &req)
    }
}

/// A FHIR REST request an agent made directly (not through a tool), as the equivalent tool
/// call: `fhir_search` / `fhir_read` / `fhir_create` / `fhir_update` with their usual
/// arguments where the request maps onto one (so the planner and grader read it like a tool
/// call), `fhir_rest` otherwise; `arguments.rest` keeps the exact request (method, path,
/// query, body, headers that matter, base) so a replay can send it again unchanged.
pub fn rest_call(req: &FhirRequest, base: &str) -> (String, Value) {
    let method = match req.verb {
        Verb::Get => "GET",
        Verb::Post => "POST",
        Verb::Put => "PUT",
        Verb::Delete => "DELETE",
        Verb::Other => "OTHER",
    };
    let rest = json!({
        "method": method,
        "path": req.path,
        "query": req.query.iter().map(|(k, v)| json!([k, v])).collect::<Vec<_>>(),
        "body": req.body,
        "if_match": req.if_match,
        "if_none_exist": req.if_none_exist,
        "strict": req.strict,
        "base": base,
    });
    let p: Vec<&str> = req.path.iter().map(String::as_str).collect();
    let params = || {
        let mut m = serde_json::Map::new();
        for (k, v) in &req.query {
            match m.get_mut(k) {
                Some(Value::Array(a)) => a.push(json!(v)),
                Some(old) => *old = json!([old.clone(), v]),
                None => {
                    m.insert(k.clone(), json!(v));
                }
            }
        }
        Value::Object(m)
    };
    let (name, mut args) = match (req.verb, p.as_slice()) {
        (Verb::Get, [ty]) | (Verb::Post, [ty, "_search"]) if ty.chars().next().is_some_and(char::is_uppercase) => {
            ("fhir_search", json!({"resource_type": ty, "params": params()}))
        }
        (Verb::Get, [ty, id]) if !id.starts_with('_') && !id.starts_with('$') => ("fhir_read", json!({"resource_type": ty, "id": id})),
        (Verb::Post, [ty]) if ty.chars().next().is_some_and(char::is_uppercase) => {
            ("fhir_create", json!({"resource_type": ty, "resource": req.body}))
        }
        (Verb::Put, [ty, id]) => ("fhir_update", json!({"resource_type": ty, "id": id, "resource": req.body})),
        _ => ("fhir_rest", json!({})),
    };
    args["rest"] = rest;
    (name.to_string(), args)
}

/// The exact request recorded by [`rest_call`] and the base it was sent to.
pub fn rest_request(args: &Value) -> Option<(FhirRequest, String)> {
    let r = args.get("rest")?;
    let verb = match r.get("method")?.as_str()? {
        "GET" => Verb::Get,
        "POST" => Verb::Post,
        "PUT" => Verb::Put,
        "DELETE" => Verb::Delete,
        _ => Verb::Other,
    };
    let mut req = FhirRequest::new(verb, "");
    req.path = r
        .get("path")?
        .as_array()?
        .iter()
        .filter_map(|s| s.as_str().map(str::to_string))
        .collect();
    req.query = r
        .get("query")?
        .as_array()?
        .iter()
        .filter_map(|kv| Some((kv.get(0)?.as_str()?.to_string(), kv.get(1)?.as_str()?.to_string())))
        .collect();
    req.body = r.get("body").filter(|b| !b.is_null()).cloned();
    req.if_match = r.get("if_match").and_then(Value::as_str).map(str::to_string);
    req.if_none_exist = r.get("if_none_exist").and_then(Value::as_str).map(str::to_string);
    req.strict = r.get("strict").and_then(Value::as_bool).unwrap_or(false);
    Some((req, r.get("base").and_then(Value::as_str).unwrap_or("").to_string()))
}
