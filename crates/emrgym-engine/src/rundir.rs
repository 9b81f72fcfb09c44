//! The run directory: its format (`manifest.json`, `results.jsonl` with one [`ResultLine`]
//! per episode, `trajectories/INSTANCE.TRIAL.jsonl`, `summary.json`), the one reader of
//! `results.jsonl` and its one rule for a torn last line, the crash-safe writers (whole-file
//! replace, whole-line append) and the one-writer lock; `merge` of shard runs.
//! docs/trajectory-format.md describes the files.

use crate::episode::{Prepared, Workspace};
use crate::run::{AgentKind, RunConfig, derived_limits, episode_limits, episode_seed};
use crate::stats::{Summary, run_summary};
use anyhow::{Context, bail};
use emrgym_agent::harness::{HarnessLimit, attribute};
use emrgym_agent::model::Limits;
use emrgym_grade::Grade;
use emrgym_scenario::trajectory::file::{Header, ScenarioRef};
use emrgym_scenario::trajectory::{self, EndReason, Trajectory};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};

/// Run directory format version.
pub const RUN_FORMAT_VERSION: u32 = 1;

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
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grade: Option<Grade>,
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
    /// The machine an in-process model ran the episode on: its index in the manifest's
    /// `hosts` (absent for other agents, and in runs from before hosts were recorded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<usize>,
}

impl ResultLine {
    /// A scored episode that failed at a harness limit.
    pub fn harness_failure(&self) -> bool {
        !self.infrastructure && !self.success && self.harness_limit.is_some()
    }
}

/// Where a run directory keeps an episode's trajectory.
pub fn trajectory_path(run: &Path, instance: &str, trial: u32) -> PathBuf {
    run.join("trajectories").join(format!("{instance}.{trial}.jsonl"))
}

/// The header of an episode's trajectory file (an error if the model configuration cannot be
/// serialised: a header without its model would misstate the run).
pub fn header(cfg: &RunConfig, p: &Prepared, trial: u32, scenario_sha256: &str) -> Result<Header, serde_json::Error> {
    let model = match (&cfg.agent, &cfg.model) {
        (AgentKind::Model, Some(m)) => Some(serde_json::to_value(m)?),
        _ => None,
    };
    Ok(Header {
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
        mode: cfg.mode.name().into(),
        agent: match cfg.agent {
            AgentKind::Oracle => "oracle",
            AgentKind::Null => "null",
            AgentKind::Model => "model",
            AgentKind::External => "external",
        }
        .into(),
        model,
        seed: cfg.seed,
        episode_seed: episode_seed(cfg.seed, &p.instance.id, trial),
        tool_catalogue_sha256: sha256_hex(p.registry.openai_tools().to_string().as_bytes()),
        instruction: if p.instance.context.trim().is_empty() {
            p.instance.instruction.clone()
        } else {
            format!("{}\n\nContext: {}", p.instance.instruction, p.instance.context)
        },
        now: p.instance.now.clone(),
        cohort: p.instance.cohort.clone(),
    })
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
        grade: g.clone(),
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
        host: None,
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
    for (i, line) in text.split_inclusive('\n').enumerate() {
        // every line is written with its newline in one write (`ResultsFile::append`), so a last line
        // without one is a write a crash cut short: it is not a result
        if !line.ends_with('\n') {
            tracing::warn!("{}: ignoring the torn last line {}", path.display(), i + 1);
            break;
        }
        if line.trim().is_empty() {
            continue;
        }
        out.push(serde_json::from_str(line).with_context(|| format!("{} line {}: not a result line", path.display(), i + 1))?);
    }
    Ok(out)
}

