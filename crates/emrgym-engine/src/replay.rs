//! `emrgym replay RUN_DIR|TRAJECTORY`: re-execute every recorded tool call into a fresh
//! sandbox (seeded like the episode), re-grade with the current scenarios and grader, no
//! model, and report every grade that changed and why: the scenario's content changed, the
//! grader's version changed, the tool catalogue changed, or the tools now answer differently.
//! `--out DIR` writes the re-graded run as a run directory that `report` and `compare` read.

use super::episode::{Prepared, Workspace, execute_calls, finalize};
use super::run::{AgentKind, RunConfig};
use super::rundir::{Manifest, ResultLine, family_hashes, read_results, sha256_hex, trajectory_path, write_atomic, write_results};
use super::stats::run_summary;
use anyhow::{Context, bail};
use emrgym_grade::{FailureClass, Grade};
use emrgym_scenario::trajectory::file::{Header, TrajectoryFile, read};
use emrgym_scenario::trajectory::{self, Trajectory};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// One node whose verdict changed.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NodeChange {
    /// Node path.
    pub path: String,
    /// Recorded verdict (absent: the node did not exist).
    pub before: Option<String>,
    /// Verdict now (absent: the node no longer exists).
    pub after: Option<String>,
    /// The grader rules changed since the recording that decide this node's verdict (empty
    /// when the grader version did not change).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<String>,
}

/// One episode replayed.
#[derive(Debug, Clone, Serialize)]
pub struct Replayed {
    /// Instance.
    pub instance: String,
    /// Trial.
    pub trial: u32,
    /// The recorded result (absent for a lone trajectory file with no run beside it).
    pub recorded: Option<ResultLine>,
    /// The result now.
    pub now: ResultLine,
    /// The grade changed (success, progress, a verdict, a failure class or the answer check).
    pub changed: bool,
    /// Why things may differ from the recording.
    pub reasons: Vec<String>,
    /// Verdicts that changed.
    pub nodes: Vec<NodeChange>,
    /// Steps whose tool result differs from the recorded one.
    pub tool_results_differ: Vec<usize>,
    #[serde(skip)]
    trajectory: String,
}

/// Node path -> (verdict, failure class) of a recorded or fresh grade.
fn verdicts(g: Option<&Grade>) -> BTreeMap<String, (String, Option<FailureClass>)> {
    g.into_iter()
        .flat_map(|g| &g.nodes)
        .map(|n| (n.path.clone(), (n.verdict.as_str().to_string(), n.class)))
        .collect()
}

/// Replay one recorded episode against a prepared instance.
pub fn replay_one(p: &Prepared, file: &TrajectoryFile, recorded: Option<&ResultLine>, scenario_sha256: &str) -> anyhow::Result<Replayed> {
    let h = &file.header;
    let old = &file.trajectory;
    let calls: Vec<_> = old.steps.iter().map(|s| s.call.clone()).collect();
    let (sb, fresh) = execute_calls(p, h.episode_seed, &calls);
    let mut t: Trajectory = old.clone();
    let mut differ = Vec::new();
    for (i, (s, f)) in t.steps.iter_mut().zip(fresh).enumerate() {
        if s.result != f.result {
            differ.push(i);
        }
        s.result = f.result;
    }
    let g = finalize(p, h.episode_seed, &mut t, &sb);
    let mut now = super::rundir::result_line(p, &super::run::derived_limits(), h.trial, &t, &g);
    // re-graded where it ran: the machine is the recorded episode's
    now.host = recorded.and_then(|r| r.host);
    let mut reasons = Vec::new();
    if h.scenario.content_sha256 != scenario_sha256 {
        reasons.push(format!("scenario family {} changed since the run", h.scenario.family));
    }
    if h.grader_version != emrgym_grade::GRADER_VERSION {
        reasons.push(format!(
            "grader version {} at the run, {} now",
            h.grader_version,
            emrgym_grade::GRADER_VERSION
        ));
    }
    let catalogue = sha256_hex(p.registry.openai_tools().to_string().as_bytes());
    if h.tool_catalogue_sha256 != catalogue {
        reasons.push("the tool catalogue changed since the run".into());
    }
    if !differ.is_empty() {
        reasons.push(format!(
            "the tools now answer {} of {} recorded calls differently (first at step {})",
            differ.len(),
            t.steps.len(),
            differ[0]
        ));
    }
    let (changed, nodes) = match recorded {
        None => (false, Vec::new()),
        Some(r) => {
            let a = verdicts(r.grade.as_ref());
            let b = verdicts(now.grade.as_ref());
            let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
            keys.sort();
            keys.dedup();
            let nodes: Vec<NodeChange> = keys
                .into_iter()
                .filter(|k| a.get(*k).map(|v| &v.0) != b.get(*k).map(|v| &v.0))
                .map(|k| {
                    let classes: Vec<FailureClass> = a.get(k).and_then(|v| v.1).into_iter().chain(b.get(k).and_then(|v| v.1)).collect();
                    let rules = if h.grader_version == emrgym_grade::GRADER_VERSION {
                        Vec::new()
                    } else {
                        emrgym_grade::rules_changed(h.grader_version, &classes)
                            .into_iter()
                            .map(String::from)
                            .collect()
                    };
                    NodeChange {
                        path: k.clone(),
                        before: a.get(k).map(|v| v.0.clone()),
                        after: b.get(k).map(|v| v.0.clone()),
                        rules,
                    }
                })
                .collect();
            (
                r.grade != now.grade || r.success != now.success || r.progress != now.progress,
                nodes,
            )
        }
    };
    if changed && reasons.is_empty() {
        reasons.push("unexplained: same scenario, grader, catalogue and tool results (please report this)".into());
    }
    let text = trajectory::file::to_jsonl(h, &t)
        .with_context(|| format!("serialising the replayed trajectory of {}.{}", h.scenario.instance, h.trial))?;
    Ok(Replayed {
        instance: h.scenario.instance.clone(),
        trial: h.trial,
        recorded: recorded.cloned(),
        now,
        changed,
        reasons,
        nodes,
        tool_results_differ: differ,
        trajectory: text,
    })
}

