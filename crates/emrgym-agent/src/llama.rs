//! The in-process llama.cpp backend (cargo feature `llama`): loads a GGUF, renders the
//! model's own Jinja chat template with the tools (minijinja; llama-cpp-2's built-in
//! formatter does not support tools), prefills the assistant turn with `<tool_call>\n`,
//! constrains the call with a grammar generated from the tools' JSON Schemas (so even a
//! small model emits a valid call), and keeps the KV cache across turns so each turn only
//! processes the tokens that changed. The model runs on its own thread behind a channel;
//! the async runtime is never blocked.

use super::model::{BackendError, LlamaConfig, Reply};
use llama_cpp_2::context::params::LlamaContextParams;
use llama_cpp_2::llama_backend::LlamaBackend as Ggml;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::model::params::LlamaModelParams;
use llama_cpp_2::sampling::LlamaSampler;
use llama_cpp_2::token::LlamaToken;
use llama_cpp_2::token::data::LlamaTokenData;
use llama_cpp_2::token::data_array::LlamaTokenDataArray;
use serde::Serialize;
use serde_json::{Value, json};
use std::num::NonZeroU32;
use std::time::Instant;

/// Timing of one reply (for benchmarks).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct ReplyTiming {
    /// Tokens evaluated for the prompt this turn (after KV-cache reuse).
    pub prefilled: usize,
    /// Tokens whose KV state was restored from the shared-prefix cache this turn.
    pub restored: usize,
    /// Tokens of the whole prompt.
    pub prompt: usize,
    /// Tokens generated.
    pub generated: usize,
    /// Prompt evaluation, seconds.
    pub prefill_s: f64,
    /// Generation, seconds.
    pub decode_s: f64,
}

struct Job {
    messages: Vec<Value>,
    tools: Value,
    reply: tokio::sync::oneshot::Sender<Result<(Reply, ReplyTiming), BackendError>>,
}

/// A handle to the model thread.
#[derive(Debug, Clone)]
pub struct LlamaHandle {
    tx: std::sync::mpsc::Sender<Job>,
    timings: std::sync::Arc<std::sync::Mutex<Vec<ReplyTiming>>>,
}

/// Why the in-process model could not start or a prompt could not be rendered; each names
/// the model file or the template stage at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LlamaError {
    /// llama.cpp's backend did not initialise.
    #[error("llama.cpp backend: {0}")]
    Backend(String),
    /// The model file is missing.
    #[error("model file {} does not exist (emrgym model fetch installs one)", .0.display())]
    NoModelFile(std::path::PathBuf),
    /// The vocabulary of a GGUF did not load (tokenizer only).
    #[error("loading the vocabulary of {}: {message}", path.display())]
    Vocabulary {
        /// The GGUF.
        path: std::path::PathBuf,
        /// llama.cpp's message.
        message: String,
    },
    /// The model did not load.
    #[error("loading {}: {message}", path.display())]
    Load {
        /// The GGUF.
        path: std::path::PathBuf,
        /// llama.cpp's message.
        message: String,
    },
    /// The GGUF has no chat template.
    #[error("{} has no chat template: {message}", path.display())]
    NoTemplate {
        /// The GGUF.
        path: std::path::PathBuf,
        /// llama.cpp's message.
        message: String,
    },
    /// The context could not be created.
    #[error("creating the context: {0}")]
    Context(String),
    /// The chat template does not compile.
    #[error("chat template: {0}")]
    Template(String),
    /// The chat template fails on these messages.
    #[error("rendering the chat template: {0}")]
    Render(String),
    /// The model thread could not be started.
    #[error("starting the model thread: {0}")]
    Thread(String),
    /// The model thread ended before it reported the model loaded.
    #[error("the model thread stopped while loading")]
    Stopped,
}

/// The grammar of one tool call: `{"name": T, "arguments": ARGS(T)}` over the tools.
pub(crate) fn tool_call_schema(tools: &Value) -> Value {
    let alts: Vec<Value> = tools
        .as_array()
        .into_iter()
        .flatten()
        .map(|t| {
            let f = &t["function"];
            json!({
                "type": "object",
                "properties": {"name": {"const": f["name"]}, "arguments": f["parameters"]},
                "required": ["name", "arguments"],
                "additionalProperties": false
            })
        })
        .collect();
    json!({"oneOf": alts})
}

