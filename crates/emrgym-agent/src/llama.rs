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

type ReplySender = tokio::sync::oneshot::Sender<Result<(Reply, ReplyTiming), BackendError>>;

struct Job {
    /// The conversation it continues ([`LlamaHandle::session`]).
    session: u64,
    messages: Vec<Value>,
    tools: Value,
    reply: ReplySender,
    /// Its shared prefix's tokens, once the model thread has computed them
    /// ([`Worker::prefix_key`]): a request that waits is rendered for it only once.
    prefix: Option<Vec<LlamaToken>>,
}

/// What the model thread is sent.
enum Msg {
    Job(Job),
    /// A conversation has ended: its sequence may serve another.
    Release(u64),
}

/// A conversation's claim on a sequence of the context; dropping the last handle that holds
/// it releases the sequence (its KV cache stays for the longest-common-prefix reuse).
#[derive(Debug)]
struct Session {
    id: u64,
    tx: std::sync::mpsc::Sender<Msg>,
}

impl Drop for Session {
    fn drop(&mut self) {
        let _ = self.tx.send(Msg::Release(self.id));
    }
}

/// The model thread, joined when the last handle to it is dropped: by then every sender is
/// gone, so the thread leaves its loop once the replies it is computing end (a reply nobody
/// waits for is abandoned at the next batch), and frees its context and model itself. A
/// process that returned from `main` while that thread was inside `llama_decode` ran
/// llama.cpp's static destructors under it and crashed (SIGSEGV after Ctrl-C on a run).
#[derive(Debug)]
struct ModelThread(std::sync::Mutex<Option<std::thread::JoinHandle<()>>>);

impl Drop for ModelThread {
    fn drop(&mut self) {
        if let Some(h) = emrgym_core::sync::lock(&self.0).take() {
            let _ = h.join();
        }
    }
}

