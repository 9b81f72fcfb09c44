//! `emrgym bench`: fork time (small and MedAgentBench-scale cohorts), in-process search
//! latency, cold start and memory of `emrgym serve`, and HTTP search throughput and
//! latency, optionally side by side with the Python FHIR server sekmet-fhir on the same
//! data and queries. Results are printed as a markdown table and written as JSON.

use anyhow::{Context, bail};
use emrgym_core::splitmix64;
use emrgym_fhir::clock::{Clock, parse_instant};
use emrgym_fhir::load;
use emrgym_fhir::search::SearchQuery;
use emrgym_fhir::store::{CohortBuilder, Sandbox, SandboxOptions, parse_query_string};
use serde_json::{Value, json};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

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
    /// Configurations for --llama-runs, comma-separated `CACHE:THREADS`, CACHE being `lcp`
    /// (reuse only the common prefix with the previous prompt) or `prefix` (plus the per-run
    /// cache of shared prefixes).
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

#[cfg(feature = "llama")]
fn llama_bench(model: &str, threads: i32) -> anyhow::Result<Vec<(String, String)>> {
    use emrgym_agent::llama::LlamaHandle;
    use emrgym_agent::model::{Backend, Briefing, Hooks, Limits, ModelConfig, run_model_episode};
    use llama_cpp_2::context::params::LlamaContextParams;
    use llama_cpp_2::llama_batch::LlamaBatch;
    use llama_cpp_2::model::params::LlamaModelParams;
    use llama_cpp_2::sampling::LlamaSampler;
    let ModelConfig::Llama(mut cfg) = emrgym_engine::backend::parse_model(model, None)? else {
        anyhow::bail!("--llama takes a local model name or a .gguf file");
    };
    cfg.threads = threads;
    if !cfg.model_path.exists()
        && let Some(k) = emrgym_engine::model::MODELS
            .iter()
            .find(|k| emrgym_engine::model::model_path(&emrgym_engine::model::default_cache(), k) == cfg.model_path)
    {
        emrgym_engine::model::fetch(k, &emrgym_engine::model::default_cache())?;
    }
    // in the loop: a few short episodes
    let handle = LlamaHandle::start(cfg.clone()).map_err(anyhow::Error::msg)?;
    let backend = Backend::Llama(handle.clone());
    let mut ws = emrgym_engine::episode::Workspace::open(Path::new("scenarios")).map_err(|e| anyhow::anyhow!(e.join("; ")))?;
    let insts: Vec<_> = ws
        .suite
        .instances()
        .map_err(anyhow::Error::msg)?
        .into_iter()
        .filter(|i| ["mab-age-001", "mab-k-005", "mab-cbg-001"].contains(&i.id.as_str()))
        .collect();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let mut turns = 0;
    let t_loop = Instant::now();
    for inst in &insts {
        let p = ws.prepare(inst).map_err(|e| anyhow::anyhow!(e.join("; ")))?;
        let sb = std::sync::Arc::new(std::sync::RwLock::new(emrgym_engine::episode::fork(&p.cohort, &p.clock, 1)));
        let mut fhir = emrgym_tools::fhir_tools::SandboxBackend::new(sb, emrgym_engine::episode::BASE);
        let b = Briefing {
            instruction: p.instance.instruction.clone(),
            context: p.instance.context.clone(),
            now: p.instance.now.clone(),
            fhir_base: emrgym_engine::episode::BASE.into(),
        };
        let limits = Limits {
            max_turns: 4,
            ..Limits::default()
        };
        let t = rt.block_on(run_model_episode(&backend, &p.registry, &mut fhir, &b, limits, Hooks::default()));
        turns += t.turns.len();
    }
    let loop_s = t_loop.elapsed().as_secs_f64();
    let timings = handle.timings();
    let generated: usize = timings.iter().map(|t| t.generated).sum();
    let decode_s: f64 = timings.iter().map(|t| t.decode_s).sum();
    let prefilled: usize = timings.iter().map(|t| t.prefilled).sum();
    let prompt: usize = timings.iter().map(|t| t.prompt).sum();
    let prefill_s: f64 = timings.iter().map(|t| t.prefill_s).sum();
    drop(backend);
    drop(handle);
    // a bare decode of the same GGUF: the first prompt, then greedy tokens without grammar
    let ggml = emrgym_agent::llama::ggml().map_err(anyhow::Error::msg)?;
    let m = llama_cpp_2::model::LlamaModel::load_from_file(ggml, &cfg.model_path, &LlamaModelParams::default())?;
    let params = LlamaContextParams::default()
        .with_n_ctx(std::num::NonZeroU32::new(cfg.n_ctx))
        .with_n_batch(512)
        .with_n_threads(threads)
        .with_n_threads_batch(threads);
    let mut ctx = m.new_context(ggml, params)?;
    // a prompt as long as the loop's average prompt, so attention costs are comparable
    let mean_prompt = prompt / timings.len().max(1);
    let filler = "Potassium is the main intracellular cation; serum levels below 3.5 mmol/L define hypokalemia. ";
    let mut text = String::from("<|im_start|>user\n");
    while m.vocab().tokenize(text.as_bytes(), false, true).len() + 40 < mean_prompt {
        text.push_str(filler);
    }
    text.push_str("Write a short clinical note about hypokalemia management.<|im_end|>\n<|im_start|>assistant\n");
    let toks = m.vocab().tokenize(text.as_bytes(), false, true);
    for start in (0..toks.len()).step_by(512) {
        let end = (start + 512).min(toks.len());
        let mut batch = LlamaBatch::new(end - start, 1);
        for (i, t) in toks[start..end].iter().enumerate() {
            batch.add(*t, (start + i) as i32, &[0], start + i + 1 == toks.len())?;
        }
        ctx.decode(&mut batch)?;
    }
    let mut sampler = LlamaSampler::greedy();
    let want = 128usize;
    let t0 = Instant::now();
    let mut n = 0usize;
    for pos in toks.len()..toks.len() + want {
        let tok = sampler.sample(&ctx, -1);
        if m.vocab().is_eog(tok) {
            break;
        }
        let mut b = LlamaBatch::new(1, 1);
        b.add(tok, pos as i32, &[0], true)?;
        ctx.decode(&mut b)?;
        n += 1;
    }
    let bare = n as f64 / t0.elapsed().as_secs_f64();
    let in_loop = generated as f64 / decode_s.max(1e-9);
    Ok(vec![
        ("model".into(), cfg.model_path.display().to_string()),
        ("threads".into(), threads.to_string()),
        (
            "episodes / turns in the loop".into(),
            format!("{} / {turns} ({loop_s:.1} s)", insts.len()),
        ),
        (
            "decode in the loop (grammar-constrained)".into(),
            format!("{in_loop:.1} tokens/s ({generated} tokens)"),
        ),
        (
            "bare decode, same GGUF, same run, same prompt length".into(),
            format!("{bare:.1} tokens/s ({n} tokens after a {}-token prompt)", toks.len()),
        ),
        ("ratio loop / bare".into(), format!("{:.2}x", in_loop / bare.max(1e-9))),
        (
            "prompt tokens evaluated (KV-cache reuse) / whole prompts".into(),
            format!(
                "{prefilled} / {prompt} ({:.1}% evaluated)",
                100.0 * prefilled as f64 / prompt.max(1) as f64
            ),
        ),
        (
            "prompt evaluation speed".into(),
            format!("{:.1} tokens/s", prefilled as f64 / prefill_s.max(1e-9)),
        ),
    ])
}

