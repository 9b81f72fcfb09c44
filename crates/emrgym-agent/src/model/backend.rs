//! [`Backend`]: one enum over the ways to get a model reply, the [`Reply`] it gives and the
//! [`BackendError`] it fails with (each failure maps to the episode's end reason).

use super::{Cassette, OpenAiBackend, Scripted, ToolProtocol, request_hash};
use emrgym_scenario::trajectory::EndReason;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A model reply.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reply {
    /// Text content.
    pub text: Option<String>,
    /// Tool calls: (id, name, raw argument text).
    pub tool_calls: Vec<(String, String, String)>,
    /// Prompt tokens.
    pub prompt_tokens: u64,
    /// Completion tokens.
    pub completion_tokens: u64,
    /// `stop`, `tool_calls`, `length`, ...
    pub finish_reason: Option<String>,
}

/// Why a backend call failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum BackendError {
    /// 429 after retries.
    #[error("rate limited: {0}")]
    RateLimited(String),
    /// A request timed out after retries.
    #[error("timed out: {0}")]
    Timeout(String),
    /// The prompt does not fit the context.
    #[error("context overflow: {0}")]
    ContextOverflow(String),
    /// A cassette has no reply for this request.
    #[error("cassette miss: {0}")]
    CassetteMiss(String),
    /// Anything else (5xx after retries, unreadable response, connection).
    #[error("backend error: {0}")]
    Other(String),
}

impl BackendError {
    /// The episode end reason this failure causes.
    pub fn end_reason(&self) -> EndReason {
        match self {
            BackendError::RateLimited(_) => EndReason::RateLimited,
            BackendError::Timeout(_) => EndReason::Timeout,
            BackendError::ContextOverflow(_) => EndReason::ContextOverflow,
            BackendError::CassetteMiss(_) | BackendError::Other(_) => EndReason::BackendError,
        }
    }
}

/// One model backend.
#[derive(Debug, Clone)]
pub enum Backend {
    /// An OpenAI-compatible endpoint.
    OpenAi(Box<OpenAiBackend>),
    /// Replay recorded replies; a request that was not recorded is an error.
    Cassette(Cassette),
    /// Fixed replies (native tool calls), for measurements and tests.
    Scripted(Scripted),
    /// llama.cpp in process (cargo feature `llama`).
    #[cfg(feature = "llama")]
    Llama(crate::llama::LlamaHandle),
}

impl Backend {
    /// Ask for a reply.
    pub async fn complete(&self, messages: &[Value], tools: &Value) -> Result<Reply, BackendError> {
        match self {
            Backend::OpenAi(b) => b.complete(messages, tools).await,
            Backend::Cassette(c) => {
                let h = request_hash(messages, tools);
                emrgym_core::sync::lock(&c.replies).get(&h).cloned().ok_or_else(|| {
                    BackendError::CassetteMiss(format!(
                        "no recorded reply for request sha256 {}: the conversation left the recording here",
                        &h[..16]
                    ))
                })
            }
            Backend::Scripted(s) => Ok(s.next(messages)),
            #[cfg(feature = "llama")]
            Backend::Llama(l) => l.complete(messages, tools).await.map(|(r, _)| r),
        }
    }

    /// The backend for one episode: an in-process model serves the episode's turns on a
    /// sequence of its own (its KV cache), released when the returned backend is dropped;
    /// every other backend is itself (borrowed: an endpoint's connection pool and
    /// concurrency limit stay the run's).
    pub fn for_episode(&self) -> std::borrow::Cow<'_, Backend> {
        match self {
            #[cfg(feature = "llama")]
            Backend::Llama(l) => std::borrow::Cow::Owned(Backend::Llama(l.session())),
            other => std::borrow::Cow::Borrowed(other),
        }
    }

    /// The tool protocol.
    pub fn protocol(&self) -> ToolProtocol {
        match self {
            Backend::OpenAi(b) => b.cfg.tool_protocol,
            Backend::Cassette(c) => c.protocol,
            Backend::Scripted(_) => ToolProtocol::Native,
            #[cfg(feature = "llama")]
            Backend::Llama(_) => ToolProtocol::Native,
        }
    }
}
