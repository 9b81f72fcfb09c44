//! `emrgym bench`: fork time (small and MedAgentBench-scale cohorts), in-process search
//! latency, cold start and memory of `emrgym serve`, and HTTP search throughput and
//! latency, optionally side by side with the Python FHIR server sekmet-fhir on the same
//! data and queries. Results are printed as a markdown table and written as JSON.

mod model;
mod scenarios;
mod server;
mod store;

use anyhow::{Context, bail};
use emrgym_core::splitmix64;
use emrgym_fhir::clock::{Clock, parse_instant};
use emrgym_fhir::load;
use emrgym_fhir::search::SearchQuery;
use emrgym_fhir::store::{CohortBuilder, Sandbox, SandboxOptions, parse_query_string};
use model::*;
use scenarios::*;
use serde_json::{Value, json};
use server::*;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use store::*;

/// Flags of `emrgym bench`.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// Patients in the synthetic cohort.
    #[arg(long, default_value_t = 100)]
    pub patients: usize,
    /// Observations per patient (100 x 7,850 = 785,000: MedAgentBench's scale).
    #[arg(long, default_value_t = 7850)]
    pub obs_per_patient: usize,
    /// Where the synthetic NDJSON cohort (and the sekmet database) are written and reused.
    #[arg(long, default_value = "target/bench-data")]
    pub data: PathBuf,
    /// Seconds of HTTP load per server.
    #[arg(long, default_value_t = 10)]
    pub seconds: u64,
    /// Concurrent HTTP clients.
    #[arg(long, default_value_t = 4)]
    pub concurrency: usize,
    /// Also measure sekmet-fhir (PyPI `sekmet-fhir`) on the same data and queries.
    #[arg(long)]
    pub sekmet: bool,
    /// Give up on one HTTP request after this many seconds (counted as a timeout).
    #[arg(long, default_value_t = 60)]
    pub request_timeout: u64,
    /// Write the results as JSON here.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Measure only the tool catalogue's per-call cost (direct call vs registry dispatch), on the demo cohort.
    #[arg(long)]
    pub tools: bool,
    /// Measure only scenario planning, oracle episodes and grading over this scenario directory.
    #[arg(long)]
    pub scenarios: Option<PathBuf>,
    /// Measure only the agent loop against an in-process OpenAI-compatible stub with this latency (ms).
    #[arg(long)]
    pub agent_loop: Option<u64>,
    /// Measure only the in-process model (a local model name or a .gguf): decode speed in the
    /// loop vs a bare decode, and tokens prefilled per turn with KV-cache reuse.
    #[arg(long)]
    pub llama: Option<String>,
    /// Threads for --llama.
    #[arg(long, default_value_t = 1)]
    pub threads: i32,
    /// Measure only whole episodes of the in-process model (a local model name or a .gguf)
    /// under several configurations in one process, the same episodes in the same order for
    /// each: episodes per hour, prompt tokens evaluated, and whether greedy decoding gives the
    /// same calls and grades (see `--variants`, `--bench-suite`, `--episodes`).
    #[arg(long)]
    pub llama_runs: Option<String>,
    /// Configurations for --llama-runs, comma-separated `CACHE:THREADS[:PARALLEL]`, CACHE
    /// being `lcp` (reuse only the common prefix with the previous prompt) or `prefix` (plus
    /// the per-run cache of shared prefixes), PARALLEL the episodes decoded together (one
    /// sequence each; default 1).
    #[arg(long, default_value = "lcp:1,prefix:1,prefix:2")]
    pub variants: String,
    /// Named suite the --llama-runs episodes are taken from (evenly spaced over its ids).
    #[arg(long, default_value = "quick")]
    pub bench_suite: String,
    /// Episodes per configuration for --llama-runs.
    #[arg(long, default_value_t = 6)]
    pub episodes: usize,
    /// Turn cap per episode for --llama-runs (0: the instance's own limits).
    #[arg(long, default_value_t = 0)]
    pub max_turns: u32,
    /// Measure only the cohort generator at MedAgentBench's density (`--patients`): generation
    /// time and `emrgym serve` cold start on it, against the flat synthetic cohort of the same
    /// size.
    #[arg(long)]
    pub fixtures: bool,
}