/// Each family's content hash: its file and the HTN libraries it uses. A library the
/// workspace did not load is an error, never hashed as empty.
pub fn family_hashes(ws: &Workspace) -> anyhow::Result<BTreeMap<String, (String, String)>> {
    let mut hashes = BTreeMap::new();
    for (file, text, fam) in &ws.suite.families {
        let mut h = Sha256::new();
        h.update(text.as_bytes());
        for lib in &fam.library {
            let text = ws
                .suite
                .library_text(lib)
                .map_err(|e| anyhow::anyhow!("family {}: library {lib}: {e}", fam.family))?;
            h.update(text.as_bytes());
        }
        hashes.insert(
            fam.family.clone(),
            (
                file.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default(),
                emrgym_core::hex(&h.finalize()),
            ),
        );
    }
    Ok(hashes)
}

/// One family's entry in the manifest: its scenario file and the content hash of the file and
/// the HTN libraries it uses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScenarioHash {
    /// The scenario file's name.
    pub file: String,
    /// SHA-256 of the file and its libraries.
    pub sha256: String,
}

/// A machine that ran an in-process model. llama.cpp is compiled for the machine it is built
/// on and picks its kernels by the CPU's vector extensions, so greedy decoding of the same
/// prompt can round differently, and an episode go another way, on another machine
/// (docs/performance.md): a run resumed on another machine has episodes of both.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Host {
    /// The CPU's model name (`/proc/cpuinfo`), or the architecture where it cannot be read.
    pub cpu: String,
    /// Logical cores.
    pub cores: usize,
    /// Which of [`KERNEL_FEATURES`] the CPU has.
    pub features: Vec<String>,
}

/// The CPU features llama.cpp's CPU kernels are chosen by (x86-64 `flags`, AArch64
/// `Features` in `/proc/cpuinfo`), in this order.
pub const KERNEL_FEATURES: &[&str] = &[
    "avx",
    "avx2",
    "fma",
    "f16c",
    "avx512f",
    "avx512bw",
    "avx512vbmi",
    "avx512_vnni",
    "avx512_bf16",
    "avx512_fp16",
    "avx_vnni",
    "amx_tile",
    "amx_int8",
    "amx_bf16",
    "asimd",
    "asimddp",
    "asimdhp",
    "i8mm",
    "sve",
    "sve2",
];

impl Host {
    /// This machine.
    pub fn this() -> Host {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        match std::fs::read_to_string("/proc/cpuinfo") {
            Ok(text) => Host::from_cpuinfo(&text, cores),
            Err(_) => Host {
                cpu: std::env::consts::ARCH.to_string(),
                cores,
                features: Vec::new(),
            },
        }
    }

    /// The host described by the text of `/proc/cpuinfo` (its first processor).
    pub fn from_cpuinfo(text: &str, cores: usize) -> Host {
        let field = |name: &str| {
            text.lines().find_map(|l| {
                l.split_once(':')
                    .filter(|(k, _)| k.trim() == name)
                    .map(|(_, v)| v.trim().to_string())
            })
        };
        let cpu = field("model name")
            .or_else(|| field("Hardware"))
            .or_else(|| field("CPU part").map(|p| format!("{} CPU part {p}", std::env::consts::ARCH)))
            .unwrap_or_else(|| std::env::consts::ARCH.to_string());
        let has: BTreeSet<String> = field("flags")
            .or_else(|| field("Features"))
            .unwrap_or_default()
            .split_whitespace()
            .map(str::to_string)
            .collect();
        Host {
            cpu,
            cores,
            features: KERNEL_FEATURES
                .iter()
                .filter(|f| has.contains(**f))
                .map(|f| f.to_string())
                .collect(),
        }
    }

    /// `CPU, N cores (features)`, as the leaderboard's Runs table shows it.
    pub fn describe(&self) -> String {
        format!("{}, {} cores ({})", self.cpu, self.cores, self.features.join(" "))
    }
}

