//! Run reports: load a run directory (manifest, results, summary; trajectories on demand),
//! render its summary as text, compare two runs, and write the static HTML report
//! ([`html`]). The files are read by the typed readers ([`Manifest`], [`crate::rundir::ResultLine`],
//! [`Summary`]) and then handled as their JSON form, which the templates render.

pub mod html;

use crate::rundir::Manifest;
use crate::stats::Summary;
use anyhow::{Context, bail};
use emrgym_agent::harness::MAX_HARNESS_FAILURE_RATE;
use emrgym_scenario::trajectory::file::{FileError, TrajectoryFile, read};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// A run directory.
#[derive(Debug, Clone)]
pub struct Run {
    /// Where it is.
    pub dir: PathBuf,
    /// `manifest.json`.
    pub manifest: Value,
    /// `results.jsonl`, one object per episode, in file order.
    pub results: Vec<Value>,
    /// `summary.json` (computed from the result lines when the run has none yet).
    pub summary: Value,
}

impl Run {
    /// Load a run directory through the typed readers ([`Manifest::read`],
    /// [`crate::rundir::read_results`] with its one rule for a torn last line,
    /// [`Summary::read`]); errors name the file and what is wrong. A run without a summary
    /// yet (still running, or killed) gets one computed from its result lines.
    pub fn load(dir: &Path) -> anyhow::Result<Run> {
        if !dir.is_dir() {
            bail!("{}: no such run directory", dir.display());
        }
        let manifest = Manifest::read(dir)?;
        let lines = crate::rundir::read_results(&dir.join("results.jsonl"))?;
        let summary = if dir.join("summary.json").exists() {
            Summary::read(dir)?
        } else {
            crate::stats::run_summary(dir, &lines, manifest.config.trials, manifest.config.seed)
        };
        let results = lines
            .iter()
            .map(serde_json::to_value)
            .collect::<Result<Vec<Value>, _>>()
            .with_context(|| format!("{}/results.jsonl", dir.display()))?;
        Ok(Run {
            dir: dir.to_path_buf(),
            manifest: serde_json::to_value(&manifest).with_context(|| format!("{}/manifest.json", dir.display()))?,
            results,
            summary: summary.to_json()?,
        })
    }

    /// An episode's trajectory file.
    pub fn trajectory(&self, instance: &str, trial: u64) -> Result<TrajectoryFile, FileError> {
        read(&self.dir.join("trajectories").join(format!("{instance}.{trial}.jsonl")))
    }

    /// `instance.trial` of a result line.
    pub fn key(r: &Value) -> String {
        format!("{}.{}", r["instance"].as_str().unwrap_or(""), r["trial"].as_u64().unwrap_or(0))
    }
}

/// A run summary (`summary.json`) as text: rates with their 95% intervals, pass^k, one line
/// per family, failure classes and end reasons.
pub fn summary_text(s: &Value) -> String {
    let pct = |v: &Value| -> String {
        match (v.get("mean").and_then(Value::as_f64), v.get("ci95")) {
            (Some(m), Some(ci)) => format!(
                "{:.1}% [{:.1}, {:.1}]",
                m * 100.0,
                ci[0].as_f64().unwrap_or(0.0) * 100.0,
                ci[1].as_f64().unwrap_or(0.0) * 100.0
            ),
            _ => "-".into(),
        }
    };
    let mut out = format!(
        "episodes {} (scored {}, infrastructure failures {}), instances {}\nsuccess   {}   {}\nprogress  {}\n",
        s["episodes"],
        s["scored"],
        s["infrastructure_failures"],
        s["instances"],
        pct(&s["success"]),
        harness_text(s),
        pct(&s["progress"])
    );
    if let Some(p) = s["pass_k"].as_object() {
        for (k, v) in p {
            out.push_str(&format!("{k:<9} {}\n", pct(v)));
        }
    }
    out.push_str("\nfamily                          episodes  success                 harness  progress\n");
    if let Some(f) = s["families"].as_object() {
        for (name, v) in f {
            out.push_str(&format!(
                "{name:<31} {:>8}  {:<23} {:>7}  {:.3}\n",
                v["episodes"].as_u64().unwrap_or(0),
                pct(&v["success"]),
                v["harness_failures"].as_u64().map_or("-".to_string(), |n| n.to_string()),
                v["progress"].as_f64().unwrap_or(0.0)
            ));
        }
    }
    if let Some(c) = s["failure_classes"].as_object().filter(|c| !c.is_empty()) {
        out.push_str("\nfailure classes: ");
        out.push_str(&c.iter().map(|(k, v)| format!("{k} {v}")).collect::<Vec<_>>().join(", "));
        out.push('\n');
    }
    if let Some(e) = s["end_reasons"].as_object() {
        out.push_str("end reasons: ");
        out.push_str(&e.iter().map(|(k, v)| format!("{k} {v}")).collect::<Vec<_>>().join(", "));
        out.push('\n');
    }
    out
}