/// `--llama-runs`: the same episodes under each configuration, in one process.
#[cfg(feature = "llama")]
fn llama_runs_bench(model: &str, a: &BenchArgs) -> anyhow::Result<(String, serde_json::Value)> {
    use emrgym_agent::llama::LlamaHandle;
    use emrgym_agent::model::{Backend, ModelConfig};
    let ModelConfig::Llama(base) = emrgym_engine::backend::parse_model(model, None)? else {
        anyhow::bail!("--llama-runs takes a local model name or a .gguf file");
    };
    let mut variants = Vec::new();
    for v in a.variants.split(',') {
        let (cache, threads) = v
            .split_once(':')
            .with_context(|| format!("--variants: '{v}' must be CACHE:THREADS, e.g. prefix:1"))?;
        let prefix = match cache {
            "lcp" => false,
            "prefix" => true,
            other => bail!("--variants: cache '{other}' must be lcp or prefix"),
        };
        let threads: i32 = threads
            .parse()
            .with_context(|| format!("--variants: threads '{threads}' is not a number"))?;
        variants.push((v.to_string(), prefix, threads));
    }
    let scenarios = Path::new("scenarios");
    let mut ws = emrgym_engine::episode::Workspace::open(scenarios).map_err(|e| anyhow::anyhow!(e.join("; ")))?;
    let named = emrgym_engine::suites::load(scenarios, &a.bench_suite)?;
    let mut insts = ws.suite.instances().map_err(anyhow::Error::msg)?;
    if let Some(s) = &named {
        insts.retain(|i| s.instances.contains(&i.id));
    }
    insts.sort_by(|x, y| x.id.cmp(&y.id));
    let n = a.episodes.clamp(1, insts.len().max(1));
    let picked: Vec<_> = (0..n).filter_map(|k| insts.get(k * insts.len() / n).cloned()).collect();
    let mut prepared = Vec::new();
    for i in &picked {
        prepared.push(ws.prepare(i).map_err(|e| anyhow::anyhow!(e.join("; ")))?);
    }
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let cancel = tokio_util::sync::CancellationToken::new();
    let mut rows = Vec::new();
    let mut table = format!(
        "episodes: {} ({}), model {}\n\n| configuration | wall s | episodes/hour | ratio | prompt tokens evaluated / whole (saved) | restored from the prefix cache | success | mean progress | same calls and grades as the first |\n|---|---|---|---|---|---|---|---|---|\n",
        picked.len(),
        picked.iter().map(|i| i.id.as_str()).collect::<Vec<_>>().join(", "),
        base.model_path.display()
    );
    let mut first: Option<Vec<Value>> = None;
    let mut first_rate = 0.0;
    for (name, prefix, threads) in &variants {
        let mut cfg = base.clone();
        cfg.prefix_cache = *prefix;
        cfg.threads = *threads;
        let handle = LlamaHandle::start(cfg.clone()).map_err(anyhow::Error::msg)?;
        let backend = Backend::Llama(handle.clone());
        let mut run_cfg = emrgym_engine::run::RunConfig {
            model: Some(ModelConfig::Llama(cfg.clone())),
            ..emrgym_engine::run::RunConfig::default()
        };
        run_cfg.limits.max_turns = a.max_turns;
        let t0 = Instant::now();
        let mut episodes = Vec::new();
        for p in &prepared {
            let (traj, grade) = rt.block_on(emrgym_engine::run::one_episode(&run_cfg, p, 0, Some(&backend), &cancel));
            let calls: Vec<Value> = traj.steps.iter().map(|s| json!([s.call.name, s.call.arguments])).collect();
            eprintln!(
                "{name}: {} {:?} ({:.0} s so far)",
                p.instance.id,
                traj.end,
                t0.elapsed().as_secs_f64()
            );
            episodes.push(json!({
                "instance": p.instance.id,
                "end": traj.end,
                "calls": calls,
                "success": grade.as_ref().is_some_and(|g| g.success),
                "progress": grade.as_ref().map_or(0.0, |g| g.progress),
            }));
        }
        let wall = t0.elapsed().as_secs_f64();
        let timings = handle.timings();
        drop(backend);
        drop(handle);
        let prefilled: usize = timings.iter().map(|t| t.prefilled).sum();
        let whole: usize = timings.iter().map(|t| t.prompt).sum();
        let restored: usize = timings.iter().map(|t| t.restored).sum();
        let rate = 3600.0 * episodes.len() as f64 / wall.max(1e-9);
        if first.is_none() {
            first_rate = rate;
        }
        let same = match &first {
            None => "(baseline)".to_string(),
            Some(f) => {
                let differ: Vec<String> = f
                    .iter()
                    .zip(&episodes)
                    .filter(|(x, y)| x["calls"] != y["calls"] || x["success"] != y["success"] || x["progress"] != y["progress"])
                    .map(|(x, _)| x["instance"].as_str().unwrap_or_default().to_string())
                    .collect();
                if differ.is_empty() {
                    "yes".to_string()
                } else {
                    format!("no: {}", differ.join(", "))
                }
            }
        };
        let successes = episodes.iter().filter(|e| e["success"] == true).count();
        let progress = episodes.iter().filter_map(|e| e["progress"].as_f64()).sum::<f64>() / episodes.len().max(1) as f64;
        table.push_str(&format!(
            "| {name} | {wall:.0} | {rate:.1} | {:.2}x | {prefilled} / {whole} ({:.1}%) | {restored} | {successes}/{} | {progress:.3} | {same} |\n",
            rate / first_rate.max(1e-9),
            100.0 * (1.0 - prefilled as f64 / whole.max(1) as f64),
            episodes.len()
        ));
        rows.push(json!({
            "configuration": name, "prefix_cache": prefix, "threads": threads, "wall_s": wall,
            "episodes_per_hour": rate, "prompt_tokens_evaluated": prefilled, "prompt_tokens_whole": whole,
            "prompt_tokens_restored": restored, "turns": timings.len(), "episodes": episodes,
        }));
        if first.is_none() {
            first = Some(rows.last().and_then(|r| r["episodes"].as_array().cloned()).unwrap_or_default());
        }
    }
    Ok((table, json!({"suite": a.bench_suite, "max_turns": a.max_turns, "runs": rows})))
}

