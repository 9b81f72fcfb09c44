//! Cohort loading: FHIR NDJSON (bulk format, one resource per line), Bundle files
//! (transaction/batch/collection, `urn:uuid` references rewritten to `Type/id`),
//! directories of either, and the cohorts embedded in the binary.

use super::store::{CohortBuilder, CohortError};
use serde_json::Value;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A load failure; names the file and line or entry.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// File system problem.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// Bad JSON or resource.
    #[error("{source_name}: {reason}")]
    Invalid {
        /// File (and line) that failed.
        source_name: String,
        /// Why.
        reason: String,
    },
    /// Unknown cohort name.
    #[error("no cohort named '{0}' (built in: {names}); give a path to a directory, .ndjson or .json file instead", names = BUILTIN.iter().map(|b| b.0).collect::<Vec<_>>().join(", "))]
    UnknownName(String),
}

fn invalid(source_name: impl Into<String>, reason: impl Into<String>) -> LoadError {
    LoadError::Invalid {
        source_name: source_name.into(),
        reason: reason.into(),
    }
}

fn cohort_err(source_name: &str, e: CohortError) -> LoadError {
    invalid(source_name, e.to_string())
}

/// Embedded cohorts: name, then (file name, contents).
pub const BUILTIN: &[(&str, &[(&str, &str)])] = &[
    (
        "demo",
        &[
            (
                "Organization.ndjson",
                include_str!("../../../fhir-fixtures/cohorts/demo/Organization.ndjson"),
            ),
            (
                "Practitioner.ndjson",
                include_str!("../../../fhir-fixtures/cohorts/demo/Practitioner.ndjson"),
            ),
            ("Patient.ndjson", include_str!("../../../fhir-fixtures/cohorts/demo/Patient.ndjson")),
            (
                "Encounter.ndjson",
                include_str!("../../../fhir-fixtures/cohorts/demo/Encounter.ndjson"),
            ),
            (
                "Condition.ndjson",
                include_str!("../../../fhir-fixtures/cohorts/demo/Condition.ndjson"),
            ),
            (
                "Observation.ndjson",
                include_str!("../../../fhir-fixtures/cohorts/demo/Observation.ndjson"),
            ),
            (
                "MedicationRequest.ndjson",
                include_str!("../../../fhir-fixtures/cohorts/demo/MedicationRequest.ndjson"),
            ),
            (
                "AllergyIntolerance.ndjson",
                include_str!("../../../fhir-fixtures/cohorts/demo/AllergyIntolerance.ndjson"),
            ),
            (
                "Procedure.ndjson",
                include_str!("../../../fhir-fixtures/cohorts/demo/Procedure.ndjson"),
            ),
            (
                "Immunization.ndjson",
                include_str!("../../../fhir-fixtures/cohorts/demo/Immunization.ndjson"),
            ),
        ],
    ),
    (
        // `emrgym fixtures generate --patients 120 --seed 21 --years 1 --vitals-every 8 --admitted 0.6`
        // (a test keeps it so)
        "gen",
        &[
            (
                "Organization.ndjson",
                include_str!("../../../fhir-fixtures/cohorts/gen/Organization.ndjson"),
            ),
            (
                "Practitioner.ndjson",
                include_str!("../../../fhir-fixtures/cohorts/gen/Practitioner.ndjson"),
            ),
            ("Patient.ndjson", include_str!("../../../fhir-fixtures/cohorts/gen/Patient.ndjson")),
            (
                "Encounter.ndjson",
                include_str!("../../../fhir-fixtures/cohorts/gen/Encounter.ndjson"),
            ),
            (
                "Condition.ndjson",
                include_str!("../../../fhir-fixtures/cohorts/gen/Condition.ndjson"),
            ),
            (
                "Observation.ndjson",
                include_str!("../../../fhir-fixtures/cohorts/gen/Observation.ndjson"),
            ),
            (
                "MedicationRequest.ndjson",
                include_str!("../../../fhir-fixtures/cohorts/gen/MedicationRequest.ndjson"),
            ),
            (
                "AllergyIntolerance.ndjson",
                include_str!("../../../fhir-fixtures/cohorts/gen/AllergyIntolerance.ndjson"),
            ),
            (
                "Procedure.ndjson",
                include_str!("../../../fhir-fixtures/cohorts/gen/Procedure.ndjson"),
            ),
            (
                "Immunization.ndjson",
                include_str!("../../../fhir-fixtures/cohorts/gen/Immunization.ndjson"),
            ),
        ],
    ),
    (
        "synthea-samples",
        &[
            (
                "Alfreda_Wyman.json",
                include_str!("../../../fhir-fixtures/cohorts/synthea-samples/Alfreda_Wyman_3287b938-4670-47eb-91e5-e0ce3df71405.json"),
            ),
            (
                "Chet_Thompson.json",
                include_str!("../../../fhir-fixtures/cohorts/synthea-samples/Chet_Thompson_eda17701-070d-4fae-9f7d-c8cd6263b63a.json"),
            ),
            (
                "Kermit_Trantow.json",
                include_str!("../../../fhir-fixtures/cohorts/synthea-samples/Kermit_Trantow_f1a650a5-737e-4fd7-828e-03c3348b9524.json"),
            ),
            (
                "Liz_Conn.json",
                include_str!("../../../fhir-fixtures/cohorts/synthea-samples/Liz_Conn_27c911c6-f045-4ffa-af5d-6eba57ac94b2.json"),
            ),
            (
                "Patria_Schimmel.json",
                include_str!("../../../fhir-fixtures/cohorts/synthea-samples/Patria_Schimmel_d2f8f862-3856-490d-b56f-98e0ed984b1e.json"),
            ),
        ],
    ),
];

