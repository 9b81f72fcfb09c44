//! The OpenAI-compatible backend: async-openai with bring-your-own JSON types over a
//! concurrency-limited, retrying HTTP client; failures classified (rate limit, timeout,
//! context overflow) and timeouts retried with backoff.

use super::{BackendError, OpenAiConfig, Reply, ToolProtocol, parse_reply};
use async_openai::Client;
use async_openai::config::OpenAIConfig;
use async_openai::error::OpenAIError;
use serde_json::{Map, Value, json};
use std::time::Duration;

/// An OpenAI-compatible backend.
#[derive(Clone)]
pub struct OpenAiBackend {
    pub(super) cfg: OpenAiConfig,
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

/// Why an OpenAI-compatible backend could not be made ([`OpenAiBackend::new`]).
#[derive(Debug, thiserror::Error)]
pub enum OpenAiError {
    /// The environment variable named by `api_key_env` is not set (or not Unicode).
    #[error("environment variable {0} (api_key_env) is not set")]
    ApiKeyEnv(String),
    /// The HTTP client could not be built.
    #[error("building the HTTP client: {0}")]
    HttpClient(reqwest::Error),
}

impl OpenAiBackend {
    /// A backend for `cfg`; the API key is read from the named environment variable.
    pub fn new(cfg: OpenAiConfig) -> Result<OpenAiBackend, OpenAiError> {
        let mut oc = OpenAIConfig::new().with_api_base(cfg.base_url.clone());
        if let Some(var) = &cfg.api_key_env {
            let key = std::env::var(var).map_err(|_| OpenAiError::ApiKeyEnv(var.clone()))?;
            oc = oc.with_api_key(key);
        } else {
            oc = oc.with_api_key("");
        }
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs_f64(cfg.request_timeout_s.max(0.001)))
            .build()
            .map_err(OpenAiError::HttpClient)?;
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

    pub(super) async fn complete(&self, messages: &[Value], tools: &Value) -> Result<Reply, BackendError> {
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
