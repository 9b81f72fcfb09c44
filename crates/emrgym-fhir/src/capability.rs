//! The CapabilityStatement served at `/metadata`, generated from what the server really
//! implements: every R4 resource type, its supported search parameters, the interactions
//! and the result parameters.

use super::params::{ParamType, Registry};
use super::validate::SchemaValidator;
use serde_json::{Value, json};

/// Software version reported in the statement.
pub(crate) const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Build the statement for a server whose base URL is `base`.
pub(crate) fn capability_statement(reg: &Registry, base: &str) -> Value {
    let schema = SchemaValidator::r4();
    // reverse includes: every reference parameter of any type, listed on the types it targets
    let mut rev: std::collections::BTreeMap<&str, Vec<String>> = std::collections::BTreeMap::new();
    for source in schema.resource_types() {
        for (code, p) in reg.for_type(source) {
            if p.ty == ParamType::Reference {
                for t in &p.targets {
                    rev.entry(t.as_str()).or_default().push(format!("{source}:{code}"));
                }
            }
        }
    }
    let resources: Vec<Value> = schema
        .resource_types()
        .map(|ty| {
            let params = reg.for_type(ty);
            let search: Vec<Value> = params
                .iter()
                .map(|(code, p)| json!({"name": code, "definition": p.url, "type": p.ty.as_str(), "documentation": p.description}))
                .collect();
            let mut refs: Vec<String> = vec!["*".to_string()];
            refs.extend(
                params
                    .iter()
                    .filter(|(_, p)| p.ty == ParamType::Reference)
                    .map(|(c, _)| format!("{ty}:{c}")),
            );
            let revs = rev.get(ty).cloned().unwrap_or_default();
            let interactions: Vec<Value> = ["read", "vread", "update", "delete", "history-instance", "create", "search-type"]
                .iter()
                .map(|c| json!({"code": c}))
                .collect();
            json!({
                "type": ty,
                "interaction": interactions,
                "versioning": "versioned-update",
                "readHistory": true,
                "updateCreate": true,
                "conditionalCreate": true,
                "conditionalRead": "not-supported",
                "conditionalUpdate": false,
                "conditionalDelete": "not-supported",
                "referencePolicy": ["literal", "local"],
                "searchInclude": refs,
                "searchRevInclude": revs,
                "searchParam": search,
            })
        })
        .collect();
    json!({
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": "2026-11-27",
        "kind": "instance",
        "software": {"name": "EMRGym", "version": VERSION},
        "implementation": {"description": "EMRGym mock EMR sandbox (copy-on-write, per-episode)", "url": base},
        "fhirVersion": "4.0.1",
        "format": ["application/fhir+json", "json"],
        "rest": [{
            "mode": "server",
            "documentation": "Search result parameters: _count (max 1000), _offset, _sort, _include, _include:iterate, _revinclude, _revinclude:iterate, _summary (count|data|text|false), _total, _elements. Modifiers: :missing, :exact, :contains (string), :text, :not (token), :[type] (reference); chained reference parameters. Unknown parameters are ignored with a warning unless Prefer: handling=strict.",
            "resource": resources,
            "interaction": [{"code": "transaction"}, {"code": "batch"}],
        }],
    })
}
