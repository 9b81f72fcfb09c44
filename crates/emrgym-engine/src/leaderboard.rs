//! The leaderboard (`emrgym leaderboard RUN_DIR...`): run directories combined into one
//! table of rows model × mode × suite (success, mean progress and per-node accuracy with bootstrap
//! 95% intervals, pass^k, harness and infrastructure failures, success per family), the
//! paired differences between the modes of each model on the instances both ran (paired
//! bootstrap interval and an exact sign test), and the horizon view (success by chain
//! length, accuracy by step index, the length at which success falls below 50%); rendered
//! as aligned text, Markdown or one self-contained HTML page with inline SVG curves.
//! docs/results.md describes the statistics.
//!
//! Run directories are read through the typed readers ([`Manifest::read`],
//! [`crate::rundir::read_results`]); intervals are [`crate::stats::estimate`]'s, so a row of
//! one run shows the interval of its `summary.json`.

use crate::run::{AgentKind, RunConfig};
use crate::rundir::{Host, Manifest, ResultLine, ScenarioHash};
use crate::stats::{Estimate, RESAMPLES, bootstrap_mean, estimate, pass_hat_k, wire_name};
use anyhow::bail;
use emrgym_agent::harness::{MAX_HARNESS_FAILURE_RATE, publishable};
use serde::Serialize;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// Format version of the leaderboard JSON.
pub const LEADERBOARD_FORMAT_VERSION: u32 = 2;

/// pass^k of a row.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PassK {
    /// k.
    pub k: u32,
    /// Mean over instances with at least k scored trials, bootstrap over instances.
    pub estimate: Estimate,
}

/// Success on one family.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FamilyResult {
    /// Scored episodes.
    pub episodes: usize,
    /// Success over them.
    pub success: Estimate,
    /// Harness failures among them.
    pub harness_failures: usize,
}

/// One row: a model (or model-free agent) in one mode on one suite, over every run directory
/// given for it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Row {
    /// The model label ([`model_label`]).
    pub model: String,
    /// The agent (`model`, `oracle`, `null`, `external`).
    pub agent: String,
    /// The mode (`flat`, `guided`, ...).
    pub mode: String,
    /// The suite its runs ran ([`suite_label`]).
    pub suite: String,
    /// The run directories combined, in the order given.
    pub runs: Vec<String>,
    /// The builds its episodes came from (`emrgym --version`: commit, `+dirty.<hash>`), each
    /// once, in order; [`UNRECORDED`] for a run from before manifests recorded it.
    pub builds: Vec<String>,
    /// SHA-256 of the in-process model's GGUF file, each distinct one once (none for other
    /// agents and for runs from before manifests recorded it).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub model_sha256: Vec<String>,
    /// The machines an in-process model ran the row's episodes on ([`Host::describe`]), with
    /// how many episodes each, in the order first met; [`UNRECORDED`] for episodes of runs
    /// from before result lines named their machine. Empty for other agents.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub machines: Vec<MachineEpisodes>,
    /// The seed of the row's bootstrap (the smallest seed of its runs).
    pub seed: u64,
    /// Most trials per instance among its runs.
    pub trials: u32,
    /// Distinct instances.
    pub instances: usize,
    /// Episodes (result lines).
    pub episodes: usize,
    /// Episodes graded (not infrastructure failures).
    pub scored: usize,
    /// Episodes ended by an infrastructure failure: not scored, shown apart.
    pub infrastructure_failures: usize,
    /// Scored episodes that failed at a harness limit (counted as failures).
    pub harness_failures: usize,
    /// Why the row is withheld from the table (its rates are not shown): its harness-failure
    /// rate is above [`MAX_HARNESS_FAILURE_RATE`], or nothing was scored.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub withheld: Option<String>,
    /// Success over scored episodes (none without one).
    pub success: Option<Estimate>,
    /// Mean progress over scored episodes.
    pub progress: Option<Estimate>,
    /// Share of graded primitive nodes passed, over every scored episode (ratio of sums;
    /// bootstrap over episodes).
    pub node_accuracy: Option<Estimate>,
    /// pass^k for k = 1..trials.
    pub pass_k: Vec<PassK>,
    /// Success per family.
    pub families: BTreeMap<String, FamilyResult>,
}

/// A machine and how many of a row's episodes it ran.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MachineEpisodes {
    /// [`Host::describe`], or [`UNRECORDED`].
    pub machine: String,
    /// Episodes (result lines) it ran.
    pub episodes: usize,
}

impl Row {
    /// The row as tables name it: `model (mode, suite)`.
    pub fn label(&self) -> String {
        format!("{} ({}, {})", self.model, self.mode, self.suite)
    }
}

/// A paired difference of one metric: mode `b` minus mode `a`, per instance.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PairedMetric {
    /// Mean per-instance difference with a paired bootstrap 95% interval (over instances).
    pub difference: Estimate,
    /// Instances where `b` did better.
    pub better: usize,
    /// Instances where `b` did worse.
    pub worse: usize,
    /// Instances with no difference.
    pub ties: usize,
    /// Exact two-sided sign test over the discordant instances ([`sign_test`]).
    pub sign_test_p: f64,
}

/// Two modes of one model on one suite, on the instances both ran.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Paired {
    /// The model label.
    pub model: String,
    /// The suite.
    pub suite: String,
    /// The baseline mode.
    pub a: String,
    /// The mode compared with it (differences are `b - a`).
    pub b: String,
    /// Instances both ran (with a scored episode in each).
    pub pairs: usize,
    /// Per-instance success rate (over its trials).
    pub success: Option<PairedMetric>,
    /// Per-instance mean progress.
    pub progress: Option<PairedMetric>,
    /// Why the comparison is not shown: one of its two rows is withheld ([`Row::withheld`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub withheld: Option<String>,
}

/// Success at one chain length.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LengthResult {
    /// Chain length N.
    pub length: u32,
    /// Scored episodes.
    pub episodes: usize,
    /// Success over them.
    pub success: Estimate,
}

/// Accuracy of one step index over the chains that have it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StepResult {
    /// Step index (1-based; the step-th top-level node of the grade in tree order).
    pub step: u32,
    /// Scored episodes whose chain has this step.
    pub episodes: usize,
    /// Share of them whose step node passed (written with 4 decimals).
    #[serde(serialize_with = "crate::stats::ser_round4")]
    pub accuracy: f64,
}

/// The horizon view of one row and one chained procedure (families `BASE_N`, `BASE`
/// starting with `horizon_`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Horizon {
    /// The model label.
    pub model: String,
    /// The mode.
    pub mode: String,
    /// The suite.
    pub suite: String,
    /// The procedure (`horizon_mrn`).
    pub base: String,
    /// Success by chain length, shortest first.
    pub lengths: Vec<LengthResult>,
    /// Accuracy by step index.
    pub steps: Vec<StepResult>,
    /// The shortest length at which success falls below 50% (none: not within `longest`).
    pub below_half_at: Option<u32>,
    /// The longest chain run.
    pub longest: u32,
    /// Why the view is not shown: its row is withheld ([`Row::withheld`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub withheld: Option<String>,
}

