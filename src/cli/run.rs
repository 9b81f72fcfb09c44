//! `emrgym run` and `emrgym merge`: flags, layering them over a config file and the
//! defaults, and printing (running is `emrgym_engine::run`).

use anyhow::{Context, bail};
use emrgym_agent::model::ModelConfig;
use emrgym_engine::backend::{DEFAULT_LOCAL_MODEL, parse_model};
use emrgym_engine::run::{AgentKind, Mode, RunConfig, Start, execute_with};
use emrgym_engine::rundir::recorded_config;
use serde_json::Value;
use std::path::{Path, PathBuf};

/// The most episodes an in-process model decodes together (`--concurrency`).
const MAX_PARALLEL: u32 = 64;

/// Flags of `emrgym run`.
#[derive(Debug, Clone, clap::Args)]
pub struct RunArgs {
    /// JSON config file (keys as in the manifest's `config`); flags override it.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// A named suite: `quick`, `mab`, `horizon` (`scenarios/suites/NAME.json`) or `full`
    /// (every instance, the default). A directory here is taken as `--scenarios DIR`.
    #[arg(long)]
    pub suite: Option<String>,
    /// Scenario directory.
    #[arg(long)]
    pub scenarios: Option<PathBuf>,
    /// Agent.
    #[arg(long, value_enum)]
    pub agent: Option<AgentKind>,
    /// Model: `openai:MODEL@BASE_URL` (an OpenAI-compatible endpoint), a `.gguf` file, or a
    /// known local model (`emrgym model list`), run in process by llama.cpp.
    #[arg(long)]
    pub model: Option<String>,
    /// CPU threads of the in-process model.
    #[arg(long)]
    pub threads: Option<i32>,
    /// Environment variable holding the endpoint's API key.
    #[arg(long)]
    pub api_key_env: Option<String>,
    /// The condition: flat (the protocol in prose), guided (plus the planner's steps), goal
    /// (the family's goal only; families without one are left out) or outline (plus the whole
    /// task network written out at the start, no planner).
    #[arg(long, value_enum)]
    pub mode: Option<Mode>,
    /// Trials per instance (pass^k up to this k).
    #[arg(long)]
    pub trials: Option<u32>,
    /// Episodes in flight at once (default 4; an in-process model: 1, and N decodes N
    /// episodes together in one context, one sequence each with the whole context size).
    #[arg(long)]
    pub concurrency: Option<usize>,
    /// Run only shard I of N (`I/N`, 1-based).
    #[arg(long)]
    pub shard: Option<String>,
    /// Only these families (repeatable).
    #[arg(long = "family")]
    pub families: Vec<String>,
    /// Only these instances (repeatable).
    #[arg(long = "instance")]
    pub instances: Vec<String>,
    /// Seed of sandboxes and sampling.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Run directory to create.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Finish an interrupted run in this directory (with the build that started it).
    #[arg(long, conflicts_with = "out")]
    pub resume: Option<PathBuf>,
    /// With --resume: finish the run with another build than the one that started it; the
    /// manifest records the new build (`resumed_by_other_builds`), as its episodes then come
    /// from more than one build.
    #[arg(long, requires = "resume")]
    pub allow_other_build: bool,
    /// Tool calls per episode (default: twice the instance's reference plan).
    #[arg(long)]
    pub max_steps: Option<u32>,
    /// Model turns per episode (default: the step limit plus 5).
    #[arg(long)]
    pub max_turns: Option<u32>,
    /// End an episode `stuck` when the same tool call gets the same result this many times
    /// in a row (default 4; 0: never).
    #[arg(long, value_name = "N")]
    pub max_repeats: Option<u32>,
    /// Wall time per episode, seconds (default: 600 on an endpoint, none for an in-process
    /// model; ending at it counts as a harness failure).
    #[arg(long)]
    pub timeout: Option<f64>,
    /// Re-run a recorded model run offline: the model's replies come from RUN_DIR's
    /// trajectories (keyed by request hash), the configuration from its manifest
    #[arg(long, value_name = "RUN_DIR")]
    pub replay_model: Option<PathBuf>,
    /// Print the summary as JSON.
    #[arg(long)]
    pub json: bool,
}

