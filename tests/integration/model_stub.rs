//! The OpenAI-compatible backend against a local stub server started by the test (paid
//! APIs cannot run here): tool-call round trips, the text protocol, 429 with Retry-After,
//! persistent 500s, timeouts, malformed and truncated tool calls, context overflow. Each
//! episode ends with the right reason and nothing hangs. Also: a run killed part-way (the
//! process) and resumed equals an uninterrupted run. And one test per harness limit of the
//! audit in docs/agent.md ("Harness failures"): each ends as the audit says, is counted as
//! a harness failure where it says so, and none is charged as a parse error.

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use emrgym_agent::harness::HarnessLimit;
use emrgym_agent::model::{ModelConfig, OpenAiConfig, ToolProtocol};
use emrgym_engine::run::{AgentKind, RunConfig, execute};
use emrgym_engine::rundir::read_results;
use emrgym_grade::Verdict;
use emrgym_scenario::trajectory::EndReason;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Default)]
struct Stub {
    requests: Mutex<Vec<Value>>,
    calls: Mutex<u32>,
}

fn mrn(messages: &[Value]) -> String {
    for m in messages {
        if let Some(t) = m["content"].as_str()
            && let Some(i) = t.find("MRN of ").map(|i| i + 7).or_else(|| t.find("patient S").map(|i| i + 8))
        {
            return t[i..].chars().take_while(|c| c.is_ascii_alphanumeric()).collect();
        }
    }
    "S0000001".into()
}

fn tool_reply(name: &str, args: &str, finish_reason: &str) -> Value {
    json!({"id": "x", "object": "chat.completion", "created": 0, "model": "stub",
        "choices": [{"index": 0, "finish_reason": finish_reason, "message": {"role": "assistant", "content": null,
            "tool_calls": [{"id": format!("call_{name}"), "type": "function", "function": {"name": name, "arguments": args}}]}}],
        "usage": {"prompt_tokens": 100, "completion_tokens": 20, "total_tokens": 120}})
}

fn text_reply(text: &str) -> Value {
    json!({"id": "x", "object": "chat.completion", "created": 0, "model": "stub",
        "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": text}}],
        "usage": {"prompt_tokens": 100, "completion_tokens": 20, "total_tokens": 120}})
}

fn error(status: u16, message: &str, extra: &[(&str, &str)]) -> Response {
    let mut r = (
        StatusCode::from_u16(status).unwrap(),
        Json(json!({"error": {"message": message, "type": "server_error", "param": null, "code": null}})),
    )
        .into_response();
    for (k, v) in extra {
        r.headers_mut()
            .insert(axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(), v.parse().unwrap());
    }
    r
}

