//! `emrgym run`: run an agent over scenario instances, K trials each, with bounded
//! concurrency, into a run directory (manifest, results.jsonl flushed per episode, one
//! trajectory per episode, summary), resumable after an interruption; and `emrgym merge`
//! for shards. The summary reports success and pass^k with bootstrap confidence intervals,
//! per family and per failure class, progress, end reasons, tokens and latency.

use super::episode::{BASE, Guide, Prepared, Workspace, attach_writes, briefing, fork, grade_sandbox, guidance_text, htn_transitions};
use anyhow::{Context, bail};
use emrgym_agent::harness::{HarnessLimit, MAX_HARNESS_FAILURE_RATE, attribute, publishable};
use emrgym_agent::model::{Backend, Cassette, Hooks, Limits, LlamaConfig, ModelConfig, OpenAiBackend, OpenAiConfig, run_model_episode};
use emrgym_agent::{Null, Oracle, run_episode};
use emrgym_grade::Grade;
use emrgym_scenario::trajectory::file::{Header, ScenarioRef};
use emrgym_scenario::trajectory::{self, EndReason, Trajectory};
use serde::{Deserialize, Serialize};
use emrgym_core::splitmix64;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// Run directory format version.
pub const RUN_FORMAT_VERSION: u32 = 1;

/// Which agent runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "snake_case")]
pub enum AgentKind {
    /// Executes the reference plan.
    Oracle,
    /// Finishes at once.
    Null,
    /// A model (see `--model`; the embedded default local model when none is given).
    #[default]
    Model,
    /// An agent outside emrgym, driving episodes through `emrgym serve`'s episode API or
    /// `emrgym mcp` (recorded in their run directories; `emrgym run` refuses it).
    External,
}

/// Flat or HTN-guided.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Only the instruction.
    #[default]
    Flat,
    /// The instruction plus the steps the planner releases as the agent goes.
    Guided,
}

/// The resolved configuration of a run (recorded in the manifest).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RunConfig {
    /// Scenario directory.
    pub suite: PathBuf,
    /// Agent.
    pub agent: AgentKind,
    /// The model (agent = model).
    pub model: Option<ModelConfig>,
    /// Flat or guided.
    pub mode: Mode,
    /// Trials per instance.
    pub trials: u32,
    /// Concurrency.
    pub concurrency: usize,
    /// Shard `[i, n]` (1-based).
    pub shard: Option<[u32; 2]>,
    /// The named suite (`suites/NAME.json` in the scenario directory); none: every instance.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub suite_name: Option<String>,
    /// Family filter.
    pub families: Vec<String>,
    /// Instance filter.
    pub instances: Vec<String>,
    /// Seed.
    pub seed: u64,
    /// Episode limits.
    pub limits: Limits,
    /// Serve the model's replies from this run's recorded trajectories instead of calling it
    /// (a cassette): a request that was not recorded ends the episode `backend_error`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replay_model: Option<PathBuf>,
}

impl Default for RunConfig {
    fn default() -> Self {
        RunConfig {
            suite: PathBuf::from("scenarios"),
            agent: AgentKind::Model,
            model: None,
            mode: Mode::Flat,
            trials: 1,
            concurrency: 4,
            shard: None,
            suite_name: None,
            families: Vec::new(),
            instances: Vec::new(),
            seed: 0,
            limits: derived_limits(),
            replay_model: None,
        }
    }
}

/// The configuration recorded in a run directory's manifest.
pub fn recorded_config(dir: &Path) -> anyhow::Result<RunConfig> {
    let man: Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join("manifest.json"))
            .with_context(|| format!("{} is not a run directory (no manifest.json)", dir.display()))?,
    )
    .with_context(|| format!("{}/manifest.json", dir.display()))?;
    serde_json::from_value(man["config"].clone()).with_context(|| format!("{}/manifest.json: config", dir.display()))
}

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
fn make_backend(m: &ModelConfig) -> anyhow::Result<Backend> {
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

/// Lower-case hex SHA-256.
pub fn sha256_hex(bytes: &[u8]) -> String {
    let mut h = Sha256::new();
    h.update(bytes);
    format!("{:x}", h.finalize())
}

/// A run stopped by Ctrl-C: what finished is saved and `--resume` completes it (exit code 130).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Interrupted(pub String);

/// One episode's result line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResultLine {
    /// Instance.
    pub instance: String,
    /// Family.
    pub family: String,
    /// Trial (0-based).
    pub trial: u32,
    /// End reason.
    pub end: EndReason,
    /// An infrastructure failure: reported apart, not scored.
    pub infrastructure: bool,
    /// The grade (absent for infrastructure failures).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grade: Option<Value>,
    /// Success.
    pub success: bool,
    /// Progress.
    pub progress: f64,
    /// Tool calls.
    pub steps: usize,
    /// Model turns.
    pub turns: usize,
    /// Prompt tokens.
    pub prompt_tokens: u64,
    /// Completion tokens.
    pub completion_tokens: u64,
    /// The step limit that applied.
    #[serde(default)]
    pub step_limit: u32,
    /// Where it came from: `instance` (twice the reference plan) or `user` (a set cap).
    #[serde(default)]
    pub step_limit_source: String,
    /// The harness limit the episode ended at, when the audit attributes its end to the
    /// harness (`reply_cap`, `context`, `token_budget`, `wall_time`, `step_cap`, `turn_cap`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub harness_limit: Option<HarnessLimit>,
}

