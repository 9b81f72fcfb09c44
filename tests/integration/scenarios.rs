//! Scenarios and grading on the real suite (scenarios/): the integrity gate passes, broken
//! scenarios are reported with file and line, every failure class is detected on a minimal
//! hand-written trajectory, mutated oracle runs fail the right node, the planner defers on
//! unrevealed facts, and the oracle grades are snapshotted.

use emrgym_agent::{Null, Oracle, Script};
use emrgym_engine::episode::{Prepared, Workspace, run_and_grade};
use emrgym_engine::scenarios::check;
use emrgym_grade::{FailureClass, Grade, Verdict};
use emrgym_scenario::htn::plan::{Knowledge, Status, plan, revealed_paths};
use emrgym_scenario::trajectory::ToolCall;
use emrgym_tools::facts::SandboxFacts;
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn suite_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios")
}

fn prepared(id: &str) -> Prepared {
    let mut ws = Workspace::open(&suite_dir()).unwrap();
    let inst = ws
        .suite
        .instances()
        .unwrap()
        .into_iter()
        .find(|i| i.id == id)
        .unwrap_or_else(|| panic!("no instance {id}"));
    ws.prepare(&inst).unwrap()
}

fn calls(p: &Prepared) -> Vec<ToolCall> {
    p.oracle.reference_calls().into_iter().map(|(_, c)| c).collect()
}

fn finish(answer: Value) -> ToolCall {
    ToolCall {
        name: "finish".into(),
        arguments: json!({ "answer": answer }),
    }
}

fn node<'a>(g: &'a Grade, path: &str) -> &'a emrgym_grade::NodeGrade {
    g.nodes
        .iter()
        .find(|n| n.path == path)
        .unwrap_or_else(|| panic!("no node {path} in {g:#?}"))
}

fn run(p: &Prepared, calls: Vec<ToolCall>) -> Grade {
    run_and_grade(p, &mut Script::new(calls), 1).1
}

#[test]
fn the_suite_passes_the_integrity_gate_with_balanced_branches() {
    let r = check(&suite_dir());
    let problems: Vec<String> = r.problems.iter().map(|p| p.to_string()).collect();
    assert!(r.ok, "{problems:#?}");
    // the suite the benchmark promises: at least 25 families and 300 instances
    assert!(
        r.families >= 25 && r.instances >= 300,
        "{} families, {} instances",
        r.families,
        r.instances
    );
    // MedAgentBench ports: every branch of every decision in at least 30% of the family's instances
    for (family, nodes) in &r.branches {
        if !family.starts_with("mab_") {
            continue;
        }
        for (path, methods) in nodes {
            let total: usize = methods.values().sum();
            if methods.len() < 2 {
                continue;
            }
            for (m, c) in methods {
                assert!(*c as f64 / total as f64 >= 0.3, "{family} {path}: branch {m} in {c}/{total}");
            }
        }
    }
    // every MedAgentBench decision family has more than one branch exercised
    for f in [
        "mab_k_replete",
        "mab_mg_replete",
        "mab_a1c",
        "mab_patient_lookup",
        "mab_latest_mg_24h",
        "mab_mean_glucose_24h",
    ] {
        let branches: usize = r.branches[f].values().map(|m| m.len()).max().unwrap();
        assert!(branches >= 2, "{f}");
    }
}

#[test]
fn every_method_of_every_decision_a_family_reaches_is_taken_by_one_of_its_instances() {
    let mut ws = Workspace::open(&suite_dir()).unwrap();
    // family -> compound task reached -> methods taken
    let mut taken: BTreeMap<String, BTreeMap<String, BTreeSet<String>>> = BTreeMap::new();
    let mut library = BTreeMap::new();
    for inst in ws.suite.instances().unwrap() {
        let p = ws.prepare(&inst).unwrap();
        for n in &p.oracle.nodes {
            if let Some(m) = &n.method {
                let methods = taken.entry(inst.family.clone()).or_default().entry(n.task.clone()).or_default();
                methods.insert(m.clone());
            }
        }
        library.entry(inst.family.clone()).or_insert_with(|| p.library.clone());
    }
    let mut missing = Vec::new();
    for (family, tasks) in &taken {
        for (task, methods) in tasks {
            for m in &library[family].tasks[task].methods {
                if !methods.contains(&m.name) {
                    missing.push(format!("{family}: {task} never takes {}", m.name));
                }
            }
        }
    }
    assert!(missing.is_empty(), "{missing:#?}");
}