/// The leaderboard.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Leaderboard {
    /// [`LEADERBOARD_FORMAT_VERSION`].
    pub format_version: u32,
    /// Bootstrap resamples per interval.
    pub resamples: usize,
    /// Rows sorted by model, then suite ([`suite_rank`]), then mode.
    pub rows: Vec<Row>,
    /// Every family of any row, sorted by name (chain lengths in numeric order).
    pub families: Vec<String>,
    /// Paired mode differences per model.
    pub paired: Vec<Paired>,
    /// Horizon views, by row and procedure.
    pub horizon: Vec<Horizon>,
}

/// One graded node as the leaderboard reads it.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeView {
    /// Node path (`""` the root, `p1`, `p1.search`).
    pub path: String,
    /// `primitive` or `compound`.
    pub kind: String,
    /// `passed`, `failed` or `not_reached`.
    pub verdict: String,
    /// Step at which it was done.
    pub done_at: Option<u64>,
}

/// The graded nodes of a result line, in tree order (empty when it has no grade).
pub fn nodes(r: &ResultLine) -> Vec<NodeView> {
    r.grade
        .iter()
        .flat_map(|g| &g.nodes)
        .map(|n| NodeView {
            path: n.path.clone(),
            kind: n.kind.as_str().to_string(),
            verdict: n.verdict.as_str().to_string(),
            done_at: n.done_at.map(|d| d as u64),
        })
        .collect()
}

/// The row label of a run: the model's name for a model agent (an endpoint's model name and
/// the host of its base URL, `gpt-4o-mini@api.openai.com`; a GGUF's file name), else the
/// agent's name (`oracle`, `null`, `external`).
pub fn model_label(cfg: &RunConfig) -> String {
    let agent = wire_name(cfg.agent);
    if cfg.agent != AgentKind::Model {
        return agent;
    }
    let m = serde_json::to_value(&cfg.model).unwrap_or(Value::Null);
    if let Some(name) = m["model"].as_str() {
        let base = m["base_url"].as_str().unwrap_or_default();
        let host = base.split_once("://").map_or(base, |(_, rest)| rest);
        let host = host.split('/').next().unwrap_or_default();
        return if host.is_empty() {
            name.to_string()
        } else {
            format!("{name}@{host}")
        };
    }
    if let Some(p) = m["model_path"].as_str() {
        return Path::new(p)
            .file_name()
            .map_or_else(|| p.to_string(), |f| f.to_string_lossy().into_owned());
    }
    agent
}

/// The order modes are compared in: the earlier one is the baseline (`guided - flat`,
/// `goal - flat`, `goal - guided`); other modes follow by name.
/// The suite of a run as its row names it: the named suite (`--suite NAME`), `all` for a run
/// of every instance, `selection` for one of named families or instances (such runs combine
/// into one row, as shards of one suite do). Rows of different suites are never combined: a
/// rate over the quick and the horizon suite together would weigh each by its size, and
/// compare nothing with a row that ran one of them.
pub fn suite_label(cfg: &RunConfig) -> String {
    match &cfg.suite_name {
        Some(name) => name.clone(),
        None if cfg.families.is_empty() && cfg.instances.is_empty() => "all".into(),
        None => "selection".into(),
    }
}

/// The suites in the order of docs/suite.md (the README's first), then any other by name.
fn suite_rank(suite: &str) -> (usize, String) {
    let rank = ["quick", "mab", "horizon", "full", "all"]
        .iter()
        .position(|s| *s == suite)
        .unwrap_or(5);
    (rank, suite.to_string())
}

fn mode_rank(mode: &str) -> (usize, String) {
    let rank = match mode {
        "flat" => 0,
        "guided" => 1,
        "goal" => 2,
        "outline" => 3,
        _ => 4,
    };
    (rank, mode.to_string())
}

/// One run directory, read.
/// What the table says of a run whose manifest predates build records.
pub const UNRECORDED: &str = "unrecorded";

struct LoadedRun {
    dir: PathBuf,
    cfg: RunConfig,
    /// The build that started it and those that resumed it.
    builds: Vec<String>,
    model_sha256: Option<String>,
    /// The machines its in-process model ran on (the manifest's `hosts`).
    hosts: Vec<Host>,
    scenarios: BTreeMap<String, ScenarioHash>,
    /// The instances its manifest says it covers.
    instances: Vec<String>,
    results: Vec<ResultLine>,
}

fn load_run(dir: &Path) -> anyhow::Result<LoadedRun> {
    if !dir.is_dir() {
        bail!("{}: no such run directory", dir.display());
    }
    let man = Manifest::read(dir)?;
    let (cfg, scenarios, instances) = (man.config, man.scenarios, man.instances);
    let results = crate::rundir::read_results(&dir.join("results.jsonl"))?;
    let mut builds = vec![man.build.unwrap_or_else(|| UNRECORDED.to_string())];
    builds.extend(man.resumed_by_other_builds);
    Ok(LoadedRun {
        dir: dir.to_path_buf(),
        cfg,
        builds,
        model_sha256: man.model_sha256,
        hosts: man.hosts,
        scenarios,
        instances,
        results,
    })
}

/// The families a run has episodes of.
fn families_run(run: &LoadedRun) -> BTreeSet<&str> {
    run.results.iter().map(|r| r.family.as_str()).collect()
}

/// The families whose recorded hashes differ between two manifests' `scenarios`.
fn differing_families(a: &BTreeMap<String, ScenarioHash>, b: &BTreeMap<String, ScenarioHash>) -> Vec<String> {
    let keys: BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    keys.into_iter().filter(|k| a.get(*k) != b.get(*k)).cloned().collect()
}

/// A row's place in the table: model, then suite ([`suite_rank`]), then mode.
type RowKey = (String, (usize, String), (usize, String));

/// The episodes of one row, combined from its runs.
struct Group {
    model: String,
    agent: String,
    mode: String,
    suite: String,
    runs: Vec<LoadedRun>,
    /// (instance, trial) -> the line and the directory it came from
    lines: BTreeMap<(String, u32), (ResultLine, usize)>,
}

