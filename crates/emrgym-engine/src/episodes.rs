//! The episode API on `emrgym serve`, for agents that live outside emrgym:
//!
//! - `GET /scenarios`: the instances (id, family, title, cohort, now, tools);
//! - `POST /episodes` `{"instance", "mode": "flat"|"guided"|"goal"|"outline", "seed"}`: fork a sandbox for an
//!   instance (goal mode: only instances whose family has a goal, whose instruction and
//!   context the episode then shows); returns the episode id, instruction, clinical now, the episode's FHIR base
//!   URL, its tools in OpenAI function format and the URLs below;
//! - `GET /episodes`, `GET /episodes/{id}`: state (and the result once ended);
//! - `GET /episodes/{id}/guidance` (guided mode): the steps that can be done now;
//! - `POST /episodes/{id}/tools/{name}`: run a tool of the episode's catalogue on its sandbox;
//! - `POST /episodes/{id}/finish` `{"answer"}`: finish, grade, return the per-subtask verdicts;
//! - `DELETE /episodes/{id}`: end an unfinished episode (graded as `stopped`) and drop its sandbox.
//!
//! Every tool call and every FHIR REST request to `/sandboxes/{id}/fhir` is recorded as a
//! step; ended episodes are written to the server's recording run directory in the format
//! `emrgym run` writes. Errors are OperationOutcomes.
//!
//! Roles (emrgym_fhir::access, checked by the server's guard): the operator creates, lists,
//! ends and reads episodes with their full grades; `POST /episodes` grants the episode a
//! token that reaches only that episode, and an agent holding it sees, on finish, that the
//! episode ended and at most success and progress ([`Feedback`]). Budgets cap the episodes
//! of an instance, open and in all ([`Limits`]); episodes still open when the server stops
//! are recorded as `abandoned` ([`EpisodeApi::abandon_all`]).

// Handlers short-circuit with the error Response they will return anyway; boxing it would add
// an allocation to every error path for no gain.
#![allow(clippy::result_large_err)]

use super::episode::{Prepared, Workspace};
use super::run::Mode;
use super::session::{Feedback, Recorder, Session};
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::Response;
use axum::routing::{get, post};
use axum::{Extension, Router};
use emrgym_core::sync::lock;
use emrgym_fhir::FhirError;
use emrgym_fhir::access::Role;
use emrgym_fhir::server::{AppState, error_response, host_base, json_body, json_response};
use emrgym_scenario::Instance;
use emrgym_tools::http::to_response;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Most episodes kept by one server (ended ones included; DELETE frees them).
pub const MAX_EPISODES: usize = 10_000;

/// What the episode API allows, recorded in the run's manifest (`access`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Limits {
    /// What an agent learns when its episode ends.
    pub feedback: Feedback,
    /// Most episodes of one instance in the recording, ended ones and earlier servers'
    /// included (None: no cap).
    pub per_instance: Option<u32>,
    /// Most episodes of one instance open at once (None: no cap).
    pub open_per_instance: Option<usize>,
    /// The operator holds `--token` (false: any loopback client is the operator).
    pub operator_token: bool,
    /// An open episode with no call for this long is ended as `abandoned` (None: never).
    pub idle_timeout: Option<std::time::Duration>,
}

impl Limits {
    /// The manifest's record of them.
    pub fn to_json(&self) -> Value {
        json!({
            "interface": "http",
            "operator": if self.operator_token { "token" } else { "loopback" },
            "agent_feedback": self.feedback,
            "max_episodes_per_instance": self.per_instance,
            "max_open_episodes_per_instance": self.open_per_instance,
            "episode_idle_timeout_s": self.idle_timeout.map(|d| d.as_secs()),
        })
    }
}

/// The episode API's state.
pub struct EpisodeApi {
    app: Arc<AppState>,
    instances: Vec<Instance>,
    ws: Mutex<Workspace>,
    prepared: Mutex<BTreeMap<String, Arc<Prepared>>>,
    sessions: Mutex<BTreeMap<String, Arc<Mutex<Session>>>>,
    recorder: Arc<Recorder>,
    counter: AtomicU64,
    limits: Limits,
    /// Cancelled when the server stops: ends the MCP sessions' streams.
    mcp_stop: tokio_util::sync::CancellationToken,
}