#[test]
fn broken_scenarios_are_reported_with_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let htn = dir.path().join("htn");
    std::fs::create_dir_all(&htn).unwrap();
    for f in ["common.json", "electrolytes.json", "htn.schema.json"] {
        std::fs::copy(suite_dir().join("htn").join(f), htn.join(f)).unwrap();
    }
    std::fs::copy(suite_dir().join("scenario.schema.json"), dir.path().join("scenario.schema.json")).unwrap();
    let mut fam: Value = serde_json::from_str(&std::fs::read_to_string(suite_dir().join("mab_k_replete.json")).unwrap()).unwrap();
    fam["instances"] = json!([
        {"id": "bad-branch", "patient": "S3241217", "expect_branch": {"act": "normal"}},
        {"id": "bad-patient", "patient": "NOPE123", "expect_branch": {"act": "no_result"}}
    ]);
    std::fs::write(dir.path().join("k.json"), serde_json::to_string_pretty(&fam).unwrap()).unwrap();
    // a family with an unknown field: a schema error on its line
    let mut bad = fam.clone();
    bad["family"] = json!("other");
    bad["instances"] = json!([{"id": "other-001", "patient": "S3241217", "colour": "blue"}]);
    std::fs::write(dir.path().join("other.json"), serde_json::to_string_pretty(&bad).unwrap()).unwrap();
    let r = check(dir.path());
    assert!(!r.ok);
    let text: Vec<String> = r.problems.iter().map(|p| p.to_string()).collect();
    let has = |needle: &str| text.iter().any(|t| t.contains(needle));
    assert!(
        has("[bad-branch]: expect_branch 'act': the record calls for 'replete', not 'normal'"),
        "{text:#?}"
    );
    assert!(has("[bad-patient]: patient 'NOPE123' does not exist"), "{text:#?}");
    assert!(text.iter().any(|t| t.contains("other.json:") && t.contains("colour")), "{text:#?}");
    assert!(
        r.problems
            .iter()
            .filter(|p| p.instance.as_deref() == Some("bad-branch"))
            .all(|p| p.line.is_some()),
        "{text:#?}"
    );

    // library defects: unknown task, a fact used before it is sensed, a cycle
    let lib = json!({"tasks": {
        "t": {"methods": [{"name": "m", "subtasks": [
            {"id": "use", "task": "report", "args": {"answer": "%k"}},
            {"id": "k", "task": "read_latest_obs", "args": {"code": "K", "label": "k"}},
            {"id": "x", "task": "no_such_task"}
        ], "order": "unordered"}]},
        "loop": {"methods": [{"name": "m", "subtasks": [{"id": "a", "task": "report", "args": {"answer": 1}}, {"id": "b", "task": "report", "args": {"answer": 2}}],
                 "order": [["a", "b"], ["b", "a"]]}]}
    }});
    std::fs::write(htn.join("broken.json"), serde_json::to_string_pretty(&lib).unwrap()).unwrap();
    let mut fam2 = fam.clone();
    fam2["family"] = json!("broken");
    fam2["library"] = json!(["htn/common.json", "htn/broken.json"]);
    fam2["root"] = json!({"task": "t", "args": {}});
    fam2["instances"] = json!([{"id": "broken-001", "patient": "S3241217"}]);
    std::fs::remove_file(dir.path().join("other.json")).unwrap();
    std::fs::remove_file(dir.path().join("k.json")).unwrap();
    std::fs::write(dir.path().join("broken.json"), serde_json::to_string_pretty(&fam2).unwrap()).unwrap();
    let r = check(dir.path());
    let text: Vec<String> = r.problems.iter().map(|p| p.to_string()).collect();
    let has = |needle: &str| text.iter().any(|t| t.contains(needle));
    assert!(has("unknown task or primitive 'no_such_task'"), "{text:#?}");
    assert!(has("fact %k is used by 'use' but 'k' is not ordered before it"), "{text:#?}");
    assert!(has("has a cycle"), "{text:#?}");
    assert!(
        text.iter().any(|t| t.contains("broken.json:") && t.contains("no_such_task")),
        "library errors carry the library file and line: {text:#?}"
    );

    // a range of accepted writes that ends below its start
    let lib = json!({"tasks": {"t": {"methods": [{"name": "m",
        "subtasks": [{"id": "a", "task": "report", "args": {"answer": 1}}],
        "expect": [{"select": {"resource_type": "ServiceRequest"}, "count": 2, "count_max": 1}]}]}}});
    std::fs::write(htn.join("broken.json"), serde_json::to_string_pretty(&lib).unwrap()).unwrap();
    let text: Vec<String> = check(dir.path()).problems.iter().map(|p| p.to_string()).collect();
    assert!(
        text.iter()
            .any(|t| t.contains("broken.json:") && t.contains("count_max 1 must be at least count 2")),
        "{text:#?}"
    );
}

#[test]
fn oracle_passes_and_null_fails_everything_that_asks_for_something() {
    let mut ws = Workspace::open(&suite_dir()).unwrap();
    for inst in ws.suite.instances().unwrap() {
        let p = ws.prepare(&inst).unwrap();
        let (_, g, _) = run_and_grade(&p, &mut Oracle::new(calls(&p)), 1);
        assert!(g.success && g.progress == 1.0 && g.classes.is_empty(), "{}: {g:#?}", inst.id);
        let (_, n, _) = run_and_grade(&p, &mut Null, 1);
        assert!(!n.success, "{}", inst.id);
        // finishing at once leaves gated work undone, or (where the only thing asked is the
        // answer, as in the refusal task whose patient read the branch does not use) is wrong
        assert!(
            n.classes.contains(&FailureClass::PrematureFinish) || n.classes == [FailureClass::Sensing, FailureClass::WrongAnswer],
            "{}: {:?}",
            inst.id,
            n.classes
        );
        assert!(
            n.progress.is_sign_positive(),
            "{}: progress {} (no negative zero)",
            inst.id,
            n.progress
        );
    }
}

