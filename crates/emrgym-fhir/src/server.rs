//! The HTTP server (axum): FHIR bases for the default sandbox (`/fhir`) and for forked
//! sandboxes (`/sandboxes/{id}/fhir`), sandbox lifecycle, bearer-token auth, body limits,
//! content negotiation, and FHIR headers. The same router serves in-process callers
//! through `tower::ServiceExt::oneshot`.
//!
//! Hardening (docs/reliability.md): [`harden`] puts one guard in front of every route (the
//! caller's role from its token before the body is read, and an episode token confined to its
//! episode, see [`super::access`]; the Host, Origin and Content-Type checks against browsers;
//! one body limit and body-read timeout, every error an
//! OperationOutcome, 405s and extractor rejections included); [`AppState::offload`] runs
//! CPU-bound work on blocking threads, at most `max_work` at once, under a per-request
//! deadline; [`serve`] accepts connections itself: a connection limit (a 503 beyond it), a
//! header-read timeout that also closes idle keep-alive connections, a write timeout that
//! closes clients that never read their answers, graceful shutdown.

use super::access::{self, Peer, Role};
use super::clock::{Clock, parse_instant};
use super::deadline;
use super::error::FhirError;
use super::rest::{self, FhirRequest, FhirResponse, Return, Verb};
use super::store::{Cohort, Sandbox, SandboxOptions};
use axum::Router;
use axum::body::{Body, to_bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

/// Default request body limit (bytes).
pub const DEFAULT_BODY_LIMIT: usize = 8 * 1024 * 1024;
/// Most sandboxes alive at once.
pub(crate) const MAX_SANDBOXES: usize = 100_000;
/// Default time for a request's headers to arrive, counted from when the connection is
/// ready for the next request (so it is also the idle keep-alive timeout).
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Default time for a request's whole body to arrive once its headers have.
pub const DEFAULT_BODY_TIMEOUT: Duration = Duration::from_secs(30);
/// Default processing deadline of one request (and the longest wait for a worker).
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Default longest a response write may make no progress (a client that sends requests
/// but never reads the answers) before the connection is closed.
pub const DEFAULT_WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// Default most open connections.
pub const DEFAULT_MAX_CONNECTIONS: usize = 2048;
/// Longest `tick_ms` a sandbox clock may advance per write (one day).
pub(crate) const MAX_TICK_MS: i64 = 86_400_000;

/// Default most requests doing CPU-bound work at once: four per core.
pub fn default_max_work() -> usize {
    std::thread::available_parallelism().map_or(4, |n| n.get() * 4).max(4)
}

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
    /// Time for a request's headers to arrive (also the idle keep-alive timeout).
    pub header_timeout: Duration,
    /// Time for a request's body to arrive.
    pub body_timeout: Duration,
    /// Processing deadline of one request, and the longest wait for a worker.
    pub request_timeout: Duration,
    /// Longest a response write may make no progress before the connection is closed.
    pub write_timeout: Duration,
    /// Most open connections (beyond it a new connection gets a 503 and is closed).
    pub max_connections: usize,
    /// Most requests doing CPU-bound work at once.
    pub max_work: usize,
    /// Host names the `Host` header may name besides the loopback names (lower case, no
    /// port; `serve` adds its bind address and the public base's host).
    pub allowed_hosts: Vec<String>,
    /// Origins (`scheme://host[:port]`) admitted besides those on an allowed host.
    pub allowed_origins: Vec<String>,
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
            header_timeout: DEFAULT_HEADER_TIMEOUT,
            body_timeout: DEFAULT_BODY_TIMEOUT,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            write_timeout: DEFAULT_WRITE_TIMEOUT,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_work: default_max_work(),
            allowed_hosts: Vec::new(),
            allowed_origins: Vec::new(),
        }
    }
}

