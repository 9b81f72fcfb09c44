//! The model behind a run: parsing `--model` (an OpenAI-compatible endpoint, a GGUF file or a
//! known local model), building its backend (fetching a known model when it is missing), and
//! the cassette that re-serves a recorded run's replies offline.

use crate::rundir::{read_results, trajectory_path};
use anyhow::bail;
use emrgym_agent::model::{Backend, Cassette, LlamaConfig, ModelConfig, OpenAiBackend, OpenAiConfig};
use emrgym_scenario::trajectory::{self};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// A cassette of every model reply recorded in a run directory, keyed by request hash.
pub fn load_cassette(dir: &Path, protocol: emrgym_agent::model::ToolProtocol) -> anyhow::Result<Cassette> {
    let mut replies = BTreeMap::new();
    for r in read_results(&dir.join("results.jsonl"))? {
        let path = trajectory_path(dir, &r.instance, r.trial);
        let f = trajectory::file::read(&path).map_err(anyhow::Error::msg)?;
        for t in f.trajectory.turns {
            replies.insert(
                t.request_sha256.clone(),
                emrgym_agent::model::Reply {
                    text: t.text,
                    tool_calls: t.tool_calls.into_iter().map(|c| (c.id, c.name, c.arguments)).collect(),
                    prompt_tokens: t.prompt_tokens,
                    completion_tokens: t.completion_tokens,
                    finish_reason: t.finish_reason,
                },
            );
        }
    }
    if replies.is_empty() {
        bail!("--replay-model {}: the run recorded no model replies", dir.display());
    }
    Ok(Cassette::with_protocol(replies, protocol))
}

/// The local model used when a model agent has no model configured.
pub const DEFAULT_LOCAL_MODEL: &str = "qwen2.5-coder-0.5b";

/// Parse `--model`: `openai:MODEL@BASE_URL`, a `.gguf` path, or a known local model name.
pub fn parse_model(m: &str, old: Option<&ModelConfig>) -> anyhow::Result<ModelConfig> {
    if let Some(spec) = m.strip_prefix("openai:") {
        let mut cfg = OpenAiConfig::from_spec(spec).map_err(anyhow::Error::msg)?;
        if let Some(ModelConfig::Openai(old)) = old {
            cfg.api_key_env = old.api_key_env.clone();
            cfg.tool_protocol = old.tool_protocol;
            cfg.temperature = old.temperature;
        }
        return Ok(ModelConfig::Openai(cfg));
    }
    let path = if m.ends_with(".gguf") {
        PathBuf::from(m)
    } else if let Ok(known) = super::model::find(m) {
        super::model::model_path(&super::model::default_cache(), known)
    } else {
        bail!(
            "--model '{m}' must be openai:MODEL@BASE_URL, a .gguf file, or a local model ({})",
            super::model::MODELS.iter().map(|k| k.name).collect::<Vec<_>>().join(", ")
        );
    };
    let mut cfg = LlamaConfig::for_model(path);
    if let Some(ModelConfig::Llama(old)) = old {
        cfg.threads = old.threads;
        cfg.n_ctx = old.n_ctx;
        cfg.temperature = old.temperature;
    }
    Ok(ModelConfig::Llama(cfg))
}

/// Build the backend for a run (fetching a known local model when it is missing).
pub(crate) fn make_backend(m: &ModelConfig) -> anyhow::Result<Backend> {
    match m {
        ModelConfig::Openai(o) => Ok(Backend::OpenAi(Box::new(
            OpenAiBackend::new(o.clone()).map_err(anyhow::Error::msg)?,
        ))),
        ModelConfig::Llama(l) => {
            let cache = super::model::default_cache();
            if !l.model_path.exists()
                && let Some(known) = super::model::MODELS
                    .iter()
                    .find(|k| super::model::model_path(&cache, k) == l.model_path)
            {
                eprintln!("{} is not installed: fetching it ...", known.name);
                super::model::fetch(known, &cache)?;
            }
            llama_backend(l)
        }
    }
}

#[cfg(feature = "llama")]
fn llama_backend(l: &LlamaConfig) -> anyhow::Result<Backend> {
    Ok(Backend::Llama(
        emrgym_agent::llama::LlamaHandle::start(l.clone()).map_err(anyhow::Error::msg)?,
    ))
}

#[cfg(not(feature = "llama"))]
fn llama_backend(l: &LlamaConfig) -> anyhow::Result<Backend> {
    bail!(
        "{}: this emrgym was built without the in-process llama.cpp backend (cargo feature `llama`); serve the GGUF with llama-server and use --model openai:NAME@http://HOST:PORT/v1",
        l.model_path.display()
    )
}