impl ResultLine {
    /// A scored episode that failed at a harness limit.
    pub fn harness_failure(&self) -> bool {
        !self.infrastructure && !self.success && self.harness_limit.is_some()
    }
}

/// Limits that derive steps and turns from each instance (the default configuration), with
/// no episode token budget and the wall time chosen by the backend ([`wall_limit`]): none
/// of these may end an episode the reference plan needs (docs/agent.md, "Harness failures").
pub fn derived_limits() -> Limits {
    Limits {
        max_steps: 0,
        max_turns: 0,
        max_tokens: 0,
        timeout_s: 0.0,
        ..Limits::default()
    }
}

/// The wall time of an episode on an OpenAI-compatible endpoint when the user sets none.
pub const ENDPOINT_TIMEOUT_S: f64 = 600.0;

/// An episode's wall-time limit: the user's `--timeout`, else [`ENDPOINT_TIMEOUT_S`] on an
/// endpoint and none for an in-process model (its speed is the machine's, not the model's;
/// its steps, turns and reply cap bound the episode).
pub fn wall_limit(cfg: &RunConfig) -> f64 {
    if cfg.limits.timeout_s > 0.0 {
        return cfg.limits.timeout_s;
    }
    match cfg.model {
        Some(ModelConfig::Llama(_)) => 0.0,
        _ => ENDPOINT_TIMEOUT_S,
    }
}

/// Turns a model gets beyond its step limit (for replies that call no tool).
const SPARE_TURNS: u32 = 5;

/// One episode's step and turn limits: the user's cap where one is set (non-zero in the
/// configuration), otherwise derived from the instance ([`Prepared::step_budget`]); and
/// where the step limit came from (`user` or `instance`).
pub fn episode_limits(cfg: &Limits, p: &Prepared) -> (Limits, &'static str) {
    let mut l = *cfg;
    let source = if cfg.max_steps == 0 {
        l.max_steps = p.step_budget();
        "instance"
    } else {
        "user"
    };
    if cfg.max_turns == 0 {
        l.max_turns = l.max_steps.saturating_add(SPARE_TURNS);
    }
    (l, source)
}


/// An episode's sandbox seed, from the run seed, the instance and the trial.
pub fn episode_seed(seed: u64, instance: &str, trial: u32) -> u64 {
    let mut h = seed ^ u64::from(trial).wrapping_mul(0x1000_0000_01b3);
    for b in instance.bytes() {
        h = splitmix64(h ^ u64::from(b));
    }
    h
}

/// Run one episode of an instance: the trajectory (with its FHIR writes and HTN
/// transitions) and its grade (none for an infrastructure failure).
pub async fn one_episode(
    cfg: &RunConfig,
    p: &Prepared,
    trial: u32,
    backend: Option<&Backend>,
    cancel: &CancellationToken,
) -> (Trajectory, Option<Grade>) {
    let seed = episode_seed(cfg.seed, &p.instance.id, trial);
    let shared = Arc::new(std::sync::RwLock::new(fork(&p.cohort, &p.clock, seed)));
    let mut traj = match cfg.agent {
        AgentKind::Oracle | AgentKind::Null => {
            let Ok(mut sb) = shared.write() else {
                return (Trajectory::new(Vec::new(), EndReason::Error), None);
            };
            let mut policy: Box<dyn emrgym_agent::Policy> = if cfg.agent == AgentKind::Oracle {
                Box::new(Oracle::new(p.oracle.reference_calls().into_iter().map(|(_, c)| c).collect()))
            } else {
                Box::new(Null)
            };
            run_episode(
                policy.as_mut(),
                &p.registry,
                &mut (&mut *sb, BASE),
                episode_limits(&cfg.limits, p).0.max_steps,
            )
        }
        AgentKind::External => {
            let mut t = Trajectory::new(Vec::new(), EndReason::Error);
            t.detail = Some("external agents run through `emrgym serve` or `emrgym mcp`".into());
            return (t, None);
        }
        AgentKind::Model => {
            let Some(backend) = backend else {
                let mut t = Trajectory::new(Vec::new(), EndReason::Error);
                t.detail = Some("no model backend".into());
                return (t, None);
            };
            let briefing = briefing(p);
            let (mut limits, _) = episode_limits(&cfg.limits, p);
            limits.timeout_s = wall_limit(cfg);
            let mut fhir = emrgym_tools::fhir_tools::SandboxBackend::new(shared.clone(), BASE);
            if cfg.mode == Mode::Guided {
                let mut guide = Guide::new(p);
                let guide_sb = shared.clone();
                let mut g = move |steps: &[emrgym_scenario::trajectory::Step]| -> Option<String> {
                    guidance_text(&guide.at(steps, &*guide_sb.read().ok()?))
                };
                let hooks = Hooks {
                    guidance: Some(&mut g),
                    cancel: Some(cancel.clone()),
                    ..Hooks::default()
                };
                run_model_episode(backend, &p.registry, &mut fhir, &briefing, limits, hooks).await
            } else {
                let hooks = Hooks {
                    cancel: Some(cancel.clone()),
                    ..Hooks::default()
                };
                run_model_episode(backend, &p.registry, &mut fhir, &briefing, limits, hooks).await
            }
        }
    };
    let Ok(sb) = shared.read() else {
        return (traj, None);
    };
    attach_writes(&mut traj, &sb);
    traj.htn = htn_transitions(p, seed, &traj.steps);
    // grade the sandbox the agent wrote into
    let g = (!traj.end.is_infrastructure()).then(|| grade_sandbox(p, &traj, &sb));
    (traj, g)
}