impl EpisodeApi {
    /// The API over a scenario workspace, recording into `recorder`; hooks the FHIR server
    /// so REST requests to an episode's sandbox are recorded.
    pub fn new(app: Arc<AppState>, ws: Workspace, recorder: Recorder) -> anyhow::Result<Arc<EpisodeApi>> {
        let limits = Limits {
            operator_token: app.config().token.is_some(),
            ..Limits::default()
        };
        Self::with_limits(app, ws, recorder, limits)
    }

    /// [`EpisodeApi::new`] with a feedback policy and budgets (recorded in the manifest; a
    /// recording made under other ones is refused).
    pub fn with_limits(app: Arc<AppState>, ws: Workspace, recorder: Recorder, limits: Limits) -> anyhow::Result<Arc<EpisodeApi>> {
        let recorder = recorder.with_access(limits.to_json())?;
        let mut instances = ws.suite.instances().map_err(anyhow::Error::msg)?;
        instances.sort_by(|a, b| a.id.cmp(&b.id));
        let api = Arc::new(EpisodeApi {
            app: app.clone(),
            instances,
            ws: Mutex::new(ws),
            prepared: Mutex::new(BTreeMap::new()),
            sessions: Mutex::new(BTreeMap::new()),
            recorder: Arc::new(recorder),
            counter: AtomicU64::new(0),
            limits,
            mcp_stop: tokio_util::sync::CancellationToken::new(),
        });
        let weak = Arc::downgrade(&api);
        app.set_interceptor(Arc::new(move |id, base, req, run| {
            // the episode's lock is held while the request runs, so steps are recorded in the
            // order they took effect
            match weak.upgrade().and_then(|api| api.session(id)) {
                Some(cell) => match cell.lock() {
                    Ok(mut s) => s.rest(base, req, run),
                    Err(_) => run(),
                },
                None => run(),
            }
        }));
        Ok(api)
    }

    /// The hook that runs `POST /sandboxes/{id}/tools/{name}` for an episode's sandbox as
    /// the episode's own tool call (its catalogue, recorded), so both URLs are equivalent.
    pub fn tool_hook(self: &Arc<Self>) -> emrgym_tools::http::ToolHook {
        let weak = Arc::downgrade(self);
        Arc::new(move |id, name, body, role| {
            let api = weak.upgrade()?;
            let cell = api.session(id)?;
            let mut s = lock(&cell);
            let text = String::from_utf8_lossy(body);
            let args = if text.trim().is_empty() {
                json!({})
            } else {
                match serde_json::from_str::<Value>(text.trim()) {
                    Ok(v) => v,
                    Err(e) => {
                        return Some(emrgym_tools::Observation::fail(
                            name,
                            400,
                            format!("arguments for {name} are not valid JSON: {e}"),
                        ));
                    }
                }
            };
            let mut obs = s.tool(name, &args);
            if s.finished() {
                // as on /episodes/{id}/tools/finish: the grade comes back with the result
                match ended_view(&api, &mut s, role) {
                    Ok(v) => {
                        if let Some(o) = obs.content.as_object_mut() {
                            o.insert("episode".into(), v);
                        }
                    }
                    Err(_) => tracing::error!("episode {id}: recording failed"),
                }
            }
            Some(obs)
        })
    }

    /// One episode (its own lock: episodes run concurrently).
    fn session(&self, id: &str) -> Option<Arc<Mutex<Session>>> {
        lock(&self.sessions).get(id).cloned()
    }

    /// Where ended episodes are written.
    pub fn run_dir(&self) -> &std::path::Path {
        self.recorder.dir()
    }

    /// End every episode still open as `abandoned` and record it (at shutdown: every episode
    /// a client opened appears in the run's results). Returns how many were abandoned.
    pub fn abandon_all(&self) -> usize {
        let cells: Vec<Arc<Mutex<Session>>> = match self.sessions.lock() {
            Ok(m) => m.values().cloned().collect(),
            Err(_) => return 0,
        };
        let mut n = 0;
        for cell in cells {
            let Ok(mut s) = cell.lock() else { continue };
            if s.ended() {
                continue;
            }
            match s.end_with(&self.recorder, Some(emrgym_scenario::trajectory::EndReason::Abandoned)) {
                Ok(_) => n += 1,
                Err(e) => tracing::error!("episode {}: recording it as abandoned failed: {e:#}", s.id),
            }
        }
        n
    }