/// Build the leaderboard from run directories. Runs of the same model, mode and suite
/// ([`suite_label`]) are combined into one row (shards, or a suite's instances run apart);
/// they must have been run on the same scenarios, and an episode (instance, trial) in two of
/// them must have the same result. Errors name the directories.
pub fn build(dirs: &[PathBuf]) -> anyhow::Result<Leaderboard> {
    if dirs.is_empty() {
        bail!("no run directories given");
    }
    let mut groups: BTreeMap<RowKey, Group> = BTreeMap::new();
    for dir in dirs {
        let run = load_run(dir)?;
        let (model, mode, suite) = (model_label(&run.cfg), wire_name(run.cfg.mode), suite_label(&run.cfg));
        let agent = wire_name(run.cfg.agent);
        let key = (model.clone(), suite_rank(&suite), mode_rank(&mode));
        let g = groups.entry(key).or_insert_with(|| Group {
            model: model.clone(),
            agent,
            mode: mode.clone(),
            suite: suite.clone(),
            runs: Vec::new(),
            lines: BTreeMap::new(),
        });
        // a row's episodes of one family must come from one version of it: two runs of the
        // row may differ only in families that at most one of them ran (two shards, run
        // before and after a change to a family only one of them has)
        for earlier in &g.runs {
            let both: BTreeSet<&str> = families_run(earlier).intersection(&families_run(&run)).copied().collect();
            let differ: Vec<String> = differing_families(&earlier.scenarios, &run.scenarios)
                .into_iter()
                .filter(|f| both.contains(f.as_str()))
                .collect();
            if !differ.is_empty() {
                bail!(
                    "{} and {} are both rows of {model} ({mode}, {suite}) but ran families whose content differs between them ({}); \
                     run them again on the same scenarios, or build separate leaderboards",
                    earlier.dir.display(),
                    run.dir.display(),
                    differ.join(", ")
                );
            }
        }
        let idx = g.runs.len();
        for r in &run.results {
            let key = (r.instance.clone(), r.trial);
            match g.lines.get(&key) {
                Some((prev, from)) => {
                    if serde_json::to_value(prev)? != serde_json::to_value(r)? {
                        bail!(
                            "{} and {} both hold {} trial {} of {model} ({mode}, {suite}) with different results; \
                             a row combines runs of disjoint episodes (shards) or identical copies",
                            g.runs[*from].dir.display(),
                            run.dir.display(),
                            r.instance,
                            r.trial
                        );
                    }
                }
                None => {
                    g.lines.insert(key, (r.clone(), idx));
                }
            }
        }
        g.runs.push(run);
    }
    let mut rows = Vec::new();
    let mut per_instance: Vec<BTreeMap<String, Means>> = Vec::new();
    let mut horizon = Vec::new();
    for g in groups.values() {
        let (row, inst) = make_row(g);
        horizon.extend(horizon_views(g, &row));
        rows.push(row);
        per_instance.push(inst);
    }
    let mut families: Vec<String> = rows
        .iter()
        .flat_map(|r| r.families.keys().cloned())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    // chain lengths in numeric order: horizon_mrn_2 before horizon_mrn_16
    families.sort_by_key(
        |f| match f.rsplit_once('_').and_then(|(b, n)| Some((b.to_string(), n.parse::<u64>().ok()?))) {
            Some((b, n)) => (b, n, String::new()),
            None => (f.clone(), 0, f.clone()),
        },
    );
    let mut paired = Vec::new();
    for (i, a) in rows.iter().enumerate() {
        for (j, b) in rows.iter().enumerate().skip(i + 1) {
            if a.model == b.model && a.suite == b.suite {
                paired.push(pair(a, &per_instance[i], b, &per_instance[j]));
            }
        }
    }
    Ok(Leaderboard {
        format_version: LEADERBOARD_FORMAT_VERSION,
        resamples: RESAMPLES,
        rows,
        families,
        paired,
        horizon,
    })
}

fn rate(b: bool) -> f64 {
    if b { 1.0 } else { 0.0 }
}

/// The row of a group and its per-instance (success rate, mean progress) over scored trials.
fn make_row(g: &Group) -> (Row, BTreeMap<String, Means>) {
    let seed = g.runs.iter().map(|r| r.cfg.seed).min().unwrap_or(0);
    let trials = g.runs.iter().map(|r| r.cfg.trials).max().unwrap_or(1).max(1);
    let all: Vec<&ResultLine> = g.lines.values().map(|(r, _)| r).collect();
    let scored: Vec<&ResultLine> = all.iter().copied().filter(|r| !r.infrastructure).collect();
    let success: Vec<f64> = scored.iter().map(|r| rate(r.success)).collect();
    let progress: Vec<f64> = scored.iter().map(|r| r.progress).collect();
    let node_counts: Vec<(f64, f64)> = scored
        .iter()
        .map(|r| {
            let prim: Vec<NodeView> = nodes(r).into_iter().filter(|n| n.kind == "primitive").collect();
            (prim.iter().filter(|n| n.verdict == "passed").count() as f64, prim.len() as f64)
        })
        .collect();
    let node_accuracy = if node_counts.iter().any(|(_, t)| *t > 0.0) {
        estimate(node_counts.len(), seed, |idx| {
            let (p, t) = idx
                .iter()
                .fold((0.0, 0.0), |(p, t), &i| (p + node_counts[i].0, t + node_counts[i].1));
            if t > 0.0 { p / t } else { 0.0 }
        })
    } else {
        None
    };
    let mut by_inst: BTreeMap<String, Vec<&ResultLine>> = BTreeMap::new();
    for r in &scored {
        by_inst.entry(r.instance.clone()).or_default().push(r);
    }
    let pass_k = (1..=trials)
        .filter_map(|k| {
            let per: Vec<f64> = by_inst
                .values()
                .filter(|v| v.len() as u32 >= k)
                .map(|v| pass_hat_k(v.len() as u64, v.iter().filter(|r| r.success).count() as u64, u64::from(k)))
                .collect();
            bootstrap_mean(&per, seed.wrapping_add(u64::from(k))).map(|estimate| PassK { k, estimate })
        })
        .collect();
    let mut fam: BTreeMap<String, Vec<&ResultLine>> = BTreeMap::new();
    for r in &scored {
        fam.entry(r.family.clone()).or_default().push(r);
    }
    let families = fam
        .into_iter()
        .filter_map(|(f, rs)| {
            let s: Vec<f64> = rs.iter().map(|r| rate(r.success)).collect();
            let success = bootstrap_mean(&s, seed)?;
            Some((
                f,
                FamilyResult {
                    episodes: rs.len(),
                    success,
                    harness_failures: rs.iter().filter(|r| r.harness_failure()).count(),
                },
            ))
        })
        .collect();
    let inst: BTreeMap<String, Means> = by_inst
        .iter()
        .map(|(i, v)| {
            let n = v.len() as f64;
            (
                i.clone(),
                (
                    v.iter().map(|r| rate(r.success)).sum::<f64>() / n,
                    v.iter().map(|r| r.progress).sum::<f64>() / n,
                ),
            )
        })
        .collect();
    let instances: BTreeSet<&str> = all.iter().map(|r| r.instance.as_str()).collect();
    let row = Row {
        model: g.model.clone(),
        agent: g.agent.clone(),
        mode: g.mode.clone(),
        suite: g.suite.clone(),
        runs: g.runs.iter().map(|r| r.dir.display().to_string()).collect(),
        builds: distinct(g.runs.iter().flat_map(|r| r.builds.iter().cloned())),
        model_sha256: distinct(g.runs.iter().filter_map(|r| r.model_sha256.clone())),
        machines: machines(&g.runs),
        seed,
        trials,
        instances: instances.len(),
        episodes: all.len(),
        scored: scored.len(),
        infrastructure_failures: all.len() - scored.len(),
        harness_failures: scored.iter().filter(|r| r.harness_failure()).count(),
        withheld: incomplete(g).or_else(|| withheld(scored.iter().filter(|r| r.harness_failure()).count(), scored.len())),
        success: bootstrap_mean(&success, seed),
        progress: bootstrap_mean(&progress, seed),
        node_accuracy,
        pass_k,
        families,
    };
    (row, inst)
}

