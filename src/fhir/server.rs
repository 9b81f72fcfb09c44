//! The HTTP server (axum): FHIR bases for the default sandbox (`/fhir`) and for forked
//! sandboxes (`/sandboxes/{id}/fhir`), sandbox lifecycle, bearer-token auth, body limits,
//! content negotiation, and FHIR headers. The same router serves in-process callers
//! through `tower::ServiceExt::oneshot`.

use super::clock::{Clock, parse_instant};
use super::error::FhirError;
use super::rest::{self, FhirRequest, FhirResponse, Return, Verb};
use super::store::{Cohort, Sandbox, SandboxOptions};
use axum::Router;
use axum::body::to_bytes;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

/// Default request body limit (bytes).
pub const DEFAULT_BODY_LIMIT: usize = 8 * 1024 * 1024;
/// Most sandboxes alive at once.
pub const MAX_SANDBOXES: usize = 100_000;

/// Server settings.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Required bearer token, if any.
    pub token: Option<String>,
    /// Maximum request body size in bytes.
    pub body_limit: usize,
    /// Public base URL (e.g. `http://127.0.0.1:8080`); derived from `Host` when absent.
    pub public_base: Option<String>,
    /// Clock for sandboxes that do not set their own.
    pub clock: Clock,
    /// Seed of the default sandbox; forked sandboxes default to their sequence number.
    pub seed: u64,
    /// Validate writes against the R4 schema.
    pub validate: bool,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            token: None,
            body_limit: DEFAULT_BODY_LIMIT,
            public_base: None,
            clock: Clock::System,
            seed: 0,
            validate: true,
        }
    }
}

/// Wraps every FHIR request to a forked sandbox: (sandbox id, base URL, request, run) → the
/// response, where `run` executes the request. The episode API runs it under the episode's
/// lock and records it as a step (or refuses it when the episode is out of steps).
pub type Interceptor = Arc<dyn Fn(&str, &str, &FhirRequest, &mut dyn FnMut() -> FhirResponse) -> FhirResponse + Send + Sync>;

/// Shared server state: the cohort, the default sandbox and forked sandboxes.
pub struct AppState {
    cohort: Arc<Cohort>,
    cfg: ServerConfig,
    default: Arc<RwLock<Sandbox>>,
    sandboxes: RwLock<BTreeMap<String, Arc<RwLock<Sandbox>>>>,
    counter: AtomicU64,
    interceptor: std::sync::OnceLock<Interceptor>,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState").field("cohort", &self.cohort.name()).finish()
    }
}

/// Sandbox creation parameters (`POST /sandboxes` body).
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SandboxRequest {
    /// Id generator seed.
    pub seed: Option<u64>,
    /// Clinical "now" (RFC 3339); fixes the sandbox clock.
    pub now: Option<String>,
    /// With `now`: advance the clock this many ms per write.
    pub tick_ms: Option<i64>,
}

impl AppState {
    /// New state over a cohort.
    pub fn new(cohort: Arc<Cohort>, cfg: ServerConfig) -> Arc<AppState> {
        let default = Sandbox::fork(
            &cohort,
            SandboxOptions {
                seed: cfg.seed,
                clock: cfg.clock.clone(),
                validate: cfg.validate,
                check_references: true,
            },
        );
        Arc::new(AppState {
            cohort,
            default: Arc::new(RwLock::new(default)),
            cfg,
            sandboxes: RwLock::new(BTreeMap::new()),
            counter: AtomicU64::new(0),
            interceptor: std::sync::OnceLock::new(),
        })
    }

    /// Set the interceptor of FHIR requests to forked sandboxes (once).
    pub fn set_interceptor(&self, f: Interceptor) -> bool {
        self.interceptor.set(f).is_ok()
    }

    /// Serve an existing sandbox (of any cohort) at `/sandboxes/{id}/fhir`.
    pub fn insert_sandbox(&self, id: &str, sb: Arc<RwLock<Sandbox>>) -> Result<(), FhirError> {
        let mut map = self
            .sandboxes
            .write()
            .map_err(|_| FhirError::Conflict("sandbox table is unavailable".into()))?;
        if map.len() >= MAX_SANDBOXES {
            return Err(FhirError::Conflict(format!(
                "{MAX_SANDBOXES} sandboxes are alive; DELETE some first"
            )));
        }
        if id == "default" || map.contains_key(id) {
            return Err(FhirError::Conflict(format!("sandbox '{id}' exists")));
        }
        map.insert(id.to_string(), sb);
        Ok(())
    }

