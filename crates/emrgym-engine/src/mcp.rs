//! `emrgym mcp`: one episode served over the Model Context Protocol on stdio (the official
//! Rust SDK, rmcp), so any MCP client can be benchmarked. The tools are the instance's
//! catalogue (FHIR search/read/create/update, calculators, `finish`) bound to the episode's
//! sandbox; the task is the server's instructions, the prompt `task` and the resource
//! `emrgym://episode/instruction` (in goal mode the family's goal instead of its instruction,
//! in outline mode with the outline of its task network after the context);
//! in guided mode every tool result carries the steps that
//! can be done now and `emrgym://episode/guidance` gives them too. The episode is graded and
//! recorded (the run-directory format of `emrgym run`, agent `external`) when `finish`
//! succeeds or when the client disconnects. Stdout carries only the protocol; logs go to
//! stderr.

use super::episode::{BASE, Prepared, Workspace, guidance_text, task_prompt};
use super::run::Mode;
use super::rundir::{ResultLine, read_results};
use super::session::{Feedback, Recorder, Session, instance_ids};
use anyhow::{Context, bail};
use emrgym_core::sync::lock;
use emrgym_fhir::access::Role;
use emrgym_scenario::trajectory::EndReason;
use emrgym_tools::Observation;
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, GetPromptRequestParams, GetPromptResponse, GetPromptResult, Implementation,
    InitializeRequestParams, InitializeResult, ListPromptsResult, ListResourcesResult, ListToolsResult, PaginatedRequestParams,
    ProtocolVersion, ReadResourceRequestParams, ReadResourceResponse, ReadResourceResult, ServerCapabilities, ServerConfig,
};
use rmcp::service::RequestContext;
use rmcp::{ErrorData as McpError, RoleServer, ServerHandler};
use serde_json::{Value, json};
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};

/// The URI of the task resource.
pub const INSTRUCTION_URI: &str = "emrgym://episode/instruction";
/// The URI of the guidance resource (guided mode).
pub const GUIDANCE_URI: &str = "emrgym://episode/guidance";

/// What runs, with the episode's id, when a session that owns its episode has gone.
pub type OnClose = Box<dyn FnOnce(&str) + Send + Sync>;

/// One episode behind an MCP session (the stdio server's one, or one `/mcp` session of
/// `emrgym serve`).
pub struct Episode {
    /// The episode's id (its session's).
    id: String,
    cell: Arc<Mutex<Session>>,
    recorder: Arc<Recorder>,
    tools: Vec<Value>,
    prompt: String,
    feedback: Feedback,
    /// Run with the episode's id once the session has gone and the episode is recorded
    /// (`emrgym serve`: drop it from the episode table and release its sandbox). None: the
    /// session does not own the episode (one the operator opened), which outlives it.
    on_close: Option<OnClose>,
    owned: bool,
}

impl Episode {
    /// The episode of `cell` (a session of instance `p`), recorded by `recorder`, owned by
    /// the session (ended as `abandoned` if the session goes first, then `on_close`).
    /// In goal and outline mode the session's instance is shown as the mode presents it, its
    /// goal or its outline ([`super::run::present`]; the callers have done so already, and
    /// presenting again changes nothing), so the prompt and the recorded header hold the text
    /// the agent sees; an instance that cannot be presented is served in flat mode, with an
    /// error in the log (the episode API and `emrgym mcp` refuse it before this).
    pub fn new(cell: Arc<Mutex<Session>>, p: &Prepared, recorder: Arc<Recorder>, feedback: Feedback, on_close: Option<OnClose>) -> Episode {
        let (id, shown) = {
            let mut s = lock(&cell);
            if matches!(s.mode, Mode::Goal | Mode::Outline) {
                match super::run::present(&s.prepared, s.mode) {
                    Ok(g) => s.prepared = g,
                    Err(e) => {
                        // what the agent reads, and the record, must agree: it is served flat
                        tracing::error!("episode {}: {e}; serving it in flat mode", s.id);
                        s.mode = Mode::Flat;
                    }
                }
            }
            (
                s.id.clone(),
                matches!(s.mode, Mode::Goal | Mode::Outline).then(|| s.prepared.clone()),
            )
        };
        let p = shown.as_deref().unwrap_or(p);
        Episode {
            id,
            cell,
            recorder,
            tools: mcp_tools(p),
            prompt: task_prompt(p, BASE),
            feedback,
            on_close,
            owned: true,
        }
    }