/// What a replay reads: the trajectory files, the recorded results by (instance, trial), and
/// the run's manifest.
type Inputs = (Vec<PathBuf>, BTreeMap<(String, u32), ResultLine>, Option<Manifest>);

/// The trajectory files to replay and the recorded results beside them.
fn inputs(path: &Path) -> anyhow::Result<Inputs> {
    if path.is_dir() {
        let manifest = Manifest::read(path)?;
        let results = read_results(&path.join("results.jsonl"))?;
        let files = results.iter().map(|r| trajectory_path(path, &r.instance, r.trial)).collect();
        let map = results.into_iter().map(|r| ((r.instance.clone(), r.trial), r)).collect();
        return Ok((files, map, Some(manifest)));
    }
    if !path.exists() {
        bail!("{}: no such run directory or trajectory file", path.display());
    }
    // a lone file: use its run's manifest and results when it sits in a run directory
    // (`RUN/trajectories/FILE`); a run directory that is there but unreadable is an error
    let run = path
        .parent()
        .filter(|d| d.file_name().is_some_and(|n| n == "trajectories"))
        .and_then(Path::parent)
        .filter(|r| r.join("manifest.json").exists());
    let Some(run) = run else {
        return Ok((vec![path.to_path_buf()], BTreeMap::new(), None));
    };
    let manifest = Manifest::read(run)?;
    let map = read_results(&run.join("results.jsonl"))?
        .into_iter()
        .map(|r| ((r.instance.clone(), r.trial), r))
        .collect();
    Ok((vec![path.to_path_buf()], map, Some(manifest)))
}

/// Replay a run directory or one trajectory, grading against `suite` (default: the run's,
/// from its manifest).
pub fn replay(path: &Path, suite: Option<&Path>) -> anyhow::Result<Vec<Replayed>> {
    let (files, recorded, manifest) = inputs(path)?;
    let suite = match (suite, &manifest) {
        (Some(s), _) => s.to_path_buf(),
        (None, Some(m)) => m.config.suite.clone(),
        (None, None) => PathBuf::from("scenarios"),
    };
    let mut ws = Workspace::open(&suite).map_err(|e| anyhow::anyhow!("--suite {}: {}", suite.display(), e.join("\n")))?;
    let insts = ws.suite.instances().map_err(anyhow::Error::msg)?;
    let hashes = family_hashes(&ws)?;
    let mut prepared: BTreeMap<String, Prepared> = BTreeMap::new();
    let mut out = Vec::new();
    for f in files {
        let file = read(&f).map_err(anyhow::Error::msg)?;
        check_header(&file.header, &f)?;
        let id = file.header.scenario.instance.clone();
        if !prepared.contains_key(&id) {
            let inst = insts
                .iter()
                .find(|i| i.id == id)
                .with_context(|| format!("{}: instance {id} is not in {} any more", f.display(), suite.display()))?;
            let p = ws.prepare(inst).map_err(|e| anyhow::anyhow!("{id}: {}", e.join("\n")))?;
            prepared.insert(id.clone(), p);
        }
        let p = &prepared[&id];
        let sha = hashes.get(&p.instance.family).map(|(_, h)| h.as_str()).unwrap_or("");
        out.push(replay_one(p, &file, recorded.get(&(id, file.header.trial)), sha)?);
    }
    Ok(out)
}

