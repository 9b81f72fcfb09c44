//! Trajectory wire types shared by the agent loop, the tools, the planner and the grader:
//! each step is one tool call and the result the agent saw (with the FHIR writes it made),
//! each model turn one request and reply; the episode ends with a reason. [`file`] is the
//! versioned JSONL format that records them, [`atif`] the ATIF interchange export.

pub mod atif;
pub mod file;

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
    /// The model turn that made the call (None for model-free agents).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub turn: Option<usize>,
    /// The call's id in that turn's reply.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub call_id: Option<String>,
    /// The FHIR writes the call made, in order (filled in from the sandbox after the episode).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub writes: Vec<FhirWrite>,
}

impl Step {
    /// A step outside any model turn.
    pub fn new(call: ToolCall, result: ToolResult) -> Step {
        Step {
            call,
            result,
            turn: None,
            call_id: None,
            writes: Vec::new(),
        }
    }
}

/// One FHIR write as it landed in the sandbox.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FhirWrite {
    /// create / update / delete.
    pub interaction: String,
    /// Resource type.
    pub resource_type: String,
    /// Logical id.
    pub id: String,
    /// The version written.
    pub version: u64,
    /// For an update: every field that changed from the previous version (`meta` aside).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub changes: Vec<FieldChange>,
    /// The resource as stored (absent for a delete).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource: Option<Value>,
}

/// One changed field between two versions of a resource.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FieldChange {
    /// Dotted path (`dosageInstruction.0.doseAndRate.0.doseQuantity.value`).
    pub path: String,
    /// Before (absent when added).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub before: Option<Value>,
    /// After (absent when removed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<Value>,
}

/// The fields that differ between two JSON values, leaf by leaf (objects by key, arrays of
/// equal length by index, anything else whole); the top-level `meta` is skipped.
pub fn json_changes(before: &Value, after: &Value) -> Vec<FieldChange> {
    fn walk(path: &str, a: Option<&Value>, b: Option<&Value>, out: &mut Vec<FieldChange>) {
        let join = |k: &str| if path.is_empty() { k.to_string() } else { format!("{path}.{k}") };
        match (a, b) {
            (Some(x), Some(y)) if x == y => {}
            (Some(Value::Object(x)), Some(Value::Object(y))) => {
                let mut keys: Vec<&String> = x.keys().chain(y.keys()).collect();
                keys.sort();
                keys.dedup();
                for k in keys {
                    if path.is_empty() && k == "meta" {
                        continue;
                    }
                    walk(&join(k), x.get(k), y.get(k), out);
                }
            }
            (Some(Value::Array(x)), Some(Value::Array(y))) if x.len() == y.len() => {
                for (i, (p, q)) in x.iter().zip(y).enumerate() {
                    walk(&join(&i.to_string()), Some(p), Some(q), out);
                }
            }
            (None, None) => {}
            _ => out.push(FieldChange {
                path: path.to_string(),
                before: a.cloned(),
                after: b.cloned(),
            }),
        }
    }
    let mut out = Vec::new();
    walk("", Some(before), Some(after), &mut out);
    out
}

/// A tool call as the model wrote it (arguments as raw text, maybe not valid JSON).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RawCall {
    /// Call id.
    pub id: String,
    /// Tool name.
    pub name: String,
    /// Argument text.
    pub arguments: String,
}

/// The HTN steps the planner would release after a given number of tool calls (recorded in
/// every mode; only guided mode shows them to the agent).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HtnTransition {
    /// Tool calls made so far.
    pub after_step: usize,
    /// Node paths that can be done now.
    pub next: Vec<String>,
}

/// Why an episode ended. Deliberately not `#[non_exhaustive]`: the harness audit
/// (`emrgym_agent::harness::attribute`) matches every reason, so a new one cannot be added
/// without deciding whether ending at it is the harness's fault.
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
    /// The model's replies ended repeating one short pattern, twice in a row, until they were
    /// stopped (degenerate decoding: the model's failure, not the reply cap's).
    Degenerate,
    /// The agent made the same tool call and got the same result `max_repeats` times in a
    /// row (the model's failure: the sandbox is deterministic, so it learned nothing new), or
    /// two calls in turn with their results `max_repeats` times in a row, or made the same
    /// write (create or update, whatever id it gave) `max_repeats` times.
    Stuck,
    /// The model backend failed (5xx after retries, bad response, connection).
    BackendError,
    /// Rate limited after retries.
    RateLimited,
    /// The run was cancelled.
    Cancelled,
    /// The agent stopped without calling a tool or finishing.
    Stopped,
    /// The episode was still open when the server serving it stopped: the agent neither
    /// finished it nor ended it (external episodes). Scored as the agent's failure.
    Abandoned,
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
    /// SHA-256 of the request (messages and tools): the cassette key.
    pub request_sha256: String,
    /// Messages sent.
    pub messages: usize,
    /// The messages new in this request (system prompt, task, tool results, guidance, repair
    /// notes), the previous assistant reply aside.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sent: Vec<Value>,
    /// The reply's text, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// Tool calls as the model wrote them.
    pub tool_calls: Vec<RawCall>,
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
    /// HTN step transitions (empty when not recorded).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub htn: Vec<HtnTransition>,
}

impl Trajectory {
    /// Steps and an end reason (no model turns).
    pub fn new(steps: Vec<Step>, end: EndReason) -> Trajectory {
        Trajectory {
            steps,
            end,
            turns: Vec::new(),
            detail: None,
            htn: Vec::new(),
        }
    }

    /// The answer given to `finish` (the first successful finish), with its step index.
    pub fn answer(&self) -> Option<(usize, &Value)> {
        self.steps
            .iter()
            .enumerate()
            .find(|(_, s)| s.call.name == "finish" && s.result.ok)
            // the answer as `finish` recorded it (a structured refusal is one object), else as sent
            .and_then(|(i, s)| {
                s.result
                    .content
                    .get("answer")
                    .or_else(|| s.call.arguments.get("answer"))
                    .map(|a| (i, a))
            })
    }
}