/// The machines of runs of an in-process model (those with a model file's digest), with
/// their episodes, in the order first met.
fn machines(runs: &[LoadedRun]) -> Vec<MachineEpisodes> {
    let mut out: Vec<MachineEpisodes> = Vec::new();
    for run in runs.iter().filter(|r| r.model_sha256.is_some()) {
        for line in &run.results {
            let machine = match line.host.and_then(|i| run.hosts.get(i)) {
                Some(h) => h.describe(),
                None => UNRECORDED.to_string(),
            };
            match out.iter_mut().find(|m| m.machine == machine) {
                Some(m) => m.episodes += 1,
                None => out.push(MachineEpisodes { machine, episodes: 1 }),
            }
        }
    }
    out
}

/// Each item once, in first-seen order.
fn distinct(items: impl Iterator<Item = String>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for i in items {
        if !out.contains(&i) {
            out.push(i);
        }
    }
    out
}

/// Why a row of `scored` episodes, `harness` of them harness failures, may not be published
/// (docs/agent.md, "Harness failures"); none when it may.
pub fn withheld(harness: usize, scored: usize) -> Option<String> {
    if scored == 0 {
        Some("no scored episode".into())
    } else if !publishable(harness, scored) {
        Some(format!(
            "harness-failure rate {:.1}% ({harness} of {scored}) is above the {:.0}% threshold",
            harness as f64 * 100.0 / scored as f64,
            MAX_HARNESS_FAILURE_RATE * 100.0
        ))
    } else {
        None
    }
}

/// Why a row is not whole: episodes (instance, trial) that its runs' manifests promise and
/// that have no result line (a run stopped before the end; `--resume` finishes it). A partial
/// suite is never published: which instances a stopped run reached is not a choice the table
/// may make.
fn incomplete(g: &Group) -> Option<String> {
    let mut missing: Vec<(String, u32)> = Vec::new();
    let mut promised = 0usize;
    for run in &g.runs {
        for inst in &run.instances {
            for t in 0..run.cfg.trials.max(1) {
                promised += 1;
                if !g.lines.contains_key(&(inst.clone(), t)) {
                    missing.push((inst.clone(), t));
                }
            }
        }
    }
    let first = missing.first()?;
    Some(format!(
        "incomplete: {} of the {promised} episodes its runs cover have no result (the first: {} trial {}); finish them with `emrgym run --resume DIR`",
        missing.len(),
        first.0,
        first.1
    ))
}

/// An instance's success rate and mean progress over its scored trials.
type Means = (f64, f64);

/// Mode `b` against mode `a` of one model on the instances both scored.
fn pair(a: &Row, ia: &BTreeMap<String, Means>, b: &Row, ib: &BTreeMap<String, Means>) -> Paired {
    let common: Vec<(&Means, &Means)> = ia.iter().filter_map(|(k, x)| ib.get(k).map(|y| (x, y))).collect();
    let seed = a.seed.min(b.seed);
    let metric = |f: fn(&Means) -> f64| -> Option<PairedMetric> {
        let d: Vec<f64> = common.iter().map(|(x, y)| f(y) - f(x)).collect();
        let difference = bootstrap_mean(&d, seed)?;
        let better = d.iter().filter(|v| **v > 1e-12).count();
        let worse = d.iter().filter(|v| **v < -1e-12).count();
        Some(PairedMetric {
            difference,
            better,
            worse,
            ties: d.len() - better - worse,
            sign_test_p: sign_test(better as u64, worse as u64),
        })
    };
    Paired {
        model: a.model.clone(),
        suite: a.suite.clone(),
        a: a.mode.clone(),
        b: b.mode.clone(),
        pairs: common.len(),
        success: metric(|v| v.0),
        progress: metric(|v| v.1),
        withheld: [a, b]
            .iter()
            .find(|r| r.withheld.is_some())
            .map(|r| format!("{} is withheld", r.label())),
    }
}

/// The exact two-sided sign test: the probability, under no difference (each discordant pair
/// equally likely either way), of a split at least as uneven as `pos` against `neg`:
/// `min(1, 2 · P(X ≤ min(pos, neg)))` with `X ~ Binomial(pos + neg, 1/2)`; 1 with no
/// discordant pairs.
pub fn sign_test(pos: u64, neg: u64) -> f64 {
    let n = pos + neg;
    if n == 0 {
        return 1.0;
    }
    let m = pos.min(neg);
    let mut tail = 0.0;
    if n <= 1000 {
        // C(n, i) / 2^n term by term from 2^-n (exact for small n: 6 all one way gives 2/64)
        let mut term = 0.5f64.powi(n as i32);
        for i in 0..=m {
            if i > 0 {
                term *= (n - i + 1) as f64 / i as f64;
            }
            tail += term;
        }
    } else {
        // in logs, where 2^-n would underflow
        let ln_half_n = n as f64 * 0.5f64.ln();
        let mut ln_c = 0.0;
        for i in 0..=m {
            if i > 0 {
                ln_c += ((n - i + 1) as f64).ln() - (i as f64).ln();
            }
            tail += (ln_c + ln_half_n).exp();
        }
    }
    (2.0 * tail).min(1.0)
}

/// The families of a chained procedure: `BASE_N` with `BASE` starting with `horizon_`.
fn chain(family: &str) -> Option<(&str, u32)> {
    let (base, n) = family.rsplit_once('_')?;
    let n: u32 = n.parse().ok()?;
    (base.starts_with("horizon_") && n >= 1).then_some((base, n))
}

/// The horizon views of a group: per procedure, success by length, accuracy by step index
/// (step i is the i-th top-level node of the grade in tree order, for chains of length at
/// least i; the node after the N steps, the answer, is not a step), and the shortest length
/// whose success is below 50%.
fn horizon_views(g: &Group, row: &Row) -> Vec<Horizon> {
    let seed = row.seed;
    // base -> length -> (success per episode); base -> step -> (passed, seen)
    let mut lengths: BTreeMap<String, BTreeMap<u32, Vec<f64>>> = BTreeMap::new();
    let mut steps: BTreeMap<String, BTreeMap<u32, (usize, usize)>> = BTreeMap::new();
    for (r, _) in g.lines.values() {
        if r.infrastructure {
            continue;
        }
        let Some((base, n)) = chain(&r.family) else { continue };
        lengths
            .entry(base.to_string())
            .or_default()
            .entry(n)
            .or_default()
            .push(rate(r.success));
        let top: Vec<NodeView> = nodes(r)
            .into_iter()
            .filter(|x| !x.path.is_empty() && !x.path.contains('.'))
            .collect();
        if top.len() < n as usize {
            continue; // no grade to read steps from
        }
        let s = steps.entry(base.to_string()).or_default();
        for (i, node) in top.iter().take(n as usize).enumerate() {
            let e = s.entry(i as u32 + 1).or_default();
            e.0 += usize::from(node.verdict == "passed");
            e.1 += 1;
        }
    }
    lengths
        .into_iter()
        .map(|(base, by_len)| {
            let lengths: Vec<LengthResult> = by_len
                .iter()
                .filter_map(|(len, s)| {
                    Some(LengthResult {
                        length: *len,
                        episodes: s.len(),
                        success: bootstrap_mean(s, seed)?,
                    })
                })
                .collect();
            let below_half_at = lengths.iter().find(|l| l.success.mean < 0.5).map(|l| l.length);
            let longest = lengths.iter().map(|l| l.length).max().unwrap_or(0);
            let steps = steps
                .get(&base)
                .into_iter()
                .flatten()
                .map(|(i, (p, n))| StepResult {
                    step: *i,
                    episodes: *n,
                    accuracy: *p as f64 / *n as f64,
                })
                .collect();
            Horizon {
                model: g.model.clone(),
                mode: g.mode.clone(),
                suite: g.suite.clone(),
                base,
                lengths,
                steps,
                below_half_at,
                longest,
                withheld: row.withheld.clone(),
            }
        })
        .collect()
}

