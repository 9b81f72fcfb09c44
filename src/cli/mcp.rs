//! `emrgym mcp`: one episode served over the Model Context Protocol on stdio (the official
//! Rust SDK, rmcp), so any MCP client can be benchmarked. The tools are the instance's
//! catalogue (FHIR search/read/create/update, calculators, `finish`) bound to the episode's
//! sandbox; the task is the server's instructions, the prompt `task` and the resource
//! `emrgym://episode/instruction`; in guided mode every tool result carries the steps that
//! can be done now and `emrgym://episode/guidance` gives them too. The episode is graded and
//! recorded (the run-directory format of `emrgym run`, agent `external`) when `finish`
//! succeeds or when the client disconnects. Stdout carries only the protocol; logs go to
//! stderr.

use super::episode::{BASE, Prepared, Workspace, guidance_text, task_prompt};
use super::run::{Mode, ResultLine, read_results};
use super::session::{Feedback, Recorder, Session, instance_ids};
use crate::tools::Observation;
use anyhow::{Context, bail};
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, GetPromptRequestParams, GetPromptResponse, GetPromptResult, Implementation,
    InitializeResult, ListPromptsResult, ListResourcesResult, ListToolsResult, PaginatedRequestParams, ReadResourceRequestParams,
    ReadResourceResponse, ReadResourceResult, ServerCapabilities, ServerConfig,
};
use rmcp::service::RequestContext;
use rmcp::{ErrorData as McpError, RoleServer, ServerHandler, ServiceExt};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// The URI of the task resource.
pub const INSTRUCTION_URI: &str = "emrgym://episode/instruction";
/// The URI of the guidance resource (guided mode).
pub const GUIDANCE_URI: &str = "emrgym://episode/guidance";

/// Flags of `emrgym mcp`.
#[derive(Debug, clap::Args)]
pub struct McpArgs {
    /// The scenario instance to serve (default: the instance with the fewest episodes
    /// recorded in the recording directory, first by id, so repeated launches go round
    /// the suite).
    #[arg(long)]
    pub scenario: Option<String>,
    /// Flat or guided.
    #[arg(long, value_enum, default_value = "flat")]
    pub mode: Mode,
    /// The scenario directory.
    #[arg(long, default_value = "scenarios")]
    pub suite: PathBuf,
    /// The run directory ended episodes are recorded in.
    #[arg(long, default_value = "runs/mcp")]
    pub record: PathBuf,
    /// Run seed (sandbox ids, as `emrgym run --seed`).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// What the client learns when the episode ends: none (that it ended), success, or
    /// progress. Never expected values; the grade goes to the recording.
    #[arg(long, value_enum, default_value = "none")]
    pub agent_feedback: Feedback,
}

/// One episode behind the MCP server.
struct Episode {
    session: Mutex<Session>,
    recorder: Recorder,
    tools: Vec<Value>,
    prompt: String,
    feedback: Feedback,
}

impl Episode {
    fn guided(&self) -> bool {
        self.session.lock().map(|s| s.mode == Mode::Guided).unwrap_or(false)
    }

    fn guidance(&self) -> Option<String> {
        let s = self.session.lock().ok()?;
        if s.mode != Mode::Guided || s.ended() {
            return None;
        }
        s.guidance().and_then(|g| guidance_text(&g))
    }

    /// Grade and record the episode once (`finished` or `stopped`).
    fn end(&self) -> anyhow::Result<ResultLine> {
        let mut s = self.session.lock().map_err(|_| anyhow::anyhow!("episode unavailable"))?;
        s.end(&self.recorder)
    }

    /// Run a tool; the text the client reads, and whether it failed.
    fn call(&self, name: &str, args: &Value) -> (Observation, Option<Value>) {
        let (obs, finished) = {
            let Ok(mut s) = self.session.lock() else {
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
                let id = self.session.lock().map(|s| s.id.clone()).unwrap_or_default();
                self.feedback.view(&id, &l)
            }
            Err(e) => json!({"ended": true, "error": format!("recording the episode failed: {e:#}")}),
        };
        (obs, Some(ended))
    }
}

/// The rmcp handler (cheap to clone: the episode is shared).
#[derive(Clone)]
struct Server(Arc<Episode>);

impl ServerHandler for Server {
    fn get_info(&self) -> ServerConfig {
        let mut caps = ServerCapabilities::default();
        caps.tools = Some(Default::default());
        caps.prompts = Some(Default::default());
        caps.resources = Some(Default::default());
        InitializeResult::new(caps)
            .with_server_info(Implementation::new("emrgym", env!("CARGO_PKG_VERSION")))
            .with_instructions(self.0.prompt.clone())
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, McpError> {
        serde_json::from_value(json!({"tools": self.0.tools})).map_err(|e| McpError::internal_error(e.to_string(), None))
    }

    async fn call_tool(&self, request: CallToolRequestParams, _context: RequestContext<RoleServer>) -> Result<CallToolResponse, McpError> {
        let args = Value::Object(request.arguments.unwrap_or_default());
        let ep = self.0.clone();
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
        } else if let Some(g) = self.0.guidance() {
            result.content.push(rmcp::model::ContentBlock::text(g));
        }
        Ok(result.into())
    }