/// The model name picks the behaviour.
async fn chat(State(st): State<Arc<Stub>>, _h: HeaderMap, Json(req): Json<Value>) -> Response {
    st.requests.lock().unwrap().push(req.clone());
    let n = {
        let mut c = st.calls.lock().unwrap();
        *c += 1;
        *c
    };
    let model = req["model"].as_str().unwrap_or_default().to_string();
    let messages = req["messages"].as_array().cloned().unwrap_or_default();
    let tool_msgs = messages
        .iter()
        .filter(|m| m["role"] == "tool" || (m["role"] == "user" && m["content"].as_str().is_some_and(|c| c.starts_with("<tool_response>"))))
        .count();
    // replaying a malformed call is an error, as llama-server answers 500
    for m in &messages {
        for c in m["tool_calls"].as_array().into_iter().flatten() {
            let args = c["function"]["arguments"].as_str().unwrap_or("");
            if serde_json::from_str::<Value>(args).is_err() {
                return error(500, "Failed to parse tool call arguments as JSON", &[]);
            }
        }
    }
    let patient = mrn(&messages);
    let read = json!({"resource_type": "Patient", "id": patient}).to_string();
    let finish = json!({"answer": [42]}).to_string();
    let normal = |k: usize| {
        if k == 0 {
            tool_reply("fhir_read", &read, "tool_calls")
        } else {
            tool_reply("finish", &finish, "tool_calls")
        }
    };
    let body = match model.as_str() {
        "roundtrip" => normal(tool_msgs),
        "slowroundtrip" => {
            tokio::time::sleep(Duration::from_millis(150)).await;
            normal(tool_msgs)
        }
        "text" => {
            assert!(req.get("tools").is_none(), "the text protocol sends no tools field");
            if tool_msgs == 0 {
                text_reply(&format!(
                    "Let me look.\n<tool_call>\n{{\"name\": \"fhir_read\", \"arguments\": {read}}}\n</tool_call>"
                ))
            } else {
                text_reply(&format!("<tool_call>{{\"name\": \"finish\", \"arguments\": {finish}}}</tool_call>"))
            }
        }
        "ratelimit" => {
            if n == 1 {
                return error(429, "Rate limit reached", &[("retry-after", "1")]);
            }
            normal(tool_msgs)
        }
        "error500" => return error(500, "internal error", &[]),
        "slow" => {
            tokio::time::sleep(Duration::from_secs(3)).await;
            normal(tool_msgs)
        }
        "malformed" => {
            let errors = messages
                .iter()
                .filter(|m| m["role"] == "tool" && m["content"].as_str().is_some_and(|c| c.contains("not valid JSON")))
                .count();
            if errors == 0 {
                tool_reply("fhir_read", "{\"resource_type\": \"Patient\", \"id\": ", "tool_calls")
            } else {
                normal(tool_msgs - errors)
            }
        }
        "truncated" => tool_reply("fhir_read", "{\"resource_type\": \"Pat", "length"),
        // a long call cut by the reply cap once, then written shorter
        "longcall" => {
            let cut_notes = messages
                .iter()
                .filter(|m| m["role"] == "user" && m["content"].as_str().is_some_and(|c| c.contains("was cut at")))
                .count();
            if cut_notes == 0 {
                tool_reply("fhir_read", "{\"resource_type\": \"Patient\", \"id\": \"S00", "length")
            } else {
                normal(tool_msgs)
            }
        }
        // the same read over and over ("loop"); the same read three times, then a search
        // (another call), then the read three times more and finish ("loop3")
        "loop" => tool_reply("fhir_read", &read, "tool_calls"),
        // a search and the read, in turn, over and over ("pingpong": Qwen 1.5B, flat,
        // horizon-16-001); the pair three times, then another search, then the pair three
        // times more and finish ("pingpong3")
        "pingpong" | "pingpong3" => {
            let search = json!({"resource_type": "Patient", "params": {"_id": patient}}).to_string();
            match (model.as_str(), tool_msgs) {
                ("pingpong3", 6) => tool_reply("fhir_search", &json!({"resource_type": "Patient"}).to_string(), "tool_calls"),
                ("pingpong3", 13) => tool_reply("finish", &finish, "tool_calls"),
                (m, n) if (n - usize::from(m == "pingpong3" && n > 6)) % 2 == 0 => tool_reply("fhir_search", &search, "tool_calls"),
                _ => tool_reply("fhir_read", &read, "tool_calls"),
            }
        }
        "loop3" => match tool_msgs {
            3 => tool_reply(
                "fhir_search",
                &json!({"resource_type": "Patient", "params": {"_id": patient}}).to_string(),
                "tool_calls",
            ),
            7 => tool_reply("finish", &finish, "tool_calls"),
            _ => tool_reply("fhir_read", &read, "tool_calls"),
        },
        // one Observation created again and again, each time with the next client-side id,
        // and the new id read back in between (Qwen 1.5B, goal, mab-a1c-007): no call
        // repeats with its result
        "rewrite" => {
            if tool_msgs % 2 == 0 {
                let obs = json!({"resource_type": "Observation", "resource": {
                    "resourceType": "Observation", "id": format!("obs-{}", 50 + tool_msgs / 2), "status": "final",
                    "code": {"text": "A1C"}, "subject": {"reference": format!("Patient/{patient}")},
                    "valueQuantity": {"value": 7.1, "unit": "%"}}});
                tool_reply("fhir_create", &obs.to_string(), "tool_calls")
            } else {
                let id = messages
                    .iter()
                    .rev()
                    .find(|m| m["role"] == "tool")
                    .and_then(|m| m["content"].as_str())
                    .and_then(|c| serde_json::from_str::<Value>(c).ok())
                    .and_then(|v| v["id"].as_str().map(str::to_string))
                    .unwrap_or_default();
                tool_reply(
                    "fhir_read",
                    &json!({"resource_type": "Observation", "id": id}).to_string(),
                    "tool_calls",
                )
            }
        }
        // a call whose argument degenerates into one repeated pattern until the reply cap;
        // "babblecut": the same, then a long call cut that does not repeat itself
        "babble" | "babblecut" => {
            let degenerate = format!("{{\"resource_type\": \"Patient\", \"id\": \"{}", "1.".repeat(400));
            let noted = messages
                .iter()
                .any(|m| m["role"] == "user" && m["content"].as_str().is_some_and(|c| c.contains("kept repeating")));
            if model == "babblecut" && noted {
                tool_reply("fhir_read", "{\"resource_type\": \"Patient\", \"id\": \"S00", "length")
            } else {
                tool_reply("fhir_read", &degenerate, "length")
            }
        }
        // a text reply cut inside its <tool_call> block (the text protocol, or a server that
        // leaves an unfinished call in the content)
        "longtext" => {
            if messages
                .iter()
                .any(|m| m["content"].as_str().is_some_and(|c| c.contains("was cut at")))
            {
                normal(tool_msgs)
            } else {
                json!({"id": "x", "object": "chat.completion", "created": 0, "model": "stub",
                    "choices": [{"index": 0, "finish_reason": "length", "message": {"role": "assistant",
                        "content": "<tool_call>\n{\"name\": \"fhir_read\", \"arguments\": {\"resource_type\": \"Pati"}}],
                    "usage": {"prompt_tokens": 100, "completion_tokens": 1024, "total_tokens": 1124}})
            }
        }
        // the 1.5B template's example copied: doubled braces around each call
        "doubled" => {
            let call = if tool_msgs == 0 {
                format!("{{{{\"name\": \"fhir_read\", \"arguments\": {read}}}}}")
            } else {
                format!("{{{{\"name\": \"finish\", \"arguments\": {finish}}}}}")
            };
            text_reply(&format!("<tool_call>\n{call}\n</tool_call>"))
        }
        // a search for every observation of the patient, then finish; a server whose context
        // holds 6,000 characters of tool results answers as llama-server does past it
        "bigsearch" => {
            let results: usize = messages
                .iter()
                .filter(|m| m["role"] == "tool")
                .map(|m| m["content"].as_str().unwrap_or("").len())
                .sum();
            if results > 6000 {
                return error(400, "the request exceeds the available context size, try increasing it", &[]);
            }
            if tool_msgs == 0 {
                let search = json!({"resource_type": "Observation", "params": {"patient": patient, "_count": 1000}}).to_string();
                tool_reply("fhir_search", &search, "tool_calls")
            } else {
                tool_reply("finish", &finish, "tool_calls")
            }
        }
        // reads the patient again and again, never finishing, between searches for it that
        // each ask for another page size (so never `stuck`: no call, and no pair of calls, is
        // repeated with its results)
        "wander" => {
            if tool_msgs % 2 == 0 {
                tool_reply("fhir_read", &read, "tool_calls")
            } else {
                tool_reply(
                    "fhir_search",
                    &json!({"resource_type": "Patient", "params": {"_id": patient, "_count": tool_msgs}}).to_string(),
                    "tool_calls",
                )
            }
        }
        "overflow" => {
            return error(
                400,
                "This model's maximum context length is 4096 tokens. However, your messages resulted in 9000 tokens.",
                &[],
            );
        }
        "chatty" => text_reply("I think the answer is 42."),
        "guided" => {
            if tool_msgs == 0 {
                let search =
                    json!({"resource_type": "Observation", "params": {"patient": patient, "code": "K", "_sort": "-date", "_count": 1}})
                        .to_string();
                tool_reply("fhir_search", &search, "tool_calls")
            } else {
                tool_reply("finish", &json!({"answer": "done"}).to_string(), "tool_calls")
            }
        }
        _ => return error(404, "unknown model", &[]),
    };
    Json(body).into_response()
}