/// The default cohort's name.
pub const DEFAULT_COHORT: &str = "demo";

/// Load a cohort by built-in name or path.
pub fn load(name_or_path: &str) -> Result<CohortBuilder, LoadError> {
    if let Some((name, files)) = BUILTIN.iter().find(|(n, _)| *n == name_or_path) {
        let mut b = CohortBuilder::new(name);
        let mut pending = Pending::default();
        for (file, text) in *files {
            add_text(&mut b, &mut pending, file, text.to_string())?;
        }
        pending.finish(&mut b)?;
        return Ok(b);
    }
    let path = Path::new(name_or_path);
    if !path.exists() {
        return Err(LoadError::UnknownName(name_or_path.to_string()));
    }
    load_path(path)
}

/// Load every `.ndjson` and `.json` file under `path` (sorted, recursive), or one file.
pub(crate) fn load_path(path: &Path) -> Result<CohortBuilder, LoadError> {
    let name = path.file_stem().and_then(|s| s.to_str()).unwrap_or("cohort").to_string();
    let mut files = Vec::new();
    collect_files(path, &mut files)?;
    files.sort();
    if files.is_empty() {
        return Err(invalid(path.display().to_string(), "no .ndjson or .json files found"));
    }
    let mut b = CohortBuilder::new(&name);
    let mut pending = Pending::default();
    for f in files {
        let text = std::fs::read_to_string(&f).map_err(|source| LoadError::Io { path: f.clone(), source })?;
        add_text(&mut b, &mut pending, &f.display().to_string(), text)?;
    }
    pending.finish(&mut b)?;
    Ok(b)
}

