//! Every FHIR interaction through the router, including the error paths.

use crate::common::{App, app, app_with};
use axum::http::StatusCode;
use emrgym_fhir::params::ParamType;
use emrgym_fhir::server::ServerConfig;
use serde_json::{Value, json};

fn k_obs(patient: &str, value: f64) -> Value {
    json!({"resourceType":"Observation","status":"final",
        "code":{"coding":[{"system":"http://loinc.org","code":"2823-3"}],"text":"K"},
        "subject":{"reference":format!("Patient/{patient}")},
        "effectiveDateTime":"2023-11-13T09:00:00+00:00",
        "valueQuantity":{"value":value,"unit":"mmol/L","system":"http://unitsofmeasure.org","code":"mmol/L"}})
}

#[tokio::test]
async fn metadata_tells_the_truth() {
    let a = app();
    let r = a.get("/fhir/metadata").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body["resourceType"], "CapabilityStatement");
    assert_eq!(r.body["fhirVersion"], "4.0.1");
    let rest = &r.body["rest"][0];
    let interactions: Vec<&str> = rest["interaction"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["code"].as_str().unwrap())
        .collect();
    assert_eq!(interactions, vec!["transaction", "batch"]);
    let obs = rest["resource"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["type"] == "Observation")
        .unwrap();
    let params: Vec<&str> = obs["searchParam"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    for p in [
        "patient",
        "code",
        "combo-code",
        "date",
        "value-quantity",
        "component-code-value-quantity",
        "_id",
        "_lastUpdated",
    ] {
        assert!(params.contains(&p), "{p} missing");
    }
    assert_eq!(obs["conditionalUpdate"], false, "we do not claim conditional update");
    assert_eq!(obs["conditionalCreate"], true);
    // every claimed parameter really works: a strict search with it is accepted
    let reg = emrgym_fhir::params::Registry::r4();
    let sample = |t: ParamType| match t {
        ParamType::Date => "ge2023".to_string(),
        ParamType::Quantity | ParamType::Number => "gt5".to_string(),
        ParamType::Reference => "Patient/S6534835".to_string(),
        _ => "x".to_string(),
    };
    for p in obs["searchParam"].as_array().unwrap() {
        let name = p["name"].as_str().unwrap();
        let def = reg.get("Observation", name).unwrap();
        let value = if def.ty == ParamType::Composite {
            def.components.iter().map(|c| sample(c.ty)).collect::<Vec<_>>().join("$")
        } else {
            sample(def.ty)
        };
        let r = a
            .req(
                "GET",
                &format!("/fhir/Observation?{name}={value}"),
                None,
                &[("prefer", "handling=strict")],
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{name}={value}: {}", r.body);
    }
}

#[tokio::test]
async fn read_vread_and_headers() {
    let a = app();
    let r = a.get("/fhir/Patient/S6534835").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.header("etag"), "W/\"1\"");
    assert_eq!(r.header("content-type"), "application/fhir+json; charset=utf-8");
    assert_eq!(r.header("last-modified"), "Mon, 13 Nov 2023 10:15:00 GMT");
    insta::assert_json_snapshot!("read_patient", r.body);
    let r = a.get("/fhir/Patient/S6534835/_history/1").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body["meta"]["versionId"], "1");
    let r = a.get("/fhir/Patient/S6534835/_history/2").await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert!(r.diag().contains("no version 2"), "{}", r.diag());
    let r = a.get("/fhir/Patient/S6534835/_history/two").await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.diag().contains("'two'"));
}

#[tokio::test]
async fn read_errors() {
    let a = app();
    let r = a.get("/fhir/Patient/nope").await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(r.body["issue"][0]["code"], "not-found");
    assert!(r.diag().contains("Patient/nope"));
    let r = a.get("/fhir/Patent/1").await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert!(r.diag().contains("'Patent'"));
    let r = a.get("/fhir/Patient/bad%20id!").await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.diag().contains("bad id!"), "{}", r.diag());
    let r = a.get("/elsewhere").await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let r = a.get("/fhir/Patient/S6534835/_history/1/extra").await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let r = a
        .req(
            "PATCH",
            "/fhir/Patient/S6534835",
            Some("[]"),
            &[("content-type", "application/json-patch+json")],
        )
        .await;
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);
    let r = a.post("/fhir/Patient/S6534835", &json!({"resourceType":"Patient"})).await;
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);
    assert!(r.diag().contains("PUT"), "{}", r.diag());
    let r = a.get("/fhir").await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.body["issue"][0]["code"], "not-supported");
}