#[test]
fn every_failure_class_on_a_minimal_trajectory() {
    // replete branch: K 3.2 -> 30 mEq
    let p = prepared("mab-k-005");
    let oracle = calls(&p);
    assert_eq!(oracle.len(), 3, "search, order, recheck: {oracle:#?}");
    let (search, order, lab) = (oracle[0].clone(), oracle[1].clone(), oracle[2].clone());

    // sensing: right orders, never looked at the potassium
    let g = run(&p, vec![order.clone(), lab.clone(), finish(json!("done"))]);
    assert_eq!(node(&g, "k").class, Some(FailureClass::Sensing));
    assert!(
        node(&g, "act.med").verdict == Verdict::Passed,
        "the write itself is right (a lucky guess)"
    );
    assert!(!g.success);

    // wrong parameter: 20 mEq instead of 30, with the field diff
    let mut wrong = order.clone();
    wrong.arguments["resource"]["dosageInstruction"][0]["doseAndRate"][0]["doseQuantity"]["value"] = json!(20);
    let g = run(&p, vec![search.clone(), wrong, lab.clone(), finish(json!("done"))]);
    let med = node(&g, "act.med");
    assert_eq!(med.class, Some(FailureClass::WrongParameter));
    let changed = &med.diff.as_ref().unwrap().changed[0];
    assert!(
        changed.assert.contains("dose(") && changed.actual == json!(20) && changed.expected == json!(30),
        "{changed:?}"
    );
    assert_eq!(g.primary, Some(FailureClass::WrongParameter));

    // omission: no recheck
    let g = run(&p, vec![search.clone(), order.clone(), finish(json!("done"))]);
    let labn = node(&g, "act.lab");
    assert_eq!(labn.class, Some(FailureClass::Omission));
    assert!(labn.diff.as_ref().unwrap().missing[0].contains("ServiceRequest"));
    assert!((g.progress - 2.0 / 3.0).abs() < 1e-9, "{}", g.progress);

    // extraneous write: everything right plus a stray vital sign
    let stray = ToolCall {
        name: "fhir_create".into(),
        arguments: json!({"resource_type": "Observation", "resource": {"status": "final", "code": {"text": "BP"}, "subject": {"reference": "Patient/S3241217"}, "valueString": "120/80 mmHg"}}),
    };
    let g = run(&p, vec![search.clone(), order.clone(), lab.clone(), stray, finish(json!("done"))]);
    assert!(g.nodes.iter().all(|n| n.verdict == Verdict::Passed));
    assert!(!g.success && g.classes == vec![FailureClass::ExtraneousWrite], "{:?}", g.classes);
    assert!(
        g.writes
            .iter()
            .any(|w| w.class == Some(FailureClass::ExtraneousWrite) && w.resource.starts_with("Observation/"))
    );

    // premature finish: stops after looking
    let g = run(&p, vec![search.clone(), finish(json!("done"))]);
    assert!(g.classes.contains(&FailureClass::PrematureFinish));
    assert_eq!(node(&g, "act.med").verdict, Verdict::Failed);

    // not reached: the episode ends (budget) before the orders
    let g = run(&p, vec![search.clone()]);
    assert_eq!(node(&g, "k").verdict, Verdict::Passed);
    assert_eq!(node(&g, "act.med").verdict, Verdict::NotReached);
    assert_eq!(node(&g, "act").verdict, Verdict::NotReached);

    // wrong branch: a normal potassium, and the agent orders repletion
    let normal = prepared("mab-k-003");
    let mut order_for = order.clone();
    order_for.arguments["resource"]["subject"]["reference"] = json!(format!("Patient/{}", normal.instance.patient));
    let g = run(&normal, vec![calls(&normal)[0].clone(), order_for, finish(json!("done"))]);
    assert_eq!(node(&g, "act").class, Some(FailureClass::WrongBranch), "{g:#?}");
    assert!(g.writes[0].class == Some(FailureClass::WrongBranch) && g.writes[0].node.as_deref() == Some("act"));

    // ordering: the potassium order written before the potassium was read (electrolyte review)
    let lr = prepared("lyte-review-003");
    let lc = calls(&lr);
    let pos = lc.iter().position(|c| c.name == "fhir_create").unwrap();
    let mut swapped = vec![lc[pos].clone()];
    swapped.extend(lc.iter().enumerate().filter(|(i, _)| *i != pos).map(|(_, c)| c.clone()));
    let g = run(&lr, swapped);
    assert!(g.nodes.iter().any(|n| n.class == Some(FailureClass::Ordering)), "{g:#?}");

    // wrong answer
    let lg = prepared("mab-cbg-001");
    let g = run(&lg, vec![calls(&lg)[0].clone(), finish(json!([999]))]);
    assert_eq!(node(&g, "done").class, Some(FailureClass::WrongAnswer));
    assert_eq!(g.answer.as_ref().unwrap().given, json!([999]));
}

#[test]
fn mutated_oracle_runs_fail_the_right_node() {
    let mut ws = Workspace::open(&suite_dir()).unwrap();
    let mut tried = BTreeSet::new();
    let all = ws.suite.instances().unwrap();
    for inst in all.clone() {
        let p = ws.prepare(&inst).unwrap();
        // another patient of the same cohort
        let other = all
            .iter()
            .find(|o| o.cohort == inst.cohort && o.patient != inst.patient)
            .map(|o| o.patient.clone())
            .unwrap();
        let base = calls(&p);
        let leaf_of = |call_idx: usize| -> String {
            let (n, _) = p.oracle.reference_calls()[call_idx].clone();
            p.oracle.nodes[n].path.clone()
        };
        for (i, c) in base.iter().enumerate() {
            // wrong dose
            if c.name == "fhir_create" && c.arguments["resource_type"] == "MedicationRequest" {
                let mut m = base.clone();
                // a dose, or an infusion's rate
                let dr = &mut m[i].arguments["resource"]["dosageInstruction"][0]["doseAndRate"][0];
                let quantity = if dr.get("doseQuantity").is_some() {
                    "doseQuantity"
                } else {
                    "rateQuantity"
                };
                let v = &mut dr[quantity]["value"];
                *v = json!(v.as_f64().unwrap() * 2.0 + 1.0);
                let g = run(&p, m);
                assert_eq!(
                    node(&g, &leaf_of(i)).class,
                    Some(FailureClass::WrongParameter),
                    "{}: wrong dose",
                    inst.id
                );
                tried.insert("wrong dose");
            }
            // wrong patient
            if c.name == "fhir_create" {
                let mut m = base.clone();
                m[i].arguments["resource"]["subject"]["reference"] = json!(format!("Patient/{other}"));
                let g = run(&p, m);
                assert_eq!(
                    node(&g, &leaf_of(i)).class,
                    Some(FailureClass::WrongParameter),
                    "{}: wrong patient",
                    inst.id
                );
                tried.insert("wrong patient");
            }
            // missing step
            if matches!(c.name.as_str(), "fhir_create" | "fhir_update") {
                let mut m = base.clone();
                m.remove(i);
                let g = run(&p, m);
                assert_eq!(
                    node(&g, &leaf_of(i)).class,
                    Some(FailureClass::Omission),
                    "{}: missing step",
                    inst.id
                );
                tried.insert("missing step");
            }
            // wrong answer
            if c.name == "finish" && c.arguments["answer"].is_number() {
                let mut m = base.clone();
                m[i].arguments["answer"] = json!(c.arguments["answer"].as_f64().unwrap() + 50.0);
                let g = run(&p, m);
                assert_eq!(
                    node(&g, &leaf_of(i)).class,
                    Some(FailureClass::WrongAnswer),
                    "{}: wrong answer",
                    inst.id
                );
                tried.insert("wrong answer");
            }
        }
        // swapped order: a write moved before the sensing step it depends on
        if let Some(w) = base.iter().position(|c| c.name == "fhir_create")
            && base[..w].iter().any(|c| c.name == "fhir_search")
            && p.oracle
                .before
                .iter()
                .any(|(a, b)| p.oracle.nodes[*a].fact.is_some() && p.oracle.nodes[*b].kind == "compound")
        {
            let mut m = base.clone();
            let c = m.remove(w);
            m.insert(0, c);
            let g = run(&p, m);
            assert!(
                g.nodes.iter().any(|n| n.class == Some(FailureClass::Ordering)),
                "{}: swapped order {:#?}",
                inst.id,
                g.nodes
            );
            tried.insert("swapped order");
        }
        // extra write
        let mut m = base.clone();
        let at = m.len().saturating_sub(1);
        m.insert(
            at,
            ToolCall {
                name: "fhir_create".into(),
                arguments: json!({"resource_type": "Observation", "resource": {"status": "final", "code": {"text": "NOTE"}, "subject": {"reference": format!("Patient/{}", inst.patient)}, "valueString": "x"}}),
            },
        );
        if p.registry.manifest("fhir_create").is_some() {
            let g = run(&p, m);
            assert!(
                g.classes.contains(&FailureClass::ExtraneousWrite) && !g.success,
                "{}: extra write",
                inst.id
            );
            tried.insert("extra write");
        }
    }
    assert_eq!(tried.len(), 6, "every mutation kind was exercised: {tried:?}");
}