/// The harness-failure figure of a summary, as shown next to success: how many scored
/// episodes failed at a limit of the harness (docs/agent.md, "Harness failures"), by limit,
/// and whether that keeps the run out of a results table.
pub fn harness_text(s: &Value) -> String {
    let h = &s["harness_failures"];
    let Some(n) = h["episodes"].as_u64() else {
        return "harness failures: not counted (an older run)".into();
    };
    let by: Vec<String> = h["by_limit"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| format!("{k} {v}"))
        .collect();
    format!(
        "harness failures {n} of {} scored ({:.1}%{}){}",
        s["scored"],
        h["rate"].as_f64().unwrap_or(0.0) * 100.0,
        if by.is_empty() {
            String::new()
        } else {
            format!(": {}", by.join(", "))
        },
        if h["publishable"] == false {
            format!(
                "; above the {:.0}% threshold: withheld from results tables",
                MAX_HARNESS_FAILURE_RATE * 100.0
            )
        } else {
            String::new()
        }
    )
}

/// The terminal report: the summary, then every episode that did not succeed with its
/// primary failure class and first failed node.
pub fn terminal(run: &Run) -> String {
    let mut out = format!("run {}\n", run.dir.display());
    let c = &run.manifest["config"];
    out.push_str(&format!(
        "agent {}  mode {}  trials {}  seed {}{}\n\n",
        c["agent"].as_str().unwrap_or("?"),
        c["mode"].as_str().unwrap_or("?"),
        c["trials"],
        c["seed"],
        model_name(&run.manifest).map(|m| format!("  model {m}")).unwrap_or_default()
    ));
    out.push_str(&summary_text(&run.summary));
    out.push_str(&horizon_text(&horizon(run)));
    let failed: Vec<&Value> = run.results.iter().filter(|r| r["success"] != true).collect();
    if !failed.is_empty() {
        out.push_str(&format!("\nnot successful ({}):\n", failed.len()));
        for r in failed {
            let first = r["grade"]["nodes"]
                .as_array()
                .and_then(|ns| {
                    let bad = |n: &&Value| n["verdict"] == "failed" || n["verdict"] == "not_reached";
                    ns.iter().filter(|n| n["path"] != "").find(bad).or_else(|| ns.iter().find(bad))
                })
                .map(|n| {
                    let reason = n["reasons"].get(0).and_then(Value::as_str).unwrap_or("");
                    format!(
                        "{} {}{}",
                        n["path"].as_str().unwrap_or(""),
                        n["verdict"].as_str().unwrap_or(""),
                        if reason.is_empty() { String::new() } else { format!(": {reason}") }
                    )
                })
                .unwrap_or_default();
            out.push_str(&format!(
                "  {:<28} {:<18} {:<20} {}\n",
                Run::key(r),
                r["end"].as_str().unwrap_or(""),
                r["grade"]["primary"]
                    .as_str()
                    .unwrap_or(if r["infrastructure"] == true { "(not scored)" } else { "-" }),
                first
            ));
        }
    }
    out
}

/// The model a run used, for display.
pub fn model_name(manifest: &Value) -> Option<String> {
    let cfg: crate::run::RunConfig = serde_json::from_value(manifest["config"].clone()).ok()?;
    (cfg.agent == crate::run::AgentKind::Model && cfg.model.is_some()).then(|| crate::leaderboard::model_label(&cfg))
}