    /// End, as `abandoned`, every open episode whose agent made no call for `idle` (the
    /// server runs it periodically under `--episode-idle-timeout-s`, so open episodes cannot
    /// hold the per-instance budget forever). Returns how many expired. An episode busy with
    /// a request is not idle.
    pub fn expire_idle(&self, idle: std::time::Duration) -> usize {
        let cells: Vec<Arc<Mutex<Session>>> = match self.sessions.lock() {
            Ok(m) => m.values().cloned().collect(),
            Err(_) => return 0,
        };
        let mut n = 0;
        for cell in cells {
            let Ok(mut s) = cell.try_lock() else { continue };
            if s.ended() || s.last_call.elapsed() < idle {
                continue;
            }
            match s.end_with(&self.recorder, Some(emrgym_scenario::trajectory::EndReason::Abandoned)) {
                Ok(_) => {
                    tracing::info!(
                        "episode {} expired after {} s without a call: recorded as abandoned",
                        s.id,
                        idle.as_secs()
                    );
                    n += 1;
                }
                Err(e) => tracing::error!("episode {}: recording it as abandoned failed: {e:#}", s.id),
            }
        }
        n
    }

    /// The idle timeout the server applies.
    pub fn idle_timeout(&self) -> Option<std::time::Duration> {
        self.limits.idle_timeout
    }

    /// Bring the recording's `summary.json` up to date (at shutdown).
    pub fn flush(&self) {
        if let Err(e) = self.recorder.flush() {
            tracing::error!("writing the recording's summary failed: {e:#}");
        }
    }

    /// Whether one more episode of `instance` fits the budgets (`sessions`: the episode
    /// table, locked by the caller so concurrent openings cannot overshoot).
    fn admit(&self, sessions: &BTreeMap<String, Arc<Mutex<Session>>>, instance: &str) -> Result<(), FhirError> {
        if sessions.len() >= MAX_EPISODES {
            return Err(FhirError::Conflict(format!("{MAX_EPISODES} episodes are kept; DELETE some first")));
        }
        if let Some(cap) = self.limits.per_instance {
            let used = self.recorder.trials_of(instance);
            if used >= cap {
                return Err(FhirError::TooMany(format!(
                    "instance {instance} has used its {cap} episodes in this recording (--max-episodes-per-instance)"
                )));
            }
        }
        if let Some(cap) = self.limits.open_per_instance {
            // an episode busy with a request counts as open
            let open = sessions
                .values()
                .filter(|c| match c.try_lock() {
                    Ok(s) => s.prepared.instance.id == instance && !s.ended(),
                    Err(_) => true,
                })
                .count();
            if open >= cap {
                return Err(FhirError::TooMany(format!(
                    "instance {instance} has {open} open episodes, its limit (--max-open-episodes-per-instance {cap}); finish or DELETE one first"
                )));
            }
        }
        Ok(())
    }

    /// The instance an episode opened without one gets: of those the budgets admit, the one
    /// with the fewest episodes in the recording (handed out ones included), first by id; in
    /// goal mode, of the instances that have a goal.
    fn least_run(&self, sessions: &BTreeMap<String, Arc<Mutex<Session>>>, mode: Mode) -> Result<String, FhirError> {
        self.instances
            .iter()
            .filter(|i| mode != Mode::Goal || i.goal.is_some())
            .filter(|i| self.admit(sessions, &i.id).is_ok())
            .min_by_key(|i| self.recorder.trials_of(&i.id))
            .map(|i| i.id.clone())
            .ok_or_else(|| match self.instances.first() {
                Some(i) => self
                    .admit(sessions, &i.id)
                    .err()
                    .unwrap_or_else(|| FhirError::TooMany("no instance admits another episode".into())),
                None => FhirError::NotFound("the suite has no instances".into()),
            })
    }

