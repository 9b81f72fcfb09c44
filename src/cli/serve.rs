//! `emrgym serve`: load a cohort and serve it over HTTP.

use anyhow::{Context, bail};
use emrgym_engine::episode::Workspace;
use emrgym_engine::episodes::{EpisodeApi, Limits};
use emrgym_engine::session::{Feedback, Recorder};
use emrgym_fhir::clock::{Clock, parse_instant};
use emrgym_fhir::load;
use emrgym_fhir::server::{
    AppState, ConnLimits, DEFAULT_BODY_LIMIT, DEFAULT_BODY_TIMEOUT, DEFAULT_HEADER_TIMEOUT, DEFAULT_MAX_CONNECTIONS,
    DEFAULT_REQUEST_TIMEOUT, DEFAULT_WRITE_TIMEOUT, ServerConfig, default_max_work, serve_until,
};
use emrgym_tools::Registry;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Flags of `emrgym serve`.
#[derive(Debug, Clone, clap::Args)]
pub struct ServeArgs {
    /// JSON config file (keys as the long flags, with underscores); flags override it.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Cohort: a built-in name (demo, gen, synthea-samples) or a path to NDJSON/Bundle files.
    #[arg(long)]
    pub cohort: Option<String>,
    /// Interface to bind (loopback by default).
    #[arg(long)]
    pub host: Option<String>,
    /// Port (0 picks a free one).
    #[arg(long)]
    pub port: Option<u16>,
    /// The operator's token: `Authorization: Bearer TOKEN` creates, lists and ends episodes,
    /// reads full grades and uses the sandbox API. Without it, any loopback client is the
    /// operator (agents on this machine included: pass it for benchmark runs).
    #[arg(long)]
    pub token: Option<String>,
    /// What an agent learns when its episode ends: none (that it ended), success, or
    /// progress (success and the share of subtasks). Never expected values (default none).
    #[arg(long, value_enum)]
    pub agent_feedback: Option<Feedback>,
    /// Most episodes of one instance in the recording, earlier servers' included (429 beyond).
    #[arg(long)]
    pub max_episodes_per_instance: Option<u32>,
    /// Most episodes of one instance open at once (429 beyond).
    #[arg(long)]
    pub max_open_episodes_per_instance: Option<usize>,
    /// End an open episode as `abandoned` after this many seconds without a tool call or
    /// FHIR request from its agent (default: never).
    #[arg(long)]
    pub episode_idle_timeout_s: Option<u64>,
    /// A host name the `Host` header may name besides the loopback names and the bind
    /// address (repeatable; no port).
    #[arg(long = "allow-host")]
    pub allow_hosts: Vec<String>,
    /// An origin (`scheme://host[:port]`) whose requests are admitted (repeatable); other
    /// foreign origins get 403.
    #[arg(long = "allow-origin")]
    pub allow_origins: Vec<String>,
    /// Largest accepted request body in bytes.
    #[arg(long)]
    pub body_limit: Option<usize>,
    /// Fix the clock at this instant (RFC 3339); otherwise wall-clock time.
    #[arg(long)]
    pub now: Option<String>,
    /// Seed of the default sandbox's id generator.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Public base URL used in links (default: from the Host header).
    #[arg(long)]
    pub public_base: Option<String>,
    /// Skip R4 schema validation of writes.
    #[arg(long)]
    pub no_validate: bool,
    /// Scenario directory served by the episode API (default: scenarios, when present).
    #[arg(long)]
    pub suite: Option<PathBuf>,
    /// Run directory the episode API records ended episodes in (default: runs/episodes).
    #[arg(long)]
    pub record: Option<PathBuf>,
    /// Most open connections; beyond it a new connection gets a 503 and is closed (default
    /// 2048, and never above the file-descriptor limit less 256).
    #[arg(long)]
    pub max_connections: Option<usize>,
    /// Milliseconds for a request's headers to arrive, also the idle keep-alive timeout
    /// (default 10000).
    #[arg(long)]
    pub header_timeout_ms: Option<u64>,
    /// Milliseconds for a request's body to arrive (default 30000; 408 beyond).
    #[arg(long)]
    pub body_timeout_ms: Option<u64>,
    /// Processing deadline of one request in milliseconds, also the longest wait for a
    /// worker (default 30000; 408 past the deadline, 503 when no worker frees up).
    #[arg(long)]
    pub request_timeout_ms: Option<u64>,
    /// Milliseconds a response write may make no progress (a client that does not read its
    /// answers) before the connection is closed (default 30000).
    #[arg(long)]
    pub write_timeout_ms: Option<u64>,
    /// Most requests doing CPU-bound work at once (default: 4 per core).
    #[arg(long)]
    pub max_work: Option<usize>,
}

