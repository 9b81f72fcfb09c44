//! The one write type: a resource the agent's sandbox holds differently from the cohort
//! (created, updated or deleted), with both versions shared, never copied. The store's diff
//! produces it; the grader attributes it to nodes; the guidance reads it to tell which steps
//! look done. (A trajectory's per-step `FhirWrite` is the on-disk record of one write, with
//! its version and field changes, built from the store's write log.)

use serde_json::Value;
use std::sync::Arc;

/// What a write did to a resource, relative to the cohort.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WriteKind {
    /// Created in the sandbox (the cohort has no such resource).
    Create,
    /// Changed from the cohort's version.
    Update,
    /// Deleted from the cohort.
    Delete,
}

impl WriteKind {
    /// `create`, `update` or `delete`, as selectors and grades write it.
    pub fn as_str(self) -> &'static str {
        match self {
            WriteKind::Create => "create",
            WriteKind::Update => "update",
            WriteKind::Delete => "delete",
        }
    }
}

/// One resource written, relative to the cohort.
#[derive(Debug, Clone, PartialEq)]
pub struct Write {
    /// What was done.
    pub kind: WriteKind,
    /// Resource type.
    pub resource_type: String,
    /// Logical id.
    pub id: String,
    /// The cohort's version (None for a create).
    pub before: Option<Arc<Value>>,
    /// The current version (None for a delete).
    pub after: Option<Arc<Value>>,
}

impl Write {
    /// The write that takes `before` (the cohort's version, if any) to `after` (the current
    /// one, if any); `None` when neither exists (nothing was written).
    pub fn between(resource_type: &str, id: &str, before: Option<Arc<Value>>, after: Option<Arc<Value>>) -> Option<Write> {
        let kind = match (&before, &after) {
            (None, None) => return None,
            (None, Some(_)) => WriteKind::Create,
            (Some(_), Some(_)) => WriteKind::Update,
            (Some(_), None) => WriteKind::Delete,
        };
        Some(Write {
            kind,
            resource_type: resource_type.to_string(),
            id: id.to_string(),
            before,
            after,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_kind_follows_the_two_versions_and_shares_them() {
        let v = Arc::new(json!({"resourceType": "Patient", "id": "p"}));
        let w = Write::between("Patient", "p", None, Some(v.clone())).unwrap();
        assert_eq!((w.kind, w.kind.as_str()), (WriteKind::Create, "create"));
        assert!(Arc::ptr_eq(w.after.as_ref().unwrap(), &v), "the version is shared, not copied");
        assert_eq!(
            Write::between("Patient", "p", Some(v.clone()), Some(v.clone())).unwrap().kind,
            WriteKind::Update
        );
        assert_eq!(Write::between("Patient", "p", Some(v), None).unwrap().kind.as_str(), "delete");
        assert_eq!(Write::between("Patient", "p", None, None), None);
    }
}
