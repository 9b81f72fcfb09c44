//! The command line: bad flags and config files fail with a message naming the bad value,
//! and a non-zero exit, before anything starts.

use std::process::Command;

fn run(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_emrgym")).args(args).output().unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn bad_serve_flags_name_the_value() {
    let dir = tempfile::tempdir().unwrap();
    let unknown_key = dir.path().join("bad.json");
    std::fs::write(&unknown_key, r#"{"cohort": "demo", "colour": "blue"}"#).unwrap();
    let missing = dir.path().join("missing.json");
    let cases: Vec<(Vec<String>, &str)> = vec![
        (
            vec!["serve".into(), "--cohort".into(), "nope-xyz".into(), "--port".into(), "0".into()],
            "'nope-xyz'",
        ),
        (
            vec!["serve".into(), "--now".into(), "yesterday".into(), "--port".into(), "0".into()],
            "'yesterday'",
        ),
        (vec!["serve".into(), "--body-limit".into(), "0".into()], "--body-limit"),
        (vec!["serve".into(), "--token".into(), "".into()], "--token"),
        (
            vec!["serve".into(), "--max-episodes-per-instance".into(), "0".into()],
            "--max-episodes-per-instance",
        ),
        (
            vec!["serve".into(), "--allow-origin".into(), "evil.example".into()],
            "--allow-origin 'evil.example'",
        ),
        (vec!["serve".into(), "--agent-feedback".into(), "grade".into()], "'grade'"),
        (
            vec!["serve".into(), "--config".into(), missing.display().to_string()],
            "missing.json",
        ),
        (vec!["serve".into(), "--config".into(), unknown_key.display().to_string()], "colour"),
        (vec!["serve".into(), "--port".into(), "99999".into()], "99999"),
        (vec!["bench".into(), "--patients".into(), "0".into()], "--patients"),
    ];
    for (args, needle) in cases {
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        let (ok, err) = run(&a);
        assert!(!ok, "{args:?} should fail");
        assert!(err.contains(needle), "{args:?}: expected '{needle}' in: {err}");
    }
}

#[test]
fn runs_are_deterministic_shardable_and_checked() {
    let dir = tempfile::tempdir().unwrap();
    let bin = env!("CARGO_BIN_EXE_emrgym");
    let suite = concat!(env!("CARGO_MANIFEST_DIR"), "/scenarios");
    let run = |extra: &[&str], out: &std::path::Path| {
        Command::new(bin)
            .args(["run", "--agent", "oracle", "--suite", suite, "--trials", "2"])
            .args(extra)
            .arg("--out")
            .arg(out)
            .output()
            .unwrap()
    };
    let full = dir.path().join("full");
    let o = run(&[], &full);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.contains("success   100.0%") && text.contains("pass^2"), "{text}");
    // same bytes again, whatever the concurrency
    let again = dir.path().join("again");
    assert!(run(&["--concurrency", "1"], &again).status.success());
    for f in ["results.jsonl", "summary.json"] {
        assert!(
            std::fs::read(full.join(f)).unwrap() == std::fs::read(again.join(f)).unwrap(),
            "{f} differs"
        );
    }
    let t = "trajectories/mab-k-005.1.jsonl";
    assert_eq!(std::fs::read(full.join(t)).unwrap(), std::fs::read(again.join(t)).unwrap());
    // shards merge into the full run
    let s1 = dir.path().join("s1");
    let s2 = dir.path().join("s2");
    assert!(run(&["--shard", "1/2"], &s1).status.success());
    assert!(run(&["--shard", "2/2"], &s2).status.success());
    let merged = dir.path().join("merged");
    let o = Command::new(bin)
        .arg("merge")
        .arg(&s1)
        .arg(&s2)
        .arg("--out")
        .arg(&merged)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(
        std::fs::read(full.join("results.jsonl")).unwrap(),
        std::fs::read(merged.join("results.jsonl")).unwrap()
    );
    assert!(
        std::fs::read(full.join("summary.json")).unwrap() == std::fs::read(merged.join("summary.json")).unwrap(),
        "merged summary differs"
    );
    // shards of different configurations do not merge
    let other = dir.path().join("other");
    assert!(
        Command::new(bin)
            .args(["run", "--suite", suite, "--agent", "null", "--shard", "1/2", "--out"])
            .arg(&other)
            .output()
            .unwrap()
            .status
            .success()
    );
    let o = Command::new(bin)
        .arg("merge")
        .arg(&s1)
        .arg(&other)
        .arg("--out")
        .arg(dir.path().join("bad"))
        .output()
        .unwrap();
    assert!(!o.status.success() && String::from_utf8_lossy(&o.stderr).contains("another configuration"));
    // bad flags name the value; an existing run is not overwritten
    for (args, needle) in [
        (vec!["run", "--trials", "0"], "--trials"),
        (vec!["run", "--shard", "3/2"], "'3/2'"),
        (vec!["run", "--model", "missing.gguf"], "missing.gguf"),
        (vec!["run", "--model", "openai:gpt"], "'gpt'"),
        (vec!["run", "--model", "gpt-9"], "'gpt-9'"),
        (vec!["run", "--model", "openai:m@http://127.0.0.1:9", "--threads", "2"], "--threads"),
        (vec!["run", "--threads", "0"], "--threads"),
        (vec!["run", "--family", "nope"], "'nope'"),
        (vec!["run", "--timeout=0"], "--timeout"),
    ] {
        let o = Command::new(bin)
            .args(&args)
            .args(["--suite", suite, "--out"])
            .arg(dir.path().join("x"))
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success() && err.contains(needle), "{args:?}: {err}");
    }
    let o = run(&[], &full);
    assert!(!o.status.success() && String::from_utf8_lossy(&o.stderr).contains("--resume"));
}

