//! External agents: the episode API of a running `emrgym serve` driven over real HTTP by
//! Python clients (`requests`; tests/interop/test_episode_api.py, which also runs the example
//! agent of docs/examples), and `emrgym mcp` driven by the official Python MCP SDK
//! (tests/interop/test_mcp.py). The oracle's calls replayed from outside get the oracle's
//! grades, and what the server recorded replays to the same grades.

use emrgym_engine::run::{AgentKind, RunConfig, execute};
use emrgym_engine::rundir::{ResultLine, read_results};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_emrgym")
}

/// The operator token of the served episode API (the Python clients hold it as operator; their
/// agents hold only episode tokens).
const TOKEN: &str = "operator-token-for-tests";

/// Stop a server as ctrl-c does (SIGINT), so it records its open episodes; kill it after 30 s.
fn interrupt(server: &mut std::process::Child) {
    let _ = Command::new("kill").arg("-INT").arg(server.id().to_string()).status();
    for _ in 0..300 {
        if let Ok(Some(_)) = server.try_wait() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let _ = server.kill();
    let _ = server.wait();
    panic!("the server did not stop within 30 s of SIGINT");
}

fn oracle_run(out: &Path) -> Vec<ResultLine> {
    let cfg = RunConfig {
        suite: root().join("scenarios"),
        agent: AgentKind::Oracle,
        ..RunConfig::default()
    };
    execute(cfg, out, false).unwrap();
    read_results(&out.join("results.jsonl")).unwrap()
}

fn pytest(script: &str, env: &[(&str, &str)]) {
    let out = Command::new("python3")
        .args(["-m", "pytest", "-q", "-p", "no:cacheprovider", "-x"])
        .arg(root().join("tests/interop").join(script))
        .envs(env.iter().copied())
        .output()
        .expect("run python3 -m pytest (pip install -r tests/interop/requirements.txt)");
    let text = format!("{}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{script} failed:\n{text}");
    assert!(text.contains("passed"), "{text}");
}

/// Run a Python test file against a running `serve`; on failure kill the server and fail,
/// otherwise stop it with SIGINT (so it records what is still open).
fn pytest_against(server: &mut std::process::Child, script: &str, env: &[(&str, &str)]) {
    if let Err(e) = std::panic::catch_unwind(|| pytest(script, env)) {
        let _ = server.kill();
        let _ = server.wait();
        std::panic::resume_unwind(e);
    }
    interrupt(server);
}

#[test]
fn episode_api_clients_get_the_oracles_grades_and_their_episodes_replay() {
    let dir = tempfile::tempdir().unwrap();
    let oracle = dir.path().join("oracle");
    let want = oracle_run(&oracle);
    let record = dir.path().join("recorded");
    let (mut server, url, mut lines) = serve(&record, &[]);
    let announced = lines.next().unwrap().unwrap();
    assert!(
        announced.starts_with("episode API:") && announced.contains(&record.display().to_string()),
        "{announced}"
    );
    let example = root().join("docs/examples/episode_agent.py");
    pytest_against(
        &mut server,
        "test_episode_api.py",
        &[
            ("EMRGYM_URL", url.as_str()),
            ("EMRGYM_TOKEN", TOKEN),
            ("EMRGYM_ORACLE_RUN", oracle.to_str().unwrap()),
            ("EMRGYM_EXAMPLE", example.to_str().unwrap()),
        ],
    );

    // what the server recorded: trial 0 of every instance is the oracle-like client's episode
    let got = read_results(&record.join("results.jsonl")).unwrap();
    for w in &want {
        let g = got.iter().find(|g| g.instance == w.instance && g.trial == 0).unwrap();
        assert_eq!(
            (g.success, g.progress, &g.grade, g.end),
            (w.success, w.progress, &w.grade, w.end),
            "{}",
            w.instance
        );
    }
    assert!(
        got.iter()
            .any(|g| g.trial > 0 && g.end == emrgym_scenario::trajectory::EndReason::Stopped)
    );
    // the episode the last client left open was recorded when the server stopped
    let abandoned: Vec<_> = got
        .iter()
        .filter(|g| g.end == emrgym_scenario::trajectory::EndReason::Abandoned)
        .map(|g| g.instance.as_str())
        .collect();
    assert_eq!(abandoned, ["mab-lookup-001"]);
    let manifest: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(record.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest["config"]["agent"], "external");
    assert_eq!(manifest["access"]["operator"], "token");
    assert_eq!(manifest["access"]["agent_feedback"], "none");

    // replay re-executes every recorded call (tool calls and REST requests) to the same grades
    let out = Command::new(bin()).arg("replay").arg(&record).arg("--check").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains(&format!("{n} grades unchanged, 0 changed", n = got.len())), "{text}");
    // and the report reads it
    let out = Command::new(bin()).arg("report").arg(&record).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn an_mcp_client_runs_graded_episodes_over_stdio() {
    let dir = tempfile::tempdir().unwrap();
    let oracle = dir.path().join("oracle");
    oracle_run(&oracle);
    let work = dir.path().join("work");
    std::fs::create_dir_all(&work).unwrap();
    let suite = root().join("scenarios");
    pytest(
        "test_mcp.py",
        &[
            ("EMRGYM_BIN", bin()),
            ("EMRGYM_SUITE", suite.to_str().unwrap()),
            ("EMRGYM_ORACLE_RUN", oracle.to_str().unwrap()),
            ("EMRGYM_WORK", work.to_str().unwrap()),
        ],
    );
    // the recorded MCP episodes replay to the same grades
    for run in ["mcp-guided", "mcp-stopped"] {
        let out = Command::new(bin())
            .arg("replay")
            .arg(work.join(run))
            .arg("--check")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{run}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn mcp_clients_run_concurrent_isolated_episodes_over_http() {
    let dir = tempfile::tempdir().unwrap();
    let oracle = dir.path().join("oracle");
    oracle_run(&oracle);
    let record = dir.path().join("recorded");
    let (mut server, url, mut lines) = serve(&record, &["--max-open-episodes-per-instance", "2"]);
    let announced = lines.next().unwrap().unwrap();
    assert!(announced.contains(&format!("MCP {url}/mcp")), "{announced}");
    pytest_against(
        &mut server,
        "test_mcp_http.py",
        &[
            ("EMRGYM_URL", url.as_str()),
            ("EMRGYM_TOKEN", TOKEN),
            ("EMRGYM_RECORD", record.to_str().unwrap()),
            ("EMRGYM_ORACLE_RUN", oracle.to_str().unwrap()),
        ],
    );
    // what the MCP sessions did replays to the same grades
    let out = Command::new(bin()).arg("replay").arg(&record).arg("--check").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains(" 0 changed"), "{text}");
}

#[test]
fn mcp_refuses_an_unknown_scenario_by_name_before_speaking_the_protocol() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(bin())
        .args(["mcp", "--scenario", "mab-lookup-1", "--suite"])
        .arg(root().join("scenarios"))
        .arg("--record")
        .arg(dir.path().join("rec"))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(out.stdout.is_empty(), "stdout carries only the protocol");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--scenario mab-lookup-1") && err.contains("did you mean mab-lookup-001"),
        "{err}"
    );
    assert!(!dir.path().join("rec").exists(), "nothing recorded");
}

