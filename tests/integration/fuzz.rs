//! The fuzzing harness (issue 16): proptest targets for the search-query parser, FHIRPath,
//! the HTN expression language, Bundle processing and JSON bodies, and an HTTP-level
//! property test of the in-process router. Properties: no panic; no 5xx; every 4xx an
//! OperationOutcome; bounded time per request.
//!
//! CI runs a short pass (a few hundred cases per target, well under a minute on 2 cores).
//! A long run (docs/reliability.md):
//! `EMRGYM_FUZZ_CASES=20000 cargo test --release --test integration fuzz:: -- --test-threads 2`.
//! A failing case is shrunk and printed; proptest records its seed under
//! `tests/integration/fuzz.proptest-regressions` so the next run tries it first.

use crate::common::{App, app};
use axum::body::{Body, to_bytes};
use axum::http::Request;
use emrgym_fhir::clock::{Clock, parse_instant};
use emrgym_fhir::rest::{self, FhirRequest, Verb};
use emrgym_fhir::search::SearchQuery;
use emrgym_fhir::{Sandbox, SandboxOptions, fhirpath, load};
use emrgym_scenario::htn::MapScope;
use emrgym_scenario::htn::expr;
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config, TestRunner};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};
use tower::ServiceExt;

/// Cases per target: `EMRGYM_FUZZ_CASES` (default `ci`).
fn cases(ci: u32) -> u32 {
    std::env::var("EMRGYM_FUZZ_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(ci)
}

fn config(ci: u32) -> Config {
    Config {
        cases: cases(ci),
        failure_persistence: None,
        max_shrink_iters: 2000,
        ..Config::default()
    }
}

/// Slowest single request or call allowed (debug build, 2 shared cores).
const BOUND: Duration = Duration::from_secs(5);

fn sandbox() -> Sandbox {
    static COHORT: OnceLock<Arc<emrgym_fhir::Cohort>> = OnceLock::new();
    let clock = Clock::fixed(parse_instant("2023-11-13T10:15:00Z").unwrap());
    let c = COHORT.get_or_init(|| load::load("demo").unwrap().build(&clock));
    Sandbox::fork(
        c,
        SandboxOptions {
            seed: 1,
            clock,
            validate: true,
            check_references: true,
        },
    )
}

// ---- generators -------------------------------------------------------------------

const NAMES: &[&str] = &[
    "name",
    "family",
    "given",
    "code",
    "code:text",
    "code:not",
    "subject",
    "subject:Patient",
    "patient",
    "date",
    "_id",
    "value-quantity",
    "status",
    "identifier",
    "_count",
    "_offset",
    "_sort",
    "_include",
    "_revinclude",
    "_include:iterate",
    "_summary",
    "_total",
    "_elements",
    "combo-code-value-quantity",
    "component-code-value-quantity",
    "link",
    "general-practitioner",
    "organization",
    "birthdate",
    "gender",
    "_has",
    "_format",
];
const ATOMS: &[&str] = &[
    "x",
    "",
    "1",
    "-1",
    "1e308",
    "NaN",
    "ge2020",
    "lt2020-02-30",
    "ap2023-11-13T10:15:00Z",
    "|",
    "a|b",
    "a|b|c",
    "\\,",
    "$",
    "a$b",
    "Patient/S6534835",
    "Observation:patient",
    "Observation:subject:Patient",
    "*",
    "-date",
    "date,-_id",
    "count",
    "true",
    "\u{0}",
    "\u{1F4A9}",
    "%FF",
    "9999-12-31T23:59:59.999+14:00",
    "0000",
    "http://loinc.org|4548-4",
    "S6534835",
];

fn atom() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => proptest::sample::select(ATOMS).prop_map(String::from),
        1 => "[ -~]{0,12}",
        1 => any::<String>().prop_map(|s| s.chars().take(12).collect()),
    ]
}

fn param_name() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => proptest::sample::select(NAMES).prop_map(String::from),
        // chains, deep ones included
        2 => (proptest::collection::vec(proptest::sample::select(&["subject", "link", "patient", "organization", "subject:Patient"][..]), 1..8),
              proptest::sample::select(&["name", "family", "code", "_id"][..]))
            .prop_map(|(links, last)| format!("{}.{last}", links.join("."))),
        1 => "[a-z_:.\\-]{0,16}",
    ]
}

