//! Transaction and batch Bundles.

use crate::common::app;
use axum::http::StatusCode;
use serde_json::json;

#[tokio::test]
async fn transaction_rewrites_urns_and_commits() {
    let a = app();
    let bundle = json!({"resourceType":"Bundle","type":"transaction","entry":[
        {"fullUrl":"urn:uuid:61ebe359-bfdc-4613-8bf2-c5e300945f0a","resource":{"resourceType":"Observation","status":"final","code":{"text":"BP"},
            "subject":{"reference":"urn:uuid:88f151c0-a954-468a-88fb-1fd9dd8a7d01"},"valueString":"118/77 mmHg"},"request":{"method":"POST","url":"Observation"}},
        {"fullUrl":"urn:uuid:88f151c0-a954-468a-88fb-1fd9dd8a7d01","resource":{"resourceType":"Patient","name":[{"family":"Newman"}]},"request":{"method":"POST","url":"Patient"}},
        {"resource":{"resourceType":"ServiceRequest","status":"active","intent":"order","subject":{"reference":"Patient?identifier=S6534835"},"code":{"coding":[{"system":"http://loinc.org","code":"4548-4"}]}},"request":{"method":"POST","url":"ServiceRequest"}},
        {"request":{"method":"GET","url":"Patient?family=Newman"}}
    ]});
    let r = a.post("/fhir", &bundle).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["type"], "transaction-response");
    let e = r.body["entry"].as_array().unwrap();
    assert_eq!(e[0]["response"]["status"], "201 Created");
    let pid = e[1]["resource"]["id"].as_str().unwrap();
    assert_eq!(e[0]["resource"]["subject"]["reference"], format!("Patient/{pid}"));
    assert_eq!(
        e[2]["resource"]["subject"]["reference"], "Patient/S6534835",
        "conditional reference resolved"
    );
    assert_eq!(e[3]["resource"]["total"], 1, "GET runs after the POSTs");
    assert!(
        e[0]["response"]["location"]
            .as_str()
            .unwrap()
            .starts_with("http://emr.test/fhir/Observation/")
    );
    insta::assert_json_snapshot!("transaction_response", r.body);
    assert_eq!(a.get(&format!("/fhir/Patient/{pid}")).await.status, StatusCode::OK);
}

#[tokio::test]
async fn transaction_is_all_or_nothing() {
    let a = app();
    let before = a.get("/fhir/Patient?_summary=count").await.body["total"].clone();
    let bundle = json!({"resourceType":"Bundle","type":"transaction","entry":[
        {"fullUrl":"urn:uuid:aaaaaaaa-0000-0000-0000-000000000001","resource":{"resourceType":"Patient"},"request":{"method":"POST","url":"Patient"}},
        {"resource":{"resourceType":"Observation","status":"bogus","code":{"text":"x"}},"request":{"method":"POST","url":"Observation"}}
    ]});
    let r = a.post("/fhir", &bundle).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    let d = r.diag();
    assert!(d.contains("entry[1]") && d.contains("rolled back"), "{d}");
    assert_eq!(a.get("/fhir/Patient?_summary=count").await.body["total"], before);
    let bad_ref = json!({"resourceType":"Bundle","type":"transaction","entry":[
        {"resource":{"resourceType":"Observation","status":"final","code":{"text":"x"},"subject":{"reference":"Patient?identifier=nobody"}},"request":{"method":"POST","url":"Observation"}}]});
    let r = a.post("/fhir", &bad_ref).await;
    assert_eq!(r.status, StatusCode::PRECONDITION_FAILED);
    assert!(r.diag().contains("matched no resource"));
}

#[tokio::test]
async fn batch_entries_are_independent() {
    let a = app();
    let bundle = json!({"resourceType":"Bundle","type":"batch","entry":[
        {"resource":{"resourceType":"Patient","gender":"male"},"request":{"method":"POST","url":"Patient"}},
        {"resource":{"resourceType":"Patient","gender":"robot"},"request":{"method":"POST","url":"Patient"}},
        {"request":{"method":"GET","url":"Patient/S6534835"}},
        {"request":{"method":"GET","url":"Patient/missing"}},
        {"request":{"method":"DELETE","url":"Patient/S6534835"}}
    ]});
    let r = a.post("/fhir", &bundle).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body["type"], "batch-response");
    let st: Vec<&str> = r.body["entry"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["response"]["status"].as_str().unwrap())
        .collect();
    assert_eq!(
        st,
        vec!["201 Created", "422 Unprocessable Entity", "200 OK", "404 Not Found", "409 Conflict"]
    );
    assert_eq!(r.body["entry"][1]["response"]["outcome"]["resourceType"], "OperationOutcome");
}

#[tokio::test]
async fn bundle_errors() {
    let a = app();
    let r = a.post("/fhir", &json!({"resourceType":"Bundle","type":"collection"})).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.diag().contains("'collection'"));
    let r = a.post("/fhir", &json!({"resourceType":"Patient"})).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let r = a
        .post(
            "/fhir",
            &json!({"resourceType":"Bundle","type":"batch","entry":[{"request":{"method":"PATCH","url":"Patient/1"}}]}),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.diag().contains("'PATCH'"));
    let r = a
        .post("/fhir", &json!({"resourceType":"Bundle","type":"batch","entry":[{"resource":{}}]}))
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.diag().contains("entry[0]"));
}
