//! Unit tests of the store: isolation, ids, versions, deletes, search over cohort and overlay.

use super::cohort::*;
use super::execute::*;
use super::sandbox::*;
use super::*;
use crate::clock::{Clock, parse_instant};
use crate::params::Registry;
use crate::search::SearchQuery;
use emrgym_core::splitmix64;
use serde_json::json;
use std::sync::Arc;

fn cohort() -> Arc<Cohort> {
    let mut b = CohortBuilder::new("t");
    b.add(json!({"resourceType":"Patient","id":"p1","name":[{"family":"Ng"}]})).unwrap();
    b.add(json!({"resourceType":"Patient","id":"p2"})).unwrap();
    for i in 0..20 {
        b.add(json!({"resourceType":"Observation","id":format!("o{i}"),"status":"final",
            "code":{"coding":[{"system":"http://loinc.org","code": if i % 2 == 0 {"2823-3"} else {"2345-7"}}]},
            "subject":{"reference": if i < 15 {"Patient/p1"} else {"Patient/p2"}},
            "effectiveDateTime": format!("2023-01-{:02}T08:00:00Z", i + 1),
            "valueQuantity":{"value": 3.0 + (i as f64) / 10.0, "unit":"mmol/L"}}))
            .unwrap();
    }
    b.build(&Clock::fixed(parse_instant("2024-01-01T00:00:00Z").unwrap()))
}

fn opts() -> SandboxOptions {
    SandboxOptions {
        seed: 7,
        clock: Clock::ticking(parse_instant("2024-02-01T00:00:00Z").unwrap(), 1000),
        ..Default::default()
    }
}

fn qs(ty: &str, s: &str) -> SearchQuery {
    SearchQuery::parse(ty, &parse_query_string(s), &Registry::r4(), true).unwrap()
}

#[test]
fn writes_do_not_leak_between_forks() {
    let c = cohort();
    let mut a = Sandbox::fork(&c, opts());
    let b = Sandbox::fork(&c, opts());
    let CreateOutcome::Created(v) = a.create("Patient", json!({"resourceType":"Patient"}), None).unwrap() else {
        panic!()
    };
    assert!(a.read("Patient", &v.id).is_ok());
    assert_eq!(b.read("Patient", &v.id).unwrap_err().status(), 404);
    assert_eq!(a.count("Patient"), 3);
    assert_eq!(b.count("Patient"), 2);
    assert_eq!(c.len(), 22);
}

#[test]
fn ids_are_deterministic_per_seed() {
    let c = cohort();
    let ids = |seed| {
        let mut s = Sandbox::fork(&c, SandboxOptions { seed, ..opts() });
        (0..3).map(|_| s.next_id("Patient")).collect::<Vec<_>>()
    };
    assert_eq!(ids(1), ids(1));
    assert_ne!(ids(1), ids(2));
}

#[test]
fn update_versions_and_if_match() {
    let c = cohort();
    let mut s = Sandbox::fork(&c, opts());
    let (v2, created) = s
        .update(
            "Patient",
            "p1",
            json!({"resourceType":"Patient","id":"p1","gender":"male"}),
            Some(1),
        )
        .unwrap();
    assert!(!created);
    assert_eq!(v2.version_id, 2);
    assert_eq!(v2.resource().unwrap()["meta"]["versionId"], "2");
    assert_eq!(v2.resource().unwrap()["meta"]["lastUpdated"], "2024-02-01T00:00:00.000Z");
    let e = s
        .update("Patient", "p1", json!({"resourceType":"Patient","id":"p1"}), Some(1))
        .unwrap_err();
    assert_eq!(e.status(), 412);
    assert_eq!(s.history("Patient", "p1").unwrap().len(), 2);
    assert_eq!(s.vread("Patient", "p1", "1").unwrap().version_id, 1);
    let d = s.diff();
    assert_eq!(d.len(), 1);
    assert!(d[0].before.as_ref().unwrap().get("gender").is_none());
}

#[test]
fn delete_guards_references_and_marks_gone() {
    let c = cohort();
    let mut s = Sandbox::fork(&c, opts());
    assert_eq!(s.delete("Patient", "p1").unwrap_err().status(), 409);
    for i in 0..15 {
        s.delete("Observation", &format!("o{i}")).unwrap();
    }
    assert!(s.delete("Patient", "p1").unwrap().is_some());
    assert_eq!(s.read("Patient", "p1").unwrap_err().status(), 410);
    assert_eq!(s.vread("Patient", "p1", "2").unwrap_err().status(), 410);
    assert!(s.delete("Patient", "p1").unwrap().is_none());
    // a fresh fork still has it
    assert!(Sandbox::fork(&c, opts()).read("Patient", "p1").is_ok());
}