/// Per-episode differences between two runs of the same scenarios: success flips, progress
/// deltas, episodes only in one run, and the per-family and overall changes.
pub fn compare(a: &Run, b: &Run) -> Value {
    let index = |r: &Run| -> BTreeMap<String, Value> { r.results.iter().map(|x| (Run::key(x), x.clone())).collect() };
    let (ia, ib) = (index(a), index(b));
    let mut flips = Vec::new();
    let mut deltas = Vec::new();
    let mut only_a = Vec::new();
    let mut only_b = Vec::new();
    let mut fam: BTreeMap<String, (f64, f64, usize)> = BTreeMap::new();
    for (k, x) in &ia {
        let Some(y) = ib.get(k) else {
            only_a.push(k.clone());
            continue;
        };
        let (pa, pb) = (x["progress"].as_f64().unwrap_or(0.0), y["progress"].as_f64().unwrap_or(0.0));
        let e = fam.entry(x["family"].as_str().unwrap_or("").to_string()).or_default();
        e.0 += pa;
        e.1 += pb;
        e.2 += 1;
        if x["success"] != y["success"] {
            flips.push(json!({"episode": k, "family": x["family"], "a": x["success"], "b": y["success"],
                "a_primary": x["grade"]["primary"], "b_primary": y["grade"]["primary"]}));
        }
        if (pa - pb).abs() > 1e-9 {
            deltas.push(json!({"episode": k, "a": pa, "b": pb, "delta": ((pb - pa) * 1e4).round() / 1e4}));
        }
    }
    for k in ib.keys() {
        if !ia.contains_key(k) {
            only_b.push(k.clone());
        }
    }
    let families: serde_json::Map<String, Value> = fam
        .into_iter()
        .map(|(f, (pa, pb, n))| {
            (
                f,
                json!({"episodes": n, "progress_a": round4(pa / n as f64), "progress_b": round4(pb / n as f64),
                "delta": round4((pb - pa) / n as f64)}),
            )
        })
        .collect();
    let rate = |s: &Value| s["success"]["mean"].as_f64();
    json!({
        "a": a.dir.display().to_string(),
        "b": b.dir.display().to_string(),
        "success_a": rate(&a.summary),
        "success_b": rate(&b.summary),
        "progress_a": a.summary["progress"]["mean"],
        "progress_b": b.summary["progress"]["mean"],
        "common": ia.keys().filter(|k| ib.contains_key(*k)).count(),
        "gained": flips.iter().filter(|f| f["b"] == true).count(),
        "lost": flips.iter().filter(|f| f["a"] == true).count(),
        "flips": flips,
        "progress_changes": deltas,
        "families": families,
        "only_in_a": only_a,
        "only_in_b": only_b,
    })
}

/// The horizon view of a run: families named `BASE_N` (the same procedure chained `N` times,
/// each step a graded node `p1` ... `pN`), grouped by `BASE` when the run has at least two
/// lengths. For each group: success by chain length, accuracy by step index (the share of
/// scored episodes, of every length that has the step, whose node `pI` passed), and the
/// horizon, the shortest length at which success falls below 50% (null when none does).
/// Infrastructure failures are left out. Empty when the run has no such families.
pub fn horizon(run: &Run) -> Value {
    // base -> length -> (episodes, successes, per step (passed, seen))
    type Steps = BTreeMap<usize, (usize, usize)>;
    let mut groups: BTreeMap<String, BTreeMap<usize, (usize, usize, Steps)>> = BTreeMap::new();
    for r in &run.results {
        if r["infrastructure"] == true {
            continue;
        }
        let family = r["family"].as_str().unwrap_or("");
        let Some((base, n)) = family.rsplit_once('_').and_then(|(b, n)| Some((b, n.parse::<usize>().ok()?))) else {
            continue;
        };
        let nodes = r["grade"]["nodes"].as_array().cloned().unwrap_or_default();
        let step = |i: usize| nodes.iter().find(|x| x["path"] == format!("p{i}").as_str());
        if n < 2 || (1..=n).any(|i| step(i).is_none()) {
            continue; // not a chain of graded steps
        }
        let e = groups.entry(base.to_string()).or_default().entry(n).or_default();
        e.0 += 1;
        e.1 += usize::from(r["success"] == true);
        for i in 1..=n {
            let s = e.2.entry(i).or_default();
            s.0 += usize::from(step(i).is_some_and(|x| x["verdict"] == "passed"));
            s.1 += 1;
        }
    }
    let mut out = serde_json::Map::new();
    for (base, lengths) in groups.into_iter().filter(|(_, l)| l.len() >= 2) {
        let mut by_step: BTreeMap<usize, (usize, usize)> = BTreeMap::new();
        for (_, _, steps) in lengths.values() {
            for (i, (p, n)) in steps {
                let e = by_step.entry(*i).or_default();
                e.0 += p;
                e.1 += n;
            }
        }
        let horizon = lengths
            .iter()
            .find(|(_, (n, ok, _))| (*ok as f64) < 0.5 * *n as f64)
            .map(|(len, _)| *len);
        out.insert(
            base,
            json!({
                "lengths": lengths.iter().map(|(len, (n, ok, _))| json!({"length": len, "episodes": n, "success": round4(*ok as f64 / *n as f64)})).collect::<Vec<_>>(),
                "steps": by_step.iter().map(|(i, (p, n))| json!({"step": i, "episodes": n, "accuracy": round4(*p as f64 / *n as f64)})).collect::<Vec<_>>(),
                "horizon": horizon,
            }),
        );
    }
    Value::Object(out)
}