/// The resolved configuration of `emrgym serve`.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServeConfig {
    /// Cohort name or path.
    pub cohort: String,
    /// Bind address.
    pub host: String,
    /// Port.
    pub port: u16,
    /// The operator's bearer token.
    pub token: Option<String>,
    /// What agents learn when their episode ends.
    pub agent_feedback: Feedback,
    /// Most episodes of one instance in the recording.
    pub max_episodes_per_instance: Option<u32>,
    /// Most episodes of one instance open at once.
    pub max_open_episodes_per_instance: Option<usize>,
    /// Seconds without a call before an open episode is abandoned.
    pub episode_idle_timeout_s: Option<u64>,
    /// Extra host names for the `Host` check.
    pub allow_hosts: Vec<String>,
    /// Extra admitted origins.
    pub allow_origins: Vec<String>,
    /// Body limit.
    pub body_limit: usize,
    /// Fixed clock.
    pub now: Option<String>,
    /// Seed.
    pub seed: u64,
    /// Public base URL.
    pub public_base: Option<String>,
    /// Validate writes.
    pub validate: bool,
    /// Scenario directory for the episode API (None: `scenarios` if it exists).
    pub suite: Option<PathBuf>,
    /// Recording run directory of the episode API.
    pub record: PathBuf,
    /// Most open connections.
    pub max_connections: usize,
    /// Header-read (and idle keep-alive) timeout, ms.
    pub header_timeout_ms: u64,
    /// Body-read timeout, ms.
    pub body_timeout_ms: u64,
    /// Processing deadline, ms.
    pub request_timeout_ms: u64,
    /// Write timeout (no progress writing to the client), ms.
    pub write_timeout_ms: u64,
    /// Most requests at work at once.
    pub max_work: usize,
}

impl Default for ServeConfig {
    fn default() -> Self {
        ServeConfig {
            cohort: load::DEFAULT_COHORT.into(),
            host: "127.0.0.1".into(),
            port: 8080,
            token: None,
            agent_feedback: Feedback::None,
            max_episodes_per_instance: None,
            max_open_episodes_per_instance: None,
            episode_idle_timeout_s: None,
            allow_hosts: Vec::new(),
            allow_origins: Vec::new(),
            body_limit: DEFAULT_BODY_LIMIT,
            now: None,
            seed: 0,
            public_base: None,
            validate: true,
            suite: None,
            record: PathBuf::from("runs/episodes"),
            max_connections: DEFAULT_MAX_CONNECTIONS,
            header_timeout_ms: DEFAULT_HEADER_TIMEOUT.as_millis() as u64,
            body_timeout_ms: DEFAULT_BODY_TIMEOUT.as_millis() as u64,
            request_timeout_ms: DEFAULT_REQUEST_TIMEOUT.as_millis() as u64,
            write_timeout_ms: DEFAULT_WRITE_TIMEOUT.as_millis() as u64,
            max_work: default_max_work(),
        }
    }
}