#[test]
fn guided_planning_defers_until_the_agent_sees_the_fact() {
    let p = prepared("mab-k-005");
    let mut facts = SandboxFacts::new(emrgym_engine::episode::fork(&p.cohort, &p.clock, 0));
    let hidden = plan(
        &p.library,
        &p.instance.root.task,
        &p.instance.root.args,
        &p.globals,
        &mut facts,
        &Knowledge::Revealed(BTreeSet::new()),
    );
    let act = hidden.find("act").unwrap();
    assert!(
        matches!(&hidden.nodes[act].status, Status::Deferred { waiting } if waiting == &vec!["k".to_string()]),
        "{:?}",
        hidden.nodes[act].status
    );
    assert!(hidden.nodes[act].method.is_none(), "no branch leaks before the fact is seen");
    assert!(hidden.find("act.med").is_none());
    // after the agent's own search shows the potassium, the planner knows it
    let (traj, _, _) = run_and_grade(&p, &mut Script::new(vec![calls(&p)[0].clone()]), 1);
    let revealed = revealed_paths(&p.oracle, &traj.steps);
    assert_eq!(revealed, BTreeSet::from(["k".to_string()]));
    let shown = plan(
        &p.library,
        &p.instance.root.task,
        &p.instance.root.args,
        &p.globals,
        &mut facts,
        &Knowledge::Revealed(revealed),
    );
    assert_eq!(shown.nodes[shown.find("act").unwrap()].method.as_deref(), Some("replete"));
    // a search for another code does not reveal it
    let other = ToolCall {
        name: "fhir_search".into(),
        arguments: json!({"resource_type": "Observation", "params": {"patient": "S3241217", "code": "MG"}}),
    };
    let (traj, _, _) = run_and_grade(&p, &mut Script::new(vec![other]), 1);
    assert!(revealed_paths(&p.oracle, &traj.steps).is_empty());
    // an empty result is revealed by a search that covers the query
    let none = prepared("mab-k-001");
    let (traj, _, _) = run_and_grade(&none, &mut Script::new(vec![calls(&none)[0].clone()]), 1);
    assert_eq!(revealed_paths(&none.oracle, &traj.steps), BTreeSet::from(["k".to_string()]));
}

/// The in-process backend stops a reply as soon as its end repeats one short pattern
/// (`emrgym_agent::model::repetition`), and the loop charges such replies to the model. No
/// reference call may ever look like that: not at its end, nor at any point while it is
/// being written, in any format a model may write it (compact, spaced, pretty-printed).
#[test]
fn no_reference_call_looks_degenerate_at_any_point_while_it_is_written() {
    use emrgym_agent::model::repetition;
    use emrgym_engine::model::budget::call_texts;
    let mut ws = Workspace::open(&suite_dir()).unwrap();
    let (mut checked, mut longest) = (0usize, 0usize);
    for inst in ws.suite.instances().unwrap() {
        let p = ws.prepare(&inst).unwrap();
        for c in calls(&p)
            .into_iter()
            .chain([finish(json!(["S6426560", 3.1, "2023-11-13T10:15:00Z"]))])
        {
            for text in call_texts(&c.name, &c.arguments) {
                let text = format!("<tool_call>\n{text}");
                longest = longest.max(text.len());
                for (k, _) in text.char_indices().skip(1).chain([(text.len(), ' ')]) {
                    if let Some(r) = repetition(&text[..k]) {
                        panic!(
                            "{}: a reference call of {} looks degenerate at byte {k} ({r:?}):\n{text}",
                            inst.id, c.name
                        );
                    }
                }
                checked += 1;
            }
        }
    }
    assert!(checked > 3_000 && longest > 1_000, "{checked} texts, the longest {longest} bytes");
}

#[test]
fn reference_plans_respect_the_partial_order() {
    let p = prepared("dm-followup-001");
    let order: Vec<String> = p.oracle.linear().into_iter().map(|n| p.oracle.nodes[n].path.clone()).collect();
    let pos = |x: &str| order.iter().position(|p| p == x).unwrap_or_else(|| panic!("{x} in {order:?}"));
    assert!(
        pos("a1c") < pos("act.order") && pos("act.order") < pos("done") && pos("record") < pos("done") && pos("glu") < pos("done"),
        "{order:?}"
    );
    // edges are checked on every run: the oracle's order passes
    assert!(!p.oracle.before.is_empty());
}