fn render(template: &str, messages: &[Value], tools: &Value, bos: &str, eos: &str) -> Result<String, LlamaError> {
    let mut env = minijinja::Environment::new();
    env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
    env.add_function("raise_exception", |msg: String| -> Result<String, minijinja::Error> {
        Err(minijinja::Error::new(minijinja::ErrorKind::InvalidOperation, msg))
    });
    env.add_template("chat", template)
        .map_err(|e| LlamaError::Template(e.to_string()))?;
    // templates expect tool-call arguments as objects
    let msgs: Vec<Value> = messages
        .iter()
        .map(|m| {
            let mut m = m.clone();
            if let Some(calls) = m.get_mut("tool_calls").and_then(Value::as_array_mut) {
                for c in calls {
                    if let Some(a) = c.pointer_mut("/function/arguments")
                        && let Some(s) = a.as_str()
                    {
                        // arguments that are not JSON (a reply the loop refused and answered with
                        // the parse error) render as `{}`: the template needs an object
                        *a = serde_json::from_str(s).unwrap_or(json!({}));
                    }
                }
            }
            m
        })
        .collect();
    let tmpl = env.get_template("chat").map_err(|e| LlamaError::Template(e.to_string()))?;
    let text = tmpl
        .render(minijinja::context! {
            messages => minijinja::Value::from_serialize(&msgs),
            tools => minijinja::Value::from_serialize(tools),
            add_generation_prompt => true,
            bos_token => bos,
            eos_token => eos,
        })
        .map_err(|e| LlamaError::Render(e.to_string()))?;
    Ok(undouble_example(text))
}

/// The tool-call example of the Qwen2.5-Coder-1.5B template as it renders (its Jinja string
/// literal has `{{\"name\": ...}}`, so the braces come out doubled), and as it should read.
const DOUBLED_EXAMPLE: (&str, &str) = (
    "{{\"name\": <function-name>, \"arguments\": <args-json-object>}}",
    "{\"name\": <function-name>, \"arguments\": <args-json-object>}",
);

/// A rendered prompt with the doubled-brace tool-call example written as the call format
/// really is (a model that copied the example would write calls that do not parse).
pub(crate) fn undouble_example(prompt: String) -> String {
    if prompt.contains(DOUBLED_EXAMPLE.0) {
        prompt.replace(DOUBLED_EXAMPLE.0, DOUBLED_EXAMPLE.1)
    } else {
        prompt
    }
}

/// The smallest default context: the suite's longest reference conversation (31,656
/// tokens, `horizon_mrn_32` in guided mode, Qwen2.5 tokenizer; 31,890 with SmolLM2's;
/// re-measured after the clinical now moved to the first user message)
/// plus the default reply cap, rounded up to a multiple of 4,096 (`emrgym model budget`).
pub(crate) const MIN_DEFAULT_CTX: u32 = 36_864;

/// The context size: the configured one, or (0) the larger of the model's trained context
/// and [`MIN_DEFAULT_CTX`], so that no reference conversation overflows because of it.
pub(crate) fn context_size(configured: u32, trained: u32) -> u32 {
    if configured == 0 {
        trained.max(MIN_DEFAULT_CTX)
    } else {
        configured.max(512)
    }
}

/// What the in-process model appends to every rendered prompt: the assistant turn is
/// prefilled with the opening tag, so the reply is the call's JSON.
pub const PREFILL: &str = "<tool_call>\n";

/// A model's tokenizer and chat template without its weights (llama.cpp's vocab-only load):
/// counts tokens exactly as the in-process backend does (`emrgym model budget`).
pub struct Tokenizer {
    model: LlamaModel,
    template: String,
    bos: String,
    eos: String,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer").finish_non_exhaustive()
    }
}

