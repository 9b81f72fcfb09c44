//! The cohort generator: `emrgym fixtures generate` is deterministic and refuses bad flags by
//! name; the cohort loads and serves; its values carry the clinical correlations scenarios
//! rely on (checked with our own calculators), and the current admissions hold the recent
//! data MedAgentBench-style tasks need, with both sides of their branches.

use chrono::{DateTime, Duration, Utc};
use emrgym_fixtures::{Config, Generator};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::process::Command;

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_emrgym")
}

fn files(dir: &std::path::Path) -> BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (e.file_name().to_string_lossy().into_owned(), std::fs::read(e.path()).unwrap())
        })
        .collect()
}

#[test]
fn generate_is_deterministic_and_refuses_bad_flags_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let run = |out: &str, extra: &[&str]| {
        let seed = if out == "c" { "8" } else { "7" };
        Command::new(bin())
            .args(["fixtures", "generate", "--patients", "15", "--seed", seed, "--years", "2", "--out"])
            .arg(dir.path().join(out))
            .args(extra)
            .output()
            .unwrap()
    };
    let a = run("a", &[]);
    assert!(a.status.success(), "{}", String::from_utf8_lossy(&a.stderr));
    let text = String::from_utf8_lossy(&a.stdout);
    assert!(text.starts_with("wrote ") && text.contains("Observation"), "{text}");
    assert!(run("b", &[]).status.success());
    let (fa, fb) = (files(&dir.path().join("a")), files(&dir.path().join("b")));
    assert!(fa.len() >= 9 && fa.contains_key("Patient.ndjson"));
    assert_eq!(fa, fb, "the same seed gives the same bytes");
    assert_ne!(
        fa,
        files(&{
            let out = run("c", &[]);
            assert!(out.status.success());
            dir.path().join("c")
        })
    );
    for (flags, word) in [
        (vec!["--admitted", "2"], "admitted share"),
        (vec!["--now", "yesterday"], "--now yesterday"),
        (vec!["--vitals-every", "0"], "vitals interval"),
    ] {
        let out = run("bad", &flags);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && err.contains(word), "{flags:?}: {err}");
    }
    let zero = Command::new(bin())
        .args(["fixtures", "generate", "--patients", "0", "--out"])
        .arg(dir.path().join("zero"))
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&zero.stderr).contains("patients must be 1 to 1,000,000, got 0"));
    assert!(!dir.path().join("zero").exists(), "nothing written for bad flags");
}

#[test]
fn a_generated_cohort_loads_and_is_searchable() {
    let dir = tempfile::tempdir().unwrap();
    let stats = Generator::new(Config {
        patients: 20,
        seed: 3,
        years: 2,
        ..Config::default()
    })
    .unwrap()
    .write_ndjson(dir.path())
    .unwrap();
    let clock = emrgym_fhir::clock::Clock::fixed(emrgym_fhir::clock::parse_instant("2023-11-13T10:15:00Z").unwrap());
    let cohort = emrgym_fhir::load::load(dir.path().to_str().unwrap()).unwrap().build(&clock);
    assert_eq!(cohort.len(), stats.total());
    let sb = emrgym_fhir::store::Sandbox::fork(
        &cohort,
        emrgym_fhir::store::SandboxOptions {
            clock,
            ..Default::default()
        },
    );
    let mrn = files(dir.path())["Patient.ndjson"]
        .split(|b| *b == b'\n')
        .next()
        .map(|l| serde_json::from_slice::<Value>(l).unwrap()["id"].as_str().unwrap().to_string())
        .unwrap();
    // by MRN identifier, and the patient's labs by the local code MedAgentBench uses
    let mut backend = (&mut { sb }, "http://emrgym.local/fhir");
    let reg = emrgym_tools::Registry::standard().unwrap();
    let found = reg.call(
        "fhir_search",
        &json!({"resource_type": "Patient", "params": {"identifier": mrn}}),
        &mut backend,
    );
    assert!(found.ok && found.content["total"] == 1, "{}", found.content);
    let labs = reg.call(
        "fhir_search",
        &json!({"resource_type": "Observation", "params": {"patient": mrn, "code": "CREAT", "_sort": "-date"}}),
        &mut backend,
    );
    assert!(labs.ok && labs.content["total"].as_u64().unwrap() > 0, "{}", labs.content);
}