#[test]
fn oracle_grades_are_stable() {
    let mut ws = Workspace::open(&suite_dir()).unwrap();
    let families: Vec<String> = ws.suite.families.iter().map(|(_, _, f)| f.family.clone()).collect();
    for family in families {
        let insts: Vec<_> = ws.suite.instances().unwrap().into_iter().filter(|i| i.family == family).collect();
        let mut grades = Vec::new();
        for inst in insts {
            let p = ws.prepare(&inst).unwrap();
            let (_, g, _) = run_and_grade(&p, &mut Oracle::new(calls(&p)), 1);
            grades.push(json!({"instance": inst.id, "branches": p.oracle.branches(), "grade": g}));
        }
        insta::assert_json_snapshot!(format!("oracle_{family}"), grades);
    }
}

#[test]
fn materialise_the_state_at_any_node() {
    let p = prepared("lyte-review-001");
    // before the magnesium decision: the potassium orders are in, nothing for magnesium yet
    let (sb, traj) = emrgym_engine::episode::materialize(&p, "mg_act", 1).unwrap();
    let written: Vec<String> = sb.diff().iter().map(|c| c.resource_type.clone()).collect();
    assert_eq!(
        written,
        vec!["MedicationRequest".to_string(), "ServiceRequest".to_string()],
        "{traj:#?}"
    );
    assert!(traj.steps.iter().all(|s| s.call.name != "finish"));
    // finishing from there with the rest of the reference plan passes every node
    let rest: Vec<ToolCall> = calls(&p).into_iter().skip(traj.steps.len()).collect();
    let mut steps = traj.steps.clone();
    let mut sb = sb;
    {
        let mut backend = (&mut sb, emrgym_engine::episode::BASE);
        let t = emrgym_agent::run_episode(&mut Script::new(rest), &p.registry, &mut backend, 100);
        steps.extend(t.steps);
    }
    let full = emrgym_scenario::trajectory::Trajectory::new(steps, emrgym_scenario::trajectory::EndReason::Finished);
    let g = emrgym_engine::episode::grade_sandbox(&p, &full, &sb);
    assert!(g.success, "{g:#?}");
    // the root is the empty prefix; an unknown node is an error naming it
    assert!(emrgym_engine::episode::materialize(&p, "", 1).unwrap().0.diff().is_empty());
    assert!(emrgym_engine::episode::materialize(&p, "nope", 1).unwrap_err().contains("'nope'"));
}