impl ServerConfig {
    /// The access settings the guard applies.
    pub fn access(&self) -> access::Policy<'_> {
        access::Policy {
            operator_token: self.token.as_deref(),
            hosts: &self.allowed_hosts,
            origins: &self.allowed_origins,
        }
    }
}

/// A forked sandbox and who owns it (an episode owns its sandbox: deleting it through
/// `/sandboxes` would orphan the episode).
struct Slot {
    sb: Arc<RwLock<Sandbox>>,
    owner: Option<String>,
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
    sandboxes: RwLock<BTreeMap<String, Slot>>,
    counter: AtomicU64,
    interceptor: std::sync::OnceLock<Interceptor>,
    work: Arc<tokio::sync::Semaphore>,
    grants: access::Grants,
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
        fn cfg_max_work(cfg: &ServerConfig) -> usize {
            cfg.max_work.clamp(1, tokio::sync::Semaphore::MAX_PERMITS)
        }
        let work = cfg_max_work(&cfg);
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
            work: Arc::new(tokio::sync::Semaphore::new(work)),
            grants: access::Grants::default(),
        })
    }

    /// The episode capabilities the guard honours (granted and revoked by the episode API).
    pub fn grants(&self) -> &access::Grants {
        &self.grants
    }

    /// Set the interceptor of FHIR requests to forked sandboxes (once).
    pub fn set_interceptor(&self, f: Interceptor) -> bool {
        self.interceptor.set(f).is_ok()
    }

    /// Serve an existing sandbox (of any cohort) at `/sandboxes/{id}/fhir`.
    pub(crate) fn insert_sandbox(&self, id: &str, sb: Arc<RwLock<Sandbox>>) -> Result<(), FhirError> {
        self.insert_slot(id, Slot { sb, owner: None })
    }

    /// Serve a sandbox that `owner` (e.g. "episode ep3; end it with DELETE /episodes/ep3")
    /// controls: `DELETE /sandboxes/{id}` answers 409 naming the owner, and only
    /// [`AppState::release_sandbox`] drops it.
    pub fn insert_owned_sandbox(&self, id: &str, sb: Arc<RwLock<Sandbox>>, owner: &str) -> Result<(), FhirError> {
        self.insert_slot(
            id,
            Slot {
                sb,
                owner: Some(owner.to_string()),
            },
        )
    }

    fn insert_slot(&self, id: &str, slot: Slot) -> Result<(), FhirError> {
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
        map.insert(id.to_string(), slot);
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
    pub(crate) fn create_sandbox(&self, req: &SandboxRequest) -> Result<String, FhirError> {
        let n = self.counter.fetch_add(1, Ordering::Relaxed) + 1;
        let clock = match (&req.now, req.tick_ms) {
            (Some(now), tick) => {
                let t = parse_instant(now).map_err(|e| FhirError::BadRequest(format!("now: {e}")))?;
                if tick.is_some_and(|ms| ms > MAX_TICK_MS) {
                    return Err(FhirError::BadRequest(format!(
                        "tick_ms {} is more than {MAX_TICK_MS} (one day per write)",
                        tick.unwrap_or_default()
                    )));
                }
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
        emrgym_core::sync::read(&self.sandboxes).get(id).map(|s| s.sb.clone())
    }

    /// Drop a sandbox nobody owns (`DELETE /sandboxes/{id}`): 404 when there is none, 409
    /// when it belongs to an episode.
    pub(crate) fn drop_sandbox(&self, id: &str) -> Result<(), FhirError> {
        let mut map = self
            .sandboxes
            .write()
            .map_err(|_| FhirError::Conflict("sandbox table is unavailable".into()))?;
        match map.get(id) {
            None => Err(FhirError::NotFound(format!("no sandbox '{id}'"))),
            Some(Slot { owner: Some(owner), .. }) => Err(FhirError::Conflict(format!(
                "sandbox '{id}' belongs to {owner}: it cannot be deleted through /sandboxes"
            ))),
            Some(_) => {
                map.remove(id);
                Ok(())
            }
        }
    }

    /// Drop a sandbox on behalf of its owner (or an unowned one). Returns whether it existed.
    pub fn release_sandbox(&self, id: &str) -> bool {
        emrgym_core::sync::write(&self.sandboxes).remove(id).is_some()
    }

    /// Run CPU-bound work (`f` builds the response) on a blocking thread, off the async
    /// workers that accept connections and answer `/health`. At most `max_work` run at
    /// once; a request that waits longer than `request_timeout` for its turn gets a 503.
    /// The work runs under a [`deadline::Scope`] of `request_timeout` (long loops stop with
    /// a 408); if it still has not answered a second after its deadline, the client gets the
    /// 408 anyway and the work's result is dropped. A panic in the work is a 500
    /// OperationOutcome, never a dropped connection.
    pub async fn offload<F>(self: &Arc<Self>, f: F) -> Response
    where
        F: FnOnce() -> Response + Send + 'static,
    {
        let budget = self.cfg.request_timeout;
        let permit = match tokio::time::timeout(budget, self.work.clone().acquire_owned()).await {
            Ok(Ok(p)) => p,
            _ => {
                return error_response(&FhirError::Busy(format!(
                    "the server is busy: {} requests are at work and none finished within {} ms; retry later (--max-work, --request-timeout-ms)",
                    self.cfg.max_work,
                    budget.as_millis()
                )));
            }
        };
        let task = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let _scope = deadline::Scope::enter(budget);
            f()
        });
        match tokio::time::timeout(budget.saturating_add(Duration::from_secs(1)), task).await {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => {
                tracing::error!("a request's worker failed: {e}");
                error_response(&FhirError::Internal(format!("the request's worker failed: {e}")))
            }
            Err(_) => error_response(&FhirError::Timeout(format!(
                "the request ran past its deadline of {} ms (--request-timeout-ms)",
                budget.as_millis()
            ))),
        }
    }
}

