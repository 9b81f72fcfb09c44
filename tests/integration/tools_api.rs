//! The tool catalogue over HTTP (`GET /tools`, `POST /tools/{name}`, sandbox-bound FHIR
//! tools) and the `calc`/`tools` commands.

use super::common::{app, app_with};
use emrgym_fhir::server::ServerConfig;
use serde_json::json;
use std::process::Command;

#[tokio::test]
async fn lists_the_catalogue_as_manifests_and_openai_tools() {
    let a = app();
    let r = a.get("/tools").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), "application/json");
    let tools = r.body["tools"].as_array().unwrap();
    assert_eq!(r.body["count"], tools.len());
    let names: Vec<&str> = tools.iter().map(|t| t["name"].as_str().unwrap()).collect();
    for n in [
        "fhir_search",
        "fhir_read",
        "fhir_create",
        "fhir_update",
        "finish",
        "convert_units",
        "meld_3",
        "qsofa",
        "ckd_epi_2021",
    ] {
        assert!(names.contains(&n), "{n}");
    }
    let o = a.get("/tools?format=openai").await;
    assert_eq!(o.body.as_array().unwrap().len(), tools.len());
    assert_eq!(o.body[0]["type"], "function");
    let one = a.get("/tools/bmi").await;
    assert_eq!(one.body["name"], "bmi");
    assert!(one.body["parameters"]["properties"]["weight"].is_object());
    let bad = a.get("/tools?format=xml").await;
    assert_eq!(bad.status, 400);
    assert!(bad.diag().contains("xml"));
    let missing = a.get("/tools/nope").await;
    assert_eq!(missing.status, 404);
    assert!(missing.diag().contains("nope"));
}

