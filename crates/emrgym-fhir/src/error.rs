//! Typed FHIR errors and their rendering as `OperationOutcome` resources with HTTP statuses.

use serde_json::{Value, json};

/// Every failure the FHIR layer can report. Each maps to one HTTP status and one
/// OperationOutcome `issue.code`; messages name the offending value.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum FhirError {
    /// Malformed request: bad JSON, bad id, bad search value (400).
    #[error("{0}")]
    BadRequest(String),
    /// A search parameter or modifier the server does not support (400, code not-supported).
    #[error("{0}")]
    NotSupported(String),
    /// Authentication missing or wrong (401).
    #[error("{0}")]
    Unauthorized(String),
    /// Authenticated, but the credential does not reach this route: an episode token on
    /// another episode or an operator route, a foreign `Origin` (403).
    #[error("{0}")]
    Forbidden(String),
    /// The `Host` header names a host this server is not configured for: DNS rebinding (421).
    #[error("{0}")]
    Misdirected(String),
    /// A budget is spent: too many episodes of an instance, open or in all (429).
    #[error("{0}")]
    TooMany(String),
    /// The resource type, resource, version or route does not exist (404).
    #[error("{0}")]
    NotFound(String),
    /// Interaction not allowed on this path (405).
    #[error("{0}")]
    MethodNotAllowed(String),
    /// Conflicts such as deleting a referenced resource (409).
    #[error("{0}")]
    Conflict(String),
    /// The resource was deleted (410).
    #[error("{0}")]
    Gone(String),
    /// Version or conditional precondition failed (412).
    #[error("{0}")]
    PreconditionFailed(String),
    /// Body over the size limit (413).
    #[error("{0}")]
    PayloadTooLarge(String),
    /// Content type we do not speak (415).
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// The request's processing ran past its deadline, or its body arrived too slowly (408).
    #[error("{0}")]
    Timeout(String),
    /// The server is at a capacity limit (connections, concurrent work); retry later (503).
    #[error("{0}")]
    Busy(String),
    /// A bug: a worker failed unexpectedly (500). Never expected; reported, not hidden.
    #[error("{0}")]
    Internal(String),
    /// Schema or reference-integrity failure (422). Holds one message per problem.
    #[error("{}", .0.join("; "))]
    Unprocessable(Vec<String>),
}

impl FhirError {
    /// HTTP status code for this error.
    pub fn status(&self) -> u16 {
        match self {
            FhirError::BadRequest(_) | FhirError::NotSupported(_) => 400,
            FhirError::Unauthorized(_) => 401,
            FhirError::Forbidden(_) => 403,
            FhirError::Misdirected(_) => 421,
            FhirError::TooMany(_) => 429,
            FhirError::NotFound(_) => 404,
            FhirError::MethodNotAllowed(_) => 405,
            FhirError::Conflict(_) => 409,
            FhirError::Gone(_) => 410,
            FhirError::PreconditionFailed(_) => 412,
            FhirError::PayloadTooLarge(_) => 413,
            FhirError::UnsupportedMediaType(_) => 415,
            FhirError::Unprocessable(_) => 422,
            FhirError::Timeout(_) => 408,
            FhirError::Busy(_) => 503,
            FhirError::Internal(_) => 500,
        }
    }

    /// FHIR IssueType code (http://hl7.org/fhir/issue-type).
    pub(crate) fn issue_code(&self) -> &'static str {
        match self {
            FhirError::BadRequest(_) => "invalid",
            FhirError::NotSupported(_) => "not-supported",
            FhirError::Unauthorized(_) => "login",
            FhirError::Forbidden(_) | FhirError::Misdirected(_) => "forbidden",
            FhirError::TooMany(_) => "throttled",
            FhirError::NotFound(_) => "not-found",
            FhirError::MethodNotAllowed(_) => "not-supported",
            FhirError::Conflict(_) => "conflict",
            FhirError::Gone(_) => "deleted",
            FhirError::PreconditionFailed(_) => "conflict",
            FhirError::PayloadTooLarge(_) => "too-costly",
            FhirError::UnsupportedMediaType(_) => "not-supported",
            FhirError::Unprocessable(_) => "processing",
            FhirError::Timeout(_) => "timeout",
            FhirError::Busy(_) => "throttled",
            FhirError::Internal(_) => "exception",
        }
    }

    /// Render as an OperationOutcome resource (one issue per message).
    pub(crate) fn to_outcome(&self) -> Value {
        let messages: Vec<String> = match self {
            FhirError::Unprocessable(m) => m.clone(),
            other => vec![other.to_string()],
        };
        let code = self.issue_code();
        let issues: Vec<Value> = messages
            .into_iter()
            .map(|m| json!({"severity": "error", "code": code, "diagnostics": m}))
            .collect();
        json!({"resourceType": "OperationOutcome", "issue": issues})
    }
}

/// Result alias for the FHIR layer.
pub type FhirResult<T> = Result<T, FhirError>;

/// An OperationOutcome carrying informational or warning issues.
pub fn outcome(severity: &str, code: &str, messages: &[String]) -> Value {
    let issues: Vec<Value> = messages
        .iter()
        .map(|m| json!({"severity": severity, "code": code, "diagnostics": m}))
        .collect();
    json!({"resourceType": "OperationOutcome", "issue": issues})
}
