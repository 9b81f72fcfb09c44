//! Cohort loading: the built-in cohorts, the Synthea samples unchanged, NDJSON and Bundle
//! directories, and load errors.

use emrgym_fhir::clock::Clock;
use emrgym_fhir::load;
use emrgym_fhir::store::collect_references;
use emrgym_fhir::validate::SchemaValidator;
use emrgym_fhir::{Sandbox, SandboxOptions};
use serde_json::Value;
use std::path::Path;

fn all_resources(s: &Sandbox) -> Vec<Value> {
    let mut out = Vec::new();
    for ty in s.cohort().counts().keys() {
        let q = emrgym_fhir::search::SearchQuery::parse(ty, &[("_count".into(), "1000".into())], s.cohort().registry(), true).unwrap();
        out.extend(s.search_all(&q).unwrap().into_iter().map(|v| (*v.resource().unwrap()).clone()));
    }
    out
}

#[test]
fn builtin_cohorts_validate_and_references_resolve() {
    for name in ["demo", "gen", "synthea-samples"] {
        let c = load::load(name).unwrap().build(&Clock::System);
        let s = Sandbox::fork(&c, SandboxOptions::default());
        let all = all_resources(&s);
        assert_eq!(all.len(), c.len());
        let v = SchemaValidator::r4();
        for r in &all {
            let ty = r["resourceType"].as_str().unwrap();
            v.validate(ty, r)
                .unwrap_or_else(|e| panic!("{name}: {ty}/{} invalid: {e}", r["id"]));
            let mut refs = Vec::new();
            collect_references(r, &mut refs);
            s.check_references(r).unwrap_or_else(|e| panic!("{name}: {ty}/{}: {e}", r["id"]));
        }
    }
}

#[test]
fn synthea_samples_load_unchanged_from_shared_data() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fhir-fixtures/cohorts/synthea-samples");
    let b = load::load(dir.to_str().unwrap()).unwrap();
    assert_eq!(
        b.merged(),
        2,
        "one Organization and one Practitioner repeat, identically, across bundles"
    );
    let c = b.build(&Clock::System);
    let counts = c.counts();
    assert_eq!(counts["Patient"], 5);
    // entries in the five bundles, all of them loaded
    let mut entries = 0;
    for f in std::fs::read_dir(&dir).unwrap() {
        let p = f.unwrap().path();
        if p.extension().is_some_and(|e| e == "json") {
            let b: Value = serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
            entries += b["entry"].as_array().unwrap().len();
        }
    }
    assert_eq!(entries, 606);
    assert_eq!(c.len(), entries - 2);
}

#[test]
fn demo_cohort_supports_the_medagentbench_codes() {
    let c = load::load("demo").unwrap().build(&Clock::System);
    let s = Sandbox::fork(&c, SandboxOptions::default());
    for code in ["MG", "GLU", "K", "A1C", "BP"] {
        let q = emrgym_fhir::search::SearchQuery::parse("Observation", &[("code".into(), code.into())], c.registry(), true).unwrap();
        assert!(!s.search_all(&q).unwrap().is_empty(), "no {code} observations");
    }
    assert_eq!(c.counts()["Patient"], 12);
}

#[test]
fn load_errors_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("Patient.ndjson"),
        "{\"resourceType\":\"Patient\",\"id\":\"a\"}\n{\"resourceType\":\"Patient\",\"id\":\"a\",\"gender\":\"male\"}\n",
    )
    .unwrap();
    let e = load::load(dir.path().to_str().unwrap()).unwrap_err().to_string();
    assert!(e.contains("Patient.ndjson:2") && e.contains("duplicate resource Patient/a"), "{e}");
    std::fs::write(
        dir.path().join("Patient.ndjson"),
        "{\"resourceType\":\"Patient\",\"id\":\"bad id\"}\n",
    )
    .unwrap();
    let e = load::load(dir.path().to_str().unwrap()).unwrap_err().to_string();
    assert!(e.contains("'bad id'"), "{e}");
    std::fs::write(dir.path().join("Patient.ndjson"), "{\"resourceType\":\"Pationt\",\"id\":\"a\"}\n").unwrap();
    let e = load::load(dir.path().to_str().unwrap()).unwrap_err().to_string();
    assert!(e.contains("'Pationt'"), "{e}");
    let empty = tempfile::tempdir().unwrap();
    let e = load::load(empty.path().to_str().unwrap()).unwrap_err().to_string();
    assert!(e.contains("no .ndjson or .json files"), "{e}");
}