fn parse_shard(s: &str) -> anyhow::Result<[u32; 2]> {
    let (i, n) = s.split_once('/').with_context(|| format!("--shard '{s}' must be I/N, e.g. 1/4"))?;
    let (i, n): (u32, u32) = (
        i.trim().parse().with_context(|| format!("--shard '{s}': '{i}' is not a number"))?,
        n.trim().parse().with_context(|| format!("--shard '{s}': '{n}' is not a number"))?,
    );
    if n == 0 || i == 0 || i > n {
        bail!("--shard '{s}': need 1 <= I <= N");
    }
    Ok([i, n])
}

/// Layer defaults, the config file and the flags.
pub fn resolve(a: &RunArgs) -> anyhow::Result<RunConfig> {
    let mut c = match (&a.config, &a.replay_model) {
        (Some(p), _) => {
            let text = std::fs::read_to_string(p).with_context(|| format!("reading config {}", p.display()))?;
            serde_json::from_str::<RunConfig>(&text).with_context(|| format!("config {}", p.display()))?
        }
        // a cassette run starts from the recorded run's configuration
        (None, Some(dir)) => recorded_config(dir)?,
        (None, None) => RunConfig::default(),
    };
    if let Some(dir) = &a.replay_model {
        if c.agent != AgentKind::Model || c.model.is_none() {
            bail!(
                "--replay-model {}: that run used no model (agent {:?}), so it recorded no replies",
                dir.display(),
                c.agent
            );
        }
        if a.model.is_some() {
            bail!("--replay-model serves the recorded model's replies; drop --model");
        }
        c.replay_model = Some(dir.clone());
        c.shard = None;
    }
    if let Some(d) = &a.scenarios {
        c.suite = d.clone();
    }
    if let Some(s) = &a.suite {
        if Path::new(s).is_dir() {
            c.suite = PathBuf::from(s);
        } else {
            c.suite_name = (s != emrgym_engine::suites::FULL).then(|| s.clone());
        }
    }
    if let Some(x) = a.agent {
        c.agent = x;
    }
    if let Some(m) = &a.model {
        c.model = Some(parse_model(m, c.model.as_ref())?);
        if a.agent.is_none() {
            c.agent = AgentKind::Model;
        }
    }
    if let Some(k) = &a.api_key_env {
        match c.model.as_mut() {
            Some(ModelConfig::Openai(m)) => m.api_key_env = Some(k.clone()),
            _ => bail!("--api-key-env '{k}' needs an OpenAI-compatible model (--model openai:MODEL@BASE_URL)"),
        }
    }
    if c.agent == AgentKind::Model && c.model.is_none() {
        c.model = Some(parse_model(DEFAULT_LOCAL_MODEL, None)?);
    }
    if let Some(t) = a.threads {
        match c.model.as_mut() {
            Some(ModelConfig::Llama(m)) if t > 0 => m.threads = t,
            Some(ModelConfig::Llama(_)) => bail!("--threads must be at least 1 (got {t})"),
            _ => bail!("--threads {t} applies to an in-process model (--model FILE.gguf or a local model name)"),
        }
    }
    if let Some(m) = a.mode {
        c.mode = m;
    }
    if let Some(t) = a.trials {
        c.trials = t;
    }
    if let Some(n) = a.concurrency {
        c.concurrency = n;
        // an in-process model decodes that many episodes together, one sequence each
        if let Some(ModelConfig::Llama(m)) = c.model.as_mut() {
            m.parallel = match u32::try_from(n) {
                Ok(p) if (1..=MAX_PARALLEL).contains(&p) => p,
                _ => bail!(
                    "--concurrency {n}: an in-process model decodes at most {MAX_PARALLEL} episodes together (each sequence holds a whole context)"
                ),
            };
        }
    }
    if let Some(s) = &a.shard {
        c.shard = Some(parse_shard(s)?);
    }
    if !a.families.is_empty() {
        c.families = a.families.clone();
    }
    if !a.instances.is_empty() {
        c.instances = a.instances.clone();
    }
    if let Some(s) = a.seed {
        c.seed = s;
    }
    if let Some(t) = a.max_steps {
        if t == 0 {
            bail!("--max-steps must be at least 1 (got 0; leave it out to derive it from each instance)");
        }
        c.limits.max_steps = t;
    }
    if let Some(t) = a.max_turns {
        if t == 0 {
            bail!("--max-turns must be at least 1 (got 0; leave it out to derive it from each instance)");
        }
        c.limits.max_turns = t;
    }
    if let Some(n) = a.max_repeats {
        c.limits.max_repeats = n;
    }
    if let Some(t) = a.timeout {
        c.limits.timeout_s = t;
    }
    if c.trials == 0 {
        bail!("--trials must be at least 1 (got 0)");
    }
    if c.concurrency == 0 {
        bail!("--concurrency must be at least 1 (got 0)");
    }
    if c.limits.timeout_s.is_nan() || c.limits.timeout_s < 0.0 || a.timeout.is_some_and(|t| t.is_nan() || t <= 0.0) {
        bail!(
            "--timeout must be positive (got {}; leave it out for the default wall time)",
            c.limits.timeout_s
        );
    }
    if c.agent == AgentKind::Model && c.model.is_none() {
        c.model = Some(parse_model(DEFAULT_LOCAL_MODEL, None)?);
    }
    Ok(c)
}