/// A handle to the model thread.
#[derive(Debug, Clone)]
pub struct LlamaHandle {
    tx: std::sync::mpsc::Sender<Msg>,
    timings: std::sync::Arc<std::sync::Mutex<Vec<ReplyTiming>>>,
    sessions: std::sync::Arc<std::sync::atomic::AtomicU64>,
    session: std::sync::Arc<Session>,
    // last: fields drop in order, so this handle's senders are gone before the join
    thread: std::sync::Arc<ModelThread>,
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
        let (tx, rx) = std::sync::mpsc::channel::<Msg>();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<(), LlamaError>>();
        let thread = std::thread::Builder::new()
            .name("llama".into())
            .spawn(move || worker(cfg, rx, ready_tx))
            .map_err(|e| LlamaError::Thread(e.to_string()))?;
        let thread = std::sync::Arc::new(ModelThread(std::sync::Mutex::new(Some(thread))));
        ready_rx.recv().map_err(|_| LlamaError::Stopped)??;
        Ok(LlamaHandle {
            session: std::sync::Arc::new(Session { id: 0, tx: tx.clone() }),
            tx,
            timings: std::sync::Arc::default(),
            sessions: std::sync::Arc::default(),
            thread,
        })
    }

    /// A handle for one conversation (an episode): its turns are served by one sequence of
    /// the context, which keeps the conversation's KV cache from turn to turn, until the
    /// last clone of this handle is dropped. With `parallel` sequences, that many
    /// conversations are decoded together.
    pub fn session(&self) -> LlamaHandle {
        let id = self.sessions.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
        LlamaHandle {
            tx: self.tx.clone(),
            timings: self.timings.clone(),
            sessions: self.sessions.clone(),
            session: std::sync::Arc::new(Session { id, tx: self.tx.clone() }),
            thread: self.thread.clone(),
        }
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
            .send(Msg::Job(Job {
                session: self.session.id,
                messages: messages.to_vec(),
                tools: tools.clone(),
                reply,
                prefix: None,
            }))
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

fn worker(cfg: LlamaConfig, rx: std::sync::mpsc::Receiver<Msg>, ready: std::sync::mpsc::Sender<Result<(), LlamaError>>) {
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
    // one sequence per conversation served at once, each with the whole context size (the
    // KV cache is split evenly between sequences when it is not unified)
    let parallel = cfg.parallel.max(1);
    let n_ctx = NonZeroU32::new(context_size(cfg.n_ctx, model.n_ctx_train()).saturating_mul(parallel));
    let params = LlamaContextParams::default()
        .with_n_ctx(n_ctx)
        .with_n_seq_max(parallel)
        .with_kv_unified(false)
        .with_n_batch(N_BATCH as u32)
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
    let mut w = Worker {
        cfg: &cfg,
        model: &model,
        template,
        bos,
        eos,
        per_seq: ctx.n_ctx() as usize / parallel as usize,
        slots: (0..parallel)
            .map(|_| Slot {
                owner: None,
                cached: Vec::new(),
                used: 0,
            })
            .collect(),
        clock: 0,
        grammar_cache: None,
        prefixes: PrefixCache {
            entries: Vec::new(),
            bytes: 0,
            clock: 0,
        },
    };
    let mut pending: std::collections::VecDeque<Job> = std::collections::VecDeque::new();
    let mut active: Vec<Active> = Vec::new();
    let mut open = true;
    loop {
        // take what has been sent: block only when there is nothing to compute
        let take = |m: Msg, pending: &mut std::collections::VecDeque<Job>, w: &mut Worker<'_>| match m {
            Msg::Job(j) => pending.push_back(j),
            Msg::Release(id) => w.release(id),
        };
        if active.is_empty() && pending.is_empty() {
            if !open {
                break;
            }
            match rx.recv() {
                Ok(m) => take(m, &mut pending, &mut w),
                Err(_) => break,
            }
        }
        loop {
            match rx.try_recv() {
                Ok(m) => take(m, &mut pending, &mut w),
                Err(std::sync::mpsc::TryRecvError::Empty) => break,
                Err(std::sync::mpsc::TryRecvError::Disconnected) => {
                    open = false;
                    break;
                }
            }
        }
        // a reply nobody waits for any more (its episode was cancelled, or the run is
        // stopping) is not computed: its sequence is cleared, as after a failed decode, and
        // serves others; the order of the others is kept (it shapes the batches)
        pending.retain(|j| !j.reply.is_closed());
        let mut i = 0;
        while i < active.len() {
            if active[i].reply.as_ref().is_some_and(ReplySender::is_closed) {
                let a = active.remove(i);
                let _ = ctx.clear_kv_cache_seq(Some(a.slot as u32), None, None);
                w.slots[a.slot].cached.clear();
            } else {
                i += 1;
            }
        }
        // admit waiting requests, in the order they came, while a sequence is free for them
        let mut i = 0;
        while i < pending.len() {
            let busy: Vec<usize> = active.iter().map(|a| a.slot).collect();
            let session = pending[i].session;
            if active.iter().any(|a| a.session == session) {
                i += 1; // one reply per conversation at a time
                continue;
            }
            let key = w.prefix_key(&mut pending[i]);
            // a request whose shared prefix another sequence is evaluating now waits until its
            // state is saved, and then restores it instead of evaluating it again
            if cfg.prefix_cache && !key.is_empty() && active.iter().any(|a| a.want_snapshot && a.prefix_key[..] == *key) {
                i += 1;
                continue;
            }
            let Some(slot) = w.slot_for(session, key, &busy) else {
                i += 1;
                continue;
            };
            let Some(job) = pending.remove(i) else { break };
            match w.start(&mut ctx, job, slot) {
                Ok(a) => active.push(a),
                Err((reply, e)) => {
                    let _ = reply.send(Err(e));
                }
            }
        }
        if active.is_empty() {
            continue;
        }
        // one batch: the next token of every reply being generated, then prompt chunks
        let mut batch = LlamaBatch::new(N_BATCH, parallel as i32);
        let mut budget = N_BATCH;
        let mut added: Vec<Option<Step>> = Vec::with_capacity(active.len());
        let mut failed: Option<String> = None;
        for a in &mut active {
            let step = match a.next {
                Some((tok, logits)) if a.pos == a.tokens.len() => {
                    let p = w.slots[a.slot].cached.len();
                    if let Err(e) = batch.add(tok, p as i32, &[a.slot as i32], logits) {
                        failed = Some(e.to_string());
                    }
                    budget = budget.saturating_sub(1);
                    a.logits_at = logits.then(|| batch.n_tokens() - 1);
                    Some(Step::Token(tok))
                }
                _ => None,
            };
            added.push(step);
        }
        for (a, step) in active.iter_mut().zip(added.iter_mut()) {
            if step.is_some() || a.pos >= a.tokens.len() || budget == 0 {
                continue;
            }
            // the shared prefix is evaluated on its own (chunks end at its last token), so
            // that its state can be saved and every episode evaluates its prompt alike
            let stop = if a.pos < a.prefix_len { a.prefix_len } else { a.tokens.len() };
            let end = (a.pos + budget).min(stop);
            for p in a.pos..end {
                if let Err(e) = batch.add(a.tokens[p], p as i32, &[a.slot as i32], p + 1 == a.tokens.len()) {
                    failed = Some(e.to_string());
                }
            }
            budget -= end - a.pos;
            a.logits_at = (end == a.tokens.len()).then(|| batch.n_tokens() - 1);
            *step = Some(Step::Prompt(end));
        }
        let result = match failed {
            Some(e) => Err(e),
            None => ctx.decode(&mut batch).map_err(|e| format!("decode: {e}")),
        };
        if let Err(e) = result {
            // every reply in the batch fails; their sequences are cleared (the next turn
            // evaluates the whole prompt again)
            let mut kept = Vec::new();
            for (a, step) in active.drain(..).zip(added) {
                if step.is_some() {
                    let _ = ctx.clear_kv_cache_seq(Some(a.slot as u32), None, None);
                    w.slots[a.slot].cached.clear();
                    if let Some(r) = a.reply {
                        let _ = r.send(Err(BackendError::Other(e.clone())));
                    }
                } else {
                    kept.push(a);
                }
            }
            active = kept;
            continue;
        }
        let mut still = Vec::with_capacity(active.len());
        for (mut a, step) in active.drain(..).zip(added) {
            let done = match step {
                None => false,
                Some(Step::Prompt(end)) => {
                    w.slots[a.slot].cached.extend_from_slice(&a.tokens[a.pos..end]);
                    a.pos = end;
                    if a.want_snapshot && a.pos == a.prefix_len {
                        w.snapshot(&ctx, &a);
                        a.want_snapshot = false;
                    }
                    if a.pos == a.tokens.len() {
                        a.prefill_s = a.t0.elapsed().as_secs_f64();
                        a.t1 = Instant::now();
                        if a.generated >= cfg.max_reply_tokens as usize {
                            true // no reply tokens allowed: "length"
                        } else {
                            w.sample(&ctx, &mut a)
                        }
                    } else {
                        false
                    }
                }
                Some(Step::Token(tok)) => {
                    w.slots[a.slot].cached.push(tok);
                    a.next = None;
                    if a.last {
                        true
                    } else if !cfg.grammar && a.out.contains("</tool_call>") {
                        a.finish = "tool_calls";
                        true
                    } else if a.generated >= cfg.max_reply_tokens as usize {
                        true
                    } else {
                        w.sample(&ctx, &mut a)
                    }
                }
            };
            if done {
                if let Some(r) = a.reply.take() {
                    let _ = r.send(Ok(finished(a.body(), a.finish, a.timing())));
                }
            } else {
                still.push(a);
            }
        }
        active = still;
    }
}

