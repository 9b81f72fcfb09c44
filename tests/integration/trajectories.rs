//! Trajectories end to end: every run writes versioned JSONL trajectories; `replay`
//! re-executes them into fresh sandboxes and reproduces every grade and byte; a changed
//! scenario is reported with its reason; the format and the ATIF export are snapshotted.

use emrgym_engine::run::{AgentKind, RunConfig, execute};
use emrgym_engine::rundir::read_results;
use emrgym_scenario::trajectory::{atif, file};
use serde_json::Value;
use std::path::{Path, PathBuf};

fn suite() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios")
}

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_emrgym")
}

/// Run `agent` over `families` (their demo-cohort instances, the numbers these tests count),
/// or over the whole suite when `families` is empty.
fn run(agent: AgentKind, suite: &Path, families: &[&str], out: &Path) {
    let instances = if families.is_empty() {
        Vec::new()
    } else {
        emrgym_engine::scenarios::instances(suite)
            .unwrap()
            .into_iter()
            .filter(|i| i.cohort == "demo" && families.contains(&i.family.as_str()))
            .map(|i| i.id)
            .collect()
    };
    let cfg = RunConfig {
        suite: suite.to_path_buf(),
        agent,
        instances,
        families: families.iter().map(|s| s.to_string()).collect(),
        ..RunConfig::default()
    };
    execute(cfg, out, false).unwrap();
}

fn files(dir: &Path) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read_to_string(e.path()).unwrap(),
            )
        })
        .collect();
    v.sort();
    v
}

#[test]
fn replaying_the_suite_reproduces_every_grade_and_byte() {
    let dir = tempfile::tempdir().unwrap();
    for agent in [AgentKind::Oracle, AgentKind::Null] {
        let rec = dir.path().join(format!("{agent:?}"));
        run(agent, &suite(), &[], &rec);
        let again = dir.path().join(format!("{agent:?}-replayed"));
        let out = std::process::Command::new(bin())
            .arg("replay")
            .arg(&rec)
            .arg("--check")
            .arg("--out")
            .arg(&again)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
        let n = read_results(&rec.join("results.jsonl")).unwrap().len();
        assert!(n >= 89);
        assert!(
            text.starts_with(&format!(
                "replayed {n} episodes: {n} grades unchanged, 0 changed; tool results differ in 0 episodes"
            )),
            "{text}"
        );
        // the replayed run is the recorded run, byte for byte
        assert_eq!(
            std::fs::read_to_string(again.join("results.jsonl")).unwrap(),
            std::fs::read_to_string(rec.join("results.jsonl")).unwrap()
        );
        assert_eq!(
            std::fs::read_to_string(again.join("summary.json")).unwrap(),
            std::fs::read_to_string(rec.join("summary.json")).unwrap()
        );
        assert_eq!(files(&again.join("trajectories")), files(&rec.join("trajectories")));
    }
}

#[test]
fn a_changed_scenario_is_reported_with_its_reason() {
    let dir = tempfile::tempdir().unwrap();
    let sc = dir.path().join("scenarios");
    crate::common::copy_dir(&suite(), &sc);
    let rec = dir.path().join("rec");
    run(AgentKind::Oracle, &sc, &["mab_patient_age", "mab_latest_glucose"], &rec);
    // a year later, every age is one more than the recorded answer
    let f = sc.join("mab_patient_age.json");
    let t = std::fs::read_to_string(&f)
        .unwrap()
        .replace("\"now\": \"2023-11-13", "\"now\": \"2024-11-13");
    std::fs::write(&f, t).unwrap();
    let out = std::process::Command::new(bin())
        .arg("replay")
        .arg(&rec)
        .arg("--check")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "--check fails when a grade changed");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("replayed 12 episodes: 6 grades unchanged, 6 changed"), "{text}");
    assert!(text.contains("mab-age-001.0: success true -> false"), "{text}");
    assert!(text.contains("done: passed -> failed"), "{text}");
    assert!(
        text.contains("why: scenario family mab_patient_age changed since the run"),
        "{text}"
    );
    assert!(!text.contains("mab-cbg"), "the unchanged family is not reported: {text}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("6 grades changed on replay"));
    // the JSON report carries the same
    let out = std::process::Command::new(bin())
        .arg("replay")
        .arg(&rec)
        .arg("--json")
        .output()
        .unwrap();
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let changed: Vec<&Value> = v.as_array().unwrap().iter().filter(|r| r["changed"] == true).collect();
    assert_eq!(changed.len(), 6);
    let nodes = changed[0]["nodes"].as_array().unwrap();
    assert!(
        nodes
            .iter()
            .any(|n| n["path"] == "done" && n["before"] == "passed" && n["after"] == "failed"),
        "{nodes:?}"
    );
    // a missing instance is named
    std::fs::remove_file(&f).unwrap();
    let out = std::process::Command::new(bin()).arg("replay").arg(&rec).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("instance mab-age-001 is not in"));
    // not a run
    let out = std::process::Command::new(bin())
        .arg("replay")
        .arg(dir.path().join("nope"))
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("no such run directory or trajectory file"));
}