impl Tokenizer {
    /// Load the vocabulary and chat template of a GGUF.
    pub fn load(path: &std::path::Path) -> Result<Tokenizer, LlamaError> {
        let model = LlamaModel::load_from_file(ggml()?, path, &LlamaModelParams::default().with_vocab_only(true)).map_err(|e| {
            LlamaError::Vocabulary {
                path: path.to_path_buf(),
                message: e.to_string(),
            }
        })?;
        let template = model.meta_val_str("tokenizer.chat_template").map_err(|e| LlamaError::NoTemplate {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        let vocab = model.vocab();
        let piece = |t: LlamaToken| String::from_utf8_lossy(&vocab.token_to_piece(t, true, None)).into_owned();
        let (bos, eos) = (piece(vocab.bos()), piece(vocab.eos()));
        Ok(Tokenizer { model, template, bos, eos })
    }

    /// Tokens of a text (special tokens parsed, no BOS added: as the backend tokenizes).
    pub fn count(&self, text: &str) -> usize {
        self.model.vocab().tokenize(text.as_bytes(), false, true).len()
    }

    /// The prompt the backend would evaluate for these messages and tools (template,
    /// then the prefill).
    pub fn prompt(&self, messages: &[Value], tools: &Value) -> Result<String, LlamaError> {
        let mut p = render(&self.template, messages, tools, &self.bos, &self.eos)?;
        p.push_str(PREFILL);
        Ok(p)
    }

    /// The chat template.
    pub fn template(&self) -> &str {
        &self.template
    }
}

/// Stands for the first user message's content when the shared prefix is rendered.
const USER_MARK: &str = "\u{1}EMRGYM-EPISODE-TEXT\u{1}";

/// The text every prompt of an episode starts with that no episode-specific text precedes:
/// the template rendered with the system message (and the tools) up to where the first
/// user message's content begins. None when the first message is not a system message or
/// the template does not render it first.
pub(crate) fn shared_prefix(template: &str, messages: &[Value], tools: &Value, bos: &str, eos: &str) -> Option<String> {
    let system = messages.first().filter(|m| m["role"] == "system")?;
    let text = render(
        template,
        &[system.clone(), json!({"role": "user", "content": USER_MARK})],
        tools,
        bos,
        eos,
    )
    .ok()?;
    let at = text.find(USER_MARK)?;
    Some(text[..at].to_string())
}

/// Length of the common prefix of two token sequences.
fn common<T: PartialEq>(a: &[T], b: &[T]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

/// The KV state of every distinct shared prefix evaluated in this run (one per tool set),
/// least recently used evicted beyond a byte budget.
struct PrefixCache {
    entries: Vec<(Vec<LlamaToken>, llama_cpp_2::context::session::SeqState, u64)>,
    bytes: usize,
    clock: u64,
}

/// Host memory the prefix states may take (one Qwen2.5-0.5B prefix of 2,300 tokens is about
/// 28 MB of KV, a 1.5B one about 65 MB).
const PREFIX_CACHE_BYTES: usize = 1 << 30;

impl PrefixCache {
    fn get(&mut self, prefix: &[LlamaToken]) -> Option<&llama_cpp_2::context::session::SeqState> {
        self.clock += 1;
        let now = self.clock;
        let e = self.entries.iter_mut().find(|e| e.0 == prefix)?;
        e.2 = now;
        Some(&e.1)
    }

    fn contains(&self, prefix: &[LlamaToken]) -> bool {
        self.entries.iter().any(|e| e.0 == prefix)
    }

    fn insert(&mut self, prefix: Vec<LlamaToken>, state: llama_cpp_2::context::session::SeqState) {
        self.clock += 1;
        self.bytes += state.byte_len();
        self.entries.push((prefix, state, self.clock));
        while self.bytes > PREFIX_CACHE_BYTES && self.entries.len() > 1 {
            let Some((i, _)) = self.entries.iter().enumerate().min_by_key(|(_, e)| e.2) else {
                break;
            };
            let (_, s, _) = self.entries.swap_remove(i);
            self.bytes -= s.byte_len();
        }
    }
}

impl LlamaHandle {
    /// Load the model on its own thread; errors (missing file, bad GGUF) come back here.
    pub fn start(cfg: LlamaConfig) -> Result<LlamaHandle, LlamaError> {
        if !cfg.model_path.exists() {
            return Err(LlamaError::NoModelFile(cfg.model_path));
        }
        let (tx, rx) = std::sync::mpsc::channel::<Job>();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<(), LlamaError>>();
        std::thread::Builder::new()
            .name("llama".into())
            .spawn(move || worker(cfg, rx, ready_tx))
            .map_err(|e| LlamaError::Thread(e.to_string()))?;
        ready_rx.recv().map_err(|_| LlamaError::Stopped)??;
        Ok(LlamaHandle {
            tx,
            timings: std::sync::Arc::default(),
        })
    }

    /// The timing of every reply so far.
    pub fn timings(&self) -> Vec<ReplyTiming> {
        // a poisoned lock still holds every timing recorded: recovered, never read as none
        emrgym_core::sync::lock(&self.timings).clone()
    }

    /// Ask for a reply (awaits the model thread).
    pub async fn complete(&self, messages: &[Value], tools: &Value) -> Result<(Reply, ReplyTiming), BackendError> {
        let (reply, rx) = tokio::sync::oneshot::channel();
        self.tx
            .send(Job {
                messages: messages.to_vec(),
                tools: tools.clone(),
                reply,
            })
            .map_err(|_| BackendError::Other("the model thread has stopped".into()))?;
        let r = rx
            .await
            .map_err(|_| BackendError::Other("the model thread dropped the request".into()))?;
        if let Ok((_, t)) = &r {
            emrgym_core::sync::lock(&self.timings).push(*t);
        }
        r
    }
}

static GGML: std::sync::OnceLock<Result<Ggml, LlamaError>> = std::sync::OnceLock::new();

/// The process-wide llama.cpp backend (it can be initialised only once); llama.cpp's own
/// logs go to `tracing` (see `EMRGYM_LOG`), not to stderr.
pub fn ggml() -> Result<&'static Ggml, LlamaError> {
    GGML.get_or_init(|| {
        llama_cpp_2::send_logs_to_tracing(llama_cpp_2::LogOptions::default());
        Ggml::init().map_err(|e| LlamaError::Backend(e.to_string()))
    })
    .as_ref()
    .map_err(Clone::clone)
}

fn worker(cfg: LlamaConfig, rx: std::sync::mpsc::Receiver<Job>, ready: std::sync::mpsc::Sender<Result<(), LlamaError>>) {
    let fail = |m: LlamaError| {
        let _ = ready.send(Err(m));
    };
    let ggml = match ggml() {
        Ok(b) => b,
        Err(e) => return fail(e),
    };
    let model = match LlamaModel::load_from_file(ggml, &cfg.model_path, &LlamaModelParams::default()) {
        Ok(m) => m,
        Err(e) => {
            return fail(LlamaError::Load {
                path: cfg.model_path.clone(),
                message: e.to_string(),
            });
        }
    };
    let template = match model.meta_val_str("tokenizer.chat_template") {
        Ok(t) => t,
        Err(e) => {
            return fail(LlamaError::NoTemplate {
                path: cfg.model_path.clone(),
                message: e.to_string(),
            });
        }
    };
    let n_ctx = NonZeroU32::new(context_size(cfg.n_ctx, model.n_ctx_train()));
    let params = LlamaContextParams::default()
        .with_n_ctx(n_ctx)
        .with_n_batch(512)
        .with_n_threads(cfg.threads.max(1))
        .with_n_threads_batch(cfg.threads.max(1));
    let mut ctx = match model.new_context(ggml, params) {
        Ok(c) => c,
        Err(e) => return fail(LlamaError::Context(e.to_string())),
    };
    let vocab = model.vocab();
    let piece = |t: LlamaToken| String::from_utf8_lossy(&vocab.token_to_piece(t, true, None)).into_owned();
    let bos = piece(vocab.bos());
    let eos = piece(vocab.eos());
    let _ = ready.send(Ok(()));
    let mut cached: Vec<LlamaToken> = Vec::new();
    let mut grammar_cache: Option<(String, String)> = None;
    let mut prefixes = PrefixCache {
        entries: Vec::new(),
        bytes: 0,
        clock: 0,
    };
    while let Ok(job) = rx.recv() {
        let result = (|| -> Result<(Reply, ReplyTiming), BackendError> {
            let mut prompt = render(&template, &job.messages, &job.tools, &bos, &eos).map_err(|e| BackendError::Other(e.to_string()))?;
            prompt.push_str(PREFILL);
            let tokens = vocab.tokenize(prompt.as_bytes(), false, true);
            if tokens.len() + cfg.max_reply_tokens as usize > ctx.n_ctx() as usize {
                return Err(BackendError::ContextOverflow(format!(
                    "the prompt has {} tokens; with {} for the reply it exceeds the context of {}",
                    tokens.len(),
                    cfg.max_reply_tokens,
                    ctx.n_ctx()
                )));
            }
            // the shared prefix (system prompt and tools): its tokens as they start this prompt
            // (evaluated in batches of its own whether or not it is cached, so both settings
            // compute an episode's first prompt alike)
            let prefix_len = shared_prefix(&template, &job.messages, &job.tools, &bos, &eos)
                .map(|t| common(&vocab.tokenize(t.as_bytes(), false, true), &tokens))
                .filter(|n| *n < tokens.len())
                .unwrap_or(0);
            // reuse the KV cache for the common prefix with the previous prompt; an episode's
            // first turn reuses at most the shared prefix, so it never depends on which episode
            // ran before it (the same tokens are evaluated in the same batches in any order)
            let first_turn = !job.messages.iter().any(|m| m["role"] == "assistant");
            let mut keep = common(&cached, &tokens);
            if cfg.prefix_cache && first_turn && prefix_len > 0 {
                keep = keep.min(prefix_len);
            }
            if keep == tokens.len() {
                keep = keep.saturating_sub(1); // the last prompt token must be evaluated for logits
            }
            let mut restored = 0;
            if cfg.prefix_cache
                && prefix_len > keep
                && let Some(state) = prefixes.get(&tokens[..prefix_len])
            {
                let _ = ctx.clear_kv_cache_seq(Some(0), None, None);
                match ctx.state_seq_set(state, 0) {
                    Ok(()) => {
                        restored = prefix_len;
                        keep = prefix_len;
                    }
                    Err(e) => {
                        tracing::warn!("restoring a cached prompt prefix failed ({e}); evaluating it");
                        let _ = ctx.clear_kv_cache_seq(Some(0), None, None);
                        keep = 0;
                    }
                }
                cached = tokens[..keep].to_vec();
            } else {
                let _ = ctx.clear_kv_cache_seq(Some(0), Some(keep as u32), None);
                cached.truncate(keep);
            }
            let t0 = Instant::now();
            let n_batch = 512usize;
            let mut pos = keep;
            let want_snapshot = cfg.prefix_cache && prefix_len > 0 && !prefixes.contains(&tokens[..prefix_len]);
            // the prefix is evaluated on its own (batches end at its last token), then snapshotted
            let mut snapshot = |ctx: &llama_cpp_2::context::LlamaContext<'_>, pos: usize| {
                if want_snapshot && pos == prefix_len {
                    match ctx.state_seq_get(0, llama_cpp_2::context::session::LlamaStateSeqFlags::empty()) {
                        Ok(state) => prefixes.insert(tokens[..prefix_len].to_vec(), state),
                        Err(e) => tracing::warn!("saving the prompt prefix's state failed: {e}"),
                    }
                }
            };
            snapshot(&ctx, pos);
            while pos < tokens.len() {
                let stop = if pos < prefix_len { prefix_len } else { tokens.len() };
                let end = (pos + n_batch).min(stop);
                let mut batch = LlamaBatch::new(end - pos, 1);
                for (i, t) in tokens[pos..end].iter().enumerate() {
                    let p = pos + i;
                    batch
                        .add(*t, p as i32, &[0], p + 1 == tokens.len())
                        .map_err(|e| BackendError::Other(e.to_string()))?;
                }
                ctx.decode(&mut batch).map_err(|e| BackendError::Other(format!("decode: {e}")))?;
                cached.extend_from_slice(&tokens[pos..end]);
                pos = end;
                snapshot(&ctx, pos);
            }
            let prefill_s = t0.elapsed().as_secs_f64();
            let prefilled = tokens.len() - keep;
            // sampler: grammar over the tool calls, then greedy or temperature
            let mut grammar = None;
            if cfg.grammar {
                let schema = tool_call_schema(&job.tools).to_string();
                let gbnf = match &grammar_cache {
                    Some((s, g)) if *s == schema => g.clone(),
                    _ => {
                        let g = llama_cpp_2::json_schema_to_grammar(&schema)
                            .map_err(|e| BackendError::Other(format!("grammar from the tool schemas: {e}")))?;
                        grammar_cache = Some((schema, g.clone()));
                        g
                    }
                };
                grammar = Some(LlamaSampler::grammar(&model, &gbnf, "root").map_err(|e| BackendError::Other(format!("grammar: {e}")))?);
            }
            let greedy = cfg.temperature <= 0.0;
            let mut sampler = if greedy {
                None
            } else {
                let mut chain = Vec::new();
                if let Some(g) = grammar.take() {
                    chain.push(g);
                }
                chain.push(LlamaSampler::temp(cfg.temperature));
                chain.push(LlamaSampler::dist(cfg.seed));
                Some(LlamaSampler::chain_simple(chain))
            };
            let t1 = Instant::now();
            let mut out = String::new();
            let mut generated = 0usize;
            let mut finish = "length";
            for n in tokens.len()..tokens.len() + cfg.max_reply_tokens as usize {
                let tok = match sampler.as_mut() {
                    // llama_sampler_sample applies the chain and accepts the token (the grammar advances)
                    Some(s) => s.sample(&ctx, -1),
                    None => {
                        // greedy: take the best token if the grammar allows it, and only otherwise
                        // mask the whole vocabulary with the grammar (what llama.cpp's server does)
                        let logits = ctx.get_logits_ith(-1);
                        let best = logits
                            .iter()
                            .enumerate()
                            .fold((0usize, f32::NEG_INFINITY), |acc, (i, l)| if *l > acc.1 { (i, *l) } else { acc });
                        let mut tok = LlamaToken(best.0 as i32);
                        if let Some(g) = grammar.as_mut() {
                            let mut one = LlamaTokenDataArray::new(vec![LlamaTokenData::new(tok, best.1, 0.0)], false);
                            g.apply(&mut one);
                            if !one.data.first().is_some_and(|d| d.logit().is_finite()) {
                                let mut all = LlamaTokenDataArray::from_iter(
                                    logits
                                        .iter()
                                        .enumerate()
                                        .map(|(i, l)| LlamaTokenData::new(LlamaToken(i as i32), *l, 0.0)),
                                    false,
                                );
                                g.apply(&mut all);
                                tok = all
                                    .data
                                    .iter()
                                    .filter(|d| d.logit().is_finite())
                                    .max_by(|a, b| a.logit().total_cmp(&b.logit()))
                                    .map(|d| d.id())
                                    .unwrap_or(vocab.eos());
                            }
                            g.accept(tok);
                        }
                        tok
                    }
                };
                if vocab.is_eog(tok) {
                    finish = "stop";
                    break;
                }
                generated += 1;
                out.push_str(&piece(tok));
                if cfg.grammar && out.trim_end().ends_with('}') && serde_json::from_str::<Value>(out.trim()).is_ok() {
                    finish = "tool_calls";
                    // keep the token in the cache so the next turn can reuse it
                    let mut batch = LlamaBatch::new(1, 1);
                    batch
                        .add(tok, n as i32, &[0], false)
                        .map_err(|e| BackendError::Other(e.to_string()))?;
                    ctx.decode(&mut batch).map_err(|e| BackendError::Other(format!("decode: {e}")))?;
                    cached.push(tok);
                    break;
                }
                let mut batch = LlamaBatch::new(1, 1);
                batch
                    .add(tok, n as i32, &[0], true)
                    .map_err(|e| BackendError::Other(e.to_string()))?;
                ctx.decode(&mut batch).map_err(|e| BackendError::Other(format!("decode: {e}")))?;
                cached.push(tok);
                if !cfg.grammar && out.contains("</tool_call>") {
                    finish = "tool_calls";
                    break;
                }
            }
            let decode_s = t1.elapsed().as_secs_f64();
            let body = out.split("</tool_call>").next().unwrap_or("").trim().to_string();
            let (name, args) = match serde_json::from_str::<Value>(&body)
                .ok()
                .or_else(|| super::model::undouble_braces(&body))
                .ok_or(())
            {
                Ok(v) => (
                    v["name"].as_str().unwrap_or_default().to_string(),
                    v.get("arguments").map(|a| a.to_string()).unwrap_or_else(|| "{}".into()),
                ),
                Err(_) => (String::new(), body.clone()),
            };
            Ok((
                Reply {
                    text: None,
                    tool_calls: vec![("call_1".into(), name, args)],
                    prompt_tokens: prefilled as u64,
                    completion_tokens: generated as u64,
                    finish_reason: Some(finish.into()),
                },
                ReplyTiming {
                    prefilled,
                    restored,
                    prompt: tokens.len(),
                    generated,
                    prefill_s,
                    decode_s,
                },
            ))
        })();
        let _ = job.reply.send(result);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Qwen2.5's layout: system content, then the tools, then the turns.
    const QWEN_LIKE: &str = r#"{%- if tools %}{{- '<|im_start|>system\n' + messages[0]['content'] + '\n\n# Tools\n<tools>' }}{%- for tool in tools %}{{- '\n' + (tool | tojson) }}{%- endfor %}{{- '\n</tools><|im_end|>\n' }}{%- endif %}{%- for m in messages[1:] %}{{- '<|im_start|>' + m.role + '\n' + m.content + '<|im_end|>\n' }}{%- endfor %}{{- '<|im_start|>assistant\n' }}"#;

    #[test]
    fn the_shared_prefix_is_the_system_prompt_and_tools_and_nothing_of_the_episode() {
        let tools = json!([{"type": "function", "function": {"name": "finish", "parameters": {"type": "object"}}}]);
        let episode = |now: &str, task: &str| {
            vec![
                json!({"role": "system", "content": "You are an assistant."}),
                json!({"role": "user", "content": format!("It is now {now}.\n\n{task}")}),
            ]
        };
        let a = episode("2023-11-13", "Find the potassium.");
        let b = episode("2024-01-02", "Order magnesium.");
        let pa = shared_prefix(QWEN_LIKE, &a, &tools, "", "").unwrap();
        let pb = shared_prefix(QWEN_LIKE, &b, &tools, "", "").unwrap();
        assert_eq!(pa, pb, "the prefix holds nothing episode-specific");
        assert!(pa.ends_with("</tools><|im_end|>\n<|im_start|>user\n"), "{pa}");
        assert!(pa.contains("\"name\":\"finish\""), "the tools are in it: {pa}");
        let whole = render(QWEN_LIKE, &a, &tools, "", "").unwrap();
        assert!(whole.starts_with(&pa) && whole[pa.len()..].starts_with("It is now 2023-11-13."));
        // other tools, another prefix
        let fewer = json!([]);
        assert_ne!(shared_prefix(QWEN_LIKE, &a, &fewer, "", ""), Some(pa.clone()));
        // no system message first: no shared prefix
        assert_eq!(shared_prefix(QWEN_LIKE, &a[1..], &tools, "", ""), None);
        assert_eq!(common(&[1, 2, 3], &[1, 2, 4, 5]), 2);
        assert_eq!(common::<i32>(&[], &[1]), 0);
    }

    #[test]
    fn the_doubled_brace_example_of_the_1_5b_template_renders_single() {
        // the tool section of Qwen2.5-Coder-1.5B-Instruct's template, as its GGUF holds it
        let template = r#"{{- "<|im_start|>system\n" + messages[0]['content'] }}{{- "\n<tools>" }}{%- for tool in tools %}{{- "\n" }}{{- tool | tojson }}{%- endfor %}{{- "\n</tools>\n\nFor each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n{{\"name\": <function-name>, \"arguments\": <args-json-object>}}\n</tool_call><|im_end|>\n" }}"#;
        let messages = vec![json!({"role": "system", "content": "S"})];
        let tools = json!([{"type": "function", "function": {"name": "finish", "parameters": {"type": "object"}}}]);
        let out = render(template, &messages, &tools, "", "").unwrap();
        assert!(
            out.contains("<tool_call>\n{\"name\": <function-name>, \"arguments\": <args-json-object>}\n</tool_call>"),
            "{out}"
        );
        assert!(!out.contains("{{"), "{out}");
        assert_eq!(
            context_size(0, 8192),
            MIN_DEFAULT_CTX,
            "SmolLM2's 8,192 would not fit horizon_mrn_32"
        );
        assert_eq!(context_size(0, 131_072), 131_072);
        assert_eq!(context_size(4096, 32_768), 4096, "a configured size is kept");
        const { assert!(31_890 + crate::model::DEFAULT_REPLY_TOKENS <= MIN_DEFAULT_CTX) };
        // a template without the quirk is rendered as it is
        assert_eq!(undouble_example("a {{b}} c".into()), "a {{b}} c");
    }
}
