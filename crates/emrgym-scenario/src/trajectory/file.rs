//! The trajectory file: versioned JSONL, one header line then one event per line, in the
//! order things happened (docs/trajectory-format.md). Writing flattens a [`Trajectory`] into
//! events; reading rebuilds it. Readers take every 1.x file (unknown event types and fields
//! are skipped, so newer minor versions stay readable) and refuse other major versions with
//! a message saying so.

use super::{EndReason, FhirWrite, HtnTransition, RawCall, Step, ToolCall, ToolResult, Trajectory, Turn};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// The `format` of the header line.
pub const FORMAT: &str = "emrgym.trajectory";
/// The version written.
pub const FORMAT_VERSION: &str = "1.0";
/// The major version this build reads.
pub(crate) const READS_MAJOR: u64 = 1;

/// The scenario an episode ran.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScenarioRef {
    /// Family.
    pub family: String,
    /// Instance id.
    pub instance: String,
    /// SHA-256 of the family file's content at run time.
    pub content_sha256: String,
}

/// The header line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Header {
    /// Always [`FORMAT`].
    pub format: String,
    /// `MAJOR.MINOR`.
    pub format_version: String,
    /// The emrgym version that wrote it.
    pub emrgym_version: String,
    /// The grader's version at run time (`grade::GRADER_VERSION`).
    pub grader_version: u32,
    /// The scenario.
    pub scenario: ScenarioRef,
    /// Trial (0-based).
    pub trial: u32,
    /// flat / guided.
    pub mode: String,
    /// oracle / null / model.
    pub agent: String,
    /// The model configuration with its sampling parameters (model agents).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<Value>,
    /// The run's seed.
    pub seed: u64,
    /// The episode's sandbox seed (derived from the run seed, instance and trial).
    pub episode_seed: u64,
    /// SHA-256 of the episode's tool catalogue (OpenAI function rendering).
    pub tool_catalogue_sha256: String,
    /// The task as the agent was given it.
    pub instruction: String,
    /// The clinical "now".
    pub now: String,
    /// The cohort.
    pub cohort: String,
}

/// One event line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Event {
    /// What was sent to the model.
    ModelRequest {
        /// Turn index.
        turn: usize,
        /// Messages in the request.
        messages: usize,
        /// Messages new in this request (the previous assistant reply aside).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        sent: Vec<Value>,
        /// SHA-256 of the request: the cassette key.
        request_sha256: String,
    },
    /// What the model answered.
    ModelReply {
        /// Turn index.
        turn: usize,
        /// Text.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        text: Option<String>,
        /// Tool calls as written.
        tool_calls: Vec<RawCall>,
        /// Prompt tokens.
        prompt_tokens: u64,
        /// Completion tokens.
        completion_tokens: u64,
        /// Wall time of the request, ms.
        latency_ms: u64,
        /// The backend's finish reason.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        finish_reason: Option<String>,
    },
    /// A tool call that was run.
    ToolCall {
        /// Step index.
        step: usize,
        /// The model turn that made it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        turn: Option<usize>,
        /// The call's id in that turn.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<String>,
        /// Tool.
        name: String,
        /// Arguments.
        arguments: Value,
    },
    /// What the agent saw.
    ToolResult {
        /// Step index.
        step: usize,
        /// Success.
        ok: bool,
        /// HTTP-like status.
        status: u16,
        /// Content.
        content: Value,
    },
    /// A FHIR write that landed in the sandbox.
    FhirWrite {
        /// The step that made it.
        step: usize,
        /// The write.
        #[serde(flatten)]
        write: FhirWrite,
    },
    /// The HTN steps that can be done now.
    HtnStep {
        /// Tool calls made so far.
        after_step: usize,
        /// Node paths.
        next: Vec<String>,
    },
    /// The end.
    End {
        /// Why.
        reason: EndReason,
        /// Detail on an abnormal end.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        detail: Option<String>,
        /// Tool calls.
        steps: usize,
        /// Model turns.
        turns: usize,
    },
}

/// A trajectory file read back.
#[derive(Debug, Clone, PartialEq)]
pub struct TrajectoryFile {
    /// Header.
    pub header: Header,
    /// The episode.
    pub trajectory: Trajectory,
}

