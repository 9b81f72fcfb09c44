//! Model configuration: how tool calls travel, the OpenAI-compatible endpoint and the
//! in-process llama.cpp model with their defaults, and which of them a run uses.

use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// How tool calls travel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ToolProtocol {
    /// The server's native `tools` / `tool_calls`.
    #[default]
    Native,
    /// Tools described in the system prompt; calls written as `<tool_call>{...}</tool_call>`.
    Text,
}

/// An OpenAI-compatible endpoint and its sampling parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpenAiConfig {
    /// Base URL (`https://api.openai.com/v1`, `http://127.0.0.1:8080/v1`).
    pub base_url: String,
    /// Model name sent in requests.
    pub model: String,
    /// Environment variable holding the API key (none: no key is sent).
    #[serde(default)]
    pub api_key_env: Option<String>,
    /// Native tool calls or the text protocol.
    #[serde(default)]
    pub tool_protocol: ToolProtocol,
    /// Sampling temperature.
    #[serde(default)]
    pub temperature: Option<f64>,
    /// Nucleus sampling.
    #[serde(default)]
    pub top_p: Option<f64>,
    /// Most tokens per reply.
    #[serde(default)]
    pub max_tokens: Option<u32>,
    /// Sampling seed sent to the server.
    #[serde(default)]
    pub seed: Option<u64>,
    /// Seconds before one request is abandoned.
    #[serde(default = "default_request_timeout")]
    pub request_timeout_s: f64,
    /// Retries of a failed request (429, 5xx, connection errors, timeouts).
    #[serde(default = "default_retries")]
    pub max_retries: u32,
    /// Requests in flight to this endpoint at once.
    #[serde(default = "default_endpoint_concurrency")]
    pub max_concurrency: usize,
}

fn default_request_timeout() -> f64 {
    120.0
}
fn default_retries() -> u32 {
    3
}
fn default_endpoint_concurrency() -> usize {
    64
}

/// A `--model openai:...` spec that is not `MODEL@BASE_URL` ([`OpenAiConfig::from_spec`]);
/// each variant carries the spec.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    /// No `@` between the model and the URL.
    #[error("model spec '{0}' must look like MODEL@BASE_URL, e.g. gpt-4o-mini@https://api.openai.com/v1")]
    NoAt(String),
    /// An empty model name or a URL that is not http(s).
    #[error("model spec '{0}' must look like MODEL@BASE_URL with an http(s) URL")]
    NotAnHttpUrl(String),
}

impl OpenAiConfig {
    /// Parse `MODEL@BASE_URL` (the `--model openai:...` form).
    pub fn from_spec(spec: &str) -> Result<OpenAiConfig, SpecError> {
        let (model, base) = spec.split_once('@').ok_or_else(|| SpecError::NoAt(spec.to_string()))?;
        if model.is_empty() || !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(SpecError::NotAnHttpUrl(spec.to_string()));
        }
        Ok(OpenAiConfig {
            base_url: base.trim_end_matches('/').to_string(),
            model: model.to_string(),
            api_key_env: None,
            tool_protocol: ToolProtocol::Native,
            temperature: None,
            top_p: None,
            max_tokens: None,
            seed: None,
            request_timeout_s: default_request_timeout(),
            max_retries: default_retries(),
            max_concurrency: default_endpoint_concurrency(),
        })
    }
}

/// Settings of the in-process llama.cpp model (cargo feature `llama`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LlamaConfig {
    /// The GGUF file.
    pub model_path: PathBuf,
    /// Context size (tokens); 0: the larger of the model's trained context and 36,864, which
    /// the suite's longest reference conversation and the reply cap fit (`llama::context_size`).
    #[serde(default = "default_ctx")]
    pub n_ctx: u32,
    /// CPU threads (one has beaten two on 2-core machines).
    #[serde(default = "one")]
    pub threads: i32,
    /// Episodes served at once: one sequence each in one context, advanced together by
    /// one decode call per step (continuous batching; `emrgym run --concurrency`). Each
    /// sequence gets the whole context size (`n_ctx`), so memory grows with it. Written
    /// only when it is not 1, so the manifests (and configuration hashes) of runs from
    /// before it existed are unchanged and such runs resume.
    #[serde(default = "one_seq", skip_serializing_if = "is_one_seq")]
    pub parallel: u32,
    /// Most tokens per reply (the reply cap; docs/agent.md says how it was sized).
    #[serde(default = "default_reply")]
    pub max_reply_tokens: u32,
    /// Sampling temperature (0: greedy).
    #[serde(default)]
    pub temperature: f32,
    /// Sampling seed.
    #[serde(default)]
    pub seed: u32,
    /// Constrain tool calls with a grammar from the tool schemas.
    #[serde(default = "yes")]
    pub grammar: bool,
    /// Evaluate each distinct shared prefix (system prompt and tool schemas) once per run and
    /// restore its KV state in every episode that starts with it; false: reuse only the
    /// longest common prefix with the previous prompt (the former behaviour, for benchmarks).
    #[serde(default = "yes")]
    pub prefix_cache: bool,
}

fn default_ctx() -> u32 {
    0
}
fn one() -> i32 {
    1
}
fn one_seq() -> u32 {
    1
}
fn is_one_seq(n: &u32) -> bool {
    *n == 1
}
/// The default reply cap of the in-process model: the next power of two at or above twice
/// the largest reference tool call of the suite as the model may write it (470 tokens,
/// pretty-printed, `admission_med_review`; measured with `emrgym model budget`, table in
/// docs/agent.md).
pub(crate) const DEFAULT_REPLY_TOKENS: u32 = 1024;

fn default_reply() -> u32 {
    DEFAULT_REPLY_TOKENS
}
fn yes() -> bool {
    true
}

impl LlamaConfig {
    /// Defaults for a model file.
    pub fn for_model(path: PathBuf) -> LlamaConfig {
        LlamaConfig {
            model_path: path,
            n_ctx: default_ctx(),
            threads: 1,
            parallel: one_seq(),
            max_reply_tokens: default_reply(),
            temperature: 0.0,
            seed: 0,
            grammar: true,
            prefix_cache: true,
        }
    }
}

/// Which model backend a run uses.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "backend", rename_all = "snake_case")]
pub enum ModelConfig {
    /// An OpenAI-compatible endpoint.
    Openai(OpenAiConfig),
    /// llama.cpp in process.
    Llama(LlamaConfig),
}