/// Tokens per decode call (the context's `n_batch`): prompt chunks and the next token of
/// every reply being generated share it.
const N_BATCH: usize = 512;

/// What a reply put into the batch just decoded.
enum Step {
    /// Its prompt up to (excluding) this index.
    Prompt(usize),
    /// The token it sampled last.
    Token(LlamaToken),
}

/// One sequence of the context: the conversation that holds it and the tokens its KV cache
/// holds (positions 0..).
struct Slot {
    owner: Option<u64>,
    cached: Vec<LlamaToken>,
    used: u64,
}

/// A reply being computed on a sequence.
struct Active {
    slot: usize,
    session: u64,
    /// Where the reply goes (set when the request is admitted).
    reply: Option<ReplySender>,
    tokens: Vec<LlamaToken>,
    /// The next prompt token to evaluate.
    pos: usize,
    prefix_len: usize,
    /// The shared prefix as tokenized on its own ([`Worker::prefix_key`]).
    prefix_key: Vec<LlamaToken>,
    /// Its state is to be saved when the prompt reaches `prefix_len`.
    want_snapshot: bool,
    keep: usize,
    restored: usize,
    grammar: Option<LlamaSampler>,
    sampler: Option<LlamaSampler>,
    out: String,
    generated: usize,
    finish: &'static str,
    /// A sampled token not yet in the KV cache, and whether its logits are needed.
    next: Option<(LlamaToken, bool)>,
    /// The sampled token completed the call: once it is in the cache the reply is done.
    last: bool,
    /// Where this reply's logits are in the batch just decoded.
    logits_at: Option<i32>,
    t0: Instant,
    prefill_s: f64,
    t1: Instant,
}