// ---------------------------------------------------------------------------------------
// rendering

/// One table of the leaderboard, in whatever format.
struct Table {
    title: String,
    note: String,
    headers: Vec<String>,
    rows: Vec<Vec<String>>,
}

/// What a table shows in place of a withheld row's figures.
const WITHHELD: &str = "withheld";

fn pct(x: f64) -> String {
    format!("{:.1}%", x * 100.0)
}

fn with_ci(e: &Option<Estimate>) -> String {
    match e {
        Some(e) => format!("{} [{}, {}]", pct(e.mean), pct(e.ci95[0]), pct(e.ci95[1])),
        None => "-".into(),
    }
}

fn signed_pct(x: f64) -> String {
    format!("{:+.1}", x * 100.0)
}

fn p_value(p: f64) -> String {
    if p >= 0.001 { format!("{p:.4}") } else { format!("{p:.1e}") }
}

fn tables(lb: &Leaderboard) -> Vec<Table> {
    let mut out = Vec::new();
    let max_k = lb.rows.iter().map(|r| r.pass_k.len()).max().unwrap_or(0);
    let mut headers: Vec<String> = [
        "model",
        "mode",
        "episodes",
        "success [95% CI]",
        "progress [95% CI]",
        "node accuracy [95% CI]",
    ]
    .map(String::from)
    .to_vec();
    headers.insert(2, "suite".into());
    headers.extend((1..=max_k).map(|k| format!("pass^{k}")));
    headers.extend(["harness failures", "infra failures"].map(String::from));
    out.push(Table {
        title: "Leaderboard".into(),
        note: format!(
            "Success, progress and node accuracy over scored episodes (infrastructure failures are not scored and are counted apart; \
             harness failures are scored as failures). Percentile bootstrap 95% intervals, {} resamples, seeded from the runs. \
             A harness failure is a scored episode that failed at a limit of the harness (reply cap, context, wall time, a user's cap; \
             docs/agent.md); a row with more than {:.0}% of them, or with nothing scored, is withheld.{}",
            lb.resamples,
            MAX_HARNESS_FAILURE_RATE * 100.0,
            lb.rows
                .iter()
                .filter_map(|r| r.withheld.as_ref().map(|w| format!(" Withheld: {}: {w}.", r.label())))
                .collect::<String>()
        ),
        headers,
        rows: lb
            .rows
            .iter()
            .map(|r| {
                let mut cells = vec![
                    r.model.clone(),
                    r.mode.clone(),
                    r.suite.clone(),
                    if r.scored == r.episodes {
                        r.episodes.to_string()
                    } else {
                        format!("{} ({} scored)", r.episodes, r.scored)
                    },
                ];
                if r.withheld.is_some() {
                    cells.extend(std::iter::repeat_n(WITHHELD.to_string(), 3 + max_k));
                } else {
                    cells.extend([with_ci(&r.success), with_ci(&r.progress), with_ci(&r.node_accuracy)]);
                    for k in 1..=max_k {
                        cells.push(r.pass_k.get(k - 1).map_or("-".into(), |p| pct(p.estimate.mean)));
                    }
                }
                cells.push(r.harness_failures.to_string());
                cells.push(r.infrastructure_failures.to_string());
                cells
            })
            .collect(),
    });
    if !lb.families.is_empty() {
        let mut headers = vec!["family".to_string()];
        headers.extend(lb.rows.iter().map(Row::label));
        out.push(Table {
            title: "Success per family".into(),
            note: "Success over the family's scored episodes (episodes in parentheses); - where the row did not run the family; \
                   withheld where the row is."
                .into(),
            headers,
            rows: lb
                .families
                .iter()
                .map(|f| {
                    let mut cells = vec![f.clone()];
                    cells.extend(lb.rows.iter().map(|r| match (r.families.get(f), &r.withheld) {
                        (None, _) => "-".into(),
                        (Some(_), Some(_)) => WITHHELD.into(),
                        (Some(x), None) => format!("{} ({})", pct(x.success.mean), x.episodes),
                    }));
                    cells
                })
                .collect(),
        });
    }
    if !lb.paired.is_empty() {
        let metric = |m: &Option<PairedMetric>| -> [String; 3] {
            match m {
                Some(m) => [
                    format!(
                        "{} [{}, {}]",
                        signed_pct(m.difference.mean),
                        signed_pct(m.difference.ci95[0]),
                        signed_pct(m.difference.ci95[1])
                    ),
                    format!("{}/{}/{}", m.better, m.worse, m.ties),
                    p_value(m.sign_test_p),
                ],
                None => ["-".into(), "-".into(), "-".into()],
            }
        };
        out.push(Table {
            title: "Paired differences between modes".into(),
            note: "Per instance both modes ran: the mode's success rate (over its trials) minus the baseline's, in percentage points, \
                   with a paired bootstrap 95% interval over instances; better/worse/tied instances; exact two-sided sign test over \
                   the discordant instances. The same for mean progress. Withheld where either row is."
                .into(),
            headers: [
                "model",
                "suite",
                "comparison",
                "pairs",
                "Δ success [95% CI]",
                "better/worse/tied",
                "sign test p",
                "Δ progress [95% CI]",
                "better/worse/tied",
                "sign test p",
            ]
            .map(String::from)
            .to_vec(),
            rows: lb
                .paired
                .iter()
                .map(|p| {
                    let mut cells = vec![p.model.clone(), p.suite.clone(), format!("{} − {}", p.b, p.a), p.pairs.to_string()];
                    if p.withheld.is_some() {
                        cells.extend(std::iter::repeat_n(WITHHELD.to_string(), 6));
                    } else {
                        cells.extend(metric(&p.success));
                        cells.extend(metric(&p.progress));
                    }
                    cells
                })
                .collect(),
        });
    }
    let bases: BTreeSet<&str> = lb.horizon.iter().map(|h| h.base.as_str()).collect();
    for base in bases {
        let hs: Vec<&Horizon> = lb.horizon.iter().filter(|h| h.base == base).collect();
        let lens: BTreeSet<u32> = hs.iter().flat_map(|h| h.lengths.iter().map(|l| l.length)).collect();
        let mut headers = vec!["model".to_string(), "mode".to_string(), "suite".to_string()];
        headers.extend(lens.iter().map(|n| format!("N={n}")));
        headers.push("success < 50% at".into());
        out.push(Table {
            title: format!("Horizon: {base}"),
            note: "Success by chain length N (the same procedure chained N times; episodes in parentheses), and the shortest N at \
                   which success falls below 50%."
                .into(),
            headers,
            rows: hs
                .iter()
                .map(|h| {
                    let mut cells = vec![h.model.clone(), h.mode.clone(), h.suite.clone()];
                    if h.withheld.is_some() {
                        cells.extend(std::iter::repeat_n(WITHHELD.to_string(), lens.len() + 1));
                        return cells;
                    }
                    cells.extend(lens.iter().map(|n| {
                        h.lengths
                            .iter()
                            .find(|l| l.length == *n)
                            .map_or("-".into(), |l| format!("{} ({})", pct(l.success.mean), l.episodes))
                    }));
                    cells.push(
                        h.below_half_at
                            .map_or_else(|| format!("none within {}", h.longest), |n| format!("N={n}")),
                    );
                    cells
                })
                .collect(),
        });
        let max_step = hs.iter().flat_map(|h| h.steps.iter().map(|s| s.step)).max().unwrap_or(0);
        if max_step > 0 {
            let mut headers = vec!["model".to_string(), "mode".to_string(), "suite".to_string()];
            headers.extend((1..=max_step).map(|i| i.to_string()));
            out.push(Table {
                title: format!("Horizon: {base}, accuracy by step index"),
                note: "Share of scored episodes whose i-th step (the i-th top-level node of the grade, in tree order) passed, over \
                       every chain of length at least i."
                    .into(),
                headers,
                rows: hs
                    .iter()
                    .map(|h| {
                        let mut cells = vec![h.model.clone(), h.mode.clone(), h.suite.clone()];
                        if h.withheld.is_some() {
                            cells.extend(std::iter::repeat_n(WITHHELD.to_string(), max_step as usize));
                            return cells;
                        }
                        cells.extend((1..=max_step).map(|i| {
                            h.steps
                                .iter()
                                .find(|s| s.step == i)
                                .map_or("-".into(), |s| format!("{:.0}", s.accuracy * 100.0))
                        }));
                        cells
                    })
                    .collect(),
            });
        }
    }
    out.push(Table {
        title: "Runs".into(),
        note: "Where each row's episodes come from: its run directories, the builds that ran them (`emrgym --version`: the \
               commit, `+dirty.<hash>` for a changed checkout; more than one when a run was resumed with `--allow-other-build` \
               or the row combines runs of different builds), the SHA-256 of the model file (first 16 hex digits) and, for an \
               in-process model, the machines that ran its episodes, with how many each (llama.cpp's kernels depend on the \
               CPU; `unrecorded` for runs from before result lines named their machine)."
            .into(),
        headers: ["model", "mode", "suite", "runs", "builds", "weights", "machines"]
            .map(String::from)
            .to_vec(),
        rows: lb
            .rows
            .iter()
            .map(|r| {
                vec![
                    r.model.clone(),
                    r.mode.clone(),
                    r.suite.clone(),
                    r.runs.join(", "),
                    r.builds.join(", "),
                    if r.model_sha256.is_empty() {
                        "-".to_string()
                    } else {
                        r.model_sha256
                            .iter()
                            .map(|h| h.chars().take(16).collect::<String>())
                            .collect::<Vec<_>>()
                            .join(", ")
                    },
                    if r.machines.is_empty() {
                        "-".to_string()
                    } else {
                        r.machines
                            .iter()
                            .map(|m| format!("{}: {}", m.machine, m.episodes))
                            .collect::<Vec<_>>()
                            .join("; ")
                    },
                ]
            })
            .collect(),
    });
    out
}

