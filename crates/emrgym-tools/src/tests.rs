//! Catalogue tests: manifests and handlers pair up, the checked-in `tools/*.json` equal
//! the generated catalogue, every example validates and runs, and bad calls come back as
//! observations that name what was wrong.

use super::fhir_tools::FhirTool;
use super::*;
use emrgym_fhir::clock::{Clock, parse_instant};
use emrgym_fhir::{Sandbox, SandboxOptions, load};
use std::collections::BTreeSet;

fn demo_sandbox() -> Sandbox {
    let clock = Clock::fixed(parse_instant("2023-11-13T10:15:00Z").unwrap());
    let cohort = load::load("demo").unwrap().build(&clock);
    Sandbox::fork(
        &cohort,
        SandboxOptions {
            seed: 7,
            clock,
            ..SandboxOptions::default()
        },
    )
}

fn registry() -> Registry {
    Registry::standard().unwrap()
}

#[test]
fn every_manifest_has_a_handler_and_every_handler_a_manifest() {
    let r = registry();
    let names: BTreeSet<&str> = r.names().collect();
    for m in r.manifests() {
        assert!(r.handler(&m.name).is_some(), "{} has no handler", m.name);
        assert!(!m.description.is_empty() && !m.examples.is_empty(), "{}", m.name);
        assert_eq!(m.parameters["type"], "object", "{}", m.name);
    }
    let mut handlers: Vec<String> = calc::all().iter().map(|c| c.name.to_string()).collect();
    handlers.extend(FhirTool::ALL.iter().map(|t| t.name().to_string()));
    handlers.push("convert_units".into());
    handlers.push("finish".into());
    for h in &handlers {
        assert!(names.contains(h.as_str()), "handler {h} has no manifest");
    }
    assert_eq!(names.len(), handlers.len());
    assert!(names.len() >= 57 + 6);
}

#[test]
fn checked_in_manifests_match_the_catalogue() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tools");
    let r = registry();
    let mut on_disk: BTreeSet<String> = BTreeSet::new();
    for e in std::fs::read_dir(&dir).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "json") {
            on_disk.insert(p.file_stem().unwrap().to_string_lossy().into_owned());
        }
    }
    let generated: BTreeSet<String> = r.names().map(str::to_string).collect();
    assert_eq!(
        on_disk, generated,
        "tools/ differs from the catalogue: run `cargo run -- tools export`"
    );
    for m in r.manifests() {
        let text = std::fs::read_to_string(dir.join(format!("{}.json", m.name))).unwrap();
        assert_eq!(
            text,
            manifest_file(m).unwrap(),
            "tools/{}.json is stale: run `cargo run -- tools export`",
            m.name
        );
    }
}

#[test]
fn every_example_validates_and_runs() {
    let r = registry();
    for m in r.manifests() {
        for ex in &m.examples {
            assert_eq!(r.check(&m.name, &ex.arguments), Ok(()), "{}: {}", m.name, ex.description);
            // each example runs on a fresh sandbox, so writes do not interact
            let mut sb = demo_sandbox();
            let mut backend = (&mut sb, "http://emr.test/fhir");
            let o = r.call(&m.name, &ex.arguments, &mut backend);
            assert!(o.ok, "{} ({}): {}", m.name, ex.description, o.content);
            if m.name == "fhir_search" {
                assert!(o.content["total"].as_u64().unwrap_or(0) >= 1, "{}: {}", ex.description, o.content);
            }
        }
    }
}

