//! A cheating agent (issue 20): an adversarial client holding one episode's token tries
//! every way it could reach the answer key, another episode or the operator's controls, and
//! a web page tries to drive the server. Each attempt must get a clear refusal: the right
//! status and an OperationOutcome that says why. The operator, meanwhile, keeps every
//! capability and reads the full grade.

use crate::common::{App, Resp, episode_server};
use emrgym_engine::episode::Workspace;
use emrgym_engine::episodes::Limits;
use emrgym_engine::session::{Feedback, Recorder};
use serde_json::{Value, json};
use std::path::PathBuf;

const OP: &str = "operator-s3cret";

fn bearer(t: &str) -> String {
    format!("Bearer {t}")
}

/// A refusal: this status, an OperationOutcome, diagnostics naming `needle`.
fn refused(r: &Resp, status: u16, needle: &str) {
    assert_eq!(r.status.as_u16(), status, "{}", r.body);
    let d = r.diag();
    assert!(d.contains(needle), "diagnostics {d:?} lack {needle:?}");
}

struct Episode {
    id: String,
    token: String,
}

async fn open(s: &App, instance: &str, op: &[(&str, &str)]) -> Episode {
    let r = s
        .req("POST", "/episodes", Some(&json!({"instance": instance}).to_string()), op)
        .await;
    assert_eq!(r.status.as_u16(), 201, "{}", r.body);
    let token = r.body["token"].as_str().unwrap().to_string();
    assert_eq!(token.len(), 64, "256 bits, hex");
    Episode {
        id: r.body["id"].as_str().unwrap().to_string(),
        token,
    }
}

fn text(v: &Value) -> String {
    v.to_string()
}