/// `manifest.json`: what a run was (configuration, scenarios, instances, tools); written when
/// the run starts, read by resume, merge, replay, report and leaderboard.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Run directory format version ([`RUN_FORMAT_VERSION`]).
    pub format_version: u32,
    /// The emrgym version that wrote it.
    pub emrgym_version: String,
    /// The build that started the run ([`crate::BUILD`]: the commit, `+dirty.<hash>` for a
    /// changed checkout); absent in runs from before it was recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub build: Option<String>,
    /// Other builds that resumed the run (`emrgym run --resume --allow-other-build`), in order:
    /// its episodes come from more than one build.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resumed_by_other_builds: Vec<String>,
    /// SHA-256 of the in-process model's GGUF file (absent for other agents).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_sha256: Option<String>,
    /// The machines an in-process model ran the run's episodes on, each once, in the order
    /// they started or resumed it; each result line names its own (`host`). Absent for other
    /// agents and in runs from before it was recorded.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<Host>,
    /// The resolved configuration.
    pub config: RunConfig,
    /// SHA-256 of the configuration without its speed settings (concurrency, shard): what
    /// `--resume` must match.
    pub config_sha256: String,
    /// Each family's content hash.
    pub scenarios: BTreeMap<String, ScenarioHash>,
    /// The instances the run covers.
    pub instances: Vec<String>,
    /// SHA-256 of the tool catalogue the agent saw.
    pub tool_catalogue_sha256: String,
    /// What external agents could reach (episode API and MCP recordings): interface, operator
    /// auth, agent feedback.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access: Option<Value>,
    /// The shard runs this one was merged from.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub merged_from: Vec<String>,
    /// The run (or trajectory file) this one re-grades.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replayed_from: Option<String>,
}

impl Manifest {
    /// The manifest of a run of `instances` with `cfg` over `ws`.
    pub fn new(cfg: &RunConfig, ws: &Workspace, instances: &[String]) -> anyhow::Result<Manifest> {
        Ok(Manifest {
            format_version: RUN_FORMAT_VERSION,
            emrgym_version: env!("CARGO_PKG_VERSION").into(),
            build: Some(crate::BUILD.into()),
            resumed_by_other_builds: Vec::new(),
            model_sha256: None,
            hosts: Vec::new(),
            config: cfg.clone(),
            config_sha256: config_sha256(cfg)?,
            scenarios: family_hashes(ws)?
                .into_iter()
                .map(|(f, (file, sha256))| (f, ScenarioHash { file, sha256 }))
                .collect(),
            instances: instances.to_vec(),
            tool_catalogue_sha256: sha256_hex(&serde_json::to_vec(&ws.registry().openai_tools())?),
            access: None,
            merged_from: Vec::new(),
            replayed_from: None,
        })
    }

    /// Read `dir/manifest.json`; the error names the directory when it is not a run directory,
    /// and the file and the field when the manifest is malformed or from a newer format.
    pub fn read(dir: &Path) -> anyhow::Result<Manifest> {
        let path = dir.join("manifest.json");
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                bail!("{} is not a run directory (no manifest.json)", dir.display())
            }
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        let raw: Value = serde_json::from_str(&text).with_context(|| format!("{}: not JSON", path.display()))?;
        if let Some(v) = raw.get("format_version").and_then(Value::as_u64)
            && v > u64::from(RUN_FORMAT_VERSION)
        {
            bail!(
                "{}: run directory format {v} is newer than this emrgym reads ({RUN_FORMAT_VERSION}); update emrgym",
                path.display()
            );
        }
        serde_json::from_value(raw).with_context(|| format!("{}: not a run manifest", path.display()))
    }

    /// Write it to `dir/manifest.json`, whole or not at all.
    pub fn write(&self, dir: &Path) -> anyhow::Result<()> {
        write_atomic(
            &dir.join("manifest.json"),
            format!("{}\n", serde_json::to_string_pretty(self)?).as_bytes(),
        )
    }
}

