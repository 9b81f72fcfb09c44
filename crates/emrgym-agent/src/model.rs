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

use async_openai::Client;
use async_openai::config::OpenAIConfig;
use async_openai::error::OpenAIError;
use emrgym_scenario::trajectory::{EndReason, RawCall, Step, ToolCall, ToolResult, Trajectory, Turn};
use emrgym_tools::{FhirBackend, Registry};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// How tool calls travel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
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

impl OpenAiConfig {
    /// Parse `MODEL@BASE_URL` (the `--model openai:...` form).
    pub fn from_spec(spec: &str) -> Result<OpenAiConfig, String> {
        let (model, base) = spec
            .split_once('@')
            .ok_or_else(|| format!("model spec '{spec}' must look like MODEL@BASE_URL, e.g. gpt-4o-mini@https://api.openai.com/v1"))?;
        if model.is_empty() || !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(format!("model spec '{spec}' must look like MODEL@BASE_URL with an http(s) URL"));
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
/// The default reply cap of the in-process model: the next power of two at or above twice
/// the largest reference tool call of the suite as the model may write it (470 tokens,
/// pretty-printed, `admission_med_review`; measured with `emrgym model budget`, table in
/// docs/agent.md).
pub const DEFAULT_REPLY_TOKENS: u32 = 1024;

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

/// An OpenAI-compatible backend.
#[derive(Clone)]
pub struct OpenAiBackend {
    cfg: OpenAiConfig,
    client: Client<OpenAIConfig>,
}

impl std::fmt::Debug for OpenAiBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenAiBackend")
            .field("base_url", &self.cfg.base_url)
            .field("model", &self.cfg.model)
            .finish()
    }
}

fn is_context_overflow(message: &str) -> bool {
    let m = message.to_lowercase();
    [
        "context length",
        "context_length",
        "context window",
        "exceeds the context",
        "maximum context",
        "too many tokens",
        "prompt is too long",
        // llama-server: "the request exceeds the available context size, try increasing it"
        "available context size",
        "exceed_context_size",
        "exceeds the model's context",
    ]
    .iter()
    .any(|p| m.contains(p))
}

impl OpenAiBackend {
    /// A backend for `cfg`; the API key is read from the named environment variable.
    pub fn new(cfg: OpenAiConfig) -> Result<OpenAiBackend, String> {
        let mut oc = OpenAIConfig::new().with_api_base(cfg.base_url.clone());
        if let Some(var) = &cfg.api_key_env {
            let key = std::env::var(var).map_err(|_| format!("environment variable {var} (api_key_env) is not set"))?;
            oc = oc.with_api_key(key);
        } else {
            oc = oc.with_api_key("");
        }
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs_f64(cfg.request_timeout_s.max(0.001)))
            .build()
            .map_err(|e| format!("building the HTTP client: {e}"))?;
        let service = tower::ServiceBuilder::new()
            .concurrency_limit(cfg.max_concurrency.max(1))
            .layer(async_openai::middleware::retry::OpenAIRetryLayer::new(cfg.max_retries as usize))
            .service(async_openai::middleware::ReqwestService::new(http));
        let client = Client::with_config(oc).with_http_service(service);
        Ok(OpenAiBackend { cfg, client })
    }

    /// The configuration.
    pub fn config(&self) -> &OpenAiConfig {
        &self.cfg
    }

    fn request(&self, messages: &[Value], tools: &Value) -> Value {
        let mut req = Map::new();
        req.insert("model".into(), json!(self.cfg.model));
        req.insert("messages".into(), json!(messages));
        if self.cfg.tool_protocol == ToolProtocol::Native && tools.as_array().is_some_and(|t| !t.is_empty()) {
            req.insert("tools".into(), tools.clone());
            req.insert("tool_choice".into(), json!("auto"));
        }
        for (k, v) in [
            ("temperature", self.cfg.temperature.map(|x| json!(x))),
            ("top_p", self.cfg.top_p.map(|x| json!(x))),
            ("max_tokens", self.cfg.max_tokens.map(|x| json!(x))),
            ("seed", self.cfg.seed.map(|x| json!(x))),
        ] {
            if let Some(v) = v {
                req.insert(k.into(), v);
            }
        }
        req.insert("stream".into(), json!(false));
        Value::Object(req)
    }

    async fn complete(&self, messages: &[Value], tools: &Value) -> Result<Reply, BackendError> {
        let req = self.request(messages, tools);
        let mut attempt = 0;
        loop {
            let r: Result<Value, OpenAIError> = self.client.chat().create_byot(req.clone()).await;
            match r {
                Ok(v) => return parse_reply(&v, self.cfg.tool_protocol),
                Err(e) => {
                    let err = classify(e);
                    // timeouts are retried here (the HTTP layer retries 429, 5xx and connection errors)
                    if matches!(err, BackendError::Timeout(_)) && attempt < self.cfg.max_retries {
                        attempt += 1;
                        tokio::time::sleep(Duration::from_millis(200 * (1 << attempt.min(6)))).await;
                        continue;
                    }
                    return Err(err);
                }
            }
        }
    }
}