/// The FHIR routes without the guard ([`harden`] it, once, around everything merged).
pub fn routes(state: Arc<AppState>) -> Router {
    Router::new().fallback(dispatch).with_state(state)
}

/// Build the router: the FHIR routes behind the guard.
pub fn router(state: Arc<AppState>) -> Router {
    harden(routes(state.clone()), state)
}

/// Put the guard in front of every route of `app` (call it last, on the merged router): the
/// caller's [`Role`] before any body byte is read (401 without a valid token, 403 for an
/// episode token off its episode; handlers read the role from the request's extensions);
/// the browser checks of [`access::browser_safe`] (421, 403, 415); one body limit (`body_limit`, 413) and
/// one body-read timeout (`body_timeout`, 408) for every route; and every error answer an
/// OperationOutcome: axum's own (405 with `Allow`, bad path parameters, rejected bodies)
/// are rewritten, keeping their status and naming the method and path.
pub fn harden(app: Router, state: Arc<AppState>) -> Router {
    // `app` is wrapped whole, not layered route by route: a layered route is no longer "top
    // level" to axum, which then leaves the `Allow` header off its 405s
    Router::new()
        .fallback_service(app)
        .layer(axum::extract::DefaultBodyLimit::disable())
        .layer(axum::middleware::from_fn_with_state(state, guard))
}

fn public_path(path: &str) -> bool {
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    matches!(
        segs.as_slice(),
        ["health"] | ["fhir", "metadata"] | ["sandboxes", _, "fhir", "metadata"]
    )
}