#[test]
fn named_suites_are_current_exist_and_select_their_instances() {
    let scenarios = std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/scenarios"));
    // the files are what the generator makes now (regenerate: emrgym scenarios suites --write)
    assert_eq!(emrgym_engine::suites::stale(scenarios).unwrap(), Vec::<String>::new());
    let all: std::collections::BTreeMap<String, String> = {
        let ws = emrgym_engine::episode::Workspace::open(scenarios).unwrap();
        ws.suite.instances().unwrap().into_iter().map(|i| (i.id, i.family)).collect()
    };
    let families: std::collections::BTreeSet<&String> = all.values().collect();
    assert_eq!(emrgym_engine::suites::names(scenarios), vec!["full", "horizon", "mab", "quick"]);
    for name in ["quick", "mab", "horizon"] {
        let s = emrgym_engine::suites::load(scenarios, name).unwrap().unwrap();
        assert!(!s.instances.is_empty(), "{name}");
        for id in &s.instances {
            assert!(all.contains_key(id), "suite {name}: '{id}' is not an instance");
        }
        assert!(s.instances.windows(2).all(|w| w[0] < w[1]), "{name}: sorted, no duplicates");
    }
    let quick = emrgym_engine::suites::load(scenarios, "quick").unwrap().unwrap();
    assert!(quick.instances.len() <= 45, "quick has {} instances", quick.instances.len());
    let in_quick: std::collections::BTreeSet<&String> = quick.instances.iter().map(|i| &all[i]).collect();
    for f in &families {
        assert_eq!(in_quick.contains(f), !f.starts_with("horizon_"), "quick and family {f}");
    }
    let mab = emrgym_engine::suites::load(scenarios, "mab").unwrap().unwrap();
    let mab_kinds: std::collections::BTreeSet<&String> = mab.instances.iter().map(|i| &all[i]).collect();
    assert_eq!(mab_kinds.len(), 10, "MedAgentBench's 10 kinds: {mab_kinds:?}");
    assert_eq!(mab.instances.len(), all.values().filter(|f| f.starts_with("mab_")).count());
    assert!(
        emrgym_engine::suites::load(scenarios, "full").unwrap().is_none(),
        "full is every instance"
    );

    // `run --suite quick` runs exactly those instances
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("quick");
    let o = Command::new(env!("CARGO_BIN_EXE_emrgym"))
        .args(["run", "--agent", "oracle", "--scenarios"])
        .arg(scenarios)
        .args(["--suite", "quick", "--out"])
        .arg(&out)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let ran: Vec<String> = std::fs::read_to_string(out.join("results.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["instance"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(ran, quick.instances);
    let manifest: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest["config"]["suite_name"], "quick");

    // a bad name is an error naming it and the valid ones, before anything is written
    let bad = dir.path().join("bad");
    let (ok, err) = run(&[
        "run",
        "--agent",
        "oracle",
        "--scenarios",
        scenarios.to_str().unwrap(),
        "--suite",
        "quik",
        "--out",
        bad.to_str().unwrap(),
    ]);
    assert!(!ok);
    assert!(
        err.contains("unknown suite 'quik'; valid suites: full, horizon, mab, quick"),
        "{err}"
    );
    assert!(!bad.exists());
    // a suite listing an instance that does not exist
    let copy = dir.path().join("scenarios");
    std::fs::create_dir_all(copy.join("suites")).unwrap();
    for e in std::fs::read_dir(scenarios).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "json") {
            std::fs::copy(&p, copy.join(p.file_name().unwrap())).unwrap();
        }
    }
    for sub in ["htn", "keys"] {
        let from = scenarios.join(sub);
        std::fs::create_dir_all(copy.join(sub)).unwrap();
        for e in std::fs::read_dir(&from).unwrap() {
            let p = e.unwrap().path();
            if p.is_file() {
                std::fs::copy(&p, copy.join(sub).join(p.file_name().unwrap())).unwrap();
            }
        }
    }
    std::fs::write(
        copy.join("suites/mine.json"),
        r#"{"format_version": 1, "name": "mine", "description": "d", "rule": "r", "instances": ["mab-age-001", "mab-age-999"]}"#,
    )
    .unwrap();
    let (ok, err) = run(&[
        "run",
        "--agent",
        "oracle",
        "--scenarios",
        copy.to_str().unwrap(),
        "--suite",
        "mine",
        "--out",
        bad.to_str().unwrap(),
    ]);
    assert!(!ok);
    assert!(err.contains("suite 'mine' lists instance 'mab-age-999'"), "{err}");
    assert!(!bad.exists());
}

/// Families without a goal instruction, with the reason docs/suite.md gives ("The goal
/// condition"); every other family must have a goal.
const NO_GOAL: [(&str, &str); 7] = [
    ("admission_med_review", "its key is the protocol's own hold parameters"),
    ("horizon_mrn_16", "a synthetic chain of lookups"),
    ("horizon_mrn_2", "a synthetic chain of lookups"),
    ("horizon_mrn_32", "a synthetic chain of lookups"),
    ("horizon_mrn_4", "a synthetic chain of lookups"),
    ("horizon_mrn_8", "a synthetic chain of lookups"),
    ("unsolvable_no_order_tool", "not a clinical procedure"),
];