    /// The server settings.
    pub fn config(&self) -> &ServerConfig {
        &self.cfg
    }

    /// The cohort.
    pub fn cohort(&self) -> &Arc<Cohort> {
        &self.cohort
    }

    /// Fork a sandbox; returns its id.
    pub fn create_sandbox(&self, req: &SandboxRequest) -> Result<String, FhirError> {
        let n = self.counter.fetch_add(1, Ordering::Relaxed) + 1;
        let clock = match (&req.now, req.tick_ms) {
            (Some(now), tick) => {
                let t = parse_instant(now).map_err(|e| FhirError::BadRequest(format!("now: {e}")))?;
                match tick {
                    Some(ms) if ms > 0 => Clock::ticking(t, ms),
                    Some(ms) if ms < 0 => return Err(FhirError::BadRequest(format!("tick_ms {ms} must not be negative"))),
                    _ => Clock::fixed(t),
                }
            }
            (None, Some(_)) => return Err(FhirError::BadRequest("tick_ms needs now".into())),
            (None, None) => self.cfg.clock.clone(),
        };
        let sb = Sandbox::fork(
            &self.cohort,
            SandboxOptions {
                seed: req.seed.unwrap_or(n),
                clock,
                validate: self.cfg.validate,
                check_references: true,
            },
        );
        let id = format!("sb{n}");
        self.insert_sandbox(&id, Arc::new(RwLock::new(sb)))?;
        Ok(id)
    }

    /// A sandbox by id (`default` for the one at `/fhir`).
    pub fn sandbox(&self, id: &str) -> Option<Arc<RwLock<Sandbox>>> {
        if id == "default" {
            return Some(self.default.clone());
        }
        self.sandboxes.read().ok()?.get(id).cloned()
    }

    /// Drop a sandbox. Returns whether it existed.
    pub fn drop_sandbox(&self, id: &str) -> bool {
        self.sandboxes.write().map(|mut m| m.remove(id).is_some()).unwrap_or(false)
    }
}

/// Build the router.
pub fn router(state: Arc<AppState>) -> Router {
    Router::new().fallback(dispatch).with_state(state)
}

/// A JSON response with the FHIR media type.
pub fn fhir_json(status: u16, body: &Value) -> Response {
    let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let bytes = serde_json::to_vec(body).unwrap_or_default();
    let mut resp = (code, bytes).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/fhir+json; charset=utf-8"),
    );
    resp
}

/// An OperationOutcome response for an error.
pub fn error_response(e: &FhirError) -> Response {
    let mut r = fhir_json(e.status(), &e.to_outcome());
    if e.status() == 401 {
        r.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    }
    r
}

fn to_http(resp: FhirResponse) -> Response {
    let mut r = match &resp.body {
        Some(b) => fhir_json(resp.status, b),
        None => {
            let code = StatusCode::from_u16(resp.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            code.into_response()
        }
    };
    let h = r.headers_mut();
    if let Some(e) = resp.etag.as_deref().and_then(|e| HeaderValue::from_str(e).ok()) {
        h.insert(header::ETAG, e);
    }
    if let Some(loc) = resp.location.as_deref().and_then(|l| HeaderValue::from_str(l).ok()) {
        let name = if resp.status == 201 {
            header::LOCATION
        } else {
            header::CONTENT_LOCATION
        };
        h.insert(name, loc);
    }
    if let Some(lm) = resp
        .last_modified
        .as_deref()
        .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok())
    {
        let text = lm.with_timezone(&chrono::Utc).format("%a, %d %b %Y %H:%M:%S GMT").to_string();
        if let Ok(v) = HeaderValue::from_str(&text) {
            h.insert(header::LAST_MODIFIED, v);
        }
    }
    r
}

/// The public base URL for a request.
pub fn host_base(headers: &HeaderMap, cfg: &ServerConfig) -> String {
    if let Some(b) = &cfg.public_base {
        return b.trim_end_matches('/').to_string();
    }
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("localhost");
    format!("http://{host}")
}

fn header_str(headers: &HeaderMap, name: &str) -> Option<String> {
    headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_string)
}

/// Does the request carry the configured bearer token (or is none configured)?
pub fn authorized(headers: &HeaderMap, cfg: &ServerConfig) -> bool {
    let Some(token) = &cfg.token else { return true };
    let Some(given) = header_str(headers, "authorization") else {
        return false;
    };
    let given = given
        .strip_prefix("Bearer ")
        .or_else(|| given.strip_prefix("bearer "))
        .unwrap_or("");
    // constant-time comparison
    given.len() == token.len() && given.bytes().zip(token.bytes()).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
}