#[tokio::test]
async fn an_episode_token_reaches_its_own_episode_and_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let (s, _) = episode_server(&dir.path().join("rec"), Some(OP), Limits::default());
    let op_auth = bearer(OP);
    let op = [("authorization", op_auth.as_str())];
    let mine = open(&s, "mab-age-001", &op).await;
    let theirs = open(&s, "mab-k-001", &op).await;
    let auth = bearer(&mine.token);
    let me = [("authorization", auth.as_str())];
    let (m, t) = (&mine.id, &theirs.id);

    // its own episode works: view, tool, REST, sandbox tool route, its instance in /scenarios
    let own = s.req("GET", &format!("/episodes/{m}"), None, &me).await;
    assert_eq!(own.status.as_u16(), 200, "{}", own.body);
    assert!(own.body.get("token").is_none(), "the token is shown once, at creation");
    let read = json!({"resource_type": "Patient", "id": "S6534835"}).to_string();
    let r = s.req("POST", &format!("/episodes/{m}/tools/fhir_read"), Some(&read), &me).await;
    assert_eq!(r.status.as_u16(), 200, "{}", r.body);
    let r = s.req("POST", &format!("/sandboxes/{m}/tools/fhir_read"), Some(&read), &me).await;
    assert_eq!(r.status.as_u16(), 200, "{}", r.body);
    let r = s.req("GET", &format!("/sandboxes/{m}/fhir/Patient/S6534835"), None, &me).await;
    assert_eq!(r.status.as_u16(), 200, "{}", r.body);
    let sc = s.req("GET", "/scenarios", None, &me).await;
    assert_eq!(sc.status.as_u16(), 200);
    assert_eq!(sc.body["count"], 1, "an agent sees its own instance only");
    assert_eq!(sc.body["instances"][0]["id"], "mab-age-001");

    // everything else is refused, 403, naming the episode the token belongs to
    let obs = json!({"resourceType": "Observation", "status": "final", "code": {"text": "x"},
        "subject": {"reference": "Patient/S6534835"}})
    .to_string();
    let attacks: Vec<(&str, String, Option<String>)> = vec![
        ("GET", "/episodes".into(), None),
        ("POST", "/episodes".into(), Some(json!({"instance": "mab-age-001"}).to_string())),
        ("GET", format!("/episodes/{t}"), None),
        ("GET", format!("/episodes/{t}/guidance"), None),
        ("POST", format!("/episodes/{t}/tools/fhir_read"), Some(read.clone())),
        ("POST", format!("/episodes/{t}/finish"), Some(json!({"answer": 1}).to_string())),
        ("DELETE", format!("/episodes/{t}"), None),
        ("DELETE", format!("/episodes/{m}"), None),
        ("GET", format!("/sandboxes/{t}/fhir/Patient/S6534835"), None),
        ("POST", format!("/sandboxes/{t}/fhir/Observation"), Some(obs.clone())),
        ("POST", format!("/sandboxes/{t}/tools/fhir_read"), Some(read.clone())),
        ("GET", "/sandboxes".into(), None),
        ("POST", "/sandboxes".into(), Some("{}".into())),
        ("GET", format!("/sandboxes/{m}"), None),
        ("DELETE", format!("/sandboxes/{t}"), None),
        ("GET", "/fhir/Patient?_count=1".into(), None),
        ("POST", "/fhir/Observation".into(), Some(obs.clone())),
        ("GET", "/tools".into(), None),
        ("POST", "/tools/fhir_read".into(), Some(read.clone())),
        // path tricks: a dot segment, an encoded id
        ("POST", format!("/episodes/{m}/../{t}/finish"), Some("{}".into())),
        ("GET", format!("/episodes/{}", t.replace('e', "%65")), None),
    ];
    for (method, path, body) in &attacks {
        let r = s.req(method, path, body.as_deref(), &me).await;
        assert_eq!(r.status.as_u16(), 403, "{method} {path}: {}", r.body);
        let d = r.diag();
        assert!(d.contains(&format!("only its own episode ({m})")), "{method} {path}: {d}");
        assert_eq!(r.body["issue"][0]["code"], "forbidden");
    }
    // nothing of theirs moved: no step recorded, no write landed
    let theirs_now = s.req("GET", &format!("/episodes/{t}"), None, &op).await;
    assert_eq!(
        (theirs_now.body["steps"].as_u64(), theirs_now.body["status"].as_str()),
        (Some(0), Some("active"))
    );
    let listed = s.req("GET", "/episodes", None, &op).await;
    assert_eq!(listed.body["count"], 2, "the agent created nothing");

    // no token, a guessed token, the operator's token cut short: 401 with WWW-Authenticate
    for given in [
        None,
        Some("Bearer 0000"),
        Some("Bearer operator-s3cre"),
        Some(&auth[..auth.len() - 1]),
    ] {
        let h: Vec<(&str, &str)> = given.map(|g| ("authorization", g)).into_iter().collect();
        let r = s.req("GET", &format!("/episodes/{m}"), None, &h).await;
        refused(&r, 401, "Authorization: Bearer");
        assert_eq!(r.header("www-authenticate"), "Bearer");
    }
    // the operator reaches everything
    assert_eq!(s.req("GET", "/sandboxes", None, &op).await.status.as_u16(), 200);
    assert_eq!(s.req("GET", &format!("/episodes/{m}"), None, &op).await.status.as_u16(), 200);
    // a DELETE by the operator withdraws the episode's token
    assert_eq!(s.req("DELETE", &format!("/episodes/{m}"), None, &op).await.status.as_u16(), 200);
    let r = s.req("GET", &format!("/sandboxes/{m}/fhir/Patient/S6534835"), None, &me).await;
    refused(&r, 401, "neither the operator's nor a live episode's");
}