/// Flatten a trajectory into its events, in the order they happened.
pub fn events(t: &Trajectory) -> Vec<Event> {
    let mut out = Vec::new();
    let htn_after = |n: usize, out: &mut Vec<Event>| {
        for h in t.htn.iter().filter(|h| h.after_step == n) {
            out.push(Event::HtnStep {
                after_step: h.after_step,
                next: h.next.clone(),
            });
        }
    };
    htn_after(0, &mut out);
    let mut si = 0;
    let step = |si: usize, out: &mut Vec<Event>| {
        let s = &t.steps[si];
        out.push(Event::ToolCall {
            step: si,
            turn: s.turn,
            id: s.call_id.clone(),
            name: s.call.name.clone(),
            arguments: s.call.arguments.clone(),
        });
        out.push(Event::ToolResult {
            step: si,
            ok: s.result.ok,
            status: s.result.status,
            content: s.result.content.clone(),
        });
        for w in &s.writes {
            out.push(Event::FhirWrite {
                step: si,
                write: w.clone(),
            });
        }
    };
    for (ti, turn) in t.turns.iter().enumerate() {
        // steps made outside a turn before it (none in practice)
        while si < t.steps.len() && t.steps[si].turn.is_none_or(|x| x < ti) {
            step(si, &mut out);
            si += 1;
            htn_after(si, &mut out);
        }
        out.push(Event::ModelRequest {
            turn: ti,
            messages: turn.messages,
            sent: turn.sent.clone(),
            request_sha256: turn.request_sha256.clone(),
        });
        out.push(Event::ModelReply {
            turn: ti,
            text: turn.text.clone(),
            tool_calls: turn.tool_calls.clone(),
            prompt_tokens: turn.prompt_tokens,
            completion_tokens: turn.completion_tokens,
            latency_ms: turn.latency_ms,
            finish_reason: turn.finish_reason.clone(),
        });
        while si < t.steps.len() && t.steps[si].turn == Some(ti) {
            step(si, &mut out);
            si += 1;
            htn_after(si, &mut out);
        }
    }
    while si < t.steps.len() {
        step(si, &mut out);
        si += 1;
        htn_after(si, &mut out);
    }
    out.push(Event::End {
        reason: t.end,
        detail: t.detail.clone(),
        steps: t.steps.len(),
        turns: t.turns.len(),
    });
    out
}

/// The file's text: the header line, then one line per event. A value that cannot be
/// serialised is an error, never an empty line.
pub fn to_jsonl(header: &Header, t: &Trajectory) -> Result<String, serde_json::Error> {
    let mut s = serde_json::to_string(header)?;
    s.push('\n');
    for e in events(t) {
        s.push_str(&serde_json::to_string(&e)?);
        s.push('\n');
    }
    Ok(s)
}

/// Why a file could not be read.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ReadError {
    /// Empty file.
    #[error("empty trajectory file")]
    Empty,
    /// Not a trajectory.
    #[error("line 1 is not an emrgym trajectory header: {0}")]
    NotATrajectory(String),
    /// A major version this build does not read.
    #[error(
        "trajectory format_version {0} is not readable by this emrgym (it reads {READS_MAJOR}.x); {hint}",
        hint = if version_major(.0).is_some_and(|m| m > READS_MAJOR) { "upgrade emrgym" } else { "convert it with the emrgym that wrote it" }
    )]
    Version(String),
    /// A malformed line.
    #[error("line {line}: {message}")]
    Line {
        /// 1-based line.
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// The file ends before its `end` event (a run killed mid-write).
    #[error("the trajectory has no end event (truncated)")]
    Truncated,
}

fn version_major(v: &str) -> Option<u64> {
    v.split('.').next()?.parse().ok()
}

