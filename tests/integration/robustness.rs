//! No input can panic the server or produce a 500: a deterministic barrage of malformed
//! paths, queries, headers and bodies through the router. Every answer must be a FHIR
//! JSON response with a 2xx/4xx status (OperationOutcome for every 4xx).

use crate::common::app;

const PATHS: &[&str] = &[
    "/fhir/Patient",
    "/fhir/Observation",
    "/fhir/Patient/S6534835",
    "/fhir/Patient/S6534835/_history",
    "/fhir/Patient/S6534835/_history/1",
    "/fhir",
    "/fhir/",
    "/fhir/metadata",
    "/fhir/Patient/_search",
    "/fhir/%FF%FE",
    "/fhir/Patient/%00",
    "/fhir/Patient/..",
    "/fhir/Patient/a/b/c/d/e",
    "/sandboxes",
    "/sandboxes/x",
    "/sandboxes/x/fhir/Patient",
    "/sandboxes//fhir",
    "/fhir/Bundle",
    "/fhir/OperationOutcome/1",
    "/fhir/_history",
];

const QUERIES: &[&str] = &[
    "",
    "?",
    "?&&&",
    "?=",
    "?name",
    "?name=",
    "?_count=-1",
    "?_count=99999999999999999999",
    "?_offset=18446744073709551615",
    "?_offset=18446744073709551615&_count=1000",
    "?_sort=",
    "?_sort=-",
    "?_sort=--date",
    "?date=ge",
    "?date=ge-",
    "?date=2020-02-30",
    "?date=9999-12-31T23:59:59.999+14:00",
    "?date=0000",
    "?date=ap0001",
    "?value-quantity=1e308",
    "?value-quantity=NaN",
    "?value-quantity=-inf",
    "?value-quantity=1|||",
    "?code=|",
    "?code=||",
    "?code=a|b|c",
    "?code:text=",
    "?code:not=",
    "?patient=",
    "?patient=/",
    "?patient=Patient/",
    "?subject:=1",
    "?subject:Patient.=1",
    "?subject.name.given=1",
    "?subject:Patient.subject:Patient.name=x",
    "?_include=*",
    "?_include=:",
    "?_include=Observation:patient:Nope",
    "?_revinclude=*",
    "?_include:iterate=*",
    "?_elements=",
    "?_elements=,,,",
    "?_summary=",
    "?_total=maybe",
    "?_format=xml",
    "?combo-code-value-quantity=$",
    "?combo-code-value-quantity=a$b$c",
    "?component-code-value-quantity=x$gtx",
    "?name:exact=%00",
    "?name=%F0%9F%92%A9",
    "?_id=%00",
    "?_lastUpdated=gt",
    "?_has:Observation:patient:code=1",
    "?:missing=true",
    "?name:missing=",
];

const BODIES: &[&str] = &[
    "",
    " ",
    "null",
    "0",
    "\"x\"",
    "[]",
    "{}",
    "{\"resourceType\":null}",
    "{\"resourceType\":1}",
    "{\"resourceType\":\"Patient\",\"id\":[]}",
    "{\"resourceType\":\"Patient\",\"meta\":\"x\"}",
    "{\"resourceType\":\"Patient\",\"meta\":{\"versionId\":{}}}",
    "{\"resourceType\":\"Bundle\",\"type\":\"transaction\",\"entry\":\"x\"}",
    "{\"resourceType\":\"Bundle\",\"type\":\"transaction\",\"entry\":[{\"request\":{\"method\":\"POST\",\"url\":\"\"},\"resource\":{}}]}",
    "{\"resourceType\":\"Bundle\",\"type\":\"transaction\",\"entry\":[{\"fullUrl\":\"urn:uuid:1\",\"request\":{\"method\":\"PUT\",\"url\":\"Patient\"},\"resource\":{\"resourceType\":\"Patient\"}}]}",
    "{\"resourceType\":\"Bundle\",\"type\":\"batch\",\"entry\":[{\"request\":{\"method\":\"GET\",\"url\":\"/../..\"}}]}",
    "{\"resourceType\":\"Patient\",\"generalPractitioner\":[{\"reference\":\"Practitioner?name=\"}]}",
    "{\"resourceType\":\"Patient\",\"generalPractitioner\":[{\"reference\":\"/\"}]}",
    "{\"resourceType\":\"Observation\",\"status\":\"final\",\"code\":{},\"subject\":{\"reference\":{}}}",
    "{\"a\":",
];

#[tokio::test]
async fn nothing_returns_500_or_panics() {
    let a = app();
    let deep = format!("{}1{}", "[".repeat(5000), "]".repeat(5000));
    let mut bodies: Vec<String> = BODIES.iter().map(|s| s.to_string()).collect();
    bodies.push(deep);
    bodies.push(format!(
        "{{\"resourceType\":\"Patient\",\"name\":[{{\"text\":\"{}\"}}]}}",
        "\u{feff}".repeat(100)
    ));
    let mut n = 0;
    for path in PATHS {
        for (qi, q) in QUERIES.iter().enumerate() {
            for method in ["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD"] {
                let uri = format!("{path}{q}");
                let body = if method == "GET" || method == "DELETE" {
                    None
                } else {
                    Some(bodies[(qi + n) % bodies.len()].as_str())
                };
                let headers: &[(&str, &str)] = match n % 5 {
                    0 => &[("if-match", "W/\"x\"")],
                    1 => &[("if-none-exist", "name=&&&")],
                    2 => &[("prefer", "handling=strict, return=minimal")],
                    3 => &[("content-type", "application/x-www-form-urlencoded")],
                    _ => &[],
                };
                let r = a.req(method, &uri, body, headers).await;
                n += 1;
                assert!(r.status.as_u16() < 500, "{method} {uri} with {body:?}: {} {}", r.status, r.body);
                if r.status.is_client_error() && method != "HEAD" {
                    assert_eq!(r.body["resourceType"], "OperationOutcome", "{method} {uri}: {}", r.body);
                }
            }
        }
    }
    assert!(n > 5000);
}
