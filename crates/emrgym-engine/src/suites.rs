//! Named suites: instance lists in `scenarios/suites/NAME.json` that `emrgym run --suite NAME`
//! runs (`quick`, `mab`, `horizon`; `full`, every instance, is implicit). The files are
//! generated from the scenarios by [`generate`] (`emrgym scenarios suites --write`), by rules
//! written down in each file and in docs/suite.md, so they can be regenerated when families
//! or instances change; a test fails when a file is stale.

use super::episode::Workspace;
use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Suite file format version.
pub const SUITE_FORMAT_VERSION: u32 = 1;

/// The implicit suite of every instance.
pub const FULL: &str = "full";

/// One named suite.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Suite {
    /// Format version.
    pub format_version: u32,
    /// Name (`--suite NAME`; the file is `suites/NAME.json`).
    pub name: String,
    /// What the suite is for.
    pub description: String,
    /// How its instances were chosen (the generator's rule, in words).
    pub rule: String,
    /// Instance ids, sorted.
    pub instances: Vec<String>,
}

/// Where a scenario directory keeps its suites.
pub fn dir(scenarios: &Path) -> PathBuf {
    scenarios.join("suites")
}

/// The suite names a scenario directory offers (`full` and every `suites/*.json`), sorted.
pub fn names(scenarios: &Path) -> Vec<String> {
    let mut out: BTreeSet<String> = BTreeSet::from([FULL.to_string()]);
    if let Ok(rd) = std::fs::read_dir(dir(scenarios)) {
        for e in rd.flatten() {
            let p = e.path();
            if p.extension().is_some_and(|x| x == "json")
                && let Some(stem) = p.file_stem()
            {
                out.insert(stem.to_string_lossy().into_owned());
            }
        }
    }
    out.into_iter().collect()
}

/// The instance ids of a named suite; None for `full` (every instance). An unknown name is
/// an error that lists the valid ones.
pub fn load(scenarios: &Path, name: &str) -> anyhow::Result<Option<Suite>> {
    if name == FULL {
        return Ok(None);
    }
    let path = dir(scenarios).join(format!("{name}.json"));
    let valid = || names(scenarios).join(", ");
    if name.is_empty() || name.contains(['/', '\\', '.']) || !path.is_file() {
        bail!("unknown suite '{name}'; valid suites: {}", valid());
    }
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let s: Suite = serde_json::from_str(&text).with_context(|| format!("{}: not a suite file", path.display()))?;
    if s.name != name {
        bail!("{}: names itself '{}'", path.display(), s.name);
    }
    Ok(Some(s))
}

/// The top-level decisions of an instance's reference plan (node paths without a dot whose
/// task has more than one method) and the method each takes.
fn top_branches(ws: &mut Workspace, inst: &emrgym_scenario::Instance) -> anyhow::Result<BTreeSet<(String, String)>> {
    let p = ws.prepare(inst).map_err(|e| anyhow::anyhow!("{}: {}", inst.id, e.join("; ")))?;
    let mut out = BTreeSet::new();
    for (path, m) in p.oracle.branches() {
        let multi = p
            .oracle
            .find(&path)
            .and_then(|i| p.oracle.nodes.get(i))
            .and_then(|n| p.library.tasks.get(&n.task))
            .is_some_and(|t| t.methods.len() > 1);
        if multi && !path.contains('.') {
            out.insert((path, m));
        }
    }
    Ok(out)
}

/// The rule of `quick`.
pub const QUICK_RULE: &str = "Per family (the horizon families excepted: they are the horizon suite), every method of every top-level decision of the family's reference plans (a node path without a dot whose task has more than one method) is covered by at least one instance: instances are taken greedily, each time the one covering most not-yet-covered (decision, method) pairs, ties to the smallest id; a family without a top-level decision gives its smallest id.";

