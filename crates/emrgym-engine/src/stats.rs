//! Run statistics: pass^k (the unbiased estimator of tau-bench), bootstrap confidence
//! intervals, and the run summary (`summary.json`): success, progress, pass^k, per family,
//! failure classes, end reasons, harness failures, tokens and latency.

use crate::rundir::{ResultLine, trajectory_path, write_atomic};
use anyhow::Context;
use emrgym_agent::harness::{MAX_HARNESS_FAILURE_RATE, publishable};
use emrgym_core::splitmix64;
use emrgym_scenario::trajectory::{self};
use serde::{Deserialize, Serialize};
use serde_json::Value;
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

/// A statistic (a mean, a share, a difference) with its bootstrap 95% interval over `n` items.
/// Held at full precision, so that a table rounds it once (9 of 44 is 20.5%, not the 20.4%
/// of 0.2045 rounded again); written with 4 decimals, as every figure of a summary is.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Estimate {
    /// The mean (written with 4 decimals).
    #[serde(serialize_with = "ser_round4")]
    pub mean: f64,
    /// The 2.5th and 97.5th percentiles of 2,000 bootstrap means (written with 4 decimals).
    #[serde(serialize_with = "ser_round4_pair")]
    pub ci95: [f64; 2],
    /// Items.
    pub n: usize,
}

impl Estimate {
    /// The estimate as a summary holds it: 4 decimals, so that it reads back as written.
    pub fn rounded(self) -> Self {
        Estimate {
            mean: round4(self.mean),
            ci95: [round4(self.ci95[0]), round4(self.ci95[1])],
            n: self.n,
        }
    }
}

/// Bootstrap resamples per interval.
pub const RESAMPLES: usize = 2000;

/// A statistic of `n` items with its percentile bootstrap 95% interval: [`RESAMPLES`]
/// resamples of `n` indices drawn with replacement from a splitmix64 stream seeded with
/// `seed ^ 0xB007`; `stat` computes the statistic of the items at the given indices (a mean,
/// a ratio of sums, a paired difference). None for no items.
pub fn estimate(n: usize, seed: u64, stat: impl Fn(&[usize]) -> f64) -> Option<Estimate> {
    if n == 0 {
        return None;
    }
    let all: Vec<usize> = (0..n).collect();
    let mean = stat(&all);
    let mut state = seed ^ 0xB007;
    let mut idx = vec![0usize; n];
    let mut stats: Vec<f64> = (0..RESAMPLES)
        .map(|_| {
            for slot in idx.iter_mut() {
                state = splitmix64(state);
                *slot = (state % n as u64) as usize;
            }
            stat(&idx)
        })
        .collect();
    stats.sort_by(|a, b| a.total_cmp(b));
    let lo = stats[(0.025 * RESAMPLES as f64) as usize];
    let hi = stats[((0.975 * RESAMPLES as f64) as usize).min(RESAMPLES - 1)];
    Some(Estimate { mean, ci95: [lo, hi], n })
}

/// Mean with a bootstrap 95% interval over items ([`estimate`]); none when there are no
/// items.
pub fn bootstrap_mean(values: &[f64], seed: u64) -> Option<Estimate> {
    estimate(values.len(), seed, |idx| {
        idx.iter().map(|&i| values[i]).sum::<f64>() / idx.len() as f64
    })
}

/// [`bootstrap_mean`] as a summary holds it ([`Estimate::rounded`]).
fn summary_mean(values: &[f64], seed: u64) -> Option<Estimate> {
    bootstrap_mean(values, seed).map(Estimate::rounded)
}

/// Round to 4 decimals, as every figure of a summary is.
pub fn round4(x: f64) -> f64 {
    (x * 1e4).round() / 1e4
}

/// Write a figure with 4 decimals ([`round4`]).
pub fn ser_round4<S: serde::Serializer>(x: &f64, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(round4(*x))
}

fn ser_round4_pair<S: serde::Serializer>(x: &[f64; 2], s: S) -> Result<S::Ok, S::Error> {
    [round4(x[0]), round4(x[1])].serialize(s)
}