/// Where a run directory keeps an episode's trajectory.
pub fn trajectory_path(run: &Path, instance: &str, trial: u32) -> PathBuf {
    run.join("trajectories").join(format!("{instance}.{trial}.jsonl"))
}

/// The header of an episode's trajectory file.
pub fn header(cfg: &RunConfig, p: &Prepared, trial: u32, scenario_sha256: &str) -> Header {
    Header {
        format: trajectory::file::FORMAT.into(),
        format_version: trajectory::file::FORMAT_VERSION.into(),
        emrgym_version: env!("CARGO_PKG_VERSION").into(),
        grader_version: emrgym_grade::GRADER_VERSION,
        scenario: ScenarioRef {
            family: p.instance.family.clone(),
            instance: p.instance.id.clone(),
            content_sha256: scenario_sha256.into(),
        },
        trial,
        mode: match cfg.mode {
            Mode::Flat => "flat",
            Mode::Guided => "guided",
        }
        .into(),
        agent: match cfg.agent {
            AgentKind::Oracle => "oracle",
            AgentKind::Null => "null",
            AgentKind::Model => "model",
            AgentKind::External => "external",
        }
        .into(),
        model: (cfg.agent == AgentKind::Model)
            .then(|| cfg.model.as_ref().and_then(|m| serde_json::to_value(m).ok()))
            .flatten(),
        seed: cfg.seed,
        episode_seed: episode_seed(cfg.seed, &p.instance.id, trial),
        tool_catalogue_sha256: sha256_hex(&serde_json::to_vec(&p.registry.openai_tools()).unwrap_or_default()),
        instruction: if p.instance.context.trim().is_empty() {
            p.instance.instruction.clone()
        } else {
            format!("{}\n\nContext: {}", p.instance.instruction, p.instance.context)
        },
        now: p.instance.now.clone(),
        cohort: p.instance.cohort.clone(),
    }
}

/// The result line of a graded (or infrastructure-failed) episode.
pub fn result_line(p: &Prepared, limits: &Limits, trial: u32, traj: &Trajectory, g: &Option<Grade>) -> ResultLine {
    let infra = traj.end.is_infrastructure();
    let (limits, source) = episode_limits(limits, p);
    ResultLine {
        instance: p.instance.id.clone(),
        family: p.instance.family.clone(),
        trial,
        end: traj.end,
        infrastructure: infra,
        grade: g.as_ref().and_then(|g| serde_json::to_value(g).ok()),
        success: g.as_ref().is_some_and(|g| g.success),
        progress: g.as_ref().map_or(0.0, |g| g.progress),
        steps: traj.steps.len(),
        turns: traj.turns.len(),
        prompt_tokens: traj.turns.iter().map(|t| t.prompt_tokens).sum(),
        completion_tokens: traj.turns.iter().map(|t| t.completion_tokens).sum(),
        step_limit: limits.max_steps,
        step_limit_source: source.to_string(),
        harness_limit: (!infra)
            .then(|| attribute(traj, &limits, &episode_limits(&derived_limits(), p).0))
            .flatten(),
    }
}

/// Read the complete lines of a results file (a torn last line from a kill is ignored).
pub fn read_results(path: &Path) -> anyhow::Result<Vec<ResultLine>> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let mut out = Vec::new();
    for line in text.split_inclusive('\n') {
        if !line.ends_with('\n') {
            break; // torn write
        }
        if line.trim().is_empty() {
            continue;
        }
        out.push(serde_json::from_str(line).with_context(|| format!("{}: bad result line", path.display()))?);
    }
    Ok(out)
}

fn binom(n: u64, k: u64) -> f64 {
    if k > n {
        return 0.0;
    }
    (0..k).fold(1.0, |acc, i| acc * (n - i) as f64 / (k - i) as f64)
}

/// pass^k of one instance with `c` successes in `n` trials: C(c, k) / C(n, k).
pub fn pass_hat_k(n: u64, c: u64, k: u64) -> f64 {
    if n < k { f64::NAN } else { binom(c, k) / binom(n, k) }
}

