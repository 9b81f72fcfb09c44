//! Model backends and the model episode loop.
//!
//! [`Backend`] is one enum over the ways to get a model reply: an OpenAI-compatible
//! endpoint (async-openai with bring-your-own JSON types, so any server that speaks the
//! chat-completions protocol works: OpenAI, vLLM, llama.cpp's llama-server, Ollama), with
//! native tool calling or a text protocol (`<tool_call>{json}</tool_call>`) for servers
//! without tool support; or a cassette of recorded replies keyed by request hash.
//!
//! [`run_model_episode`] drives one episode: system prompt from the scenario, tool calls
//! dispatched through the registry (tool errors are observations), malformed calls answered
//! with a precise error and repaired in the history before it is re-sent, replies cut by
//! the reply cap answered with a note instead of being parsed, tool results too long for
//! the conversation fitted with a note, limits on steps, turns, tokens and wall time,
//! retries with backoff for infrastructure failures (429 honouring `Retry-After` in the
//! HTTP layer; timeouts here), and a typed end reason. The [`Scripted`] backend replies
//! with fixed calls (measurements and tests).

mod backend;
mod cassette;
mod config;
mod episode;
mod limits;
mod openai;
mod parse;
mod prompt;
mod scripted;
#[cfg(test)]
mod tests;

pub use backend::{Backend, BackendError, Reply};
pub use cassette::Cassette;
pub(crate) use cassette::request_hash;
#[cfg(test)]
pub(crate) use config::DEFAULT_REPLY_TOKENS;
pub use config::{LlamaConfig, ModelConfig, OpenAiConfig, SpecError, ToolProtocol};
pub use episode::{GuidanceFn, Hooks, run_model_episode};
pub(crate) use limits::{CUT_REPLIES_TO_END, cut_note, degenerate, degenerate_note, fit_result, is_cut};
pub use limits::{
    Limits, REPEAT_COPIES, REPEAT_MAX_PERIOD, REPEAT_MIN_SPAN, Repetition, STUCK_MAX_PERIOD, WRITE_TOOLS, repeated_write, repetition,
    stuck, stuck_cycle,
};
pub use openai::{OpenAiBackend, OpenAiError};
pub(crate) use parse::parse_reply;
#[cfg(any(test, feature = "llama"))]
pub(crate) use parse::undouble_braces;
pub use prompt::{Briefing, system_prompt, user_prompt};
pub use scripted::Scripted;
