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