#[test]
fn scaffolded_family_passes_the_check() {
    let dir = tempfile::tempdir().unwrap();
    let htn = dir.path().join("htn");
    std::fs::create_dir_all(&htn).unwrap();
    for e in std::fs::read_dir(suite_dir().join("htn")).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), htn.join(e.file_name())).unwrap();
    }
    std::fs::copy(suite_dir().join("scenario.schema.json"), dir.path().join("scenario.schema.json")).unwrap();
    let bin = env!("CARGO_BIN_EXE_emrgym");
    let out = std::process::Command::new(bin)
        .args(["scenarios", "new", "my_family", "--dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = std::process::Command::new(bin)
        .args(["scenarios", "check", "--json"])
        .arg(dir.path())
        .output()
        .unwrap();
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["ok"], true, "{report:#}");
    assert_eq!(report["instances"], 1);
    let again = std::process::Command::new(bin)
        .args(["scenarios", "new", "my_family", "--dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!again.status.success() && String::from_utf8_lossy(&again.stderr).contains("already exists"));
    let bad = std::process::Command::new(bin)
        .args(["scenarios", "new", "My Family"])
        .output()
        .unwrap();
    assert!(!bad.status.success() && String::from_utf8_lossy(&bad.stderr).contains("'My Family'"));
    let missing = std::process::Command::new(bin)
        .args(["scenarios", "check", "/nonexistent/dir"])
        .output()
        .unwrap();
    assert!(!missing.status.success() && String::from_utf8_lossy(&missing.stdout).contains("/nonexistent/dir"));
}

#[test]
fn guidance_follows_the_agent_without_leaking_branches() {
    use emrgym_scenario::htn::guide::guidance;
    let p = prepared("mab-k-005");
    let ref_calls = calls(&p);
    let mut sb = emrgym_engine::episode::fork(&p.cohort, &p.clock, 1);
    let mut facts = SandboxFacts::new(emrgym_engine::episode::fork(&p.cohort, &p.clock, 0));
    let mut steps = Vec::new();
    let mut seen_next: Vec<Vec<String>> = Vec::new();
    for i in 0..=ref_calls.len() {
        let revealed = revealed_paths(&p.oracle, &steps);
        let tree = plan(
            &p.library,
            &p.instance.root.task,
            &p.instance.root.args,
            &p.globals,
            &mut facts,
            &Knowledge::Revealed(revealed),
        );
        let writes = emrgym_engine::episode::written(&sb);
        let g = guidance(&p.library, &tree, &steps, &writes, false);
        seen_next.push(g.next.iter().map(|s| s.path.clone()).collect());
        if i == 0 {
            assert_eq!(seen_next[0], vec!["k".to_string()]);
            let text = serde_json::to_string(&g).unwrap();
            assert!(
                !text.contains("replete") && !text.contains("30"),
                "no branch or dose before the potassium is seen: {text}"
            );
        }
        if i == ref_calls.len() {
            assert!(g.complete && g.next.is_empty(), "{g:?}");
            break;
        }
        let mut backend = (&mut sb, emrgym_engine::episode::BASE);
        let t = emrgym_agent::run_episode(&mut Script::new(vec![ref_calls[i].clone()]), &p.registry, &mut backend, 1);
        steps.extend(t.steps);
    }
    // after the search both orders are released together (unordered), then the recheck alone
    assert_eq!(seen_next[1], vec!["act.med".to_string(), "act.lab".to_string()]);
    assert_eq!(seen_next[2], vec!["act.lab".to_string()]);
    // hints carry the computed dose only when asked for
    let revealed = revealed_paths(&p.oracle, &steps[..1]);
    let tree = plan(
        &p.library,
        &p.instance.root.task,
        &p.instance.root.args,
        &p.globals,
        &mut facts,
        &Knowledge::Revealed(revealed),
    );
    let with_hints = guidance(&p.library, &tree, &steps[..1], &[], true);
    assert!(with_hints.next[0].hint.as_deref().unwrap().contains("30"), "{with_hints:?}");
}

#[test]
fn the_suite_table_in_the_docs_is_generated_from_the_scenarios() {
    let doc = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/suite.md")).unwrap();
    let begin = "<!-- BEGIN GENERATED: emrgym scenarios list --markdown -->\n";
    let start = doc.find(begin).map(|i| i + begin.len()).expect("begin marker");
    let end = doc.find("<!-- END GENERATED -->").expect("end marker");
    let table = emrgym_engine::scenarios::suite_markdown(&suite_dir()).unwrap();
    assert!(doc[start..end] == table, "docs/suite.md is stale: run scripts/regenerate.sh");
    assert!(table.contains("| `mab_k_replete` |") && table.contains("gen "), "{table}");
}

#[test]
fn the_readme_states_the_suite_size_the_scenarios_have() {
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let ws = Workspace::open(&suite_dir()).unwrap();
    let families = ws.suite.families.len();
    let instances = ws.suite.instances().unwrap().len();
    let claim = format!("{families} families, {instances} instances");
    assert!(
        readme.contains(&claim),
        "README.md must say \"{claim}\" (the suite in scenarios/); update it"
    );
    // and no stale count survives elsewhere in it
    let counted = |l: &str| {
        l.contains(" families, ")
            && l.split(" families, ")
                .next()
                .and_then(|h| h.split_whitespace().last())
                .is_some_and(|n| n.parse::<usize>().is_ok())
    };
    for line in readme.lines().filter(|l| counted(l)) {
        assert!(line.contains(&claim), "stale suite size in README.md: {line}");
    }
}

#[test]
fn every_family_has_an_answer_key_and_the_keys_agree_with_the_oracle() {
    // the integrity gate runs the keys; here the absence of a key and a disagreeing key are
    // shown to fail it, on a copy of one family
    let dir = tempfile::tempdir().unwrap();
    let htn = dir.path().join("htn");
    std::fs::create_dir_all(&htn).unwrap();
    for e in std::fs::read_dir(suite_dir().join("htn")).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), htn.join(e.file_name())).unwrap();
    }
    std::fs::copy(suite_dir().join("scenario.schema.json"), dir.path().join("scenario.schema.json")).unwrap();
    std::fs::copy(suite_dir().join("mab_patient_age.json"), dir.path().join("mab_patient_age.json")).unwrap();
    let r = check(dir.path());
    let text: Vec<String> = r.problems.iter().map(|p| p.to_string()).collect();
    assert!(
        text.iter()
            .any(|t| t.contains("no independent answer key") && t.contains("keys/mab_patient_age.py")),
        "{text:#?}"
    );
    // the real key: the family passes
    let keys = dir.path().join("keys");
    std::fs::create_dir_all(&keys).unwrap();
    for f in ["keylib.py", "mab_patient_age.py"] {
        std::fs::copy(suite_dir().join("keys").join(f), keys.join(f)).unwrap();
    }
    let r = check(dir.path());
    let text: Vec<String> = r.problems.iter().map(|p| p.to_string()).collect();
    assert!(r.ok, "{text:#?}");
    // a key that is one year off on one patient: that instance fails, showing both values
    let real = std::fs::read_to_string(keys.join("mab_patient_age.py")).unwrap();
    let wrong = real.replace(
        "if __name__ == \"__main__\":",
        "_real = key\n\ndef key(inst, cohort):\n    r = _real(inst, cohort)\n    if inst[\"id\"] == \"mab-age-001\":\n        r[\"answer\"] += 1\n    return r\n\n\nif __name__ == \"__main__\":",
    );
    assert_ne!(wrong, real);
    std::fs::write(keys.join("mab_patient_age.py"), wrong).unwrap();
    let r = check(dir.path());
    let bad: Vec<&emrgym_engine::scenarios::Problem> = r.problems.iter().collect();
    assert_eq!(bad.len(), 1, "{bad:#?}");
    assert_eq!(bad[0].instance.as_deref(), Some("mab-age-001"));
    assert!(bad[0].message.contains("disagrees on the answer"), "{}", bad[0].message);
    // a key that crashes is a problem that names the key, not a pass
    std::fs::write(keys.join("mab_patient_age.py"), "raise SystemExit('boom')\n").unwrap();
    let r = check(dir.path());
    assert!(
        r.problems
            .iter()
            .any(|p| p.message.contains("mab_patient_age.py failed") && p.message.contains("boom")),
        "{:#?}",
        r.problems
    );
}

