//! Test helpers: an app over the demo cohort with a fixed clock (with or without the episode
//! API), and a request helper.

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

/// The app `emrgym serve` runs (FHIR, tools and the episode API over the demo cohort at
/// [`NOW`], public base `http://emr.test`), recording ended episodes in `record`; the operator
/// authenticates with `token` (loopback when `None`).
pub fn episode_server(
    record: &std::path::Path,
    token: Option<&str>,
    limits: emrgym_engine::episodes::Limits,
) -> (App, Arc<emrgym_engine::episodes::EpisodeApi>) {
    use emrgym_engine::episodes::{EpisodeApi, Limits, app};
    let clock = Clock::fixed(parse_instant(NOW).unwrap());
    let cohort = load::load("demo").unwrap().build(&clock);
    let state = AppState::new(
        cohort,
        ServerConfig {
            clock,
            token: token.map(String::from),
            public_base: Some("http://emr.test".into()),
            ..ServerConfig::default()
        },
    );
    let suite = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scenarios");
    let ws = emrgym_engine::episode::Workspace::open(&suite).unwrap();
    let rec = emrgym_engine::session::Recorder::open(record, &suite, 0, &ws).unwrap();
    let limits = Limits {
        operator_token: token.is_some(),
        ..limits
    };
    let api = EpisodeApi::with_limits(state.clone(), ws, rec, limits).unwrap();
    let router = app(state, Arc::new(Registry::standard().unwrap()), Some(api.clone()));
    (App { router }, api)
}

/// Copy a directory tree (a scenario directory or a run directory to change in a test).
pub fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &to.join(e.file_name()));
        } else {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}