impl ServeConfig {
    /// Defaults, then the config file, then flags.
    pub fn resolve(a: &ServeArgs) -> anyhow::Result<ServeConfig> {
        let mut c = match &a.config {
            Some(p) => {
                let text = std::fs::read_to_string(p).with_context(|| format!("reading config file {}", p.display()))?;
                serde_json::from_str(&text).with_context(|| format!("config file {}", p.display()))?
            }
            None => ServeConfig::default(),
        };
        if let Some(v) = &a.cohort {
            c.cohort = v.clone();
        }
        if let Some(v) = &a.host {
            c.host = v.clone();
        }
        if let Some(v) = a.port {
            c.port = v;
        }
        if a.token.is_some() {
            c.token = a.token.clone();
        }
        if let Some(v) = a.agent_feedback {
            c.agent_feedback = v;
        }
        if a.max_episodes_per_instance.is_some() {
            c.max_episodes_per_instance = a.max_episodes_per_instance;
        }
        if a.max_open_episodes_per_instance.is_some() {
            c.max_open_episodes_per_instance = a.max_open_episodes_per_instance;
        }
        if a.episode_idle_timeout_s.is_some() {
            c.episode_idle_timeout_s = a.episode_idle_timeout_s;
        }
        c.allow_hosts.extend(a.allow_hosts.iter().cloned());
        c.allow_origins.extend(a.allow_origins.iter().cloned());
        if let Some(v) = a.body_limit {
            c.body_limit = v;
        }
        if a.now.is_some() {
            c.now = a.now.clone();
        }
        if let Some(v) = a.seed {
            c.seed = v;
        }
        if a.public_base.is_some() {
            c.public_base = a.public_base.clone();
        }
        if a.no_validate {
            c.validate = false;
        }
        if a.suite.is_some() {
            c.suite = a.suite.clone();
        }
        if let Some(r) = &a.record {
            c.record = r.clone();
        }
        if let Some(v) = a.max_connections {
            c.max_connections = v;
        }
        if let Some(v) = a.header_timeout_ms {
            c.header_timeout_ms = v;
        }
        if let Some(v) = a.body_timeout_ms {
            c.body_timeout_ms = v;
        }
        if let Some(v) = a.request_timeout_ms {
            c.request_timeout_ms = v;
        }
        if let Some(v) = a.write_timeout_ms {
            c.write_timeout_ms = v;
        }
        if let Some(v) = a.max_work {
            c.max_work = v;
        }
        for (flag, v) in [
            ("--max-connections", c.max_connections as u64),
            ("--header-timeout-ms", c.header_timeout_ms),
            ("--body-timeout-ms", c.body_timeout_ms),
            ("--request-timeout-ms", c.request_timeout_ms),
            ("--write-timeout-ms", c.write_timeout_ms),
            ("--max-work", c.max_work as u64),
        ] {
            if v == 0 {
                bail!("{flag} must be positive, got 0");
            }
        }
        if c.max_episodes_per_instance == Some(0) || c.max_open_episodes_per_instance == Some(0) || c.episode_idle_timeout_s == Some(0) {
            bail!("--max-episodes-per-instance, --max-open-episodes-per-instance and --episode-idle-timeout-s must be positive");
        }
        if let Some(bad) = c.allow_hosts.iter().find(|h| h.is_empty() || h.contains(['/', ' '])) {
            bail!("--allow-host '{bad}' is not a host name (give the name, without scheme or path)");
        }
        if let Some(bad) = c
            .allow_origins
            .iter()
            .find(|o| !(o.starts_with("http://") || o.starts_with("https://")))
        {
            bail!("--allow-origin '{bad}' is not an origin (scheme://host[:port])");
        }
        if c.body_limit == 0 {
            bail!("--body-limit must be positive, got 0");
        }
        if c.token.as_deref() == Some("") {
            bail!("--token must not be empty");
        }
        Ok(c)
    }
}

