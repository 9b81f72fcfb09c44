//! The model benchmarks: the in-process llama.cpp model (`--llama`, `--llama-runs`: the
//! same episodes under each configuration) and the agent loop against a deterministic
//! OpenAI-compatible stub.

use super::*;

#[cfg(feature = "llama")]
pub(super) fn llama_bench(model: &str, threads: i32) -> anyhow::Result<Vec<(String, String)>> {
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

#[cfg(not(feature = "llama"))]
pub(super) fn llama_bench(_model: &str, _threads: i32) -> anyhow::Result<Vec<(String, String)>> {
    bail!("this emrgym was built without the llama feature")
}

/// `--llama-runs`: the same episodes under each configuration, in one process.
#[cfg(feature = "llama")]
pub(super) fn llama_runs_bench(model: &str, a: &BenchArgs) -> anyhow::Result<(String, serde_json::Value)> {
    use emrgym_agent::llama::LlamaHandle;
    use emrgym_agent::model::{Backend, ModelConfig};
    let ModelConfig::Llama(base) = emrgym_engine::backend::parse_model(model, None)? else {
        anyhow::bail!("--llama-runs takes a local model name or a .gguf file");
    };
    let mut variants = Vec::new();
    for v in a.variants.split(',') {
        let parts: Vec<&str> = v.split(':').collect();
        let (cache, threads, parallel) = match parts[..] {
            [c, t] => (c, t, "1"),
            [c, t, p] => (c, t, p),
            _ => bail!("--variants: '{v}' must be CACHE:THREADS or CACHE:THREADS:PARALLEL, e.g. prefix:1 or prefix:1:4"),
        };
        let prefix = match cache {
            "lcp" => false,
            "prefix" => true,
            other => bail!("--variants: cache '{other}' must be lcp or prefix"),
        };
        let threads: i32 = threads
            .parse()
            .with_context(|| format!("--variants: threads '{threads}' is not a number"))?;
        let parallel: u32 = match parallel.parse() {
            Ok(p) if p >= 1 => p,
            _ => bail!("--variants: parallel '{parallel}' must be a number of at least 1"),
        };
        variants.push((v.to_string(), prefix, threads, parallel));
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
        prepared.push(std::sync::Arc::new(ws.prepare(i).map_err(|e| anyhow::anyhow!(e.join("; ")))?));
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
    for (name, prefix, threads, parallel) in &variants {
        let mut cfg = base.clone();
        cfg.prefix_cache = *prefix;
        cfg.threads = *threads;
        cfg.parallel = *parallel;
        let handle = LlamaHandle::start(cfg.clone()).map_err(anyhow::Error::msg)?;
        let backend = std::sync::Arc::new(Backend::Llama(handle.clone()));
        let mut run_cfg = emrgym_engine::run::RunConfig {
            model: Some(ModelConfig::Llama(cfg.clone())),
            concurrency: *parallel as usize,
            ..emrgym_engine::run::RunConfig::default()
        };
        run_cfg.limits.max_turns = a.max_turns;
        let run_cfg = std::sync::Arc::new(run_cfg);
        let t0 = Instant::now();
        // up to `parallel` episodes at once, admitted in order (the current-thread runtime
        // polls spawned tasks in the order they were spawned, and the semaphore is fair)
        let sem = std::sync::Arc::new(tokio::sync::Semaphore::new(*parallel as usize));
        let done = rt.block_on(async {
            let tasks: Vec<_> = prepared
                .iter()
                .map(|p| {
                    let (sem, run_cfg, backend, cancel, p, name) = (
                        sem.clone(),
                        run_cfg.clone(),
                        backend.clone(),
                        cancel.clone(),
                        p.clone(),
                        name.clone(),
                    );
                    tokio::spawn(async move {
                        let _permit = sem.acquire_owned().await;
                        let r = emrgym_engine::run::one_episode(&run_cfg, &p, 0, Some(&backend), &cancel).await;
                        eprintln!(
                            "{name}: {} {:?} ({:.0} s so far)",
                            p.instance.id,
                            r.0.end,
                            t0.elapsed().as_secs_f64()
                        );
                        r
                    })
                })
                .collect();
            let mut out = Vec::new();
            for t in tasks {
                out.push(t.await);
            }
            out
        });
        let mut episodes = Vec::new();
        for (p, r) in prepared.iter().zip(done) {
            let (traj, grade) = r?;
            let calls: Vec<Value> = traj.steps.iter().map(|s| json!([s.call.name, s.call.arguments])).collect();
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
            "configuration": name, "prefix_cache": prefix, "threads": threads, "parallel": parallel, "wall_s": wall,
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
pub(super) fn llama_runs_bench(_model: &str, _a: &BenchArgs) -> anyhow::Result<(String, serde_json::Value)> {
    bail!("this emrgym was built without the llama feature")
}

/// A deterministic OpenAI-compatible stub for the loop benchmark: after `latency_ms`, it
/// reads the patient named in the task, then finishes.
pub(super) async fn stub_chat(
    axum::extract::State(latency): axum::extract::State<u64>,
    axum::Json(req): axum::Json<Value>,
) -> axum::Json<Value> {
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
pub(super) fn agent_loop_bench(latency_ms: u64) -> anyhow::Result<Vec<(String, String)>> {
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
    let episodes = summary.episodes as u64;
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