/// SHA-256 of a configuration without its speed settings (`concurrency`; a shard is part of
/// what a run covers, so it stays).
pub fn config_sha256(cfg: &RunConfig) -> anyhow::Result<String> {
    let mut v = serde_json::to_value(cfg)?;
    if let Some(o) = v.as_object_mut() {
        o.remove("concurrency"); // how fast, not what
    }
    Ok(sha256_hex(&serde_json::to_vec(&v)?))
}

/// The configuration recorded in a run directory's manifest.
pub fn recorded_config(dir: &Path) -> anyhow::Result<RunConfig> {
    Ok(Manifest::read(dir)?.config)
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

/// A run directory's `results.jsonl`, open for appending result lines, each whole or not at
/// all: a failed write (a full disk) is cut back to the previous end, so no torn line is left,
/// and each line is on disk (`sync_data`) before the next episode's.
///
/// The path is what counts (`--resume`, the summary and the leaderboard read it), so each
/// append first checks that the path still names the file this handle writes. When the file
/// was replaced underneath the run (a `git stash` or `git checkout` of a committed run
/// directory, a copy over it) or removed, the lines this run wrote that the file at the path
/// lacks are carried over to it, and appending goes on there: without this the run went on
/// writing to the replaced file, and its results were lost when it exited.
pub(crate) struct ResultsFile {
    path: PathBuf,
    file: std::fs::File,
}

impl ResultsFile {
    /// Open (create) `path` for appending.
    pub(crate) fn open(path: &Path) -> anyhow::Result<Self> {
        Ok(Self {
            path: path.to_path_buf(),
            file: Self::open_file(path)?,
        })
    }

    fn open_file(path: &Path) -> anyhow::Result<std::fs::File> {
        std::fs::OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(path)
            .with_context(|| format!("opening {}", path.display()))
    }

    /// Whether the path still names the file this handle writes.
    fn still_at_path(&self) -> bool {
        #[cfg(unix)]
        {
            use std::os::unix::fs::MetadataExt;
            match (self.file.metadata(), std::fs::metadata(&self.path)) {
                (Ok(open), Ok(at_path)) => open.dev() == at_path.dev() && open.ino() == at_path.ino(),
                _ => false,
            }
        }
        #[cfg(not(unix))]
        {
            self.path.exists()
        }
    }

    /// Reopen the path after the file was replaced or removed, carrying over the whole lines
    /// this handle wrote that the file now at the path does not hold.
    fn follow_path(&mut self) -> anyhow::Result<()> {
        use std::io::{Read, Seek};
        let mut ours = String::new();
        self.file.seek(std::io::SeekFrom::Start(0))?;
        self.file
            .read_to_string(&mut ours)
            .with_context(|| format!("reading back the results written to the replaced {}", self.path.display()))?;
        let mut file = Self::open_file(&self.path)?;
        let mut theirs = String::new();
        file.read_to_string(&mut theirs)
            .with_context(|| format!("reading {}", self.path.display()))?;
        if !theirs.is_empty() && !theirs.ends_with('\n') {
            // a torn last line in the file now there (`read_results` ignores it as the last
            // line, and would refuse it in the middle): cut it off
            let keep = theirs.rfind('\n').map_or(0, |i| i + 1);
            file.set_len(keep as u64)
                .with_context(|| format!("cutting a torn line off {}", self.path.display()))?;
            theirs.truncate(keep);
        }
        let present: BTreeSet<&str> = theirs.lines().collect();
        // whole lines only (a torn last line is ignored, as `read_results` ignores it)
        let whole = &ours[..ours.rfind('\n').map_or(0, |i| i + 1)];
        let missing: Vec<&str> = whole.lines().filter(|l| !l.trim().is_empty() && !present.contains(l)).collect();
        tracing::warn!(
            "{} was replaced or removed while this run was writing it; {} result lines carried over to the file now there",
            self.path.display(),
            missing.len()
        );
        for l in missing {
            Self::write_whole(&mut file, &self.path, l)?;
        }
        self.file = file;
        Ok(())
    }

    /// Append `line` and a newline, whole or not at all.
    pub(crate) fn append(&mut self, line: &str) -> anyhow::Result<()> {
        if !self.still_at_path() {
            self.follow_path()?;
        }
        Self::write_whole(&mut self.file, &self.path, line)
    }

    fn write_whole(file: &mut std::fs::File, path: &Path, line: &str) -> anyhow::Result<()> {
        let before = file.metadata().map(|m| m.len()).ok();
        let mut bytes = Vec::with_capacity(line.len() + 1);
        bytes.extend_from_slice(line.as_bytes());
        bytes.push(b'\n');
        if let Err(e) = file.write_all(&bytes).and_then(|()| file.sync_data()) {
            if let Some(len) = before {
                let _ = file.set_len(len);
            }
            return Err(anyhow::anyhow!("appending a result to {}: {e}", path.display()));
        }
        Ok(())
    }
}

/// Combine shard runs of one configuration into one run directory `out`; returns its summary.
pub fn merge(runs: &[PathBuf], out: &Path) -> anyhow::Result<Summary> {
    if out.join("manifest.json").exists() {
        bail!("{} already holds a run", out.display());
    }
    // what must agree between shards: the configuration without shard and concurrency, the
    // scenarios, the tools and the version
    let key = |m: &Manifest| {
        let mut cfg = m.config.clone();
        cfg.shard = None;
        cfg.concurrency = 1;
        (
            cfg,
            m.scenarios.clone(),
            m.tool_catalogue_sha256.clone(),
            m.emrgym_version.clone(),
            m.build.clone(),
            m.model_sha256.clone(),
        )
    };
    let mut base: Option<Manifest> = None;
    let mut all: BTreeMap<(String, u32), ResultLine> = BTreeMap::new();
    let mut instances: BTreeSet<String> = BTreeSet::new();
    let mut other_builds: Vec<String> = Vec::new();
    // the shards' machines, each once; each line's `host` re-pointed into this list
    let mut hosts: Vec<Host> = Vec::new();
    std::fs::create_dir_all(out.join("trajectories")).with_context(|| format!("creating {}", out.display()))?;
    for dir in runs {
        let man = Manifest::read(dir)?;
        match &base {
            None => base = Some(man.clone()),
            Some(b) if key(b) != key(&man) => bail!(
                "{} was run with another configuration, other scenarios, another build or another model file than {}",
                dir.display(),
                runs[0].display()
            ),
            Some(_) => {}
        }
        instances.extend(man.instances.iter().cloned());
        for b in &man.resumed_by_other_builds {
            if !other_builds.contains(b) {
                other_builds.push(b.clone());
            }
        }
        let remap: Vec<usize> = man
            .hosts
            .iter()
            .map(|h| {
                hosts.iter().position(|x| x == h).unwrap_or_else(|| {
                    hosts.push(h.clone());
                    hosts.len() - 1
                })
            })
            .collect();
        for mut r in read_results(&dir.join("results.jsonl"))? {
            r.host = r.host.and_then(|i| remap.get(i).copied());
            let src = trajectory_path(dir, &r.instance, r.trial);
            if src.exists() {
                std::fs::copy(&src, trajectory_path(out, &r.instance, r.trial)).with_context(|| format!("copying {}", src.display()))?;
            }
            all.insert((r.instance.clone(), r.trial), r);
        }
    }
    let mut man = base.context("no runs")?;
    man.config.shard = None;
    man.config_sha256 = config_sha256(&man.config)?;
    man.instances = instances.into_iter().collect();
    man.merged_from = runs.iter().map(|p| p.display().to_string()).collect();
    man.resumed_by_other_builds = other_builds;
    man.hosts = hosts;
    man.write(out)?;
    let lines: Vec<ResultLine> = all.into_values().collect();
    write_results(out, &lines)?;
    let summary = run_summary(out, &lines, man.config.trials, man.config.seed);
    summary.write(out)?;
    Ok(summary)
}

/// Write `dir/results.jsonl` whole (a merged or re-graded run), one line per result.
pub(crate) fn write_results(dir: &Path, lines: &[ResultLine]) -> anyhow::Result<()> {
    let mut text = String::new();
    for r in lines {
        text.push_str(&serde_json::to_string(r)?);
        text.push('\n');
    }
    write_atomic(&dir.join("results.jsonl"), text.as_bytes())
}

/// Lower-case hex SHA-256.
pub fn sha256_hex(bytes: &[u8]) -> String {
    emrgym_core::hex(&Sha256::digest(bytes))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::{Manifest, ResultsFile, read_results, write_atomic};
    use serde_json::Value;

    const LINE: &str = r#"{"instance":"a-1","family":"a","trial":0,"end":"finished","infrastructure":false,"success":true,"progress":1.0,"steps":1,"turns":1,"prompt_tokens":0,"completion_tokens":0}"#;

    #[test]
    fn a_torn_last_line_is_ignored_and_any_other_bad_line_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("results.jsonl");
        assert!(read_results(&f).unwrap().is_empty(), "no file yet: no results");
        // a kill mid-append: the last line lacks its newline, even when it parses
        std::fs::write(&f, format!("{LINE}\n\n{LINE}")).unwrap();
        let lines = read_results(&f).unwrap();
        assert_eq!(lines.len(), 1);
        assert_eq!((lines[0].instance.as_str(), lines[0].success), ("a-1", true));
        std::fs::write(&f, format!("{LINE}\n{{\"instance\"\n{LINE}\n")).unwrap();
        let e = format!("{:#}", read_results(&f).unwrap_err());
        assert!(e.contains("results.jsonl line 2"), "{e}");
    }

    /// Shards that ran on different machines merge into one run whose `hosts` lists each
    /// machine once, each line's `host` pointing at its own machine in that list.
    #[test]
    fn merged_shards_keep_each_episodes_machine() {
        let dir = tempfile::tempdir().unwrap();
        let host = |cpu: &str| super::Host {
            cpu: cpu.into(),
            cores: 2,
            features: vec!["avx2".into()],
        };
        let (amd, intel) = (host("AMD EPYC"), host("Intel Xeon"));
        let shard = |name: &str, hosts: Vec<super::Host>, lines: &[(&str, Option<usize>)]| {
            let d = dir.path().join(name);
            std::fs::create_dir_all(&d).unwrap();
            let mut m = manifest();
            m.hosts = hosts;
            m.instances = lines.iter().map(|(i, _)| i.to_string()).collect();
            m.write(&d).unwrap();
            let mut text = String::new();
            for (instance, h) in lines {
                let mut l: Value = serde_json::from_str(LINE).unwrap();
                l["instance"] = (*instance).into();
                if let Some(h) = h {
                    l["host"] = (*h).into();
                }
                text.push_str(&format!("{l}\n"));
            }
            std::fs::write(d.join("results.jsonl"), text).unwrap();
            d
        };
        let a = shard("a", vec![amd.clone()], &[("a-1", Some(0)), ("a-2", None)]);
        let b = shard("b", vec![intel.clone(), amd.clone()], &[("a-3", Some(0)), ("a-4", Some(1))]);
        let out = dir.path().join("merged");
        super::merge(&[a, b], &out).unwrap();
        assert_eq!(Manifest::read(&out).unwrap().hosts, [amd, intel]);
        let hosts: Vec<(String, Option<usize>)> = read_results(&out.join("results.jsonl"))
            .unwrap()
            .into_iter()
            .map(|l| (l.instance, l.host))
            .collect();
        assert_eq!(
            hosts,
            [
                ("a-1".into(), Some(0)),
                ("a-2".into(), None),
                ("a-3".into(), Some(1)),
                ("a-4".into(), Some(0))
            ]
        );
    }

    #[test]
    fn the_report_reads_results_by_the_same_rule() {
        let dir = tempfile::tempdir().unwrap();
        manifest().write(dir.path()).unwrap();
        std::fs::write(dir.path().join("results.jsonl"), format!("{LINE}\n{LINE}")).unwrap();
        let run = crate::report::Run::load(dir.path()).unwrap();
        assert_eq!(run.results.len(), 1, "the torn last line is not a result");
        assert_eq!(run.results[0]["instance"], "a-1");
        std::fs::write(dir.path().join("results.jsonl"), format!("oops\n{LINE}\n")).unwrap();
        let e = format!("{:#}", crate::report::Run::load(dir.path()).unwrap_err());
        assert!(e.contains("results.jsonl line 1"), "{e}");
    }

    /// A manifest with every field set (for tests here and in `run`).
    pub(crate) fn manifest() -> super::Manifest {
        super::Manifest {
            format_version: super::RUN_FORMAT_VERSION,
            emrgym_version: "0".into(),
            build: Some("0123456789ab".into()),
            resumed_by_other_builds: vec!["0123456789ab+dirty.00ff00ff00ff".into()],
            model_sha256: Some("ef".into()),
            hosts: Vec::new(),
            config: crate::run::RunConfig::default(),
            config_sha256: super::config_sha256(&crate::run::RunConfig::default()).unwrap(),
            scenarios: [(
                "fam".to_string(),
                super::ScenarioHash {
                    file: "fam.json".into(),
                    sha256: "ab".into(),
                },
            )]
            .into(),
            instances: vec!["a-1".into()],
            tool_catalogue_sha256: "cd".into(),
            access: None,
            merged_from: Vec::new(),
            replayed_from: None,
        }
    }

    /// The host is read off `/proc/cpuinfo`: the first processor's model name and which of
    /// the kernel features its flags list (x86-64), or its `Features` (AArch64).
    #[test]
    fn a_host_is_its_cpu_cores_and_the_kernel_features_it_has() {
        let x86 = "processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: Intel(R) Xeon(R) Processor\nflags\t\t: fpu sse2 avx avx2 fma f16c avx512f avx512bw avx512_vnni avx_vnni amx_tile amx_int8 sha_ni\n\nprocessor\t: 1\nmodel name\t: Other\n";
        let h = super::Host::from_cpuinfo(x86, 2);
        assert_eq!(h.cpu, "Intel(R) Xeon(R) Processor");
        assert_eq!(h.cores, 2);
        assert_eq!(
            h.features,
            [
                "avx",
                "avx2",
                "fma",
                "f16c",
                "avx512f",
                "avx512bw",
                "avx512_vnni",
                "avx_vnni",
                "amx_tile",
                "amx_int8"
            ]
        );
        assert_eq!(
            h.describe(),
            "Intel(R) Xeon(R) Processor, 2 cores (avx avx2 fma f16c avx512f avx512bw avx512_vnni avx_vnni amx_tile amx_int8)"
        );
        let arm = "processor\t: 0\nBogoMIPS\t: 50.00\nFeatures\t: fp asimd evtstrm aes asimddp sve i8mm\nCPU part\t: 0xd40\n";
        let h = super::Host::from_cpuinfo(arm, 64);
        assert!(h.cpu.ends_with("CPU part 0xd40"), "{}", h.cpu);
        assert_eq!(h.features, ["asimd", "asimddp", "i8mm", "sve"]);
        let none = super::Host::from_cpuinfo("", 1);
        assert_eq!((none.cpu.as_str(), none.features.len()), (std::env::consts::ARCH, 0));
        // this machine: some CPU, at least one core
        let this = super::Host::this();
        assert!(!this.cpu.is_empty() && this.cores >= 1, "{this:?}");
    }

    #[test]
    fn the_manifest_reads_back_as_written_and_bad_ones_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let e = super::Manifest::read(dir.path()).unwrap_err().to_string();
        assert!(e.contains("is not a run directory (no manifest.json)"), "{e}");
        let m = manifest();
        m.write(dir.path()).unwrap();
        assert_eq!(super::Manifest::read(dir.path()).unwrap(), m);
        // concurrency is how fast, not what: it does not change the hash that --resume checks
        let mut faster = m.config.clone();
        faster.concurrency = 64;
        assert_eq!(super::config_sha256(&faster).unwrap(), m.config_sha256);
        faster.seed = 1;
        assert_ne!(super::config_sha256(&faster).unwrap(), m.config_sha256);
        let path = dir.path().join("manifest.json");
        let mut v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        v["format_version"] = 99.into();
        std::fs::write(&path, v.to_string()).unwrap();
        let e = format!("{:#}", super::Manifest::read(dir.path()).unwrap_err());
        assert!(e.contains("format 99 is newer"), "{e}");
        v["format_version"] = 1.into();
        v["config"]["trials"] = "three".into();
        std::fs::write(&path, v.to_string()).unwrap();
        let e = format!("{:#}", super::Manifest::read(dir.path()).unwrap_err());
        assert!(e.contains("manifest.json: not a run manifest") && e.contains("three"), "{e}");
    }

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
        let mut file = ResultsFile::open(&f).unwrap();
        file.append("{\"a\":1}").unwrap();
        file.append("{\"a\":2}").unwrap();
        assert_eq!(std::fs::read_to_string(&f).unwrap(), "{\"a\":1}\n{\"a\":2}\n");
        // a file that cannot be written: the error names it, nothing changes
        let mut ro = ResultsFile {
            path: f.clone(),
            file: std::fs::File::open(&f).unwrap(),
        };
        let e = ro.append("{\"a\":3}").unwrap_err().to_string();
        assert!(e.contains("results.jsonl"), "{e}");
        assert_eq!(std::fs::read_to_string(&f).unwrap(), "{\"a\":1}\n{\"a\":2}\n");
    }

    /// `git stash` of a committed run directory while the run writes it puts an older
    /// results.jsonl in its place (a new file, renamed over the path); `git stash pop` another.
    /// The lines the run wrote meanwhile are carried over to the file at the path, and the
    /// run goes on appending there; a removed file is written again whole.
    #[test]
    fn lines_written_to_a_file_replaced_underneath_the_run_are_carried_over_to_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("results.jsonl");
        let values = || -> Vec<i64> {
            std::fs::read_to_string(&f)
                .unwrap()
                .lines()
                .filter_map(|l| serde_json::from_str::<Value>(l).ok())
                .map(|v| v["a"].as_i64().unwrap())
                .collect()
        };
        let mut file = ResultsFile::open(&f).unwrap();
        for i in 1..=3 {
            file.append(&format!("{{\"a\":{i}}}")).unwrap();
        }
        // an older copy (the first line, and a torn one) renamed over the path
        let older = dir.path().join("older");
        std::fs::write(&older, "{\"a\":1}\n{\"a\":").unwrap();
        std::fs::rename(&older, &f).unwrap();
        file.append("{\"a\":4}").unwrap();
        let lines: Vec<String> = std::fs::read_to_string(&f).unwrap().lines().map(str::to_string).collect();
        assert_eq!(lines, ["{\"a\":1}", "{\"a\":2}", "{\"a\":3}", "{\"a\":4}"], "the torn line cut off");
        assert_eq!(values(), [1, 2, 3, 4], "every line the run wrote is at the path, once");
        // removed: written again whole at the path
        std::fs::remove_file(&f).unwrap();
        file.append("{\"a\":5}").unwrap();
        assert_eq!(values(), [1, 2, 3, 4, 5]);
        // and while the path stays put, nothing is copied
        file.append("{\"a\":6}").unwrap();
        assert_eq!(std::fs::read_to_string(&f).unwrap().lines().count(), 6);
    }
}