    async fn list_prompts(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListPromptsResult, McpError> {
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
        _context: RequestContext<RoleServer>,
    ) -> Result<GetPromptResponse, McpError> {
        if request.name != "task" {
            return Err(McpError::invalid_params(
                format!("no prompt '{}' (there is: task)", request.name),
                None,
            ));
        }
        let r: GetPromptResult = serde_json::from_value(json!({
            "description": "The episode's task",
            "messages": [{"role": "user", "content": {"type": "text", "text": self.0.prompt}}]
        }))
        .map_err(|e| McpError::internal_error(e.to_string(), None))?;
        Ok(r.into())
    }

    async fn list_resources(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListResourcesResult, McpError> {
        let mut items = vec![json!({"uri": INSTRUCTION_URI, "name": "instruction", "mimeType": "text/plain",
            "description": "The episode's task"})];
        if self.0.guided() {
            items.push(json!({"uri": GUIDANCE_URI, "name": "guidance", "mimeType": "text/plain",
                "description": "The steps that can be done now"}));
        }
        serde_json::from_value(json!({ "resources": items })).map_err(|e| McpError::internal_error(e.to_string(), None))
    }

    async fn read_resource(
        &self,
        request: ReadResourceRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<ReadResourceResponse, McpError> {
        let text = match request.uri.as_str() {
            INSTRUCTION_URI => self.0.prompt.clone(),
            GUIDANCE_URI if self.0.guided() => self.0.guidance().unwrap_or_else(|| "No step is released now.".into()),
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
fn pick(ws: &Workspace, scenario: Option<&str>, record: &Path) -> anyhow::Result<String> {
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
    let done = read_results(&record.join("results.jsonl")).unwrap_or_default();
    ids.into_iter()
        .min_by_key(|id| done.iter().filter(|l| &l.instance == id).count())
        .context("the suite has no instances")
}

/// The MCP tool list of an instance (from its OpenAI function rendering).
fn mcp_tools(p: &Prepared) -> Vec<Value> {
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

/// Run `emrgym mcp`.
pub fn run(a: McpArgs) -> anyhow::Result<()> {
    let mut ws = Workspace::open(&a.suite).map_err(|e| anyhow::anyhow!("--suite {}: {}", a.suite.display(), e.join("\n")))?;
    let id = pick(&ws, a.scenario.as_deref(), &a.record)?;
    let inst = ws
        .suite
        .instances()
        .map_err(anyhow::Error::msg)?
        .into_iter()
        .find(|i| i.id == id)
        .context("instance vanished")?;
    let p = Arc::new(ws.prepare(&inst).map_err(|e| anyhow::anyhow!("instance {id}: {}", e.join("\n")))?);
    let recorder =
        Recorder::open(&a.record, &a.suite, a.seed, &ws)?.with_access(json!({"interface": "mcp", "agent_feedback": a.agent_feedback}))?;
    let trial = recorder.next_trial(&id);
    let episode = Arc::new(Episode {
        session: Mutex::new(Session::new(&format!("mcp-{id}-{trial}"), p.clone(), trial, a.mode, a.seed)),
        recorder,
        tools: mcp_tools(&p),
        prompt: task_prompt(&p, BASE),
        feedback: a.agent_feedback,
    });
    tracing::info!(
        "serving {id} (trial {trial}, {:?} mode) over MCP on stdio; recording in {}",
        a.mode,
        a.record.display()
    );
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let quit = rt.block_on(async {
        let service = Server(episode.clone())
            .serve(rmcp::transport::stdio())
            .await
            .map_err(|e| anyhow::anyhow!("MCP initialisation failed: {e}"))?;
        let token = service.cancellation_token();
        tokio::select! {
            r = service.waiting() => r.map(|q| format!("{q:?}")).map_err(|e| anyhow::anyhow!("MCP service failed: {e}")),
            _ = tokio::signal::ctrl_c() => { token.cancel(); Ok("interrupted".to_string()) }
        }
    })?;
    let line = episode.end()?;
    tracing::info!(
        "episode {}.{} ended {:?} ({quit}): success {}, progress {:.2}; recorded in {}",
        line.instance,
        line.trial,
        line.end,
        line.success,
        line.progress,
        episode.recorder.dir().display()
    );
    Ok(())
}
