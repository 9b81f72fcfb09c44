//! `emrgym run`: run an agent over scenario instances, K trials each, with bounded
//! concurrency, into a run directory (manifest, results.jsonl flushed per episode, one
//! trajectory per episode, summary), resumable after an interruption; and `emrgym merge`
//! for shards. The summary reports success and pass^k with bootstrap confidence intervals,
//! per family and per failure class, progress, end reasons, tokens and latency.

use super::episode::{BASE, Guide, Prepared, Workspace, briefing, finalize, fork, guidance_text};
use crate::backend::{load_cassette, make_backend};
use crate::rundir::{
    Manifest, ResultLine, ResultsFile, family_hashes, header, lock_run_dir, read_results, result_line, trajectory_path, write_atomic,
    write_results,
};
use crate::stats::{Summary, run_summary};
use anyhow::{Context, bail};
use emrgym_agent::model::{Backend, Hooks, Limits, ModelConfig, run_model_episode};
use emrgym_agent::{Null, Oracle, run_episode};
use emrgym_core::splitmix64;
use emrgym_grade::Grade;
use emrgym_scenario::trajectory::{self, EndReason, Trajectory};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

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

/// The condition: goal only, procedure in prose (flat), procedure as an HTN (guided), or the
/// HTN written out at the start without the planner (outline).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Only the instruction.
    #[default]
    Flat,
    /// The instruction plus the steps the planner releases as the agent goes.
    Guided,
    /// Only the family's goal (what a clinician would ask, the guideline's conventions, no
    /// procedure), run as flat; families without a goal are left out.
    Goal,
    /// The instruction plus the whole task network written out as a procedure at the start
    /// (every step's text, every case with its rule), run as flat: guided mode's steps without
    /// the planner choosing the next one.
    Outline,
}

impl Mode {
    /// The mode's name, as the trajectory header and the manifest write it.
    pub fn name(self) -> &'static str {
        match self {
            Mode::Flat => "flat",
            Mode::Guided => "guided",
            Mode::Goal => "goal",
            Mode::Outline => "outline",
        }
    }

    /// The mode named `name` (as [`Mode::name`] writes it).
    pub fn from_name(name: &str) -> Option<Mode> {
        [Mode::Flat, Mode::Guided, Mode::Goal, Mode::Outline]
            .into_iter()
            .find(|m| m.name() == name)
    }
}

/// Why an instance cannot be presented in a mode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PresentError {
    /// Goal mode, and the family has no goal.
    #[error("{0}")]
    NoGoal(#[from] emrgym_scenario::NoGoal),
    /// Outline mode, and the task network cannot be written out.
    #[error("instance '{instance}': its task network cannot be written out as an outline: {message}")]
    Outline {
        /// The instance.
        instance: String,
        /// Why.
        message: String,
    },
}

/// An instance as `mode` presents it to the agent: in goal mode with the goal's instruction
/// and context ([`emrgym_scenario::Instance::goal_condition`]); in outline mode with the
/// outline of its task network after its context
/// ([`emrgym_scenario::htn::plan::outline`]); otherwise unchanged. What the grader reads is
/// the same in every mode; presenting twice gives the same instance. The error names the
/// instance.
pub fn present(p: &Arc<Prepared>, mode: Mode) -> Result<Arc<Prepared>, PresentError> {
    let instance = match mode {
        Mode::Flat | Mode::Guided => return Ok(p.clone()),
        Mode::Goal => p.instance.goal_condition()?,
        Mode::Outline => {
            let text = emrgym_scenario::htn::plan::outline(&p.library, &p.instance.root.task, &p.instance.root.args, &p.globals).map_err(
                |message| PresentError::Outline {
                    instance: p.instance.id.clone(),
                    message,
                },
            )?;
            let mut i = p.instance.clone();
            // presenting twice gives the same instance (the episode API and `emrgym mcp`
            // present a session's instance before its MCP episode does)
            if !i.context.ends_with(&text) {
                i.context = if i.context.trim().is_empty() {
                    text
                } else {
                    format!("{}\n\n{text}", i.context)
                };
            }
            i
        }
    };
    Ok(Arc::new(Prepared {
        instance,
        ..Prepared::clone(p)
    }))
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

/// A run stopped by Ctrl-C: what finished is saved and `--resume` completes it (exit code 130).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Interrupted(pub String);

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
    let g = finalize(p, seed, &mut traj, &sb);
    (traj, g)
}