async fn guard(State(state): State<Arc<AppState>>, mut req: Request, next: Next) -> Response {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let policy = state.cfg.access();
    // the role before any body byte is read: no token, no body
    if !public_path(&path) {
        let role = match access::role(req.headers(), req.extensions().get::<Peer>(), &policy, &state.grants) {
            Ok(r) => r,
            Err(e) => return refuse_browser_first(&method, &path, req.headers(), &policy, e),
        };
        if let Role::Agent(id) = &role {
            let segs = decoded_segments(&path);
            let segs: Vec<&str> = segs.iter().map(String::as_str).collect();
            if !access::agent_may(id, &method, &segs) {
                let e = FhirError::Forbidden(format!(
                    "an episode token reaches only its own episode ({id}): its view, guidance, tools, finish and FHIR base; not {method} {}",
                    path.chars().take(200).collect::<String>()
                ));
                return refuse_browser_first(&method, &path, req.headers(), &policy, e);
            }
        }
        req.extensions_mut().insert(role);
    }
    let (parts, body) = req.into_parts();
    let limit = state.cfg.body_limit;
    let bytes = match tokio::time::timeout(state.cfg.body_timeout, to_bytes(body, limit)).await {
        Ok(Ok(b)) => b,
        Ok(Err(e)) => {
            let inner = e.into_inner();
            return if inner.downcast_ref::<http_body_util::LengthLimitError>().is_some() {
                error_response(&FhirError::PayloadTooLarge(format!(
                    "request body exceeds the limit of {limit} bytes (--body-limit)"
                )))
            } else {
                error_response(&FhirError::BadRequest(format!("the request body could not be read: {inner}")))
            };
        }
        Err(_) => {
            return error_response(&FhirError::Timeout(format!(
                "the request body did not arrive within {} ms (--body-timeout-ms)",
                state.cfg.body_timeout.as_millis()
            )));
        }
    };
    let has_body = !bytes.iter().all(u8::is_ascii_whitespace);
    if let Err(e) = access::browser_safe(&method, &path, &parts.headers, has_body, &policy) {
        return error_response(&e);
    }
    let resp = next.run(Request::from_parts(parts, Body::from(bytes))).await;
    as_outcome(resp, &method, &path).await
}

/// A refused credential, unless the request is a browser's that must be refused anyway
/// (a foreign Host or Origin says more than the missing token).
fn refuse_browser_first(method: &Method, path: &str, headers: &HeaderMap, policy: &access::Policy, e: FhirError) -> Response {
    match access::browser_safe(method, path, headers, false, policy) {
        Err(b) => error_response(&b),
        Ok(()) => error_response(&e),
    }
}

/// The non-empty, percent-decoded path segments (as the FHIR dispatcher and axum's `Path`
/// see them).
fn decoded_segments(path: &str) -> Vec<String> {
    path.split('/')
        .filter(|s| !s.is_empty())
        .map(|s| percent_encoding::percent_decode_str(s).decode_utf8_lossy().into_owned())
        .collect()
}

/// An error response that is not already JSON (axum's plain-text rejections, empty 405s)
/// as an OperationOutcome with the same status and headers such as `Allow`.
async fn as_outcome(resp: Response, method: &Method, path: &str) -> Response {
    let status = resp.status();
    let is_json = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|c| c.contains("json"));
    if status.as_u16() < 400 || is_json {
        return resp;
    }
    let (parts, body) = resp.into_parts();
    let text = to_bytes(body, 64 * 1024)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_string())
        .unwrap_or_default();
    let allow = parts.headers.get(header::ALLOW).and_then(|v| v.to_str().ok()).map(str::to_string);
    let shown: String = path.chars().take(200).collect();
    let msg = match (status, &allow) {
        (StatusCode::METHOD_NOT_ALLOWED, Some(a)) => format!("{method} is not allowed on {shown} (allowed: {a})"),
        (StatusCode::METHOD_NOT_ALLOWED, None) => format!("{method} is not allowed on {shown}"),
        _ if text.is_empty() => format!("{method} {shown}: {status}"),
        _ => format!("{method} {shown}: {text}"),
    };
    let e = match status.as_u16() {
        400 => FhirError::BadRequest(msg),
        401 => FhirError::Unauthorized(msg),
        403 => FhirError::Forbidden(msg),
        429 => FhirError::TooMany(msg),
        404 => FhirError::NotFound(msg),
        405 => FhirError::MethodNotAllowed(msg),
        408 => FhirError::Timeout(msg),
        409 => FhirError::Conflict(msg),
        413 => FhirError::PayloadTooLarge(msg),
        415 => FhirError::UnsupportedMediaType(msg),
        422 => FhirError::Unprocessable(vec![msg]),
        503 => FhirError::Busy(msg),
        _ => FhirError::Internal(msg),
    };
    let mut r = error_response(&e);
    *r.status_mut() = status;
    for (name, value) in parts.headers.iter() {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            r.headers_mut().insert(name.clone(), value.clone());
        }
    }
    r
}