#[cfg(not(feature = "llama"))]
fn llama_runs_bench(_model: &str, _a: &BenchArgs) -> anyhow::Result<(String, serde_json::Value)> {
    bail!("this emrgym was built without the llama feature")
}

#[cfg(not(feature = "llama"))]
fn llama_bench(_model: &str, _threads: i32) -> anyhow::Result<Vec<(String, String)>> {
    bail!("this emrgym was built without the llama feature")
}

/// A deterministic OpenAI-compatible stub for the loop benchmark: after `latency_ms`, it
/// reads the patient named in the task, then finishes.
async fn stub_chat(axum::extract::State(latency): axum::extract::State<u64>, axum::Json(req): axum::Json<Value>) -> axum::Json<Value> {
    tokio::time::sleep(Duration::from_millis(latency)).await;
    let messages = req["messages"].as_array().cloned().unwrap_or_default();
    let answered = messages.iter().any(|m| m["role"] == "tool");
    let task = messages.get(1).and_then(|m| m["content"].as_str()).unwrap_or_default();
    let mrn: String = task
        .find("MRN of ")
        .map(|i| task[i + 7..].chars().take_while(|c| c.is_ascii_alphanumeric()).collect())
        .unwrap_or_default();
    let (name, args) = if answered {
        ("finish", json!({"answer": [0]}))
    } else {
        ("fhir_read", json!({"resource_type": "Patient", "id": mrn}))
    };
    axum::Json(json!({"id": "b", "object": "chat.completion", "created": 0, "model": "stub",
        "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {"role": "assistant", "content": null,
            "tool_calls": [{"id": "c", "type": "function", "function": {"name": name, "arguments": args.to_string()}}]}}],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}))
}

