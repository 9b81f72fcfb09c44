//! The tool catalogue over HTTP, mounted beside the FHIR server: `GET /tools` lists the
//! manifests (`?format=openai` gives OpenAI function-calling tools), `GET /tools/{name}`
//! one manifest, `POST /tools/{name}` runs a tool with a JSON body (FHIR tools act on the
//! default sandbox), and `POST /sandboxes/{id}/tools/{name}` runs it against that sandbox.
//! Failures are OperationOutcomes with the observation's status.

use super::fhir_tools::SandboxBackend;
use super::{Observation, Registry};
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::Response;
use axum::routing::get;
use axum::{Extension, Router};
use emrgym_fhir::FhirError;
use emrgym_fhir::access::Role;
use emrgym_fhir::error::outcome;
use emrgym_fhir::server::{AppState, error_response, fhir_json, harden, host_base, json_response, routes as fhir_routes};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::Arc;

/// Takes tool calls addressed to forked sandboxes that belong to someone else (the episodes
/// of the episode API, which run them with the episode's catalogue and record them):
/// (sandbox id, tool name, raw JSON body, caller's role) → the observation, or None to run
/// it as usual.
pub type ToolHook = Arc<dyn Fn(&str, &str, &[u8], &Role) -> Option<Observation> + Send + Sync>;

#[derive(Clone)]
struct ToolState {
    app: Arc<AppState>,
    registry: Arc<Registry>,
    hook: Option<ToolHook>,
}

/// The whole application: tool routes plus the FHIR server.
pub fn app(state: Arc<AppState>, registry: Arc<Registry>) -> Router {
    app_with(state, registry, None)
}

/// The whole application, with a hook for tool calls to forked sandboxes, behind the
/// server's guard (one body limit and one error shape for every route).
pub fn app_with(state: Arc<AppState>, registry: Arc<Registry>, hook: Option<ToolHook>) -> Router {
    harden(routes_with(state.clone(), registry, hook), state)
}

/// The tool routes merged with the FHIR routes, without the guard (for callers that merge
/// more routes and then [`harden`] the whole).
pub fn routes_with(state: Arc<AppState>, registry: Arc<Registry>, hook: Option<ToolHook>) -> Router {
    Router::new()
        .route("/tools", get(list))
        .route("/tools/{name}", get(manifest).post(run_default))
        .route("/sandboxes/{id}/tools/{name}", axum::routing::post(run_in))
        .with_state(ToolState {
            app: state.clone(),
            registry,
            hook,
        })
        .merge(fhir_routes(state))
}

// auth and roles: the guard ([`harden`]) admits only the operator to these routes, and an
// episode's token to its own sandbox's tool route

async fn list(State(st): State<ToolState>, Query(q): Query<HashMap<String, String>>) -> Response {
    match q.get("format").map(String::as_str) {
        Some("openai") => json_response(200, &st.registry.openai_tools()),
        None | Some("manifest") => {
            let tools: Vec<Value> = st
                .registry
                .manifests()
                .map(|m| serde_json::to_value(m).unwrap_or(Value::Null))
                .collect();
            json_response(200, &json!({"count": tools.len(), "tools": tools}))
        }
        Some(other) => error_response(&FhirError::BadRequest(format!("unknown format '{other}' (manifest, openai)"))),
    }
}

async fn manifest(State(st): State<ToolState>, Path(name): Path<String>) -> Response {
    match st.registry.manifest(&name) {
        Some(m) => json_response(200, &serde_json::to_value(m).unwrap_or(Value::Null)),
        None => error_response(&FhirError::NotFound(format!("no tool named '{name}'; GET /tools lists them"))),
    }
}

async fn run_default(State(st): State<ToolState>, headers: HeaderMap, Path(name): Path<String>, body: Bytes) -> Response {
    let app = st.app.clone();
    // a tool call is a search, a write or a calculation: off the async workers
    app.offload(move || run(&st, &headers, &Role::Operator, "default", &name, &body))
        .await
}

async fn run_in(
    State(st): State<ToolState>,
    role: Option<Extension<Role>>,
    headers: HeaderMap,
    Path((id, name)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    let app = st.app.clone();
    // no role means no guard ran: the least privilege
    let role = role.map_or_else(|| Role::Agent(id.clone()), |Extension(r)| r);
    app.offload(move || run(&st, &headers, &role, &id, &name, &body)).await
}

fn run(st: &ToolState, headers: &HeaderMap, role: &Role, sandbox: &str, name: &str, body: &[u8]) -> Response {
    if sandbox != "default"
        && let Some(obs) = st.hook.as_ref().and_then(|h| h(sandbox, name, body, role))
    {
        return to_response(&obs);
    }
    let Some(sb) = st.app.sandbox(sandbox) else {
        return error_response(&FhirError::NotFound(format!("no sandbox '{sandbox}'")));
    };
    let base = format!(
        "{}{}",
        host_base(headers, st.app.config()),
        if sandbox == "default" {
            "/fhir".to_string()
        } else {
            format!("/sandboxes/{sandbox}/fhir")
        }
    );
    let mut backend = SandboxBackend::new(sb, base);
    let text = String::from_utf8_lossy(body);
    let obs = st.registry.call_text(name, &text, &mut backend);
    to_response(&obs)
}

/// An observation as an HTTP response: the content on success, an OperationOutcome with the
/// observation's status on failure.
pub fn to_response(obs: &Observation) -> Response {
    if obs.ok {
        return json_response(obs.status, &obs.content);
    }
    let code = match obs.status {
        400 => "invalid",
        404 => "not-found",
        409 => "conflict",
        422 => "business-rule",
        429 => "throttled",
        _ => "processing",
    };
    if let Some(inner) = obs.content.get("outcome") {
        return fhir_json(obs.status, inner);
    }
    let mut oo = outcome("error", code, &[obs.error().unwrap_or("tool call failed").to_string()]);
    if let Some(obj) = oo.as_object_mut() {
        obj.insert("id".into(), json!(format!("tool-{}", obs.tool)));
    }
    fhir_json(obs.status, &oo)
}