/// Mean with a bootstrap 95% interval over items (deterministic resampling).
pub fn bootstrap_mean(values: &[f64], seed: u64) -> Value {
    if values.is_empty() {
        return Value::Null;
    }
    let mean = values.iter().fold(0.0, |a, b| a + b) / values.len() as f64;
    let b = 2000;
    let mut state = seed ^ 0xB007;
    let mut means: Vec<f64> = (0..b)
        .map(|_| {
            let mut s = 0.0;
            for _ in 0..values.len() {
                state = splitmix64(state);
                s += values[(state % values.len() as u64) as usize];
            }
            s / values.len() as f64
        })
        .collect();
    means.sort_by(|a, b| a.total_cmp(b));
    let lo = means[(0.025 * b as f64) as usize];
    let hi = means[((0.975 * b as f64) as usize).min(b - 1)];
    json!({"mean": round4(mean), "ci95": [round4(lo), round4(hi)], "n": values.len()})
}

fn round4(x: f64) -> f64 {
    (x * 1e4).round() / 1e4
}

/// The run summary from result lines.
pub fn summarize(results: &[ResultLine], trials: u32, seed: u64) -> Value {
    let scored: Vec<&ResultLine> = results.iter().filter(|r| !r.infrastructure).collect();
    let mut by_inst: BTreeMap<&str, Vec<&ResultLine>> = BTreeMap::new();
    for r in &scored {
        by_inst.entry(r.instance.as_str()).or_default().push(r);
    }
    let success: Vec<f64> = scored.iter().map(|r| if r.success { 1.0 } else { 0.0 }).collect();
    let progress: Vec<f64> = scored.iter().map(|r| r.progress).collect();
    let mut pass = serde_json::Map::new();
    for k in 1..=trials.max(1) {
        let per: Vec<f64> = by_inst
            .values()
            .filter(|v| v.len() as u32 >= k)
            .map(|v| pass_hat_k(v.len() as u64, v.iter().filter(|r| r.success).count() as u64, u64::from(k)))
            .collect();
        pass.insert(format!("pass^{k}"), bootstrap_mean(&per, seed.wrapping_add(u64::from(k))));
    }
    let mut families: BTreeMap<&str, Vec<&ResultLine>> = BTreeMap::new();
    for r in &scored {
        families.entry(r.family.as_str()).or_default().push(r);
    }
    let fam: serde_json::Map<String, Value> = families
        .iter()
        .map(|(f, rs)| {
            let s: Vec<f64> = rs.iter().map(|r| if r.success { 1.0 } else { 0.0 }).collect();
            let p: f64 = rs.iter().map(|r| r.progress).sum::<f64>() / rs.len() as f64;
            let h = rs.iter().filter(|r| r.harness_failure()).count();
            (
                f.to_string(),
                json!({"episodes": rs.len(), "success": bootstrap_mean(&s, seed), "progress": round4(p), "harness_failures": h}),
            )
        })
        .collect();
    let mut classes: BTreeMap<String, usize> = BTreeMap::new();
    for r in &scored {
        if let Some(cs) = r.grade.as_ref().and_then(|g| g.get("classes")).and_then(Value::as_array) {
            for c in cs {
                *classes.entry(c.as_str().unwrap_or_default().to_string()).or_default() += 1;
            }
        }
    }
    let mut ends: BTreeMap<String, usize> = BTreeMap::new();
    for r in results {
        *ends
            .entry(
                serde_json::to_value(r.end)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_string))
                    .unwrap_or_default(),
            )
            .or_default() += 1;
    }
    let turns: usize = scored.iter().map(|r| r.turns).sum();
    let mut by_limit: BTreeMap<&str, usize> = BTreeMap::new();
    for r in scored.iter().filter(|r| r.harness_failure()) {
        if let Some(l) = r.harness_limit {
            *by_limit.entry(l.name()).or_default() += 1;
        }
    }
    let harness: usize = by_limit.values().sum();
    json!({
        "episodes": results.len(),
        "scored": scored.len(),
        "infrastructure_failures": results.len() - scored.len(),
        "instances": by_inst.len(),
        "trials": trials,
        "success": bootstrap_mean(&success, seed),
        "harness_failures": {
            "episodes": harness,
            "rate": if scored.is_empty() { Value::Null } else { json!(round4(harness as f64 / scored.len() as f64)) },
            "threshold": MAX_HARNESS_FAILURE_RATE,
            "publishable": publishable(harness, scored.len()),
            "by_limit": by_limit,
        },
        "progress": bootstrap_mean(&progress, seed),
        "pass_k": pass,
        "families": fam,
        "failure_classes": classes,
        "end_reasons": ends,
        "tokens": if turns == 0 { Value::Null } else { json!({
            "prompt_per_episode": round4(scored.iter().map(|r| r.prompt_tokens as f64).sum::<f64>() / scored.len().max(1) as f64),
            "completion_per_episode": round4(scored.iter().map(|r| r.completion_tokens as f64).sum::<f64>() / scored.len().max(1) as f64),
            "turns_per_episode": round4(turns as f64 / scored.len().max(1) as f64),
        }) },
        "cost": Value::Null,
    })
}