#[test]
fn search_uses_index_and_sees_overlay() {
    let c = cohort();
    let mut s = Sandbox::fork(&c, opts());
    let q = qs("Observation", "patient=p1&code=2823-3&_sort=-date");
    let r = s.search_all(&q).unwrap();
    assert_eq!(r.len(), 8);
    assert_eq!(&*r[0].id, "o14");
    // update one so it no longer matches; create one that does
    s.update(
        "Observation",
        "o14",
        json!({"resourceType":"Observation","id":"o14","status":"final","code":{"text":"x"},"subject":{"reference":"Patient/p1"}}),
        None,
    )
    .unwrap();
    s.create("Observation", json!({"resourceType":"Observation","status":"final","code":{"coding":[{"system":"http://loinc.org","code":"2823-3"}]},"subject":{"reference":"Patient/p1"},"effectiveDateTime":"2023-06-01"}), None).unwrap();
    let r = s.search_all(&q).unwrap();
    assert_eq!(r.len(), 8);
    assert_eq!(r[0].resource().unwrap()["effectiveDateTime"], "2023-06-01");
    assert!(!r.iter().any(|v| &*v.id == "o14"));
}

#[test]
fn if_none_exist_and_bad_references() {
    let c = cohort();
    let mut s = Sandbox::fork(&c, opts());
    let out = s.create("Patient", json!({"resourceType":"Patient"}), Some("_id=p1")).unwrap();
    assert!(matches!(out, CreateOutcome::Existing(v) if &*v.id == "p1"));
    let e = s
        .create("Patient", json!({"resourceType":"Patient"}), Some("_id=p1,p2"))
        .unwrap_err();
    assert_eq!(e.status(), 412);
    let e = s
        .create(
            "Observation",
            json!({"resourceType":"Observation","status":"final","code":{"text":"x"},"subject":{"reference":"Patient/nope"}}),
            None,
        )
        .unwrap_err();
    assert_eq!(e.status(), 422);
    assert!(e.to_string().contains("Patient/nope"), "{e}");
    assert!(s.writes().is_empty(), "failed writes leave nothing behind");
}

#[test]
fn warm_compact_rows_search_like_parsed_rows() {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../fhir-fixtures/cohorts/demo/Observation.ndjson"
    ))
    .unwrap();
    let mut raw = CohortBuilder::new("raw");
    let mut parsed = CohortBuilder::new("parsed");
    for line in text.lines() {
        raw.add_json(line).unwrap();
        parsed.add(serde_json::from_str(line).unwrap()).unwrap();
    }
    let clock = Clock::fixed(parse_instant("2023-11-13T10:15:00Z").unwrap());
    let raw = raw.build(&clock);
    raw.warm();
    assert!(raw.is_warm());
    let parsed = parsed.build(&clock);
    let (a, b) = (Sandbox::fork(&raw, opts()), Sandbox::fork(&parsed, opts()));
    for q in [
        "patient=S3241217&code=K&_sort=-date",
        "code=http://loinc.org|2823-3&_sort=date",
        "subject=Patient/S6307599&_sort=-date,_id",
        "_id=obs-3,obs-9",
        "code=GLU&date=ge2023-11-12T10:15:00Z",
        "combo-code=8480-6&_sort=-date",
    ] {
        let ids = |s: &Sandbox| {
            s.search_all(&qs("Observation", q))
                .unwrap()
                .iter()
                .map(|v| v.id.to_string())
                .collect::<Vec<_>>()
        };
        let (x, y) = (ids(&a), ids(&b));
        assert!(!x.is_empty(), "{q}");
        assert_eq!(x, y, "{q}");
    }
    // a compact row reads back complete, with meta
    let v = a.read("Observation", "obs-1").unwrap();
    let r = v.resource().unwrap();
    assert_eq!(r["meta"]["versionId"], "1");
    assert_eq!(r["meta"]["lastUpdated"], "2023-11-13T10:15:00.000Z");
    assert_eq!(*r, {
        let mut p = (*b.read("Observation", "obs-1").unwrap().resource().unwrap()).clone();
        p["meta"] = r["meta"].clone();
        p
    });
}

#[test]
fn intersect_linear_and_galloping_agree() {
    let mut seed = 7u64;
    for _ in 0..200 {
        seed = splitmix64(seed);
        let n_small = (seed % 50) as usize;
        let n_large = n_small * ((seed >> 8) % 40) as usize + 1;
        let mut a: Vec<u32> = (0..n_small).map(|i| (splitmix64(seed + i as u64) % 5000) as u32).collect();
        let mut b: Vec<u32> = (0..n_large).map(|i| (splitmix64(seed ^ (i as u64 + 99)) % 5000) as u32).collect();
        a.sort_unstable();
        a.dedup();
        b.sort_unstable();
        b.dedup();
        let expect: Vec<u32> = a.iter().copied().filter(|x| b.binary_search(x).is_ok()).collect();
        assert_eq!(intersect(&a, &b), expect);
        assert_eq!(intersect(&b, &a), expect);
    }
}

#[test]
fn chained_search() {
    let c = cohort();
    let s = Sandbox::fork(&c, opts());
    let r = s.search_all(&qs("Observation", "subject:Patient.name=ng")).unwrap();
    assert_eq!(r.len(), 15);
}