#[test]
fn trajectory_and_atif_formats_are_stable() {
    let dir = tempfile::tempdir().unwrap();
    let rec = dir.path().join("rec");
    run(AgentKind::Oracle, &suite(), &["metformin_renal_review"], &rec);
    let path = rec.join("trajectories/metformin-renal-001.0.jsonl");
    let text = std::fs::read_to_string(&path).unwrap();
    let lines: Vec<Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    insta::assert_json_snapshot!("trajectory_metformin_oracle", lines, {
        "[0].emrgym_version" => "[version]",
        "[0].scenario.content_sha256" => "[sha256]",
        "[0].tool_catalogue_sha256" => "[sha256]",
    });
    let f = file::read(&path).unwrap();
    let results = read_results(&rec.join("results.jsonl")).unwrap();
    let grade = results.iter().find(|r| r.instance == "metformin-renal-001").unwrap().grade.clone();
    let grade = grade.map(|g| serde_json::to_value(g).unwrap());
    let a = atif::export(&f.header, &f.trajectory, grade.as_ref());
    assert_eq!(atif::validate(&a), Vec::<String>::new());
    insta::assert_json_snapshot!("atif_metformin_oracle", a, {
        ".agent.version" => "[version]",
        ".extra.scenario.content_sha256" => "[sha256]",
        ".extra.tool_catalogue_sha256" => "[sha256]",
    });
}

/// Set `grader_version` and move every numeric `finish` answer by `delta`, anywhere in a
/// trajectory line.
fn age_recording(v: &mut Value, version: u64, delta: f64) {
    match v {
        Value::Object(m) => {
            if m.contains_key("grader_version") {
                m.insert("grader_version".into(), version.into());
            }
            if m.get("name").and_then(Value::as_str) == Some("finish")
                && let Some(a) = m.get_mut("arguments").and_then(|a| a.get_mut("answer"))
                && let Some(x) = a.as_f64()
                && x >= 0.0
            {
                *a = serde_json::json!(x + delta);
            }
            m.values_mut().for_each(|x| age_recording(x, version, delta));
        }
        Value::Array(a) => a.iter_mut().for_each(|x| age_recording(x, version, delta)),
        _ => {}
    }
}

#[test]
fn replay_of_an_older_grader_names_the_rule_that_changed_each_verdict() {
    // A QTc answered 0.8 ms off passed grader version 2 (a fixed tolerance of 1.0); version 3
    // takes the tolerance from the instruction ("rounded to a whole number": ± 0.5).
    let dir = tempfile::tempdir().unwrap();
    let rec = dir.path().join("rec");
    run(AgentKind::Oracle, &suite(), &["qtc_review"], &rec);
    let traj = rec.join("trajectories");
    let mut aged = 0;
    for e in std::fs::read_dir(&traj).unwrap() {
        let path = e.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        let mut out = String::new();
        for line in text.lines() {
            let mut v: Value = serde_json::from_str(line).unwrap();
            age_recording(&mut v, 2, 0.8);
            out.push_str(&serde_json::to_string(&v).unwrap());
            out.push('\n');
        }
        if out != text {
            aged += 1;
        }
        std::fs::write(&path, out).unwrap();
    }
    assert!(aged > 0);
    let out = std::process::Command::new(bin()).arg("replay").arg(&rec).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("done: passed -> failed"), "{text}");
    let now = format!("why: grader version 2 at the run, {} now", emrgym_grade::GRADER_VERSION);
    assert!(text.contains(&now), "{text}");
    assert!(text.contains("rule: v3 answer format"), "{text}");
    assert!(
        !text.contains("rule: v2"),
        "only the rules that decide a wrong answer are named: {text}"
    );
    let out = std::process::Command::new(bin())
        .arg("replay")
        .arg(&rec)
        .arg("--json")
        .output()
        .unwrap();
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let changed: Vec<&Value> = v.as_array().unwrap().iter().filter(|r| r["changed"] == true).collect();
    assert!(!changed.is_empty());
    for r in changed {
        let nodes = r["nodes"].as_array().unwrap();
        let done = nodes
            .iter()
            .find(|n| n["path"].as_str().unwrap().ends_with("done"))
            .unwrap_or_else(|| panic!("{nodes:?}"));
        assert!(done["rules"][0].as_str().unwrap().starts_with("v3 answer format"), "{done}");
    }
}
