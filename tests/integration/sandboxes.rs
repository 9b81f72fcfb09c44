//! Sandbox lifecycle and isolation, over the router and through the Rust API.

use crate::common::app;
use axum::http::StatusCode;
use emrgym_fhir::store::CreateOutcome;
use emrgym_fhir::{Sandbox, SandboxOptions};
use serde_json::json;

#[tokio::test]
async fn forks_are_isolated_and_droppable() {
    let a = app();
    let s1 = a.req("POST", "/sandboxes", None, &[]).await;
    assert_eq!(s1.status, StatusCode::CREATED);
    let id1 = s1.body["id"].as_str().unwrap().to_string();
    assert_eq!(s1.body["fhirBase"], format!("http://emr.test/sandboxes/{id1}/fhir"));
    assert_eq!(s1.header("location"), format!("http://emr.test/sandboxes/{id1}"));
    let id2 = a.req("POST", "/sandboxes", None, &[]).await.body["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_ne!(id1, id2);
    let created = a
        .post(
            &format!("/sandboxes/{id1}/fhir/Patient"),
            &json!({"resourceType":"Patient","name":[{"family":"Only-in-one"}]}),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED);
    assert_eq!(
        created.header("location").split("/_history").next().unwrap(),
        format!(
            "http://emr.test/sandboxes/{id1}/fhir/Patient/{}",
            created.body["id"].as_str().unwrap()
        )
    );
    let q = "Patient?family=Only-in-one&_summary=count";
    assert_eq!(a.get(&format!("/sandboxes/{id1}/fhir/{q}")).await.body["total"], 1);
    assert_eq!(a.get(&format!("/sandboxes/{id2}/fhir/{q}")).await.body["total"], 0);
    assert_eq!(a.get(&format!("/fhir/{q}")).await.body["total"], 0);
    let list = a.get("/sandboxes").await;
    assert_eq!(list.body["sandboxes"], json!([id1.clone(), id2.clone()]));
    let info = a.get(&format!("/sandboxes/{id1}")).await;
    assert_eq!(info.body["writes"], 1);
    assert_eq!(
        a.req("DELETE", &format!("/sandboxes/{id1}"), None, &[]).await.status,
        StatusCode::NO_CONTENT
    );
    let gone = a.get(&format!("/sandboxes/{id1}/fhir/Patient")).await;
    assert_eq!(gone.status, StatusCode::NOT_FOUND);
    assert!(gone.diag().contains(&id1));
    assert_eq!(
        a.req("DELETE", &format!("/sandboxes/{id1}"), None, &[]).await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        a.req("DELETE", "/sandboxes/default", None, &[]).await.status,
        StatusCode::METHOD_NOT_ALLOWED
    );
    assert_eq!(a.req("PUT", "/sandboxes", None, &[]).await.status, StatusCode::METHOD_NOT_ALLOWED);
}

#[tokio::test]
async fn sandbox_clock_and_seed() {
    let a = app();
    let mk = |body: &'static str| {
        let a = &a;
        async move {
            a.req("POST", "/sandboxes", Some(body), &[("content-type", "application/json")])
                .await
        }
    };
    let s = mk(r#"{"seed": 42, "now": "2024-05-01T08:00:00Z", "tick_ms": 1000}"#).await;
    assert_eq!(s.status, StatusCode::CREATED, "{}", s.body);
    assert_eq!(s.body["now"], "2024-05-01T08:00:00.000Z");
    let t = mk(r#"{"seed": 42}"#).await;
    let id_s = s.body["id"].as_str().unwrap();
    let id_t = t.body["id"].as_str().unwrap();
    let p = json!({"resourceType":"Patient"});
    let c1 = a.post(&format!("/sandboxes/{id_s}/fhir/Patient"), &p).await;
    let c2 = a.post(&format!("/sandboxes/{id_s}/fhir/Patient"), &p).await;
    assert_eq!(c1.body["meta"]["lastUpdated"], "2024-05-01T08:00:00.000Z");
    assert_eq!(c2.body["meta"]["lastUpdated"], "2024-05-01T08:00:01.000Z");
    let d1 = a.post(&format!("/sandboxes/{id_t}/fhir/Patient"), &p).await;
    assert_eq!(c1.body["id"], d1.body["id"], "same seed, same ids");
    for (body, needle) in [
        (r#"{"now": "tomorrow"}"#, "'tomorrow'"),
        (r#"{"seed": -1}"#, "seed"),
        (r#"{"colour": 1}"#, "colour"),
        (r#"{"tick_ms": 5}"#, "needs now"),
    ] {
        let r = mk(body).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{body}");
        assert!(r.diag().contains(needle), "{body}: {}", r.diag());
    }
}

#[test]
fn in_process_fork_is_copy_on_write() {
    let cohort = emrgym_fhir::load::load("demo").unwrap().build(&emrgym_fhir::Clock::System);
    let n = cohort.len();
    let mut forks: Vec<Sandbox> = (0..1000)
        .map(|i| {
            Sandbox::fork(
                &cohort,
                SandboxOptions {
                    seed: i,
                    ..Default::default()
                },
            )
        })
        .collect();
    let CreateOutcome::Created(v) = forks[7].create("Patient", json!({"resourceType":"Patient"}), None).unwrap() else {
        panic!()
    };
    assert!(forks[7].read("Patient", &v.id).is_ok());
    assert!(forks[8].read("Patient", &v.id).is_err());
    assert_eq!(cohort.len(), n, "the cohort never changes");
    assert_eq!(forks[7].diff().len(), 1);
    assert!(forks[8].diff().is_empty());
    // snapshot copies writes, then diverges
    let snap = forks[7].snapshot();
    forks[7].delete("Patient", &v.id).unwrap();
    assert!(snap.read("Patient", &v.id).is_ok());
}