/// Scored episodes that failed at a limit of the harness (docs/agent.md, "Harness failures").
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HarnessFailures {
    /// Episodes.
    pub episodes: usize,
    /// Share of scored episodes (none when nothing was scored).
    pub rate: Option<f64>,
    /// The rate above which a run is kept out of a results table.
    pub threshold: f64,
    /// Under the threshold.
    pub publishable: bool,
    /// Episodes by limit.
    pub by_limit: BTreeMap<String, usize>,
}

/// One family's figures.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FamilySummary {
    /// Scored episodes.
    pub episodes: usize,
    /// Success rate.
    pub success: Option<Estimate>,
    /// Mean progress (4 decimals).
    pub progress: f64,
    /// Scored episodes that failed at a harness limit.
    pub harness_failures: usize,
}

/// Tokens and turns per scored episode (model agents).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tokens {
    /// Prompt tokens.
    pub prompt_per_episode: f64,
    /// Completion tokens.
    pub completion_per_episode: f64,
    /// Model turns.
    pub turns_per_episode: f64,
}

/// Wall time per model turn.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Latency {
    /// Turns measured.
    pub turns: usize,
    /// Mean.
    pub mean_ms: u64,
    /// Median.
    pub p50_ms: u64,
    /// 95th percentile.
    pub p95_ms: u64,
}

/// `summary.json`: a run's figures.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Summary {
    /// Episodes recorded.
    pub episodes: usize,
    /// Episodes scored (all but infrastructure failures).
    pub scored: usize,
    /// Infrastructure failures: reported apart, not scored.
    pub infrastructure_failures: usize,
    /// Distinct instances scored.
    pub instances: usize,
    /// Trials per instance.
    pub trials: u32,
    /// Success rate.
    pub success: Option<Estimate>,
    /// Harness failures.
    pub harness_failures: HarnessFailures,
    /// Mean progress.
    pub progress: Option<Estimate>,
    /// pass^k for k = 1..trials (keys `pass^k`, in order of k).
    #[serde(with = "pass_k_map")]
    pub pass_k: Vec<(u32, Option<Estimate>)>,
    /// Per family.
    pub families: BTreeMap<String, FamilySummary>,
    /// Episodes per failure class.
    pub failure_classes: BTreeMap<String, usize>,
    /// Episodes per end reason (all episodes).
    pub end_reasons: BTreeMap<String, usize>,
    /// Tokens (none for model-free agents).
    pub tokens: Option<Tokens>,
    /// Cost (not computed: no price list is kept).
    pub cost: Option<f64>,
    /// Model-turn latency (none for model-free agents, and in a summary of result lines
    /// alone).
    #[serde(default)]
    pub latency: Option<Latency>,
}

impl Summary {
    /// Read `dir/summary.json`; the error names the file.
    pub fn read(dir: &Path) -> anyhow::Result<Summary> {
        let path = dir.join("summary.json");
        let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
        serde_json::from_str(&text).with_context(|| format!("{}: not a run summary", path.display()))
    }

    /// Write `dir/summary.json`, whole or not at all.
    pub fn write(&self, dir: &Path) -> anyhow::Result<()> {
        write_atomic(
            &dir.join("summary.json"),
            format!("{}\n", serde_json::to_string_pretty(self)?).as_bytes(),
        )
    }

    /// The summary as JSON (for templates and the text report).
    pub fn to_json(&self) -> anyhow::Result<Value> {
        serde_json::to_value(self).context("serialising the run summary")
    }
}

/// `pass_k` as a JSON object `{"pass^1": ..., "pass^2": ...}` in order of k.
mod pass_k_map {
    use super::Estimate;
    use serde::de::Error;
    use serde::ser::SerializeMap;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[(u32, Option<Estimate>)], s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(v.len()))?;
        for (k, e) in v {
            m.serialize_entry(&format!("pass^{k}"), e)?;
        }
        m.end()
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<(u32, Option<Estimate>)>, D::Error> {
        let m = serde_json::Map::<String, serde_json::Value>::deserialize(d)?;
        let mut out = Vec::new();
        for (k, v) in m {
            let n: u32 = k
                .strip_prefix("pass^")
                .and_then(|n| n.parse().ok())
                .ok_or_else(|| D::Error::custom(format!("pass_k key '{k}' is not pass^N")))?;
            out.push((n, serde_json::from_value(v).map_err(D::Error::custom)?));
        }
        out.sort_by_key(|(k, _)| *k);
        Ok(out)
    }
}

