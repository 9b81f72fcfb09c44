//! Validation of resources against the official FHIR R4 JSON Schema: one validator for
//! all resource types, compiled once on first use, dispatching on `resourceType` to
//! `#/definitions/<Type>`.

use super::error::{FhirError, FhirResult};
use serde_json::Value;
use std::collections::BTreeSet;
use std::sync::{Arc, OnceLock};

/// The official FHIR R4 JSON Schema, embedded.
pub(crate) const FHIR_SCHEMA_JSON: &str = include_str!("../../../fhir-fixtures/spec/fhir.schema.json");

/// Most schema errors reported for one resource.
const MAX_ERRORS: usize = 20;

/// One validator for every R4 resource type, compiled once from the embedded schema.
///
/// The root `oneOf` of the official schema is replaced by a binary tree of `if resourceType
/// in [..] then .. else ..` ending in `#/definitions/T`, so a resource is checked against its own definition only
/// (never through the `oneOf`, which is orders of magnitude slower) while every definition
/// is compiled once and shared. Compiling one validator per type instead copied the shared
/// definitions into each: 15.6 MiB per type written, 2.3 GiB for all 146 (issue 16;
/// docs/performance.md).
pub struct SchemaValidator {
    types: BTreeSet<String>,
    compiled: OnceLock<Result<jsonschema::Validator, String>>,
    root: Value,
}

impl std::fmt::Debug for SchemaValidator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SchemaValidator").field("types", &self.types.len()).finish()
    }
}

impl SchemaValidator {
    /// The process-wide validator (the schema is parsed once).
    pub fn r4() -> Arc<SchemaValidator> {
        static V: OnceLock<Arc<SchemaValidator>> = OnceLock::new();
        V.get_or_init(|| Arc::new(SchemaValidator::from_str(FHIR_SCHEMA_JSON))).clone()
    }

    fn from_str(text: &str) -> SchemaValidator {
        let mut root: Value = serde_json::from_str(text).unwrap_or(Value::Null);
        let types: BTreeSet<String> = root
            .pointer("/discriminator/mapping")
            .and_then(Value::as_object)
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default();
        if let Some(obj) = root.as_object_mut() {
            obj.remove("oneOf");
            obj.remove("discriminator");
            obj.remove("$schema");
            obj.remove("id");
            let all: Vec<&str> = types.iter().map(String::as_str).collect();
            if let Value::Object(d) = dispatch(&all) {
                obj.extend(d);
            }
        }
        SchemaValidator {
            types,
            compiled: OnceLock::new(),
            root,
        }
    }

    /// Is `ty` a FHIR R4 resource type?
    pub fn is_resource_type(&self, ty: &str) -> bool {
        self.types.contains(ty)
    }

    /// All resource types, sorted.
    pub fn resource_types(&self) -> impl Iterator<Item = &str> {
        self.types.iter().map(String::as_str)
    }

    fn validator(&self) -> FhirResult<&jsonschema::Validator> {
        self.compiled
            .get_or_init(|| {
                jsonschema::options()
                    .with_draft(jsonschema::Draft::Draft7)
                    .build(&self.root)
                    .map_err(|e| format!("the R4 schema failed to compile: {e}"))
            })
            .as_ref()
            .map_err(|e| FhirError::Unprocessable(vec![e.clone()]))
    }

    /// Validate `resource` as a `ty`. Errors list each violation with its JSON path.
    pub fn validate(&self, ty: &str, resource: &Value) -> FhirResult<()> {
        if !self.is_resource_type(ty) {
            return Err(FhirError::NotFound(format!("'{ty}' is not a FHIR R4 resource type")));
        }
        // the dispatch keys on the body's resourceType: a body of another type (or none)
        // is checked against `ty`'s definition through a copy that names `ty`
        let given = resource.get("resourceType");
        if given.and_then(Value::as_str) != Some(ty) {
            return Err(FhirError::Unprocessable(vec![format!(
                "{ty}/resourceType: {} is not \"{ty}\"",
                given.map_or("missing".to_string(), Value::to_string)
            )]));
        }
        let v = self.validator()?;
        let errors: Vec<String> = v
            .iter_errors(resource)
            .take(MAX_ERRORS)
            .map(|e| {
                let path = e.instance_path().to_string();
                let path = if path.is_empty() { "/".to_string() } else { path };
                format!("{ty}{path}: {e}")
            })
            .collect();
        if errors.is_empty() {
            Ok(())
        } else {
            Err(FhirError::Unprocessable(errors))
        }
    }
}

/// `if resourceType in (first half) then .. else ..`, down to `$ref: #/definitions/T`: a
/// resource meets about 2·log2(146) = 16 checks before its own definition (one `if` per
/// type cost 70 µs per validation, this costs a few).
fn dispatch(types: &[&str]) -> Value {
    match types {
        [] => serde_json::json!({}),
        [one] => serde_json::json!({"$ref": format!("#/definitions/{one}")}),
        many => {
            let (a, b) = many.split_at(many.len() / 2);
            serde_json::json!({
                "if": {"properties": {"resourceType": {"enum": a}}},
                "then": dispatch(a),
                "else": dispatch(b),
            })
        }
    }
}

/// FHIR logical ids: `[A-Za-z0-9\-\.]{1,64}`.
pub(crate) fn check_id(id: &str) -> FhirResult<()> {
    if id.is_empty() || id.len() > 64 || !id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.') {
        return Err(FhirError::BadRequest(format!(
            "'{id}' is not a valid FHIR id (1-64 characters of A-Z, a-z, 0-9, '-', '.')"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn valid_and_invalid_patients() {
        let v = SchemaValidator::r4();
        v.validate(
            "Patient",
            &json!({"resourceType":"Patient","gender":"female","birthDate":"1980-01-02"}),
        )
        .unwrap();
        let err = v
            .validate("Patient", &json!({"resourceType":"Patient","gender":"femme","birthDat":"x"}))
            .unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("femme"), "{msg}");
        assert!(msg.contains("birthDat"), "{msg}");
        assert_eq!(err.status(), 422);
    }

    /// Issue 16: one validator compiled per type written grew RSS by 15.6 MiB per type and
    /// took 285 ms per type (41 s for all 146); the shared validator compiles once.
    #[test]
    fn every_type_validates_without_compiling_again() {
        let v = SchemaValidator::r4();
        let types: Vec<String> = v.resource_types().map(String::from).collect();
        assert_eq!(types.len(), 146);
        let t = std::time::Instant::now();
        let mut valid = 0;
        for ty in &types {
            if v.validate(ty, &json!({"resourceType": ty})).is_ok() {
                valid += 1;
            }
        }
        assert_eq!(valid, 69, "minimal resources valid");
        assert!(t.elapsed() < std::time::Duration::from_secs(15), "{:?}", t.elapsed());
        // a body of another type is named, not validated as the URL's type
        let e = v.validate("Patient", &json!({"resourceType": "Observation"})).unwrap_err();
        assert!(e.to_string().contains("\"Observation\" is not \"Patient\""), "{e}");
        assert_eq!(e.status(), 422);
    }

    #[test]
    fn unknown_type_is_404_and_ids_checked() {
        assert_eq!(SchemaValidator::r4().validate("Patent", &json!({})).unwrap_err().status(), 404);
        assert!(check_id("abc-1.2").is_ok());
        assert!(check_id("a b").is_err());
        assert!(check_id(&"x".repeat(65)).is_err());
    }
}