fn classify(e: OpenAIError) -> BackendError {
    match e {
        OpenAIError::ApiError(resp) => {
            let status = resp.status_code.as_u16();
            let msg = resp.api_error.message.clone();
            if status == 429 {
                BackendError::RateLimited(msg)
            } else if is_context_overflow(&msg) || resp.api_error.code.as_deref() == Some("context_length_exceeded") {
                BackendError::ContextOverflow(msg)
            } else {
                BackendError::Other(format!("HTTP {status}: {msg}"))
            }
        }
        OpenAIError::Reqwest(r) if r.is_timeout() => BackendError::Timeout(r.to_string()),
        OpenAIError::Boxed(b) => {
            let text = b.to_string();
            if let Some(r) = b.downcast_ref::<reqwest::Error>()
                && r.is_timeout()
            {
                return BackendError::Timeout(text);
            }
            if text.to_lowercase().contains("timed out") || text.to_lowercase().contains("timeout") {
                BackendError::Timeout(text)
            } else {
                BackendError::Other(text)
            }
        }
        other => {
            let text = other.to_string();
            if is_context_overflow(&text) {
                BackendError::ContextOverflow(text)
            } else {
                BackendError::Other(text)
            }
        }
    }
}

/// A call written with doubled outer braces, `{{"name": ..., "arguments": {...}}}`, as the
/// Qwen2.5-Coder-1.5B chat template's system example shows it (its Jinja string has
/// `{{\"name\": ...}}`, which renders doubled): the call inside, when the inside is one
/// JSON object with a `name`. Anything else is left alone.
pub fn undouble_braces(body: &str) -> Option<Value> {
    let t = body.trim();
    let inner = t.strip_prefix('{')?.strip_suffix('}')?.trim();
    if !(inner.starts_with('{') && inner.ends_with('}')) {
        return None;
    }
    let v: Value = serde_json::from_str(inner).ok()?;
    v.get("name").and_then(Value::as_str)?;
    Some(v)
}

/// Parse `<tool_call>{"name": ..., "arguments": ...}</tool_call>` blocks from text.
pub fn parse_text_tool_calls(text: &str) -> (Option<String>, Vec<(String, String, String)>) {
    let mut calls = Vec::new();
    let mut rest = text;
    let mut plain = String::new();
    let mut n = 0;
    while let Some(i) = rest.find("<tool_call>") {
        plain.push_str(&rest[..i]);
        let after = &rest[i + "<tool_call>".len()..];
        let (body, next) = match after.find("</tool_call>") {
            Some(j) => (&after[..j], &after[j + "</tool_call>".len()..]),
            None => (after, ""),
        };
        n += 1;
        let body = body.trim();
        match serde_json::from_str::<Value>(body).ok().or_else(|| undouble_braces(body)).ok_or(()) {
            Ok(v) => {
                let name = v.get("name").and_then(Value::as_str).unwrap_or_default().to_string();
                let args = match v.get("arguments") {
                    Some(Value::String(s)) => s.clone(),
                    Some(other) => other.to_string(),
                    None => "{}".into(),
                };
                calls.push((format!("call_{n}"), name, args));
            }
            // an unparseable call keeps its raw text so the agent is told exactly what was wrong
            Err(_) => calls.push((format!("call_{n}"), String::new(), body.to_string())),
        }
        rest = next;
    }
    plain.push_str(rest);
    let plain = plain.trim().to_string();
    ((!plain.is_empty()).then_some(plain), calls)
}

/// A reply that is only JSON tool calls: one or more `{"name": ..., "arguments": {...}}`
/// objects (back to back, optionally in a ```json fence).
fn bare_json_calls(text: &str) -> Option<Vec<(String, String, String)>> {
    let t = text.trim();
    let t = t
        .strip_prefix("```json")
        .or_else(|| t.strip_prefix("```"))
        .map(|x| x.trim_end().trim_end_matches("```"))
        .unwrap_or(t)
        .trim();
    if let Some(v) = undouble_braces(t) {
        let args = v.get("arguments")?;
        return args.is_object().then(|| {
            vec![(
                "call_1".to_string(),
                v["name"].as_str().unwrap_or_default().to_string(),
                args.to_string(),
            )]
        });
    }
    let mut calls = Vec::new();
    for (i, v) in serde_json::Deserializer::from_str(t).into_iter::<Value>().enumerate() {
        let v = v.ok()?;
        let name = v.get("name")?.as_str()?.to_string();
        let args = v.get("arguments")?;
        if !args.is_object() {
            return None;
        }
        calls.push((format!("call_{}", i + 1), name, args.to_string()));
    }
    (!calls.is_empty()).then_some(calls)
}