#[test]
fn the_goal_condition_shows_the_goal_and_grades_the_same() {
    let scenarios = std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/scenarios"));
    let ws = emrgym_engine::episode::Workspace::open(scenarios).unwrap();
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/suite.md")).unwrap();
    // every family has a goal (citing its guideline) or is on the list, and docs/suite.md says which
    for (_, _, f) in &ws.suite.families {
        let listed = NO_GOAL.iter().find(|(n, _)| *n == f.family);
        let row = doc
            .lines()
            .find(|l| l.starts_with(&format!("| `{}` | yes |", f.family)) || l.starts_with(&format!("| `{}` | no |", f.family)))
            .unwrap_or_else(|| panic!("docs/suite.md has no goal row for {}", f.family));
        match (&f.goal, listed) {
            (Some(g), None) => {
                assert!(!g.guideline.trim().is_empty() && !g.instruction.trim().is_empty(), "{}", f.family);
                assert!(
                    row.starts_with(&format!("| `{}` | yes | {} |", f.family, g.guideline)),
                    "docs/suite.md: the goal row of {} must cite its guideline as the family does: {row}",
                    f.family
                );
            }
            (None, Some((_, why))) => assert!(row.starts_with(&format!("| `{}` | no |", f.family)) && row.contains(why), "{row}"),
            (Some(_), Some(_)) => panic!("{} has a goal but is listed as having none", f.family),
            (None, None) => panic!("{} has no goal: give it one or list it in NO_GOAL and docs/suite.md", f.family),
        }
    }
    for (n, _) in NO_GOAL {
        assert!(
            ws.suite.families.iter().any(|(_, _, f)| f.family == n),
            "NO_GOAL lists {n}, which is not a family"
        );
    }

    // `run --mode goal --suite quick` with the oracle: every instance with a goal, and only those,
    // graded as in flat mode (the oracle ignores the text), the header recording mode and goal text
    let goals: std::collections::BTreeMap<String, emrgym_scenario::Instance> =
        ws.suite.instances().unwrap().into_iter().map(|i| (i.id.clone(), i)).collect();
    let quick = emrgym_engine::suites::load(scenarios, "quick").unwrap().unwrap();
    let want: Vec<&String> = quick.instances.iter().filter(|id| goals[*id].goal.is_some()).collect();
    assert!(
        want.len() < quick.instances.len() && !want.is_empty(),
        "quick has instances with and without a goal"
    );
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("goal");
    let o = Command::new(env!("CARGO_BIN_EXE_emrgym"))
        .args(["run", "--agent", "oracle", "--mode", "goal", "--suite", "quick", "--scenarios"])
        .arg(scenarios)
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{stderr}");
    assert!(
        stderr.contains("skipping") && stderr.contains("without a goal instruction") && stderr.contains("admission_med_review"),
        "the instances left out are logged: {stderr}"
    );
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(out.join("results.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let ran: Vec<&str> = lines.iter().map(|l| l["instance"].as_str().unwrap()).collect();
    assert_eq!(ran, want.iter().map(|s| s.as_str()).collect::<Vec<_>>());
    for l in &lines {
        assert_eq!(l["success"], true, "{l}");
        let id = l["instance"].as_str().unwrap();
        let t = emrgym_scenario::trajectory::file::read(&emrgym_engine::rundir::trajectory_path(&out, id, 0)).unwrap();
        let g = goals[id].goal.as_ref().unwrap();
        assert_eq!(t.header.mode, "goal");
        let shown = if g.context.trim().is_empty() {
            g.instruction.clone()
        } else {
            format!("{}\n\nContext: {}", g.instruction, g.context)
        };
        assert_eq!(t.header.instruction, shown, "{id}: the header records the goal the agent read");
    }
    let manifest: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest["config"]["mode"], "goal");

    // naming an instance or a family without a goal fails, naming it, before anything is written
    let bad = dir.path().join("bad");
    let (ok, err) = run(&[
        "run",
        "--agent",
        "oracle",
        "--mode",
        "goal",
        "--scenarios",
        scenarios.to_str().unwrap(),
        "--instance",
        "horizon-2-001",
        "--out",
        bad.to_str().unwrap(),
    ]);
    assert!(!ok);
    assert!(err.contains("'horizon-2-001'") && err.contains("no goal instruction"), "{err}");
    let (ok, err) = run(&[
        "run",
        "--agent",
        "oracle",
        "--mode",
        "goal",
        "--scenarios",
        scenarios.to_str().unwrap(),
        "--family",
        "admission_med_review",
        "--out",
        bad.to_str().unwrap(),
    ]);
    assert!(!ok);
    assert!(
        err.contains("'admission_med_review'") && err.contains("no goal instruction"),
        "{err}"
    );
    assert!(!bad.exists());
}

/// The outline condition: the task network written out at the start. Two instances of one
/// family whose records take different branches get the same outline (nothing is read from
/// the record), which lists every case with its rule; the oracle passes in outline mode as in
/// flat, and the header records the text the agent read.
#[test]
fn the_outline_condition_lists_every_case_reads_nothing_from_the_record_and_grades_the_same() {
    let scenarios = concat!(env!("CARGO_MANIFEST_DIR"), "/scenarios");
    let prompt = |id: &str, mode: &str| -> String {
        let o = Command::new(env!("CARGO_BIN_EXE_emrgym"))
            .args(["scenarios", "prompt", id, "--mode", mode, "--suite", scenarios])
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8(o.stdout).unwrap()
    };
    // mab-k-003 needs no order (potassium normal), mab-k-005 a repletion
    let normal = prompt("mab-k-003", "outline");
    let replete = prompt("mab-k-005", "outline");
    let procedure = |p: &str| p[p.find("The procedure, all of it").expect("the outline follows the context")..].to_string();
    assert_eq!(
        procedure(&normal).replace("S2874099", "PATIENT"),
        procedure(&replete).replace("S3241217", "PATIENT"),
        "the outline does not depend on the record"
    );
    for case in [
        "- No potassium on file: order nothing.",
        "- K >= 3.5 mmol/L: no repletion, no recheck.",
        "- K < 3.5: 10 mEq oral KCl per 0.1 below 3.5",
        "1. Find the most recent serum potassium (code K) of patient S2874099",
        "Order Potassium chloride oral (NDC 40032-917-01) for patient S2874099",
    ] {
        assert!(normal.contains(case), "{case}: {normal}");
    }
    // a step whose text needs a value from the record names it instead
    assert!(prompt("metformin-renal-001", "outline").contains("Stop the active order [med] (set its status to stopped)."));
    // flat has the instruction only; guided the planner's first step; the outline is not in either
    let flat = prompt("mab-k-003", "flat");
    let guided = prompt("mab-k-003", "guided");
    assert!(!flat.contains("The procedure, all of it") && !guided.contains("The procedure, all of it"));
    assert!(normal.starts_with(flat.trim_end()), "the outline comes after the flat task");
    assert!(guided.contains("Next step: Find the most recent serum potassium"), "{guided}");
    // bad input names itself
    let (ok, err) = run(&["scenarios", "prompt", "mab-k-999", "--suite", scenarios]);
    assert!(!ok && err.contains("'mab-k-999'"), "{err}");
    let (ok, err) = run(&["scenarios", "prompt", "horizon-2-001", "--mode", "goal", "--suite", scenarios]);
    assert!(!ok && err.contains("--mode goal") && err.contains("no goal instruction"), "{err}");

    // the oracle in outline mode: every instance passes, as in flat; the header holds the outline
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("outline");
    let (ok, err) = run(&[
        "run",
        "--agent",
        "oracle",
        "--mode",
        "outline",
        "--scenarios",
        scenarios,
        "--family",
        "mab_k_replete",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(out.join("results.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(lines.len() >= 6, "{lines:?}");
    for l in &lines {
        assert_eq!(l["success"], true, "{l}");
        let id = l["instance"].as_str().unwrap();
        let t = emrgym_scenario::trajectory::file::read(&emrgym_engine::rundir::trajectory_path(&out, id, 0)).unwrap();
        assert_eq!(t.header.mode, "outline");
        assert!(
            t.header.instruction.contains("The procedure, all of it") && t.header.instruction.contains("- K < 3.5"),
            "{id}: {}",
            t.header.instruction
        );
    }
    let manifest: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest["config"]["mode"], "outline");

    // a task network that cannot be written out (an argument that is a type error before
    // anything is read) fails the run naming the instance and the step, before anything is
    // written: no run directory to resume or clean up
    let broken = dir.path().join("broken");
    crate::common::copy_dir(std::path::Path::new(scenarios), &broken);
    let admin = broken.join("htn/admin.json");
    let mut lib: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&admin).unwrap()).unwrap();
    let done = &mut lib["tasks"]["patient_age"]["methods"][0]["subtasks"][1];
    assert_eq!(done["id"], "done");
    done["args"]["answer"]["expr"] = "'a' - 1".into();
    std::fs::write(&admin, serde_json::to_string_pretty(&lib).unwrap()).unwrap();
    let out = dir.path().join("broken-run");
    let args = [
        "--mode",
        "outline",
        "--suite",
        broken.to_str().unwrap(),
        "--instance",
        "mab-age-001",
    ];
    let (ok, err) = run(&[&["run", "--agent", "oracle", "--out", out.to_str().unwrap()][..], &args[..]].concat());
    assert!(!ok, "{err}");
    assert!(
        err.contains("'mab-age-001'") && err.contains("cannot be written out as an outline") && err.contains("subtask 'done'"),
        "{err}"
    );
    assert!(!out.exists(), "nothing is written for a run that cannot start");
    let (ok, err) = run(&[&["scenarios", "prompt", "mab-age-001"][..], &args[..4]].concat());
    assert!(!ok && err.contains("--mode outline") && err.contains("'mab-age-001'"), "{err}");
}

#[tokio::test]
async fn the_episode_api_shows_the_goal_in_goal_mode_and_refuses_families_without_one() {
    let dir = tempfile::tempdir().unwrap();
    let record = dir.path().join("rec");
    let (s, _) = crate::common::episode_server(&record, Some("s3cret"), emrgym_engine::episodes::Limits::default());
    let auth = [("authorization", "Bearer s3cret")];
    let inst = emrgym_engine::scenarios::instances(std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/scenarios")))
        .unwrap()
        .into_iter()
        .find(|i| i.id == "metformin-renal-001")
        .unwrap();
    let goal = inst.goal.clone().unwrap();
    let body = serde_json::json!({"instance": "metformin-renal-001", "mode": "goal"}).to_string();
    let ep = s.req("POST", "/episodes", Some(&body), &auth).await;
    assert_eq!(ep.status.as_u16(), 201, "{}", ep.body);
    assert_eq!(ep.body["mode"], "goal");
    assert_eq!(ep.body["instruction"], goal.instruction.as_str());
    assert_eq!(ep.body["context"], goal.context.as_str());
    let prompt = ep.body["prompt"].as_str().unwrap();
    assert!(
        prompt.contains(&goal.instruction) && !prompt.contains(&inst.instruction),
        "{prompt}"
    );
    let id = ep.body["id"].as_str().unwrap().to_string();
    let ended = s.req("DELETE", &format!("/episodes/{id}"), None, &auth).await;
    assert_eq!(ended.status.as_u16(), 200, "{}", ended.body);
    let t = emrgym_scenario::trajectory::file::read(&record.join("trajectories/metformin-renal-001.0.jsonl")).unwrap();
    assert_eq!(t.header.mode, "goal");
    assert_eq!(t.header.instruction, format!("{}\n\nContext: {}", goal.instruction, goal.context));

    // a family without a goal: refused, naming the instance; a bad mode names the four
    let body = serde_json::json!({"instance": "med-review-001", "mode": "goal"}).to_string();
    let r = s.req("POST", "/episodes", Some(&body), &auth).await;
    assert_eq!(r.status.as_u16(), 400, "{}", r.body);
    assert!(
        r.diag().contains("'med-review-001'") && r.diag().contains("no goal instruction"),
        "{}",
        r.diag()
    );
    let init = serde_json::json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "0"}}})
    .to_string();
    let op = [
        ("authorization", "Bearer s3cret"),
        ("accept", "application/json, text/event-stream"),
        ("content-type", "application/json"),
        ("host", "127.0.0.1"),
    ];
    let r = s.req("POST", "/mcp?instance=med-review-001&mode=goal", Some(&init), &op).await;
    assert_eq!(r.status.as_u16(), 400, "{}", r.body);
    assert!(
        r.diag().contains("'med-review-001'") && r.diag().contains("no goal instruction"),
        "{}",
        r.diag()
    );
    let r = s.req("POST", "/mcp?mode=odd", Some(&init), &op).await;
    assert!(r.diag().contains("not flat, guided, goal or outline"), "{}", r.diag());
}