struct Obs {
    patient: String,
    code: String,
    at: DateTime<Utc>,
    value: f64,
}

#[test]
fn generated_values_carry_the_clinical_correlations() {
    let now = emrgym_fhir::clock::parse_instant("2023-11-13T10:15:00Z").unwrap();
    let mut obs: Vec<Obs> = Vec::new();
    let mut conditions: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut meds: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut patients: BTreeMap<String, Value> = BTreeMap::new();
    let mut admitted: Vec<String> = Vec::new();
    Generator::new(Config {
        patients: 250,
        seed: 11,
        years: 3,
        ..Config::default()
    })
    .unwrap()
    .generate(&mut |ty, r| {
        let subject = |k: &str| {
            r[k]["reference"]
                .as_str()
                .unwrap_or_default()
                .trim_start_matches("Patient/")
                .to_string()
        };
        match ty {
            "Patient" => {
                patients.insert(r["id"].as_str().unwrap().to_string(), r.clone());
            }
            "Condition" => conditions
                .entry(subject("subject"))
                .or_default()
                .push(r["code"]["coding"][0]["code"].as_str().unwrap().into()),
            "MedicationRequest" => meds
                .entry(subject("subject"))
                .or_default()
                .push(r["medicationCodeableConcept"]["coding"][0]["code"].as_str().unwrap().into()),
            "Encounter" if r["status"] == "in-progress" => admitted.push(subject("subject")),
            "Observation" => {
                if let Some(v) = r["valueQuantity"]["value"].as_f64() {
                    let code = r["code"]["coding"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .find(|c| c["system"] == "http://loinc.org")
                        .unwrap()["code"]
                        .as_str()
                        .unwrap()
                        .to_string();
                    let at = DateTime::parse_from_rfc3339(r["effectiveDateTime"].as_str().unwrap())
                        .unwrap()
                        .with_timezone(&Utc);
                    assert!(at < now, "{} is after now", r["id"]);
                    obs.push(Obs {
                        patient: subject("subject"),
                        code,
                        at,
                        value: v,
                    });
                }
            }
            _ => {}
        }
        Ok(())
    })
    .unwrap();
    let latest = |p: &str, code: &str| {
        obs.iter()
            .filter(|o| o.patient == p && o.code == code)
            .max_by_key(|o| o.at)
            .map(|o| o.value)
    };
    let has = |p: &str, sct: &str| conditions.get(p).is_some_and(|c| c.iter().any(|x| x == sct));
    let age = |p: &str| {
        let b = patients[p]["birthDate"].as_str().unwrap();
        (now.date_naive() - chrono::NaiveDate::parse_from_str(b, "%Y-%m-%d").unwrap()).num_days() as f64 / 365.25
    };
    let egfr = |p: &str| {
        let cr = latest(p, "2160-0")?;
        let sex = patients[p]["gender"].as_str().unwrap();
        let r = emrgym_calc::run_named("ckd_epi_2021", &json!({"sex": sex, "age": age(p).floor(), "creatinine": cr})).ok()?;
        r.value.as_f64()
    };
    // eGFR from the latest creatinine (our own CKD-EPI 2021) matches each patient's CKD stage
    let (mut ckd4, mut ckd4_ok, mut none, mut none_ok) = (0, 0, 0, 0);
    for p in patients.keys() {
        let Some(e) = egfr(p) else { continue };
        if has(p, "431857002") {
            ckd4 += 1;
            ckd4_ok += usize::from((10.0..35.0).contains(&e));
        } else if !has(p, "433144002") {
            none += 1;
            none_ok += usize::from(e >= 50.0);
        }
    }
    assert!(ckd4 >= 5 && ckd4_ok * 10 >= ckd4 * 9, "CKD 4: {ckd4_ok}/{ckd4} with eGFR 10-35");
    assert!(none >= 50 && none_ok * 20 >= none * 19, "no CKD: {none_ok}/{none} with eGFR >= 50");
    // diabetes and HbA1c
    let (mut dm, mut dm_ok, mut no_dm, mut no_dm_ok) = (0, 0, 0, 0);
    for p in patients.keys() {
        let Some(a1c) = latest(p, "4548-4") else { continue };
        if has(p, "44054006") {
            dm += 1;
            dm_ok += usize::from(a1c >= 6.0);
        } else {
            no_dm += 1;
            no_dm_ok += usize::from(a1c < 6.5);
        }
    }
    assert!(dm >= 10 && dm_ok * 10 >= dm * 9, "diabetics: {dm_ok}/{dm} with HbA1c >= 6");
    assert!(
        no_dm >= 5 && no_dm_ok * 20 >= no_dm * 19,
        "others: {no_dm_ok}/{no_dm} with HbA1c < 6.5"
    );
    // warfarin raises the INR
    let inr = |on: bool| {
        let v: Vec<f64> = obs
            .iter()
            .filter(|o| o.code == "6301-6" && meds.get(&o.patient).is_some_and(|m| m.contains(&"855332".to_string())) == on)
            .map(|o| o.value)
            .collect();
        (v.iter().sum::<f64>() / v.len().max(1) as f64, v.len())
    };
    let (on, n_on) = inr(true);
    assert!(n_on > 10 && on > 2.0, "INR on warfarin {on} ({n_on})");
    // the current admissions: recent K and Mg for everyone, capillary glucose for diabetics,
    // and both sides of the repletion thresholds
    assert!(admitted.len() >= 60, "{} admitted", admitted.len());
    let recent = |p: &str, code: &str| {
        obs.iter()
            .filter(|o| o.patient == p && o.code == code && o.at > now - Duration::hours(24))
            .count()
    };
    let (mut low_mg, mut ok_mg, mut low_k) = (0, 0, 0);
    for p in &admitted {
        assert!(
            recent(p, "19123-9") >= 1 && recent(p, "2823-3") >= 1,
            "{p}: no Mg/K in the last 24 h"
        );
        if has(p, "44054006") {
            assert!(recent(p, "2339-0") >= 2, "{p}: diabetic without glucose checks");
        }
        let mg = latest(p, "19123-9").unwrap();
        if mg < 1.9 {
            low_mg += 1
        } else {
            ok_mg += 1
        }
        low_k += usize::from(latest(p, "2823-3").unwrap() < 3.5);
    }
    assert!(
        low_mg >= 5 && ok_mg >= 5 && low_k >= 5,
        "Mg low {low_mg} / normal {ok_mg}, K low {low_k}"
    );
}

#[test]
fn the_checked_in_gen_cohort_is_what_the_generator_writes() {
    // scenarios pin branches to this data: regenerate it (the command below) and re-run
    // `emrgym scenarios check` when the generator changes on purpose
    let dir = tempfile::tempdir().unwrap();
    Generator::new(Config {
        patients: 120,
        seed: 21,
        years: 1,
        inpatient_vitals_every_h: 8,
        admitted_share: 0.6,
        ..Config::default()
    })
    .unwrap()
    .write_ndjson(dir.path())
    .unwrap();
    let checked_in = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fhir-fixtures/cohorts/gen");
    let (want, got) = (files(dir.path()), files(&checked_in));
    assert_eq!(want.keys().collect::<Vec<_>>(), got.keys().collect::<Vec<_>>());
    for (name, bytes) in &want {
        assert!(
            &got[name] == bytes,
            "fhir-fixtures/cohorts/gen/{name} is stale: emrgym fixtures generate --patients 120 --seed 21 --years 1 --vitals-every 8 --admitted 0.6 --out fhir-fixtures/cohorts/gen"
        );
    }
}