    /// Open an episode of `instance` (None: [`EpisodeApi::least_run`]) within the budgets:
    /// its sandbox is registered with the server and the episode is in the table.
    fn open(&self, instance: Option<&str>, mode: Mode, seed: u64) -> Result<(String, Arc<Mutex<Session>>), FhirError> {
        if let Some(i) = instance {
            // an unknown instance is a 404 before anything else, then one without a goal in goal mode
            super::run::present(&self.prepare(i)?, mode).map_err(|e| FhirError::BadRequest(e.to_string()))?;
        }
        let mut sessions = self
            .sessions
            .lock()
            .map_err(|_| FhirError::Conflict("episode table unavailable".into()))?;
        let instance = match instance {
            Some(i) => i.to_string(),
            None => self.least_run(&sessions, mode)?,
        };
        self.admit(&sessions, &instance)?;
        let p = super::run::present(&self.prepare(&instance)?, mode).map_err(|e| FhirError::BadRequest(e.to_string()))?;
        let id = format!("ep{}", self.counter.fetch_add(1, Ordering::Relaxed) + 1);
        let trial = self.recorder.next_trial(&instance);
        let s = Session::new(&id, p, trial, mode, seed);
        let owner = format!("episode {id} (end it with DELETE /episodes/{id})");
        self.app.insert_owned_sandbox(&id, s.sandbox.clone(), &owner)?;
        let cell = Arc::new(Mutex::new(s));
        sessions.insert(id.clone(), cell.clone());
        Ok((id, cell))
    }

    /// Drop an episode from the table, withdraw its token and release its sandbox.
    fn close(&self, id: &str) {
        if let Ok(mut m) = self.sessions.lock() {
            m.remove(id);
        }
        self.app.grants().revoke(id);
        self.app.release_sandbox(id);
    }

    /// The instance and mode of an `/mcp?instance=ID&mode=flat|guided|goal|outline` URL query; unknown
    /// parameters, modes and instances are refused.
    fn mcp_query(&self, query: &str) -> Result<(Option<String>, Mode), FhirError> {
        let (mut instance, mut mode) = (None, Mode::Flat);
        for (k, v) in url::form_urlencoded::parse(query.as_bytes()) {
            match k.as_ref() {
                "instance" => {
                    if !self.instances.iter().any(|i| i.id == v) {
                        return Err(FhirError::NotFound(format!(
                            "no scenario instance '{v}' (GET /scenarios lists them; /mcp without instance= takes the least-run one)"
                        )));
                    }
                    instance = Some(v.into_owned());
                }
                "mode" => {
                    mode = Mode::from_name(v.as_ref())
                        .ok_or_else(|| FhirError::BadRequest(format!("mode '{v}' is not flat, guided, goal or outline")))?;
                }
                other => {
                    return Err(FhirError::BadRequest(format!(
                        "unknown parameter '{other}' of /mcp (instance, mode)"
                    )));
                }
            }
        }
        Ok((instance, mode))
    }

    /// Refuse, as an HTTP error, an MCP session that could not open: a bad query, an
    /// instance over its budgets (checked again when the session opens).
    fn mcp_precheck(&self, query: &str, role: Option<&Role>) -> Result<(), FhirError> {
        if let Some(Role::Agent(id)) = role {
            return self.agent_mcp(id, query).map(|_| ());
        }
        let (instance, mode) = self.mcp_query(query)?;
        if let Some(i) = &instance {
            super::run::present(&self.prepare(i)?, mode).map_err(|e| FhirError::BadRequest(e.to_string()))?;
        }
        let sessions = self
            .sessions
            .lock()
            .map_err(|_| FhirError::Conflict("episode table unavailable".into()))?;
        match instance {
            Some(i) => self.admit(&sessions, &i),
            None => self.least_run(&sessions, mode).map(|_| ()),
        }
    }