fn print_summary(s: &emrgym_engine::stats::Summary) -> anyhow::Result<()> {
    super::emit(&emrgym_engine::report::summary_text(&s.to_json()?))
}

/// Run `emrgym run`.
pub fn run(a: RunArgs) -> anyhow::Result<()> {
    let (cfg, out, resume) = match &a.resume {
        Some(dir) => {
            let mut cfg = emrgym_engine::rundir::recorded_config(dir).with_context(|| format!("--resume {}", dir.display()))?;
            if let Some(n) = a.concurrency {
                // an in-process model's sequences decoded together shape its results: the
                // recorded number is kept, and another is refused rather than ignored
                if let Some(ModelConfig::Llama(m)) = &cfg.model
                    && n != m.parallel as usize
                {
                    bail!(
                        "--concurrency {n} with --resume {}: this run's in-process model decodes {} episodes together (recorded in its manifest), and another number would change its results; resume without --concurrency",
                        dir.display(),
                        m.parallel
                    );
                }
                cfg.concurrency = n;
            }
            (cfg, dir.clone(), true)
        }
        None => {
            let cfg = resolve(&a)?;
            let out = match &a.out {
                Some(o) => o.clone(),
                None => {
                    // runs/<agent>-<mode>-seed<S>, with -2, -3, ... when an earlier run is there
                    let name = |v: Value| v.as_str().map(str::to_string).unwrap_or_default();
                    let base = format!(
                        "runs/{}-{}-seed{}",
                        name(serde_json::to_value(cfg.agent)?),
                        name(serde_json::to_value(cfg.mode)?),
                        cfg.seed
                    );
                    let mut p = PathBuf::from(&base);
                    let mut k = 2;
                    while p.exists() {
                        p = PathBuf::from(format!("{base}-{k}"));
                        k += 1;
                    }
                    p
                }
            };
            (cfg, out, false)
        }
    };
    let start = Start {
        resume,
        allow_other_build: a.allow_other_build,
    };
    let summary = execute_with(cfg, &out, start)?;
    if a.json {
        super::emit(&format!("{}\n", serde_json::to_string_pretty(&summary)?))
    } else {
        print_summary(&summary)?;
        super::emit(&format!("run directory: {}\n", out.display()))
    }
}

/// Run `emrgym merge`.
pub fn merge(a: MergeArgs) -> anyhow::Result<()> {
    print_summary(&emrgym_engine::rundir::merge(&a.runs, &a.out)?)
}

/// Flags of `emrgym merge`.
#[derive(Debug, Clone, clap::Args)]
pub struct MergeArgs {
    /// Shard run directories.
    #[arg(required = true, num_args = 1..)]
    pub runs: Vec<PathBuf>,
    /// The merged run directory.
    #[arg(long)]
    pub out: PathBuf,
}