#[test]
fn bad_calls_are_observations_naming_the_problem() {
    let r = registry();
    let mut none = NoFhir;
    let cases: Vec<(&str, Value, u16, &[&str])> = vec![
        ("no_such_tool", json!({}), 404, &["no_such_tool", "available"]),
        (
            "ckd_epi_2021",
            json!({"sex": "male", "age": 50}),
            400,
            &["ckd_epi_2021", "creatinine"],
        ),
        (
            "ckd_epi_2021",
            json!({"sex": "male", "age": "fifty", "creatinine": 1}),
            400,
            &["age"],
        ),
        (
            "ckd_epi_2021",
            json!({"sex": "male", "age": 50, "creatinine": {"value": 1, "unit": "mg"}}),
            400,
            &["'mg'", "µmol/L"],
        ),
        (
            "ckd_epi_2021",
            json!({"sex": "male", "age": 50, "creatinine": 1, "race": "x"}),
            400,
            &["race"],
        ),
        (
            "ckd_epi_2021",
            json!({"sex": "male", "age": 50, "creatinine": 0}),
            422,
            &["creatinine", "not physiologically possible"],
        ),
        ("convert_units", json!({"analyte": "glucose", "value": 5}), 400, &["from"]),
        ("finish", json!({}), 400, &["answer"]),
        ("fhir_read", json!({"resource_type": "Patient"}), 400, &["id"]),
        ("fhir_search", json!({"resource_type": "Observation"}), 400, &["no FHIR sandbox"]),
    ];
    for (name, args, status, needles) in cases {
        let o = r.call(name, &args, &mut none);
        assert!(!o.ok, "{name} {args} should fail");
        assert_eq!(o.status, status, "{name} {args}: {}", o.content);
        let msg = o.error().unwrap();
        for n in needles {
            assert!(msg.contains(n), "{name} {args}: '{msg}' lacks '{n}'");
        }
    }
    let o = r.call_text("bmi", "{\"weight\": 70,", &mut none);
    assert!(!o.ok && o.error().unwrap().contains("not valid JSON"));
    let o = r.call_text("bmi", "{\"weight\": 70, \"height\": 175}", &mut none);
    assert!(o.ok, "{}", o.content);
}

#[test]
fn fhir_tools_act_on_the_sandbox() {
    let r = registry();
    let mut sb = demo_sandbox();
    let before = sb.writes().len();
    {
        let mut backend = (&mut sb, "http://emr.test/fhir");
        let o = r.call("fhir_read", &json!({"resource_type": "Patient", "id": "nope"}), &mut backend);
        assert!(!o.ok && o.status == 404, "{}", o.content);
        assert_eq!(o.content["outcome"]["resourceType"], "OperationOutcome");
        let o = r.call(
            "fhir_create",
            &json!({"resource_type": "Observation", "resource": {"resourceType": "Patient"}}),
            &mut backend,
        );
        assert!(!o.ok && o.error().unwrap().contains("does not match"), "{}", o.content);
        let o = r.call(
            "fhir_create",
            &json!({"resource_type": "Observation", "resource": {"status": "final"}}),
            &mut backend,
        );
        assert!(!o.ok && o.status >= 400, "an invalid Observation is refused: {}", o.content);
        let o = r.call(
            "fhir_create",
            &json!({"resource_type": "ServiceRequest", "resource": {"status": "active", "intent": "order",
                "code": {"coding": [{"system": "http://snomed.info/sct", "code": "306181000000106"}]},
                "subject": {"reference": "Patient/S6534835"}, "authoredOn": "2023-11-13T10:15:00+00:00"}}),
            &mut backend,
        );
        assert!(o.ok && o.status == 201, "{}", o.content);
        let id = o.content["id"].as_str().unwrap().to_string();
        let o = r.call(
            "fhir_search",
            &json!({"resource_type": "ServiceRequest", "params": {"subject": "Patient/S6534835", "code": "http://snomed.info/sct|306181000000106"}}),
            &mut backend,
        );
        assert_eq!(o.content["total"], 1, "{}", o.content);
        assert_eq!(o.content["entry"][0]["resource"]["id"], id.as_str());
        // repeated parameters are ANDed
        let o = r.call(
            "fhir_search",
            &json!({"resource_type": "Observation", "params": {"patient": "S6534835", "date": ["ge2000-01-01", "le2100-01-01"], "_count": 2}}),
            &mut backend,
        );
        assert!(o.ok && o.content["entry"].as_array().unwrap().len() <= 2, "{}", o.content);
        // unknown parameters are refused with the parameter named; pages default to 10
        let o = r.call(
            "fhir_search",
            &json!({"resource_type": "Patient", "params": {"colour": "blue"}}),
            &mut backend,
        );
        assert!(!o.ok && o.status == 400 && o.error().unwrap().contains("colour"), "{}", o.content);
        let o = r.call(
            "fhir_search",
            &json!({"resource_type": "Observation", "params": {"patient": "S6534835"}}),
            &mut backend,
        );
        assert_eq!(
            o.content["entry"].as_array().unwrap().len(),
            super::fhir_tools::DEFAULT_COUNT,
            "{}",
            o.content["total"]
        );
    }
    assert_eq!(sb.writes().len(), before + 1, "only the valid create was written");
}