    /// Open the episode of an MCP session from its URL query: recorded like the episode
    /// API's, dropped from the table when the session goes.
    fn open_mcp(self: &Arc<Self>, query: &str, role: Option<Role>) -> Result<super::mcp::Episode, FhirError> {
        if let Some(Role::Agent(id)) = &role {
            let cell = self.agent_mcp(id, query)?;
            let p = cell
                .lock()
                .map(|s| s.prepared.clone())
                .map_err(|_| FhirError::Conflict(format!("episode {id} is unavailable")))?;
            tracing::info!("MCP session serves episode {id} to its token holder");
            return Ok(super::mcp::Episode::borrowed(cell, &p, self.recorder.clone(), self.limits.feedback));
        }
        let (instance, mode) = self.mcp_query(query)?;
        let (id, cell) = self.open(instance.as_deref(), mode, self.recorder.cfg.seed)?;
        let p = cell
            .lock()
            .map(|s| s.prepared.clone())
            .map_err(|_| FhirError::Conflict(format!("episode {id} is unavailable")))?;
        let weak = Arc::downgrade(self);
        let on_close: super::mcp::OnClose = Box::new(move |id: &str| {
            if let Some(api) = weak.upgrade() {
                api.close(id);
            }
        });
        tracing::info!("MCP session opened episode {id} of {} ({mode:?})", p.instance.id);
        Ok(super::mcp::Episode::new(
            cell,
            &p,
            self.recorder.clone(),
            self.limits.feedback,
            Some(on_close),
        ))
    }

    /// The episode an MCP session opened with episode `id`'s token serves: its own, still
    /// open; a query may only repeat its instance and mode.
    fn agent_mcp(&self, id: &str, query: &str) -> Result<Arc<Mutex<Session>>, FhirError> {
        let (instance, mode) = self.mcp_query(query)?;
        let cell = self.session(id).ok_or_else(|| FhirError::NotFound(format!("no episode '{id}'")))?;
        let s = cell
            .lock()
            .map_err(|_| FhirError::Conflict(format!("episode {id} is unavailable")))?;
        if s.ended() {
            return Err(FhirError::Conflict(format!("episode {id} has already ended")));
        }
        let mode_given = query.split('&').any(|kv| kv.starts_with("mode="));
        if instance.as_ref().is_some_and(|i| *i != s.prepared.instance.id) || (mode_given && mode != s.mode) {
            return Err(FhirError::Forbidden(format!(
                "an episode token opens MCP sessions of its own episode ({id}: {}, {:?} mode) only",
                s.prepared.instance.id, s.mode
            )));
        }
        drop(s);
        Ok(cell)
    }

    /// Stop the MCP sessions' streams (at shutdown).
    pub fn stop_mcp(&self) {
        self.mcp_stop.cancel();
    }

    fn prepare(&self, id: &str) -> Result<Arc<Prepared>, FhirError> {
        if let Some(p) = lock(&self.prepared).get(id).cloned() {
            return Ok(p);
        }
        let inst = self
            .instances
            .iter()
            .find(|i| i.id == id)
            .ok_or_else(|| FhirError::NotFound(format!("no scenario instance '{id}' (GET /scenarios lists them)")))?;
        let p = self
            .ws
            .lock()
            .map_err(|_| FhirError::Conflict("workspace unavailable".into()))?
            .prepare(inst)
            .map_err(|e| FhirError::Unprocessable(e.into_iter().map(|m| format!("instance {id}: {m}")).collect()))?;
        let p = Arc::new(p);
        if let Ok(mut m) = self.prepared.lock() {
            m.insert(id.to_string(), p.clone());
        }
        Ok(p)
    }
}

/// The whole server with the episode API: the episode routes, the tool routes (tool calls to
/// an episode's sandbox go to the episode) and the FHIR server.
pub fn app(state: Arc<AppState>, registry: Arc<emrgym_tools::Registry>, api: Option<Arc<EpisodeApi>>) -> Router {
    let hook = api.as_ref().map(|a| a.tool_hook());
    let app = emrgym_tools::http::routes_with(state.clone(), registry, hook);
    let app = match api {
        Some(api) => routes(api.clone()).merge(mcp_routes(api)).merge(app),
        None => app,
    };
    // one guard around everything: auth, body limit and timeout, OperationOutcome errors
    emrgym_fhir::server::harden(app, state)
}

/// Run an episode handler's work (grading, planning, tool calls) off the async workers,
/// under the server's per-request deadline and work limit.
async fn blocking(api: Arc<EpisodeApi>, f: impl FnOnce(&EpisodeApi) -> Response + Send + 'static) -> Response {
    let app = api.app.clone();
    app.offload(move || f(&api)).await
}