/// Run the server until ctrl-c.
pub fn run(a: ServeArgs) -> anyhow::Result<()> {
    let c = ServeConfig::resolve(&a)?;
    let clock = match &c.now {
        Some(n) => Clock::fixed(parse_instant(n).map_err(|e| anyhow::anyhow!("--now: {e}"))?),
        None => Clock::System,
    };
    let t0 = Instant::now();
    let cohort = load::load(&c.cohort)
        .with_context(|| format!("loading cohort '{}'", c.cohort))?
        .build(&clock);
    tracing::info!(
        cohort = cohort.name(),
        resources = cohort.len(),
        ms = t0.elapsed().as_millis() as u64,
        "cohort loaded"
    );
    let state = AppState::new(
        cohort,
        ServerConfig {
            token: c.token.clone(),
            body_limit: c.body_limit,
            public_base: c.public_base.clone(),
            clock,
            seed: c.seed,
            validate: c.validate,
            header_timeout: Duration::from_millis(c.header_timeout_ms),
            body_timeout: Duration::from_millis(c.body_timeout_ms),
            request_timeout: Duration::from_millis(c.request_timeout_ms),
            write_timeout: Duration::from_millis(c.write_timeout_ms),
            max_connections: connection_limit(c.max_connections),
            max_work: c.max_work,
            allowed_hosts: allowed_hosts(&c),
            allowed_origins: c.allow_origins.clone(),
        },
    );
    if c.token.is_none() {
        tracing::warn!(
            "no --token: every loopback client is the operator (it can list episodes and read grades); \
             episode tokens still confine agents that use them, but for benchmark runs pass --token"
        );
    }
    let registry = std::sync::Arc::new(Registry::standard().context("building the tool catalogue")?);
    // the episode API: on the given suite, or on ./scenarios when it is there
    let suite = match &c.suite {
        Some(s) => Some(s.clone()),
        None => Some(PathBuf::from("scenarios")).filter(|p| p.is_dir()),
    };
    let open_api = |dir: &PathBuf| -> anyhow::Result<std::sync::Arc<EpisodeApi>> {
        let ws = Workspace::open(dir).map_err(|e| anyhow::anyhow!("--suite {}: {}", dir.display(), e.join("\n")))?;
        let rec = Recorder::open(&c.record, dir, c.seed, &ws)?;
        let limits = Limits {
            feedback: c.agent_feedback,
            per_instance: c.max_episodes_per_instance,
            open_per_instance: c.max_open_episodes_per_instance,
            operator_token: c.token.is_some(),
            idle_timeout: c.episode_idle_timeout_s.map(Duration::from_secs),
        };
        EpisodeApi::with_limits(state.clone(), ws, rec, limits)
    };
    let episodes = match (&suite, c.suite.is_some()) {
        // asked for: a broken suite or recording directory is an error
        (Some(dir), true) => Some(open_api(dir)?),
        // ./scenarios found by default: the FHIR server still runs without the episode API
        (Some(dir), false) => match open_api(dir) {
            Ok(api) => Some(api),
            Err(e) => {
                tracing::warn!("the episode API is off: {e:#}");
                None
            }
        },
        (None, _) => {
            tracing::warn!("no scenarios directory: the episode API is off (pass --suite DIR)");
            None
        }
    };
    let limits = ConnLimits::of(state.config());
    // workers of CPU-bound requests: bigger stacks than the 2 MiB default, as a margin for
    // the schema validator on deeply nested (but accepted, depth <= 128) bodies
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_stack_size(8 * 1024 * 1024)
        .build()?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind((c.host.as_str(), c.port))
            .await
            .with_context(|| format!("binding {}:{}", c.host, c.port))?;
        let addr = listener.local_addr()?;
        // build the usual indexes and sort columns while the first requests arrive
        let warm = state.cohort().clone();
        std::thread::spawn(move || {
            let t = Instant::now();
            warm.warm();
            tracing::info!(ms = t.elapsed().as_millis() as u64, "indexes warm");
        });
        let mut banner = format!(
            "EMRGym FHIR R4 server: http://{addr}/fhir (cohort '{}', {} resources; sandboxes: POST http://{addr}/sandboxes; {} tools: GET http://{addr}/tools)\n",
            state.cohort().name(),
            state.cohort().len(),
            registry.names().count()
        );
        if let Some(api) = &episodes {
            banner.push_str(&format!(
                "episode API: GET http://{addr}/scenarios, POST http://{addr}/episodes, MCP http://{addr}/mcp (recording in {})\n",
                api.run_dir().display()
            ));
        }
        // one write, and a reader that goes away (`| head -1`, a test reading the address)
        // must not take the server down: println! would panic on the closed pipe
        {
            use std::io::Write;
            let mut out = std::io::stdout().lock();
            let _ = out.write_all(banner.as_bytes()).and_then(|_| out.flush());
        }
        let episodes_for_shutdown = episodes.clone();
        // idle episodes expire (checked every quarter of the timeout, at most every 30 s)
        if let Some(api) = episodes.clone()
            && let Some(idle) = api.idle_timeout()
        {
            tokio::spawn(async move {
                let mut tick = tokio::time::interval((idle / 4).clamp(Duration::from_secs(1), Duration::from_secs(30)));
                loop {
                    tick.tick().await;
                    let api = api.clone();
                    // grading is CPU-bound: off the async workers
                    let _ = tokio::task::spawn_blocking(move || api.expire_idle(idle)).await;
                }
            });
        }
        let app = emrgym_engine::episodes::app(state, registry, episodes);
        let mcp = episodes_for_shutdown.clone();
        serve_until(app, listener, limits, async move {
            let _ = tokio::signal::ctrl_c().await;
            // MCP sessions hold event streams open: end them so the connections can close
            if let Some(api) = mcp {
                api.stop_mcp();
            }
        })
        .await
        .context("server failed")?;
        if let Some(api) = &episodes_for_shutdown {
            // every episode a client opened is in the results, the abandoned ones too
            let n = api.abandon_all();
            if n > 0 {
                tracing::warn!("{n} episodes were still open: recorded as abandoned");
            }
            api.flush();
        }
        Ok(())
    })
}

