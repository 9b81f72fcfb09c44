//! Run statistics: pass^k (the unbiased estimator of tau-bench), bootstrap confidence
//! intervals, and the run summary (`summary.json`): success, progress, pass^k, per family,
//! failure classes, end reasons, harness failures, tokens and latency.

use crate::rundir::{ResultLine, trajectory_path};
use emrgym_agent::harness::{MAX_HARNESS_FAILURE_RATE, publishable};
use emrgym_core::splitmix64;
use emrgym_scenario::trajectory::{self};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::Path;

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