/// Parse a chat-completions response.
pub fn parse_reply(v: &Value, protocol: ToolProtocol) -> Result<Reply, BackendError> {
    let choice = v
        .get("choices")
        .and_then(|c| c.get(0))
        .ok_or_else(|| BackendError::Other(format!("response has no choices: {}", truncate(&v.to_string(), 300))))?;
    let msg = choice.get("message").cloned().unwrap_or(Value::Null);
    let text = msg
        .get("content")
        .and_then(Value::as_str)
        .map(str::to_string)
        .filter(|s| !s.trim().is_empty());
    let mut tool_calls: Vec<(String, String, String)> = msg
        .get("tool_calls")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .enumerate()
                .map(|(i, c)| {
                    let id = c
                        .get("id")
                        .and_then(Value::as_str)
                        .map(str::to_string)
                        .unwrap_or_else(|| format!("call_{}", i + 1));
                    let f = c.get("function").cloned().unwrap_or(Value::Null);
                    let name = f.get("name").and_then(Value::as_str).unwrap_or_default().to_string();
                    let args = match f.get("arguments") {
                        Some(Value::String(s)) => s.clone(),
                        Some(Value::Null) | None => String::new(),
                        Some(other) => other.to_string(),
                    };
                    (id, name, args)
                })
                .collect()
        })
        .unwrap_or_default();
    let mut text = text;
    if (protocol == ToolProtocol::Text || tool_calls.is_empty())
        && let Some(t) = &text
        && t.contains("<tool_call>")
    {
        let (plain, calls) = parse_text_tool_calls(t);
        text = plain;
        tool_calls.extend(calls);
    }
    // small models often write the call as bare JSON (or in a ```json fence) without the
    // protocol's tags; a reply that is exactly one {"name", "arguments"} object is that call
    if tool_calls.is_empty()
        && let Some(t) = &text
        && let Some(calls) = bare_json_calls(t)
    {
        tool_calls = calls;
        text = None;
    }
    let usage = v.get("usage");
    let tok = |k: &str| usage.and_then(|u| u.get(k)).and_then(Value::as_u64).unwrap_or(0);
    Ok(Reply {
        text,
        tool_calls,
        prompt_tokens: tok("prompt_tokens"),
        completion_tokens: tok("completion_tokens"),
        finish_reason: choice.get("finish_reason").and_then(Value::as_str).map(str::to_string),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_system_prompt_is_the_same_for_every_episode_and_the_now_is_in_the_task() {
        let b = |now: &str, instruction: &str, context: &str| Briefing {
            instruction: instruction.into(),
            context: context.into(),
            now: now.into(),
            fhir_base: "http://emrgym.local/fhir".into(),
        };
        let (x, y) = (
            b("2023-11-13T10:15:00+00:00", "Task A", ""),
            b("2024-02-01T08:00:00+00:00", "Task B", "K 3.1"),
        );
        let tools = json!([]);
        assert_eq!(
            system_prompt(&x, ToolProtocol::Native, &tools),
            system_prompt(&y, ToolProtocol::Native, &tools)
        );
        assert!(!system_prompt(&x, ToolProtocol::Native, &tools).contains("2023"));
        assert_eq!(user_prompt(&x), "It is now 2023-11-13T10:15:00+00:00.\n\nTask A");
        assert_eq!(user_prompt(&y), "It is now 2024-02-01T08:00:00+00:00.\n\nTask B\n\nContext: K 3.1");
    }

    fn reply(content: &str) -> Value {
        json!({"choices": [{"finish_reason": "stop", "message": {"role": "assistant", "content": content}}]})
    }

    #[test]
    fn bare_and_fenced_json_calls_are_tool_calls() {
        let r = parse_reply(
            &reply("{\"name\": \"fhir_read\", \"arguments\": {\"id\": \"1\"}}"),
            ToolProtocol::Native,
        )
        .unwrap();
        assert_eq!(
            r.tool_calls,
            vec![("call_1".to_string(), "fhir_read".to_string(), "{\"id\":\"1\"}".to_string())]
        );
        assert!(r.text.is_none());
        let r = parse_reply(
            &reply("```json\n{\"name\": \"finish\", \"arguments\": {\"answer\": 3}}\n```"),
            ToolProtocol::Native,
        )
        .unwrap();
        assert_eq!(r.tool_calls[0].1, "finish");
        // prose, or JSON that is not a call, stays text
        for t in ["The answer is 42.", "{\"answer\": 42}", "{\"name\": \"x\", \"arguments\": 3}"] {
            let r = parse_reply(&reply(t), ToolProtocol::Native).unwrap();
            assert!(r.tool_calls.is_empty() && r.text.as_deref() == Some(t), "{t}");
        }
        let r = parse_reply(
            &reply("Let me look.\n<tool_call>\n{\"name\": \"fhir_read\", \"arguments\": {}}\n</tool_call>"),
            ToolProtocol::Text,
        )
        .unwrap();
        assert_eq!(r.tool_calls[0].1, "fhir_read");
        assert_eq!(r.text.as_deref(), Some("Let me look."));
        assert!(parse_reply(&json!({"error": "x"}), ToolProtocol::Native).is_err());
        // several calls back to back
        let r = parse_reply(
            &reply("{\"name\": \"a\", \"arguments\": {}}\n{\"name\": \"b\", \"arguments\": {\"x\": 1}}"),
            ToolProtocol::Native,
        )
        .unwrap();
        assert_eq!(r.tool_calls.iter().map(|c| c.1.as_str()).collect::<Vec<_>>(), vec!["a", "b"]);
        assert_eq!(r.tool_calls[1].0, "call_2");
    }

    #[test]
    fn doubled_brace_calls_are_read_and_nothing_else_changes() {
        let doubled = "{{\"name\": \"fhir_read\", \"arguments\": {\"resource_type\": \"Patient\", \"id\": \"S1\"}}}";
        let v = undouble_braces(doubled).unwrap();
        assert_eq!(v["name"], "fhir_read");
        assert_eq!(v["arguments"]["id"], "S1");
        // in a <tool_call> block, bare, and in the text protocol
        for text in [format!("<tool_call>\n{doubled}\n</tool_call>"), doubled.to_string()] {
            let r = parse_reply(&reply(&text), ToolProtocol::Native).unwrap();
            assert_eq!(r.tool_calls.len(), 1, "{text}");
            assert_eq!(r.tool_calls[0].1, "fhir_read");
            assert_eq!(r.tool_calls[0].2, "{\"resource_type\":\"Patient\",\"id\":\"S1\"}");
        }
        // a normal call, two calls, a call-less object: not touched
        assert!(undouble_braces("{\"name\": \"a\", \"arguments\": {\"x\": {\"y\": 1}}}").is_none());
        assert!(undouble_braces("{{\"answer\": 1}}").is_none());
        assert!(undouble_braces("{\"name\": \"a\", \"arguments\": {}}\n{\"name\": \"b\", \"arguments\": {}}").is_none());
    }

    fn cut(finish: &str, calls: &[&str]) -> Reply {
        Reply {
            text: None,
            tool_calls: calls
                .iter()
                .map(|a| ("c".to_string(), "fhir_read".to_string(), a.to_string()))
                .collect(),
            prompt_tokens: 0,
            completion_tokens: 7,
            finish_reason: Some(finish.into()),
        }
    }

    #[test]
    fn a_reply_is_cut_only_when_the_cap_stopped_it_before_the_call_was_complete() {
        assert!(is_cut(&cut("length", &["{\"resource_type\": \"Pat"])));
        assert!(is_cut(&cut("length", &[])), "cut before any call");
        assert!(
            !is_cut(&cut("length", &["{\"id\": \"1\"}"])),
            "a complete call at the cap is a call"
        );
        assert!(!is_cut(&cut("tool_calls", &["{\"resource_type\": \"Pat"])), "malformed, not cut");
        assert!(!is_cut(&cut("stop", &[])));
        assert_eq!(
            cut_note(7),
            "Your reply was cut at 7 tokens before the call was complete; write a shorter call."
        );
        assert!(cut_note(0).contains("cut at the reply limit"));
    }

    #[test]
    fn long_results_are_fitted_and_short_ones_are_untouched() {
        let entries: Vec<Value> = (0..50)
            .map(|i| json!({"resource": {"resourceType": "Observation", "id": format!("o{i}"), "note": "x".repeat(100)}}))
            .collect();
        let bundle = json!({"resourceType": "Bundle", "type": "searchset", "total": 50, "entry": entries});
        let (same, cut) = fit_result(bundle.clone(), 100_000);
        assert!(!cut);
        assert_eq!(same, bundle);
        let (fitted, cut) = fit_result(bundle.clone(), 2_000);
        assert!(cut);
        let text = fitted.to_string();
        assert!(text.len() <= 2_000, "{}", text.len());
        let kept = fitted["entry"].as_array().unwrap();
        assert!(!kept.is_empty() && kept.len() < 50);
        assert_eq!(
            kept[..],
            bundle["entry"].as_array().unwrap()[..kept.len()],
            "the first entries, in order"
        );
        let note = fitted["emrgym_note"].as_str().unwrap();
        assert!(note.contains(&format!("the first {} of its 50 entries", kept.len())), "{note}");
        assert_eq!(fitted["total"], 50, "the rest of the Bundle is kept");
        // the entry that would just not fit is left out: one more would pass the limit
        let mut one_more = fitted.clone();
        one_more["entry"].as_array_mut().unwrap().push(bundle["entry"][kept.len()].clone());
        assert!(one_more.to_string().len() > 2_000);
        // not a Bundle: cut text with the note
        let big = json!({"resourceType": "Patient", "text": "y".repeat(10_000)});
        let (fitted, cut) = fit_result(big, 3_000);
        assert!(cut);
        assert_eq!(fitted["truncated"], true);
        assert!(fitted.to_string().len() <= 3_000);
        assert!(fitted["emrgym_note"].as_str().unwrap().contains("only its beginning"));
        // 0: no limit
        assert!(!fit_result(bundle, 0).1);
    }

    #[test]
    fn the_default_reply_cap_is_the_rule_applied_to_the_measured_largest_call() {
        // docs/agent.md: the next power of two at or above twice the largest reference call
        // (470 tokens pretty-printed, Qwen2.5 tokenizer, `emrgym model budget`)
        let largest = 470u32;
        assert_eq!(DEFAULT_REPLY_TOKENS, (2 * largest).next_power_of_two());
        assert_eq!(LlamaConfig::for_model("m.gguf".into()).max_reply_tokens, DEFAULT_REPLY_TOKENS);
        let cfg: LlamaConfig = serde_json::from_value(json!({"model_path": "m.gguf"})).unwrap();
        assert_eq!(
            (cfg.max_reply_tokens, cfg.n_ctx),
            (DEFAULT_REPLY_TOKENS, 0),
            "0: the model's trained context"
        );
    }
}

fn truncate(s: &str, n: usize) -> String {
    if s.len() <= n {
        return s.to_string();
    }
    let mut end = n;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &s[..end])
}

