//! Trajectory wire types shared by the agent loop, the tools, the planner and the grader:
//! each step is one tool call and the result the agent saw; the episode ends with a reason.
//! (The versioned JSONL file format that records and replays these is built on them.)

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A tool call as the agent made it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolCall {
    /// Tool name.
    pub name: String,
    /// Arguments (JSON).
    pub arguments: Value,
}

/// What the agent saw.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolResult {
    /// Success.
    pub ok: bool,
    /// HTTP-like status.
    pub status: u16,
    /// The observation content.
    pub content: Value,
}

/// One step: a call and its result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Step {
    /// The call.
    pub call: ToolCall,
    /// The result.
    pub result: ToolResult,
}

/// Why an episode ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EndReason {
    /// The agent called `finish`.
    Finished,
    /// The step budget ran out.
    MaxSteps,
    /// The agent stopped without finishing (no tool call).
    Stopped,
    /// Infrastructure failure (model backend, I/O).
    Error,
}

/// An episode's steps.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Trajectory {
    /// Steps in order.
    pub steps: Vec<Step>,
    /// Why it ended.
    pub end: EndReason,
}

impl Trajectory {
    /// The answer given to `finish` (the first successful finish), with its step index.
    pub fn answer(&self) -> Option<(usize, &Value)> {
        self.steps
            .iter()
            .enumerate()
            .find(|(_, s)| s.call.name == "finish" && s.result.ok)
            .and_then(|(i, s)| s.call.arguments.get("answer").map(|a| (i, a)))
    }
}
