//! Regression tests of issue 16 (one hostile request must never take the server down,
//! starve it, or eat its memory): each reproduces one finding of the outside fuzzing
//! campaign and fails without its fix.

use crate::common::{App, NOW, app, app_with};
use axum::body::Body;
use axum::http::{Request, StatusCode};
use emrgym_engine::episode::Workspace;
use emrgym_engine::episodes::{EpisodeApi, app as episodes_app};
use emrgym_engine::session::Recorder;
use emrgym_fhir::clock::{Clock, parse_instant};
use emrgym_fhir::load;
use emrgym_fhir::server::{AppState, ConnLimits, ServerConfig, router, serve_until};
use emrgym_tools::Registry;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tower::ServiceExt;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn episode_server(record: &Path, cfg: ServerConfig) -> App {
    let clock = Clock::fixed(parse_instant(NOW).unwrap());
    let cohort = load::load("demo").unwrap().build(&clock);
    let state = AppState::new(
        cohort,
        ServerConfig {
            clock,
            public_base: Some("http://emr.test".into()),
            ..cfg
        },
    );
    let suite = root().join("scenarios");
    let ws = Workspace::open(&suite).unwrap();
    let rec = Recorder::open(record, &suite, 0, &ws).unwrap();
    let api = EpisodeApi::new(state.clone(), ws, rec).unwrap();
    App {
        router: episodes_app(state, Arc::new(Registry::standard().unwrap()), Some(api)),
    }
}

fn assert_outcome(r: &crate::common::Resp, status: u16, needle: &str) {
    assert_eq!(r.status.as_u16(), status, "{}", r.body);
    assert!(r.header("content-type").starts_with("application/fhir+json"), "{:?}", r.headers);
    let d = r.diag();
    assert!(d.contains(needle), "diagnostics {d:?} lack {needle:?}");
}

/// Finding 1: a chain 2,000 links deep overflowed the stack of the chain resolver.
#[tokio::test]
async fn a_chain_two_thousand_links_deep_is_a_400_not_a_crash() {
    let a = app();
    let deep = format!("/fhir/Patient?{}name=x", "link.".repeat(2000));
    let r = a.get(&deep).await;
    assert_outcome(&r, 400, "2000 links; at most 4");
    // within the limit chains still work
    let ok = a.get("/fhir/Observation?subject:Patient.link.link.name=x").await;
    assert_eq!(ok.status, StatusCode::OK, "{}", ok.body);
    let ok = a.get("/fhir/Observation?subject:Patient.family=nobody").await;
    assert_eq!(ok.status, StatusCode::OK, "{}", ok.body);
}

/// JSON nesting is bounded (serde_json refuses beyond 128 levels) on every route that
/// takes a body, and a Bundle posted inside a Bundle is refused instead of recursed into.
#[tokio::test]
async fn deep_json_and_bundles_inside_bundles_are_400s() {
    let a = app();
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    for uri in ["/fhir/Patient", "/fhir", "/tools/fhir_create", "/sandboxes"] {
        let r = a.req("POST", uri, Some(&deep), &[]).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{uri}: {}", r.body);
        assert_eq!(r.body["resourceType"], "OperationOutcome", "{uri}");
    }
    // a resource nested as deep as accepted validates without exhausting the stack
    let mut ext = json!({"url": "http://x", "valueString": "leaf"});
    for _ in 0..60 {
        ext = json!({"url": "http://x", "extension": [ext]});
    }
    let r = a
        .post("/fhir/Patient", &json!({"resourceType": "Patient", "extension": [ext]}))
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);

    let mut bundle = json!({"resourceType": "Bundle", "type": "transaction", "entry": []});
    for _ in 0..40 {
        bundle = json!({"resourceType": "Bundle", "type": "transaction",
            "entry": [{"request": {"method": "POST", "url": ""}, "resource": bundle}]});
    }
    for kind in ["transaction", "batch"] {
        bundle["type"] = json!(kind);
        let r = a.post("/fhir", &bundle).await;
        assert_outcome(&r, 400, "Bundles inside Bundles are not processed");
        assert!(r.diag().contains("Bundle.entry[0]"), "{}", r.diag());
    }
}