impl Active {
    fn body(&self) -> String {
        if self.finish == "length" {
            // a cut reply keeps everything it wrote, its end untouched: nothing of it runs, and
            // the loop reads that end to tell a degenerate reply (stopped by `sample`, which
            // looks at the same text) from one the cap cut; a `</tool_call>` inside one of its
            // strings does not end it
            return self.out.trim_start().to_string();
        }
        self.out.split("</tool_call>").next().unwrap_or("").trim().to_string()
    }

    fn timing(&self) -> ReplyTiming {
        ReplyTiming {
            prefilled: self.tokens.len() - self.keep,
            restored: self.restored,
            prompt: self.tokens.len(),
            generated: self.generated,
            prefill_s: self.prefill_s,
            decode_s: self.t1.elapsed().as_secs_f64(),
        }
    }
}

/// The reply for a finished generation: the call parsed from its text.
fn finished(body: String, finish: &str, timing: ReplyTiming) -> (Reply, ReplyTiming) {
    let (name, args) = match serde_json::from_str::<Value>(&body)
        .ok()
        .or_else(|| super::model::undouble_braces(&body))
    {
        Some(v) => (
            v["name"].as_str().unwrap_or_default().to_string(),
            v.get("arguments").map(|a| a.to_string()).unwrap_or_else(|| "{}".into()),
        ),
        None => (String::new(), body),
    };
    (
        Reply {
            text: None,
            tool_calls: vec![("call_1".into(), name, args)],
            prompt_tokens: timing.prefilled as u64,
            completion_tokens: timing.generated as u64,
            finish_reason: Some(finish.into()),
        },
        timing,
    )
}

/// The model thread's state besides the context.
struct Worker<'m> {
    cfg: &'m LlamaConfig,
    model: &'m LlamaModel,
    template: String,
    bos: String,
    eos: String,
    /// Tokens one sequence may hold.
    per_seq: usize,
    slots: Vec<Slot>,
    clock: u64,
    grammar_cache: Option<(String, String)>,
    prefixes: PrefixCache,
}

