//! Test helpers: an app over the demo cohort with a fixed clock, and a request helper.

use axum::Router;
use axum::body::{Body, to_bytes};
use axum::http::{HeaderMap, Request, StatusCode};
use emrgym_fhir::clock::{Clock, parse_instant};
use emrgym_fhir::load;
use emrgym_fhir::server::{AppState, ServerConfig};
use emrgym_tools::{Registry, http};
use serde_json::Value;
use std::sync::Arc;
use tower::ServiceExt;

pub const NOW: &str = "2023-11-13T10:15:00Z";

pub struct App {
    pub router: Router,
}

pub struct Resp {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Value,
}

impl Resp {
    pub fn header(&self, name: &str) -> String {
        self.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default().to_string()
    }
    /// The diagnostics of the first issue of an OperationOutcome body.
    pub fn diag(&self) -> String {
        assert_eq!(
            self.body["resourceType"], "OperationOutcome",
            "expected an OperationOutcome, got {}",
            self.body
        );
        self.body["issue"][0]["diagnostics"].as_str().unwrap_or_default().to_string()
    }
    pub fn ids(&self) -> Vec<String> {
        self.body["entry"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter(|e| e["search"]["mode"] == "match")
                    .map(|e| e["resource"]["id"].as_str().unwrap().to_string())
                    .collect()
            })
            .unwrap_or_default()
    }
}

pub fn app_with(cohort: &str, cfg: ServerConfig) -> App {
    let clock = Clock::fixed(parse_instant(NOW).unwrap());
    let c = load::load(cohort).unwrap().build(&clock);
    let state = AppState::new(
        c,
        ServerConfig {
            clock,
            seed: 1,
            public_base: Some("http://emr.test".into()),
            ..cfg
        },
    );
    App {
        router: http::app(state, Arc::new(Registry::standard().unwrap())),
    }
}

pub fn app() -> App {
    app_with("demo", ServerConfig::default())
}

impl App {
    pub async fn req(&self, method: &str, uri: &str, body: Option<&str>, headers: &[(&str, &str)]) -> Resp {
        let mut b = Request::builder().method(method).uri(uri);
        let has_ct = headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("content-type"));
        if body.is_some() && !has_ct {
            b = b.header("content-type", "application/fhir+json");
        }
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        let req = b.body(body.map(|s| Body::from(s.to_string())).unwrap_or_else(Body::empty)).unwrap();
        let resp = self.router.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
        let bytes = to_bytes(resp.into_body(), usize::MAX).await.unwrap();
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("non-JSON body ({e}): {}", String::from_utf8_lossy(&bytes)))
        };
        Resp { status, headers, body }
    }
    pub async fn get(&self, uri: &str) -> Resp {
        self.req("GET", uri, None, &[]).await
    }
    pub async fn post(&self, uri: &str, body: &Value) -> Resp {
        self.req("POST", uri, Some(&body.to_string()), &[]).await
    }
    pub async fn put(&self, uri: &str, body: &Value) -> Resp {
        self.req("PUT", uri, Some(&body.to_string()), &[]).await
    }
}