fn collect_files(path: &Path, out: &mut Vec<PathBuf>) -> Result<(), LoadError> {
    if path.is_file() {
        out.push(path.to_path_buf());
        return Ok(());
    }
    let rd = std::fs::read_dir(path).map_err(|source| LoadError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    for e in rd {
        let e = e.map_err(|source| LoadError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let p = e.path();
        if p.is_dir() {
            collect_files(&p, out)?;
        } else if p.extension().is_some_and(|x| x == "ndjson" || x == "json") {
            out.push(p);
        }
    }
    Ok(())
}

/// Resources whose `urn:` references wait for the whole cohort (bundles may refer across files).
#[derive(Default)]
struct Pending {
    urls: HashMap<String, String>,
    resources: Vec<(String, Value)>,
}

impl Pending {
    fn finish(self, b: &mut CohortBuilder) -> Result<(), LoadError> {
        for (src, mut r) in self.resources {
            rewrite_references(&mut r, &self.urls);
            b.add(r).map_err(|e| cohort_err(&src, e))?;
        }
        Ok(())
    }
}

/// Replace every `reference` found in `map` (fullUrl → `Type/id`).
pub(crate) fn rewrite_references(v: &mut Value, map: &HashMap<String, String>) {
    match v {
        Value::Object(o) => {
            for (k, x) in o.iter_mut() {
                if k == "reference" {
                    if let Value::String(s) = x
                        && let Some(new) = map.get(s.as_str())
                    {
                        *s = new.clone();
                    }
                } else {
                    rewrite_references(x, map);
                }
            }
        }
        Value::Array(a) => a.iter_mut().for_each(|x| rewrite_references(x, map)),
        _ => {}
    }
}

fn add_text(b: &mut CohortBuilder, pending: &mut Pending, source: &str, text: String) -> Result<(), LoadError> {
    if source.ends_with(".ndjson") {
        let t = std::time::Instant::now();
        b.add_ndjson(Arc::new(text))
            .map_err(|(line, e)| cohort_err(&format!("{source}:{line}"), e))?;
        tracing::debug!(source, ms = t.elapsed().as_millis() as u64, "ndjson loaded");
        return Ok(());
    }
    let v: Value = serde_json::from_str(&text).map_err(|e| invalid(source, format!("not JSON: {e}")))?;
    match v.get("resourceType").and_then(Value::as_str) {
        Some("Bundle") => add_bundle(pending, source, v),
        Some(_) => b.add(v).map_err(|e| cohort_err(source, e)),
        None => Err(invalid(source, "not a FHIR resource (no resourceType)")),
    }
}

fn add_bundle(pending: &mut Pending, source: &str, bundle: Value) -> Result<(), LoadError> {
    let entries = bundle.get("entry").and_then(Value::as_array).cloned().unwrap_or_default();
    for (i, e) in entries.into_iter().enumerate() {
        let src = format!("{source} entry {i}");
        let Some(mut r) = e.get("resource").cloned() else { continue };
        let ty = r
            .get("resourceType")
            .and_then(Value::as_str)
            .ok_or_else(|| invalid(&src, "resource has no resourceType"))?
            .to_string();
        let full_url = e.get("fullUrl").and_then(Value::as_str).map(str::to_string);
        let put_id = e
            .pointer("/request/url")
            .and_then(Value::as_str)
            .filter(|_| e.pointer("/request/method").and_then(Value::as_str) == Some("PUT"))
            .and_then(|u| u.split_once('/').map(|(_, id)| id.to_string()));
        let id = match (r.get("id").and_then(Value::as_str), put_id, &full_url) {
            (Some(id), _, _) => id.to_string(),
            (None, Some(id), _) => id,
            (None, None, Some(u)) if u.starts_with("urn:uuid:") => u.trim_start_matches("urn:uuid:").to_string(),
            (None, None, Some(u)) => u.rsplit('/').next().unwrap_or_default().to_string(),
            (None, None, None) => return Err(invalid(&src, format!("{ty} has neither id nor fullUrl"))),
        };
        if let Some(o) = r.as_object_mut() {
            o.insert("id".into(), Value::String(id.clone()));
        }
        if let Some(u) = full_url {
            pending.urls.insert(u, format!("{ty}/{id}"));
        }
        pending.resources.push((src, r));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_name_lists_builtins() {
        let e = load("nope-not-a-cohort").unwrap_err().to_string();
        assert!(e.contains("'nope-not-a-cohort'") && e.contains("demo"), "{e}");
    }

    #[test]
    fn ndjson_errors_name_line() {
        let mut b = CohortBuilder::new("t");
        let mut p = Pending::default();
        let e = add_text(
            &mut b,
            &mut p,
            "x.ndjson",
            "{\"resourceType\":\"Patient\",\"id\":\"a\"}\n\n{oops\n".to_string(),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("x.ndjson:3") && e.contains("not a JSON object"), "{e}");
        let e = add_text(&mut b, &mut p, "y.ndjson", "[1]\n".to_string()).unwrap_err().to_string();
        assert!(e.contains("y.ndjson:1"), "{e}");
    }

    #[test]
    fn bundle_urns_rewritten() {
        let mut b = CohortBuilder::new("t");
        let mut p = Pending::default();
        let bundle = r#"{"resourceType":"Bundle","type":"transaction","entry":[
          {"fullUrl":"urn:uuid:11111111-1111-1111-1111-111111111111","resource":{"resourceType":"Patient"},"request":{"method":"POST","url":"Patient"}},
          {"fullUrl":"urn:uuid:22222222-2222-2222-2222-222222222222","resource":{"resourceType":"Observation","status":"final","code":{"text":"x"},
           "subject":{"reference":"urn:uuid:11111111-1111-1111-1111-111111111111"}},"request":{"method":"POST","url":"Observation"}}]}"#;
        add_text(&mut b, &mut p, "b.json", bundle.to_string()).unwrap();
        p.finish(&mut b).unwrap();
        let c = b.build(&crate::Clock::System);
        let s = crate::Sandbox::fork(&c, Default::default());
        let o = s.read("Observation", "22222222-2222-2222-2222-222222222222").unwrap();
        assert_eq!(
            o.resource().unwrap()["subject"]["reference"],
            "Patient/11111111-1111-1111-1111-111111111111"
        );
    }
}