/// Finding 2: `DateTime + TimeDelta` overflowed (a panic) for `now`/`tick_ms` near the edges.
#[tokio::test]
async fn sandbox_clocks_at_the_edges_never_panic() {
    let a = app();
    for (now, tick) in [
        ("9999-12-31T23:59:59Z", 86_400_000i64),
        ("0001-01-01T00:00:00Z", 1),
        ("9999-12-31T23:59:59.999Z", 1),
    ] {
        let sb = a.post("/sandboxes", &json!({"now": now, "tick_ms": tick})).await;
        assert_eq!(sb.status, StatusCode::CREATED, "{}", sb.body);
        let id = sb.body["id"].as_str().unwrap().to_string();
        for _ in 0..3 {
            let r = a
                .post(&format!("/sandboxes/{id}/fhir/Patient"), &json!({"resourceType": "Patient"}))
                .await;
            assert_eq!(r.status, StatusCode::CREATED, "{now} {tick}: {}", r.body);
            let at = r.body["meta"]["lastUpdated"].as_str().unwrap().to_string();
            assert!(at.starts_with("9999") || at.starts_with("0001"), "{at}");
        }
        let info = a.get(&format!("/sandboxes/{id}")).await;
        assert_eq!(info.status, StatusCode::OK);
    }
    let r = a.post("/sandboxes", &json!({"now": NOW, "tick_ms": i64::MAX})).await;
    assert_outcome(&r, 400, &i64::MAX.to_string());
}

/// Finding 5: `--body-limit` did not apply to the tool and episode routes (axum's 2 MiB
/// text/plain 413 did), 405s had empty bodies, bad UTF-8 path parameters were text/plain.
#[tokio::test]
async fn one_body_limit_and_one_error_shape_on_every_route() {
    let dir = tempfile::tempdir().unwrap();
    let s = episode_server(
        &dir.path().join("rec"),
        ServerConfig {
            body_limit: 64,
            ..ServerConfig::default()
        },
    );
    let big = format!("{{\"x\": \"{}\"}}", "a".repeat(200));
    for uri in [
        "/fhir/Patient",
        "/tools/bmi",
        "/sandboxes/x/tools/bmi",
        "/episodes",
        "/episodes/ep1/tools/bmi",
        "/sandboxes",
    ] {
        let r = s.req("POST", uri, Some(&big), &[]).await;
        assert_outcome(&r, 413, "limit of 64 bytes");
    }
    for (method, uri, allowed) in [
        ("DELETE", "/tools", "GET"),
        ("PUT", "/episodes", "POST"),
        ("GET", "/episodes/ep1/finish", "POST"),
    ] {
        let r = s.req(method, uri, None, &[]).await;
        assert_outcome(&r, 405, &format!("{method} is not allowed on {uri}"));
        assert!(r.diag().contains(allowed), "{}", r.diag());
        assert!(!r.header("allow").is_empty());
    }
    for uri in ["/episodes/%FF", "/tools/%FF%FE", "/episodes/%C3%28/guidance"] {
        let r = s.req("GET", uri, None, &[]).await;
        assert_outcome(&r, 400, "Invalid UTF-8");
        assert!(r.diag().contains(uri), "{}", r.diag());
    }
    // unknown routes and methods on the FHIR side were already OperationOutcomes
    assert_outcome(
        &s.req("PATCH", "/fhir/Patient/x", None, &[]).await,
        405,
        "not supported on 'Patient/x'",
    );
    assert_outcome(&s.get("/nowhere").await, 404, "nothing at");
}