#[test]
fn openai_rendering_and_subsets() {
    let r = registry();
    let tools = r.openai_tools();
    let arr = tools.as_array().unwrap();
    assert_eq!(arr.len(), r.names().count());
    for t in arr {
        assert_eq!(t["type"], "function");
        let name = t["function"]["name"].as_str().unwrap();
        assert!(
            name.len() <= 64 && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
            "{name}"
        );
        assert_eq!(t["function"]["parameters"]["type"], "object");
    }
    let sub = r.subset(&["fhir_search", "finish"]).unwrap();
    assert_eq!(sub.names().collect::<Vec<_>>(), vec!["fhir_search", "finish"]);
    let e = r.subset(&["fhir_search", "bogus", "nope"]).unwrap_err();
    assert!(matches!(&e, SubsetError::Unknown(names) if names == &["bogus", "nope"]), "{e}");
    assert_eq!(e.to_string(), "unknown tools bogus, nope");
    let e = r.subset(&["finish", "finish"]).unwrap_err();
    assert_eq!(e.to_string(), "duplicate tool name finish");
    let o = sub.call("bmi", &json!({"weight": 70, "height": 170}), &mut NoFhir);
    assert_eq!(o.status, 404, "a tool outside the subset is not callable");
}

#[test]
fn finish_carries_the_answer() {
    let o = registry().call("finish", &json!({"answer": [2.3, "mg/dL"]}), &mut NoFhir);
    assert!(o.ok);
    assert_eq!(o.answer, Some(json!([2.3, "mg/dL"])));
}

mod fuzz {
    use super::*;
    use proptest::prelude::*;

    fn arb_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            (-1e6f64..1e6).prop_map(Value::from),
            "[a-z_/µ%0-9 .-]{0,12}".prop_map(Value::from),
            prop_oneof![
                Just("mg/dL"),
                Just("µmol/L"),
                Just("male"),
                Just("Patient"),
                Just("kg"),
                Just("2024-01-01")
            ]
            .prop_map(Value::from),
        ];
        leaf.prop_recursive(3, 24, 6, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                proptest::collection::btree_map(
                    prop_oneof![
                        "[a-z_]{1,10}".boxed(),
                        Just("value".to_string()).boxed(),
                        Just("unit".to_string()).boxed(),
                        Just("age".to_string()).boxed(),
                        Just("sex".to_string()).boxed(),
                        Just("creatinine".to_string()).boxed(),
                        Just("resource_type".to_string()).boxed(),
                        Just("params".to_string()).boxed(),
                    ],
                    inner,
                    0..6
                )
                .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]
        /// Any JSON sent to any tool comes back as an observation: no panic, and a failure
        /// always carries a message.
        #[test]
        fn arbitrary_arguments_never_crash(args in arb_json()) {
            let r = registry();
            let mut sb = demo_sandbox();
            let mut backend = (&mut sb, "http://emr.test/fhir");
            for m in r.manifests() {
                let o = r.call(&m.name, &args, &mut backend);
                prop_assert!(o.ok || o.error().is_some_and(|e| !e.is_empty()), "{}: {}", m.name, o.content);
                prop_assert!(o.ok == (o.status < 400), "{}: status {} ok {}", m.name, o.status, o.ok);
            }
        }
    }
}

#[test]
fn check_and_request_errors_name_the_bad_value() {
    let r = registry();
    assert_eq!(r.check("nope", &json!({})), Err(ArgsError::NoSuchTool("nope".into())));
    let e = r.check("fhir_read", &json!({"resource_type": "Patient"})).unwrap_err();
    let ArgsError::Invalid { tool, problems } = &e else { panic!("{e}") };
    assert_eq!(tool, "fhir_read");
    assert!(problems.iter().any(|p| p.contains("\"id\"")), "{problems:?}");
    assert_eq!(e.to_string(), problems.join("\n"));
    let args = json!({"resource_type": "Patient", "resource": {"resourceType": "Observation"}});
    let e = FhirTool::Create.request(&args).unwrap_err();
    assert_eq!(
        e,
        RequestError::TypeMismatch {
            given: "Observation".into(),
            expected: "Patient".into()
        }
    );
    assert_eq!(
        e.to_string(),
        "resource.resourceType 'Observation' does not match resource_type 'Patient'"
    );
    let e = FhirTool::Create
        .request(&json!({"resource_type": "Patient", "resource": 3}))
        .unwrap_err();
    assert_eq!(e, RequestError::NotAnObject);
}