/// Each family's content hash: its file and the HTN libraries it uses.
pub fn family_hashes(ws: &Workspace) -> BTreeMap<String, (String, String)> {
    let mut hashes = BTreeMap::new();
    for (file, text, fam) in &ws.suite.families {
        let mut h = Sha256::new();
        h.update(text.as_bytes());
        for lib in &fam.library {
            h.update(ws.suite.library_text(lib).unwrap_or_default().as_bytes());
        }
        hashes.insert(
            fam.family.clone(),
            (
                file.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default(),
                format!("{:x}", h.finalize()),
            ),
        );
    }
    hashes
}

/// A run directory's manifest.
pub fn manifest(cfg: &RunConfig, ws: &Workspace, instances: &[String]) -> anyhow::Result<Value> {
    let hashes: BTreeMap<String, Value> = family_hashes(ws)
        .into_iter()
        .map(|(f, (file, sha))| (f, json!({"file": file, "sha256": sha})))
        .collect();
    let cfg_json = serde_json::to_value(cfg)?;
    let mut cfg_for_hash = cfg_json.clone();
    if let Some(o) = cfg_for_hash.as_object_mut() {
        o.remove("concurrency"); // how fast, not what
    }
    Ok(json!({
        "format_version": RUN_FORMAT_VERSION,
        "emrgym_version": env!("CARGO_PKG_VERSION"),
        "config": cfg_json,
        "config_sha256": sha256_hex(&serde_json::to_vec(&cfg_for_hash)?),
        "scenarios": hashes,
        "instances": instances,
        "tool_catalogue_sha256": sha256_hex(&serde_json::to_vec(&ws.registry().openai_tools())?),
    }))
}

/// The progress line's time estimate: elapsed time and the time left at the mean pace of the
/// episodes finished in this session (`ETA 1h05m`), or nothing before the first one.
pub fn eta(elapsed: std::time::Duration, done: usize, left: usize) -> String {
    if done == 0 {
        return String::new();
    }
    let hm = |secs: u64| {
        if secs >= 3600 {
            format!("{}h{:02}m", secs / 3600, secs % 3600 / 60)
        } else {
            format!("{}m{:02}s", secs / 60, secs % 60)
        }
    };
    let per = elapsed.as_secs_f64() / done as f64;
    format!("{} elapsed, ETA {}", hm(elapsed.as_secs()), hm((per * left as f64).round() as u64))
}