fn query() -> impl Strategy<Value = Vec<(String, String)>> {
    proptest::collection::vec(
        (param_name(), proptest::collection::vec(atom(), 1..4).prop_map(|v| v.join(","))),
        0..6,
    )
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(|f| json!(f)),
        atom().prop_map(Value::String),
    ];
    leaf.prop_recursive(6, 48, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            proptest::collection::btree_map(
                prop_oneof![
                    proptest::sample::select(
                        &[
                            "resourceType",
                            "id",
                            "meta",
                            "code",
                            "subject",
                            "reference",
                            "status",
                            "entry",
                            "request",
                            "resource",
                            "url",
                            "method",
                            "fullUrl",
                            "type",
                            "value",
                            "extension"
                        ][..]
                    )
                    .prop_map(String::from),
                    "[a-z]{1,6}",
                ],
                inner,
                0..6
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn resource() -> impl Strategy<Value = Value> {
    (
        proptest::sample::select(&["Patient", "Observation", "Bundle", "Condition", "Nope", ""][..]),
        json_value(),
    )
        .prop_map(|(ty, v)| {
            let mut obj = match v {
                Value::Object(m) => m,
                other => {
                    let mut m = serde_json::Map::new();
                    m.insert("value".into(), other);
                    m
                }
            };
            obj.insert("resourceType".into(), json!(ty));
            Value::Object(obj)
        })
}

fn bundle() -> impl Strategy<Value = Value> {
    let entry = (
        proptest::sample::select(&["GET", "POST", "PUT", "DELETE", "PATCH", ""][..]),
        prop_oneof![
            proptest::sample::select(
                &[
                    "Patient",
                    "Observation",
                    "Patient/S6534835",
                    "Observation?code=x",
                    "",
                    "/",
                    "?x",
                    "Patient?name=a",
                    "urn:uuid:1"
                ][..]
            )
            .prop_map(String::from),
            "[ -~]{0,20}",
        ],
        proptest::option::of(resource()),
        proptest::option::of(proptest::sample::select(&["urn:uuid:1", "urn:uuid:2", "Patient/x"][..])),
        proptest::option::of(atom()),
    )
        .prop_map(|(method, url, res, full, cond)| {
            let mut e = json!({"request": {"method": method, "url": url}});
            if let Some(r) = res {
                e["resource"] = r;
            }
            if let Some(f) = full {
                e["fullUrl"] = json!(f);
            }
            if let Some(c) = cond {
                e["request"]["ifNoneExist"] = json!(format!("name={c}"));
            }
            e
        });
    (
        proptest::sample::select(&["transaction", "batch", "searchset", ""][..]),
        proptest::collection::vec(entry, 0..6),
    )
        .prop_map(|(ty, entries)| json!({"resourceType": "Bundle", "type": ty, "entry": entries}))
}

// ---- library targets ----------------------------------------------------------------

#[test]
fn fuzz_search_query_parser_and_execution() {
    let sb = sandbox();
    let mut runner = TestRunner::new(config(300));
    runner
        .run(
            &(
                proptest::sample::select(&["Patient", "Observation", "Condition", "Nope"][..]),
                query(),
            ),
            |(ty, q)| {
                let t = Instant::now();
                if let Ok(parsed) = SearchQuery::parse(ty, &q, sb.cohort().registry(), false) {
                    let _ = sb.search(&parsed);
                }
                prop_assert!(t.elapsed() < BOUND, "{ty}?{q:?} took {:?}", t.elapsed());
                Ok(())
            },
        )
        .unwrap();
}

#[test]
fn fuzz_fhirpath() {
    let mut runner = TestRunner::new(config(500));
    let text = prop_oneof![
        "[ -~]{0,40}",
        proptest::collection::vec(
            proptest::sample::select(
                &[
                    "Patient",
                    ".",
                    "name",
                    "(",
                    ")",
                    "|",
                    " as ",
                    "Quantity",
                    ".where(",
                    "resolve()",
                    " is ",
                    "'x'",
                    "=",
                    ".exists()",
                    " and ",
                    " != false",
                    "ofType(",
                    "value"
                ][..]
            ),
            0..30
        )
        .prop_map(|v| v.concat()),
    ];
    runner
        .run(&(text, resource()), |(t, r)| {
            if let Ok(e) = fhirpath::parse(&t) {
                let _ = fhirpath::eval(&e, "Patient", &r);
                let _ = fhirpath::top_fields(&e);
            }
            Ok(())
        })
        .unwrap();
    // nesting far past the limit is refused, not recursed into
    assert!(fhirpath::parse(&"(".repeat(1_000_000)).is_err());
}

/// An expression nested `d` deep around token `t`, in one of six shapes: groups, unary
/// minus, function arguments, indexes, member chains, chains of binary operators.
fn nest(shape: usize, d: usize, t: &str) -> String {
    match shape {
        0 => format!("{}{t}{}", "(".repeat(d), ")".repeat(d)),
        1 => format!("{}{t}", "-".repeat(d)),
        2 => format!("{}{t}{}", "where(".repeat(d), ")".repeat(d)),
        3 => format!("{}{t}{}", "%n[".repeat(d), "]".repeat(d)),
        4 => format!("%n{}", ".a".repeat(d)),
        _ => format!("1{}", format!(" + {t}").repeat(d)),
    }
}

#[test]
fn fuzz_htn_expressions_deep_nesting_is_refused_past_the_limit() {
    for shape in 0..6 {
        for d in [expr::MAX_DEPTH + 1, 10_000, 200_000] {
            let src = nest(shape, d, "1");
            let e = expr::parse(&src).expect_err(&src[..40.min(src.len())]);
            assert!(e.message.contains("nested deeper than"), "shape {shape}, depth {d}: {}", e.message);
        }
    }
}

#[test]
fn fuzz_htn_expressions() {
    let scope = MapScope {
        vars: BTreeMap::from([
            ("a".to_string(), Some(vec![])),
            ("n".to_string(), Some(expr::V::from_json(&json!([1, 2.5, "x"])))),
            ("u".to_string(), None),
        ]),
        now: chrono::DateTime::parse_from_rfc3339("2023-11-13T10:15:00Z").unwrap(),
    };
    let tokens = &[
        "%a",
        "%n",
        "%u",
        "1",
        "2.5",
        "'s'",
        "true",
        "false",
        "{}",
        "(",
        ")",
        "+",
        "-",
        "*",
        "/",
        "=",
        "!=",
        "<",
        ">=",
        " and ",
        " or ",
        " implies ",
        "not ",
        ".",
        "exists()",
        "count()",
        "first()",
        "where(",
        "$this",
        ",",
        "now()",
        "@2023-01-01",
        "1 'year'",
        "[",
        "]",
    ][..];
    let text = prop_oneof![
        "[ -~]{0,40}",
        proptest::collection::vec(proptest::sample::select(tokens), 0..24).prop_map(|v| v.concat()),
        // nesting of every kind, far past the limit (issue 16: these overflowed the stack)
        (0usize..6, 1usize..20_000, proptest::sample::select(tokens)).prop_map(|(shape, d, t)| nest(shape, d, t)),
    ];
    let mut runner = TestRunner::new(config(500));
    runner
        .run(&(text, json_value()), |(t, focus)| {
            let parsed = expr::parse(&t);
            if t.len() > 20 * expr::MAX_DEPTH
                && let Err(e) = &parsed
            {
                // every refusal of a long input is a clean parse error with a position
                prop_assert!(e.pos <= t.len());
            }
            if let Ok(e) = parsed {
                let focus = expr::V::from_json(&focus);
                let _ = expr::eval(&e, &focus, &scope);
                let _ = expr::truth(&e, &focus, &scope);
            }
            let _ = expr::render(&t, &scope);
            Ok(())
        })
        .unwrap();
}

#[test]
fn fuzz_bundles_and_resource_bodies() {
    let base = sandbox();
    let mut runner = TestRunner::new(config(200));
    runner
        .run(
            &(
                prop_oneof![2 => bundle(), 1 => resource()],
                proptest::sample::select(&["", "Patient", "Observation", "Patient/S6534835"][..]),
                proptest::sample::select(&[Verb::Post, Verb::Put][..]),
            ),
            |(body, path, verb)| {
                let mut sb = base.snapshot();
                let req = FhirRequest::new(verb, path).with_body(body);
                let t = Instant::now();
                let resp = rest::handle(&mut sb, "http://emr.test/fhir", &req);
                prop_assert!(resp.status < 500, "{} on {path}: {:?}", resp.status, resp.body);
                if resp.status >= 400 {
                    prop_assert_eq!(
                        resp.body.as_ref().map(|b| b["resourceType"].clone()),
                        Some(json!("OperationOutcome"))
                    );
                }
                prop_assert!(t.elapsed() < BOUND);
                Ok(())
            },
        )
        .unwrap();
}

// ---- HTTP ---------------------------------------------------------------------------

fn http_request() -> impl Strategy<Value = (String, String, Option<String>, Vec<(String, String)>)> {
    let method = proptest::sample::select(&["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"][..]).prop_map(String::from);
    let path = prop_oneof![
        proptest::sample::select(
            &[
                "/fhir/Patient",
                "/fhir/Observation",
                "/fhir/Patient/S6534835",
                "/fhir/Patient/S6534835/_history",
                "/fhir",
                "/fhir/metadata",
                "/fhir/Patient/_search",
                "/sandboxes",
                "/sandboxes/sb1",
                "/sandboxes/sb1/fhir/Patient",
                "/tools",
                "/tools/bmi",
                "/tools/fhir_search",
                "/tools/%FF",
                "/sandboxes/sb1/tools/fhir_read",
                "/health",
                "/nowhere",
                "/fhir/%FF%FE",
                "/fhir/Patient/%00",
                "//",
                "/tools/bmi/x",
            ][..]
        )
        .prop_map(String::from),
        "/[a-zA-Z0-9%/_.\\-]{0,24}",
    ];
    let query = query().prop_map(|q| {
        if q.is_empty() {
            String::new()
        } else {
            let enc = |s: &str| percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string();
            format!(
                "?{}",
                q.iter()
                    .map(|(k, v)| format!("{}={}", enc(k), enc(v)))
                    .collect::<Vec<_>>()
                    .join("&")
            )
        }
    });
    let body = proptest::option::of(prop_oneof![
        json_value().prop_map(|v| v.to_string()),
        resource().prop_map(|v| v.to_string()),
        bundle().prop_map(|v| v.to_string()),
        "[ -~]{0,40}",
        (1usize..400).prop_map(|d| format!("{}{}", "[".repeat(d), "]".repeat(d))),
    ]);
    let headers = proptest::collection::vec(
        prop_oneof![
            proptest::sample::select(
                &[
                    "application/fhir+json",
                    "application/json",
                    "application/xml",
                    "text/plain",
                    "application/x-www-form-urlencoded",
                    ""
                ][..]
            )
            .prop_map(|v| ("content-type".to_string(), v.to_string())),
            proptest::sample::select(&["W/\"1\"", "\"x\"", "*", ""][..]).prop_map(|v| ("if-match".to_string(), v.to_string())),
            proptest::sample::select(&["return=minimal", "handling=strict", "return=OperationOutcome"][..])
                .prop_map(|v| ("prefer".to_string(), v.to_string())),
            proptest::sample::select(&["application/xml", "*/*", "application/fhir+json"][..])
                .prop_map(|v| ("accept".to_string(), v.to_string())),
        ],
        0..3,
    );
    (method, path, query, body, headers).prop_map(|(m, p, q, b, h)| (m, format!("{p}{q}"), b, h))
}

async fn send(
    a: &App,
    method: &str,
    uri: &str,
    body: Option<String>,
    headers: &[(String, String)],
) -> Result<(u16, String, Vec<u8>), String> {
    let mut b = Request::builder().method(method).uri(uri);
    for (k, v) in headers {
        b = b.header(k.as_str(), v.as_str());
    }
    let req = b
        .body(body.map(Body::from).unwrap_or_else(Body::empty))
        .map_err(|e| format!("unbuildable: {e}"))?;
    let resp = a.router.clone().oneshot(req).await.map_err(|e| format!("{e}"))?;
    let status = resp.status().as_u16();
    let ct = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let bytes = to_bytes(resp.into_body(), usize::MAX).await.map_err(|e| format!("{e}"))?;
    Ok((status, ct, bytes.to_vec()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fuzz_http_router() {
    let a = app();
    let mut runner = TestRunner::new(config(400));
    let mut stats: BTreeMap<u16, u32> = BTreeMap::new();
    let mut cases = Vec::new();
    // draw the cases first (the runner is synchronous), then send them
    for _ in 0..runner.config().cases {
        let tree = http_request().new_tree(&mut runner).unwrap();
        cases.push(tree.current());
    }
    for (method, uri, body, headers) in cases {
        let t = Instant::now();
        let Ok((status, ct, bytes)) = send(&a, &method, &uri, body.clone(), &headers).await else {
            continue; // a URI the http crate refuses never reaches the server
        };
        let took = t.elapsed();
        *stats.entry(status).or_default() += 1;
        let what = format!(
            "{method} {uri} {headers:?} body {:?}",
            body.as_deref().map(|b| b.chars().take(200).collect::<String>())
        );
        assert!(status < 500, "{status} for {what}: {}", String::from_utf8_lossy(&bytes));
        assert!(took < BOUND, "{took:?} for {what}");
        if status >= 400 && method != "HEAD" {
            assert!(ct.starts_with("application/fhir+json"), "{status} {ct} for {what}");
            let v: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            assert_eq!(v["resourceType"], "OperationOutcome", "{status} for {what}: {v}");
            assert!(v["issue"][0]["diagnostics"].as_str().is_some_and(|d| !d.is_empty()), "{what}");
        }
    }
    eprintln!("fuzz_http_router: statuses {stats:?}");
}