async fn dispatch(State(state): State<Arc<AppState>>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let path = parts.uri.path().to_string();
    let segments: Vec<String> = path
        .split('/')
        .filter(|s| !s.is_empty())
        .map(|s| percent_encoding::percent_decode_str(s).decode_utf8_lossy().into_owned())
        .collect();
    let seg_str: Vec<&str> = segments.iter().map(String::as_str).collect();
    let public = matches!(
        seg_str.as_slice(),
        ["health"] | ["fhir", "metadata"] | ["sandboxes", _, "fhir", "metadata"]
    );
    if !public && !authorized(&parts.headers, &state.cfg) {
        return error_response(&FhirError::Unauthorized(
            "missing or wrong bearer token: send Authorization: Bearer <token>".into(),
        ));
    }
    let bytes = match to_bytes(body, state.cfg.body_limit).await {
        Ok(b) => b,
        Err(_) => {
            return error_response(&FhirError::PayloadTooLarge(format!(
                "request body exceeds the limit of {} bytes",
                state.cfg.body_limit
            )));
        }
    };
    let seg: Vec<&str> = segments.iter().map(String::as_str).collect();
    match seg.as_slice() {
        ["health"] => fhir_json(
            200,
            &json!({"status": "ok", "cohort": state.cohort.name(), "resources": state.cohort.len(), "indexesWarm": state.cohort.is_warm()}),
        ),
        ["sandboxes"] => sandboxes(&state, &parts.method, &parts.headers, &bytes),
        ["sandboxes", id] => match parts.method {
            Method::DELETE if *id == "default" => {
                error_response(&FhirError::MethodNotAllowed("the default sandbox cannot be deleted".into()))
            }
            Method::DELETE => {
                if state.drop_sandbox(id) {
                    StatusCode::NO_CONTENT.into_response()
                } else {
                    error_response(&FhirError::NotFound(format!("no sandbox '{id}'")))
                }
            }
            Method::GET => match state.sandbox(id) {
                Some(sb) => sandbox_info(&state, id, &sb, &parts.headers),
                None => error_response(&FhirError::NotFound(format!("no sandbox '{id}'"))),
            },
            _ => error_response(&FhirError::MethodNotAllowed(format!(
                "{} is not allowed on /sandboxes/{id} (GET, DELETE)",
                parts.method
            ))),
        },
        ["fhir", rest @ ..] => fhir(&state, "default", "/fhir".to_string(), rest, &parts, &bytes),
        ["sandboxes", id, "fhir", rest @ ..] => fhir(&state, id, format!("/sandboxes/{id}/fhir"), rest, &parts, &bytes),
        _ => error_response(&FhirError::NotFound(format!(
            "nothing at '{path}': FHIR bases are /fhir and /sandboxes/{{id}}/fhir"
        ))),
    }
}

fn sandbox_info(state: &AppState, id: &str, sb: &Arc<RwLock<Sandbox>>, headers: &HeaderMap) -> Response {
    let Ok(g) = sb.read() else {
        return error_response(&FhirError::Conflict("sandbox is unavailable".into()));
    };
    let base = host_base(headers, &state.cfg);
    fhir_json(
        200,
        &json!({
            "id": id,
            "fhirBase": format!("{base}{}", if id == "default" { "/fhir".to_string() } else { format!("/sandboxes/{id}/fhir") }),
            "cohort": state.cohort.name(),
            "seed": g.options().seed,
            "now": super::clock::fhir_instant(g.clock().peek()),
            "writes": g.writes().len(),
        }),
    )
}

fn sandboxes(state: &Arc<AppState>, method: &Method, headers: &HeaderMap, bytes: &[u8]) -> Response {
    match *method {
        Method::POST => {
            let req: SandboxRequest = if bytes.iter().all(|b| b.is_ascii_whitespace()) {
                SandboxRequest::default()
            } else {
                match serde_json::from_slice(bytes) {
                    Ok(r) => r,
                    Err(e) => return error_response(&FhirError::BadRequest(format!("sandbox request: {e} (fields: seed, now, tick_ms)"))),
                }
            };
            match state.create_sandbox(&req) {
                Ok(id) => {
                    let Some(sb) = state.sandbox(&id) else {
                        return error_response(&FhirError::NotFound(id));
                    };
                    let mut r = sandbox_info(state, &id, &sb, headers);
                    *r.status_mut() = StatusCode::CREATED;
                    let base = host_base(headers, &state.cfg);
                    if let Ok(v) = HeaderValue::from_str(&format!("{base}/sandboxes/{id}")) {
                        r.headers_mut().insert(header::LOCATION, v);
                    }
                    r
                }
                Err(e) => error_response(&e),
            }
        }
        Method::GET => {
            let ids: Vec<String> = state.sandboxes.read().map(|m| m.keys().cloned().collect()).unwrap_or_default();
            fhir_json(200, &json!({"sandboxes": ids}))
        }
        _ => error_response(&FhirError::MethodNotAllowed(format!(
            "{method} is not allowed on /sandboxes (GET, POST)"
        ))),
    }
}