#[tokio::test]
async fn create_assigns_deterministic_ids_and_headers() {
    let run = || async {
        let a = app();
        let r = a.post("/fhir/Observation", &k_obs("S3241217", 3.1)).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
        r
    };
    let r1 = run().await;
    let r2 = run().await;
    assert_eq!(r1.body, r2.body, "same seed, same clock: same bytes");
    let id = r1.body["id"].as_str().unwrap();
    assert_eq!(r1.header("location"), format!("http://emr.test/fhir/Observation/{id}/_history/1"));
    assert_eq!(r1.header("etag"), "W/\"1\"");
    assert_eq!(r1.body["meta"]["lastUpdated"], "2023-11-13T10:15:00.000Z");
    insta::assert_json_snapshot!("create_observation", r1.body);
    // the write really landed
    let a = app();
    let r = a.post("/fhir/Observation", &k_obs("S3241217", 3.1)).await;
    let id = r.body["id"].as_str().unwrap();
    let back = a.get(&format!("/fhir/Observation/{id}")).await;
    assert_eq!(back.body["valueQuantity"]["value"], 3.1);
    // a client-supplied id on POST is replaced
    let mut body = k_obs("S3241217", 3.0);
    body["id"] = json!("client-chosen");
    let r = a.post("/fhir/Observation", &body).await;
    assert_ne!(r.body["id"], "client-chosen");
}