/// 300 episodes (2 model turns each) at concurrency 64 against a stub with fixed latency;
/// the ideal is ceil(300 / 64) waves x 2 turns x latency.
fn agent_loop_bench(latency_ms: u64) -> anyhow::Result<Vec<(String, String)>> {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let listener = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))?;
    let addr = listener.local_addr()?;
    let app = axum::Router::new()
        .route("/v1/chat/completions", axum::routing::post(stub_chat))
        .with_state(latency_ms);
    rt.spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    let dir = tempfile_dir()?;
    let mut model = emrgym_agent::model::OpenAiConfig::from_spec(&format!("stub@http://{addr}/v1")).map_err(anyhow::Error::msg)?;
    model.max_concurrency = 64;
    let cfg = emrgym_engine::run::RunConfig {
        agent: emrgym_engine::run::AgentKind::Model,
        model: Some(emrgym_agent::model::ModelConfig::Openai(model)),
        families: vec!["mab_patient_age".into()],
        trials: 50,
        concurrency: 64,
        ..emrgym_engine::run::RunConfig::default()
    };
    let t = Instant::now();
    let summary = emrgym_engine::run::execute(cfg, &dir.join("run"), false)?;
    let wall = t.elapsed().as_secs_f64();
    let episodes = summary["episodes"].as_u64().unwrap_or(0);
    let waves = episodes.div_ceil(64) as f64;
    let ideal = waves * 2.0 * latency_ms as f64 / 1000.0;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(vec![
        ("episodes (2 turns each), concurrency 64".into(), episodes.to_string()),
        ("stub latency per reply".to_string(), format!("{latency_ms} ms")),
        ("ideal wall time (waves x turns x latency)".into(), format!("{ideal:.2} s")),
        ("measured wall time".into(), format!("{wall:.2} s ({:.2}x the ideal)", wall / ideal)),
    ])
}

fn tempfile_dir() -> anyhow::Result<PathBuf> {
    let d = std::env::temp_dir().join(format!("emrgym-bench-{}", std::process::id()));
    std::fs::create_dir_all(&d)?;
    Ok(d)
}