impl Worker<'_> {
    /// The tokens of a request's shared prefix (system prompt and tools) on their own; empty
    /// when it has none.
    fn prefix_tokens(&self, messages: &[Value], tools: &Value) -> Vec<LlamaToken> {
        shared_prefix(&self.template, messages, tools, &self.bos, &self.eos)
            .map(|t| self.model.vocab().tokenize(t.as_bytes(), false, true))
            .unwrap_or_default()
    }

    /// A request's shared-prefix tokens, computed once and kept with it.
    fn prefix_key<'j>(&self, job: &'j mut Job) -> &'j [LlamaToken] {
        if job.prefix.is_none() {
            job.prefix = Some(self.prefix_tokens(&job.messages, &job.tools));
        }
        job.prefix.as_deref().unwrap_or_default()
    }

    fn release(&mut self, session: u64) {
        for s in &mut self.slots {
            if s.owner == Some(session) {
                s.owner = None;
            }
        }
    }

    /// The sequence a request is served on: its conversation's own; else a free one (the
    /// one whose cache shares the longest start with the request's shared prefix `start`,
    /// first by index); else the least recently used one no reply is being computed on.
    /// None while every sequence is busy.
    fn slot_for(&self, session: u64, start: &[LlamaToken], busy: &[usize]) -> Option<usize> {
        if let Some(i) = self.slots.iter().position(|s| s.owner == Some(session)) {
            return (!busy.contains(&i)).then_some(i);
        }
        let idle = |i: &usize| !busy.contains(i);
        let free: Vec<usize> = (0..self.slots.len())
            .filter(idle)
            .filter(|i| self.slots[*i].owner.is_none())
            .collect();
        if free.len() > 1 {
            return free
                .iter()
                .copied()
                .max_by_key(|i| (common(&self.slots[*i].cached, start), std::cmp::Reverse(*i)));
        }
        if let Some(i) = free.first() {
            return Some(*i);
        }
        (0..self.slots.len()).filter(idle).min_by_key(|i| self.slots[*i].used)
    }

    /// Render and tokenize a request on its sequence, reuse what the sequence's cache (or
    /// the shared-prefix cache) holds, and set up its sampler.
    fn start(
        &mut self,
        ctx: &mut llama_cpp_2::context::LlamaContext<'_>,
        job: Job,
        slot: usize,
    ) -> Result<Active, (ReplySender, BackendError)> {
        let Job {
            session,
            messages,
            tools,
            reply,
            prefix,
        } = job;
        let prefix = prefix.unwrap_or_else(|| self.prefix_tokens(&messages, &tools));
        match self.prepare(ctx, &messages, &tools, prefix, slot) {
            Ok(mut a) => {
                self.clock += 1;
                let s = &mut self.slots[slot];
                s.owner = Some(session);
                s.used = self.clock;
                a.session = session;
                a.reply = Some(reply);
                Ok(a)
            }
            Err(e) => Err((reply, e)),
        }
    }

    fn prepare(
        &mut self,
        ctx: &mut llama_cpp_2::context::LlamaContext<'_>,
        messages: &[Value],
        tools: &Value,
        prefix_key: Vec<LlamaToken>,
        slot: usize,
    ) -> Result<Active, BackendError> {
        let cfg = self.cfg;
        let vocab = self.model.vocab();
        let mut prompt = render(&self.template, messages, tools, &self.bos, &self.eos).map_err(|e| BackendError::Other(e.to_string()))?;
        prompt.push_str(PREFILL);
        let tokens = vocab.tokenize(prompt.as_bytes(), false, true);
        if tokens.len() + cfg.max_reply_tokens as usize > self.per_seq {
            return Err(BackendError::ContextOverflow(format!(
                "the prompt has {} tokens; with {} for the reply it exceeds the context of {}",
                tokens.len(),
                cfg.max_reply_tokens,
                self.per_seq
            )));
        }
        // the shared prefix (system prompt and tools): its tokens as they start this prompt
        // (evaluated in batches of its own whether or not it is cached, so both settings
        // compute an episode's first prompt alike)
        let prefix_len = Some(common(&prefix_key, &tokens)).filter(|n| *n < tokens.len()).unwrap_or(0);
        // reuse the KV cache for the common prefix with the sequence's previous prompt. An
        // episode's first turn reuses the shared prefix whole or not at all, so it never depends
        // on which episode ran before it: the same tokens are evaluated in the same batches in
        // any order. A prefix not yet cached is evaluated from its first token even where the
        // previous prompt shares its start (another tool set after the same system text):
        // evaluated from there, its chunks would end elsewhere and its KV state differ in the
        // last bits, which flips greedy near-ties (docs/performance.md, "Greedy runs ...")
        let first_turn = !messages.iter().any(|m| m["role"] == "assistant");
        let seq = slot as i32;
        let cached = &mut self.slots[slot].cached;
        let mut keep = common(cached, &tokens);
        if cfg.prefix_cache && first_turn {
            keep = keep.min(prefix_len);
            if keep < prefix_len && !self.prefixes.contains(&tokens[..prefix_len]) {
                keep = 0;
            }
        }
        if keep == tokens.len() {
            keep = keep.saturating_sub(1); // the last prompt token must be evaluated for logits
        }
        let mut restored = 0;
        if cfg.prefix_cache
            && prefix_len > keep
            && let Some(state) = self.prefixes.get(&tokens[..prefix_len])
        {
            let _ = ctx.clear_kv_cache_seq(Some(seq as u32), None, None);
            match ctx.state_seq_set(state, seq) {
                Ok(()) => {
                    restored = prefix_len;
                    keep = prefix_len;
                }
                Err(e) => {
                    tracing::warn!("restoring a cached prompt prefix failed ({e}); evaluating it");
                    let _ = ctx.clear_kv_cache_seq(Some(seq as u32), None, None);
                    keep = 0;
                }
            }
            *cached = tokens[..keep].to_vec();
        } else {
            let _ = ctx.clear_kv_cache_seq(Some(seq as u32), Some(keep as u32), None);
            cached.truncate(keep);
        }
        // (only a prompt evaluated from at most the prefix's end reaches it, and is saved there)
        let want_snapshot = cfg.prefix_cache && prefix_len > 0 && keep <= prefix_len && !self.prefixes.contains(&tokens[..prefix_len]);
        // sampler: grammar over the tool calls, then greedy or temperature
        let mut grammar = None;
        if cfg.grammar {
            let schema = tool_call_schema(tools).to_string();
            let gbnf = match &self.grammar_cache {
                Some((s, g)) if *s == schema => g.clone(),
                _ => {
                    let g = llama_cpp_2::json_schema_to_grammar(&schema)
                        .map_err(|e| BackendError::Other(format!("grammar from the tool schemas: {e}")))?;
                    self.grammar_cache = Some((schema, g.clone()));
                    g
                }
            };
            grammar = Some(LlamaSampler::grammar(self.model, &gbnf, "root").map_err(|e| BackendError::Other(format!("grammar: {e}")))?);
        }
        let sampler = if cfg.temperature <= 0.0 {
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
        let now = Instant::now();
        let mut a = Active {
            slot,
            session: 0,
            reply: None,
            pos: keep,
            prefix_len,
            prefix_key,
            want_snapshot,
            keep,
            restored,
            grammar,
            sampler,
            out: String::new(),
            generated: 0,
            finish: "length",
            next: None,
            last: false,
            logits_at: None,
            t0: now,
            prefill_s: 0.0,
            t1: now,
            tokens,
        };
        if a.want_snapshot && a.pos == a.prefix_len {
            self.snapshot(ctx, &a);
            a.want_snapshot = false;
        }
        Ok(a)
    }

    /// Save the KV state of a sequence that holds exactly a shared prefix.
    fn snapshot(&mut self, ctx: &llama_cpp_2::context::LlamaContext<'_>, a: &Active) {
        match ctx.state_seq_get(a.slot as i32, llama_cpp_2::context::session::LlamaStateSeqFlags::empty()) {
            Ok(state) => self.prefixes.insert(a.tokens[..a.prefix_len].to_vec(), state),
            Err(e) => tracing::warn!("saving the prompt prefix's state failed: {e}"),
        }
    }

    /// Sample a reply's next token from its logits in the batch just decoded; true when the
    /// reply is done (an end-of-generation token), else the token waits to be decoded.
    fn sample(&self, ctx: &llama_cpp_2::context::LlamaContext<'_>, a: &mut Active) -> bool {
        let vocab = self.model.vocab();
        let idx = a.logits_at.unwrap_or(-1);
        let tok = match a.sampler.as_mut() {
            // llama_sampler_sample applies the chain and accepts the token (the grammar advances)
            Some(s) => s.sample(ctx, idx),
            None => {
                // greedy: take the best token if the grammar allows it, and only otherwise
                // mask the whole vocabulary with the grammar (what llama.cpp's server does)
                let logits = ctx.get_logits_ith(idx);
                let best = logits
                    .iter()
                    .enumerate()
                    .fold((0usize, f32::NEG_INFINITY), |acc, (i, l)| if *l > acc.1 { (i, *l) } else { acc });
                let mut tok = LlamaToken(best.0 as i32);
                if let Some(g) = a.grammar.as_mut() {
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
            a.finish = "stop";
            return true;
        }
        a.generated += 1;
        a.out.push_str(&String::from_utf8_lossy(&vocab.token_to_piece(tok, true, None)));
        if self.cfg.grammar && a.out.trim_end().ends_with('}') && serde_json::from_str::<Value>(a.out.trim()).is_ok() {
            // the call is complete: the token still goes into the cache (no logits needed), so
            // the next turn can reuse it
            a.finish = "tool_calls";
            a.last = true;
            a.next = Some((tok, false));
        } else if crate::model::repetition(&a.out).is_some() {
            // degenerate: greedy decoding does not leave a cycle, so the rest of the reply
            // cap would only repeat it; stopped now, the reply is cut ("length") and the loop
            // answers it as degenerate (docs/agent.md, "Harness failures")
            a.finish = "length";
            a.last = true;
            a.next = Some((tok, false));
        } else {
            a.next = Some((tok, true));
        }
        false
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