#[tokio::test]
async fn create_errors_lose_nothing() {
    let a = app();
    let before = a.get("/fhir/Observation?_summary=count").await.body["total"].clone();
    let cases: Vec<(Option<&str>, &str, StatusCode, &str)> = vec![
        (None, "{not json", StatusCode::BAD_REQUEST, "not valid JSON"),
        (
            None,
            r#"{"resourceType":"Patient"}"#,
            StatusCode::BAD_REQUEST,
            "'Patient' in the body does not match 'Observation'",
        ),
        (None, r#"{"status":"final"}"#, StatusCode::BAD_REQUEST, "no resourceType"),
        (None, r#"[1,2]"#, StatusCode::BAD_REQUEST, "JSON object"),
        (
            None,
            r#"{"resourceType":"Observation","status":"final","code":{"text":"x"},"valueQuantity":{"value":"high"}}"#,
            StatusCode::UNPROCESSABLE_ENTITY,
            "valueQuantity/value",
        ),
        (
            None,
            r#"{"resourceType":"Observation","status":"done","code":{"text":"x"}}"#,
            StatusCode::UNPROCESSABLE_ENTITY,
            "\"done\"",
        ),
        (
            None,
            r#"{"resourceType":"Observation","status":"final"}"#,
            StatusCode::UNPROCESSABLE_ENTITY,
            "code",
        ),
        (
            None,
            r#"{"resourceType":"Observation","status":"final","code":{"text":"x"},"subject":{"reference":"Patient/ghost"}}"#,
            StatusCode::UNPROCESSABLE_ENTITY,
            "Patient/ghost",
        ),
        (
            None,
            r#"{"resourceType":"Observation","status":"final","code":{"text":"x"},"subject":{"reference":"urn:uuid:1234"}}"#,
            StatusCode::UNPROCESSABLE_ENTITY,
            "urn:uuid:1234",
        ),
        (
            None,
            r#"{"resourceType":"Observation","status":"final","code":{"text":"x"},"colour":"red"}"#,
            StatusCode::UNPROCESSABLE_ENTITY,
            "colour",
        ),
        (
            Some("application/fhir+xml"),
            "<Observation/>",
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "application/fhir+json",
        ),
        (Some("text/plain"), "hello", StatusCode::UNSUPPORTED_MEDIA_TYPE, "text/plain"),
    ];
    for (ct, body, status, needle) in cases {
        let headers: Vec<(&str, &str)> = ct.map(|c| vec![("content-type", c)]).unwrap_or_default();
        let r = a.req("POST", "/fhir/Observation", Some(body), &headers).await;
        assert_eq!(r.status, status, "{body}: {}", r.body);
        let d = r.body["issue"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["diagnostics"].as_str().unwrap())
            .collect::<Vec<_>>()
            .join(" | ");
        assert!(d.contains(needle), "{body}: expected '{needle}' in '{d}'");
    }
    let r = a.post("/fhir/Observation", &json!({})).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let r = a.post("/fhir/Observaton", &json!({"resourceType":"Observaton"})).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let r = a.req("POST", "/fhir/Observation", None, &[]).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        a.get("/fhir/Observation?_summary=count").await.body["total"],
        before,
        "no failed write left anything behind"
    );
    insta::assert_json_snapshot!(
        "create_schema_error",
        a.post(
            "/fhir/Observation",
            &json!({"resourceType":"Observation","status":"done","code":{"text":"x"}})
        )
        .await
        .body
    );
}

#[tokio::test]
async fn oversized_body_is_413() {
    let a = app_with(
        "demo",
        ServerConfig {
            body_limit: 1000,
            ..Default::default()
        },
    );
    let big = json!({"resourceType":"Patient","name":[{"text":"x".repeat(2000)}]});
    let r = a.post("/fhir/Patient", &big).await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(r.diag().contains("1000 bytes"));
}

#[tokio::test]
async fn update_versions_if_match_and_update_as_create() {
    let a = app();
    let mut p = a.get("/fhir/Patient/S6534835").await.body;
    p["gender"] = json!("female");
    let r = a.put("/fhir/Patient/S6534835", &p).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["meta"]["versionId"], "2");
    assert_eq!(r.header("etag"), "W/\"2\"");
    // stale If-Match
    let r = a
        .req("PUT", "/fhir/Patient/S6534835", Some(&p.to_string()), &[("if-match", "W/\"1\"")])
        .await;
    assert_eq!(r.status, StatusCode::PRECONDITION_FAILED);
    assert!(r.diag().contains("current version 2"), "{}", r.diag());
    let r = a
        .req("PUT", "/fhir/Patient/S6534835", Some(&p.to_string()), &[("if-match", "W/\"2\"")])
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body["meta"]["versionId"], "3");
    let r = a
        .req("PUT", "/fhir/Patient/S6534835", Some(&p.to_string()), &[("if-match", "banana")])
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    // id mismatch and missing id
    let r = a.put("/fhir/Patient/S2874099", &p).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.diag().contains("'S6534835'") && r.diag().contains("'S2874099'"));
    let r = a.put("/fhir/Patient/S2874099", &json!({"resourceType":"Patient"})).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    // update as create
    let r = a.put("/fhir/Patient/new-1", &json!({"resourceType":"Patient","id":"new-1"})).await;
    assert_eq!(r.status, StatusCode::CREATED);
    assert_eq!(r.header("location"), "http://emr.test/fhir/Patient/new-1/_history/1");
    // history, newest first
    let h = a.get("/fhir/Patient/S6534835/_history").await;
    assert_eq!(h.body["type"], "history");
    assert_eq!(h.body["total"], 3);
    let versions: Vec<&str> = h.body["entry"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["resource"]["meta"]["versionId"].as_str().unwrap())
        .collect();
    assert_eq!(versions, vec!["3", "2", "1"]);
    assert_eq!(a.get("/fhir/Patient/S6534835/_history/1").await.body["gender"], "male");
}