/// `/mcp`: MCP over streamable HTTP (rmcp), one episode per MCP session. A session opens
/// with `initialize` posted to `/mcp?instance=ID&mode=flat|guided` (no instance: the
/// least-run one); a bad query or an exhausted budget is refused before the protocol starts,
/// as an OperationOutcome. The server's guard has already checked the caller and the Host
/// and Origin (rmcp's own Host check is off so `--allow-host` governs): the operator opens
/// a new episode per session; the holder of an episode token, sessions of that episode only.
pub fn mcp_routes(api: Arc<EpisodeApi>) -> Router {
    use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
    use rmcp::transport::{StreamableHttpServerConfig, StreamableHttpService};
    let config = StreamableHttpServerConfig::default()
        .disable_allowed_hosts()
        .with_cancellation_token(api.mcp_stop.child_token());
    // a session lives while its client sends requests; one gone quiet is closed (and its
    // episode recorded as abandoned) after --episode-idle-timeout-s, else never: a slow
    // model must not lose its episode
    let mut sessions = LocalSessionManager::default();
    sessions.session_config.keep_alive = api.limits.idle_timeout;
    let opener = api.clone();
    let service = StreamableHttpService::new(
        move || {
            let api = opener.clone();
            let open: super::mcp::Opener = Arc::new(move |q: &str, role: Option<Role>| api.open_mcp(q, role).map_err(|e| e.to_string()));
            Ok(super::mcp::Server::lazy(open))
        },
        Arc::new(sessions),
        config,
    );
    let service = Arc::new(service);
    Router::new().route(
        "/mcp",
        axum::routing::any(move |req: axum::extract::Request| {
            let service = service.clone();
            let api = api.clone();
            async move {
                let opening = req.method() == axum::http::Method::POST && !req.headers().contains_key("mcp-session-id");
                if opening {
                    let query = req.uri().query().unwrap_or_default().to_string();
                    let role = req.extensions().get::<Role>().cloned();
                    let check = {
                        let api = api.clone();
                        tokio::task::spawn_blocking(move || api.mcp_precheck(&query, role.as_ref())).await
                    };
                    match check {
                        Ok(Ok(())) => {}
                        Ok(Err(e)) => return error_response(&e),
                        Err(e) => return error_response(&FhirError::Internal(format!("checking the session failed: {e}"))),
                    }
                }
                service.handle(req).await.map(axum::body::Body::new)
            }
        }),
    )
}

/// The episode routes.
pub fn routes(api: Arc<EpisodeApi>) -> Router {
    Router::new()
        .route("/scenarios", get(scenarios))
        .route("/episodes", get(list).post(create))
        .route("/episodes/{id}", get(show).delete(remove))
        .route("/episodes/{id}/guidance", get(guidance))
        .route("/episodes/{id}/tools/{name}", post(tool))
        .route("/episodes/{id}/finish", post(finish))
        .with_state(api)
}

/// The caller's role, as the server's guard resolved it (no guard: the least privilege).
fn role_of(r: Option<Extension<Role>>) -> Role {
    r.map_or_else(|| Role::Agent(String::new()), |Extension(r)| r)
}

fn body_json(bytes: &Bytes) -> Result<Value, Response> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(json!({}));
    }
    serde_json::from_slice(bytes).map_err(|e| error_response(&FhirError::BadRequest(format!("body is not valid JSON: {e}"))))
}

async fn scenarios(State(api): State<Arc<EpisodeApi>>, role: Option<Extension<Role>>) -> Response {
    // an agent sees its own instance only
    let own = match role_of(role) {
        Role::Operator => None,
        Role::Agent(id) => Some(api.session(&id).map(|c| lock(&c).prepared.instance.id.clone()).unwrap_or_default()),
    };
    let items: Vec<Value> = api
        .instances
        .iter()
        .filter(|i| own.as_ref().is_none_or(|o| *o == i.id))
        .map(|i| {
            json!({"id": i.id, "family": i.family, "cohort": i.cohort, "now": i.now, "tools": i.tools, "max_steps": i.max_steps,
                   "goal": i.goal.is_some()})
        })
        .collect();
    json_response(200, &json!({"count": items.len(), "instances": items}))
}