fn check_header(h: &Header, f: &Path) -> anyhow::Result<()> {
    if h.scenario.instance.is_empty() {
        bail!("{}: the header names no scenario instance", f.display());
    }
    Ok(())
}

/// The terminal report of a replay.
pub fn render(rs: &[Replayed]) -> String {
    let changed: Vec<&Replayed> = rs.iter().filter(|r| r.changed).collect();
    let differ = rs.iter().filter(|r| !r.tool_results_differ.is_empty()).count();
    let mut s = format!(
        "replayed {} episodes: {} grades unchanged, {} changed; tool results differ in {} episodes\n",
        rs.len(),
        rs.iter().filter(|r| r.recorded.is_some() && !r.changed).count(),
        changed.len(),
        differ
    );
    for r in rs.iter().filter(|r| r.recorded.is_none()) {
        s.push_str(&format!(
            "{}.{}: no recorded grade; now success {} progress {:.3}\n",
            r.instance, r.trial, r.now.success, r.now.progress
        ));
    }
    for r in changed {
        let old = r.recorded.as_ref();
        s.push_str(&format!(
            "{}.{}: success {} -> {}, progress {:.3} -> {:.3}\n",
            r.instance,
            r.trial,
            old.is_some_and(|o| o.success),
            r.now.success,
            old.map_or(0.0, |o| o.progress),
            r.now.progress
        ));
        for n in &r.nodes {
            s.push_str(&format!(
                "    {}: {} -> {}\n",
                if n.path.is_empty() { "(root)" } else { n.path.as_str() },
                n.before.as_deref().unwrap_or("(absent)"),
                n.after.as_deref().unwrap_or("(absent)")
            ));
            for rule in &n.rules {
                s.push_str(&format!("      rule: {rule}\n"));
            }
        }
        for why in &r.reasons {
            s.push_str(&format!("    why: {why}\n"));
        }
    }
    s
}

/// Write the re-graded episodes as a run directory (`suite`: what they were graded on, as
/// given to [`replay`]).
pub fn write_run(from: &Path, suite: Option<&Path>, out: &Path, rs: &[Replayed]) -> anyhow::Result<()> {
    if out.join("manifest.json").exists() {
        bail!("{} already holds a run; choose another --out", out.display());
    }
    std::fs::create_dir_all(out.join("trajectories")).with_context(|| format!("creating {}", out.display()))?;
    let (_, _, manifest) = inputs(from)?;
    let mut lines: Vec<ResultLine> = rs.iter().map(|r| r.now.clone()).collect();
    lines.sort_by(|x, y| (x.instance.as_str(), x.trial).cmp(&(y.instance.as_str(), y.trial)));
    // a lone trajectory file outside a run directory has no manifest: the re-graded run gets
    // one with the default configuration of external episodes of the suite it was graded on
    let mut manifest = match manifest {
        Some(m) => m,
        None => {
            let suite = suite.unwrap_or(Path::new("scenarios"));
            let ws = Workspace::open(suite).map_err(|e| anyhow::anyhow!("--suite {}: {e}", suite.display()))?;
            let cfg = RunConfig {
                suite: suite.to_path_buf(),
                agent: AgentKind::External,
                ..RunConfig::default()
            };
            let ids: Vec<String> = lines
                .iter()
                .map(|l| l.instance.clone())
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect();
            Manifest::new(&cfg, &ws, &ids)?
        }
    };
    manifest.replayed_from = Some(from.display().to_string());
    if let Some(s) = suite {
        // graded on another scenario directory than the run's: record the one used
        manifest.config.suite = s.to_path_buf();
        manifest.config_sha256 = super::rundir::config_sha256(&manifest.config)?;
    }
    manifest.write(out)?;
    write_results(out, &lines)?;
    for r in rs {
        let path = trajectory_path(out, &r.instance, r.trial);
        write_atomic(&path, r.trajectory.as_bytes())?;
    }
    let summary = run_summary(out, &lines, manifest.config.trials, manifest.config.seed);
    summary.write(out)?;
    Ok(())
}
