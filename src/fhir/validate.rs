//! Validation of resources against the official FHIR R4 JSON Schema, one compiled
//! validator per resource type (`#/definitions/<Type>`, compiled once, on first use).

use super::error::{FhirError, FhirResult};
use serde_json::Value;
use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, OnceLock};

/// The official FHIR R4 JSON Schema, embedded.
pub const FHIR_SCHEMA_JSON: &str = include_str!("../../fhir-fixtures/spec/fhir.schema.json");

/// Most schema errors reported for one resource.
const MAX_ERRORS: usize = 20;

/// Per-type validators over the embedded R4 schema.
pub struct SchemaValidator {
    root: Value,
    types: BTreeSet<String>,
    compiled: Mutex<HashMap<String, Arc<jsonschema::Validator>>>,
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
        let root: Value = serde_json::from_str(text).unwrap_or(Value::Null);
        let types = root
            .pointer("/discriminator/mapping")
            .and_then(Value::as_object)
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default();
        SchemaValidator {
            root,
            types,
            compiled: Mutex::new(HashMap::new()),
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

    fn validator(&self, ty: &str) -> FhirResult<Arc<jsonschema::Validator>> {
        if let Ok(map) = self.compiled.lock()
            && let Some(v) = map.get(ty)
        {
            return Ok(v.clone());
        }
        let mut schema = self.root.clone();
        if let Some(obj) = schema.as_object_mut() {
            obj.remove("oneOf");
            obj.remove("discriminator");
            obj.insert("$ref".into(), Value::String(format!("#/definitions/{ty}")));
        }
        let v = jsonschema::options()
            .with_draft(jsonschema::Draft::Draft6)
            .build(&schema)
            .map_err(|e| FhirError::Unprocessable(vec![format!("schema for {ty} failed to compile: {e}")]))?;
        let v = Arc::new(v);
        if let Ok(mut map) = self.compiled.lock() {
            map.insert(ty.to_string(), v.clone());
        }
        Ok(v)
    }

    /// Validate `resource` as a `ty`. Errors list each violation with its JSON path.
    pub fn validate(&self, ty: &str, resource: &Value) -> FhirResult<()> {
        if !self.is_resource_type(ty) {
            return Err(FhirError::NotFound(format!("'{ty}' is not a FHIR R4 resource type")));
        }
        let v = self.validator(ty)?;
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

/// FHIR logical ids: `[A-Za-z0-9\-\.]{1,64}`.
pub fn check_id(id: &str) -> FhirResult<()> {
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

    #[test]
    fn unknown_type_is_404_and_ids_checked() {
        assert_eq!(SchemaValidator::r4().validate("Patent", &json!({})).unwrap_err().status(), 404);
        assert!(check_id("abc-1.2").is_ok());
        assert!(check_id("a b").is_err());
        assert!(check_id(&"x".repeat(65)).is_err());
    }
}
