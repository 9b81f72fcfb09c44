//! Who may call what (docs/external-agents.md, "Threat model"). One check, in the server's
//! guard, in front of every route:
//!
//! - **Browser safety** first: the `Host` header must name a configured host (loopback names
//!   by default; DNS rebinding fails, 421), a request with a foreign `Origin` is refused (403),
//!   and a state-changing request with a body must say it is JSON (415), so no HTML form and
//!   no `text/plain` fetch can change state.
//! - **Roles**: the operator holds `--token` (or, when none is set, is any loopback client);
//!   an agent holds the capability of one episode, a 256-bit token from the OS CSPRNG granted
//!   when the episode is created ([`Grants`]). An episode token reaches only its own
//!   episode's routes ([`agent_may`]): 403 anywhere else, 401 for no or an unknown token.
//!
//! The resolved [`Role`] travels with the request as an extension, so handlers decide what
//! an agent sees (never the grade unless the server's feedback policy allows it).

use super::error::FhirError;
use axum::http::{HeaderMap, Method, header};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::RwLock;

/// Host names every server answers to (the port is not compared: rebinding changes the
/// name, not the port).
pub(crate) const LOOPBACK_HOSTS: [&str; 3] = ["localhost", "127.0.0.1", "[::1]"];

/// Who is calling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// The benchmark's operator: creates and lists episodes, reads full grades.
    Operator,
    /// The holder of one episode's token (the id names the episode and its sandbox).
    Agent(String),
}

impl Role {
    /// Whether this caller may see grades, expected values and node paths.
    pub fn is_operator(&self) -> bool {
        matches!(self, Role::Operator)
    }
}

/// The peer address of a connection (inserted by `serve`; absent for in-process callers,
/// which are local by construction).
#[derive(Debug, Clone, Copy)]
pub struct Peer(pub SocketAddr);

/// Episode capabilities: the SHA-256 of each live token → the episode id. Only digests are
/// kept, and a token is found by its digest, so lookups take the same time whatever prefix
/// of a token an attacker guesses.
#[derive(Debug, Default)]
pub struct Grants {
    by_digest: RwLock<BTreeMap<[u8; 32], String>>,
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

impl Grants {
    /// A fresh token for `id` (64 hex digits: 256 bits from the OS CSPRNG).
    pub fn grant(&self, id: &str) -> Result<String, FhirError> {
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes).map_err(|e| FhirError::Internal(format!("the OS random number generator failed: {e}")))?;
        let token: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        self.by_digest
            .write()
            .map_err(|_| FhirError::Internal("the capability table is unavailable".into()))?
            .insert(digest(&token), id.to_string());
        Ok(token)
    }

    /// Withdraw every token of `id`.
    pub fn revoke(&self, id: &str) {
        // a poisoned table still holds the tokens: they are withdrawn all the same
        emrgym_core::sync::write(&self.by_digest).retain(|_, v| v != id);
    }

    /// The episode a token belongs to.
    pub fn holder(&self, token: &str) -> Option<String> {
        emrgym_core::sync::read(&self.by_digest).get(&digest(token)).cloned()
    }
}

/// Constant-time equality of two secrets (the length is not secret).
pub(crate) fn same_secret(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The bearer token of a request, if any.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = v.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// The settings [`role`] and [`browser_safe`] read.
#[derive(Debug, Clone, Copy)]
pub struct Policy<'a> {
    /// The operator's token (`--token`).
    pub operator_token: Option<&'a str>,
    /// Host names accepted besides [`LOOPBACK_HOSTS`] (lower case, no port).
    pub hosts: &'a [String],
    /// Origins accepted besides those on an accepted host (`scheme://host[:port]`).
    pub origins: &'a [String],
}