/// The one JSON response of every route (FHIR, tools, episodes): `body`'s text, which
/// cannot fail for a JSON value, with `content_type`; an unknown status becomes a 500.
pub(crate) fn json_with(status: u16, body: &Value, content_type: &'static str) -> Response {
    let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut resp = (code, body.to_string()).into_response();
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp
}

/// The one reader of a JSON request body into a typed request (whose type denies unknown
/// fields): an empty body is the default request; a body that is not JSON is a 400 saying
/// so; JSON of the wrong shape is a 400 naming `what`, serde's reason (the unknown field, the
/// bad value) and the fields there are.
pub fn json_body<T: serde::de::DeserializeOwned + Default>(bytes: &[u8], what: &str, fields: &str) -> Result<T, FhirError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(bytes).map_err(|e| {
        FhirError::BadRequest(match e.classify() {
            serde_json::error::Category::Data => format!("{what}: {e} (fields: {fields})"),
            _ => format!("{what}: the body is not valid JSON: {e}"),
        })
    })
}

/// A JSON response with the FHIR media type.
pub fn fhir_json(status: u16, body: &Value) -> Response {
    json_with(status, body, "application/fhir+json; charset=utf-8")
}

/// A JSON response with the plain JSON media type (the tool and episode APIs).
pub fn json_response(status: u16, body: &Value) -> Response {
    json_with(status, body, "application/json")
}