/// Execute a run.
pub fn execute(cfg: RunConfig, out: &Path, resume: bool) -> anyhow::Result<Value> {
    if cfg.agent == AgentKind::External {
        bail!("--agent external: external agents drive episodes through `emrgym serve` (the episode API) or `emrgym mcp`");
    }
    let mut ws = Workspace::open(&cfg.suite).map_err(|e| anyhow::anyhow!("{}", e.join("\n")))?;
    let mut insts = ws.suite.instances().map_err(anyhow::Error::msg)?;
    if let Some(name) = &cfg.suite_name
        && let Some(named) = super::suites::load(&cfg.suite, name)?
    {
        for id in &named.instances {
            if !insts.iter().any(|i| &i.id == id) {
                bail!(
                    "suite '{name}' lists instance '{id}', which is not in {} (regenerate it: emrgym scenarios suites --write)",
                    cfg.suite.display()
                );
            }
        }
        insts.retain(|i| named.instances.contains(&i.id));
    }
    if !cfg.families.is_empty() {
        for f in &cfg.families {
            if !insts.iter().any(|i| &i.family == f) {
                bail!("--family '{f}' is not in {}", cfg.suite.display());
            }
        }
        insts.retain(|i| cfg.families.contains(&i.family));
    }
    if !cfg.instances.is_empty() {
        for id in &cfg.instances {
            if !insts.iter().any(|i| &i.id == id) {
                bail!("--instance '{id}' is not in {}", cfg.suite.display());
            }
        }
        insts.retain(|i| cfg.instances.contains(&i.id));
    }
    insts.sort_by(|a, b| a.id.cmp(&b.id));
    if let Some([i, n]) = cfg.shard {
        insts = insts
            .into_iter()
            .enumerate()
            .filter(|(k, _)| (*k as u32) % n == i - 1)
            .map(|(_, x)| x)
            .collect();
    }
    let ids: Vec<String> = insts.iter().map(|i| i.id.clone()).collect();
    let man = manifest(&cfg, &ws, &ids)?;
    // load the model first: a missing or broken model fails before anything is written
    if !resume && out.join("manifest.json").exists() {
        bail!(
            "{} already holds a run; use --resume {} or another --out",
            out.display(),
            out.display()
        );
    }
    let backend = match (&cfg.agent, &cfg.model, &cfg.replay_model) {
        (AgentKind::Model, Some(m), Some(dir)) => {
            let protocol = match m {
                ModelConfig::Openai(o) => o.tool_protocol,
                ModelConfig::Llama(_) => emrgym_agent::model::ToolProtocol::Native,
            };
            Some(Backend::Cassette(load_cassette(dir, protocol)?))
        }
        (AgentKind::Model, Some(m), None) => Some(make_backend(m)?),
        _ => None,
    };
    let manifest_path = out.join("manifest.json");
    let results_path = out.join("results.jsonl");
    // one writer per run directory: a second `run --resume` on the same directory would
    // interleave results and lose some (the soak script's kill test showed it)
    let _lock = lock_run_dir(out)?;
    let mut done: BTreeSet<(String, u32)> = BTreeSet::new();
    if resume {
        let old: Value = serde_json::from_str(
            &std::fs::read_to_string(&manifest_path).with_context(|| format!("--resume {}: no manifest.json", out.display()))?,
        )?;
        if old["config_sha256"] != man["config_sha256"] {
            bail!(
                "--resume {}: the configuration differs from the interrupted run's (manifest.json config)",
                out.display()
            );
        }
        if old["scenarios"] != man["scenarios"] {
            let changed: Vec<String> = man["scenarios"]
                .as_object()
                .map(|m| {
                    m.iter()
                        .filter(|(k, v)| old["scenarios"].get(k.as_str()) != Some(v))
                        .map(|(k, _)| k.clone())
                        .collect()
                })
                .unwrap_or_default();
            bail!(
                "--resume {}: scenarios changed since the run started: {}",
                out.display(),
                changed.join(", ")
            );
        }
        // rewrite only complete lines (a kill can tear the last one); episodes that ended on
        // an infrastructure failure (backend down, rate limit, Ctrl-C) are run again
        // (to a temporary file renamed over it: a kill during the rewrite loses nothing)
        let kept: Vec<ResultLine> = read_results(&results_path)?.into_iter().filter(|r| !r.infrastructure).collect();
        let mut text = String::new();
        for r in &kept {
            text.push_str(&serde_json::to_string(r)?);
            text.push('\n');
            done.insert((r.instance.clone(), r.trial));
        }
        write_atomic(&results_path, text.as_bytes())?;
        // temporary files a kill left behind (their episodes run again)
        if let Ok(entries) = std::fs::read_dir(out.join("trajectories")) {
            for e in entries.flatten() {
                if e.path().extension().is_some_and(|x| x == "tmp") {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
    } else {
        if out.join("manifest.json").exists() {
            bail!(
                "{} already holds a run; use --resume {} or another --out",
                out.display(),
                out.display()
            );
        }
        std::fs::create_dir_all(out.join("trajectories")).with_context(|| format!("creating {}", out.display()))?;
        std::fs::write(&manifest_path, format!("{}\n", serde_json::to_string_pretty(&man)?))?;
        std::fs::write(&results_path, "")?;
    }
    std::fs::create_dir_all(out.join("trajectories"))?;
    let mut prepared = Vec::new();
    for inst in &insts {
        prepared.push(Arc::new(ws.prepare(inst).map_err(|e| anyhow::anyhow!("{}", e.join("\n")))?));
    }

    // one in-process model serves one episode at a time (its KV cache holds one conversation)
    let mut cfg = cfg;
    if matches!(cfg.model, Some(ModelConfig::Llama(_))) && cfg.agent == AgentKind::Model && cfg.replay_model.is_none() {
        cfg.concurrency = 1;
    }
    let todo: Vec<(Arc<Prepared>, u32)> = prepared
        .iter()
        .flat_map(|p| (0..cfg.trials).map(move |t| (p.clone(), t)))
        .filter(|(p, t)| !done.contains(&(p.instance.id.clone(), *t)))
        .collect();
    let total = prepared.len() * cfg.trials as usize;
    let already = total - todo.len();
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let cfg = Arc::new(cfg);
    let backend = Arc::new(backend);
    let out_dir = out.to_path_buf();
    let hashes = family_hashes(&ws);
    let cancel = CancellationToken::new();
    let interrupted = rt.block_on(async {
        // Ctrl-C: episodes in flight end `cancelled` (not scored, run again on --resume),
        // episodes not started are not started, and what finished is kept
        let on_signal = cancel.clone();
        let watcher = tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                on_signal.cancel();
            }
        });
        let sem = Arc::new(tokio::sync::Semaphore::new(cfg.concurrency));
        let (tx, mut rx) = tokio::sync::mpsc::channel::<(ResultLine, String)>(cfg.concurrency * 2);
        let mut handles = Vec::new();
        for (p, trial) in todo {
            let sem = sem.clone();
            let tx = tx.clone();
            let cfg = cfg.clone();
            let backend = backend.clone();
            let cancel = cancel.clone();
            let sha = hashes.get(&p.instance.family).map(|(_, h)| h.clone()).unwrap_or_default();
            handles.push(tokio::spawn(async move {
                let Ok(_permit) = sem.acquire_owned().await else { return };
                if cancel.is_cancelled() {
                    return;
                }
                let (traj, g) = one_episode(&cfg, &p, trial, backend.as_ref().as_ref(), &cancel).await;
                let line = result_line(&p, &cfg.limits, trial, &traj, &g);
                let text = trajectory::file::to_jsonl(&header(&cfg, &p, trial, &sha), &traj);
                let _ = tx.send((line, text)).await;
            }));
        }
        drop(tx);
        let results_path = out_dir.join("results.jsonl");
        let mut results = std::fs::OpenOptions::new().append(true).open(&results_path)?;
        let mut n = already;
        let progress = std::io::IsTerminal::is_terminal(&std::io::stderr());
        let started = std::time::Instant::now();
        while let Some((line, text)) = rx.recv().await {
            // the trajectory first, whole or not at all; then its result line, whole or not
            // at all: a kill or a full disk leaves no torn file, and the episode without a
            // result line runs again on --resume
            write_atomic(&trajectory_path(&out_dir, &line.instance, line.trial), text.as_bytes())?;
            append_line(&mut results, &results_path, &serde_json::to_string(&line)?)?;
            n += 1;
            if progress {
                eprint!(
                    "\r[{n:>5}/{total}] {:<28} {:<12} {}   ",
                    line.instance,
                    format!("{:?}", line.end),
                    eta(started.elapsed(), n - already, total - n)
                );
            }
        }
        if progress {
            eprintln!();
        }
        for h in handles {
            h.await?;
        }
        watcher.abort();
        anyhow::Ok(cancel.is_cancelled())
    })?;
    // canonical order, then the summary
    let mut all = read_results(&results_path)?;
    all.sort_by(|a, b| (a.instance.as_str(), a.trial).cmp(&(b.instance.as_str(), b.trial)));
    all.dedup_by(|a, b| a.instance == b.instance && a.trial == b.trial);
    let mut text = String::new();
    for r in &all {
        text.push_str(&serde_json::to_string(r)?);
        text.push('\n');
    }
    write_atomic(&results_path, text.as_bytes())?;
    let summary = run_summary(out, &all, cfg.trials, cfg.seed);
    write_atomic(
        &out.join("summary.json"),
        format!("{}\n", serde_json::to_string_pretty(&summary)?).as_bytes(),
    )?;
    if interrupted {
        let done = all.iter().filter(|r| !r.infrastructure).count();
        return Err(Interrupted(format!(
            "interrupted: {done} of {total} episodes done; finish with `emrgym run --resume {}`",
            out.display()
        ))
        .into());
    }
    Ok(summary)
}