/// The caller's role: the operator token (compared in constant time), an episode token, or
/// (no `--token` set) any loopback client without a token. 401 otherwise.
pub fn role(headers: &HeaderMap, peer: Option<&Peer>, policy: &Policy, grants: &Grants) -> Result<Role, FhirError> {
    match (bearer(headers), policy.operator_token) {
        (Some(given), Some(op)) if same_secret(given, op) => Ok(Role::Operator),
        (Some(given), _) => grants.holder(given).map(Role::Agent).ok_or_else(|| {
            FhirError::Unauthorized(
                "the bearer token is neither the operator's nor a live episode's: send Authorization: Bearer <token>".into(),
            )
        }),
        (None, Some(_)) => Err(FhirError::Unauthorized(
            "missing bearer token: send Authorization: Bearer <token> (the operator's, or the token POST /episodes returned)".into(),
        )),
        (None, None) => match peer {
            Some(Peer(addr)) if !addr.ip().is_loopback() => Err(FhirError::Unauthorized(format!(
                "this server has no --token, so only loopback clients may use it without an episode token (you are {})",
                addr.ip()
            ))),
            _ => Ok(Role::Operator),
        },
    }
}

/// The routes an episode token reaches, all of them its own episode's: its view, guidance,
/// tools and finish, its sandbox's FHIR base and tool route, `GET /scenarios` (which then
/// lists its own instance only) and `/mcp` (whose sessions then serve its own episode only). `segs` are the percent-decoded, non-empty path
/// segments, as the router sees them.
pub(crate) fn agent_may(id: &str, method: &Method, segs: &[&str]) -> bool {
    let get = method == Method::GET;
    let post = method == Method::POST;
    match segs {
        ["scenarios"] => get,
        ["episodes", e] => get && *e == id,
        ["episodes", e, "guidance"] => get && *e == id,
        ["episodes", e, "tools", _] | ["episodes", e, "finish"] => post && *e == id,
        ["sandboxes", s, "fhir", ..] => *s == id,
        ["sandboxes", s, "tools", _] => post && *s == id,
        // MCP over HTTP: a session opened with an episode token serves that episode only
        ["mcp"] => true,
        _ => false,
    }
}

/// The host name of a `Host` header value or an origin's authority, lower case, port cut.
fn host_name(authority: &str) -> String {
    let a = authority.trim().to_ascii_lowercase();
    if a.starts_with('[') {
        return match a.find(']') {
            Some(i) => a[..=i].to_string(),
            None => a,
        };
    }
    match a.rsplit_once(':') {
        Some((name, port)) if port.chars().all(|c| c.is_ascii_digit()) => name.to_string(),
        _ => a,
    }
}

fn host_ok(name: &str, policy: &Policy) -> bool {
    LOOPBACK_HOSTS.contains(&name) || policy.hosts.iter().any(|h| h.eq_ignore_ascii_case(name))
}