/// Least time between two progress lines of a run whose stderr is not a terminal.
const LOG_EVERY: std::time::Duration = std::time::Duration::from_secs(10);

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
pub fn execute(cfg: RunConfig, out: &Path, resume: bool) -> anyhow::Result<Summary> {
    execute_with(
        cfg,
        out,
        Start {
            resume,
            allow_other_build: false,
        },
    )
}

/// How [`execute_with`] starts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Start {
    /// Finish the interrupted run in the directory (its manifest's configuration).
    pub resume: bool,
    /// Resume with another build than the one that started the run (recorded in the
    /// manifest's `resumed_by_other_builds`); without it such a resume is refused, so that
    /// one run's episodes come from one build.
    pub allow_other_build: bool,
}

/// [`execute`], with the resume options.
pub fn execute_with(cfg: RunConfig, out: &Path, start: Start) -> anyhow::Result<Summary> {
    let resume = start.resume;
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
    if cfg.mode == Mode::Goal {
        // what was named must run; what was not is left out, with a log line
        for i in insts.iter().filter(|i| i.goal.is_none()) {
            if cfg.instances.contains(&i.id)
                && let Err(e) = i.goal_condition()
            {
                bail!("--mode goal: {e}");
            }
            if cfg.families.contains(&i.family) {
                bail!(
                    "--mode goal: family '{}' has no goal instruction (docs/suite.md lists the families that have one)",
                    i.family
                );
            }
        }
        let skipped: BTreeSet<&str> = insts.iter().filter(|i| i.goal.is_none()).map(|i| i.family.as_str()).collect();
        if !skipped.is_empty() {
            let n = insts.iter().filter(|i| i.goal.is_none()).count();
            tracing::info!(
                "--mode goal: skipping {n} instances of {} families without a goal instruction: {}",
                skipped.len(),
                skipped.into_iter().collect::<Vec<_>>().join(", ")
            );
        }
        insts = insts.iter().filter_map(|i| i.goal_condition().ok()).collect();
        if insts.is_empty() {
            bail!("--mode goal: none of the selected instances has a goal instruction");
        }
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
    // an in-process model serves as many episodes at once as it has sequences (`parallel`,
    // which `--concurrency` sets): one more would wait for a sequence anyway. Set before the
    // manifest is written, so that it records what ran (runs before this recorded the
    // number asked for; `concurrency` is not part of the configuration's hash, so they resume)
    let mut cfg = cfg;
    if let Some(ModelConfig::Llama(l)) = &cfg.model
        && cfg.agent == AgentKind::Model
        && cfg.replay_model.is_none()
    {
        cfg.concurrency = l.parallel.max(1) as usize;
    }
    let mut man = Manifest::new(&cfg, &ws, &ids)?;
    if let (AgentKind::Model, Some(ModelConfig::Llama(l))) = (&cfg.agent, &cfg.model)
        && l.model_path.is_file()
    {
        man.model_sha256 = Some(crate::model::file_digest(&l.model_path)?.0);
    }
    // the machine an in-process model runs on (its kernels depend on the CPU): recorded in the
    // manifest, and in each result line as an index into it
    let host = matches!(
        (&cfg.agent, &cfg.model, &cfg.replay_model),
        (AgentKind::Model, Some(ModelConfig::Llama(_)), None)
    )
    .then(crate::rundir::Host::this);
    let mut host_index: Option<usize> = None;
    if let Some(h) = &host {
        man.hosts = vec![h.clone()];
        host_index = Some(0);
    }
    // load the model first: a missing or broken model fails before anything is written
    if !resume && out.join("manifest.json").exists() {
        bail!(
            "{} already holds a run; use --resume {} or another --out",
            out.display(),
            out.display()
        );
    }
    // every instance prepared and presented before anything is written: an instance that
    // cannot be (an outline that cannot be written out) fails the run with nothing on disk
    let mut prepared = Vec::new();
    for inst in &insts {
        let p = Arc::new(ws.prepare(inst).map_err(|e| anyhow::anyhow!("{}", e.join("\n")))?);
        // goal mode has presented its instances already (to leave out those without a goal)
        let p = if cfg.mode == Mode::Outline {
            present(&p, Mode::Outline)?
        } else {
            p
        };
        prepared.push(p);
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
    let results_path = out.join("results.jsonl");
    // one writer per run directory: a second `run --resume` on the same directory would
    // interleave results and lose some (the soak script's kill test showed it)
    let _lock = lock_run_dir(out)?;
    let mut done: BTreeSet<(String, u32)> = BTreeSet::new();
    if resume {
        let old = Manifest::read(out).with_context(|| format!("--resume {}", out.display()))?;
        if old.config_sha256 != man.config_sha256 {
            bail!(
                "--resume {}: the configuration differs from the interrupted run's (manifest.json config)",
                out.display()
            );
        }
        if old.scenarios != man.scenarios {
            let changed: Vec<&str> = man
                .scenarios
                .iter()
                .filter(|(k, v)| old.scenarios.get(*k) != Some(v))
                .map(|(k, _)| k.as_str())
                .collect();
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
        done.extend(kept.iter().map(|r| (r.instance.clone(), r.trial)));
        let left = ids
            .iter()
            .flat_map(|i| (0..cfg.trials).map(move |t| (i.clone(), t)))
            .filter(|k| !done.contains(k))
            .count();
        if left > 0 {
            resume_guard(out, old, &man, start.allow_other_build)?;
            if let Some(h) = &host {
                host_index = Some(resume_host(out, h)?);
            }
        }
        write_results(out, &kept)?;
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
        man.write(out)?;
        write_atomic(&results_path, b"")?;
    }
    std::fs::create_dir_all(out.join("trajectories"))?;

    let todo: Vec<(Arc<Prepared>, u32)> = prepared
        .iter()
        .flat_map(|p| (0..cfg.trials).map(move |t| (p.clone(), t)))
        .filter(|(p, t)| !done.contains(&(p.instance.id.clone(), *t)))
        .collect();
    let total = prepared.len() * cfg.trials as usize;
    let already = total - todo.len();
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    // Ctrl-C belongs to the run from here on, registered now: registered by a task when it
    // first ran, an interrupt that came before (hashing the families, on a loaded machine,
    // took seconds) ended the process by the signal's default action, with no result written
    let mut interrupts = interrupt_listener(&rt)?;
    eprintln!(
        "emrgym run: {} of {total} episodes to run into {}; Ctrl-C stops the run, `emrgym run --resume {}` finishes it",
        todo.len(),
        out.display(),
        out.display()
    );
    let cfg = Arc::new(cfg);
    let backend = Arc::new(backend);
    let out_dir = out.to_path_buf();
    let hashes = family_hashes(&ws)?;
    let cancel = CancellationToken::new();
    let interrupted = rt.block_on(async {
        // Ctrl-C: episodes in flight end `cancelled` (not scored, run again on --resume),
        // episodes not started are not started, and what finished is kept
        let on_signal = cancel.clone();
        let watcher = tokio::spawn(async move {
            if interrupts.recv().await.is_some() {
                on_signal.cancel();
            }
        });
        let sem = Arc::new(tokio::sync::Semaphore::new(cfg.concurrency));
        let (tx, mut rx) = tokio::sync::mpsc::channel::<(ResultLine, Result<String, serde_json::Error>)>(cfg.concurrency * 2);
        // episodes start in the run's order (instance id, then trial): each takes its permit
        // before it is spawned. Spawned first and left to race for permits, they started in
        // whatever order the runtime's threads polled them, so two runs of one configuration
        // served their episodes in different orders
        let dispatch = {
            let (cfg, backend, cancel) = (cfg.clone(), backend.clone(), cancel.clone());
            tokio::spawn(async move {
                let mut handles = Vec::new();
                for (p, trial) in todo {
                    let Ok(permit) = sem.clone().acquire_owned().await else { break };
                    if cancel.is_cancelled() {
                        break;
                    }
                    let tx = tx.clone();
                    let cfg = cfg.clone();
                    let backend = backend.clone();
                    let cancel = cancel.clone();
                    let sha = hashes.get(&p.instance.family).map(|(_, h)| h.clone()).unwrap_or_default();
                    handles.push(tokio::spawn(async move {
                        let _permit = permit;
                        let (traj, g) = one_episode(&cfg, &p, trial, backend.as_ref().as_ref(), &cancel).await;
                        let mut line = result_line(&p, &cfg.limits, trial, &traj, &g);
                        line.host = host_index;
                        let text = header(&cfg, &p, trial, &sha).and_then(|h| trajectory::file::to_jsonl(&h, &traj));
                        let _ = tx.send((line, text)).await;
                    }));
                }
                handles
            })
        };
        let results_path = out_dir.join("results.jsonl");
        let mut results = ResultsFile::open(&results_path)?;
        let mut n = already;
        // a terminal gets one progress line rewritten in place; a log (nohup, CI) gets a line
        // per finished episode, at most one per LOG_EVERY (a fast agent would flood it) and
        // always the last
        let progress = std::io::IsTerminal::is_terminal(&std::io::stderr());
        let started = std::time::Instant::now();
        let mut logged: Option<std::time::Instant> = None;
        while let Some((line, text)) = rx.recv().await {
            // the trajectory first, whole or not at all; then its result line, whole or not
            // at all: a kill or a full disk leaves no torn file, and the episode without a
            // result line runs again on --resume
            let text = text.with_context(|| format!("serialising the trajectory of {}.{}", line.instance, line.trial))?;
            write_atomic(&trajectory_path(&out_dir, &line.instance, line.trial), text.as_bytes())?;
            results.append(&serde_json::to_string(&line)?)?;
            n += 1;
            let status = || {
                format!(
                    "[{n:>5}/{total}] {:<28} {:<12} {}",
                    line.instance,
                    format!("{:?}", line.end),
                    eta(started.elapsed(), n - already, total - n)
                )
            };
            if progress {
                eprint!("\r{}   ", status());
            } else if n == total || logged.is_none_or(|t| t.elapsed() >= LOG_EVERY) {
                eprintln!("{}", status());
                logged = Some(std::time::Instant::now());
            }
        }
        if progress {
            eprintln!();
        }
        for h in dispatch.await? {
            h.await?;
        }
        watcher.abort();
        anyhow::Ok(cancel.is_cancelled())
    })?;
    // canonical order, then the summary
    let mut all = read_results(&results_path)?;
    all.sort_by(|a, b| (a.instance.as_str(), a.trial).cmp(&(b.instance.as_str(), b.trial)));
    all.dedup_by(|a, b| a.instance == b.instance && a.trial == b.trial);
    write_results(out, &all)?;
    let summary = run_summary(out, &all, cfg.trials, cfg.seed);
    summary.write(out)?;
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

/// SIGINT (Ctrl-C), listened for from the moment this returns.
#[cfg(unix)]
fn interrupt_listener(rt: &tokio::runtime::Runtime) -> std::io::Result<tokio::signal::unix::Signal> {
    let _in_runtime = rt.enter();
    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
}

/// Ctrl-C, listened for from the moment this returns.
#[cfg(windows)]
fn interrupt_listener(rt: &tokio::runtime::Runtime) -> std::io::Result<tokio::signal::windows::CtrlC> {
    let _in_runtime = rt.enter();
    tokio::signal::windows::ctrl_c()
}

/// What must not change while a run is resumed (checked only when episodes are left to run):
/// the tool catalogue the agent sees, the model file, and the build (unless
/// `allow_other_build`, which records the new build in the manifest).
fn resume_guard(out: &Path, mut old: Manifest, new: &Manifest, allow_other_build: bool) -> anyhow::Result<()> {
    let dir = out.display();
    if old.tool_catalogue_sha256 != new.tool_catalogue_sha256 {
        bail!(
            "--resume {dir}: the tool catalogue changed since the run started (sha256 {} then, {} now); its episodes would not have seen the same tools: start a new run",
            old.tool_catalogue_sha256,
            new.tool_catalogue_sha256
        );
    }
    if let (Some(then), Some(now)) = (&old.model_sha256, &new.model_sha256)
        && then != now
    {
        bail!("--resume {dir}: the model file is not the one the run started with (sha256 {then} then, {now} now)");
    }
    let now = new.build.as_deref().unwrap_or("unknown");
    if old.build.as_deref() == Some(now) || old.resumed_by_other_builds.last().map(String::as_str) == Some(now) {
        return Ok(());
    }
    let then = match &old.build {
        Some(b) => format!("build {b}"),
        None => "a build it did not record (it predates build records)".to_string(),
    };
    if !allow_other_build {
        bail!(
            "--resume {dir}: the run was started by {then}, and this is build {now}: resuming would mix two builds' behaviour in one run. Resume with the build that started it (`scripts/build-at.sh {dir}` builds it in a git worktree and prints its path), or pass --allow-other-build to mix them (recorded in its manifest)"
        );
    }
    tracing::warn!("--resume {dir}: started by {then}, resumed by build {now} (--allow-other-build; recorded in the manifest)");
    old.resumed_by_other_builds.push(now.to_string());
    old.write(out)
}

/// The index of this machine in a resumed run's `hosts`, added (and the manifest written)
/// when the run has not run on it before; a machine other than the last one's is logged, as
/// its episodes may decode differently.
fn resume_host(out: &Path, this: &crate::rundir::Host) -> anyhow::Result<usize> {
    let mut man = Manifest::read(out)?;
    if let Some(i) = man.hosts.iter().position(|h| h == this) {
        if i + 1 != man.hosts.len() {
            tracing::warn!("--resume {}: resumed on {} again", out.display(), this.describe());
        }
        return Ok(i);
    }
    match man.hosts.last() {
        Some(last) => tracing::warn!(
            "--resume {}: started on {}, resumed on {}: llama.cpp's kernels depend on the CPU, so this machine's episodes may decode differently (recorded in the manifest's hosts and each result line's host)",
            out.display(),
            last.describe(),
            this.describe()
        ),
        None => tracing::info!(
            "--resume {}: the run's earlier episodes recorded no machine; this one is {}",
            out.display(),
            this.describe()
        ),
    }
    man.hosts.push(this.clone());
    man.write(out)?;
    Ok(man.hosts.len() - 1)
}

#[cfg(test)]
mod tests {
    use super::{eta, resume_guard, resume_host};
    use crate::rundir::Manifest;
    use std::time::Duration;

    fn manifest(build: Option<&str>, model: Option<&str>) -> Manifest {
        Manifest {
            build: build.map(str::to_string),
            resumed_by_other_builds: Vec::new(),
            model_sha256: model.map(str::to_string),
            ..crate::rundir::tests::manifest()
        }
    }

    #[test]
    fn a_resume_must_keep_the_tools_the_model_file_and_unless_allowed_the_build() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path();
        let now = manifest(Some("bbbbbbbbbbbb"), Some("m1"));
        let guard = |old: Manifest, allow: bool| resume_guard(out, old, &now, allow).map_err(|e| e.to_string());
        // the same build: resumes, writes nothing
        assert_eq!(guard(manifest(Some("bbbbbbbbbbbb"), Some("m1")), false), Ok(()));
        assert!(!out.join("manifest.json").exists());
        // another build, or none recorded: refused with both named, unless allowed
        let e = guard(manifest(Some("aaaaaaaaaaaa"), Some("m1")), false).unwrap_err();
        assert!(
            e.contains("started by build aaaaaaaaaaaa") && e.contains("this is build bbbbbbbbbbbb"),
            "{e}"
        );
        let e = guard(manifest(None, None), false).unwrap_err();
        assert!(e.contains("did not record") && e.contains("--allow-other-build"), "{e}");
        assert!(!out.join("manifest.json").exists(), "a refusal writes nothing");
        assert_eq!(guard(manifest(Some("aaaaaaaaaaaa"), Some("m1")), true), Ok(()));
        let written = Manifest::read(out).unwrap();
        assert_eq!(written.build.as_deref(), Some("aaaaaaaaaaaa"), "the starting build stays");
        assert_eq!(written.resumed_by_other_builds, ["bbbbbbbbbbbb"]);
        // resumed again by the build that resumed it last: nothing more to record
        assert_eq!(guard(written, false), Ok(()));
        // another model file or tool catalogue: refused even when builds may mix
        let e = guard(manifest(Some("bbbbbbbbbbbb"), Some("m0")), true).unwrap_err();
        assert!(e.contains("model file") && e.contains("m0") && e.contains("m1"), "{e}");
        let mut tools = manifest(Some("bbbbbbbbbbbb"), Some("m1"));
        tools.tool_catalogue_sha256 = "00".into();
        let e = guard(tools, true).unwrap_err();
        assert!(e.contains("tool catalogue changed"), "{e}");
    }

    /// A resumed run records each machine once: the first resume of a run from before hosts
    /// were recorded adds this one, a resume on another machine adds it after the first, and
    /// a machine seen before is named by its index without writing anything.
    #[test]
    fn a_resume_records_each_machine_once_and_names_it_by_index() {
        use crate::rundir::Host;
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path();
        let amd = Host {
            cpu: "AMD EPYC".into(),
            cores: 2,
            features: vec!["avx2".into(), "avx512f".into()],
        };
        let intel = Host {
            cpu: "Intel(R) Xeon(R) Processor".into(),
            cores: 2,
            features: vec!["avx2".into(), "avx512f".into(), "amx_int8".into()],
        };
        manifest(Some("bbbbbbbbbbbb"), Some("m1")).write(out).unwrap();
        assert_eq!(resume_host(out, &amd).unwrap(), 0, "a run without hosts gets its first");
        assert_eq!(Manifest::read(out).unwrap().hosts, std::slice::from_ref(&amd));
        assert_eq!(resume_host(out, &intel).unwrap(), 1);
        let before = std::fs::read(out.join("manifest.json")).unwrap();
        assert_eq!(resume_host(out, &amd).unwrap(), 0, "a machine seen before keeps its index");
        assert_eq!(resume_host(out, &intel).unwrap(), 1);
        assert_eq!(std::fs::read(out.join("manifest.json")).unwrap(), before, "and nothing is written");
        assert_eq!(Manifest::read(out).unwrap().hosts, [amd, intel.clone()]);
        // the same CPU with another number of cores is another machine
        let four = Host { cores: 4, ..intel };
        assert_eq!(resume_host(out, &four).unwrap(), 2);
    }

    #[test]
    fn the_eta_extrapolates_the_pace_of_this_session() {
        assert_eq!(eta(Duration::from_secs(5), 0, 10), "", "no estimate before the first episode");
        assert_eq!(eta(Duration::from_secs(90), 3, 6), "1m30s elapsed, ETA 3m00s");
        assert_eq!(eta(Duration::from_secs(3 * 3600), 2, 3), "3h00m elapsed, ETA 4h30m");
        assert_eq!(eta(Duration::from_secs(60), 1, 0), "1m00s elapsed, ETA 0m00s");
    }
}