fn episode_view(api: &EpisodeApi, s: &Session, host: &str, role: &Role) -> Value {
    let p = &s.prepared;
    let mut v = json!({
        "id": s.id,
        "instance": p.instance.id,
        "family": p.instance.family,
        "trial": s.trial,
        "mode": s.mode,
        "instruction": p.instance.instruction,
        "context": p.instance.context,
        "prompt": super::episode::task_prompt(p, &format!("{host}/sandboxes/{}/fhir", s.id)),
        "now": p.instance.now,
        "fhir_base": format!("{host}/sandboxes/{}/fhir", s.id),
        "tool_url": format!("{host}/episodes/{}/tools/{{name}}", s.id),
        "finish_url": format!("{host}/episodes/{}/finish", s.id),
        "max_steps": s.limit(),
        "steps": s.steps.len(),
        "status": if s.ended() { "ended" } else { "active" },
        "tools": p.registry.openai_tools(),
    });
    if s.mode == Mode::Guided {
        v["guidance_url"] = json!(format!("{host}/episodes/{}/guidance", s.id));
    }
    if let Some(r) = &s.result {
        v["result"] = match role {
            Role::Operator => serde_json::to_value(r).unwrap_or(Value::Null),
            Role::Agent(_) => api.limits.feedback.view(&s.id, r),
        };
    }
    v
}

async fn create(State(api): State<Arc<EpisodeApi>>, headers: HeaderMap, bytes: Bytes) -> Response {
    // operator only: the guard refuses episode tokens here
    blocking(api, move |api| create_now(api, &headers, &bytes)).await
}

/// `POST /episodes` body.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateEpisode {
    /// A scenario instance id (required).
    instance: Option<String>,
    /// `flat` (the default), `guided` or `goal`.
    #[serde(default)]
    mode: Mode,
    /// The server's seed, if given (an episode cannot choose another).
    seed: Option<u64>,
}

fn create_now(api: &EpisodeApi, headers: &HeaderMap, bytes: &Bytes) -> Response {
    let body: CreateEpisode = match json_body(bytes, "episode request", "instance, mode, seed") {
        Ok(b) => b,
        Err(e) => return error_response(&e),
    };
    let Some(instance) = body.instance.as_deref() else {
        return error_response(&FhirError::BadRequest("'instance' (a scenario instance id) is required".into()));
    };
    let seed = match body.seed {
        None => api.recorder.cfg.seed,
        Some(s) if s == api.recorder.cfg.seed => s,
        Some(s) => {
            return error_response(&FhirError::BadRequest(format!(
                "seed {s}: this server records with seed {} (start it with --seed {s})",
                api.recorder.cfg.seed
            )));
        }
    };
    let (id, cell) = match api.open(Some(instance), body.mode, seed) {
        Ok(x) => x,
        Err(e) => return error_response(&e),
    };
    let token = match api.app.grants().grant(&id) {
        Ok(t) => t,
        Err(e) => {
            api.close(&id);
            return error_response(&e);
        }
    };
    let Ok(s) = cell.lock() else {
        return error_response(&FhirError::Conflict(format!("episode {id} is unavailable")));
    };
    let mut view = episode_view(api, &s, &host_base(headers, api.app.config()), &Role::Operator);
    // the episode's capability: shown once, here, and never recorded
    view["token"] = json!(token);
    json_response(201, &view)
}

async fn list(State(api): State<Arc<EpisodeApi>>) -> Response {
    // operator only (the guard)
    let Ok(sessions) = api.sessions.lock() else {
        return error_response(&FhirError::Conflict("episode table unavailable".into()));
    };
    let cells: Vec<Arc<Mutex<Session>>> = sessions.values().cloned().collect();
    drop(sessions);
    let items: Vec<Value> = cells
        .iter()
        .map(|c| lock(c))
        .map(|s| {
            json!({"id": s.id, "instance": s.prepared.instance.id, "trial": s.trial, "mode": s.mode,
            "steps": s.steps.len(), "status": if s.ended() { "ended" } else { "active" }})
        })
        .collect();
    json_response(
        200,
        &json!({"count": items.len(), "episodes": items, "run_dir": api.run_dir().display().to_string()}),
    )
}

fn with_session<T>(api: &EpisodeApi, id: &str, f: impl FnOnce(&mut Session) -> Result<T, Response>) -> Result<T, Response> {
    let cell = api
        .session(id)
        .ok_or_else(|| error_response(&FhirError::NotFound(format!("no episode '{id}'"))))?;
    let mut s = cell.lock().map_err(|_| {
        error_response(&FhirError::Conflict(format!(
            "episode {id} is unavailable after an earlier failure"
        )))
    })?;
    f(&mut s)
}