/// `emrgym serve` on a free port with the operator token and `extra` flags, recording in
/// `record`: the child, its base URL (from the first line it prints) and the rest of its stdout.
fn serve(record: &Path, extra: &[&str]) -> (std::process::Child, String, std::io::Lines<BufReader<std::process::ChildStdout>>) {
    let mut server = Command::new(bin())
        .args(["serve", "--port", "0", "--seed", "0", "--token", TOKEN])
        .args(extra)
        .arg("--suite")
        .arg(root().join("scenarios"))
        .arg("--record")
        .arg(record)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start emrgym serve");
    let mut lines = BufReader::new(server.stdout.take().unwrap()).lines();
    let first = lines.next().unwrap().unwrap();
    let url = first
        .split_whitespace()
        .find_map(|w| w.strip_suffix("/fhir").filter(|u| u.starts_with("http://")))
        .unwrap_or_else(|| panic!("no base URL in: {first}"))
        .to_string();
    (server, url, lines)
}

mod in_process {
    use crate::common::App;
    use axum::http::StatusCode;
    use emrgym_engine::episode::Workspace;
    use emrgym_engine::episodes::Limits;
    use emrgym_engine::session::Recorder;
    use serde_json::json;
    use std::path::Path;

    fn server(record: &Path, token: Option<&str>) -> App {
        crate::common::episode_server(record, token, Limits::default()).0
    }