    /// An episode the session serves but does not own: one the operator opened with
    /// `POST /episodes`, served to the holder of its token; it stays open when the session
    /// goes.
    pub fn borrowed(cell: Arc<Mutex<Session>>, p: &Prepared, recorder: Arc<Recorder>, feedback: Feedback) -> Episode {
        let mut e = Episode::new(cell, p, recorder, feedback, None);
        e.owned = false;
        e
    }

    fn guided(&self) -> bool {
        lock(&self.cell).mode == Mode::Guided
    }

    fn guidance(&self) -> Option<String> {
        let s = lock(&self.cell);
        if s.mode != Mode::Guided || s.ended() {
            return None;
        }
        s.guidance().and_then(|g| guidance_text(&g))
    }

    /// The run directory this episode is recorded in.
    pub fn recorder(&self) -> &Recorder {
        &self.recorder
    }

    /// Grade and record the episode once (`finished` or `stopped`).
    pub fn end(&self) -> anyhow::Result<ResultLine> {
        let mut s = self.cell.lock().map_err(|_| anyhow::anyhow!("episode unavailable"))?;
        s.end(&self.recorder)
    }

    /// Run a tool; the text the client reads, and whether it failed.
    fn call(&self, name: &str, args: &Value) -> (Observation, Option<Value>) {
        let (obs, finished) = {
            let Ok(mut s) = self.cell.lock() else {
                return (Observation::fail(name, 500, "episode unavailable"), None);
            };
            let obs = s.tool(name, args);
            (obs, s.finished())
        };
        if !finished {
            return (obs, None);
        }
        let ended = match self.end() {
            Ok(l) => {
                // what the feedback policy allows: never the grade, nor where it is written
                let id = lock(&self.cell).id.clone();
                self.feedback.view(&id, &l)
            }
            Err(e) => json!({"ended": true, "error": format!("recording the episode failed: {e:#}")}),
        };
        (obs, Some(ended))
    }
}

impl Drop for Episode {
    /// The session has gone (closed by the client, expired, or the server stopping): an
    /// episode still open is recorded as `abandoned` (the stdio server ends its episode as
    /// `stopped` before this).
    fn drop(&mut self) {
        if !self.owned {
            return;
        }
        let cell = self.cell.clone();
        let recorder = self.recorder.clone();
        let on_close = self.on_close.take();
        let work = move || {
            let id = match cell.lock() {
                Ok(mut s) => {
                    if !s.ended() {
                        match s.end_with(&recorder, Some(EndReason::Abandoned)) {
                            Ok(_) => tracing::info!("MCP session of episode {} closed unfinished: recorded as abandoned", s.id),
                            Err(e) => tracing::error!("episode {}: recording it as abandoned failed: {e:#}", s.id),
                        }
                    }
                    s.id.clone()
                }
                Err(_) => return,
            };
            if let Some(f) = on_close {
                f(&id);
            }
        };
        // grading is CPU-bound: off the async workers when there are some
        match tokio::runtime::Handle::try_current() {
            Ok(h) => {
                h.spawn_blocking(work);
            }
            Err(_) => work(),
        }
    }
}

/// Opens the episode of an MCP session over HTTP at `initialize`, from the request's URL
/// query (`instance`, `mode`) and the caller's role (the guard's).
pub type Opener = Arc<dyn Fn(&str, Option<Role>) -> Result<Episode, String> + Send + Sync>;

struct Slot {
    episode: OnceLock<Arc<Episode>>,
    opener: Option<Opener>,
}

/// The rmcp handler of one episode (cheap to clone: the episode is shared). The stdio
/// server builds it with its episode; `/mcp` builds one per session, empty, and opens the
/// episode when the client initialises the session.
#[derive(Clone)]
pub struct Server(Arc<Slot>);