async fn show(State(api): State<Arc<EpisodeApi>>, role: Option<Extension<Role>>, headers: HeaderMap, Path(id): Path<String>) -> Response {
    let role = role_of(role);
    let host = host_base(&headers, api.app.config());
    match with_session(&api, &id, |s| Ok(episode_view(&api, s, &host, &role))) {
        Ok(v) => json_response(200, &v),
        Err(r) => r,
    }
}

/// End the episode (once), record it, and say what the caller may know: the operator the
/// whole result, an agent that it ended and what the feedback policy allows.
fn ended_view(api: &EpisodeApi, s: &mut Session, role: &Role) -> Result<Value, Response> {
    let line = s
        .end(&api.recorder)
        .map_err(|e| error_response(&FhirError::Conflict(format!("recording the episode failed: {e:#}"))))?;
    Ok(match role {
        Role::Operator => json!({
            "id": s.id,
            "ended": true,
            "instance": line.instance,
            "trial": line.trial,
            "end": line.end,
            "success": line.success,
            "progress": line.progress,
            "grade": line.grade,
            "run_dir": api.run_dir().display().to_string(),
        }),
        Role::Agent(_) => api.limits.feedback.view(&s.id, &line),
    })
}

async fn remove(State(api): State<Arc<EpisodeApi>>, Path(id): Path<String>) -> Response {
    // operator only (the guard)
    blocking(api, move |api| {
        let r = with_session(api, &id, |s| ended_view(api, s, &Role::Operator));
        api.close(&id);
        match r {
            Ok(v) => json_response(200, &v),
            Err(r) => r,
        }
    })
    .await
}

async fn guidance(State(api): State<Arc<EpisodeApi>>, Path(id): Path<String>) -> Response {
    blocking(api, move |api| guidance_now(api, &id)).await
}

fn guidance_now(api: &EpisodeApi, id: &str) -> Response {
    let r = with_session(api, id, |s| {
        if s.mode != Mode::Guided {
            return Err(error_response(&FhirError::Conflict(format!(
                "episode {id} is in flat mode; start it with \"mode\": \"guided\" for guidance"
            ))));
        }
        let g = s
            .guidance()
            .ok_or_else(|| error_response(&FhirError::Conflict("sandbox unavailable".into())))?;
        // instructions only: node paths could name a branch the agent has not earned
        Ok(json!({
            "next": g.next.iter().map(|x| x.instruction.clone()).collect::<Vec<_>>(),
            "waiting_for_data": !g.waiting.is_empty(),
            "complete": g.complete,
            "ended": s.ended(),
        }))
    });
    match r {
        Ok(v) => json_response(200, &v),
        Err(r) => r,
    }
}

async fn tool(
    State(api): State<Arc<EpisodeApi>>,
    role: Option<Extension<Role>>,
    Path((id, name)): Path<(String, String)>,
    bytes: Bytes,
) -> Response {
    let role = role_of(role);
    let args = match body_json(&bytes) {
        Ok(b) => b,
        Err(r) => return r,
    };
    blocking(api, move |api| {
        let r = with_session(api, &id, |s| {
            let mut obs = s.tool(&name, &args);
            if s.finished()
                && let Some(o) = obs.content.as_object_mut()
            {
                o.insert("episode".into(), ended_view(api, s, &role)?);
            }
            Ok(obs)
        });
        match r {
            Ok(obs) => to_response(&obs),
            Err(r) => r,
        }
    })
    .await
}

async fn finish(State(api): State<Arc<EpisodeApi>>, role: Option<Extension<Role>>, Path(id): Path<String>, bytes: Bytes) -> Response {
    let role = role_of(role);
    let args = match body_json(&bytes) {
        Ok(b) => b,
        Err(r) => return r,
    };
    blocking(api, move |api| {
        let r = with_session(api, &id, |s| {
            if s.ended() {
                return Err(error_response(&FhirError::Conflict(format!("episode {id} has already ended"))));
            }
            let obs = s.tool("finish", &args);
            if !obs.ok {
                return Err(to_response(&obs));
            }
            ended_view(api, s, &role)
        });
        match r {
            Ok(v) => json_response(200, &v),
            Err(r) => r,
        }
    })
    .await
}