/// Write `path` whole or not at all: a temporary file beside it, synced, renamed over it.
/// On failure (a full disk) the temporary file is removed and the error names the file.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let written = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_data()?;
        std::fs::rename(&tmp, path)
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(anyhow::anyhow!("writing {}: {e}", path.display()));
    }
    Ok(())
}

/// Name of the lock file in a run directory.
pub const LOCK_FILE: &str = ".emrgym-run.lock";

/// Take the run directory's exclusive lock (an OS file lock on [`LOCK_FILE`], released when
/// the returned file is dropped or the process dies, SIGKILL included), or fail naming the
/// directory when another process holds it.
pub fn lock_run_dir(out: &Path) -> anyhow::Result<std::fs::File> {
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let path = out.join(LOCK_FILE);
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => bail!(
            "{} is being written by another emrgym process; wait for it to end (or stop it) before running or resuming here",
            out.display()
        ),
        Err(std::fs::TryLockError::Error(e)) => Err(anyhow::anyhow!("locking {}: {e}", path.display())),
    }
}

/// Append one line to `file` (opened for append at `path`), whole or not at all: a failed
/// write (a full disk) is cut back to the previous end, so no torn line is left.
fn append_line(file: &mut std::fs::File, path: &Path, line: &str) -> anyhow::Result<()> {
    let before = file.metadata().map(|m| m.len()).ok();
    let mut bytes = Vec::with_capacity(line.len() + 1);
    bytes.extend_from_slice(line.as_bytes());
    bytes.push(b'\n');
    if let Err(e) = file.write_all(&bytes).and_then(|()| file.flush()) {
        if let Some(len) = before {
            let _ = file.set_len(len);
        }
        return Err(anyhow::anyhow!("appending a result to {}: {e}", path.display()));
    }
    Ok(())
}

/// A run directory's summary: [`summarize`] plus the model-turn latency from its trajectories.
pub fn run_summary(dir: &Path, results: &[ResultLine], trials: u32, seed: u64) -> Value {
    let mut summary = summarize(results, trials, seed);
    if let Some(o) = summary.as_object_mut() {
        o.insert("latency".into(), latency(dir, results));
    }
    summary
}

/// Wall time per model turn over the run's trajectories (null for model-free agents).
/// Replies are not streamed, so the time to the first token is not observable here; the
/// in-process model's decode speed is measured by `emrgym bench --llama`.
fn latency(dir: &Path, results: &[ResultLine]) -> Value {
    let mut ms: Vec<u64> = Vec::new();
    for r in results.iter().filter(|r| r.turns > 0) {
        let Ok(f) = trajectory::file::read(&trajectory_path(dir, &r.instance, r.trial)) else {
            continue;
        };
        ms.extend(f.trajectory.turns.iter().map(|t| t.latency_ms));
    }
    if ms.is_empty() {
        return Value::Null;
    }
    ms.sort_unstable();
    let pct = |p: f64| ms[((ms.len() - 1) as f64 * p).round() as usize];
    json!({"turns": ms.len(), "mean_ms": ms.iter().sum::<u64>() / ms.len() as u64, "p50_ms": pct(0.5), "p95_ms": pct(0.95)})
}