fn fhir(state: &AppState, sandbox_id: &str, prefix: String, rest: &[&str], parts: &axum::http::request::Parts, bytes: &[u8]) -> Response {
    let Some(sb) = state.sandbox(sandbox_id) else {
        return error_response(&FhirError::NotFound(format!(
            "no sandbox '{sandbox_id}' (it may have been deleted)"
        )));
    };
    let base = format!("{}{prefix}", host_base(&parts.headers, &state.cfg));
    let verb = match parts.method {
        Method::GET => Verb::Get,
        Method::POST => Verb::Post,
        Method::PUT => Verb::Put,
        Method::DELETE => Verb::Delete,
        _ => Verb::Other,
    };
    let query = parts.uri.query().map(super::store::parse_query_string).unwrap_or_default();
    let mut req = FhirRequest {
        verb,
        path: rest.iter().map(|s| s.to_string()).collect(),
        query,
        if_match: header_str(&parts.headers, "if-match"),
        if_none_exist: header_str(&parts.headers, "if-none-exist"),
        strict: false,
        prefer_return: Return::Representation,
        body: None,
    };
    if let Some(prefer) = header_str(&parts.headers, "prefer") {
        for p in prefer.split([',', ';']).map(str::trim) {
            match p {
                "handling=strict" => req.strict = true,
                "return=minimal" => req.prefer_return = Return::Minimal,
                "return=OperationOutcome" => req.prefer_return = Return::OperationOutcome,
                _ => {}
            }
        }
    }
    let ctype = header_str(&parts.headers, "content-type").unwrap_or_default().to_ascii_lowercase();
    let has_body = !bytes.iter().all(|b| b.is_ascii_whitespace());
    if matches!(verb, Verb::Post | Verb::Put) && has_body {
        if ctype.starts_with("application/x-www-form-urlencoded") {
            if rest.last() == Some(&"_search") {
                req.query.extend(super::store::parse_query_string(&String::from_utf8_lossy(bytes)));
            } else {
                return error_response(&FhirError::UnsupportedMediaType(
                    "form bodies are only accepted by POST [type]/_search".into(),
                ));
            }
        } else if ctype.contains("xml") || (!ctype.is_empty() && !ctype.contains("json")) {
            return error_response(&FhirError::UnsupportedMediaType(format!(
                "Content-Type '{ctype}' is not supported: send application/fhir+json"
            )));
        } else {
            match serde_json::from_slice::<Value>(bytes) {
                Ok(v) => req.body = Some(v),
                Err(e) => return error_response(&FhirError::BadRequest(format!("body is not valid JSON: {e}"))),
            }
        }
    }
    let accept = header_str(&parts.headers, "accept").unwrap_or_default().to_ascii_lowercase();
    if accept.contains("xml") && !accept.contains("json") && !accept.contains("*/*") {
        return error_response(&FhirError::UnsupportedMediaType(
            "this server returns application/fhir+json only".into(),
        ));
    }
    let mut run = || {
        if req.is_write() {
            match sb.write() {
                Ok(mut g) => rest::handle(&mut g, &base, &req),
                Err(_) => FhirResponse::error(&FhirError::Conflict("sandbox is unavailable after an earlier failure".into())),
            }
        } else {
            match sb.read() {
                Ok(g) => rest::handle_read(&g, &base, &req),
                Err(_) => FhirResponse::error(&FhirError::Conflict("sandbox is unavailable after an earlier failure".into())),
            }
        }
    };
    let resp = match state.interceptor.get() {
        Some(i) if sandbox_id != "default" => i(sandbox_id, &base, &req, &mut run),
        _ => run(),
    };
    tracing::debug!(method = %parts.method, path = %parts.uri, status = resp.status, "fhir");
    to_http(resp)
}

/// Serve `app` on `listener` until ctrl-c.
pub async fn serve(app: Router, listener: tokio::net::TcpListener) -> std::io::Result<()> {
    let app = app.layer(tower_http::trace::TraceLayer::new_for_http());
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await
}