pub(super) fn tempfile_dir() -> anyhow::Result<PathBuf> {
    let d = std::env::temp_dir().join(format!("emrgym-bench-{}", std::process::id()));
    std::fs::create_dir_all(&d)?;
    Ok(d)
}

/// Median nanoseconds per call of `f` over 7 batches of `n` calls.
pub(super) fn per_call_ns(n: usize, mut f: impl FnMut()) -> f64 {
    let mut batches: Vec<f64> = (0..7)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..n {
                f();
            }
            t.elapsed().as_nanos() as f64 / n as f64
        })
        .collect();
    batches.sort_by(|a, b| a.total_cmp(b));
    batches[3]
}

pub(super) fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

/// Run the benchmark.
pub fn run(a: BenchArgs) -> anyhow::Result<()> {
    if a.patients == 0 || a.obs_per_patient == 0 {
        bail!(
            "--patients and --obs-per-patient must be positive (got {} and {})",
            a.patients,
            a.obs_per_patient
        );
    }
    if let Some(model) = &a.llama_runs {
        let (table, json) = llama_runs_bench(model, &a)?;
        super::emit(&table)?;
        if let Some(p) = &a.out {
            std::fs::write(p, format!("{}\n", serde_json::to_string_pretty(&json)?))?;
        }
        return Ok(());
    }
    if let Some(model) = &a.llama {
        super::emit("| in-process model | value |\n|---|---|\n")?;
        for (k, v) in llama_bench(model, a.threads)? {
            super::emit(&format!("| {k} | {v} |\n"))?;
        }
        return Ok(());
    }
    if let Some(latency) = a.agent_loop {
        super::emit("| agent loop | value |\n|---|---|\n")?;
        for (k, v) in agent_loop_bench(latency)? {
            super::emit(&format!("| {k} | {v} |\n"))?;
        }
        return Ok(());
    }
    if a.fixtures {
        super::emit("| cohort generator | value |\n|---|---|\n")?;
        for (k, v) in fixtures_bench(&a)? {
            super::emit(&format!("| {k} | {v} |\n"))?;
        }
        return Ok(());
    }
    if let Some(dir) = &a.scenarios {
        super::emit("| scenarios | value |\n|---|---|\n")?;
        for (k, v) in scenario_bench(dir)? {
            super::emit(&format!("| {k} | {v} |\n"))?;
        }
        return Ok(());
    }
    if a.tools {
        super::emit("| tool call | direct / registry (ratio) |\n|---|---|\n")?;
        for (k, v) in tool_bench()? {
            super::emit(&format!("| {k} | {v} |\n"))?;
        }
        return Ok(());
    }
    let mut results = serde_json::Map::new();
    eprintln!("writing the synthetic cohort to {} ...", a.data.display());
    let total = synth(&a.data, a.patients, a.obs_per_patient)?;
    results.insert("resources".into(), json!(total));

    // fork at 10 resources
    let clock = Clock::fixed(parse_instant("2023-11-13T10:15:00Z").map_err(anyhow::Error::msg)?);
    let mut small = CohortBuilder::new("small");
    small.add(json!({"resourceType":"Patient","id":"p"}))?;
    for i in 0..9 {
        small.add(json!({"resourceType":"Observation","id":format!("o{i}"),"status":"final","code":{"text":"K"},"subject":{"reference":"Patient/p"}}))?;
    }
    let small = small.build(&clock);
    let fork_small_ns = time_forks(&small, 1_000_000);

    // cold start and RSS of `emrgym serve` on the large cohort (a separate process)
    eprintln!("cold start of emrgym serve on {total} resources ...");
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    // three cold starts (first-touch memory costs vary on a VM): report the median; the last
    // server stays up for the HTTP runs
    let mut colds = Vec::new();
    for _ in 0..2 {
        let (s, secs) = start_emrgym(&a.data)?;
        colds.push(secs);
        drop(s);
    }
    let t_spawn = Instant::now();
    let (server, cold_last) = start_emrgym(&a.data)?;
    colds.push(cold_last);
    let cold_runs = colds.clone();
    colds.sort_by(|x, y| x.total_cmp(y));
    let cold_s = colds[1];
    let (rss, hwm) = rss_kib(server.child.id());
    let (first_query_s, warm_s) = rt.block_on(async {
        let client = reqwest::Client::new();
        let r = client.get(format!("{}/{}", server.base, query(0, a.patients))).send().await?;
        let ok = r.status().is_success();
        let _ = r.bytes().await;
        if !ok {
            bail!("first query failed");
        }
        let first = t_spawn.elapsed().as_secs_f64();
        let health = format!("{}/health", server.base.trim_end_matches("/fhir"));
        loop {
            let body = client.get(&health).send().await?.bytes().await?;
            if contains(&body, b"\"indexesWarm\":true") {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok::<_, anyhow::Error>((first, t_spawn.elapsed().as_secs_f64()))
    })?;
    let (rss_warm, hwm_warm) = rss_kib(server.child.id());

    // in-process: load, fork, search
    let t = Instant::now();
    let big = load::load(a.data.to_str().context("data path is not UTF-8")?)?.build(&clock);
    let inproc_load_s = t.elapsed().as_secs_f64();
    let t = Instant::now();
    big.warm();
    let inproc_warm_s = t.elapsed().as_secs_f64();
    let fork_large_ns = time_forks(&big, 1_000_000);
    let sb = Sandbox::fork(
        &big,
        SandboxOptions {
            clock: clock.clone(),
            ..Default::default()
        },
    );
    let mut lat = Vec::new();
    let t = Instant::now();
    let n_q = 5000;
    for i in 0..n_q {
        let q = query(i, a.patients);
        let params = parse_query_string(q.split_once('?').map(|x| x.1).unwrap_or_default());
        let t1 = Instant::now();
        let sq = SearchQuery::parse("Observation", &params, big.registry(), true)?;
        let r = sb.search(&sq)?;
        std::hint::black_box(&r);
        lat.push(t1.elapsed().as_secs_f64() * 1000.0);
    }
    let inproc_qps = n_q as f64 / t.elapsed().as_secs_f64();
    lat.sort_by(|x, y| x.total_cmp(y));
    drop(sb);
    drop(big);

    eprintln!("HTTP load on emrgym ({} s, {} clients) ...", a.seconds, a.concurrency);
    let ours = load_server(&rt, &server.base, &a)?;
    drop(server);

    let mut rows = vec![
        ("resources in cohort".to_string(), format!("{total}")),
        ("fork, 10-resource cohort".into(), format!("{:.0} ns", fork_small_ns)),
        (format!("fork, {total}-resource cohort"), format!("{:.0} ns", fork_large_ns)),
        ("fork ratio large/small".into(), format!("{:.2}x", fork_large_ns / fork_small_ns)),
        (
            "cold start: `emrgym serve` to listening (median of 3)".into(),
            format!(
                "{cold_s:.2} s (runs: {})",
                cold_runs.iter().map(|c| format!("{c:.2}")).collect::<Vec<_>>().join(", ")
            ),
        ),
        ("cold start: to first search answered".into(), format!("{first_query_s:.2} s")),
        ("cold start: to indexes and sort columns warm".into(), format!("{warm_s:.2} s")),
        (
            "RSS when listening (peak)".into(),
            format!("{} MiB ({} MiB)", rss / 1024, hwm / 1024),
        ),
        (
            "RSS when warm (peak)".into(),
            format!("{} MiB ({} MiB)", rss_warm / 1024, hwm_warm / 1024),
        ),
        (
            "in-process load / warm".into(),
            format!("{inproc_load_s:.2} s / {inproc_warm_s:.2} s"),
        ),
        (
            "in-process search p50 / p99".into(),
            format!("{:.3} / {:.3} ms", percentile(&lat, 0.5), percentile(&lat, 0.99)),
        ),
        ("in-process search throughput (1 thread)".into(), format!("{inproc_qps:.0} /s")),
        (
            "HTTP search throughput".into(),
            format!(
                "{:.0} /s ({} answers, {} errors, {} timeouts)",
                ours.requests as f64 / ours.seconds,
                ours.requests,
                ours.errors,
                ours.timeouts
            ),
        ),
        (
            "HTTP search p50 / p99".into(),
            format!("{:.2} / {:.2} ms", ours.p50_ms, ours.p99_ms),
        ),
    ];
    results.insert("fork_small_ns".into(), json!(fork_small_ns));
    results.insert("fork_large_ns".into(), json!(fork_large_ns));
    results.insert("cold_start_s".into(), json!(cold_s));
    results.insert("cold_start_runs_s".into(), json!(cold_runs));
    results.insert("first_query_s".into(), json!(first_query_s));
    results.insert("warm_s".into(), json!(warm_s));
    results.insert("rss_kib".into(), json!(rss));
    results.insert("rss_peak_kib".into(), json!(hwm));
    results.insert("rss_warm_kib".into(), json!(rss_warm));
    results.insert("rss_warm_peak_kib".into(), json!(hwm_warm));
    results.insert("inprocess_load_s".into(), json!(inproc_load_s));
    results.insert("inprocess_warm_s".into(), json!(inproc_warm_s));
    results.insert("inprocess_search_p50_ms".into(), json!(percentile(&lat, 0.5)));
    results.insert("inprocess_search_p99_ms".into(), json!(percentile(&lat, 0.99)));
    results.insert("inprocess_search_qps".into(), json!(inproc_qps));
    results.insert("http".into(), json!({"requests": ours.requests, "errors": ours.errors, "timeouts": ours.timeouts, "seconds": ours.seconds, "p50_ms": ours.p50_ms, "p99_ms": ours.p99_ms}));

    if a.sekmet {
        let (sk, load_s) = start_sekmet(&a.data)?;
        eprintln!("HTTP load on sekmet ({} s, {} clients) ...", a.seconds, a.concurrency);
        let theirs = load_server(&rt, &sk.base, &a)?;
        drop(sk);
        let our_rate = ours.requests as f64 / ours.seconds;
        // with no answer at all, the rate is below one answer per measured window
        let (their_rate, bound) = if theirs.requests == 0 {
            (1.0 / theirs.seconds, "more than ")
        } else {
            (theirs.requests as f64 / theirs.seconds, "")
        };
        let ratio = our_rate / their_rate;
        rows.push(("sekmet: load into its store".into(), format!("{load_s:.0} s")));
        rows.push((
            "sekmet: HTTP search throughput".into(),
            format!(
                "{:.2} /s ({} answers, {} errors, {} timeouts after {} s, in {:.0} s)",
                theirs.requests as f64 / theirs.seconds,
                theirs.requests,
                theirs.errors,
                theirs.timeouts,
                a.request_timeout,
                theirs.seconds
            ),
        ));
        rows.push((
            "sekmet: HTTP search p50 / p99".into(),
            if theirs.requests == 0 {
                "no answer".to_string()
            } else {
                format!("{:.1} / {:.1} ms", theirs.p50_ms, theirs.p99_ms)
            },
        ));
        rows.push(("throughput ratio emrgym / sekmet".into(), format!("{bound}{ratio:.0}x")));
        results.insert("sekmet".into(), json!({"load_s": load_s, "requests": theirs.requests, "errors": theirs.errors, "timeouts": theirs.timeouts, "seconds": theirs.seconds, "p50_ms": theirs.p50_ms, "p99_ms": theirs.p99_ms, "throughput_ratio": ratio}));
    }

    println!("| measure | value |\n|---|---|");
    for (k, v) in &rows {
        println!("| {k} | {v} |");
    }
    if let Some(out) = &a.out {
        std::fs::write(out, serde_json::to_string_pretty(&Value::Object(results))?)
            .with_context(|| format!("writing {}", out.display()))?;
    }
    Ok(())
}