/// Combine shard runs of one configuration into one run directory `out`; returns its summary.
pub fn merge(runs: &[PathBuf], out: &Path) -> anyhow::Result<Value> {
    if out.join("manifest.json").exists() {
        bail!("{} already holds a run", out.display());
    }
    let mut base: Option<Value> = None;
    let mut all: BTreeMap<(String, u32), ResultLine> = BTreeMap::new();
    let mut instances: BTreeSet<String> = BTreeSet::new();
    std::fs::create_dir_all(out.join("trajectories"))?;
    for dir in runs {
        let man: Value = serde_json::from_str(
            &std::fs::read_to_string(dir.join("manifest.json")).with_context(|| format!("{}: no manifest.json", dir.display()))?,
        )?;
        let mut cfg = man["config"].clone();
        if let Some(o) = cfg.as_object_mut() {
            o.remove("shard");
            o.remove("concurrency");
        }
        let key =
            json!({"config": cfg, "scenarios": man["scenarios"], "tools": man["tool_catalogue_sha256"], "version": man["emrgym_version"]});
        match &base {
            None => base = Some(key),
            Some(b) if *b != key => bail!(
                "{} was run with another configuration or other scenarios than {}",
                dir.display(),
                runs[0].display()
            ),
            Some(_) => {}
        }
        instances.extend(
            man["instances"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|v| v.as_str().map(str::to_string)),
        );
        for r in read_results(&dir.join("results.jsonl"))? {
            let src = trajectory_path(dir, &r.instance, r.trial);
            if src.exists() {
                std::fs::copy(&src, trajectory_path(&out, &r.instance, r.trial))?;
            }
            all.insert((r.instance.clone(), r.trial), r);
        }
    }
    let base = base.context("no runs")?;
    let mut cfg: RunConfig = serde_json::from_value(base["config"].clone())?;
    cfg.shard = None;
    let man = json!({
        "format_version": RUN_FORMAT_VERSION,
        "emrgym_version": base["version"],
        "config": cfg,
        "scenarios": base["scenarios"],
        "instances": instances,
        "tool_catalogue_sha256": base["tools"],
        "merged_from": runs.iter().map(|p| p.display().to_string()).collect::<Vec<_>>(),
    });
    std::fs::write(out.join("manifest.json"), format!("{}\n", serde_json::to_string_pretty(&man)?))?;
    let lines: Vec<ResultLine> = all.into_values().collect();
    let mut text = String::new();
    for r in &lines {
        text.push_str(&serde_json::to_string(r)?);
        text.push('\n');
    }
    std::fs::write(out.join("results.jsonl"), text)?;
    let summary = run_summary(&out, &lines, cfg.trials, cfg.seed);
    std::fs::write(out.join("summary.json"), format!("{}\n", serde_json::to_string_pretty(&summary)?))?;
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::{append_line, eta, write_atomic};
    use std::time::Duration;

    #[test]
    fn atomic_writes_replace_whole_files_and_name_the_path_on_failure() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("results.jsonl");
        write_atomic(&f, b"old\n").unwrap();
        write_atomic(&f, b"new\n").unwrap();
        assert_eq!(std::fs::read_to_string(&f).unwrap(), "new\n");
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names.len(), 1, "no temporary file is left: {names:?}");
        let missing = dir.path().join("nope").join("summary.json");
        let e = write_atomic(&missing, b"{}").unwrap_err().to_string();
        assert!(e.contains("nope/summary.json"), "{e}");
        assert!(!missing.exists());
    }

    #[test]
    fn a_run_directory_has_one_writer_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("run");
        let held = super::lock_run_dir(&out).unwrap();
        let e = super::lock_run_dir(&out).unwrap_err().to_string();
        assert!(e.contains("another emrgym process") && e.contains("run"), "{e}");
        drop(held);
        super::lock_run_dir(&out).unwrap();
    }

    #[test]
    fn appended_lines_are_whole_and_a_failed_append_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("results.jsonl");
        let mut file = std::fs::OpenOptions::new().create(true).append(true).open(&f).unwrap();
        append_line(&mut file, &f, "{\"a\":1}").unwrap();
        append_line(&mut file, &f, "{\"a\":2}").unwrap();
        assert_eq!(std::fs::read_to_string(&f).unwrap(), "{\"a\":1}\n{\"a\":2}\n");
        // a file opened read-only cannot be appended to: the error names it, nothing changes
        let mut ro = std::fs::File::open(&f).unwrap();
        let e = append_line(&mut ro, &f, "{\"a\":3}").unwrap_err().to_string();
        assert!(e.contains("results.jsonl"), "{e}");
        assert_eq!(std::fs::read_to_string(&f).unwrap(), "{\"a\":1}\n{\"a\":2}\n");
    }

    #[test]
    fn the_eta_extrapolates_the_pace_of_this_session() {
        assert_eq!(eta(Duration::from_secs(5), 0, 10), "", "no estimate before the first episode");
        assert_eq!(eta(Duration::from_secs(90), 3, 6), "1m30s elapsed, ETA 3m00s");
        assert_eq!(eta(Duration::from_secs(3 * 3600), 2, 3), "3h00m elapsed, ETA 4h30m");
        assert_eq!(eta(Duration::from_secs(60), 1, 0), "1m00s elapsed, ETA 0m00s");
    }
}