/// Finding 6: `DELETE /sandboxes/{episode id}` deleted a live episode's sandbox.
#[tokio::test]
async fn an_episodes_sandbox_belongs_to_the_episode() {
    let dir = tempfile::tempdir().unwrap();
    let s = episode_server(&dir.path().join("rec"), ServerConfig::default());
    let ep = s.post("/episodes", &json!({"instance": "mab-age-001"})).await;
    assert_eq!(ep.status, StatusCode::CREATED, "{}", ep.body);
    let id = ep.body["id"].as_str().unwrap().to_string();
    let r = s.req("DELETE", &format!("/sandboxes/{id}"), None, &[]).await;
    assert_outcome(&r, 409, &format!("belongs to episode {id}"));
    assert!(r.diag().contains(&format!("DELETE /episodes/{id}")), "{}", r.diag());
    // the episode and its sandbox are intact
    assert_eq!(s.get(&format!("/episodes/{id}")).await.body["status"], "active");
    assert_eq!(
        s.get(&format!("/sandboxes/{id}/fhir/Patient/S6534835")).await.status,
        StatusCode::OK
    );
    // the episode's own DELETE ends it and drops the sandbox
    assert_eq!(s.req("DELETE", &format!("/episodes/{id}"), None, &[]).await.status, StatusCode::OK);
    assert_eq!(s.get(&format!("/sandboxes/{id}")).await.status, StatusCode::NOT_FOUND);
    // plain sandboxes are still deleted through /sandboxes
    let sb = s.post("/sandboxes", &json!({})).await;
    let sid = sb.body["id"].as_str().unwrap();
    assert_eq!(
        s.req("DELETE", &format!("/sandboxes/{sid}"), None, &[]).await.status,
        StatusCode::NO_CONTENT
    );
}

/// Finding 7: every ended episode rewrote and fsynced results.jsonl whole (and kept every
/// line in memory): now a line is appended to the same file, and summary.json follows.
#[tokio::test]
async fn the_recorder_appends_one_line_per_episode() {
    use std::os::unix::fs::MetadataExt;
    let dir = tempfile::tempdir().unwrap();
    let rec = dir.path().join("rec");
    let s = episode_server(&rec, ServerConfig::default());
    let mut inode = None;
    let mut sizes = Vec::new();
    for i in 0..4 {
        let ep = s.post("/episodes", &json!({"instance": "mab-age-001"})).await;
        let id = ep.body["id"].as_str().unwrap().to_string();
        let end = s.req("DELETE", &format!("/episodes/{id}"), None, &[]).await;
        assert_eq!(end.status, StatusCode::OK, "{}", end.body);
        assert_eq!(end.body["trial"], i);
        let meta = std::fs::metadata(rec.join("results.jsonl")).unwrap();
        // the same file, grown by one line: never replaced by a rewritten copy
        assert_eq!(*inode.get_or_insert(meta.ino()), meta.ino(), "results.jsonl was replaced");
        sizes.push(meta.len());
    }
    let text = std::fs::read_to_string(rec.join("results.jsonl")).unwrap();
    assert_eq!(text.lines().count(), 4);
    assert!(sizes.windows(2).all(|w| w[1] > w[0]), "{sizes:?}");
    assert!(rec.join("summary.json").exists());
    drop(s);
    // a torn last line (a kill mid-append) is cut when the directory is reopened
    let mut f = std::fs::OpenOptions::new().append(true).open(rec.join("results.jsonl")).unwrap();
    std::io::Write::write_all(&mut f, b"{\"instance\": \"mab-age").unwrap();
    drop(f);
    let s = episode_server(&rec, ServerConfig::default());
    let ep = s.post("/episodes", &json!({"instance": "mab-age-001"})).await;
    let id = ep.body["id"].as_str().unwrap().to_string();
    assert_eq!(s.req("DELETE", &format!("/episodes/{id}"), None, &[]).await.body["trial"], 4);
    let lines = emrgym_engine::rundir::read_results(&rec.join("results.jsonl")).unwrap();
    assert_eq!(lines.iter().map(|l| l.trial).collect::<Vec<_>>(), vec![0, 1, 2, 3, 4]);
}