#[test]
fn a_comparison_on_a_repeating_element_is_rejected_statically_with_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let htn = dir.path().join("htn");
    std::fs::create_dir_all(&htn).unwrap();
    for f in ["common.json", "electrolytes.json", "htn.schema.json"] {
        std::fs::copy(suite_dir().join("htn").join(f), htn.join(f)).unwrap();
    }
    std::fs::copy(suite_dir().join("scenario.schema.json"), dir.path().join("scenario.schema.json")).unwrap();
    // the trap the af_anticoagulation key fell into: `=` on Condition.code.coding.code
    let lib = json!({"tasks": {"t": {"params": ["c"], "methods": [
        {"name": "yes", "when": "%c.where(code.coding.code = '84114007').exists()", "subtasks": [
            {"id": "done", "task": "report", "args": {"answer": 1}}]},
        {"name": "no", "when": "%c.where(code.coding.where(code = '84114007').exists()).empty()", "subtasks": [
            {"id": "done", "task": "report", "args": {"answer": 0}}]}
    ]}}});
    std::fs::write(htn.join("trap.json"), serde_json::to_string_pretty(&lib).unwrap()).unwrap();
    let mut fam: Value = serde_json::from_str(&std::fs::read_to_string(suite_dir().join("mab_k_replete.json")).unwrap()).unwrap();
    fam["family"] = json!("trap");
    fam["library"] = json!(["htn/common.json", "htn/trap.json"]);
    fam["root"] = json!({"task": "t", "args": {"c": "%patient"}});
    fam["instances"] = json!([{"id": "trap-001", "patient": "S3241217"}]);
    std::fs::write(dir.path().join("trap.json"), serde_json::to_string_pretty(&fam).unwrap()).unwrap();
    let r = check(dir.path());
    let hits: Vec<&emrgym_engine::scenarios::Problem> = r
        .problems
        .iter()
        .filter(|p| p.message.contains("can hold more than one item"))
        .collect();
    assert_eq!(hits.len(), 1, "{:#?}", r.problems);
    // library errors carry the library file and line in the message (file:line: ...)
    assert!(hits[0].message.contains("htn/trap.json:10:"), "{:?}", hits[0]);
    assert!(hits[0].message.contains("'coding'") && hits[0].message.contains("where(code = 'x').exists()"));
}

#[test]
fn the_grader_accepts_every_equivalent_variant_and_rejects_every_harmful_mutation() {
    let mut ws = Workspace::open(&suite_dir()).unwrap();
    let report = emrgym_engine::mutations::measure(&mut ws).unwrap();
    let (variants, rejects, mutations, accepts) = report.totals();
    assert_eq!((rejects, accepts), (0, 0), "{}", report.text());
    // every kind is exercised somewhere in the suite
    for kind in [
        "route as SNOMED coding",
        "route abbreviated",
        "dose in another unit",
        "dose split over two orders",
        "blood pressure as the vital-signs panel",
        "note with more text around it",
        "list answer as JSON text",
        "refusal as a structured outcome",
        "extra read",
        "independent reads reordered",
        "reads the branch does not use skipped",
        "score computed without the calculator tool",
    ] {
        assert!(report.variants.get(kind).is_some_and(|t| t.tried > 0), "{kind} never tried");
    }
    for kind in [
        "wrong dose",
        "wrong route",
        "wrong drug",
        "missing write",
        "write for another patient",
        "wrong answer",
        "refusal for another reason",
        "refusal of a task that can be done",
        "a read the branch uses skipped",
    ] {
        assert!(report.harmful.get(kind).is_some_and(|t| t.tried > 0), "{kind} never tried");
    }
    assert!(variants > 500 && mutations > 1000, "{variants} variants, {mutations} mutations");
}

/// Blood cultures are drawn as at least two sets (SSC 2016, kept by the hour-1 bundle): one
/// order for the cultures and one order per set are the same action and both pass; a third
/// order is extraneous. A duplicated medication order still fails (its doses add up).
#[test]
fn two_blood_culture_orders_pass_the_bundle_and_a_third_does_not() {
    let p = prepared("sepsis-001");
    let base = calls(&p);
    let culture = base
        .iter()
        .position(|c| c.name == "fhir_create" && c.arguments.to_string().contains("600-7"))
        .expect("the bundle orders blood cultures");
    let with = |extra: usize| {
        let mut c = base.clone();
        for _ in 0..extra {
            c.insert(culture + 1, base[culture].clone());
        }
        c
    };
    assert!(run(&p, with(0)).success);
    let two = run(&p, with(1));
    assert!(two.success, "two culture orders: {:#?}", node(&two, "act.cultures"));
    let three = run(&p, with(2));
    assert!(!three.success);
    let n = node(&three, "act.cultures");
    assert!(
        n.reasons
            .iter()
            .any(|r| r.contains("expected 1 to 2 write(s)") && r.contains("found 3")),
        "{n:#?}"
    );
    let abx = base
        .iter()
        .position(|c| c.name == "fhir_create" && c.arguments["resource_type"] == "MedicationRequest")
        .expect("the bundle orders an antibiotic");
    let mut twice = base.clone();
    twice.insert(abx + 1, base[abx].clone());
    assert!(!run(&p, twice).success, "a second antibiotic order doubles the dose");
}

/// One episode of `instance` over the episode API: each call (tool, arguments) is made and
/// must answer 200; returns the bodies of the answers and the episode's grade.
async fn graded_episode(instance: &str, calls: &[(&str, &Value)]) -> (Vec<Value>, Value) {
    use crate::common::episode_server;
    let dir = tempfile::tempdir().unwrap();
    let (s, _) = episode_server(&dir.path().join("rec"), None, emrgym_engine::episodes::Limits::default());
    let r = s
        .req("POST", "/episodes", Some(&json!({"instance": instance}).to_string()), &[])
        .await;
    assert_eq!(r.status.as_u16(), 201, "{}", r.body);
    let id = r.body["id"].as_str().unwrap();
    let auth = format!("Bearer {}", r.body["token"].as_str().unwrap());
    let me = [("authorization", auth.as_str())];
    let mut bodies = Vec::new();
    for (tool, args) in calls {
        let a = s
            .req("POST", &format!("/episodes/{id}/tools/{tool}"), Some(&args.to_string()), &me)
            .await;
        assert_eq!(a.status.as_u16(), 200, "{tool} {args}: {}", a.body);
        bodies.push(a.body);
    }
    let full = s.req("GET", &format!("/episodes/{id}"), None, &[]).await;
    (bodies, full.body["result"]["grade"].clone())
}

