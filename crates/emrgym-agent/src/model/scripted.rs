//! The scripted backend: fixed replies, one a turn, recording every request (measurements
//! and tests).

use super::Reply;
use serde_json::Value;
use std::sync::{Arc, Mutex};

/// A model-free backend that replies with fixed tool calls, one per turn, and records every
/// request it is sent: the reference plan written as a model would write it (what
/// `emrgym model budget` measures) and a deterministic model for tests. When the script
/// runs out it answers in text (the episode ends `stopped`).
#[derive(Debug, Clone, Default)]
pub struct Scripted {
    replies: Arc<Mutex<std::collections::VecDeque<Reply>>>,
    requests: Arc<Mutex<Vec<Vec<Value>>>>,
}

impl Scripted {
    /// A script of replies.
    pub fn new(replies: Vec<Reply>) -> Scripted {
        Scripted {
            replies: Arc::new(Mutex::new(replies.into())),
            requests: Arc::default(),
        }
    }

    /// A script that makes these calls, one a turn, each written as `{"name", "arguments"}`.
    pub fn calls(calls: &[emrgym_scenario::trajectory::ToolCall]) -> Scripted {
        Scripted::new(
            calls
                .iter()
                .enumerate()
                .map(|(i, c)| Reply {
                    text: None,
                    tool_calls: vec![(format!("call_{}", i + 1), c.name.clone(), c.arguments.to_string())],
                    prompt_tokens: 0,
                    completion_tokens: 0,
                    finish_reason: Some("tool_calls".into()),
                })
                .collect(),
        )
    }

    /// The messages of every request so far, in order.
    pub fn requests(&self) -> Vec<Vec<Value>> {
        emrgym_core::sync::lock(&self.requests).clone()
    }

    pub(super) fn next(&self, messages: &[Value]) -> Reply {
        emrgym_core::sync::lock(&self.requests).push(messages.to_vec());
        emrgym_core::sync::lock(&self.replies).pop_front().unwrap_or(Reply {
            text: Some("(the script has ended)".into()),
            tool_calls: Vec::new(),
            prompt_tokens: 0,
            completion_tokens: 0,
            finish_reason: Some("stop".into()),
        })
    }
}