/// Refuse what a web page could send: a `Host` that is not ours (421), a foreign `Origin`
/// (403), a state-changing body that is not declared JSON (415; a form body only on
/// `POST .../_search`). `has_body`: the body holds more than white space.
pub(crate) fn browser_safe(method: &Method, path: &str, headers: &HeaderMap, has_body: bool, policy: &Policy) -> Result<(), FhirError> {
    if let Some(host) = headers.get(header::HOST) {
        let name = host_name(host.to_str().unwrap_or("?"));
        if !host_ok(&name, policy) {
            return Err(FhirError::Misdirected(format!(
                "Host '{name}' is not a name of this server (loopback names, or --allow-host); DNS rebinding is refused"
            )));
        }
    }
    if let Some(origin) = headers.get(header::ORIGIN) {
        let o = origin.to_str().unwrap_or("null").trim().trim_end_matches('/');
        let same_host = o
            .split_once("://")
            .filter(|(scheme, _)| matches!(*scheme, "http" | "https"))
            .is_some_and(|(_, authority)| host_ok(&host_name(authority), policy));
        if !same_host && !policy.origins.iter().any(|x| x.trim_end_matches('/').eq_ignore_ascii_case(o)) {
            return Err(FhirError::Forbidden(format!(
                "requests from Origin '{o}' are refused (web pages may not drive this server; --allow-origin admits one)"
            )));
        }
    }
    if has_body && matches!(*method, Method::POST | Method::PUT | Method::PATCH | Method::DELETE) {
        let ctype = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or_default();
        // the media type's essence, as browsers judge a "simple" request by it
        let essence = ctype.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
        let json = essence.starts_with("application/") && essence.contains("json");
        let form = essence == "application/x-www-form-urlencoded" && *method == Method::POST && path.ends_with("/_search");
        if !json && !form {
            let shown = if ctype.is_empty() {
                "none".to_string()
            } else {
                format!("'{ctype}'")
            };
            return Err(FhirError::UnsupportedMediaType(format!(
                "{method} {path} with Content-Type {shown}: send Content-Type: application/json (or application/fhir+json)"
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_str(v).unwrap_or(HeaderValue::from_static("x")));
        }
        h
    }

    const NONE: Policy<'static> = Policy {
        operator_token: None,
        hosts: &[],
        origins: &[],
    };

    #[test]
    fn tokens_are_256_bit_unique_and_found_only_whole() {
        let g = Grants::default();
        let a = g.grant("ep1").unwrap_or_default();
        let b = g.grant("ep2").unwrap_or_default();
        assert_eq!(a.len(), 64);
        assert!(a.bytes().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
        assert_eq!(g.holder(&a).as_deref(), Some("ep1"));
        assert_eq!(g.holder(&a[..63]), None);
        g.revoke("ep1");
        assert_eq!(g.holder(&a), None);
        assert_eq!(g.holder(&b).as_deref(), Some("ep2"));
    }

    #[test]
    fn roles() {
        let g = Grants::default();
        let t = g.grant("ep1").unwrap_or_default();
        let op = Policy {
            operator_token: Some("s3cret"),
            ..NONE
        };
        let local = Peer(SocketAddr::from(([127, 0, 0, 1], 9)));
        let remote = Peer(SocketAddr::from(([10, 0, 0, 7], 9)));
        let auth = |v: &str| headers(&[("authorization", v)]);
        assert_eq!(role(&auth("Bearer s3cret"), None, &op, &g), Ok(Role::Operator));
        assert_eq!(role(&auth(&format!("bearer {t}")), None, &op, &g), Ok(Role::Agent("ep1".into())));
        assert_eq!(role(&auth("Bearer s3cre"), None, &op, &g).map_err(|e| e.status()), Err(401));
        assert_eq!(role(&HeaderMap::new(), Some(&local), &op, &g).map_err(|e| e.status()), Err(401));
        // without --token: loopback is the operator, an episode token is still an agent
        assert_eq!(role(&HeaderMap::new(), Some(&local), &NONE, &g), Ok(Role::Operator));
        assert_eq!(role(&HeaderMap::new(), None, &NONE, &g), Ok(Role::Operator));
        assert_eq!(role(&HeaderMap::new(), Some(&remote), &NONE, &g).map_err(|e| e.status()), Err(401));
        assert_eq!(
            role(&auth(&format!("Bearer {t}")), Some(&local), &NONE, &g),
            Ok(Role::Agent("ep1".into()))
        );
        assert_eq!(
            role(&auth("Bearer guess"), Some(&local), &NONE, &g).map_err(|e| e.status()),
            Err(401)
        );
    }

    #[test]
    fn an_episode_token_reaches_its_own_episode_only() {
        let may = |m: Method, p: &str| {
            let segs: Vec<&str> = p.split('/').filter(|s| !s.is_empty()).collect();
            agent_may("ep1", &m, &segs)
        };
        assert!(may(Method::GET, "/episodes/ep1"));
        assert!(may(Method::POST, "/episodes/ep1/finish"));
        assert!(may(Method::POST, "/episodes/ep1/tools/fhir_read"));
        assert!(may(Method::GET, "/episodes/ep1/guidance"));
        assert!(may(Method::PUT, "/sandboxes/ep1/fhir/Patient/x"));
        assert!(may(Method::POST, "/sandboxes/ep1/tools/finish"));
        assert!(may(Method::GET, "/scenarios"));
        assert!(may(Method::POST, "/mcp"));
        for (m, p) in [
            (Method::GET, "/episodes/ep2"),
            (Method::GET, "/episodes"),
            (Method::POST, "/episodes"),
            (Method::DELETE, "/episodes/ep1"),
            (Method::POST, "/episodes/ep2/finish"),
            (Method::GET, "/sandboxes/ep2/fhir/Patient"),
            (Method::GET, "/sandboxes"),
            (Method::GET, "/sandboxes/ep1"),
            (Method::DELETE, "/sandboxes/ep1"),
            (Method::GET, "/fhir/Patient"),
            (Method::POST, "/tools/fhir_read"),
            (Method::GET, "/tools"),
            (Method::POST, "/episodes/ep1/../ep2/finish"),
        ] {
            assert!(!may(m.clone(), p), "{m} {p}");
        }
    }

    #[test]
    fn browser_requests_are_refused() {
        let ok = |h: &[(&'static str, &str)], m: Method, p: &str, body: bool| {
            browser_safe(&m, p, &headers(h), body, &NONE).map_err(|e| e.status())
        };
        assert_eq!(ok(&[("host", "127.0.0.1:8080")], Method::GET, "/fhir/Patient", false), Ok(()));
        assert_eq!(ok(&[("host", "[::1]:80")], Method::GET, "/", false), Ok(()));
        assert_eq!(ok(&[("host", "LocalHost")], Method::GET, "/", false), Ok(()));
        assert_eq!(ok(&[("host", "evil.example:8080")], Method::GET, "/", false), Err(421));
        assert_eq!(ok(&[("host", "localhost.evil.example")], Method::GET, "/", false), Err(421));
        assert_eq!(ok(&[("origin", "http://localhost:3000")], Method::GET, "/", false), Ok(()));
        assert_eq!(ok(&[("origin", "http://evil.example")], Method::GET, "/", false), Err(403));
        assert_eq!(ok(&[("origin", "null")], Method::POST, "/episodes", false), Err(403));
        assert_eq!(ok(&[("content-type", "text/plain")], Method::POST, "/episodes", true), Err(415));
        assert_eq!(
            ok(&[("content-type", "text/plain; x=json")], Method::POST, "/episodes", true),
            Err(415)
        );
        assert_eq!(ok(&[], Method::POST, "/tools/fhir_create", true), Err(415));
        assert_eq!(ok(&[], Method::POST, "/episodes/ep1/finish", false), Ok(()));
        assert_eq!(
            ok(
                &[("content-type", "application/json; charset=utf-8")],
                Method::POST,
                "/episodes",
                true
            ),
            Ok(())
        );
        assert_eq!(
            ok(&[("content-type", "application/json+fhir")], Method::PUT, "/fhir/Patient/x", true),
            Ok(())
        );
        let form = [("content-type", "application/x-www-form-urlencoded")];
        assert_eq!(ok(&form, Method::POST, "/fhir/Patient/_search", true), Ok(()));
        assert_eq!(ok(&form, Method::POST, "/fhir/Patient", true), Err(415));
        let extra = ["emr.internal".to_string()];
        let origins = ["https://dash.example".to_string()];
        let p = Policy {
            hosts: &extra,
            origins: &origins,
            ..NONE
        };
        assert!(browser_safe(&Method::GET, "/", &headers(&[("host", "emr.internal:8080")]), false, &p).is_ok());
        assert!(browser_safe(&Method::GET, "/", &headers(&[("origin", "https://dash.example")]), false, &p).is_ok());
        assert!(browser_safe(&Method::GET, "/", &headers(&[("origin", "http://dash.example")]), false, &p).is_err());
    }
}
