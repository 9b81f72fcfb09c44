use super::*;

fn small(patients: usize) -> Generator {
    Generator::new(Config {
        patients,
        seed: 42,
        years: 3,
        ..Config::default()
    })
    .unwrap()
}

fn collect(g: &Generator) -> Vec<(&'static str, Value)> {
    let mut v = Vec::new();
    g.generate(&mut |ty, r| {
        v.push((ty, r));
        Ok(())
    })
    .unwrap();
    v
}

#[test]
fn the_same_seed_gives_the_same_cohort_and_patients_do_not_depend_on_the_cohort_size() {
    let a = collect(&small(6));
    assert_eq!(a, collect(&small(6)));
    let b = collect(&small(3));
    // the 3-patient cohort is the first three patients of the 6-patient one
    assert_eq!(a[..b.len()], b[..]);
    let other = collect(
        &Generator::new(Config {
            seed: 43,
            ..small(6).cfg.clone()
        })
        .unwrap(),
    );
    assert_ne!(a, other);
}

#[test]
fn ids_are_unique_and_references_point_inside_the_cohort() {
    let all = collect(&small(30));
    let mut ids = BTreeSet::new();
    for (ty, r) in &all {
        assert_eq!(r["resourceType"], *ty);
        assert!(
            ids.insert(format!("{ty}/{}", r["id"].as_str().unwrap())),
            "duplicate {ty}/{}",
            r["id"]
        );
    }
    let mut refs = 0;
    for (_, r) in &all {
        for key in [
            "subject",
            "patient",
            "encounter",
            "requester",
            "serviceProvider",
            "managingOrganization",
        ] {
            if let Some(target) = r[key]["reference"].as_str() {
                assert!(ids.contains(target), "{} -> {target}", r["id"]);
                refs += 1;
            }
        }
    }
    assert!(refs > all.len() / 2);
}

#[test]
fn every_generated_resource_is_valid_r4() {
    let v = emrgym_fhir::validate::SchemaValidator::r4();
    let all = collect(&small(12));
    let mut types = BTreeSet::new();
    for (ty, r) in &all {
        if let Err(e) = v.validate(ty, r) {
            panic!("{ty}/{} is not valid R4: {e}\n{r}", r["id"]);
        }
        types.insert(*ty);
    }
    for ty in [
        "Patient",
        "Encounter",
        "Condition",
        "Observation",
        "MedicationRequest",
        "Immunization",
        "Organization",
        "Practitioner",
    ] {
        assert!(types.contains(ty), "no {ty} generated");
    }
}

#[test]
fn creatinine_is_the_ckd_epi_2021_inverse_of_egfr() {
    let egfr = |scr: f64, age: f64, female: bool| {
        let (k, a, s) = if female { (0.7, -0.241, 1.012) } else { (0.9, -0.302, 1.0) };
        142.0 * (scr / k).min(1.0).powf(a) * (scr / k).max(1.0).powf(-1.2) * 0.9938f64.powf(age) * s
    };
    for (e, age, female) in [
        (20.0, 70.0, false),
        (45.0, 55.0, true),
        (90.0, 30.0, false),
        (125.0, 25.0, true),
        (59.9, 80.0, true),
    ] {
        let scr = creatinine_for_egfr(e, age, female);
        assert!((egfr(scr, age, female) - e).abs() < 1e-6, "{e} {age} {female}: {scr}");
    }
}

#[test]
fn bad_settings_are_refused_naming_the_value() {
    for (cfg, word) in [
        (
            Config {
                patients: 0,
                ..Config::default()
            },
            "patients",
        ),
        (
            Config {
                years: 0,
                ..Config::default()
            },
            "years",
        ),
        (
            Config {
                inpatient_vitals_every_h: 0,
                ..Config::default()
            },
            "vitals",
        ),
        (
            Config {
                admitted_share: 1.5,
                ..Config::default()
            },
            "1.5",
        ),
    ] {
        let err = Generator::new(cfg).err().unwrap().to_string();
        assert!(err.contains(word), "{err}");
    }
}