#[tokio::test]
async fn probing_episodes_yields_no_answer_key_and_the_operator_gets_the_grade() {
    let dir = tempfile::tempdir().unwrap();
    let record = dir.path().join("rec");
    let (s, _) = episode_server(&record, Some(OP), Limits::default());
    let op_auth = bearer(OP);
    let op = [("authorization", op_auth.as_str())];
    // three doors to finish: the finish URL, the episode's tool route, the sandbox's tool route
    let doors = [
        "/episodes/{id}/finish",
        "/episodes/{id}/tools/finish",
        "/sandboxes/{id}/tools/finish",
    ];
    let mut tokens = Vec::new();
    for door in doors {
        let ep = open(&s, "mab-age-001", &op).await;
        let auth = bearer(&ep.token);
        let me = [("authorization", auth.as_str())];
        let done = s
            .req(
                "POST",
                &door.replace("{id}", &ep.id),
                Some(&json!({"answer": null}).to_string()),
                &me,
            )
            .await;
        assert_eq!(done.status.as_u16(), 200, "{door}: {}", done.body);
        let seen = if door.ends_with("/finish") && !door.contains("tools") {
            done.body.clone()
        } else {
            done.body["episode"].clone()
        };
        assert_eq!(seen, json!({"id": ep.id, "ended": true, "end": "finished"}), "{door}");
        let view = s.req("GET", &format!("/episodes/{}", ep.id), None, &me).await;
        assert_eq!(view.body["result"], seen, "{door}");
        for leak in ["grade", "expected", "success", "progress", "62", "node", "run_dir"] {
            assert!(!text(&done.body).contains(leak), "{door} leaks {leak}: {}", done.body);
            assert!(!text(&view.body["result"]).contains(leak), "{door} leaks {leak}: {}", view.body);
        }
        // the operator reads the whole grade, expected answer included
        let full = s.req("GET", &format!("/episodes/{}", ep.id), None, &op).await;
        assert_eq!(full.body["result"]["success"], false);
        assert_eq!(full.body["result"]["grade"]["answer"]["expected"], 62, "{}", full.body["result"]);
        tokens.push(ep.token);
    }
    // tokens are random and never recorded
    let mut files = vec![record.join("manifest.json"), record.join("results.jsonl")];
    files.extend(std::fs::read_dir(record.join("trajectories")).unwrap().map(|e| e.unwrap().path()));
    for f in files {
        let body = std::fs::read_to_string(&f).unwrap();
        for t in &tokens {
            assert!(!body.contains(t.as_str()), "{} holds a token", f.display());
        }
    }
}