/// Read a trajectory file's text.
pub fn from_jsonl(text: &str) -> Result<TrajectoryFile, ReadError> {
    let mut lines = text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty());
    let (_, first) = lines.next().ok_or(ReadError::Empty)?;
    let head: Value = serde_json::from_str(first).map_err(|e| ReadError::NotATrajectory(e.to_string()))?;
    if head.get("format").and_then(Value::as_str) != Some(FORMAT) {
        return Err(ReadError::NotATrajectory(format!("\"format\" is not \"{FORMAT}\"")));
    }
    let version = head.get("format_version").and_then(Value::as_str).unwrap_or("").to_string();
    if version_major(&version) != Some(READS_MAJOR) {
        return Err(ReadError::Version(version));
    }
    let header: Header = serde_json::from_value(head).map_err(|e| ReadError::Line {
        line: 1,
        message: format!("header: {e}"),
    })?;
    let mut t = Trajectory::new(Vec::new(), EndReason::Error);
    let mut ended = false;
    for (i, line) in lines {
        let v: Value = serde_json::from_str(line).map_err(|e| ReadError::Line {
            line: i + 1,
            message: e.to_string(),
        })?;
        let known = matches!(
            v.get("type").and_then(Value::as_str),
            Some("model_request" | "model_reply" | "tool_call" | "tool_result" | "fhir_write" | "htn_step" | "end")
        );
        if !known {
            continue; // a newer minor version's event
        }
        let ev: Event = serde_json::from_value(v).map_err(|e| ReadError::Line {
            line: i + 1,
            message: e.to_string(),
        })?;
        let bad = |message: String| ReadError::Line { line: i + 1, message };
        match ev {
            Event::ModelRequest {
                turn,
                messages,
                sent,
                request_sha256,
            } => {
                if turn != t.turns.len() {
                    return Err(bad(format!("model_request for turn {turn}, expected turn {}", t.turns.len())));
                }
                t.turns.push(Turn {
                    request_sha256,
                    messages,
                    sent,
                    text: None,
                    tool_calls: Vec::new(),
                    prompt_tokens: 0,
                    completion_tokens: 0,
                    latency_ms: 0,
                    finish_reason: None,
                });
            }
            Event::ModelReply {
                turn,
                text,
                tool_calls,
                prompt_tokens,
                completion_tokens,
                latency_ms,
                finish_reason,
            } => {
                let Some(tu) = t.turns.get_mut(turn) else {
                    return Err(bad(format!("model_reply for turn {turn} before its request")));
                };
                tu.text = text;
                tu.tool_calls = tool_calls;
                tu.prompt_tokens = prompt_tokens;
                tu.completion_tokens = completion_tokens;
                tu.latency_ms = latency_ms;
                tu.finish_reason = finish_reason;
            }
            Event::ToolCall {
                step,
                turn,
                id,
                name,
                arguments,
            } => {
                if step != t.steps.len() {
                    return Err(bad(format!("tool_call for step {step}, expected step {}", t.steps.len())));
                }
                let mut s = Step::new(
                    ToolCall { name, arguments },
                    ToolResult {
                        ok: false,
                        status: 0,
                        content: Value::Null,
                    },
                );
                s.turn = turn;
                s.call_id = id;
                t.steps.push(s);
            }
            Event::ToolResult { step, ok, status, content } => {
                let Some(s) = t.steps.get_mut(step) else {
                    return Err(bad(format!("tool_result for step {step} before its call")));
                };
                s.result = ToolResult { ok, status, content };
            }
            Event::FhirWrite { step, write } => {
                let Some(s) = t.steps.get_mut(step) else {
                    return Err(bad(format!("fhir_write for step {step} before its call")));
                };
                s.writes.push(write);
            }
            Event::HtnStep { after_step, next } => t.htn.push(HtnTransition { after_step, next }),
            Event::End {
                reason,
                detail,
                steps,
                turns,
            } => {
                if steps != t.steps.len() || turns != t.turns.len() {
                    return Err(bad(format!(
                        "end says {steps} steps and {turns} turns, the file has {} and {}",
                        t.steps.len(),
                        t.turns.len()
                    )));
                }
                t.end = reason;
                t.detail = detail;
                ended = true;
            }
        }
    }
    if !ended {
        return Err(ReadError::Truncated);
    }
    Ok(TrajectoryFile { header, trajectory: t })
}

/// Why a trajectory file on disk could not be read ([`read`]); the message starts with the file.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// The file could not be read.
    #[error("{}: {error}", path.display())]
    Io {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        error: std::io::Error,
    },
    /// The file is not a readable trajectory.
    #[error("{}: {error}", path.display())]
    Format {
        /// The file.
        path: std::path::PathBuf,
        /// What is wrong with it.
        error: ReadError,
    },
}

/// Read a trajectory file from disk, naming the file in any error.
pub fn read(path: &std::path::Path) -> Result<TrajectoryFile, FileError> {
    let text = std::fs::read_to_string(path).map_err(|error| FileError::Io {
        path: path.to_path_buf(),
        error,
    })?;
    from_jsonl(&text).map_err(|error| FileError::Format {
        path: path.to_path_buf(),
        error,
    })
}

/// A header for tests and examples.
pub fn example_header() -> Header {
    Header {
        format: FORMAT.into(),
        format_version: FORMAT_VERSION.into(),
        emrgym_version: env!("CARGO_PKG_VERSION").into(),
        grader_version: 1,
        scenario: ScenarioRef {
            family: "f".into(),
            instance: "f-1".into(),
            content_sha256: "0".repeat(64),
        },
        trial: 0,
        mode: "flat".into(),
        agent: "model".into(),
        model: Some(json!({"kind": "openai", "model": "m"})),
        seed: 0,
        episode_seed: 1,
        tool_catalogue_sha256: "0".repeat(64),
        instruction: "What is the patient's age?".into(),
        now: "2023-11-13T10:15:00+00:00".into(),
        cohort: "demo".into(),
    }
}

#[cfg(test)]
mod tests;