/// The leaderboard as aligned text tables.
pub fn text(lb: &Leaderboard) -> String {
    let mut out = String::new();
    for (i, t) in tables(lb).iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        let _ = writeln!(out, "{}", t.title);
        let width: Vec<usize> = (0..t.headers.len())
            .map(|c| {
                std::iter::once(&t.headers[c])
                    .chain(t.rows.iter().map(|r| &r[c]))
                    .map(|s| s.chars().count())
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let line = |cells: &[String]| -> String {
            let s: Vec<String> = cells
                .iter()
                .zip(&width)
                .map(|(c, w)| format!("{c}{}", " ".repeat(w - c.chars().count())))
                .collect();
            format!("  {}\n", s.join("  ").trim_end())
        };
        out.push_str(&line(&t.headers));
        for r in &t.rows {
            out.push_str(&line(r));
        }
    }
    out
}

/// Columns of words, left-aligned (numbers are right-aligned).
const LEFT: [&str; 9] = [
    "model",
    "mode",
    "suite",
    "family",
    "comparison",
    "runs",
    "builds",
    "weights",
    "machines",
];

fn md_cell(s: &str) -> String {
    s.replace('|', "\\|")
}

/// The leaderboard as Markdown: one section per table, each with its note.
pub fn markdown(lb: &Leaderboard) -> String {
    markdown_of(&tables(lb))
}

/// The first table only (one row per model and mode, with its note): `emrgym table`.
pub fn main_table_markdown(lb: &Leaderboard) -> String {
    markdown_of(&tables(lb)[..1])
}

fn markdown_of(tables: &[Table]) -> String {
    let mut out = String::new();
    for t in tables {
        let _ = writeln!(out, "### {}\n\n{}\n", t.title, t.note);
        let _ = writeln!(out, "| {} |", t.headers.iter().map(|h| md_cell(h)).collect::<Vec<_>>().join(" | "));
        let _ = writeln!(
            out,
            "|{}|",
            t.headers
                .iter()
                .enumerate()
                .map(|(i, h)| if i == 0 || LEFT.contains(&h.as_str()) { "---" } else { "---:" })
                .collect::<Vec<_>>()
                .join("|")
        );
        for r in &t.rows {
            let _ = writeln!(out, "| {} |", r.iter().map(|c| md_cell(c)).collect::<Vec<_>>().join(" | "));
        }
        out.push('\n');
    }
    out
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

const COLOURS: [&str; 8] = [
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf",
];

/// One line chart as inline SVG: y in [0, 1], one polyline per series, x at `xs` (equally
/// spaced), a dashed line at 50%, and a legend.
fn svg_chart(title: &str, x_label: &str, xs: &[u32], series: &[(String, Vec<(u32, f64)>)]) -> String {
    let (w, h, left, right, top, bottom) = (640.0, 300.0, 50.0, 20.0, 30.0, 40.0);
    let legend_h = 18.0 * series.len() as f64 + 10.0;
    let plot_w = w - left - right;
    let plot_h = h - top - bottom;
    let x_of = |x: u32| -> f64 {
        let i = xs.iter().position(|v| *v == x).unwrap_or(0) as f64;
        let n = (xs.len().max(2) - 1) as f64;
        left + plot_w * i / n
    };
    let y_of = |y: f64| top + plot_h * (1.0 - y.clamp(0.0, 1.0));
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg class="curve" role="img" viewBox="0 0 {w} {}" width="{w}" height="{}"><title>{}</title>"#,
        h + legend_h,
        h + legend_h,
        esc(title)
    );
    let _ = write!(s, r#"<text x="{left}" y="18" class="t">{}</text>"#, esc(title));
    for g in [0.0, 0.25, 0.5, 0.75, 1.0] {
        let y = y_of(g);
        let dash = if g == 0.5 { r#" stroke-dasharray="4 3""# } else { "" };
        let _ = write!(
            s,
            r##"<line x1="{left}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#ccc"{dash}/><text x="{:.1}" y="{:.1}" text-anchor="end" class="a">{:.0}%</text>"##,
            left + plot_w,
            left - 6.0,
            y + 4.0,
            g * 100.0
        );
    }
    let label_every = xs.len().div_ceil(16).max(1);
    for (i, x) in xs.iter().enumerate() {
        if i % label_every == 0 || i + 1 == xs.len() {
            let _ = write!(
                s,
                r#"<text x="{:.1}" y="{:.1}" text-anchor="middle" class="a">{x}</text>"#,
                x_of(*x),
                top + plot_h + 16.0
            );
        }
    }
    let _ = write!(
        s,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle" class="a">{}</text>"#,
        left + plot_w / 2.0,
        top + plot_h + 34.0,
        esc(x_label)
    );
    for (k, (name, pts)) in series.iter().enumerate() {
        let c = COLOURS[k % COLOURS.len()];
        let points: Vec<String> = pts.iter().map(|(x, y)| format!("{:.1},{:.1}", x_of(*x), y_of(*y))).collect();
        let _ = write!(
            s,
            r#"<polyline fill="none" stroke="{c}" stroke-width="2" points="{}"><title>{}</title></polyline>"#,
            points.join(" "),
            esc(name)
        );
        for (x, y) in pts {
            let _ = write!(
                s,
                r#"<circle cx="{:.1}" cy="{:.1}" r="3" fill="{c}"><title>{}: {x} → {:.1}%</title></circle>"#,
                x_of(*x),
                y_of(*y),
                esc(name),
                y * 100.0
            );
        }
        let ly = h + 14.0 + 18.0 * k as f64;
        let _ = write!(
            s,
            r#"<rect x="{left}" y="{:.1}" width="14" height="4" fill="{c}"/><text x="{:.1}" y="{ly:.1}" class="a">{}</text>"#,
            ly - 6.0,
            left + 20.0,
            esc(name)
        );
    }
    s.push_str("</svg>");
    s
}

/// The leaderboard as one self-contained HTML page (inline CSS and SVG; nothing loaded from
/// anywhere): the tables, and per horizon procedure two curves, success against chain length
/// and accuracy against step index, one line per row.
pub fn html(lb: &Leaderboard) -> String {
    let mut out = String::from(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>EMRGym leaderboard</title>\n<style>\n\
         body{font:14px/1.4 system-ui,sans-serif;margin:2em;color:#222}\n\
         table{border-collapse:collapse;margin:0.5em 0 1.5em}\n\
         th,td{border:1px solid #ddd;padding:3px 8px;text-align:right;white-space:nowrap}\n\
         th:first-child,td:first-child,th:nth-child(2),td:nth-child(2){text-align:left}\n\
         th{background:#f4f4f4}\n\
         p.note{color:#555;max-width:60em}\n\
         svg.curve .t{font-weight:600;font-size:13px}\n\
         svg.curve .a{font-size:11px;fill:#444}\n\
         </style></head><body>\n<h1>EMRGym leaderboard</h1>\n",
    );
    for t in tables(lb) {
        let _ = writeln!(out, "<h2>{}</h2>\n<p class=\"note\">{}</p>\n<table>", esc(&t.title), esc(&t.note));
        let _ = writeln!(
            out,
            "<tr>{}</tr>",
            t.headers.iter().map(|h| format!("<th>{}</th>", esc(h))).collect::<String>()
        );
        for r in &t.rows {
            let _ = writeln!(
                out,
                "<tr>{}</tr>",
                r.iter().map(|c| format!("<td>{}</td>", esc(c))).collect::<String>()
            );
        }
        out.push_str("</table>\n");
    }
    let bases: BTreeSet<&str> = lb.horizon.iter().map(|h| h.base.as_str()).collect();
    for base in bases {
        // a withheld row draws no curve (its table cells say why)
        let hs: Vec<&Horizon> = lb.horizon.iter().filter(|h| h.base == base && h.withheld.is_none()).collect();
        if hs.is_empty() {
            continue;
        }
        let _ = writeln!(out, "<h2>Horizon curves: {}</h2>", esc(base));
        let lens: Vec<u32> = hs
            .iter()
            .flat_map(|h| h.lengths.iter().map(|l| l.length))
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let series: Vec<(String, Vec<(u32, f64)>)> = hs
            .iter()
            .map(|h| {
                (
                    format!("{} ({}, {})", h.model, h.mode, h.suite),
                    h.lengths.iter().map(|l| (l.length, l.success.mean)).collect(),
                )
            })
            .collect();
        out.push_str(&svg_chart(
            &format!("{base}: success by chain length"),
            "chain length N",
            &lens,
            &series,
        ));
        out.push('\n');
        let max_step = hs.iter().flat_map(|h| h.steps.iter().map(|s| s.step)).max().unwrap_or(0);
        let steps: Vec<u32> = (1..=max_step).collect();
        let series: Vec<(String, Vec<(u32, f64)>)> = hs
            .iter()
            .map(|h| {
                (
                    format!("{} ({}, {})", h.model, h.mode, h.suite),
                    h.steps.iter().map(|s| (s.step, s.accuracy)).collect(),
                )
            })
            .collect();
        out.push_str(&svg_chart(
            &format!("{base}: accuracy by step index"),
            "step index",
            &steps,
            &series,
        ));
        out.push('\n');
    }
    out.push_str("</body></html>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_test_is_exact_on_hand_computed_cases() {
        // 6 discordant pairs all one way: 2 · (1/2)^6
        assert_eq!(sign_test(6, 0), 0.03125);
        assert_eq!(sign_test(0, 6), 0.03125);
        // 5 against 1: 2 · (1 + 6) / 64
        assert!((sign_test(5, 1) - 14.0 / 64.0).abs() < 1e-12);
        // even splits and nothing discordant: no evidence
        assert_eq!(sign_test(3, 3), 1.0);
        assert_eq!(sign_test(0, 0), 1.0);
        // large n stays finite and tiny
        let p = sign_test(1000, 0);
        assert!(p > 0.0 && p < 1e-300, "{p}");
        assert_eq!(sign_test(5000, 5000), 1.0);
        assert!(sign_test(2600, 2400) < 0.01, "the large-n branch: {}", sign_test(2600, 2400));
        assert!(sign_test(60, 40) > 0.05 && sign_test(61, 39) < 0.05);
    }

    #[test]
    fn a_share_is_rounded_once_for_the_table_and_written_with_four_decimals() {
        // 9 of 44 is 20.4545...%: 20.5%, not the 20.4% of 0.2045 rounded again
        let values: Vec<f64> = (0..44).map(|i| f64::from(u8::from(i < 9))).collect();
        let e = bootstrap_mean(&values, 3).unwrap();
        assert_eq!(super::pct(e.mean), "20.5%");
        assert_eq!(serde_json::to_value(e).unwrap()["mean"], serde_json::json!(0.2045));
        assert_eq!(e.rounded().mean, 0.2045);
        let step = StepResult {
            step: 1,
            episodes: 44,
            accuracy: 9.0 / 44.0,
        };
        assert_eq!(serde_json::to_value(step).unwrap()["accuracy"], serde_json::json!(0.2045));
    }

    #[test]
    fn a_mean_interval_holds_the_mean_and_there_is_none_for_no_items() {
        let values: Vec<f64> = (0..37).map(|i| f64::from(u8::from(i % 3 == 0))).collect();
        let e = bootstrap_mean(&values, 11).unwrap();
        assert!(e.ci95[0] <= e.mean && e.mean <= e.ci95[1], "{e:?}");
        assert!(e.ci95[0] < e.ci95[1], "a mixed sample has a non-degenerate interval: {e:?}");
        assert_eq!(bootstrap_mean(&[], 1), None);
    }

    #[test]
    fn a_row_with_too_many_harness_failures_is_withheld() {
        assert_eq!(super::withheld(0, 0).as_deref(), Some("no scored episode"));
        assert_eq!(super::withheld(0, 44), None);
        let cap = (super::MAX_HARNESS_FAILURE_RATE * 44.0).floor() as usize;
        assert_eq!(super::withheld(cap, 44), None, "at the threshold it is published");
        let w = super::withheld(cap + 1, 44).unwrap();
        assert!(w.contains(&format!("({} of 44)", cap + 1)) && w.contains("threshold"), "{w}");
    }

    fn row(mode: &str, withheld: Option<&str>) -> Row {
        let e = Estimate {
            mean: 0.5,
            ci95: [0.25, 0.75],
            n: 4,
        };
        Row {
            model: "m".into(),
            agent: "model".into(),
            mode: mode.into(),
            suite: "quick".into(),
            runs: vec![format!("results/m-{mode}")],
            builds: vec!["0123456789ab".into()],
            model_sha256: vec!["ab".repeat(32)],
            machines: Vec::new(),
            seed: 0,
            trials: 1,
            instances: 4,
            episodes: 4,
            scored: 4,
            infrastructure_failures: 0,
            harness_failures: if withheld.is_some() { 3 } else { 0 },
            withheld: withheld.map(str::to_string),
            success: Some(e),
            progress: Some(e),
            node_accuracy: Some(e),
            pass_k: vec![PassK { k: 1, estimate: e }],
            families: BTreeMap::from([(
                "fam".to_string(),
                FamilyResult {
                    episodes: 4,
                    success: e,
                    harness_failures: 0,
                },
            )]),
        }
    }

    fn horizon(r: &Row) -> Horizon {
        Horizon {
            model: r.model.clone(),
            mode: r.mode.clone(),
            suite: r.suite.clone(),
            base: "horizon_mrn".into(),
            lengths: vec![LengthResult {
                length: 2,
                episodes: 4,
                success: r.success.unwrap(),
            }],
            steps: vec![StepResult {
                step: 1,
                episodes: 4,
                accuracy: 0.5,
            }],
            below_half_at: None,
            longest: 2,
            withheld: r.withheld.clone(),
        }
    }

    #[test]
    fn a_withheld_row_shows_no_figure_in_any_table_or_curve() {
        let flat = row("flat", Some("harness failures above the 5% threshold"));
        let guided = row("guided", None);
        let per = |xs: [f64; 4]| -> BTreeMap<String, Means> { xs.iter().enumerate().map(|(i, x)| (format!("i{i}"), (*x, *x))).collect() };
        let p = pair(&flat, &per([0.0, 0.0, 1.0, 0.0]), &guided, &per([1.0, 1.0, 1.0, 0.0]));
        assert_eq!(p.withheld.as_deref(), Some("m (flat, quick) is withheld"));
        assert!(p.success.is_some(), "the figures stay in the JSON, flagged");
        let lb = Leaderboard {
            format_version: LEADERBOARD_FORMAT_VERSION,
            resamples: RESAMPLES,
            families: vec!["fam".into()],
            paired: vec![p],
            horizon: vec![horizon(&flat), horizon(&guided)],
            rows: vec![flat, guided],
        };
        let md = markdown(&lb);
        let line = |start: &str| -> &str { md.lines().find(|l| l.starts_with(start)).unwrap_or_else(|| panic!("{start}: {md}")) };
        assert_eq!(line("| m | flat | quick |").matches("withheld").count(), 4, "{md}");
        assert!(!line("| m | guided | quick |").contains("withheld"), "{md}");
        assert_eq!(line("| fam |"), "| fam | withheld | 50.0% (4) |", "{md}");
        let paired = line("| m | quick | guided − flat |");
        assert_eq!(paired.matches("withheld").count(), 6, "{paired}");
        assert!(!paired.contains('%'), "no difference is shown: {paired}");
        let (figures, runs) = md.split_once("### Runs").expect("a Runs table");
        let horizon_rows: Vec<&str> = figures.lines().filter(|l| l.starts_with("| m | flat | quick |")).collect();
        assert_eq!(horizon_rows.len(), 3, "leaderboard, horizon, steps: {md}");
        assert!(horizon_rows.iter().all(|l| !l.contains('%') && l.contains("withheld")), "{md}");
        // where a withheld row comes from is still said
        assert!(
            runs.lines()
                .any(|l| l == "| m | flat | quick | results/m-flat | 0123456789ab | abababababababab | - |"),
            "{runs}"
        );
        let html = html(&lb);
        assert!(
            html.contains("m (guided, quick)") && !html.contains("m (flat, quick)</text>"),
            "no curve for the withheld row"
        );
        // a procedure whose every row is withheld draws no chart at all
        let mut lb = lb;
        lb.horizon.retain(|h| h.mode == "flat");
        assert!(!super::html(&lb).contains("Horizon curves"));
    }

    #[test]
    fn a_run_is_labelled_by_its_suite_and_suites_sort_as_the_docs_list_them() {
        let cfg = |v: serde_json::Value| -> RunConfig { serde_json::from_value(v).unwrap() };
        assert_eq!(suite_label(&cfg(serde_json::json!({"suite_name": "horizon"}))), "horizon");
        assert_eq!(suite_label(&cfg(serde_json::json!({}))), "all");
        assert_eq!(suite_label(&cfg(serde_json::json!({"families": ["mab_a1c"]}))), "selection");
        assert_eq!(suite_label(&cfg(serde_json::json!({"instances": ["mab-a1c-001"]}))), "selection");
        let mut names = vec!["zeta", "full", "horizon", "alpha", "quick", "mab"];
        names.sort_by_key(|s| suite_rank(s));
        assert_eq!(names, ["quick", "mab", "horizon", "full", "alpha", "zeta"]);
    }

    #[test]
    fn horizon_families_are_recognised_by_name() {
        assert_eq!(chain("horizon_mrn_16"), Some(("horizon_mrn", 16)));
        assert_eq!(chain("mab_k_replete"), None);
        assert_eq!(chain("horizon_mrn"), None);
    }

    #[test]
    fn endpoint_models_are_labelled_by_name_and_host() {
        let cfg: RunConfig = serde_json::from_value(serde_json::json!({
            "agent": "model",
            "model": {"backend": "openai", "base_url": "http://127.0.0.1:8080/v1", "model": "qwen"}
        }))
        .unwrap();
        assert_eq!(model_label(&cfg), "qwen@127.0.0.1:8080");
        let cfg: RunConfig = serde_json::from_value(serde_json::json!({
            "agent": "model",
            "model": {"backend": "llama", "model_path": "/models/SmolLM2-360M.Q8_0.gguf"}
        }))
        .unwrap();
        assert_eq!(model_label(&cfg), "SmolLM2-360M.Q8_0.gguf");
        let cfg: RunConfig = serde_json::from_value(serde_json::json!({"agent": "oracle"})).unwrap();
        assert_eq!(model_label(&cfg), "oracle");
    }
}