/// An OperationOutcome response for an error.
pub fn error_response(e: &FhirError) -> Response {
    let mut r = fhir_json(e.status(), &e.to_outcome());
    if e.status() == 401 {
        r.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    }
    if e.status() == 503 {
        r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
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

async fn dispatch(State(state): State<Arc<AppState>>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let path = parts.uri.path().to_string();
    let segments = decoded_segments(&path);
    // auth and roles: the guard ([`harden`]) checked them before this runs
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
            Method::DELETE => match state.drop_sandbox(id) {
                Ok(()) => StatusCode::NO_CONTENT.into_response(),
                Err(e) => error_response(&e),
            },
            Method::GET => match state.sandbox(id) {
                Some(sb) => sandbox_info(&state, id, &sb, &parts.headers),
                None => error_response(&FhirError::NotFound(format!("no sandbox '{id}'"))),
            },
            _ => error_response(&FhirError::MethodNotAllowed(format!(
                "{} is not allowed on /sandboxes/{id} (GET, DELETE)",
                parts.method
            ))),
        },
        ["fhir", ..] | ["sandboxes", _, "fhir", ..] => {
            // searches, writes and Bundles are CPU-bound: off the async workers
            let (sandbox, skip) = if seg[0] == "fhir" {
                ("default".to_string(), 1)
            } else {
                (seg[1].to_string(), 3)
            };
            let rest: Vec<String> = segments.iter().skip(skip).cloned().collect();
            let st = state.clone();
            state
                .offload(move || {
                    let prefix = if sandbox == "default" {
                        "/fhir".to_string()
                    } else {
                        format!("/sandboxes/{sandbox}/fhir")
                    };
                    let rest: Vec<&str> = rest.iter().map(String::as_str).collect();
                    fhir(&st, &sandbox, prefix, &rest, &parts, &bytes)
                })
                .await
        }
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
            let req: SandboxRequest = match json_body(bytes, "sandbox request", "seed, now, tick_ms") {
                Ok(r) => r,
                Err(e) => return error_response(&e),
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
            let ids: Vec<String> = emrgym_core::sync::read(&state.sandboxes).keys().cloned().collect();
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

/// Connection-level limits of [`serve`].
#[derive(Debug, Clone, Copy)]
pub struct ConnLimits {
    /// Most open connections; beyond it a new connection gets a 503 and is closed.
    pub max_connections: usize,
    /// Time for a request's headers to arrive, from when the connection is ready for the
    /// next request: slow or silent clients and idle keep-alive connections are closed.
    pub header_timeout: Duration,
    /// Longest a write to the client may make no progress: a client that sends requests
    /// and never reads the answers is closed, whatever it keeps sending.
    pub write_timeout: Duration,
}

impl ConnLimits {
    /// The limits in a server configuration.
    pub fn of(cfg: &ServerConfig) -> ConnLimits {
        ConnLimits {
            max_connections: cfg.max_connections.max(1),
            header_timeout: cfg.header_timeout,
            write_timeout: cfg.write_timeout,
        }
    }
}

/// Serve `app` on `listener` until ctrl-c (then until `shutdown` resolves, for tests:
/// [`serve_until`]).
pub async fn serve(app: Router, listener: tokio::net::TcpListener, limits: ConnLimits) -> std::io::Result<()> {
    serve_until(app, listener, limits, async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await
}

/// Serve `app` on `listener` until `shutdown` resolves; then stop accepting, let each
/// connection finish its request in flight, and wait up to 5 s for them.
pub async fn serve_until(
    app: Router,
    listener: tokio::net::TcpListener,
    limits: ConnLimits,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> std::io::Result<()> {
    use hyper_util::rt::{TokioIo, TokioTimer};
    use tokio::sync::Semaphore;
    let app = app.layer(tower_http::trace::TraceLayer::new_for_http());
    let max = limits.max_connections.min(Semaphore::MAX_PERMITS);
    let conns = Arc::new(Semaphore::new(max));
    // refusals write a few hundred bytes and close; a flood of them is bounded too
    let refusals = Arc::new(Semaphore::new(64));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // out of file descriptors or a client that reset before accept: keep
                    // serving; back off briefly so a full fd table does not spin
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let Ok(permit) = conns.clone().try_acquire_owned() else {
            match refusals.clone().try_acquire_owned() {
                Ok(p) => {
                    tokio::spawn(async move {
                        let _p = p;
                        refuse(stream, max).await;
                    });
                }
                Err(_) => drop(stream),
            }
            continue;
        };
        let _ = stream.set_nodelay(true);
        // the peer address travels with each request: the guard's loopback rule reads it
        let svc = hyper_util::service::TowerToHyperService::new(tower::ServiceExt::map_request(
            app.clone(),
            move |mut r: hyper::Request<hyper::body::Incoming>| {
                r.extensions_mut().insert(Peer(peer));
                r
            },
        ));
        let mut stop = stop_rx.clone();
        let header_timeout = limits.header_timeout;
        let io = TokioIo::new(WriteTimeout::new(stream, limits.write_timeout));
        tokio::spawn(async move {
            let _permit = permit;
            let mut b = hyper::server::conn::http1::Builder::new();
            b.timer(TokioTimer::new()).header_read_timeout(header_timeout).keep_alive(true);
            let mut conn = std::pin::pin!(b.serve_connection(io, svc));
            tokio::select! {
                r = conn.as_mut() => {
                    if let Err(e) = r {
                        tracing::debug!("connection closed: {e}");
                    }
                }
                _ = stop.changed() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.await;
                }
            }
        });
    }
    let _ = stop_tx.send(true);
    let all = u32::try_from(max).unwrap_or(u32::MAX);
    let _ = tokio::time::timeout(Duration::from_secs(5), conns.acquire_many(all)).await;
    Ok(())
}

/// A connection's socket with a write timeout: a write, flush or shutdown that makes no
/// progress for `timeout` fails with `TimedOut`, and hyper drops the connection. Without it
/// a client that pipelines requests and never reads the answers holds its connection (and
/// the answers buffered for it) forever: hyper's header-read timeout covers only reads.
struct WriteTimeout<S> {
    inner: S,
    timeout: Duration,
    /// Armed when a write first returns `Pending`, cleared by any progress.
    stalled: Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
}

impl<S> WriteTimeout<S> {
    fn new(inner: S, timeout: Duration) -> Self {
        WriteTimeout {
            inner,
            timeout,
            stalled: None,
        }
    }

    fn watch<T>(&mut self, cx: &mut std::task::Context<'_>, r: std::task::Poll<std::io::Result<T>>) -> std::task::Poll<std::io::Result<T>> {
        use std::future::Future;
        use std::task::Poll;
        if r.is_ready() {
            self.stalled = None;
            return r;
        }
        let timeout = self.timeout;
        let sleep = self.stalled.get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        if sleep.as_mut().poll(cx).is_ready() {
            self.stalled = None;
            return Poll::Ready(Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("the client read nothing for {} ms (--write-timeout-ms)", timeout.as_millis()),
            )));
        }
        Poll::Pending
    }
}

impl<S: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for WriteTimeout<S> {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl<S: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for WriteTimeout<S> {
    fn poll_write(self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>, buf: &[u8]) -> std::task::Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let r = std::pin::Pin::new(&mut this.inner).poll_write(cx, buf);
        this.watch(cx, r)
    }

    fn poll_write_vectored(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let r = std::pin::Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.watch(cx, r)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let r = std::pin::Pin::new(&mut this.inner).poll_flush(cx);
        this.watch(cx, r)
    }

    fn poll_shutdown(self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let r = std::pin::Pin::new(&mut this.inner).poll_shutdown(cx);
        this.watch(cx, r)
    }
}

/// Answer a connection over the limit with a 503 OperationOutcome and close it.
async fn refuse(mut stream: tokio::net::TcpStream, max: usize) {
    use tokio::io::AsyncWriteExt;
    let e = FhirError::Busy(format!(
        "the server holds its limit of {max} open connections (--max-connections); retry later"
    ));
    let body = e.to_outcome().to_string().into_bytes();
    let head = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/fhir+json; charset=utf-8\r\ncontent-length: {}\r\nretry-after: 1\r\nconnection: close\r\n\r\n",
        body.len()
    );
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        stream.write_all(head.as_bytes()).await?;
        stream.write_all(&body).await?;
        stream.shutdown().await
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::{SandboxRequest, json_body};

    #[test]
    fn request_bodies_are_typed_and_their_errors_say_what_is_wrong() {
        let r: SandboxRequest = json_body(b"  ", "sandbox request", "seed, now, tick_ms").unwrap();
        assert!(r.seed.is_none() && r.now.is_none(), "an empty body is the default request");
        let r: SandboxRequest = json_body(br#"{"seed": 7}"#, "sandbox request", "seed, now, tick_ms").unwrap();
        assert_eq!(r.seed, Some(7));
        let e = json_body::<SandboxRequest>(br#"{"sede": 7}"#, "sandbox request", "seed, now, tick_ms")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("sandbox request") && e.contains("sede") && e.contains("fields: seed, now, tick_ms"),
            "{e}"
        );
        let e = json_body::<SandboxRequest>(br#"{"seed": -1}"#, "sandbox request", "seed")
            .unwrap_err()
            .to_string();
        assert!(e.contains("-1"), "{e}");
        let e = json_body::<SandboxRequest>(b"{not json", "sandbox request", "seed")
            .unwrap_err()
            .to_string();
        assert!(e.contains("not valid JSON"), "{e}");
    }
}