#[test]
fn emrgym_mcp_in_goal_mode_refuses_an_instance_without_a_goal_before_recording() {
    let dir = tempfile::tempdir().unwrap();
    let record = dir.path().join("rec");
    let rec = record.to_str().unwrap();
    // admission_med_review has no goal (docs/suite.md, The goal condition)
    let (ok, err) = run(&["mcp", "--mode", "goal", "--scenario", "med-review-001", "--record", rec]);
    assert!(!ok, "refused");
    assert!(
        err.contains("--mode goal") && err.contains("med-review-001") && err.contains("no goal instruction"),
        "{err}"
    );
    assert!(
        !record.join("manifest.json").exists() && !record.join("results.jsonl").exists(),
        "nothing recorded"
    );
}

/// `scripts/results.sh` with the reference agents: every run directory, the leaderboard, the
/// machine and the wall times; run again, it resumes and changes no result.
#[test]
fn the_results_script_runs_the_matrix_and_resumes() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("r");
    let script = |models: &str, modes: &str| {
        let o = std::process::Command::new("bash")
            .arg(root.join("scripts/results.sh"))
            .env("MODELS", models)
            .env("SUITES", "quick")
            .env("MODES", modes)
            .env("TRIALS", "1")
            .env("OUT", &out)
            .env("EMRGYM", env!("CARGO_BIN_EXE_emrgym"))
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&o.stderr).into_owned();
        assert!(o.status.success(), "{stderr}");
        stderr
    };
    script("oracle null", "flat goal");
    let runs = ["oracle-quick-flat", "oracle-quick-goal", "null-quick-flat", "null-quick-goal"];
    let results = |r: &str| std::fs::read(out.join(r).join("results.jsonl")).unwrap();
    let first: Vec<Vec<u8>> = runs.iter().map(|r| results(r)).collect();
    let md = std::fs::read_to_string(out.join("leaderboard.md")).unwrap();
    for row in [
        "| oracle | flat | quick | 44 | 100.0%",
        "| oracle | goal | quick | 42 | 100.0%",
        "| null | flat | quick | 44 | 0.0%",
        "| null | goal | quick | 42 | 0.0%",
    ] {
        assert!(md.contains(row), "{row}: {md}");
    }
    assert!(std::fs::read_to_string(out.join("leaderboard.html")).unwrap().contains("<table>"));
    let machine = std::fs::read_to_string(out.join("MACHINE.md")).unwrap();
    assert!(
        machine.contains("cores") && machine.contains("- GPU:") && machine.contains("MODELS=\"oracle null\""),
        "{machine}"
    );
    let times = std::fs::read_to_string(out.join("walltime.tsv")).unwrap();
    assert_eq!(times.lines().count(), 1 + runs.len(), "{times}");
    // again: every run is resumed, nothing is run twice, no result changes
    let stderr = script("oracle null", "flat goal");
    assert_eq!(stderr.matches("resuming").count(), runs.len(), "{stderr}");
    for (r, before) in runs.iter().zip(&first) {
        assert_eq!(&results(r), before, "{r} changed on resume");
    }
    assert_eq!(
        std::fs::read_to_string(out.join("walltime.tsv")).unwrap().lines().count(),
        1 + 2 * runs.len()
    );
    assert_eq!(std::fs::read_to_string(out.join("MACHINE.md")).unwrap().matches("## ").count(), 2);
    // another invocation into the same OUT (another mode): the leaderboard holds the rows of
    // both, not only the last invocation's
    script("oracle", "guided");
    let md = std::fs::read_to_string(out.join("leaderboard.md")).unwrap();
    for row in [
        "| oracle | guided | quick | 44 | 100.0%",
        "| oracle | flat | quick | 44 | 100.0%",
        "| null | goal | quick | 42 | 0.0%",
    ] {
        assert!(md.contains(row), "{row}: {md}");
    }
}