/// The horizon view as text (empty when there is none).
pub fn horizon_text(h: &Value) -> String {
    let mut out = String::new();
    for (base, g) in h.as_object().into_iter().flatten() {
        out.push_str(&format!(
            "\nhorizon {base}: success falls below 50% at length {}\n  length  episodes  success\n",
            g["horizon"]
                .as_u64()
                .map(|n| n.to_string())
                .unwrap_or_else(|| "- (never, up to the longest chain run)".into())
        ));
        for l in g["lengths"].as_array().into_iter().flatten() {
            out.push_str(&format!(
                "  {:>6}  {:>8}  {:>6.1}%\n",
                l["length"],
                l["episodes"],
                l["success"].as_f64().unwrap_or(0.0) * 100.0
            ));
        }
        out.push_str("  accuracy by step index: ");
        let steps: Vec<String> = g["steps"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|s| format!("{} {:.0}%", s["step"], s["accuracy"].as_f64().unwrap_or(0.0) * 100.0))
            .collect();
        out.push_str(&steps.join(", "));
        out.push('\n');
    }
    out
}

fn round4(x: f64) -> f64 {
    (x * 1e4).round() / 1e4
}

/// [`compare`] as text.
pub fn compare_text(c: &Value) -> String {
    let f = |v: &Value| v.as_f64().map_or("-".to_string(), |x| format!("{:.1}%", x * 100.0));
    let mut out = format!(
        "A {}\nB {}\n{} episodes in both; success {} -> {}, progress {} -> {}; {} gained, {} lost\n",
        c["a"].as_str().unwrap_or(""),
        c["b"].as_str().unwrap_or(""),
        c["common"],
        f(&c["success_a"]),
        f(&c["success_b"]),
        c["progress_a"].as_f64().map_or("-".into(), |x| format!("{x:.3}")),
        c["progress_b"].as_f64().map_or("-".into(), |x| format!("{x:.3}")),
        c["gained"],
        c["lost"]
    );
    if let Some(fs) = c["families"].as_object() {
        out.push_str("\nfamily                          episodes  progress A  progress B   delta\n");
        for (name, v) in fs {
            out.push_str(&format!(
                "{name:<31} {:>8}  {:>10.3}  {:>10.3}  {:>+6.3}\n",
                v["episodes"].as_u64().unwrap_or(0),
                v["progress_a"].as_f64().unwrap_or(0.0),
                v["progress_b"].as_f64().unwrap_or(0.0),
                v["delta"].as_f64().unwrap_or(0.0)
            ));
        }
    }
    let flips = c["flips"].as_array().cloned().unwrap_or_default();
    if !flips.is_empty() {
        out.push_str("\nsuccess flips:\n");
        for x in flips {
            out.push_str(&format!(
                "  {:<28} {} -> {}{}\n",
                x["episode"].as_str().unwrap_or(""),
                if x["a"] == true { "pass" } else { "fail" },
                if x["b"] == true { "pass" } else { "fail" },
                x["b_primary"].as_str().map(|p| format!(" ({p})")).unwrap_or_default()
            ));
        }
    }
    let deltas = c["progress_changes"].as_array().cloned().unwrap_or_default();
    if !deltas.is_empty() {
        out.push_str("\nprogress changes:\n");
        for x in deltas {
            out.push_str(&format!(
                "  {:<28} {:.3} -> {:.3} ({:+.3})\n",
                x["episode"].as_str().unwrap_or(""),
                x["a"].as_f64().unwrap_or(0.0),
                x["b"].as_f64().unwrap_or(0.0),
                x["delta"].as_f64().unwrap_or(0.0)
            ));
        }
    }
    for (k, label) in [("only_in_a", "only in A"), ("only_in_b", "only in B")] {
        let v = c[k].as_array().cloned().unwrap_or_default();
        if !v.is_empty() {
            out.push_str(&format!(
                "\n{label} ({}): {}\n",
                v.len(),
                v.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(", ")
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A result line of a chain family: `passed[i]` is the verdict of node `p{i+1}`.
    fn result(family: &str, passed: &[bool], infrastructure: bool) -> Value {
        let mut nodes = vec![json!({"path": "", "verdict": if passed.iter().all(|p| *p) { "passed" } else { "failed" }})];
        for (i, p) in passed.iter().enumerate() {
            nodes.push(json!({"path": format!("p{}", i + 1), "verdict": if *p { "passed" } else { "failed" }}));
        }
        json!({"family": family, "success": !infrastructure && passed.iter().all(|p| *p), "infrastructure": infrastructure,
            "grade": {"nodes": nodes}})
    }

    fn run(results: Vec<Value>) -> Run {
        Run {
            dir: PathBuf::from("run"),
            manifest: json!({}),
            results,
            summary: json!({}),
        }
    }

    #[test]
    fn horizon_gives_success_by_length_accuracy_by_step_and_the_length_below_half() {
        let r = run(vec![
            result("horizon_mrn_2", &[true, true], false),
            result("horizon_mrn_2", &[true, false], false),
            result("horizon_mrn_4", &[true, true, true, true], false),
            result("horizon_mrn_4", &[true, false, false, false], false),
            result("horizon_mrn_4", &[false, false, false, false], false),
            // not scored: left out
            result("horizon_mrn_4", &[false, false, false, false], true),
            // not a chain (no p nodes), and a chain family with one length only
            json!({"family": "mab_k_replete", "success": true, "grade": {"nodes": [{"path": "", "verdict": "passed"}]}}),
            result("other_3", &[true, true, true], false),
        ]);
        let h = horizon(&r);
        assert_eq!(h.as_object().unwrap().keys().collect::<Vec<_>>(), vec!["horizon_mrn"]);
        let g = &h["horizon_mrn"];
        assert_eq!(
            g["lengths"],
            json!([{"length": 2, "episodes": 2, "success": 0.5}, {"length": 4, "episodes": 3, "success": 0.3333}])
        );
        // step 1: 4 of 5 episodes passed it; step 2: 2 of 5; steps 3 and 4 exist in the 3 four-step episodes only
        let acc: Vec<(u64, u64, f64)> = g["steps"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| {
                (
                    s["step"].as_u64().unwrap(),
                    s["episodes"].as_u64().unwrap(),
                    s["accuracy"].as_f64().unwrap(),
                )
            })
            .collect();
        assert_eq!(acc, vec![(1, 5, 0.8), (2, 5, 0.4), (3, 3, 0.3333), (4, 3, 0.3333)]);
        // 50% at length 2 is not below half; length 4 is
        assert_eq!(g["horizon"], 4);
        let text = horizon_text(&h);
        assert!(text.contains("horizon horizon_mrn: success falls below 50% at length 4"), "{text}");
        assert!(text.contains("1 80%, 2 40%, 3 33%, 4 33%"), "{text}");
    }

    #[test]
    fn no_horizon_when_every_length_succeeds_or_there_are_no_chains() {
        let ok = run(vec![
            result("horizon_mrn_2", &[true, true], false),
            result("horizon_mrn_4", &[true; 4], false),
        ]);
        assert_eq!(horizon(&ok)["horizon_mrn"]["horizon"], Value::Null);
        assert!(horizon_text(&horizon(&ok)).contains("never"));
        let none = run(vec![json!({"family": "mab_k_replete", "success": true, "grade": {"nodes": []}})]);
        assert_eq!(horizon(&none), json!({}));
        assert_eq!(horizon_text(&horizon(&none)), "");
    }
}