    #[tokio::test]
    async fn the_episode_api_honours_the_bearer_token_and_records_only_ended_episodes() {
        let dir = tempfile::tempdir().unwrap();
        let record = dir.path().join("rec");
        let s = server(&record, Some("s3cret"));
        let auth = [("authorization", "Bearer s3cret")];
        let body = json!({"instance": "mab-age-001"}).to_string();
        let denied = s.req("POST", "/episodes", Some(&body), &[]).await;
        assert_eq!(denied.status, StatusCode::UNAUTHORIZED);
        assert!(denied.diag().contains("bearer token") && !denied.header("www-authenticate").is_empty());
        assert_eq!(s.req("GET", "/scenarios", None, &[]).await.status, StatusCode::UNAUTHORIZED);

        let ep = s.req("POST", "/episodes", Some(&body), &auth).await;
        assert_eq!(ep.status, StatusCode::CREATED, "{}", ep.body);
        let id = ep.body["id"].as_str().unwrap().to_string();
        let base = format!("http://emr.test/sandboxes/{id}/fhir");
        assert_eq!(ep.body["fhir_base"], base.as_str());
        assert!(
            ep.body["prompt"].as_str().unwrap().contains(&base),
            "the prompt names the episode's FHIR base"
        );
        assert_eq!(ep.body["tools"][0]["type"], "function");
        assert!(!record.exists(), "nothing is written before an episode ends");

        // the tool route of the episode's sandbox is the episode's own tool call
        let args = json!({"resource_type": "Patient", "id": "S6534835"}).to_string();
        let r = s.req("POST", &format!("/sandboxes/{id}/tools/fhir_read"), Some(&args), &auth).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        let not_in_catalogue = s
            .req("POST", &format!("/sandboxes/{id}/tools/ckd_epi_2021"), Some("{}"), &auth)
            .await;
        assert!(not_in_catalogue.diag().contains("no tool named 'ckd_epi_2021'"));
        let shown = s.req("GET", &format!("/episodes/{id}"), None, &auth).await;
        assert_eq!(shown.body["steps"], 2);

        let ended = s.req("DELETE", &format!("/episodes/{id}"), None, &auth).await;
        assert_eq!(ended.status, StatusCode::OK);
        assert_eq!(ended.body["end"], "stopped");
        assert!(record.join("manifest.json").exists() && record.join("trajectories/mab-age-001.0.jsonl").exists());
        let gone = s.req("GET", &format!("/episodes/{id}"), None, &auth).await;
        assert_eq!(gone.status, StatusCode::NOT_FOUND);
        assert!(gone.diag().contains(&id));
    }

    #[tokio::test]
    async fn mcp_sessions_are_the_operators_and_name_known_instances() {
        let dir = tempfile::tempdir().unwrap();
        let s = server(&dir.path().join("rec"), Some("s3cret"));
        let init = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "0"}}})
        .to_string();
        let accept = ("accept", "application/json, text/event-stream");
        let json_ct = ("content-type", "application/json");
        let host = ("host", "127.0.0.1");
        let op = [("authorization", "Bearer s3cret"), accept, json_ct, host];
        let unknown = s.req("POST", "/mcp?instance=nope-001", Some(&init), &op).await;
        assert_eq!(unknown.status, StatusCode::NOT_FOUND);
        assert!(unknown.diag().contains("no scenario instance 'nope-001'"), "{}", unknown.diag());
        let bad_mode = s.req("POST", "/mcp?mode=odd", Some(&init), &op).await;
        assert_eq!(bad_mode.status, StatusCode::BAD_REQUEST);
        let anonymous = s.req("POST", "/mcp?instance=mab-age-001", Some(&init), &[accept, json_ct]).await;
        assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);
        let unknown_session = [("mcp-session-id", "not-a-session"), op[0], accept, json_ct, host];
        let list = json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list"}).to_string();
        let gone = s.req("POST", "/mcp", Some(&list), &unknown_session).await;
        assert_eq!(gone.status, StatusCode::NOT_FOUND);
        assert!(!dir.path().join("rec").exists(), "no episode was opened");
    }

    #[test]
    fn a_recording_directory_of_another_run_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let oracle = dir.path().join("oracle");
        super::oracle_run(&oracle);
        let suite = super::root().join("scenarios");
        let ws = Workspace::open(&suite).unwrap();
        let err = Recorder::open(&oracle, &suite, 0, &ws).err().unwrap().to_string();
        assert!(err.contains("agent \"oracle\"") && err.contains("another directory"), "{err}");
    }
}