/// The host names the `Host` check admits besides the loopback names: `--allow-host`, the
/// bind address unless it is a wildcard, and the host of `--public-base`.
fn allowed_hosts(c: &ServeConfig) -> Vec<String> {
    let mut hosts: Vec<String> = c.allow_hosts.iter().map(|h| h.to_ascii_lowercase()).collect();
    if !matches!(c.host.as_str(), "0.0.0.0" | "::" | "[::]") {
        let h = c.host.to_ascii_lowercase();
        hosts.push(if h.contains(':') && !h.starts_with('[') {
            format!("[{h}]")
        } else {
            h
        });
    }
    if let Some(host) = c
        .public_base
        .as_deref()
        .and_then(|b| url::Url::parse(b).ok())
        .and_then(|u| u.host_str().map(str::to_ascii_lowercase))
    {
        hosts.push(host);
    }
    hosts
}

/// Raise the soft file-descriptor limit to the hard one (where allowed) and keep the
/// connection limit 256 descriptors below it, for cohort files, recordings and threads: a
/// flood of idle connections then meets the 503 of the connection limit, never EMFILE.
fn connection_limit(wanted: usize) -> usize {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let lim = getrlimit(Resource::Nofile);
    let mut soft = lim.current;
    if let (Some(cur), Some(hard)) = (lim.current, lim.maximum)
        && cur < hard
    {
        // some kernels refuse more than nr_open; try the hard limit, then 1 Mi
        for target in [hard, hard.min(1 << 20)] {
            if setrlimit(
                Resource::Nofile,
                Rlimit {
                    current: Some(target),
                    maximum: lim.maximum,
                },
            )
            .is_ok()
            {
                soft = Some(target);
                break;
            }
        }
    }
    let limit = match soft {
        Some(fds) => wanted.min(usize::try_from(fds.saturating_sub(256)).unwrap_or(usize::MAX).max(16)),
        None => wanted,
    };
    if limit < wanted {
        tracing::warn!(
            "--max-connections {wanted} lowered to {limit}: the file-descriptor limit is {}",
            soft.unwrap_or_default()
        );
    }
    tracing::info!(fd_limit = soft.unwrap_or_default(), max_connections = limit, "connection limit");
    limit
}