/// The hash of a request (messages and tools), for cassettes.
pub fn request_hash(messages: &[Value], tools: &Value) -> String {
    let mut h = Sha256::new();
    h.update(serde_json::to_vec(&json!({"messages": messages, "tools": tools})).unwrap_or_default());
    format!("{:x}", h.finalize())
}

/// Recorded replies by request hash.
#[derive(Debug, Clone, Default)]
pub struct Cassette {
    replies: Arc<Mutex<BTreeMap<String, Reply>>>,
    protocol: ToolProtocol,
}

impl Cassette {
    /// A cassette with these replies (native tool calls).
    pub fn new(replies: BTreeMap<String, Reply>) -> Cassette {
        Cassette::with_protocol(replies, ToolProtocol::Native)
    }

    /// A cassette recorded with this tool protocol (the protocol shapes the requests, so a
    /// replay must use the recording's).
    pub fn with_protocol(replies: BTreeMap<String, Reply>, protocol: ToolProtocol) -> Cassette {
        Cassette {
            replies: Arc::new(Mutex::new(replies)),
            protocol,
        }
    }

    /// Recorded replies.
    pub fn len(&self) -> usize {
        self.replies.lock().map(|m| m.len()).unwrap_or(0)
    }

    /// No recorded reply.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Record a reply.
    pub fn record(&self, hash: String, reply: Reply) {
        if let Ok(mut m) = self.replies.lock() {
            m.insert(hash, reply);
        }
    }