/// `scripts/speed-vs-build.sh` (episodes per hour of this build against an earlier one), with
/// the oracle and this binary standing for both builds: the sample is evenly spaced over the
/// suite, both runs and the table are written, a second invocation measures nothing again, a
/// table that cannot be built (a run without its wall time, runs of different instances) is
/// refused and the last one kept, and a bad sample size or suite is named.
#[test]
fn the_speed_script_measures_both_builds_on_an_even_sample() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("speed");
    let script = |sample: &str, suite: &str| {
        std::process::Command::new("bash")
            .arg(root.join("scripts/speed-vs-build.sh"))
            .arg("HEAD")
            .arg(&out)
            .env("AGENT", "oracle")
            .env("SAMPLE", sample)
            .env("SUITE", suite)
            .env("EMRGYM", env!("CARGO_BIN_EXE_emrgym"))
            .env("BASE_EMRGYM", env!("CARGO_BIN_EXE_emrgym"))
            .output()
            .unwrap()
    };
    let o = script("3", "quick");
    let stderr = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(o.status.success(), "{stderr}");
    let quick: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(root.join("scenarios/suites/quick.json")).unwrap()).unwrap();
    let ids: Vec<&str> = quick["instances"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
    let picked: Vec<&str> = (0..3).map(|i| ids[i * ids.len() / 3]).collect();
    let table = std::fs::read_to_string(out.join("speed.md")).unwrap();
    assert!(table.starts_with(&format!("3 instances: {}\n", picked.join(", "))), "{table}");
    for id in &picked {
        assert!(table.contains(&format!("| {id} | finished, ")), "{id}: {table}");
    }
    assert_eq!(table.matches("| pass, 1.00 |").count(), 6, "{table}");
    assert_eq!(table.matches("| yes |").count(), 3, "{table}");
    assert!(
        table.contains("| base | HEAD | emrgym ") && table.contains("| current | this checkout | emrgym "),
        "{table}"
    );
    assert_eq!(table.matches("| 3/3 | 1.000 |").count(), 2, "{table}");
    for run in ["base", "current"] {
        let results = std::fs::read_to_string(out.join(run).join("results.jsonl")).unwrap();
        assert_eq!(results.lines().count(), 3, "{run}: {results}");
    }
    let times = std::fs::read_to_string(out.join("walltime.tsv")).unwrap();
    // again: nothing is measured twice, the table is rebuilt from what is there
    let o = script("3", "quick");
    let stderr = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(o.status.success(), "{stderr}");
    assert_eq!(stderr.matches("already measured").count(), 2, "{stderr}");
    assert_eq!(std::fs::read_to_string(out.join("walltime.tsv")).unwrap(), times);
    assert_eq!(std::fs::read_to_string(out.join("speed.md")).unwrap(), table);
    // the table is refused, and the last one kept, when a run has no wall time (it did not
    // finish) or the two runs hold different instances
    let table_script = || {
        let o = std::process::Command::new("python3")
            .arg(root.join("scripts/speed-table.py"))
            .arg(&out)
            .output()
            .unwrap();
        (
            o.status.success(),
            o.stdout.is_empty(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    };
    let only_base: String = times
        .lines()
        .filter(|l| l.starts_with("base\t"))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(out.join("walltime.tsv"), only_base).unwrap();
    let (ok, silent, err) = table_script();
    assert!(!ok && silent && err.contains("no wall time for current"), "{err}");
    std::fs::write(out.join("walltime.tsv"), &times).unwrap();
    let results = out.join("current").join("results.jsonl");
    let whole = std::fs::read_to_string(&results).unwrap();
    let fewer: String = whole.lines().skip(1).map(|l| format!("{l}\n")).collect();
    std::fs::write(&results, fewer).unwrap();
    let (ok, silent, err) = table_script();
    assert!(!ok && silent && err.contains("the runs hold different instances"), "{err}");
    // through the script (both runs measured): it fails, and its last table is left as it was
    let o = script("3", "quick");
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(!o.status.success() && err.contains("the runs hold different instances"), "{err}");
    assert_eq!(std::fs::read_to_string(out.join("speed.md")).unwrap(), table);
    assert!(!out.join("speed.md.new").exists());
    std::fs::write(&results, whole).unwrap();
    // a bad sample size, an unknown suite
    let o = script("0", "quick");
    assert!(!o.status.success());
    let want = format!("SAMPLE must be 1 to {} (got 0)", ids.len());
    assert!(String::from_utf8_lossy(&o.stderr).contains(&want));
    let o = script("3", "nosuch");
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("no suite nosuch"));
}

/// Resuming an in-process model's run with another `--concurrency` is refused (its sequences
/// decoded together shape its results), naming both numbers; the recorded one resumes.
#[test]
fn resuming_an_in_process_run_with_another_concurrency_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let bin = env!("CARGO_BIN_EXE_emrgym");
    let scenarios = concat!(env!("CARGO_MANIFEST_DIR"), "/scenarios");
    let o = std::process::Command::new(bin)
        .args([
            "run",
            "--agent",
            "oracle",
            "--instance",
            "mab-age-001",
            "--scenarios",
            scenarios,
            "--out",
        ])
        .arg(&run)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // the same directory as if an in-process model with 2 sequences had written it
    let path = run.join("manifest.json");
    let mut m: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    m["config"]["agent"] = "model".into();
    m["config"]["model"] = serde_json::json!({"backend": "llama", "model_path": "/nowhere/m.gguf", "parallel": 2});
    std::fs::write(&path, serde_json::to_string_pretty(&m).unwrap()).unwrap();
    let before = std::fs::read(run.join("results.jsonl")).unwrap();
    let o = std::process::Command::new(bin)
        .args(["run", "--concurrency", "4", "--resume"])
        .arg(&run)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "{stderr}");
    assert!(
        stderr.contains("--concurrency 4") && stderr.contains("decodes 2 episodes together"),
        "{stderr}"
    );
    assert_eq!(std::fs::read(run.join("results.jsonl")).unwrap(), before, "nothing was touched");
}