/// A task that asks no answer (`mab-k-001`: no potassium on file, so nothing to order) fails
/// when the agent ends it saying the patient was not found: the patient is in the record, so
/// the claim is false even though the record is left right (grader v4; docs/grading.md,
/// "Refusals"). A true refusal ("no potassium on file") and a plain report pass, and a task
/// whose expected answer is "Patient not found" (`mab-lookup-007`) still accepts it.
#[tokio::test]
async fn saying_the_patient_was_not_found_fails_a_task_that_asked_no_answer() {
    let search = json!({"resource_type": "Observation", "params": {"patient": "S2823623", "code": "K"}});
    let cases = [
        (
            "mab-k-001",
            json!({"answer": "No such patient found", "outcome": "cannot_complete", "reason": "patient_not_found"}),
            false,
        ),
        ("mab-k-001", json!({"answer": "Patient not found."}), false),
        (
            "mab-k-001",
            json!({"answer": "No potassium on file", "outcome": "cannot_complete", "reason": "data_missing"}),
            true,
        ),
        (
            "mab-k-001",
            json!({"answer": "No potassium result found for this patient; nothing ordered"}),
            true,
        ),
        ("mab-k-001", json!({"answer": null}), true),
        (
            "mab-lookup-007",
            json!({"answer": "Patient not found", "outcome": "cannot_complete", "reason": "patient_not_found"}),
            true,
        ),
    ];
    let lookup = json!({"resource_type": "Patient", "params": {"given": "Peter", "family": "Stafford", "birthdate": "1932-12-30"}});
    for (instance, finish, want) in cases {
        let read = if instance == "mab-k-001" { &search } else { &lookup };
        let (bodies, grade) = graded_episode(instance, &[("fhir_search", read), ("finish", &finish)]).await;
        if instance == "mab-k-001" {
            assert_eq!(bodies[0]["total"], 0, "the branch: no potassium on file: {}", bodies[0]);
        }
        assert_eq!(grade["success"], want, "{instance} {finish}: {grade}");
        let root = &grade["nodes"][0];
        let reasons = root["reasons"].to_string();
        if want {
            assert!(!reasons.contains("not found"), "{reasons}");
        } else {
            assert_eq!(root["verdict"], "failed", "{grade}");
            assert_eq!(root["class"], "wrong_answer", "{grade}");
            assert!(reasons.contains("S2823623") && reasons.contains("is in the record"), "{reasons}");
            assert!(grade["classes"].as_array().unwrap().contains(&json!("wrong_answer")), "{grade}");
            // the reads and the decision to order nothing still count
            assert!(grade["progress"].as_f64().unwrap() > 0.99, "{grade}");
        }
    }
}

/// Grader v5: an absence is shown only by a search that could have found what it looked for
/// (docs/grading.md, "Absences"). `mab-lookup-007` asks for Peter Stafford born 1932-12-30,
/// who is not on file (Peter Stafford born 1932-12-29 is): `name=Stafford Peter` finds no one
/// (a `name` value must start a part of the name or the name written out, given name first;
/// grader v6), so "Patient not found" after it is a guess that happens to be right, and fails
/// at the search node; a search by the name's parts or the whole name passes, and so does a
/// wider one whose complete result is the near miss. `mab-k-001`
/// (no potassium on file): a window that starts at the clinical now holds nothing on any
/// record, and proves nothing; the unbounded search does.
#[tokio::test]
async fn an_absence_counts_only_when_the_search_could_have_found_it() {
    let lookup = |params: Value| json!({"resource_type": "Patient", "params": params});
    let not_found = json!({"answer": "Patient not found", "outcome": "cannot_complete", "reason": "patient_not_found"});
    let potassium = |params: Value| json!({"resource_type": "Observation", "params": params});
    let cases = [
        (
            "mab-lookup-007",
            lookup(json!({"name": "Stafford Peter", "birthdate": "1932-12-30"})),
            not_found.clone(),
            false,
        ),
        (
            "mab-lookup-007",
            lookup(json!({"name": "Stafford Peter"})),
            not_found.clone(),
            false,
        ),
        (
            "mab-lookup-007",
            lookup(json!({"name": "Peter Stafford", "birthdate": "1932-12-30"})),
            not_found.clone(),
            true,
        ),
        ("mab-lookup-007", lookup(json!({"name": "Peter Stafford"})), not_found.clone(), true),
        (
            "mab-lookup-007",
            lookup(json!({"family": "Stafford", "given": "Peter", "birthdate": "1932-12-30"})),
            not_found.clone(),
            true,
        ),
        ("mab-lookup-007", lookup(json!({"family": "Stafford"})), not_found.clone(), true),
        (
            "mab-lookup-007",
            lookup(json!({"name": "Stafford", "birthdate": "1932-12-30"})),
            not_found,
            true,
        ),
        (
            "mab-k-001",
            potassium(json!({"patient": "S2823623", "code": "K", "date": "ge2023-11-13T10:15:00+00:00"})),
            json!({"answer": null}),
            false,
        ),
        (
            "mab-k-001",
            potassium(json!({"patient": "S2823623", "code": "K"})),
            json!({"answer": null}),
            true,
        ),
    ];
    for (instance, search, finish, want) in cases {
        let (bodies, grade) = graded_episode(instance, &[("fhir_search", &search), ("finish", &finish)]).await;
        // without the birth date a search that matches Peter Stafford finds the near miss
        let finds_near_miss = search["resource_type"] == "Patient"
            && search["params"].get("birthdate").is_none()
            && search["params"]["name"] != "Stafford Peter";
        if finds_near_miss {
            assert_eq!(bodies[0]["total"], 1, "{search}: {}", bodies[0]);
            assert_eq!(bodies[0]["entry"][0]["resource"]["birthDate"], "1932-12-29", "{search}");
        } else {
            assert_eq!(bodies[0]["total"], 0, "{search}: {}", bodies[0]);
        }
        assert_eq!(grade["success"], want, "{instance} {search}: {grade}");
        if !want {
            let search_node = grade["nodes"]
                .as_array()
                .unwrap()
                .iter()
                .find(|n| n["class"] == "sensing")
                .unwrap_or_else(|| panic!("a search node fails as sensing: {grade}"));
            assert_eq!(search_node["verdict"], "failed", "{grade}");
            assert!(
                search_node["reasons"].to_string().contains("never shown the result of"),
                "{search_node}"
            );
        }
    }
}