/// Per-instance cost of planning the oracle tree, running the oracle episode, and grading,
/// next to the cost of one FHIR search in the same run.
fn scenario_bench(dir: &Path) -> anyhow::Result<Vec<(String, String)>> {
    use emrgym_engine::episode::{Workspace, run_and_grade};
    let mut ws = Workspace::open(dir).map_err(|e| anyhow::anyhow!(e.join("; ")))?;
    let instances = ws.suite.instances().map_err(anyhow::Error::msg)?;
    // warm caches (cohorts, libraries, schema validators)
    for i in &instances {
        ws.prepare(i).map_err(|e| anyhow::anyhow!(e.join("; ")))?;
    }
    let reps = 5;
    let t = Instant::now();
    let mut prepared = Vec::new();
    for _ in 0..reps {
        prepared.clear();
        for i in &instances {
            prepared.push(ws.prepare(i).map_err(|e| anyhow::anyhow!(e.join("; ")))?);
        }
    }
    let plan_ms = t.elapsed().as_secs_f64() * 1e3 / (reps * instances.len()) as f64;
    let t = Instant::now();
    let mut grade_total = 0.0;
    let mut steps = 0usize;
    for _ in 0..reps {
        for p in &prepared {
            let calls = p.oracle.reference_calls().into_iter().map(|(_, c)| c).collect();
            let (traj, _, sb) = run_and_grade(p, &mut emrgym_agent::Oracle::new(calls), 1);
            steps += traj.steps.len();
            let tg = Instant::now();
            std::hint::black_box(emrgym_engine::episode::grade_sandbox(p, &traj, &sb));
            grade_total += tg.elapsed().as_secs_f64();
        }
    }
    let episode_ms = t.elapsed().as_secs_f64() * 1e3 / (reps * instances.len()) as f64;
    let grade_ms = grade_total * 1e3 / (reps * instances.len()) as f64;
    let tmp = tempfile_dir()?;
    let t = Instant::now();
    emrgym_engine::run::execute(
        emrgym_engine::run::RunConfig {
            suite: dir.to_path_buf(),
            ..emrgym_engine::run::RunConfig::default()
        },
        &tmp.join("oracle"),
        false,
    )?;
    let run_s = t.elapsed().as_secs_f64();
    let _ = std::fs::remove_dir_all(&tmp);
    Ok(vec![
        ("instances".into(), instances.len().to_string()),
        (
            "`emrgym run --agent oracle` over the suite (load, plan, run, grade, write the run directory)".into(),
            format!("{run_s:.2} s"),
        ),
        ("plan the oracle tree (prepare), per instance".into(), format!("{plan_ms:.2} ms")),
        (
            "oracle episode + grade, per instance".into(),
            format!(
                "{episode_ms:.2} ms ({:.1} tool calls)",
                steps as f64 / (reps * instances.len()) as f64
            ),
        ),
        ("grade alone, per instance".into(), format!("{grade_ms:.2} ms")),
    ])
}