impl Server {
    /// The handler of an open episode (stdio).
    pub fn of(episode: Arc<Episode>) -> Server {
        let slot = Slot {
            episode: OnceLock::new(),
            opener: None,
        };
        let _ = slot.episode.set(episode);
        Server(Arc::new(slot))
    }

    /// A handler whose episode `open` opens at `initialize` (one `/mcp` session).
    pub fn lazy(open: Opener) -> Server {
        Server(Arc::new(Slot {
            episode: OnceLock::new(),
            opener: Some(open),
        }))
    }

    /// The session's episode, for a request the guard let through: a request with an
    /// episode token must be that episode's (a leaked session id reaches nothing more).
    fn ep(&self, context: &RequestContext<RoleServer>) -> Result<&Arc<Episode>, McpError> {
        let ep = self
            .0
            .episode
            .get()
            .ok_or_else(|| McpError::invalid_request("the session has no episode: initialize it first", None))?;
        let role = context
            .extensions
            .get::<axum::http::request::Parts>()
            .and_then(|p| p.extensions.get::<Role>());
        if let Some(Role::Agent(id)) = role
            && *id != ep.id
        {
            return Err(McpError::invalid_request(
                format!("this MCP session is another episode's; the token of {id} opens sessions of {id} only"),
                None,
            ));
        }
        Ok(ep)
    }
}

impl ServerHandler for Server {
    fn get_info(&self) -> ServerConfig {
        let mut caps = ServerCapabilities::default();
        caps.tools = Some(Default::default());
        caps.prompts = Some(Default::default());
        caps.resources = Some(Default::default());
        let info = InitializeResult::new(caps).with_server_info(Implementation::new("emrgym", env!("CARGO_PKG_VERSION")));
        match self.0.episode.get() {
            Some(ep) => info.with_instructions(ep.prompt.clone()),
            None => info,
        }
    }