#[tokio::test]
async fn runs_a_calculator_and_reports_bad_input_as_operation_outcomes() {
    let a = app();
    let r = a
        .post(
            "/tools/ckd_epi_2021",
            &json!({"sex": "female", "age": 70, "creatinine": {"value": 97, "unit": "µmol/L"}}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!((r.body["value"].as_f64().unwrap() - 54.2166).abs() < 1e-3, "{}", r.body);
    assert_eq!(r.body["unit"], "mL/min/1.73m²");
    let r = a
        .post(
            "/tools/ckd_epi_2021",
            &json!({"sex": "female", "age": 70, "creatinine": {"value": 97, "unit": "mg"}}),
        )
        .await;
    assert_eq!(r.status, 400);
    assert!(r.diag().contains("'mg'") && r.diag().contains("µmol/L"), "{}", r.diag());
    let r = a
        .post(
            "/tools/ldl_friedewald",
            &json!({"total_cholesterol": 250, "hdl": 40, "triglycerides": 500}),
        )
        .await;
    assert_eq!(r.status, 422);
    assert!(r.diag().contains("400 mg/dL"), "{}", r.diag());
    let r = a
        .req("POST", "/tools/bmi", Some("{not json"), &[("content-type", "application/json")])
        .await;
    assert_eq!(r.status, 400);
    assert!(r.diag().contains("not valid JSON"));
    let r = a.post("/tools/no_such_tool", &json!({})).await;
    assert_eq!(r.status, 404);
    let r = a
        .post(
            "/tools/convert_units",
            &json!({"analyte": "glucose", "value": 7.2, "from": "mmol/L", "to": "mg/dL"}),
        )
        .await;
    assert!((r.body["value"].as_f64().unwrap() - 129.71232).abs() < 1e-6);
}

#[tokio::test]
async fn fhir_tools_write_into_the_addressed_sandbox_only() {
    let a = app();
    let sb = a.post("/sandboxes", &json!({"seed": 3})).await;
    let id = sb.body["id"].as_str().unwrap().to_string();
    let order = json!({"resource_type": "ServiceRequest", "resource": {"status": "active", "intent": "order",
        "code": {"coding": [{"system": "http://snomed.info/sct", "code": "306181000000106"}]},
        "subject": {"reference": "Patient/S6534835"}}});
    let r = a.post(&format!("/sandboxes/{id}/tools/fhir_create"), &order).await;
    assert_eq!(r.status, 201, "{}", r.body);
    let new_id = r.body["id"].as_str().unwrap().to_string();
    let seen = a.get(&format!("/sandboxes/{id}/fhir/ServiceRequest/{new_id}")).await;
    assert_eq!(seen.status, 200);
    let default = a.get(&format!("/fhir/ServiceRequest/{new_id}")).await;
    assert_eq!(default.status, 404, "the default sandbox does not see another sandbox's write");
    let search = a
        .post(
            &format!("/sandboxes/{id}/tools/fhir_search"),
            &json!({"resource_type": "ServiceRequest", "params": {"subject": "Patient/S6534835"}}),
        )
        .await;
    assert_eq!(search.body["total"], 1);
    let r = a
        .post("/sandboxes/nope/tools/fhir_search", &json!({"resource_type": "Patient"}))
        .await;
    assert_eq!(r.status, 404);
    let r = a
        .post(
            &format!("/sandboxes/{id}/tools/fhir_read"),
            &json!({"resource_type": "Patient", "id": "missing-1"}),
        )
        .await;
    assert_eq!(r.status, 404);
    assert_eq!(r.body["resourceType"], "OperationOutcome");
}

#[tokio::test]
async fn tools_require_the_bearer_token_when_one_is_set() {
    let a = app_with(
        "demo",
        ServerConfig {
            token: Some("s3cret".into()),
            ..ServerConfig::default()
        },
    );
    assert_eq!(a.get("/tools").await.status, 401);
    assert_eq!(a.post("/tools/bmi", &json!({"weight": 70, "height": 170})).await.status, 401);
    let r = a.req("GET", "/tools", None, &[("authorization", "Bearer s3cret")]).await;
    assert_eq!(r.status, 200);
}

fn cli(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_emrgym")).args(args).output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn calc_commands() {
    let (ok, out, _) = cli(&["calc", "list", "--json"]);
    assert!(ok);
    let list: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(list.as_array().unwrap().len(), 57);
    let (ok, out, err) = cli(&[
        "calc",
        "run",
        "bmi",
        r#"{"weight": {"value": 154, "unit": "lb"}, "height": {"value": 70, "unit": "in"}}"#,
    ]);
    assert!(ok, "{err}");
    let r: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!((r["value"].as_f64().unwrap() - 22.0966).abs() < 1e-3, "{r}");
    for (args, needle) in [
        (vec!["calc", "run", "bmi", r#"{"weight": 70}"#], "height"),
        (vec!["calc", "run", "bmi", "{oops"], "not valid JSON"),
        (vec!["calc", "run", "bmj", "{}"], "'bmj'"),
        (vec!["calc", "run", "fhir_search", "{}"], "'fhir_search'"),
        (vec!["calc", "run", "bmi", r#"{"weight": -1, "height": 170}"#], "weight"),
    ] {
        let (ok, _, err) = cli(&args);
        assert!(!ok, "{args:?} should fail");
        assert!(err.contains(needle), "{args:?}: {err}");
    }
}

#[test]
fn tools_export_check_detects_stale_manifests() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().to_str().unwrap();
    let (ok, _, err) = cli(&["tools", "export", "--out", out, "--check"]);
    assert!(!ok && err.contains("out of date"), "{err}");
    let (ok, _, err) = cli(&["tools", "export", "--out", out]);
    assert!(ok, "{err}");
    let (ok, _, err) = cli(&["tools", "export", "--out", out, "--check"]);
    assert!(ok, "{err}");
    std::fs::write(dir.path().join("bmi.json"), "{}").unwrap();
    std::fs::write(dir.path().join("old_tool.json"), "{}").unwrap();
    let (ok, _, err) = cli(&["tools", "export", "--out", out, "--check"]);
    assert!(!ok && err.contains("bmi.json") && err.contains("old_tool.json"), "{err}");
    let (ok, out_text, _) = cli(&["tools", "list", "--openai"]);
    assert!(ok);
    let tools: serde_json::Value = serde_json::from_str(&out_text).unwrap();
    assert!(tools.as_array().unwrap().len() >= 63);
}