/// Median nanoseconds per call of `f` over 7 batches of `n` calls.
fn per_call_ns(n: usize, mut f: impl FnMut()) -> f64 {
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

/// The tool catalogue's overhead: each calculator or FHIR call made directly and through
/// `Registry::call` (JSON Schema validation, dispatch, observation), in the same run.
fn tool_bench() -> anyhow::Result<Vec<(String, String)>> {
    use emrgym_tools::{Registry, fhir_tools::FhirTool};
    let registry = Registry::standard()?;
    let mut rows = Vec::new();
    let cases = [
        (
            "ckd_epi_2021",
            json!({"sex": "female", "age": 70, "creatinine": {"value": 97, "unit": "µmol/L"}}),
        ),
        (
            "apache_ii",
            serde_json::from_str(emrgym_calc::find("apache_ii").map(|c| c.example).unwrap_or("{}"))?,
        ),
        (
            "caprini",
            serde_json::from_str(emrgym_calc::find("caprini").map(|c| c.example).unwrap_or("{}"))?,
        ),
    ];
    for (name, args) in cases {
        let calc = emrgym_calc::find(name).context("calculator")?;
        let direct = per_call_ns(20_000, || {
            std::hint::black_box(emrgym_calc::run(calc, std::hint::black_box(&args)).ok());
        });
        let via = per_call_ns(20_000, || {
            std::hint::black_box(registry.call(name, std::hint::black_box(&args), &mut emrgym_tools::NoFhir));
        });
        rows.push((
            format!("{name}: direct / via registry"),
            format!("{:.1} / {:.1} µs ({:.2}×)", direct / 1e3, via / 1e3, via / direct),
        ));
    }
    let clock = Clock::fixed(parse_instant("2023-11-13T10:15:00Z").map_err(anyhow::Error::msg)?);
    let cohort = load::load("demo")?.build(&clock);
    let mut sb = Sandbox::fork(
        &cohort,
        SandboxOptions {
            clock,
            ..Default::default()
        },
    );
    let args = json!({"resource_type": "Observation", "params": {"patient": "S3241217", "code": "K", "_sort": "-date", "_count": 1}});
    let req = FhirTool::Search.request(&args).map_err(anyhow::Error::msg)?;
    let direct = per_call_ns(5_000, || {
        std::hint::black_box(emrgym_fhir::rest::handle_read(&sb, "http://b/fhir", &req));
    });
    let mut backend = (&mut sb, "http://b/fhir");
    let via = per_call_ns(5_000, || {
        std::hint::black_box(registry.call("fhir_search", &args, &mut backend));
    });
    rows.push((
        "fhir_search (latest K of a patient): direct / via registry".into(),
        format!("{:.1} / {:.1} µs ({:.2}×)", direct / 1e3, via / 1e3, via / direct),
    ));
    Ok(rows)
}

const CODES: &[(&str, &str)] = &[
    ("2823-3", "K"),
    ("19123-9", "MG"),
    ("2339-0", "GLU"),
    ("4548-4", "A1C"),
    ("2160-0", "CREAT"),
    ("2951-2", "NA"),
    ("718-7", "HGB"),
    ("6690-2", "WBC"),
    ("777-3", "PLT"),
    ("1742-6", "ALT"),
];

/// Write a deterministic synthetic cohort (Patient.ndjson, Observation.ndjson) unless the
/// same one is already there. Returns the number of resources.
fn synth(dir: &Path, patients: usize, per: usize) -> anyhow::Result<usize> {
    let marker = dir.join("COHORT");
    let want = format!("patients={patients} obs_per_patient={per} v1\n");
    let total = patients + patients * per;
    if std::fs::read_to_string(&marker).ok().as_deref() == Some(want.as_str()) {
        return Ok(total);
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let _ = std::fs::remove_file(dir.join("sekmet.db"));
    let mut pf = std::io::BufWriter::new(std::fs::File::create(dir.join("Patient.ndjson"))?);
    for p in 0..patients {
        let r = json!({"resourceType":"Patient","id":format!("P{p:05}"),"identifier":[{"system":"http://emrgym.dev/fhir/sid/mrn","value":format!("S{:07}", 1_000_000 + p)}],
            "name":[{"family":format!("Family{}", p % 97),"given":[format!("Given{p}")]}],"gender": if p % 2 == 0 {"female"} else {"male"},"birthDate":format!("{}-0{}-1{}", 1930 + p % 70, 1 + p % 9, p % 10)});
        writeln!(pf, "{r}")?;
    }
    pf.flush()?;
    let mut of = std::io::BufWriter::new(std::fs::File::create(dir.join("Observation.ndjson"))?);
    let base = parse_instant("2023-11-13T10:15:00Z").map_err(anyhow::Error::msg)?;
    for p in 0..patients {
        for i in 0..per {
            let h = splitmix64((p * per + i) as u64);
            let (loinc, local) = CODES[(h % CODES.len() as u64) as usize];
            let minutes = (h >> 8) % (3 * 365 * 24 * 60);
            let t = base - chrono::Duration::minutes(minutes as i64);
            let value = ((h >> 40) % 1000) as f64 / 100.0;
            let r = json!({"resourceType":"Observation","id":format!("O{p:05}-{i:05}"),"status":"final",
                "category":[{"coding":[{"system":"http://terminology.hl7.org/CodeSystem/observation-category","code":"laboratory"}]}],
                "code":{"coding":[{"system":"http://loinc.org","code":loinc},{"system":"http://emrgym.dev/fhir/CodeSystem/flowsheet","code":local}],"text":local},
                "subject":{"reference":format!("Patient/P{p:05}")},
                "effectiveDateTime": t.format("%Y-%m-%dT%H:%M:%S+00:00").to_string(),
                "valueQuantity":{"value":value,"unit":"mmol/L","system":"http://unitsofmeasure.org","code":"mmol/L"}});
            writeln!(of, "{r}")?;
        }
    }
    of.flush()?;
    std::fs::write(&marker, want)?;
    Ok(total)
}

/// Cold start of `emrgym serve` on `dir` (median of three) and the time from spawn to the
/// first answer of `q` (the third start).
fn cold_start(dir: &Path, q: &str) -> anyhow::Result<(f64, f64, u64)> {
    let mut colds = Vec::new();
    for _ in 0..2 {
        let (s, secs) = start_emrgym(dir)?;
        colds.push(secs);
        drop(s);
    }
    let t = Instant::now();
    let (server, secs) = start_emrgym(dir)?;
    colds.push(secs);
    colds.sort_by(|x, y| x.total_cmp(y));
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let first = rt.block_on(async {
        let client = reqwest::Client::new();
        let r = client.get(format!("{}/{q}", server.base)).send().await?;
        let ok = r.status().is_success();
        let body = r.bytes().await?;
        if !ok || !contains(&body, b"\"searchset\"") {
            bail!("{q}: no searchset");
        }
        Ok::<_, anyhow::Error>(t.elapsed().as_secs_f64())
    })?;
    let (rss, _) = rss_kib(server.child.id());
    Ok((colds[1], first, rss))
}

/// The generator against the flat synthetic cohort of the same size, in the same run.
fn fixtures_bench(a: &BenchArgs) -> anyhow::Result<Vec<(String, String)>> {
    use emrgym_fixtures::{Config, Generator};
    let gen_dir = a.data.join("generated");
    let cfg = Config {
        patients: a.patients,
        ..Config::default()
    }
    .medagentbench_scale();
    let t = Instant::now();
    let stats = Generator::new(cfg).map_err(anyhow::Error::msg)?.write_ndjson(&gen_dir)?;
    let gen_s = t.elapsed().as_secs_f64();
    let total = stats.total();
    let flat_dir = a.data.join("flat");
    let _ = std::fs::remove_file(flat_dir.join("COHORT"));
    let per = (total - a.patients) / a.patients.max(1);
    let t = Instant::now();
    let flat_total = synth(&flat_dir, a.patients, per)?;
    let flat_s = t.elapsed().as_secs_f64();
    let first_patient = std::fs::read_to_string(gen_dir.join("Patient.ndjson"))?
        .lines()
        .next()
        .and_then(|l| serde_json::from_str::<Value>(l).ok())
        .and_then(|v| v["id"].as_str().map(String::from))
        .context("no patient generated")?;
    let (gen_cold, gen_first, gen_rss) = cold_start(
        &gen_dir,
        &format!("Observation?patient={first_patient}&code=K&_sort=-date&_count=20"),
    )?;
    let (flat_cold, flat_first, flat_rss) = cold_start(&flat_dir, &query(0, a.patients))?;
    let size = |d: &Path| -> u64 {
        std::fs::read_dir(d)
            .map(|it| it.filter_map(|e| e.ok()?.metadata().ok()).map(|m| m.len()).sum())
            .unwrap_or(0)
    };
    Ok(vec![
        ("resources (generated / flat)".into(), format!("{total} / {flat_total}")),
        (
            "NDJSON size (generated / flat)".into(),
            format!("{} MB / {} MB", size(&gen_dir) >> 20, size(&flat_dir) >> 20),
        ),
        (
            "generate + write (generated / flat)".into(),
            format!("{gen_s:.2} s / {flat_s:.2} s ({:.2}x)", gen_s / flat_s),
        ),
        (
            "serve: listening, median of 3 (generated / flat)".into(),
            format!("{gen_cold:.2} s / {flat_cold:.2} s ({:.2}x)", gen_cold / flat_cold),
        ),
        (
            "serve: spawn to first search answered (generated / flat)".into(),
            format!("{gen_first:.2} s / {flat_first:.2} s ({:.2}x)", gen_first / flat_first),
        ),
        (
            "serve: RSS when answering (generated / flat)".into(),
            format!("{} MiB / {} MiB", gen_rss >> 10, flat_rss >> 10),
        ),
    ])
}

fn time_forks(cohort: &std::sync::Arc<emrgym_fhir::Cohort>, n: usize) -> f64 {
    let t = Instant::now();
    let mut keep = 0usize;
    for i in 0..n {
        let s = Sandbox::fork(
            cohort,
            SandboxOptions {
                seed: i as u64,
                ..Default::default()
            },
        );
        keep = keep.wrapping_add(s.writes().len());
        std::hint::black_box(&s);
    }
    std::hint::black_box(keep);
    t.elapsed().as_nanos() as f64 / n as f64
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

fn query(i: usize, patients: usize) -> String {
    let h = splitmix64(1_000_000 + i as u64);
    let p = (h % patients as u64) as usize;
    let (_, local) = CODES[((h >> 20) % CODES.len() as u64) as usize];
    format!("Observation?patient=P{p:05}&code={local}&_sort=-date&_count=20")
}

fn rss_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

struct Server {
    child: Child,
    base: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_emrgym(dir: &Path) -> anyhow::Result<(Server, f64)> {
    let exe = std::env::current_exe()?;
    let t = Instant::now();
    let mut child = Command::new(exe)
        .args(["serve", "--port", "0", "--now", "2023-11-13T10:15:00Z", "--cohort"])
        .arg(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let out = child.stdout.take().context("no stdout")?;
    let mut line = String::new();
    BufReader::new(out).read_line(&mut line)?;
    let secs = t.elapsed().as_secs_f64();
    let base = line
        .split_whitespace()
        .find(|w| w.starts_with("http://") && w.ends_with("/fhir"))
        .map(str::to_string);
    let Some(base) = base else {
        let _ = child.kill();
        bail!("emrgym serve did not report its address: {line}");
    };
    Ok((Server { child, base }, secs))
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn start_sekmet(dir: &Path) -> anyhow::Result<(Server, f64)> {
    let db = dir.join("sekmet.db");
    let mut load_secs = 0.0;
    let marker = dir.join("sekmet.db.ok");
    if !marker.exists() || !db.exists() {
        eprintln!(
            "loading the cohort into sekmet's SQLite store (once; cached in {})...",
            dir.display()
        );
        let t = Instant::now();
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("bench/sekmet_load.py");
        let out = Command::new("python3")
            .arg(script)
            .arg(&db)
            .arg(dir)
            .output()
            .context("running python3 bench/sekmet_load.py (pip install sekmet-fhir)")?;
        if !out.status.success() {
            bail!("sekmet load failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        load_secs = t.elapsed().as_secs_f64();
        std::fs::write(&marker, format!("{load_secs:.1}\n"))?;
    } else {
        load_secs = std::fs::read_to_string(&marker)
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(load_secs);
    }
    let port = free_port()?;
    let settings = dir.join("sekmet-settings.yaml");
    let abs_db = std::fs::canonicalize(&db)?;
    std::fs::write(
        &settings,
        format!(
            "db_path: {}\nlog_inbound: false\nbase_url: http://127.0.0.1:{port}/fhir\n",
            abs_db.display()
        ),
    )?;
    let child = Command::new("sekmet")
        .args(["serve", "-c"])
        .arg(&settings)
        .args(["--host", "127.0.0.1", "--port", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting `sekmet serve` (pip install sekmet-fhir)")?;
    let server = Server {
        child,
        base: format!("http://127.0.0.1:{port}/fhir"),
    };
    Ok((server, load_secs))
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

struct Load {
    requests: usize,
    errors: usize,
    timeouts: usize,
    seconds: f64,
    p50_ms: f64,
    p99_ms: f64,
}

async fn wait_ready(base: &str) -> anyhow::Result<()> {
    let client = reqwest::Client::new();
    for _ in 0..600 {
        if let Ok(r) = client.get(format!("{base}/metadata")).send().await
            && r.status().is_success()
        {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("{base} did not become ready in 60 s")
}

async fn http_load(base: &str, patients: usize, secs: u64, concurrency: usize, timeout: Duration) -> anyhow::Result<Load> {
    let client = reqwest::Client::new();
    // warm up with a short burst (bounded by the request timeout)
    let warm_deadline = Instant::now() + timeout;
    for i in 0..50 {
        if Instant::now() > warm_deadline {
            break;
        }
        let url = format!("{base}/{}", query(i, patients));
        if let Ok(Ok(r)) = tokio::time::timeout(timeout, client.get(url).send()).await {
            let _ = r.bytes().await;
        }
    }
    let deadline = Instant::now() + Duration::from_secs(secs);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..concurrency {
        let client = client.clone();
        let base = base.to_string();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut errors = 0usize;
            let mut timeouts = 0usize;
            let mut i = w * 1_000_000;
            while Instant::now() < deadline {
                let url = format!("{base}/{}", query(i, patients));
                i += 1;
                let t = Instant::now();
                let answer = tokio::time::timeout(timeout, async {
                    let r = client.get(url).send().await?;
                    let ok = r.status().is_success();
                    let body = r.bytes().await.unwrap_or_default();
                    Ok::<_, reqwest::Error>((ok, body))
                })
                .await;
                match answer {
                    Err(_) => {
                        timeouts += 1;
                        continue;
                    }
                    Ok(Ok((ok, body))) => {
                        // cheap validity check (the client shares the 2 cores with the server):
                        // a searchset Bundle with at least one match
                        let valid = ok && contains(&body, b"\"searchset\"") && contains(&body, b"\"mode\":\"match\"");
                        if !valid {
                            errors += 1;
                        }
                    }
                    Ok(Err(_)) => errors += 1,
                }
                lat.push(t.elapsed().as_secs_f64() * 1000.0);
            }
            (lat, errors, timeouts)
        }));
    }
    let mut lat = Vec::new();
    let mut errors = 0;
    let mut timeouts = 0;
    for t in tasks {
        let (l, e, to) = t.await?;
        lat.extend(l);
        errors += e;
        timeouts += to;
    }
    let seconds = start.elapsed().as_secs_f64();
    lat.sort_by(|a, b| a.total_cmp(b));
    Ok(Load {
        requests: lat.len(),
        errors,
        timeouts,
        seconds,
        p50_ms: percentile(&lat, 0.5),
        p99_ms: percentile(&lat, 0.99),
    })
}

/// Wait until the server at `base` answers, then put it under the configured HTTP load.
fn load_server(rt: &tokio::runtime::Runtime, base: &str, a: &BenchArgs) -> anyhow::Result<Load> {
    rt.block_on(async {
        wait_ready(base).await?;
        http_load(base, a.patients, a.seconds, a.concurrency, Duration::from_secs(a.request_timeout)).await
    })
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