/// Finding 4b: searches, Bundles and tool calls ran on the async workers, so one heavy
/// request stalled `/health`. On a one-thread runtime the old code could not answer
/// `/health` before the heavy request was done.
#[tokio::test(flavor = "current_thread")]
async fn health_answers_while_a_heavy_request_is_at_work() {
    let a = app();
    let entries: Vec<Value> = (0..3000)
        .map(|i| {
            json!({"fullUrl": format!("urn:uuid:{i}"), "request": {"method": "POST", "url": "Observation"},
            "resource": {"resourceType": "Observation", "status": "final", "code": {"text": format!("x{i}")},
                "subject": {"reference": "Patient/S6534835"}}})
        })
        .collect();
    let bundle = json!({"resourceType": "Bundle", "type": "transaction", "entry": entries}).to_string();
    let req = Request::builder()
        .method("POST")
        .uri("/fhir")
        .header("content-type", "application/fhir+json")
        .body(Body::from(bundle))
        .unwrap();
    let heavy = tokio::spawn(a.router.clone().oneshot(req));
    for _ in 0..5 {
        tokio::task::yield_now().await;
    }
    let t = Instant::now();
    let h = a.get("/health").await;
    assert_eq!(h.status, StatusCode::OK);
    assert!(!heavy.is_finished(), "the transaction finished before /health answered");
    let done = heavy.await.unwrap().unwrap();
    assert_eq!(done.status(), StatusCode::OK);
    assert!(t.elapsed() > Duration::from_millis(1));
}