async fn start() -> (String, Arc<Stub>) {
    let st = Arc::new(Stub::default());
    let app = Router::new()
        .route("/v1/chat/completions", axum::routing::post(chat))
        .with_state(st.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    (format!("http://{addr}/v1"), st)
}

/// The instances of `families` on the demo cohort (the numbers these tests count).
fn demo(families: &[&str]) -> Vec<String> {
    emrgym_engine::scenarios::instances(&suite())
        .unwrap()
        .into_iter()
        .filter(|i| i.cohort == "demo" && families.contains(&i.family.as_str()))
        .map(|i| i.id)
        .collect()
}

fn suite() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios")
}

fn config(base: &str, model: &str, protocol: ToolProtocol) -> RunConfig {
    let mut m = OpenAiConfig::from_spec(&format!("{model}@{base}")).unwrap();
    m.tool_protocol = protocol;
    m.request_timeout_s = 1.0;
    m.max_retries = 2;
    RunConfig {
        suite: suite(),
        agent: AgentKind::Model,
        model: Some(ModelConfig::Openai(m)),
        instances: vec!["mab-age-001".into()],
        ..RunConfig::default()
    }
}

/// Run in a blocking thread (execute builds its own runtime) and return the one result line.
async fn run_one(cfg: RunConfig) -> (emrgym_engine::rundir::ResultLine, Value, Duration) {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let t = Instant::now();
    let out2 = out.clone();
    tokio::task::spawn_blocking(move || execute(cfg, &out2, false).unwrap())
        .await
        .unwrap();
    let elapsed = t.elapsed();
    let lines = read_results(&out.join("results.jsonl")).unwrap();
    assert_eq!(lines.len(), 1);
    let file = emrgym_scenario::trajectory::file::read(&out.join("trajectories").join(format!("{}.0.jsonl", lines[0].instance))).unwrap();
    let traj = serde_json::to_value(&file.trajectory).unwrap();
    (lines[0].clone(), traj, elapsed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn native_tool_calls_round_trip_and_are_graded() {
    let (base, st) = start().await;
    let (line, traj, _) = run_one(config(&base, "roundtrip", ToolProtocol::Native)).await;
    assert_eq!(serde_json::to_value(line.end).unwrap(), "finished", "{traj:#}");
    assert_eq!(line.steps, 2);
    assert_eq!(line.turns, 2);
    assert_eq!((line.prompt_tokens, line.completion_tokens), (200, 40));
    let grade = line.grade.unwrap();
    assert_eq!(grade.nodes[1].path, "p");
    assert_eq!(grade.nodes[1].verdict, Verdict::Passed, "the read showed the patient");
    assert!(!grade.answer.unwrap().passed, "42 is not the patient's age");
    let reqs = st.requests.lock().unwrap();
    assert_eq!(
        reqs[0]["tools"].as_array().unwrap().len(),
        3,
        "only the family's tools: fhir_search, fhir_read, finish"
    );
    assert_eq!(reqs[1]["messages"].as_array().unwrap().last().unwrap()["role"], "tool");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_protocol_fallback() {
    let (base, st) = start().await;
    let (line, _, _) = run_one(config(&base, "text", ToolProtocol::Text)).await;
    assert_eq!(serde_json::to_value(line.end).unwrap(), "finished");
    assert_eq!(line.steps, 2);
    let reqs = st.requests.lock().unwrap();
    assert!(
        reqs[0]["messages"][0]["content"].as_str().unwrap().contains("<tool_call>"),
        "tools described in the system prompt"
    );
    assert!(
        reqs[1]["messages"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["content"].as_str().is_some_and(|c| c.contains("<tool_response>")))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limit_is_retried_after_the_servers_delay() {
    let (base, st) = start().await;
    let (line, _, elapsed) = run_one(config(&base, "ratelimit", ToolProtocol::Native)).await;
    assert_eq!(serde_json::to_value(line.end).unwrap(), "finished");
    assert!(elapsed >= Duration::from_millis(950), "Retry-After: 1 was honoured ({elapsed:?})");
    assert_eq!(*st.calls.lock().unwrap(), 3, "one 429, then two turns");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn persistent_server_errors_end_as_infrastructure_failures() {
    let (base, st) = start().await;
    let (line, traj, _) = run_one(config(&base, "error500", ToolProtocol::Native)).await;
    assert_eq!(serde_json::to_value(line.end).unwrap(), "backend_error");
    assert!(line.infrastructure && line.grade.is_none(), "not scored as an agent failure");
    assert!(traj["detail"].as_str().unwrap().contains("internal error"), "{traj:#}");
    assert_eq!(*st.calls.lock().unwrap(), 3, "the first try and 2 retries");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeouts_end_the_episode() {
    let (base, _) = start().await;
    let mut cfg = config(&base, "slow", ToolProtocol::Native);
    if let Some(ModelConfig::Openai(m)) = cfg.model.as_mut() {
        m.request_timeout_s = 0.3;
        m.max_retries = 1;
    }
    let (line, _, elapsed) = run_one(cfg).await;
    assert_eq!(serde_json::to_value(line.end).unwrap(), "timeout");
    assert!(elapsed < Duration::from_secs(3), "{elapsed:?}");
    assert_eq!(line.harness_limit, Some(HarnessLimit::WallTime), "a slow server is the harness's");
    // the episode's own wall-time budget
    let mut cfg = config(&base, "slow", ToolProtocol::Native);
    if let Some(ModelConfig::Openai(m)) = cfg.model.as_mut() {
        m.request_timeout_s = 30.0;
    }
    cfg.limits.timeout_s = 0.5;
    let (line, traj, elapsed) = run_one(cfg).await;
    assert_eq!(serde_json::to_value(line.end).unwrap(), "timeout");
    assert_eq!(line.harness_limit, Some(HarnessLimit::WallTime));
    assert!(traj["detail"].as_str().unwrap().contains("wall time"));
    assert!(elapsed < Duration::from_secs(3), "{elapsed:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_tool_calls_are_answered_and_repaired() {
    let (base, st) = start().await;
    let (line, traj, _) = run_one(config(&base, "malformed", ToolProtocol::Native)).await;
    assert_eq!(serde_json::to_value(line.end).unwrap(), "finished", "{traj:#}");
    assert_eq!(line.turns, 3);
    assert_eq!(line.steps, 2, "the malformed call is not executed");
    let reqs = st.requests.lock().unwrap();
    let second = reqs[1]["messages"].as_array().unwrap();
    let assistant = second.iter().rev().find(|m| m["role"] == "assistant").unwrap();
    assert_eq!(
        assistant["tool_calls"][0]["function"]["arguments"], "{}",
        "repaired before re-sending"
    );
    let answer = second.last().unwrap()["content"].as_str().unwrap();
    assert!(answer.contains("not valid JSON") && answer.contains("fhir_read"), "{answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncated_calls_context_overflow_and_chat_end_with_their_reasons() {
    let (base, _) = start().await;
    // a call the reply cap cut, every time: answered twice, then `max_tokens` at the reply
    // cap (a harness limit), never a parse error
    let (line, traj, _) = run_one(config(&base, "truncated", ToolProtocol::Native)).await;
    assert_eq!(serde_json::to_value(line.end).unwrap(), "max_tokens", "{traj:#}");
    assert_eq!(line.turns, 2, "one cut answered, the second ends the episode");
    assert_eq!(line.steps, 0, "a cut call is not executed");
    assert!(
        traj["detail"]
            .as_str()
            .unwrap()
            .starts_with("reply cap: 2 replies in a row were cut at 20 tokens"),
        "{traj:#}"
    );
    assert_eq!(line.harness_limit, Some(HarnessLimit::ReplyCap));
    assert!(line.harness_failure());
    let (line, traj, _) = run_one(config(&base, "overflow", ToolProtocol::Native)).await;
    assert_eq!(serde_json::to_value(line.end).unwrap(), "context_overflow", "{traj:#}");
    assert!(
        !line.infrastructure && line.grade.is_some(),
        "an overflow is graded (a failure), and counted as a harness failure"
    );
    assert_eq!(line.harness_limit, Some(HarnessLimit::Context));
    let (line, traj, _) = run_one(config(&base, "chatty", ToolProtocol::Native)).await;
    assert_eq!(serde_json::to_value(line.end).unwrap(), "stopped");
    assert_eq!(line.harness_limit, None, "stopping is the model's");
    assert_eq!(traj["detail"], "I think the answer is 42.");
    let g = line.grade.unwrap();
    assert!(!g.success);
    let done = g.nodes.iter().find(|n| n.path == "done").unwrap();
    assert_eq!(done.verdict, Verdict::NotReached, "the agent stopped without finishing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_run_resumes_to_the_same_results() {
    let (base, _) = start().await;
    let dir = tempfile::tempdir().unwrap();
    let bin = env!("CARGO_BIN_EXE_emrgym");
    let common = |out: &Path| {
        let mut c = std::process::Command::new(bin);
        c.args(["run", "--suite"])
            .arg(suite())
            .args(["--trials", "2", "--concurrency", "1"]);
        for i in demo(&["mab_patient_age", "mab_patient_lookup"]) {
            c.arg("--instance").arg(i);
        }
        c.arg("--model").arg(format!("openai:slowroundtrip@{base}")).arg("--out").arg(out);
        c.stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null());
        c
    };
    // uninterrupted
    let full = dir.path().join("full");
    let st = tokio::task::spawn_blocking({
        let mut c = common(&full);
        move || c.status().unwrap()
    })
    .await
    .unwrap();
    assert!(st.success());
    // killed part-way
    let part = dir.path().join("part");
    let mut child = common(&part).spawn().unwrap();
    let results = part.join("results.jsonl");
    let t = Instant::now();
    loop {
        let n = std::fs::read_to_string(&results).map(|s| s.lines().count()).unwrap_or(0);
        if n >= 5 || t.elapsed() > Duration::from_secs(60) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let before = read_results(&results).unwrap().len();
    assert!((5..36).contains(&before), "killed part-way: {before} episodes");
    // a changed configuration is refused
    let out = std::process::Command::new(bin)
        .arg("run")
        .arg("--resume")
        .arg(&part)
        .args(["--out", "x"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let st = tokio::task::spawn_blocking({
        let part = part.clone();
        move || {
            std::process::Command::new(bin)
                .arg("run")
                .arg("--resume")
                .arg(&part)
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .status()
                .unwrap()
        }
    })
    .await
    .unwrap();
    assert!(st.success());
    assert_eq!(
        std::fs::read_to_string(part.join("results.jsonl")).unwrap(),
        std::fs::read_to_string(full.join("results.jsonl")).unwrap()
    );
    // the summary is the same but for the measured wall time per model turn
    let timeless = |p: &Path| {
        let mut v: Value = serde_json::from_str(&std::fs::read_to_string(p.join("summary.json")).unwrap()).unwrap();
        assert!(v["latency"]["turns"].as_u64().unwrap() > 0);
        v.as_object_mut().unwrap().remove("latency");
        v
    };
    assert_eq!(timeless(&part), timeless(&full));
    assert_eq!(
        read_results(&part.join("results.jsonl")).unwrap().len(),
        36,
        "18 instances x 2 trials, no duplicates"
    );

    // Ctrl-C: the episode in flight ends `cancelled`, the rest is not started, the run says
    // how to resume and exits 130; the resumed run reruns the cancelled episode
    let int = dir.path().join("int");
    let mut c = common(&int);
    c.stderr(std::process::Stdio::piped());
    let child = c.spawn().unwrap();
    let results = int.join("results.jsonl");
    let t = Instant::now();
    loop {
        let n = std::fs::read_to_string(&results).map(|s| s.lines().count()).unwrap_or(0);
        if n >= 3 || t.elapsed() > Duration::from_secs(60) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let st = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(st.success());
    let out = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap())
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(130));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("interrupted:") && err.contains("--resume"), "{err}");
    let lines = read_results(&results).unwrap();
    assert!((3..36).contains(&lines.len()), "interrupted part-way: {}", lines.len());
    let cancelled: Vec<_> = lines.iter().filter(|r| r.end == EndReason::Cancelled).collect();
    // (the signal can land between two episodes, when none is in flight)
    assert!(cancelled.len() <= 1, "only the episode in flight is cancelled");
    assert!(cancelled.iter().all(|r| r.infrastructure && r.grade.is_none()));
    let summary: Value = serde_json::from_str(&std::fs::read_to_string(int.join("summary.json")).unwrap()).unwrap();
    assert_eq!(summary["infrastructure_failures"], cancelled.len());
    let st = tokio::task::spawn_blocking(move || {
        std::process::Command::new(bin)
            .arg("run")
            .arg("--resume")
            .arg(&int)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(st.success());
    assert_eq!(
        std::fs::read_to_string(dir.path().join("int/results.jsonl")).unwrap(),
        std::fs::read_to_string(full.join("results.jsonl")).unwrap()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guided_mode_releases_steps_as_the_agent_sees_the_data() {
    let (base, st) = start().await;
    let mut cfg = config(&base, "guided", ToolProtocol::Native);
    cfg.instances = vec!["mab-k-005".into()];
    cfg.mode = emrgym_engine::run::Mode::Guided;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let out2 = out.clone();
    tokio::task::spawn_blocking(move || execute(cfg, &out2, false).unwrap())
        .await
        .unwrap();
    let reqs = st.requests.lock().unwrap();
    let guidance = |i: usize| -> Vec<String> {
        reqs[i]["messages"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|m| m["content"].as_str().filter(|c| c.starts_with("Next step")).map(str::to_string))
            .collect()
    };
    let first = guidance(0);
    assert_eq!(first.len(), 1, "{first:?}");
    assert!(first[0].contains("most recent serum potassium"), "{first:?}");
    assert!(
        !first[0].contains("Potassium chloride") && !first[0].contains("30"),
        "no branch and no dose before the potassium is seen: {first:?}"
    );
    let second = guidance(1);
    assert_eq!(second.len(), 2, "the orders are released after the search: {second:?}");
    assert!(
        second[1].contains("any order") && second[1].contains("Potassium chloride oral") && second[1].contains("2823-3"),
        "{second:?}"
    );
    assert!(!second[1].contains("30 mEq"), "hints (the computed dose) stay off: {second:?}");
}

/// A recorded model run re-runs offline from its cassette, to the same results; replay
/// re-grades it to the same grades; a conversation that leaves the recording stops with a
/// clear reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recorded_model_run_replays_offline() {
    let (base, st) = start().await;
    let dir = tempfile::tempdir().unwrap();
    let rec = dir.path().join("rec");
    let mut cfg = config(&base, "roundtrip", ToolProtocol::Native);
    cfg.instances = demo(&["mab_patient_age", "mab_latest_glucose"]);
    cfg.mode = emrgym_engine::run::Mode::Guided;
    let rec2 = rec.clone();
    tokio::task::spawn_blocking(move || execute(cfg, &rec2, false).unwrap())
        .await
        .unwrap();
    let calls = *st.calls.lock().unwrap();
    assert!(calls >= 24, "{calls} model calls");
    let bin = env!("CARGO_BIN_EXE_emrgym");
    let run = |args: Vec<String>| tokio::task::spawn_blocking(move || std::process::Command::new(bin).args(args).output().unwrap());
    // cassette: no request reaches the model
    let cas = dir.path().join("cas");
    let out = run(vec![
        "run".into(),
        "--replay-model".into(),
        rec.display().to_string(),
        "--out".into(),
        cas.display().to_string(),
    ])
    .await
    .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(*st.calls.lock().unwrap(), calls, "the cassette served every reply");
    assert_eq!(
        std::fs::read_to_string(cas.join("results.jsonl")).unwrap(),
        std::fs::read_to_string(rec.join("results.jsonl")).unwrap()
    );
    let a = emrgym_scenario::trajectory::file::read(&cas.join("trajectories/mab-age-001.0.jsonl")).unwrap();
    let b = emrgym_scenario::trajectory::file::read(&rec.join("trajectories/mab-age-001.0.jsonl")).unwrap();
    assert_eq!(a.trajectory.steps, b.trajectory.steps);
    assert_eq!(a.trajectory.htn, b.trajectory.htn);
    assert!(!b.trajectory.htn.is_empty());
    assert_eq!(a.header.mode, "guided");
    // replay re-grades the recording to the same grades
    let out = run(vec!["replay".into(), rec.display().to_string(), "--check".into()])
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("replayed 12 episodes: 12 grades unchanged, 0 changed"), "{text}");
    // the ATIF export of a model episode: system prompt, task, agent turns with their calls,
    // each call's result as the observation, token metrics
    let atif_dir = dir.path().join("atif");
    let out = run(vec![
        "export".into(),
        rec.display().to_string(),
        "--format".into(),
        "atif".into(),
        "--out".into(),
        atif_dir.display().to_string(),
    ])
    .await
    .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: Value = serde_json::from_str(&std::fs::read_to_string(atif_dir.join("mab-age-001.0.json")).unwrap()).unwrap();
    assert_eq!(emrgym_scenario::trajectory::atif::validate(&v), Vec::<String>::new());
    let steps = v["steps"].as_array().unwrap();
    assert_eq!(steps[0]["source"], "system");
    assert_eq!(steps[1]["source"], "user");
    let agent: Vec<&Value> = steps.iter().filter(|s| s["source"] == "agent").collect();
    assert_eq!(agent.len(), 2);
    assert_eq!(agent[0]["tool_calls"][0]["function_name"], "fhir_read");
    assert_eq!(
        agent[0]["observation"]["results"][0]["source_call_id"],
        agent[0]["tool_calls"][0]["tool_call_id"]
    );
    assert_eq!(agent[0]["metrics"]["prompt_tokens"], 100);
    assert!(
        steps
            .iter()
            .any(|s| s["source"] == "user" && s["message"].as_str().unwrap().starts_with("Next step")),
        "guidance is a user step"
    );
    // a changed instruction changes the first request: every episode misses the cassette
    let suite2 = dir.path().join("suite");
    crate::common::copy_dir(&suite(), &suite2);
    let f = suite2.join("mab_patient_age.json");
    let t = std::fs::read_to_string(&f).unwrap().replace("What's the age", "What is the age");
    std::fs::write(&f, t).unwrap();
    let miss = dir.path().join("miss");
    let mut args: Vec<String> = vec![
        "run".into(),
        "--replay-model".into(),
        rec.display().to_string(),
        "--suite".into(),
        suite2.display().to_string(),
        "--out".into(),
        miss.display().to_string(),
    ];
    for i in demo(&["mab_patient_age"]) {
        args.extend(["--instance".to_string(), i]);
    }
    let out = run(args).await.unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    for l in read_results(&miss.join("results.jsonl")).unwrap() {
        assert_eq!(l.end, EndReason::BackendError);
        assert!(l.infrastructure);
        let t = emrgym_scenario::trajectory::file::read(&miss.join(format!("trajectories/{}.0.jsonl", l.instance))).unwrap();
        let d = t.trajectory.detail.unwrap();
        assert!(d.contains("no recorded reply") && d.contains("left the recording"), "{d}");
    }
    assert_eq!(*st.calls.lock().unwrap(), calls);
    // a run without a model has nothing to replay
    let oracle = dir.path().join("oracle");
    let cfg = RunConfig {
        suite: suite(),
        agent: AgentKind::Oracle,
        instances: demo(&["mab_patient_age"]),
        ..RunConfig::default()
    };
    let o2 = oracle.clone();
    tokio::task::spawn_blocking(move || execute(cfg, &o2, false).unwrap())
        .await
        .unwrap();
    let out = run(vec!["run".into(), "--replay-model".into(), oracle.display().to_string()])
        .await
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("used no model"));
}

fn end(line: &emrgym_engine::rundir::ResultLine) -> String {
    serde_json::to_value(line.end).unwrap().as_str().unwrap().to_string()
}

/// The reply cap: a call cut once is answered with the cut note (not parsed, not counted
/// as a parse error), the model writes it again and the episode goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_call_cut_by_the_reply_cap_is_answered_not_parsed() {
    let (base, st) = start().await;
    let (line, traj, _) = run_one(config(&base, "longcall", ToolProtocol::Native)).await;
    assert_eq!(end(&line), "finished", "{traj:#}");
    assert_eq!((line.turns, line.steps), (3, 2), "the cut call was not executed");
    assert_eq!(line.harness_limit, None);
    let second = st.requests.lock().unwrap()[1]["messages"].as_array().unwrap().clone();
    let note = second.last().unwrap();
    assert_eq!(note["role"], "user");
    assert_eq!(
        note["content"],
        "Your reply was cut at 20 tokens before the call was complete; write a shorter call."
    );
    assert!(
        second.iter().all(|m| m["role"] != "tool" && m.get("tool_calls").is_none()),
        "the cut call is not in the history as a call: {second:?}"
    );
    assert!(
        !second
            .iter()
            .any(|m| m["content"].as_str().is_some_and(|c| c.contains("not valid JSON")))
    );
    // the same through a text reply cut inside its <tool_call> block
    let (line, traj, _) = run_one(config(&base, "longtext", ToolProtocol::Text)).await;
    assert_eq!(end(&line), "finished", "{traj:#}");
    assert_eq!(line.steps, 2);
    let turns = traj["turns"].as_array().unwrap();
    assert_eq!(turns[0]["finish_reason"], "length");
}

/// A reply that ends repeating one short pattern is degenerate: it is answered with a note
/// that says so, and a second one in a row ends the episode `degenerate`, the model's
/// failure (a longer reply cap would not have ended the cycle), not a harness failure. A run
/// of cut replies of which one did not repeat itself stays the reply cap's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reply_that_repeats_itself_to_the_cap_is_the_models_failure_not_the_caps() {
    let (base, st) = start().await;
    let (line, traj, _) = run_one(config(&base, "babble", ToolProtocol::Native)).await;
    assert_eq!(end(&line), "degenerate", "{traj:#}");
    assert_eq!((line.turns, line.steps), (2, 0), "no cut call was executed");
    assert_eq!(line.harness_limit, None, "the model's failure");
    let detail = traj["detail"].as_str().unwrap();
    assert!(
        detail.starts_with("degenerate: 2 replies in a row") && detail.contains("\"1.\""),
        "{detail}"
    );
    let second = st.requests.lock().unwrap()[1]["messages"].as_array().unwrap().clone();
    assert_eq!(
        second.last().unwrap()["content"],
        "Your reply was stopped after 20 tokens: it kept repeating \"1.\". Write the call once, without repeating."
    );
    let (line, traj, _) = run_one(config(&base, "babblecut", ToolProtocol::Native)).await;
    assert_eq!(end(&line), "max_tokens", "{traj:#}");
    assert_eq!(line.harness_limit, Some(HarnessLimit::ReplyCap), "one cut was not degenerate");
}

/// The same call answered with the same result four times in a row ends the episode
/// `stuck`, the model's failure, right after the fourth (the sandbox is deterministic: the
/// repeats told the model nothing). Three in a row, or a limit of 0, go on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_call_with_the_same_result_four_times_in_a_row_ends_the_episode_stuck() {
    let (base, _) = start().await;
    let (line, traj, _) = run_one(config(&base, "loop", ToolProtocol::Native)).await;
    assert_eq!(end(&line), "stuck", "{traj:#}");
    assert_eq!((line.turns, line.steps), (4, 4));
    assert_eq!(line.harness_limit, None, "the model's failure");
    assert!(!line.infrastructure);
    let detail = traj["detail"].as_str().unwrap();
    assert!(
        detail.starts_with("stuck: the same call (fhir_read {") && detail.ends_with("got the same result 4 times in a row"),
        "{detail}"
    );
    assert!(line.grade.is_some_and(|g| !g.success), "scored, as a failure");
    // three repeats, another call, three more: never four in a row
    let (line, traj, _) = run_one(config(&base, "loop3", ToolProtocol::Native)).await;
    assert_eq!(end(&line), "finished", "{traj:#}");
    assert_eq!(line.steps, 8);
    // the limit off: the loop runs to the step budget
    let mut cfg = config(&base, "loop", ToolProtocol::Native);
    cfg.limits.max_repeats = 0;
    let (line, traj, _) = run_one(cfg).await;
    assert_eq!(end(&line), "max_steps", "{traj:#}");
    assert_eq!(line.steps as u32, line.step_limit);
}

/// Two calls in turn, each answered as before, four times in a row (eight steps) end the
/// episode `stuck` too: the one-call rule never fires on such a loop, which ran to the step
/// budget. Three rounds, another call, three more go on; a limit of 0 turns it off.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_calls_in_turn_with_the_same_results_four_times_end_the_episode_stuck() {
    let (base, _) = start().await;
    let (line, traj, _) = run_one(config(&base, "pingpong", ToolProtocol::Native)).await;
    assert_eq!(end(&line), "stuck", "{traj:#}");
    assert_eq!((line.turns, line.steps), (8, 8));
    assert_eq!(line.harness_limit, None, "the model's failure");
    let detail = traj["detail"].as_str().unwrap();
    assert!(
        detail.starts_with("stuck: the same 2 calls (fhir_search {")
            && detail.contains("; fhir_read {")
            && detail.ends_with("got the same results 4 times in a row"),
        "{detail}"
    );
    assert!(line.grade.is_some_and(|g| !g.success), "scored, as a failure");
    let (line, traj, _) = run_one(config(&base, "pingpong3", ToolProtocol::Native)).await;
    assert_eq!(end(&line), "finished", "{traj:#}");
    assert_eq!(line.steps, 14);
    let mut cfg = config(&base, "pingpong", ToolProtocol::Native);
    cfg.limits.max_repeats = 0;
    let (line, traj, _) = run_one(cfg).await;
    assert_eq!(end(&line), "max_steps", "{traj:#}");
}

/// The same create made again with a new client-side id each time, around reads of the new
/// id, ends the episode `stuck` at the fourth create (no call repeated with its result, so
/// the rule above never fired: this loop ran to the step budget); every read in between
/// found what was created (the writes really landed), and the limit off lets it run on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_write_made_four_times_ends_the_episode_stuck() {
    let (base, _) = start().await;
    let rewrite = || {
        let mut cfg = config(&base, "rewrite", ToolProtocol::Native);
        cfg.instances = vec!["mab-a1c-001".into()]; // a task with the write tools
        cfg
    };
    let (line, traj, _) = run_one(rewrite()).await;
    assert_eq!(end(&line), "stuck", "{traj:#}");
    assert_eq!(line.steps, 7, "create, read, create, read, create, read, create");
    assert_eq!(line.harness_limit, None, "the model's failure");
    let detail = traj["detail"].as_str().unwrap();
    assert_eq!(detail, "stuck: the same write (fhir_create \"Observation\") was made 4 times");
    let steps = traj["steps"].as_array().unwrap();
    for s in steps.iter().filter(|s| s["call"]["name"] == "fhir_read") {
        assert_eq!(s["result"]["status"], 200, "the read found the created Observation: {s}");
    }
    assert!(line.grade.is_some_and(|g| !g.success), "scored, as a failure");
    let mut cfg = rewrite();
    cfg.limits.max_repeats = 0;
    let (line, traj, _) = run_one(cfg).await;
    assert_eq!(end(&line), "max_steps", "{traj:#}");
}

/// The 1.5B chat template shows its call example with doubled braces; calls written that
/// way are read as the calls they are, not charged as parse errors.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_written_with_the_templates_doubled_braces_are_read() {
    let (base, _) = start().await;
    let (line, traj, _) = run_one(config(&base, "doubled", ToolProtocol::Native)).await;
    assert_eq!(end(&line), "finished", "{traj:#}");
    assert_eq!(line.steps, 2);
    let g = line.grade.unwrap();
    assert_eq!(g.nodes[1].verdict, Verdict::Passed, "the read ran and showed the patient");
}

/// The tool-result size and the context: a search for every observation is fitted to the
/// result limit with a note on how to page (the step records what the model saw); when the
/// server's context is smaller still, the episode ends `context_overflow`, a harness
/// failure, not a parse error or an infrastructure failure.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tool_result_too_long_for_the_context_is_fitted_or_ends_as_a_harness_failure() {
    let (base, st) = start().await;
    let mut cfg = config(&base, "bigsearch", ToolProtocol::Native);
    cfg.limits.max_result_chars = 4000;
    let (line, traj, _) = run_one(cfg).await;
    assert_eq!(end(&line), "finished", "{traj:#}");
    let shown = &traj["steps"][0]["result"]["content"];
    assert!(shown.to_string().len() <= 4000, "{}", shown.to_string().len());
    let note = shown["emrgym_note"].as_str().unwrap();
    assert!(
        note.contains("_count") && note.contains("_offset") && note.contains("shows the first"),
        "{note}"
    );
    assert!(!shown["entry"].as_array().unwrap().is_empty());
    let tool = st.requests.lock().unwrap()[1]["messages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["role"] == "tool")
        .unwrap()
        .clone();
    assert_eq!(
        serde_json::from_str::<Value>(tool["content"].as_str().unwrap()).unwrap(),
        *shown,
        "the model saw what the step records"
    );
    // the same search with a result limit above the server's context
    let mut cfg = config(&base, "bigsearch", ToolProtocol::Native);
    cfg.limits.max_result_chars = 100_000;
    let (line, traj, _) = run_one(cfg).await;
    assert_eq!(end(&line), "context_overflow", "{traj:#}");
    assert!(traj["detail"].as_str().unwrap().contains("available context size"));
    assert!(!line.infrastructure && line.grade.is_some());
    assert_eq!(line.harness_limit, Some(HarnessLimit::Context));
    assert!(line.harness_failure());
}

/// The step budget (issue 22): at the instance's default (twice the reference plan) running
/// out is the model's; at a user's cap below it, the harness's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn running_out_of_steps_is_the_models_unless_a_user_cap_is_below_the_default() {
    let (base, _) = start().await;
    let (line, traj, _) = run_one(config(&base, "wander", ToolProtocol::Native)).await;
    assert_eq!(end(&line), "max_steps", "{traj:#}");
    assert_eq!(line.step_limit_source, "instance");
    assert_eq!(line.steps as u32, line.step_limit);
    assert_eq!(line.harness_limit, None);
    assert!(!line.harness_failure());
    let mut cfg = config(&base, "wander", ToolProtocol::Native);
    cfg.limits.max_steps = 2;
    let (line, _, _) = run_one(cfg).await;
    assert_eq!((end(&line).as_str(), line.step_limit_source.as_str()), ("max_steps", "user"));
    assert_eq!(line.harness_limit, Some(HarnessLimit::StepCap));
    // a user cap above the default is the model's again
    let mut cfg = config(&base, "wander", ToolProtocol::Native);
    cfg.limits.max_steps = 200;
    cfg.limits.max_turns = 10;
    let (line, _, _) = run_one(cfg).await;
    assert_eq!(end(&line), "max_turns");
    assert_eq!(
        line.harness_limit,
        Some(HarnessLimit::TurnCap),
        "10 turns is below the default (the step budget plus 5)"
    );
    // a token budget only binds when the user sets one
    let mut cfg = config(&base, "wander", ToolProtocol::Native);
    cfg.limits.max_tokens = 500;
    let (line, traj, _) = run_one(cfg).await;
    assert_eq!(end(&line), "max_tokens");
    assert!(traj["detail"].as_str().unwrap().starts_with("token budget"), "{traj:#}");
    assert_eq!(line.harness_limit, Some(HarnessLimit::TokenBudget));
}

/// Every summary shows the harness-failure count next to success, and a results table
/// withholds a run above the threshold.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn summaries_count_harness_failures_and_the_table_withholds_such_rows() {
    let (base, _) = start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut runs = Vec::new();
    for model in ["truncated", "roundtrip"] {
        let mut cfg = config(&base, model, ToolProtocol::Native);
        cfg.instances = demo(&["mab_patient_age"]);
        let out = dir.path().join(model);
        let o2 = out.clone();
        // the summary as summary.json holds it
        let summary = tokio::task::spawn_blocking(move || serde_json::to_value(execute(cfg, &o2, false).unwrap()).unwrap())
            .await
            .unwrap();
        let n = summary["scored"].as_u64().unwrap();
        assert!(n >= 2);
        let hf = &summary["harness_failures"];
        if model == "truncated" {
            assert_eq!(hf["episodes"], n);
            assert_eq!(hf["rate"], 1.0);
            assert_eq!(hf["by_limit"]["reply_cap"], n);
            assert_eq!(hf["publishable"], false);
            assert_eq!(summary["families"]["mab_patient_age"]["harness_failures"], n);
            assert_eq!(summary["failure_classes"].get("tool_call_parse_error"), None);
            assert!(summary["end_reasons"].get("tool_call_parse_error").is_none(), "{summary:#}");
            let text = emrgym_engine::report::summary_text(&summary);
            assert!(
                text.contains(&format!("harness failures {n} of {n} scored (100.0%: reply_cap {n})")),
                "{text}"
            );
            assert!(text.contains("withheld from results tables"), "{text}");
        } else {
            assert_eq!(hf["episodes"], 0);
            assert_eq!(hf["publishable"], true);
        }
        runs.push(out);
    }
    let bin = env!("CARGO_BIN_EXE_emrgym");
    let out = std::process::Command::new(bin).arg("table").args(&runs).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // `emrgym table` is the leaderboard's first table: one row per model (name@host) and mode
    let line = |m: &str| -> String {
        text.lines()
            .find(|l| l.starts_with(&format!("| {m}@127.0.0.1:")))
            .unwrap_or_else(|| panic!("no row for {m}: {text}"))
            .to_string()
    };
    let truncated = line("truncated");
    assert!(
        truncated.contains("| flat |") && truncated.matches("| withheld").count() == 4,
        "{truncated}"
    );
    let roundtrip = line("roundtrip");
    assert!(
        roundtrip.contains("| flat |") && roundtrip.contains("| 0.0% [0.0%, 0.0%] |") && !roundtrip.contains("withheld"),
        "{roundtrip}"
    );
    assert!(
        text.contains("above the 5% threshold") && text.contains("Withheld: truncated@"),
        "{text}"
    );
    let out = std::process::Command::new(bin)
        .args(["table", "--json"])
        .args(&runs)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let rows: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    let withheld: Vec<bool> = rows.iter().map(|r| r.get("withheld").is_some()).collect();
    let names: Vec<&str> = rows.iter().map(|r| r["model"].as_str().unwrap()).collect();
    assert_eq!(withheld.len(), 2, "{names:?}");
    for (name, w) in names.iter().zip(&withheld) {
        assert_eq!(*w, name.starts_with("truncated"), "{name}");
    }
    let html = emrgym_engine::report::html::render(&emrgym_engine::report::Run::load(&runs[0]).unwrap());
    assert!(html.contains("harness failures") && html.contains("\"harness\":\"reply_cap\""));
    // the leaderboard withholds the same row, by the same rule
    let lb = emrgym_engine::leaderboard::build(&runs).unwrap();
    let row = |m: &str| lb.rows.iter().find(|r| r.model.starts_with(m)).unwrap();
    assert!(row("truncated").withheld.as_deref().unwrap().contains("above the 5% threshold"));
    assert_eq!(row("roundtrip").withheld, None);
    let md = emrgym_engine::leaderboard::markdown(&lb);
    assert!(md.contains("| withheld | withheld |") && md.contains("Withheld: truncated"), "{md}");
}
