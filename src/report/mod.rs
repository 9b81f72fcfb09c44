//! Run reports: load a run directory (manifest, results, summary; trajectories on demand),
//! render its summary as text, compare two runs, and write the static HTML report
//! ([`html`]). Works on the run directory's JSON as written, so it reads runs of any agent.

pub mod html;

use crate::trajectory::file::{TrajectoryFile, read};
use anyhow::{Context, bail};
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
    /// `summary.json` (Null when the run has none yet).
    pub summary: Value,
}

impl Run {
    /// Load a run directory; errors name the file and what is wrong.
    pub fn load(dir: &Path) -> anyhow::Result<Run> {
        if !dir.is_dir() {
            bail!("{}: no such run directory", dir.display());
        }
        let manifest: Value = serde_json::from_str(
            &std::fs::read_to_string(dir.join("manifest.json"))
                .with_context(|| format!("{} is not a run directory (no manifest.json)", dir.display()))?,
        )
        .with_context(|| format!("{}/manifest.json", dir.display()))?;
        let text = std::fs::read_to_string(dir.join("results.jsonl")).unwrap_or_default();
        let mut results = Vec::new();
        for (i, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            match serde_json::from_str::<Value>(line) {
                Ok(v) => results.push(v),
                // a kill can tear the last line; anything else is an error
                Err(_) if i + 1 == text.lines().count() => {}
                Err(e) => bail!("{}/results.jsonl line {}: {e}", dir.display(), i + 1),
            }
        }
        let summary = std::fs::read_to_string(dir.join("summary.json"))
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or(Value::Null);
        Ok(Run {
            dir: dir.to_path_buf(),
            manifest,
            results,
            summary,
        })
    }

    /// An episode's trajectory file.
    pub fn trajectory(&self, instance: &str, trial: u64) -> Result<TrajectoryFile, String> {
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
        "episodes {} (scored {}, infrastructure failures {}), instances {}\nsuccess   {}\nprogress  {}\n",
        s["episodes"],
        s["scored"],
        s["infrastructure_failures"],
        s["instances"],
        pct(&s["success"]),
        pct(&s["progress"])
    );
    if let Some(p) = s["pass_k"].as_object() {
        for (k, v) in p {
            out.push_str(&format!("{k:<9} {}\n", pct(v)));
        }
    }
    out.push_str("\nfamily                          episodes  success                 progress\n");
    if let Some(f) = s["families"].as_object() {
        for (name, v) in f {
            out.push_str(&format!(
                "{name:<31} {:>8}  {:<23} {:.3}\n",
                v["episodes"].as_u64().unwrap_or(0),
                pct(&v["success"]),
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
    let m = &manifest["config"]["model"];
    if manifest["config"]["agent"] != "model" || m.is_null() {
        return None;
    }
    m["model"].as_str().map(|s| s.to_string()).or_else(|| {
        m["model_path"].as_str().map(|p| {
            Path::new(p)
                .file_name()
                .map(|f| f.to_string_lossy().into_owned())
                .unwrap_or_default()
        })
    })
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