/// Finding 4b: per-request deadlines answer 408, a full work queue answers 503, both as
/// OperationOutcomes; the async workers stay free.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deadlines_answer_408_and_a_full_queue_503() {
    let a = app_with(
        "demo",
        ServerConfig {
            request_timeout: Duration::ZERO,
            ..ServerConfig::default()
        },
    );
    let r = a.get("/fhir/Observation?code:text=a,b,c").await;
    assert_outcome(&r, 408, "deadline of 0 ms");
    assert_eq!(a.get("/health").await.status, StatusCode::OK);

    let clock = Clock::fixed(parse_instant(NOW).unwrap());
    let state = AppState::new(
        load::load("demo").unwrap().build(&clock),
        ServerConfig {
            max_work: 1,
            request_timeout: Duration::from_millis(200),
            ..ServerConfig::default()
        },
    );
    let slow = {
        let st = state.clone();
        tokio::spawn(async move {
            st.offload(|| {
                std::thread::sleep(Duration::from_millis(1500));
                emrgym_fhir::server::fhir_json(200, &json!({}))
            })
            .await
        })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    let t = Instant::now();
    let busy = state.offload(|| emrgym_fhir::server::fhir_json(200, &json!({}))).await;
    assert_eq!(busy.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(busy.headers()["retry-after"], "1");
    assert!(t.elapsed() < Duration::from_millis(1000));
    // the stuck work is answered 408 at its deadline (+1 s), not when it returns
    let late = slow.await.unwrap();
    assert_eq!(late.status(), StatusCode::REQUEST_TIMEOUT);
    let health = router(state)
        .oneshot(Request::get("/health").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(health.status(), StatusCode::OK);
}

async fn read_all(s: &mut tokio::net::TcpStream, within: Duration) -> Option<String> {
    use tokio::io::AsyncReadExt;
    let mut buf = Vec::new();
    match tokio::time::timeout(within, s.read_to_end(&mut buf)).await {
        Ok(_) => Some(String::from_utf8_lossy(&buf).into_owned()),
        Err(_) => None,
    }
}

/// The FHIR router over the demo cohort, served on a free local port under `limits` until
/// [`Served::stop`].
struct Served {
    addr: std::net::SocketAddr,
    stop_tx: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Served {
    async fn start(limits: ConnLimits) -> Served {
        let clock = Clock::fixed(parse_instant(NOW).unwrap());
        let state = AppState::new(load::load("demo").unwrap().build(&clock), ServerConfig::default());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(serve_until(router(state), listener, limits, async {
            let _ = stop_rx.await;
        }));
        Served { addr, stop_tx, task }
    }

    /// Shut the server down and wait for it to end cleanly.
    async fn stop(self) {
        let _ = self.stop_tx.send(());
        self.task.await.unwrap().unwrap();
    }
}

/// Finding 4a: idle and slow-loris connections were never closed and 1,100 of them
/// exhausted the file descriptors. Now: a header-read timeout closes silent and slow
/// connections, and beyond the connection limit a client gets a 503 OperationOutcome.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_and_slow_connections_are_closed_and_the_limit_answers_503() {
    use tokio::io::AsyncWriteExt;
    use tokio::net::TcpStream;
    let limits = ConnLimits {
        max_connections: 3,
        header_timeout: Duration::from_millis(400),
        write_timeout: Duration::from_secs(30),
    };
    let server = Served::start(limits).await;
    let addr = server.addr;
    // two silent connections and one slow loris hold the three slots
    let mut silent1 = TcpStream::connect(addr).await.unwrap();
    let mut silent2 = TcpStream::connect(addr).await.unwrap();
    let mut loris = TcpStream::connect(addr).await.unwrap();
    loris.write_all(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n").await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let mut fourth = TcpStream::connect(addr).await.unwrap();
    let refused = read_all(&mut fourth, Duration::from_secs(2))
        .await
        .expect("the fourth connection is answered");
    assert!(refused.starts_with("HTTP/1.1 503"), "{refused}");
    assert!(
        refused.contains("OperationOutcome") && refused.contains("limit of 3 open connections"),
        "{refused}"
    );
    // the loris keeps dribbling header bytes, yet is closed at the header timeout
    let t = Instant::now();
    for _ in 0..4 {
        let _ = loris.write_all(b"X-A: b\r\n").await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for s in [&mut silent1, &mut silent2, &mut loris] {
        let text = read_all(s, Duration::from_secs(3)).await;
        assert!(text.is_some(), "a silent or slow connection was not closed");
    }
    assert!(t.elapsed() < Duration::from_secs(3));
    // the slots are free again: a normal request is served, and keep-alive works
    let mut ok = TcpStream::connect(addr).await.unwrap();
    ok.write_all(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let text = read_all(&mut ok, Duration::from_secs(3)).await.unwrap();
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    server.stop().await;
}

/// Read until the peer closes (EOF or a reset): true, or false when it is still open after
/// `within`.
async fn closed_within(s: &mut tokio::net::TcpStream, within: Duration) -> bool {
    use tokio::io::AsyncReadExt;
    let mut buf = vec![0u8; 1 << 16];
    let drain = async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    };
    tokio::time::timeout(within, drain).await.is_ok()
}

/// Issue 16, starvation: a client that pipelines requests and never reads the answers held
/// its connection, its slot under `--max-connections` and the answers buffered for it
/// forever (the header-read timeout covers only reads). Now a write that makes no progress
/// for the write timeout closes the connection, and the server keeps answering others.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_reads_its_answers_is_closed_and_others_are_served() {
    use tokio::io::AsyncWriteExt;
    use tokio::net::TcpStream;
    let limits = ConnLimits {
        max_connections: 2,
        // far longer than the wait below: only the write timeout can close the reader-less client
        header_timeout: Duration::from_secs(600),
        write_timeout: Duration::from_millis(500),
    };
    let server = Served::start(limits).await;
    let addr = server.addr;
    // the hostile client: a small receive buffer, pipelined requests for a large answer (the
    // CapabilityStatement), never a byte read
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    let mut hostile = sock.connect(addr).await.unwrap();
    let req = b"GET /fhir/metadata HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";
    let mut sent = 0;
    for _ in 0..2000 {
        match tokio::time::timeout(Duration::from_secs(2), hostile.write_all(req)).await {
            Ok(Ok(())) => sent += 1,
            _ => break,
        }
    }
    assert!(sent > 10, "sent {sent} requests");
    // the other slot serves other clients meanwhile
    let mut other = TcpStream::connect(addr).await.unwrap();
    other
        .write_all(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let text = read_all(&mut other, Duration::from_secs(30)).await.unwrap();
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    // leave it unread well past the write timeout
    tokio::time::sleep(Duration::from_secs(3)).await;
    // the hostile connection is closed by the server: reading it now ends (EOF or reset)
    // after what was already buffered, instead of the server answering all its requests
    assert!(
        closed_within(&mut hostile, Duration::from_secs(60)).await,
        "a client that never read its answers was not closed"
    );
    // its slot is free again: two clients at once are both served
    let mut served = false;
    for _ in 0..50 {
        let (mut a, mut b) = (TcpStream::connect(addr).await.unwrap(), TcpStream::connect(addr).await.unwrap());
        for s in [&mut a, &mut b] {
            let _ = s
                .write_all(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
                .await;
        }
        let ta = read_all(&mut a, Duration::from_secs(10)).await.unwrap_or_default();
        let tb = read_all(&mut b, Duration::from_secs(10)).await.unwrap_or_default();
        if ta.starts_with("HTTP/1.1 200") && tb.starts_with("HTTP/1.1 200") {
            served = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(served, "the closed client's slot was never freed");
    server.stop().await;
}

/// The `(type, id)` of a Bundle's entries in search mode `mode`.
fn entries_in_mode(bundle: &Value, mode: &str) -> Vec<Value> {
    bundle["entry"]
        .as_array()
        .map(|es| es.iter().filter(|e| e["search"]["mode"] == mode).cloned().collect())
        .unwrap_or_default()
}

/// Issue 16: `_include`/`_revinclude` (and their `:iterate` rounds) put every resource they
/// reached into one answer, however many: one GET could build a Bundle of the whole cohort.
/// Now at most `MAX_INCLUDED` are included and the Bundle carries a `too-costly` warning
/// saying the rest were left out (the way HAPI and the Microsoft FHIR server cut them).
#[tokio::test]
async fn included_resources_are_capped_with_a_warning() {
    use emrgym_fhir::store::MAX_INCLUDED;
    let a = app();
    // one patient with more observations than the cap (the demo cohort has 190 in all)
    let p = a.get("/fhir/Patient?_count=1").await;
    let pid = p.body["entry"][0]["resource"]["id"].as_str().unwrap().to_string();
    let entries: Vec<Value> = (0..MAX_INCLUDED + 100)
        .map(|i| {
            json!({"resource": {"resourceType": "Observation", "status": "final", "code": {"text": format!("n{i}")},
                "subject": {"reference": format!("Patient/{pid}")}}, "request": {"method": "POST", "url": "Observation"}})
        })
        .collect();
    let tx = json!({"resourceType": "Bundle", "type": "batch", "entry": entries}).to_string();
    let r = a.req("POST", "/fhir", Some(&tx), &[]).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let location = r.body["entry"][0]["response"]["location"].as_str().unwrap().to_string();
    let parts: Vec<&str> = location.split('/').collect();
    let at = parts.iter().position(|p| *p == "Observation").unwrap();
    let oid = parts[at + 1].to_string();
    for uri in [
        format!("/fhir/Patient?_id={pid}&_revinclude=Observation:subject"),
        "/fhir/Patient?_count=1000&_revinclude=Observation:subject&_revinclude:iterate=Observation:has-member".to_string(),
        // one observation, its patient, then (iterate) every observation of that patient
        format!("/fhir/Observation?_id={oid}&_include=Observation:subject&_revinclude:iterate=Observation:subject"),
    ] {
        let uri = uri.as_str();
        let r = a.get(uri).await;
        assert_eq!(r.status, StatusCode::OK, "{uri}: {}", r.body);
        let included = entries_in_mode(&r.body, "include");
        assert_eq!(included.len(), MAX_INCLUDED, "{uri}");
        let outcomes = entries_in_mode(&r.body, "outcome");
        let warning = outcomes
            .iter()
            .find(|e| e["resource"]["issue"][0]["code"] == "too-costly")
            .unwrap_or_else(|| panic!("{uri}: no too-costly warning in {outcomes:?}"));
        assert_eq!(warning["resource"]["resourceType"], "OperationOutcome");
        assert_eq!(warning["resource"]["issue"][0]["severity"], "warning");
        let d = warning["resource"]["issue"][0]["diagnostics"].as_str().unwrap();
        assert!(d.contains(&format!("more than {MAX_INCLUDED}")), "{d}");
        // no resource is included twice
        let mut keys: Vec<String> = included
            .iter()
            .map(|e| format!("{}/{}", e["resource"]["resourceType"], e["resource"]["id"]))
            .collect();
        keys.sort();
        keys.dedup();
        assert_eq!(keys.len(), MAX_INCLUDED, "{uri}");
    }
    // below the cap: everything is included and there is no warning
    let r = a.get("/fhir/Patient?_count=1&_offset=1&_revinclude=Observation:subject").await;
    assert_eq!(r.status, StatusCode::OK);
    let n = entries_in_mode(&r.body, "include").len();
    assert!(n > 0 && n < MAX_INCLUDED, "{n}");
    assert!(entries_in_mode(&r.body, "outcome").is_empty(), "{}", r.body);
}