/// The name a unit enum has on the wire (`"wrong_value"`, `"finished"`): its serde form.
pub(crate) fn wire_name(v: impl Serialize) -> String {
    match serde_json::to_value(v) {
        Ok(Value::String(s)) => s,
        // a unit enum always serialises to a string; anything else is shown, never dropped
        other => format!("{other:?}"),
    }
}

/// The run summary from result lines.
pub fn summarize(results: &[ResultLine], trials: u32, seed: u64) -> Summary {
    let scored: Vec<&ResultLine> = results.iter().filter(|r| !r.infrastructure).collect();
    let mut by_inst: BTreeMap<&str, Vec<&ResultLine>> = BTreeMap::new();
    for r in &scored {
        by_inst.entry(r.instance.as_str()).or_default().push(r);
    }
    let success: Vec<f64> = scored.iter().map(|r| if r.success { 1.0 } else { 0.0 }).collect();
    let progress: Vec<f64> = scored.iter().map(|r| r.progress).collect();
    let pass_k = (1..=trials.max(1))
        .map(|k| {
            let per: Vec<f64> = by_inst
                .values()
                .filter(|v| v.len() as u32 >= k)
                .map(|v| pass_hat_k(v.len() as u64, v.iter().filter(|r| r.success).count() as u64, u64::from(k)))
                .collect();
            (k, summary_mean(&per, seed.wrapping_add(u64::from(k))))
        })
        .collect();
    let mut by_family: BTreeMap<&str, Vec<&ResultLine>> = BTreeMap::new();
    for r in &scored {
        by_family.entry(r.family.as_str()).or_default().push(r);
    }
    let families = by_family
        .iter()
        .map(|(f, rs)| {
            let s: Vec<f64> = rs.iter().map(|r| if r.success { 1.0 } else { 0.0 }).collect();
            let p: f64 = rs.iter().map(|r| r.progress).sum::<f64>() / rs.len() as f64;
            (
                f.to_string(),
                FamilySummary {
                    episodes: rs.len(),
                    success: summary_mean(&s, seed),
                    progress: round4(p),
                    harness_failures: rs.iter().filter(|r| r.harness_failure()).count(),
                },
            )
        })
        .collect();
    let mut failure_classes: BTreeMap<String, usize> = BTreeMap::new();
    for r in &scored {
        for c in r.grade.iter().flat_map(|g| &g.classes) {
            *failure_classes.entry(wire_name(c)).or_default() += 1;
        }
    }
    let mut end_reasons: BTreeMap<String, usize> = BTreeMap::new();
    for r in results {
        *end_reasons.entry(wire_name(r.end)).or_default() += 1;
    }
    let turns: usize = scored.iter().map(|r| r.turns).sum();
    let mut by_limit: BTreeMap<String, usize> = BTreeMap::new();
    for r in scored.iter().filter(|r| r.harness_failure()) {
        if let Some(l) = r.harness_limit {
            *by_limit.entry(l.name().to_string()).or_default() += 1;
        }
    }
    let harness: usize = by_limit.values().sum();
    let per_episode = |x: f64| round4(x / scored.len().max(1) as f64);
    Summary {
        episodes: results.len(),
        scored: scored.len(),
        infrastructure_failures: results.len() - scored.len(),
        instances: by_inst.len(),
        trials,
        success: summary_mean(&success, seed),
        harness_failures: HarnessFailures {
            episodes: harness,
            rate: (!scored.is_empty()).then(|| round4(harness as f64 / scored.len() as f64)),
            threshold: MAX_HARNESS_FAILURE_RATE,
            publishable: publishable(harness, scored.len()),
            by_limit,
        },
        progress: summary_mean(&progress, seed),
        pass_k,
        families,
        failure_classes,
        end_reasons,
        tokens: (turns > 0).then(|| Tokens {
            prompt_per_episode: per_episode(scored.iter().map(|r| r.prompt_tokens as f64).sum()),
            completion_per_episode: per_episode(scored.iter().map(|r| r.completion_tokens as f64).sum()),
            turns_per_episode: per_episode(turns as f64),
        }),
        cost: None,
        latency: None,
    }
}

