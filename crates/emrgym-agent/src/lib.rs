//! Agents and the episode loop. An agent is a [`Policy`]: given the steps so far, it
//! proposes the next tool call (or stops). The loop executes each call through the tool
//! registry on the episode's sandbox, records the step, and ends on `finish`, on the
//! step budget, or when the policy stops.
//!
//! Built-in agents that need no model: [`Oracle`] replays the scenario's reference plan;
//! [`Null`] finishes at once.
//!
//! Entry points: [`run_episode`] (a [`Policy`] on a sandbox), [`run_model_episode`] (a
//! model [`Backend`] made from a [`ModelConfig`]: [`OpenAiBackend::new`], or
//! `llama::LlamaHandle::start` with feature `llama`), and [`harness::attribute`] for
//! harness failures.

pub mod harness;
#[cfg(feature = "llama")]
pub mod llama;
pub mod model;

pub use model::{Backend, BackendError, ModelConfig, OpenAiBackend, run_model_episode};

use emrgym_scenario::trajectory::{EndReason, Step, ToolCall, ToolResult, Trajectory};
use emrgym_tools::{FhirBackend, Registry};
use serde_json::{Value, json};
use std::collections::VecDeque;

/// Proposes tool calls.
pub trait Policy {
    /// The next call, or `None` to stop.
    fn next(&mut self, steps: &[Step]) -> Option<ToolCall>;
}

/// Replays a fixed list of calls (the reference plan), then finishes with `answer` if the
/// plan did not.
#[derive(Debug, Clone)]
pub struct Oracle {
    calls: VecDeque<ToolCall>,
}

impl Oracle {
    /// An oracle for these reference calls.
    pub fn new(calls: Vec<ToolCall>) -> Oracle {
        Oracle { calls: calls.into() }
    }
}

impl Policy for Oracle {
    fn next(&mut self, _steps: &[Step]) -> Option<ToolCall> {
        self.calls.pop_front().or_else(|| {
            // plans without a report step still end with finish
            Some(ToolCall {
                name: "finish".into(),
                arguments: json!({"answer": Value::Null}),
            })
        })
    }
}

/// Replays exactly these calls, then stops (a hand-written or recorded trajectory).
#[derive(Debug, Clone)]
pub struct Script {
    calls: VecDeque<ToolCall>,
}

impl Script {
    /// A script of calls.
    pub fn new(calls: Vec<ToolCall>) -> Script {
        Script { calls: calls.into() }
    }
}

impl Policy for Script {
    fn next(&mut self, _steps: &[Step]) -> Option<ToolCall> {
        self.calls.pop_front()
    }
}

/// Finishes at once with no answer.
#[derive(Debug, Clone, Default)]
pub struct Null;

impl Policy for Null {
    fn next(&mut self, _steps: &[Step]) -> Option<ToolCall> {
        Some(ToolCall {
            name: "finish".into(),
            arguments: json!({"answer": Value::Null}),
        })
    }
}

/// Run one episode.
pub fn run_episode(policy: &mut dyn Policy, registry: &Registry, fhir: &mut dyn FhirBackend, max_steps: u32) -> Trajectory {
    let mut steps: Vec<Step> = Vec::new();
    loop {
        if steps.len() >= max_steps as usize {
            return Trajectory::new(steps, EndReason::MaxSteps);
        }
        let Some(call) = policy.next(&steps) else {
            return Trajectory::new(steps, EndReason::Stopped);
        };
        let obs = registry.call(&call.name, &call.arguments, fhir);
        let finished = obs.answer.is_some() && obs.ok;
        steps.push(Step::new(
            call,
            ToolResult {
                ok: obs.ok,
                status: obs.status,
                content: obs.content,
            },
        ));
        if finished {
            return Trajectory::new(steps, EndReason::Finished);
        }
    }
}