    /// Every recorded reply.
    pub fn replies(&self) -> BTreeMap<String, Reply> {
        self.replies.lock().map(|m| m.clone()).unwrap_or_default()
    }
}

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
        self.requests.lock().map(|r| r.clone()).unwrap_or_default()
    }

    fn next(&self, messages: &[Value]) -> Reply {
        if let Ok(mut r) = self.requests.lock() {
            r.push(messages.to_vec());
        }
        self.replies.lock().ok().and_then(|mut r| r.pop_front()).unwrap_or(Reply {
            text: Some("(the script has ended)".into()),
            tool_calls: Vec::new(),
            prompt_tokens: 0,
            completion_tokens: 0,
            finish_reason: Some("stop".into()),
        })
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
    Llama(super::llama::LlamaHandle),
}

impl Backend {
    /// Ask for a reply.
    pub async fn complete(&self, messages: &[Value], tools: &Value) -> Result<Reply, BackendError> {
        match self {
            Backend::OpenAi(b) => b.complete(messages, tools).await,
            Backend::Cassette(c) => {
                let h = request_hash(messages, tools);
                c.replies.lock().ok().and_then(|m| m.get(&h).cloned()).ok_or_else(|| {
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

/// Episode limits.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Tool calls.
    pub max_steps: u32,
    /// Model turns.
    pub max_turns: u32,
    /// Prompt + completion tokens over the episode (0: no cap).
    pub max_tokens: u64,
    /// Wall time, seconds (0: no wall-time limit).
    pub timeout_s: f64,
    /// Consecutive turns whose tool calls could not be parsed before giving up.
    pub max_parse_errors: u32,
    /// Longest tool result put into the conversation, in characters of JSON: a longer search
    /// Bundle keeps its first entries and says how many it left out and how to page; any
    /// other longer result is cut with a note. The step records what the model was shown.
    #[serde(default = "default_result_chars")]
    pub max_result_chars: usize,
}

/// The default [`Limits::max_result_chars`]: see docs/agent.md ("Harness failures").
pub const DEFAULT_RESULT_CHARS: usize = 24_000;

fn default_result_chars() -> usize {
    DEFAULT_RESULT_CHARS
}

/// Consecutive replies cut by the reply cap before their call was complete that end the
/// episode `max_tokens` (one is answered with a note and the model writes again).
pub const CUT_REPLIES_TO_END: u32 = 2;

/// The note a cut reply is answered with.
pub fn cut_note(tokens: u64) -> String {
    let at = if tokens > 0 {
        format!("{tokens} tokens")
    } else {
        "the reply limit".to_string()
    };
    format!("Your reply was cut at {at} before the call was complete; write a shorter call.")
}

/// A tool result that fits `max_chars` (as JSON text), and whether it was shortened. A
/// searchset Bundle keeps its first entries (the page order the server gave) and gains an
/// `emrgym_note` naming how many it left out and how to ask for fewer; anything else is
/// cut to its first characters, with the same kind of note.
pub fn fit_result(content: Value, max_chars: usize) -> (Value, bool) {
    let full = content.to_string();
    if max_chars == 0 || full.len() <= max_chars {
        return (content, false);
    }
    if let Some(entries) = content.get("entry").and_then(Value::as_array) {
        let n = entries.len();
        let note_for = |k: usize| {
            format!(
                "This result was {} characters, more than the {max_chars} a tool result may take in this conversation: it shows the first {k} of its {n} entries. Ask for fewer with _count (and page with _offset), or narrow the search.",
                full.len()
            )
        };
        let mut base = content.clone();
        if let Some(o) = base.as_object_mut() {
            o.insert("entry".into(), json!([]));
            o.insert("emrgym_note".into(), json!(note_for(n)));
        }
        let mut size = base.to_string().len();
        let mut k = 0;
        for e in entries {
            let add = e.to_string().len() + usize::from(k > 0);
            if size + add > max_chars {
                break;
            }
            size += add;
            k += 1;
        }
        let mut out = content.clone();
        if let Some(o) = out.as_object_mut() {
            o.insert("entry".into(), Value::Array(entries[..k].to_vec()));
            o.insert("emrgym_note".into(), json!(note_for(k)));
        }
        return (out, true);
    }
    let keep = max_chars.saturating_sub(400).max(max_chars / 2);
    let mut end = keep.min(full.len());
    while !full.is_char_boundary(end) {
        end -= 1;
    }
    (
        json!({
            "truncated": true,
            "chars": full.len(),
            "text": &full[..end],
            "emrgym_note": format!("This result was {} characters, more than the {max_chars} a tool result may take in this conversation: only its beginning is shown. Ask for less (a narrower search, _count, _elements).", full.len()),
        }),
        true,
    )
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_steps: 30,
            max_turns: 30,
            max_tokens: 200_000,
            timeout_s: 600.0,
            max_parse_errors: 3,
            max_result_chars: DEFAULT_RESULT_CHARS,
        }
    }
}

/// What the agent is told.
#[derive(Debug, Clone, PartialEq)]
pub struct Briefing {
    /// The task.
    pub instruction: String,
    /// Facts the task gives.
    pub context: String,
    /// The clinical now.
    pub now: String,
    /// The FHIR base the tools act on.
    pub fhir_base: String,
}

/// The system prompt for an episode. It holds nothing episode-specific (the clinical now
/// and the task are in [`user_prompt`]): with the tool schemas that the chat template puts
/// after it, it is a prefix shared by every episode with the same tools, which the
/// in-process backend evaluates once per run (`agent::llama`).
pub fn system_prompt(b: &Briefing, protocol: ToolProtocol, tools: &Value) -> String {
    let mut s = format!(
        "You are a clinician's assistant working inside an electronic health record (FHIR R4 at {}). \
Use the tools to read the record, compute, and write orders or observations; \
every write really lands in the record. Patients are identified by their MRN, which is also their FHIR id. \
When the task is complete, call `finish` with the answer in the format the task asks for; \
when the task says what to answer if a value is not in the record (for example -1), answer that. \
If the task cannot be done at all (no such patient, a tool it needs is missing, the order is contraindicated), \
call `finish` with outcome \"cannot_complete\", the reason, and a short explanation as the answer. \
Do not make writes the task does not ask for.",
        b.fhir_base
    );
    if protocol == ToolProtocol::Text {
        s.push_str("\n\nTools (JSON Schema of arguments):\n");
        for t in tools.as_array().into_iter().flatten() {
            let f = &t["function"];
            s.push_str(&format!(
                "- {}: {}\n  arguments: {}\n",
                f["name"].as_str().unwrap_or_default(),
                f["description"].as_str().unwrap_or_default(),
                f["parameters"]
            ));
        }
        s.push_str("\nTo call a tool, reply with exactly one block:\n<tool_call>\n{\"name\": \"TOOL\", \"arguments\": {...}}\n</tool_call>\nThe result comes back in a <tool_response> block.");
    }
    s
}

/// The first user message: the clinical now, the task and the facts it gives.
pub fn user_prompt(b: &Briefing) -> String {
    if b.context.trim().is_empty() {
        format!("It is now {}.\n\n{}", b.now, b.instruction)
    } else {
        format!("It is now {}.\n\n{}\n\nContext: {}", b.now, b.instruction, b.context)
    }
}

/// Guided-mode guidance: asked after every step for the text to add to the next request.
pub type GuidanceFn<'a> = &'a mut (dyn FnMut(&[Step]) -> Option<String> + Send);

/// What an episode can be hooked up to besides the model and the tools.
#[derive(Default)]
pub struct Hooks<'a> {
    /// Guided mode: asked after every step for the text to add to the next request (the
    /// steps that can be done now); it must never reveal a branch.
    pub guidance: Option<GuidanceFn<'a>>,
    /// Record every reply under its request hash.
    pub record: Option<&'a Cassette>,
    /// Cancellation (Ctrl-C): the episode ends `cancelled` at once, even mid-request.
    pub cancel: Option<CancellationToken>,
}

/// Stands for "no wall-time limit" (about 31 years).
const NO_WALL_LIMIT: Duration = Duration::from_secs(1 << 30);

/// A reply cut by the reply cap (`finish_reason: length`) before its call was complete: no
/// call, or a call whose arguments are not yet a JSON value.
pub fn is_cut(reply: &Reply) -> bool {
    reply.finish_reason.as_deref() == Some("length")
        && (reply.tool_calls.is_empty()
            || reply
                .tool_calls
                .iter()
                .any(|(_, _, raw)| !raw.trim().is_empty() && serde_json::from_str::<Value>(raw).is_err()))
}

/// Run one model episode.
pub async fn run_model_episode(
    backend: &Backend,
    registry: &Registry,
    fhir: &mut (dyn FhirBackend + Send),
    briefing: &Briefing,
    limits: Limits,
    hooks: Hooks<'_>,
) -> Trajectory {
    let Hooks {
        mut guidance,
        record,
        cancel,
    } = hooks;
    let cancel = cancel.unwrap_or_default();
    let protocol = backend.protocol();
    let tools = registry.openai_tools();
    let mut messages: Vec<Value> = vec![
        json!({"role": "system", "content": system_prompt(briefing, protocol, &tools)}),
        json!({"role": "user", "content": user_prompt(briefing)}),
    ];
    let mut traj = Trajectory::new(Vec::new(), EndReason::Stopped);
    let started = Instant::now();
    let deadline = if limits.timeout_s > 0.0 && limits.timeout_s.is_finite() {
        Duration::from_secs_f64(limits.timeout_s.min(NO_WALL_LIMIT.as_secs_f64()))
    } else {
        NO_WALL_LIMIT
    };
    let mut tokens = 0u64;
    let mut parse_errors = 0u32;
    let mut cut_replies = 0u32;
    let mut last_guidance: Option<String> = None;
    let mut sent_upto = 0usize;
    loop {
        if cancel.is_cancelled() {
            traj.end = EndReason::Cancelled;
            traj.detail = Some("the run was interrupted".into());
            return traj;
        }
        if traj.turns.len() as u32 >= limits.max_turns {
            traj.end = EndReason::MaxTurns;
            return traj;
        }
        if limits.max_tokens > 0 && tokens >= limits.max_tokens {
            traj.end = EndReason::MaxTokens;
            traj.detail = Some(format!(
                "token budget: the episode used {tokens} tokens of its {}",
                limits.max_tokens
            ));
            return traj;
        }
        if let Some(g) = guidance.as_mut()
            && let Some(text) = g(&traj.steps)
            && last_guidance.as_ref() != Some(&text)
        {
            messages.push(json!({"role": "user", "content": text.clone()}));
            last_guidance = Some(text);
        }
        let remaining = if limits.timeout_s > 0.0 {
            let Some(r) = deadline.checked_sub(started.elapsed()) else {
                traj.end = EndReason::Timeout;
                traj.detail = Some(format!("episode wall time of {} s exceeded", limits.timeout_s));
                return traj;
            };
            r
        } else {
            NO_WALL_LIMIT
        };
        let hash = request_hash(&messages, &tools);
        let sent: Vec<Value> = messages[sent_upto..]
            .iter()
            .filter(|m| m.get("role").and_then(Value::as_str) != Some("assistant"))
            .cloned()
            .collect();
        sent_upto = messages.len();
        let t0 = Instant::now();
        let request = tokio::time::timeout(remaining, backend.complete(&messages, &tools));
        let reply = match tokio::select! {
            r = request => Some(r),
            () = cancel.cancelled() => None,
        } {
            None => {
                traj.end = EndReason::Cancelled;
                traj.detail = Some("the run was interrupted during a model request".into());
                return traj;
            }
            Some(Err(_)) => {
                traj.end = EndReason::Timeout;
                traj.detail = Some(format!("episode wall time of {} s exceeded", limits.timeout_s));
                return traj;
            }
            Some(Ok(Err(e))) => {
                traj.end = e.end_reason();
                traj.detail = Some(e.to_string());
                return traj;
            }
            Some(Ok(Ok(r))) => r,
        };
        if let Some(c) = record {
            c.record(hash.clone(), reply.clone());
        }
        tokens += reply.prompt_tokens + reply.completion_tokens;
        let turn_index = traj.turns.len();
        traj.turns.push(Turn {
            request_sha256: hash,
            messages: messages.len(),
            sent,
            text: reply.text.clone(),
            tool_calls: reply
                .tool_calls
                .iter()
                .map(|(id, name, arguments)| RawCall {
                    id: id.clone(),
                    name: name.clone(),
                    arguments: arguments.clone(),
                })
                .collect(),
            prompt_tokens: reply.prompt_tokens,
            completion_tokens: reply.completion_tokens,
            latency_ms: t0.elapsed().as_millis() as u64,
            finish_reason: reply.finish_reason.clone(),
        });
        // a reply the reply cap cut before its call was complete is answered, not parsed: it is
        // the harness's limit, not a malformed call (docs/agent.md, "Harness failures")
        if is_cut(&reply) {
            cut_replies += 1;
            if cut_replies >= CUT_REPLIES_TO_END {
                traj.end = EndReason::MaxTokens;
                traj.detail = Some(format!(
                    "reply cap: {cut_replies} replies in a row were cut at {} tokens before the call was complete",
                    reply.completion_tokens
                ));
                return traj;
            }
            messages.push(json!({"role": "assistant", "content": reply.text.clone().unwrap_or_default()}));
            messages.push(json!({"role": "user", "content": cut_note(reply.completion_tokens)}));
            continue;
        }
        cut_replies = 0;
        if reply.tool_calls.is_empty() {
            traj.end = EndReason::Stopped;
            traj.detail = reply.text.clone();
            return traj;
        }
        // the assistant message, with malformed arguments repaired to valid JSON
        let mut parsed: Vec<(String, String, Result<Value, String>)> = Vec::new();
        for (id, name, raw) in &reply.tool_calls {
            let args = if raw.trim().is_empty() {
                Ok(json!({}))
            } else {
                serde_json::from_str::<Value>(raw).map_err(|e| {
                    format!("the arguments of {name} are not valid JSON: {e}. Send the call again with a JSON object of arguments.")
                })
            };
            let args = match args {
                Ok(Value::Object(m)) => Ok(Value::Object(m)),
                Ok(other) => Err(format!("the arguments of {name} must be a JSON object, got {other}")),
                Err(e) => Err(e),
            };
            let name = if name.is_empty() {
                "(missing name)".to_string()
            } else {
                name.clone()
            };
            parsed.push((id.clone(), name, args));
        }
        let all_bad = parsed.iter().all(|(_, _, a)| a.is_err());
        match protocol {
            ToolProtocol::Native => messages.push(json!({
                "role": "assistant",
                "content": reply.text.clone().unwrap_or_default(),
                "tool_calls": parsed.iter().map(|(id, name, a)| json!({
                    "id": id, "type": "function",
                    "function": {"name": name, "arguments": a.as_ref().map(|v| v.to_string()).unwrap_or_else(|_| "{}".into())}
                })).collect::<Vec<_>>()
            })),
            ToolProtocol::Text => {
                let text = parsed
                    .iter()
                    .map(|(_, name, a)| {
                        format!(
                            "<tool_call>\n{}\n</tool_call>",
                            json!({"name": name, "arguments": a.as_ref().cloned().unwrap_or_else(|_| json!({}))})
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("\n");
                messages.push(json!({"role": "assistant", "content": text}));
            }
        }
        let mut finished = false;
        for (id, name, args) in parsed {
            let content = match args {
                Err(msg) => json!({"error": msg}),
                Ok(a) => {
                    if traj.steps.len() as u32 >= limits.max_steps {
                        traj.end = EndReason::MaxSteps;
                        return traj;
                    }
                    let mut obs = registry.call(&name, &a, fhir);
                    finished |= obs.ok && obs.answer.is_some();
                    // a result too long for the conversation is shortened with a note on how
                    // to ask for less; the step records what the model was shown
                    obs.content = fit_result(obs.content, limits.max_result_chars).0;
                    let mut step = Step::new(
                        ToolCall {
                            name: name.clone(),
                            arguments: a,
                        },
                        ToolResult {
                            ok: obs.ok,
                            status: obs.status,
                            content: obs.content.clone(),
                        },
                    );
                    step.turn = Some(turn_index);
                    step.call_id = Some(id.clone());
                    traj.steps.push(step);
                    obs.content
                }
            };
            match protocol {
                ToolProtocol::Native => messages.push(json!({"role": "tool", "tool_call_id": id, "content": content.to_string()})),
                ToolProtocol::Text => {
                    messages.push(json!({"role": "user", "content": format!("<tool_response>\n{content}\n</tool_response>")}))
                }
            }
            if finished {
                traj.end = EndReason::Finished;
                return traj;
            }
        }
        if all_bad {
            parse_errors += 1;
            if parse_errors >= limits.max_parse_errors {
                traj.end = EndReason::ToolCallParseError;
                traj.detail = Some(format!("{parse_errors} consecutive turns without a parseable tool call"));
                return traj;
            }
        } else {
            parse_errors = 0;
        }
    }
}
