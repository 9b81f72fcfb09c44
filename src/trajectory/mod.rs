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
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EndReason {
    /// The agent called `finish`.
    Finished,
    /// The tool-call budget ran out.
    MaxSteps,
    /// The model-turn budget ran out.
    MaxTurns,
    /// The token budget ran out.
    MaxTokens,
    /// The episode's wall-time budget ran out (or a request timed out after retries).
    Timeout,
    /// The conversation no longer fits the model's context.
    ContextOverflow,
    /// The model kept producing tool calls that could not be parsed.
    ToolCallParseError,
    /// The model backend failed (5xx after retries, bad response, connection).
    BackendError,
    /// Rate limited after retries.
    RateLimited,
    /// The run was cancelled.
    Cancelled,
    /// The agent stopped without calling a tool or finishing.
    Stopped,
    /// Another infrastructure failure.
    Error,
}

impl EndReason {
    /// Infrastructure failures are reported apart and never scored as agent failures.
    pub fn is_infrastructure(self) -> bool {
        matches!(
            self,
            EndReason::BackendError | EndReason::RateLimited | EndReason::Cancelled | EndReason::Error
        )
    }
}

/// One model turn (request and reply), for model agents.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Turn {
    /// Messages sent.
    pub messages: usize,
    /// The reply's text, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// Tool calls as the model wrote them (name, raw argument text).
    pub tool_calls: Vec<(String, String)>,
    /// Prompt tokens.
    pub prompt_tokens: u64,
    /// Completion tokens.
    pub completion_tokens: u64,
    /// Wall time of the request, ms.
    pub latency_ms: u64,
    /// The backend's finish reason.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub finish_reason: Option<String>,
}

/// An episode's steps.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Trajectory {
    /// Steps in order.
    pub steps: Vec<Step>,
    /// Why it ended.
    pub end: EndReason,
    /// Model turns (empty for model-free agents).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub turns: Vec<Turn>,
    /// Detail on an abnormal end (the backend's error message).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

impl Trajectory {
    /// Steps and an end reason (no model turns).
    pub fn new(steps: Vec<Step>, end: EndReason) -> Trajectory {
        Trajectory {
            steps,
            end,
            turns: Vec::new(),
            detail: None,
        }
    }

    /// The answer given to `finish` (the first successful finish), with its step index.
    pub fn answer(&self) -> Option<(usize, &Value)> {
        self.steps
            .iter()
            .enumerate()
            .find(|(_, s)| s.call.name == "finish" && s.result.ok)
            .and_then(|(i, s)| s.call.arguments.get("answer").map(|a| (i, a)))
    }
}