/// The new numbers of the in-process model are checked where they are given, each error
/// naming the bad value: `--concurrency` beyond the sequences one context may hold, and a
/// `--variants` entry of `bench --llama-runs` with a bad parallel field (both before any
/// model is loaded).
#[test]
fn bad_sequence_counts_are_named() {
    let bin = env!("CARGO_BIN_EXE_emrgym");
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let o = std::process::Command::new(bin)
        .args(["run", "--model", "smollm2-135m", "--concurrency", "65", "--out"])
        .arg(&out)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("--concurrency 65") && err.contains("at most 64"),
        "{err}"
    );
    assert!(!out.exists(), "nothing was written");
    for (variants, named) in [
        ("prefix:1:0", "parallel '0'"),
        ("prefix:1:x", "parallel 'x'"),
        ("prefix:1:2:3", "'prefix:1:2:3'"),
    ] {
        let o = std::process::Command::new(bin)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .args(["bench", "--llama-runs", "smollm2-135m", "--variants", variants])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success() && err.contains(named), "{variants}: {err}");
    }
}

/// A run records the build that started it (`emrgym --version`). Resuming it with another
/// build is refused, naming both builds, and touches nothing, since one run's episodes must
/// come from one build's behaviour; `--allow-other-build` resumes it and the manifest records
/// the second build. A run with nothing left to run resumes under any build (nothing mixes).
/// A changed tool catalogue is refused even with the flag.
#[test]
fn resuming_with_another_build_is_refused_unless_allowed_and_then_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let run_dir = dir.path().join("run");
    let bin = env!("CARGO_BIN_EXE_emrgym");
    let scenarios = concat!(env!("CARGO_MANIFEST_DIR"), "/scenarios");
    let emrgym = |args: &[&str]| {
        let o = Command::new(bin).args(args).output().unwrap();
        (
            o.status.success(),
            String::from_utf8_lossy(&o.stdout).into_owned(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    };
    let (ok, version, _) = emrgym(&["--version"]);
    assert!(ok);
    // "emrgym 0.1.0 (build 0123456789ab)" or "(build 0123456789ab+dirty.0123456789ab)"
    let build = version
        .trim()
        .split("(build ")
        .nth(1)
        .and_then(|b| b.strip_suffix(')'))
        .unwrap()
        .to_string();
    assert!(!build.is_empty() && !build.contains(' '), "{version}");
    let path = run_dir.to_str().unwrap();
    let (ok, _, err) = emrgym(&[
        "run",
        "--agent",
        "oracle",
        "--instance",
        "mab-age-001",
        "--instance",
        "mab-age-002",
        "--scenarios",
        scenarios,
        "--out",
        path,
    ]);
    assert!(ok, "{err}");
    // stderr is no terminal here: a progress line per episode (at most one per 10 s), the last always
    assert!(
        err.lines().any(|l| l.starts_with("[    2/2] mab-age-00") && l.contains("ETA")),
        "{err}"
    );
    let manifest = run_dir.join("manifest.json");
    let read = || -> serde_json::Value { serde_json::from_str(&std::fs::read_to_string(&manifest).unwrap()).unwrap() };
    let mut m = read();
    assert_eq!(m["build"], build.as_str(), "the manifest records the build");
    assert!(m.get("resumed_by_other_builds").is_none());
    // as if another build had started it
    m["build"] = "000000000000".into();
    std::fs::write(&manifest, serde_json::to_string_pretty(&m).unwrap()).unwrap();
    let other = std::fs::read(&manifest).unwrap();
    // whole: resuming runs nothing, so any build may
    let (ok, _, err) = emrgym(&["run", "--resume", path]);
    assert!(ok, "{err}");
    assert_eq!(
        std::fs::read(&manifest).unwrap(),
        other,
        "a resume that ran nothing records no build"
    );
    // one episode left to run
    let results = run_dir.join("results.jsonl");
    let whole = std::fs::read_to_string(&results).unwrap();
    let first = format!("{}\n", whole.lines().next().unwrap());
    assert!(first.contains("mab-age-001"), "{first}");
    std::fs::write(&results, &first).unwrap();
    let (ok, _, err) = emrgym(&["run", "--resume", path]);
    assert!(!ok, "another build resumed the run");
    assert!(
        err.contains("started by build 000000000000")
            && err.contains(&format!("this is build {build}"))
            && err.contains("--allow-other-build"),
        "{err}"
    );
    assert_eq!(
        std::fs::read_to_string(&results).unwrap(),
        first,
        "the refused resume touched the results"
    );
    assert_eq!(std::fs::read(&manifest).unwrap(), other, "the refused resume touched the manifest");
    // the flag without --resume is a usage error
    let (ok, _, err) = emrgym(&["run", "--agent", "oracle", "--allow-other-build"]);
    assert!(!ok && err.contains("--resume"), "{err}");
    // a changed tool catalogue is refused even with the flag
    let mut tools = read();
    tools["tool_catalogue_sha256"] = "00".into();
    std::fs::write(&manifest, serde_json::to_string_pretty(&tools).unwrap()).unwrap();
    let (ok, _, err) = emrgym(&["run", "--resume", path, "--allow-other-build"]);
    assert!(!ok && err.contains("the tool catalogue changed"), "{err}");
    std::fs::write(&manifest, &other).unwrap();
    // allowed: it finishes, and the manifest says which builds ran it
    let (ok, _, err) = emrgym(&["run", "--resume", path, "--allow-other-build"]);
    assert!(ok, "{err}");
    assert_eq!(
        std::fs::read_to_string(&results).unwrap(),
        whole,
        "the same results as the whole run"
    );
    let m = read();
    assert_eq!(m["build"], "000000000000");
    assert_eq!(m["resumed_by_other_builds"], serde_json::json!([build]));
}

/// `scripts/build-at.sh RUN_DIR` names the binary of the build that started a run: the given
/// binary when it is that build (no worktree, no build); a run without a recorded build, or
/// one built from uncommitted changes (which git cannot rebuild), is refused with what to do
/// instead, and a commit the repository does not hold is named. `--commit C` names the binary of
/// a commit (this one when it is that build); a name that is no commit is named.
#[test]
fn build_at_names_the_binary_of_a_runs_build_or_says_why_it_cannot() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    std::fs::create_dir_all(&run).unwrap();
    // the script with these arguments: exit code, stdout, stderr
    let script = |args: &[&std::ffi::OsStr]| {
        let o = Command::new("bash")
            .arg(root.join("scripts/build-at.sh"))
            .args(args)
            .env("EMRGYM", env!("CARGO_BIN_EXE_emrgym"))
            .output()
            .unwrap();
        (
            o.status.code(),
            String::from_utf8_lossy(&o.stdout).trim().to_string(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    };
    let at = |build: Option<&str>| {
        let mut m = serde_json::json!({"format_version": 1, "emrgym_version": "0.1.0"});
        if let Some(b) = build {
            m["build"] = b.into();
        }
        std::fs::write(run.join("manifest.json"), serde_json::to_string_pretty(&m).unwrap()).unwrap();
        let (code, out, err) = script(&[run.as_os_str()]);
        (code == Some(0), out, err)
    };
    // this binary's own build
    let (ok, out, err) = at(Some(emrgym_engine::BUILD));
    if emrgym_engine::BUILD.contains("+dirty.") {
        assert!(
            !ok && err.contains("uncommitted changes") && err.contains("--allow-other-build"),
            "{err}"
        );
    } else if emrgym_engine::BUILD != "unknown" {
        assert!(ok, "{err}");
        assert_eq!(out, env!("CARGO_BIN_EXE_emrgym"));
    }
    let (ok, out, err) = at(Some("0123456789ab+dirty.00ff00ff00ff"));
    assert!(!ok && out.is_empty() && err.contains("uncommitted changes"), "{err}");
    let (ok, _, err) = at(None);
    assert!(
        !ok && err.contains("records no build") && err.contains("--allow-other-build"),
        "{err}"
    );
    let (ok, _, err) = at(Some("ffffffffffff"));
    assert!(
        !ok && err.contains("commit ffffffffffff") && err.contains("not in this repository"),
        "{err}"
    );
    let (code, _, err) = script(&[dir.path().join("none").as_os_str()]);
    assert!(code == Some(1) && err.contains("not a run directory"), "{err}");
    // `--commit C`: any commit's binary; a name that is no commit is named, a wrong use shows the usage
    let commit = |args: &[&str]| script(&args.iter().map(std::ffi::OsStr::new).collect::<Vec<_>>());
    let (code, out, err) = commit(&["--commit", "no-such-commit"]);
    assert!(
        code == Some(1) && out.is_empty() && err.contains("no-such-commit is not a commit"),
        "{err}"
    );
    let (code, _, err) = commit(&["--commit"]);
    assert!(code == Some(2) && err.contains("usage") && err.contains("--commit COMMIT"), "{err}");
    let head = Command::new("git")
        .arg("-C")
        .arg(root)
        .args(["rev-parse", "HEAD"])
        .output()
        .unwrap();
    let head = String::from_utf8_lossy(&head.stdout).trim().to_string();
    if !emrgym_engine::BUILD.contains('+') && head.starts_with(emrgym_engine::BUILD) {
        // this binary is HEAD's build: the answer, without a worktree or a build
        let (code, out, err) = commit(&["--commit", "HEAD"]);
        assert_eq!((code, out.as_str()), (Some(0), env!("CARGO_BIN_EXE_emrgym")), "{err}");
    }
}

/// `scripts/build-at.sh --commit C` when it must build: it checks the commit out in a worktree
/// beside the repository, builds it, and gives the binary only when the binary is that build.
/// Run on a small repository of its own (a crate named emrgym whose `--version` is set per
/// commit), so each case is a build of seconds: a binary that names its commit is the answer
/// (and a second call reuses the worktree); one that names another build is refused; one from
/// before builds were named is trusted only from a clean checkout of the commit, and a
/// worktree that was changed is refused.
#[test]
fn build_at_builds_a_commit_in_a_worktree_and_refuses_a_binary_that_is_not_that_build() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    std::fs::create_dir_all(repo.join("scripts")).unwrap();
    std::fs::create_dir_all(repo.join("src")).unwrap();
    std::fs::copy(root.join("scripts/build-at.sh"), repo.join("scripts/build-at.sh")).unwrap();
    let git = |args: &[&str]| {
        let o = Command::new("git")
            .arg("-C")
            .arg(&repo)
            .args(["-c", "user.name=t", "-c", "user.email=t@example.org"])
            .args(args)
            .output()
            .unwrap();
        assert!(o.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8_lossy(&o.stdout).trim().to_string()
    };
    git(&["init", "-q"]);
    std::fs::write(
        repo.join("Cargo.toml"),
        "[package]\nname = \"emrgym\"\nversion = \"0.1.0\"\nedition = \"2021\"\n",
    )
    .unwrap();
    std::fs::write(repo.join("src/main.rs"), "fn main() {}\n").unwrap();
    let lock = Command::new("cargo")
        .args(["generate-lockfile", "--offline"])
        .current_dir(&repo)
        .output()
        .unwrap();
    assert!(lock.status.success(), "{}", String::from_utf8_lossy(&lock.stderr));
    std::fs::write(repo.join(".gitignore"), "/target\n").unwrap();
    std::fs::write(
        repo.join("build.rs"),
        "fn main() {\n    let head = std::process::Command::new(\"git\").args([\"rev-parse\", \"--short=12\", \"HEAD\"]).output().unwrap();\n    println!(\"cargo:rustc-env=HEAD12={}\", String::from_utf8(head.stdout).unwrap().trim());\n}\n",
    )
    .unwrap();
    // a commit whose binary prints `version`, `{head}` in it standing for the commit it was built from
    let commit = |version: &str, message: &str| {
        let main = match version.split_once("{head}") {
            Some((a, b)) => format!("fn main() {{ println!(\"{a}{{}}{b}\", env!(\"HEAD12\")); }}\n"),
            None => format!("fn main() {{ println!(\"{version}\"); }}\n"),
        };
        std::fs::write(repo.join("src/main.rs"), main).unwrap();
        git(&["add", "-A"]);
        git(&["commit", "-q", "-m", message]);
        git(&["rev-parse", "--short=12", "HEAD"])
    };
    let named = commit("emrgym 0.1.0 (build {head})", "names its build");
    let other = commit("emrgym 0.1.0 (build 000000000000)", "names another build");
    let unnamed = commit("emrgym 0.1.0", "from before builds were named");
    let script = |c: &str| {
        let o = Command::new("bash")
            .arg(repo.join("scripts/build-at.sh"))
            .args(["--commit", c])
            .current_dir(&repo)
            .env("EMRGYM", dir.path().join("no-such-binary"))
            .env_remove("CARGO_TARGET_DIR")
            .env_remove("CARGO_BUILD_TARGET_DIR")
            .output()
            .unwrap();
        (
            o.status.code(),
            String::from_utf8_lossy(&o.stdout).trim().to_string(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    };
    let tree = |c: &str| dir.path().join(format!("emrgym-at-{c}"));
    let bin = |c: &str| tree(c).join("target/release/emrgym");

    let (code, out, err) = script(&named);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(std::path::Path::new(&out), bin(&named), "{err}");
    assert!(
        err.contains(&format!("checking out {named}")) && err.contains(&format!("building {named}")),
        "{err}"
    );
    let v = Command::new(bin(&named)).arg("--version").output().unwrap();
    assert_eq!(String::from_utf8_lossy(&v.stdout).trim(), format!("emrgym 0.1.0 (build {named})"));
    // again: the worktree is there, so it is built again in place (cargo finds nothing to do)
    let (code, out, err) = script(&named);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(std::path::Path::new(&out), bin(&named));
    assert!(!err.contains("checking out"), "{err}");

    let (code, out, err) = script(&other);
    assert_eq!(code, Some(1), "{err}");
    assert!(out.is_empty(), "no binary is given: {out}");
    assert!(
        err.contains("reports emrgym 0.1.0 (build 000000000000)") && err.contains(&format!("not build {other}")),
        "{err}"
    );

    // a version that names no build: the clean checkout of the commit is trusted
    let (code, out, err) = script(&unnamed);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(std::path::Path::new(&out), bin(&unnamed));
    // ... and a changed one is not
    std::fs::write(
        tree(&unnamed).join("src/main.rs"),
        "fn main() { println!(\"emrgym 0.1.0\"); }\n// changed\n",
    )
    .unwrap();
    let (code, out, err) = script(&unnamed);
    assert_eq!(code, Some(1), "{err}");
    assert!(out.is_empty(), "{out}");
    assert!(err.contains(&format!("is not a clean checkout of {unnamed}")), "{err}");
}

/// `--max-repeats N` sets the stuck limit and the manifest records it (the default, 4, when
/// it is not given); 0 turns it off, and is recorded by leaving the limit out, as a run from
/// before the limit existed has it (so such a run's manifest is unchanged on resume).
#[test]
fn the_stuck_limit_is_set_by_max_repeats_and_recorded() {
    let scenarios = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios");
    let dir = tempfile::tempdir().unwrap();
    for (flag, want) in [(None, Some(4)), (Some("0"), None), (Some("7"), Some(7))] {
        let out = dir.path().join(format!("r{}", flag.unwrap_or("default")));
        let mut c = Command::new(env!("CARGO_BIN_EXE_emrgym"));
        c.args(["run", "--agent", "oracle", "--scenarios"])
            .arg(&scenarios)
            .args(["--instance", "mab-age-001", "--out"])
            .arg(&out);
        if let Some(n) = flag {
            c.args(["--max-repeats", n]);
        }
        let o = c.output().unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let manifest: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out.join("manifest.json")).unwrap()).unwrap();
        let limits = &manifest["config"]["limits"];
        assert!(limits.is_object(), "{manifest}");
        assert_eq!(limits.get("max_repeats").map(|v| v.as_u64().unwrap()), want, "{flag:?}: {limits}");
    }
    let (ok, err) = run(&["run", "--agent", "oracle", "--max-repeats", "many"]);
    assert!(!ok);
    assert!(err.contains("'many'") && err.contains("--max-repeats"), "{err}");
}

/// Episodes start, and with one at a time are recorded, in the run's order (instance id,
/// then trial), whatever order the instances were named in: each takes its permit before
/// it is spawned, so the runtime cannot start them in another order (docs/performance.md,
/// "Greedy runs are reproducible ...").
#[test]
fn episodes_run_in_the_runs_order() {
    let scenarios = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios");
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("r");
    let o = Command::new(env!("CARGO_BIN_EXE_emrgym"))
        .args(["run", "--agent", "oracle", "--scenarios"])
        .arg(&scenarios)
        .args(["--instance", "mab-k-001", "--instance", "dka-001", "--instance", "af-anticoag-001"])
        .args(["--trials", "2", "--concurrency", "1", "--out"])
        .arg(&out)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let order: Vec<(String, u64)> = std::fs::read_to_string(out.join("results.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            (v["instance"].as_str().unwrap().to_string(), v["trial"].as_u64().unwrap())
        })
        .collect();
    let want: Vec<(String, u64)> = ["af-anticoag-001", "dka-001", "mab-k-001"]
        .iter()
        .flat_map(|i| [(i.to_string(), 0), (i.to_string(), 1)])
        .collect();
    assert_eq!(order, want);
}