    fn supported_protocol_versions(&self) -> std::borrow::Cow<'static, [ProtocolVersion]> {
        // over HTTP a session is an episode: only the versions that have sessions (the
        // `initialize` handshake), not the stateless 2026-07-28
        if self.0.opener.is_some() {
            std::borrow::Cow::Borrowed(ProtocolVersion::known_up_to(&ProtocolVersion::V_2025_11_25))
        } else {
            std::borrow::Cow::Borrowed(ProtocolVersion::KNOWN_VERSIONS)
        }
    }

    async fn initialize(
        &self,
        request: InitializeRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<InitializeResult, McpError> {
        if self.0.episode.get().is_none()
            && let Some(open) = self.0.opener.clone()
        {
            let parts = context.extensions.get::<axum::http::request::Parts>();
            let query = parts.and_then(|p| p.uri.query()).unwrap_or_default().to_string();
            let role = parts.and_then(|p| p.extensions.get::<Role>().cloned());
            let ep = tokio::task::spawn_blocking(move || open(&query, role))
                .await
                .map_err(|e| McpError::internal_error(format!("opening the episode failed: {e}"), None))?
                .map_err(|e| McpError::invalid_params(e, None))?;
            let _ = self.0.episode.set(Arc::new(ep));
        }
        context.peer.set_peer_info(request.clone());
        self.negotiate_initialize(&request)
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, McpError> {
        serde_json::from_value(json!({"tools": self.ep(&context)?.tools})).map_err(|e| McpError::internal_error(e.to_string(), None))
    }

    async fn call_tool(&self, request: CallToolRequestParams, context: RequestContext<RoleServer>) -> Result<CallToolResponse, McpError> {
        let args = Value::Object(request.arguments.unwrap_or_default());
        let ep = self.ep(&context)?.clone();
        let name = request.name.to_string();
        // tool calls are synchronous (the sandbox, the calculators); keep them off the reactor
        let (obs, ended) = tokio::task::spawn_blocking(move || ep.call(&name, &args))
            .await
            .map_err(|e| McpError::internal_error(format!("tool call failed: {e}"), None))?;
        let mut result = if obs.ok {
            CallToolResult::structured(obs.content.clone())
        } else {
            CallToolResult::structured_error(json!({"status": obs.status, "error": obs.content}))
        };
        if let Some(e) = ended {
            result.content.push(rmcp::model::ContentBlock::text(format!("Episode ended: {e}")));
        } else if let Some(g) = self.ep(&context)?.guidance() {
            result.content.push(rmcp::model::ContentBlock::text(g));
        }
        Ok(result.into())
    }

    async fn list_prompts(
        &self,
        _request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListPromptsResult, McpError> {
        self.ep(&context)?;
        serde_json::from_value(json!({"prompts": [{
            "name": "task",
            "title": "The episode's task",
            "description": "The clinical task of this episode, with the rules every EMRGym agent is given"
        }]}))
        .map_err(|e| McpError::internal_error(e.to_string(), None))
    }

    async fn get_prompt(
        &self,
        request: GetPromptRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<GetPromptResponse, McpError> {
        if request.name != "task" {
            return Err(McpError::invalid_params(
                format!("no prompt '{}' (there is: task)", request.name),
                None,
            ));
        }
        let r: GetPromptResult = serde_json::from_value(json!({
            "description": "The episode's task",
            "messages": [{"role": "user", "content": {"type": "text", "text": self.ep(&context)?.prompt}}]
        }))
        .map_err(|e| McpError::internal_error(e.to_string(), None))?;
        Ok(r.into())
    }

    async fn list_resources(
        &self,
        _request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListResourcesResult, McpError> {
        let mut items = vec![json!({"uri": INSTRUCTION_URI, "name": "instruction", "mimeType": "text/plain",
            "description": "The episode's task"})];
        if self.ep(&context)?.guided() {
            items.push(json!({"uri": GUIDANCE_URI, "name": "guidance", "mimeType": "text/plain",
                "description": "The steps that can be done now"}));
        }
        serde_json::from_value(json!({ "resources": items })).map_err(|e| McpError::internal_error(e.to_string(), None))
    }

    async fn read_resource(
        &self,
        request: ReadResourceRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<ReadResourceResponse, McpError> {
        let ep = self.ep(&context)?;
        let text = match request.uri.as_str() {
            INSTRUCTION_URI => ep.prompt.clone(),
            GUIDANCE_URI if ep.guided() => ep.guidance().unwrap_or_else(|| "No step is released now.".into()),
            other => return Err(McpError::resource_not_found(format!("no resource '{other}'"), None)),
        };
        let r: ReadResourceResult = serde_json::from_value(json!({
            "contents": [{"uri": request.uri, "mimeType": "text/plain", "text": text}]
        }))
        .map_err(|e| McpError::internal_error(e.to_string(), None))?;
        Ok(r.into())
    }
}

/// The instance `emrgym mcp` serves: the one named, or the one with the fewest recorded
/// episodes (first by id).
pub fn pick(ws: &Workspace, scenario: Option<&str>, record: &Path) -> anyhow::Result<String> {
    let ids = instance_ids(ws)?;
    if let Some(s) = scenario {
        if ids.iter().any(|i| i == s) {
            return Ok(s.to_string());
        }
        let stem = s.trim_end_matches(|c: char| c.is_ascii_digit() || c == '-');
        let near: Vec<&String> = ids.iter().filter(|i| !stem.is_empty() && i.contains(stem)).take(5).collect();
        bail!(
            "--scenario {s}: no such instance in {}{}",
            ws.suite.dir.display(),
            if near.is_empty() {
                " (emrgym scenarios list shows them)".to_string()
            } else {
                format!(
                    " (did you mean {}?)",
                    near.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
                )
            }
        );
    }
    // a recording that cannot be read is an error: counting it as empty would hand out
    // trials that are already there
    let done = read_results(&record.join("results.jsonl"))?;
    ids.into_iter()
        .min_by_key(|id| done.iter().filter(|l| &l.instance == id).count())
        .context("the suite has no instances")
}

/// The MCP tool list of an instance (from its OpenAI function rendering).
pub fn mcp_tools(p: &Prepared) -> Vec<Value> {
    p.registry
        .openai_tools()
        .as_array()
        .into_iter()
        .flatten()
        .map(|t| {
            let f = &t["function"];
            json!({"name": f["name"], "description": f["description"], "inputSchema": f["parameters"]})
        })
        .collect()
}