/// Generate `quick`, `mab` and `horizon` from a scenario directory.
pub fn generate(scenarios: &Path) -> anyhow::Result<Vec<Suite>> {
    let mut ws = Workspace::open(scenarios).map_err(|e| anyhow::anyhow!("{}", e.join("\n")))?;
    let mut insts = ws.suite.instances().map_err(anyhow::Error::msg)?;
    insts.sort_by(|a, b| a.id.cmp(&b.id));
    let mut by_family: BTreeMap<String, Vec<emrgym_scenario::Instance>> = BTreeMap::new();
    for i in insts {
        by_family.entry(i.family.clone()).or_default().push(i);
    }
    let mut quick = Vec::new();
    for (family, list) in &by_family {
        if family.starts_with("horizon_") {
            continue;
        }
        let mut branches = Vec::new();
        for i in list {
            branches.push(top_branches(&mut ws, i)?);
        }
        let mut uncovered: BTreeSet<(String, String)> = branches.iter().flatten().cloned().collect();
        if uncovered.is_empty() {
            if let Some(first) = list.first() {
                quick.push(first.id.clone());
            }
            continue;
        }
        while !uncovered.is_empty() {
            // the first instance (smallest id) covering the most uncovered pairs
            let mut best: Option<(usize, usize)> = None;
            for (k, b) in branches.iter().enumerate() {
                let n = b.intersection(&uncovered).count();
                if n > best.map_or(0, |(_, m)| m) {
                    best = Some((k, n));
                }
            }
            let Some((k, _)) = best else { break };
            for pair in &branches[k] {
                uncovered.remove(pair);
            }
            quick.push(list[k].id.clone());
        }
    }
    quick.sort();
    let of = |pred: &dyn Fn(&str) -> bool| -> Vec<String> {
        by_family
            .iter()
            .filter(|(f, _)| pred(f))
            .flat_map(|(_, l)| l.iter().map(|i| i.id.clone()))
            .collect::<BTreeSet<String>>()
            .into_iter()
            .collect()
    };
    Ok(vec![
        Suite {
            format_version: SUITE_FORMAT_VERSION,
            name: "quick".into(),
            description: "A stratified sample for quick local runs: every family but the horizon chains, and every top-level branch of each, at least once.".into(),
            rule: QUICK_RULE.into(),
            instances: quick,
        },
        Suite {
            format_version: SUITE_FORMAT_VERSION,
            name: "mab".into(),
            description: "MedAgentBench's 10 task kinds: every instance of the mab_* families.".into(),
            rule: "Every instance of the families whose name starts with mab_.".into(),
            instances: of(&|f| f.starts_with("mab_")),
        },
        Suite {
            format_version: SUITE_FORMAT_VERSION,
            name: "horizon".into(),
            description: "The horizon families: one procedure chained 2 to 32 times, for accuracy per step and the length at which success falls below 50%.".into(),
            rule: "Every instance of the families whose name starts with horizon_.".into(),
            instances: of(&|f| f.starts_with("horizon_")),
        },
    ])
}

/// A suite as its file holds it (pretty JSON and a final newline).
pub fn to_text(s: &Suite) -> anyhow::Result<String> {
    Ok(format!("{}\n", serde_json::to_string_pretty(s)?))
}

/// The suite files that differ from what [`generate`] makes now (missing ones included).
pub fn stale(scenarios: &Path) -> anyhow::Result<Vec<String>> {
    let mut out = Vec::new();
    for s in generate(scenarios)? {
        let path = dir(scenarios).join(format!("{}.json", s.name));
        if std::fs::read_to_string(&path).ok().as_deref() != Some(to_text(&s)?.as_str()) {
            out.push(path.display().to_string());
        }
    }
    Ok(out)
}

/// Write the generated suite files; returns their paths.
pub fn write(scenarios: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let d = dir(scenarios);
    std::fs::create_dir_all(&d).with_context(|| format!("creating {}", d.display()))?;
    let mut out = Vec::new();
    for s in generate(scenarios)? {
        let path = d.join(format!("{}.json", s.name));
        std::fs::write(&path, to_text(&s)?).with_context(|| format!("writing {}", path.display()))?;
        out.push(path);
    }
    Ok(out)
}