#[tokio::test]
async fn feedback_policies_give_at_most_success_and_progress() {
    for (feedback, want) in [
        (Feedback::Success, json!({"end": "finished", "success": false})),
        (Feedback::Progress, json!({"end": "finished", "success": false, "progress": 0.0})),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let limits = Limits {
            feedback,
            ..Limits::default()
        };
        let (s, _) = episode_server(&dir.path().join("rec"), None, limits);
        let r = s
            .req("POST", "/episodes", Some(&json!({"instance": "mab-age-001"}).to_string()), &[])
            .await;
        let (id, token) = (r.body["id"].as_str().unwrap(), r.body["token"].as_str().unwrap());
        let auth = bearer(token);
        let done = s
            .req(
                "POST",
                &format!("/episodes/{id}/finish"),
                Some(r#"{"answer": 1}"#),
                &[("authorization", &auth)],
            )
            .await;
        let mut want = want.clone();
        want["id"] = json!(id);
        want["ended"] = json!(true);
        assert_eq!(done.body, want, "{feedback:?}");
        let m: Value = serde_json::from_str(&std::fs::read_to_string(dir.path().join("rec/manifest.json")).unwrap()).unwrap();
        assert_eq!(m["access"]["agent_feedback"], serde_json::to_value(feedback).unwrap());
        assert_eq!(m["access"]["operator"], "loopback");
    }
}

#[tokio::test]
async fn without_an_operator_token_loopback_is_the_operator_but_an_episode_token_stays_confined() {
    let dir = tempfile::tempdir().unwrap();
    let (s, _) = episode_server(&dir.path().join("rec"), None, Limits::default());
    let a = open(&s, "mab-age-001", &[]).await;
    let b = open(&s, "mab-age-001", &[]).await;
    let auth = bearer(&a.token);
    let me = [("authorization", auth.as_str())];
    refused(&s.req("GET", "/episodes", None, &me).await, 403, "only its own episode");
    refused(
        &s.req("GET", &format!("/episodes/{}", b.id), None, &me).await,
        403,
        "only its own episode",
    );
    let r = s.req("GET", &format!("/sandboxes/{}/fhir/Patient/S6534835", a.id), None, &me).await;
    assert_eq!(r.status.as_u16(), 200);
    // a token nobody granted is no fallback to the loopback operator
    refused(
        &s.req("GET", "/episodes", None, &[("authorization", "Bearer x")]).await,
        401,
        "neither",
    );
    assert_eq!(s.req("GET", "/episodes", None, &[]).await.body["count"], 2);
}

#[tokio::test]
async fn web_pages_cannot_drive_the_server() {
    let dir = tempfile::tempdir().unwrap();
    // no token: the loopback operator, the case a page in a local browser would exploit
    let (s, _) = episode_server(&dir.path().join("rec"), None, Limits::default());
    let episode = json!({"instance": "mab-age-001"}).to_string();
    let create = json!({"resource_type": "Observation", "resource": {"resourceType": "Observation", "status": "final",
        "code": {"text": "csrf"}, "subject": {"reference": "Patient/S6534835"}}})
    .to_string();
    let plain = ("content-type", "text/plain");
    // CSRF-style bodies: text/plain (a form or a no-cors fetch), and a JSON body hidden in a
    // simple type's parameters
    for (path, body) in [
        ("/tools/fhir_create", create.as_str()),
        ("/episodes", episode.as_str()),
        ("/sandboxes", "{}"),
        ("/fhir/Patient/_search", "{}"),
    ] {
        refused(
            &s.req("POST", path, Some(body), &[plain]).await,
            415,
            "send Content-Type: application/json",
        );
        let tricked = ("content-type", "text/plain; charset=application/json");
        refused(&s.req("POST", path, Some(body), &[tricked]).await, 415, "application/json");
        let form = ("content-type", "multipart/form-data; boundary=x");
        refused(&s.req("POST", path, Some(body), &[form]).await, 415, "application/json");
    }
    // a foreign Origin is refused whatever the body
    let evil = ("origin", "http://evil.example");
    let json_ct = ("content-type", "application/json");
    refused(
        &s.req("POST", "/episodes", Some(&episode), &[evil, json_ct]).await,
        403,
        "Origin 'http://evil.example'",
    );
    refused(
        &s.req("POST", "/tools/fhir_create", Some(&create), &[evil, json_ct]).await,
        403,
        "refused",
    );
    refused(&s.req("GET", "/episodes", None, &[evil]).await, 403, "refused");
    refused(&s.req("GET", "/episodes", None, &[("origin", "null")]).await, 403, "refused");
    // DNS rebinding: a page on evil.example resolved to 127.0.0.1 sends its own Host
    let rebound = ("host", "evil.example:8080");
    let r = s.req("GET", "/episodes", None, &[rebound]).await;
    refused(&r, 421, "Host 'evil.example' is not a name of this server");
    assert_eq!(r.body["issue"][0]["code"], "forbidden");
    refused(&s.req("GET", "/health", None, &[rebound]).await, 421, "DNS rebinding");
    // nothing happened
    let listed = s.req("GET", "/episodes", None, &[]).await;
    assert_eq!(listed.body["count"], 0);
    let found = s.req("GET", "/fhir/Observation?code:text=csrf", None, &[]).await;
    assert_eq!(found.body["total"], 0, "{}", found.body);
    // the same requests from a real client pass: JSON, our Host, our own origin
    let ok = s
        .req(
            "POST",
            "/episodes",
            Some(&episode),
            &[("host", "127.0.0.1:8080"), ("origin", "http://localhost:8080"), json_ct],
        )
        .await;
    assert_eq!(ok.status.as_u16(), 201, "{}", ok.body);
    let ok = s
        .req("POST", "/tools/fhir_create", Some(&create), &[("host", "[::1]:80"), json_ct])
        .await;
    assert!(ok.status.is_success(), "{}", ok.body);
}

#[tokio::test]
async fn budgets_bound_probing_and_abandoned_episodes_are_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let record = dir.path().join("rec");
    let limits = Limits {
        per_instance: Some(3),
        open_per_instance: Some(1),
        ..Limits::default()
    };
    let (s, api) = episode_server(&record, Some(OP), limits);
    let op_auth = bearer(OP);
    let op = [("authorization", op_auth.as_str())];
    let body = json!({"instance": "mab-age-001"}).to_string();
    let first = open(&s, "mab-age-001", &op).await;
    let r = s.req("POST", "/episodes", Some(&body), &op).await;
    refused(&r, 429, "mab-age-001 has 1 open episodes");
    assert_eq!(r.body["issue"][0]["code"], "throttled");
    // another instance is not held back
    let other = open(&s, "mab-k-001", &op).await;
    let auth = bearer(&first.token);
    let done = s
        .req(
            "POST",
            &format!("/episodes/{}/finish", first.id),
            Some(r#"{"answer": null}"#),
            &[("authorization", &auth)],
        )
        .await;
    assert_eq!(done.status.as_u16(), 200, "{}", done.body);
    let second = open(&s, "mab-age-001", &op).await;
    assert_eq!(
        s.req("DELETE", &format!("/episodes/{}", second.id), None, &op)
            .await
            .status
            .as_u16(),
        200
    );
    let _third = open(&s, "mab-age-001", &op).await;
    // the third is open (abandoned below); even once it ends, the instance has used its 3
    let r = s.req("POST", "/episodes", Some(&body), &op).await;
    assert_eq!(r.status.as_u16(), 429);
    // a REST step in the other episode, then the server stops with two episodes open
    let auth = bearer(&other.token);
    let r = s
        .req(
            "GET",
            &format!("/sandboxes/{}/fhir/Patient/S6534835", other.id),
            None,
            &[("authorization", &auth)],
        )
        .await;
    assert_eq!(r.status.as_u16(), 200);
    assert_eq!(api.abandon_all(), 2);
    assert_eq!(api.abandon_all(), 0, "once");
    let r = s.req("POST", "/episodes", Some(&body), &op).await;
    refused(&r, 429, "mab-age-001 has used its 3 episodes");
    api.flush();
    let lines: Vec<Value> = std::fs::read_to_string(record.join("results.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let mut ends: Vec<(String, u64, String)> = lines
        .iter()
        .map(|l| {
            (
                l["instance"].as_str().unwrap().into(),
                l["trial"].as_u64().unwrap(),
                l["end"].as_str().unwrap().into(),
            )
        })
        .collect();
    ends.sort();
    assert_eq!(
        ends,
        [
            ("mab-age-001".into(), 0, "finished".into()),
            ("mab-age-001".into(), 1, "stopped".into()),
            ("mab-age-001".into(), 2, "abandoned".into()),
            ("mab-k-001".into(), 0, "abandoned".into()),
        ]
    );
    let m: Value = serde_json::from_str(&std::fs::read_to_string(record.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(
        m["access"],
        json!({"interface": "http", "operator": "token", "agent_feedback": "none",
            "max_episodes_per_instance": 3, "max_open_episodes_per_instance": 1, "episode_idle_timeout_s": null})
    );
    // a server under other rules may not continue this recording
    let suite = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scenarios");
    let ws = Workspace::open(&suite).unwrap();
    let err = Recorder::open(&record, &suite, 0, &ws)
        .unwrap()
        .with_access(Limits::default().to_json())
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("other access rules"), "{err}");
}

#[tokio::test]
async fn idle_episodes_expire_as_abandoned_and_free_their_slot() {
    let dir = tempfile::tempdir().unwrap();
    let record = dir.path().join("rec");
    let limits = Limits {
        open_per_instance: Some(1),
        idle_timeout: Some(std::time::Duration::from_secs(3600)),
        ..Limits::default()
    };
    let (s, api) = episode_server(&record, Some(OP), limits);
    let op_auth = bearer(OP);
    let op = [("authorization", op_auth.as_str())];
    let ep = open(&s, "mab-age-001", &op).await;
    let auth = bearer(&ep.token);
    let me = [("authorization", auth.as_str())];
    let read = json!({"resource_type": "Patient", "id": "S6534835"}).to_string();
    let url = format!("/episodes/{}/tools/fhir_read", ep.id);
    assert_eq!(s.req("POST", &url, Some(&read), &me).await.status.as_u16(), 200);
    assert_eq!(
        api.expire_idle(std::time::Duration::from_secs(3600)),
        0,
        "a recent call is not idle"
    );
    let body = json!({"instance": "mab-age-001"}).to_string();
    assert_eq!(s.req("POST", "/episodes", Some(&body), &op).await.status.as_u16(), 429);
    assert_eq!(api.expire_idle(std::time::Duration::ZERO), 1);
    // the agent learns that it ended; its calls are refused; the slot is free
    refused(&s.req("POST", &url, Some(&read), &me).await, 409, "has ended");
    let view = s.req("GET", &format!("/episodes/{}", ep.id), None, &me).await;
    assert_eq!(view.body["result"], json!({"id": ep.id, "ended": true, "end": "abandoned"}));
    open(&s, "mab-age-001", &op).await;
    let line: Value = serde_json::from_str(
        std::fs::read_to_string(record.join("results.jsonl"))
            .unwrap()
            .lines()
            .next()
            .unwrap(),
    )
    .unwrap();
    assert_eq!((line["end"].as_str(), line["trial"].as_u64()), (Some("abandoned"), Some(0)));
    let m: Value = serde_json::from_str(&std::fs::read_to_string(record.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(m["access"]["episode_idle_timeout_s"], 3600);
}
