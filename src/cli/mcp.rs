//! `emrgym mcp`: flags, and serving one episode over MCP on stdio until the client leaves
//! (the server itself is `emrgym_engine::mcp`).

use anyhow::Context;
use emrgym_engine::episode::Workspace;
use emrgym_engine::mcp::{Episode, Server, pick};
use emrgym_engine::run::Mode;
use emrgym_engine::session::{Feedback, Recorder, Session};
use rmcp::ServiceExt;
use serde_json::json;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

/// Flags of `emrgym mcp`.
#[derive(Debug, clap::Args)]
pub struct McpArgs {
    /// The scenario instance to serve (default: the instance with the fewest episodes
    /// recorded in the recording directory, first by id, so repeated launches go round
    /// the suite).
    #[arg(long)]
    pub scenario: Option<String>,
    /// The condition: flat (the protocol in prose), guided (plus the planner's steps), goal
    /// (the family's goal instead of its instruction) or outline (plus the whole task network
    /// written out at the start).
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
    // in goal mode the instance must have a goal (in outline mode, an outline): refused here,
    // before anything is recorded
    let p = emrgym_engine::run::present(&p, a.mode).map_err(|e| anyhow::anyhow!("--mode {}: {e}", a.mode.name()))?;
    let recorder =
        Recorder::open(&a.record, &a.suite, a.seed, &ws)?.with_access(json!({"interface": "mcp", "agent_feedback": a.agent_feedback}))?;
    let trial = recorder.next_trial(&id);
    let cell = Arc::new(Mutex::new(Session::new(
        &format!("mcp-{id}-{trial}"),
        p.clone(),
        trial,
        a.mode,
        a.seed,
    )));
    let episode = Arc::new(Episode::new(cell, &p, Arc::new(recorder), a.agent_feedback, None));
    tracing::info!(
        "serving {id} (trial {trial}, {:?} mode) over MCP on stdio; recording in {}",
        a.mode,
        a.record.display()
    );
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let quit = rt.block_on(async {
        let service = Server::of(episode.clone())
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
        episode.recorder().dir().display()
    );
    Ok(())
}