#[tokio::test]
async fn conditional_create() {
    let a = app();
    let body = json!({"resourceType":"Patient","identifier":[{"system":"http://emrgym.dev/fhir/sid/mrn","value":"S6534835"}]}).to_string();
    let r = a
        .req(
            "POST",
            "/fhir/Patient",
            Some(&body),
            &[("if-none-exist", "identifier=http://emrgym.dev/fhir/sid/mrn|S6534835")],
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body["id"], "S6534835");
    let r = a
        .req(
            "POST",
            "/fhir/Patient",
            Some(&body),
            &[("if-none-exist", "identifier=http://emrgym.dev/fhir/sid/mrn|S9999999")],
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    let r = a
        .req("POST", "/fhir/Patient", Some(&body), &[("if-none-exist", "gender=female")])
        .await;
    assert_eq!(r.status, StatusCode::PRECONDITION_FAILED);
    assert!(r.diag().contains("matched"), "{}", r.diag());
    let r = a
        .req("POST", "/fhir/Patient", Some(&body), &[("if-none-exist", "nonsense=1")])
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "If-None-Exist is evaluated strictly");
}

#[tokio::test]
async fn delete_conflict_gone_and_history() {
    let a = app();
    let r = a.req("DELETE", "/fhir/Patient/S6534835", None, &[]).await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    assert!(r.diag().contains("referenced by"), "{}", r.diag());
    let obs = a.get("/fhir/Observation?patient=S6534835&_count=1").await.ids();
    let r = a.req("DELETE", &format!("/fhir/Observation/{}", obs[0]), None, &[]).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.header("etag"), "W/\"2\"");
    let r = a.get(&format!("/fhir/Observation/{}", obs[0])).await;
    assert_eq!(r.status, StatusCode::GONE);
    assert_eq!(r.body["issue"][0]["code"], "deleted");
    let h = a.get(&format!("/fhir/Observation/{}/_history", obs[0])).await;
    assert_eq!(h.body["entry"][0]["request"]["method"], "DELETE");
    assert!(h.body["entry"][0].get("resource").is_none());
    let r = a.get(&format!("/fhir/Observation/{}/_history/2", obs[0])).await;
    assert_eq!(r.status, StatusCode::GONE);
    // deleting again is idempotent
    let r = a.req("DELETE", &format!("/fhir/Observation/{}", obs[0]), None, &[]).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body["issue"][0]["severity"], "warning");
    // a deleted resource can be recreated by PUT
    let r = a
        .put(&format!("/fhir/Observation/{}", obs[0]), &{
            let mut o = k_obs("S6534835", 4.0);
            o["id"] = json!(obs[0]);
            o
        })
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    assert_eq!(r.body["meta"]["versionId"], "3");
}

#[tokio::test]
async fn prefer_return() {
    let a = app();
    let body = k_obs("S3241217", 3.3).to_string();
    let r = a
        .req("POST", "/fhir/Observation", Some(&body), &[("prefer", "return=minimal")])
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    assert_eq!(r.body, Value::Null);
    assert!(r.header("location").contains("/_history/1"));
    let r = a
        .req("POST", "/fhir/Observation", Some(&body), &[("prefer", "return=OperationOutcome")])
        .await;
    assert_eq!(r.body["resourceType"], "OperationOutcome");
    assert_eq!(r.body["issue"][0]["severity"], "information");
}

async fn auth_app() -> App {
    app_with(
        "demo",
        ServerConfig {
            token: Some("s3cret".into()),
            ..Default::default()
        },
    )
}

#[tokio::test]
async fn bearer_token() {
    let a = auth_app().await;
    let r = a.get("/fhir/Patient/S6534835").await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(r.header("www-authenticate"), "Bearer");
    assert_eq!(r.body["issue"][0]["code"], "login");
    let r = a
        .req("GET", "/fhir/Patient/S6534835", None, &[("authorization", "Bearer wrong!")])
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    let r = a
        .req("GET", "/fhir/Patient/S6534835", None, &[("authorization", "Bearer s3cret")])
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let r = a.req("POST", "/sandboxes", None, &[]).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "sandbox management needs the token too");
    assert_eq!(a.get("/fhir/metadata").await.status, StatusCode::OK, "metadata is public");
    assert_eq!(
        a.get("/fhir/Patient/metadata").await.status,
        StatusCode::UNAUTHORIZED,
        "only the capability statement is public"
    );
    assert_eq!(a.get("/sandboxes/x/fhir/Patient/metadata").await.status, StatusCode::UNAUTHORIZED);
    assert_eq!(a.get("/health").await.status, StatusCode::OK);
}