/// A run directory's summary: [`summarize`] plus the model-turn latency from its trajectories.
pub fn run_summary(dir: &Path, results: &[ResultLine], trials: u32, seed: u64) -> Summary {
    let mut summary = summarize(results, trials, seed);
    summary.latency = latency(dir, results);
    summary
}

/// Wall time per model turn over the run's trajectories (null for model-free agents).
/// Replies are not streamed, so the time to the first token is not observable here; the
/// in-process model's decode speed is measured by `emrgym bench --llama`.
fn latency(dir: &Path, results: &[ResultLine]) -> Option<Latency> {
    let mut ms: Vec<u64> = Vec::new();
    for r in results.iter().filter(|r| r.turns > 0) {
        let Ok(f) = trajectory::file::read(&trajectory_path(dir, &r.instance, r.trial)) else {
            continue;
        };
        ms.extend(f.trajectory.turns.iter().map(|t| t.latency_ms));
    }
    if ms.is_empty() {
        return None;
    }
    ms.sort_unstable();
    let pct = |p: f64| ms[((ms.len() - 1) as f64 * p).round() as usize];
    Some(Latency {
        turns: ms.len(),
        mean_ms: ms.iter().sum::<u64>() / ms.len() as u64,
        p50_ms: pct(0.5),
        p95_ms: pct(0.95),
    })
}

#[cfg(test)]
mod tests {
    use super::{Summary, summarize};
    use crate::rundir::ResultLine;
    use emrgym_scenario::trajectory::EndReason;

    fn line(instance: &str, trial: u32, success: bool) -> ResultLine {
        ResultLine {
            instance: instance.into(),
            family: "fam".into(),
            trial,
            end: EndReason::Finished,
            infrastructure: false,
            grade: None,
            success,
            progress: if success { 1.0 } else { 0.5 },
            steps: 2,
            turns: 0,
            prompt_tokens: 0,
            completion_tokens: 0,
            step_limit: 4,
            step_limit_source: "instance".into(),
            harness_limit: None,
            host: None,
        }
    }

    #[test]
    fn the_summary_reads_back_as_written_with_pass_k_in_order_of_k() {
        // 12 trials of two instances: one always succeeds, one on odd trials
        let lines: Vec<ResultLine> = (0..12).flat_map(|t| [line("a-1", t, true), line("b-1", t, t % 2 == 1)]).collect();
        let s = summarize(&lines, 12, 7);
        assert_eq!((s.episodes, s.scored, s.instances), (24, 24, 2));
        assert_eq!(s.success.unwrap().mean, 0.75);
        let ks: Vec<u32> = s.pass_k.iter().map(|(k, _)| *k).collect();
        assert_eq!(ks, (1..=12).collect::<Vec<_>>());
        // pass^12: instance a always, b never all 12 -> 0.5
        assert_eq!(s.pass_k[11].1.unwrap().mean, 0.5);
        let json = s.to_json().unwrap();
        let keys: Vec<&String> = json["pass_k"].as_object().unwrap().keys().collect();
        assert_eq!(
            (keys[0].as_str(), keys[9].as_str(), keys[11].as_str()),
            ("pass^1", "pass^10", "pass^12")
        );
        let dir = tempfile::tempdir().unwrap();
        s.write(dir.path()).unwrap();
        assert_eq!(Summary::read(dir.path()).unwrap(), s);
        std::fs::write(dir.path().join("summary.json"), r#"{"episodes": 1}"#).unwrap();
        let e = format!("{:#}", Summary::read(dir.path()).unwrap_err());
        assert!(e.contains("summary.json: not a run summary"), "{e}");
    }
}
