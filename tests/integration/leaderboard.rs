//! `emrgym leaderboard` over run directories made by the real engine (oracle and null agents,
//! a few instances including horizon chains): the numbers of each row, the paired mode
//! differences and their sign test, the horizon view, combining shards and refusing
//! conflicting runs, byte-identical output, the self-contained HTML, bad directories; and an
//! OpenAI-compatible model (a local stub) run with `emrgym run` appearing as its own row.

use axum::Json;
use axum::Router;
use emrgym_engine::leaderboard::{Leaderboard, Row, build};
use emrgym_engine::run::{AgentKind, Mode, RunConfig, execute};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::Command;

const INSTANCES: [&str; 6] = [
    "mab-age-001",
    "mab-lookup-001",
    "mab-k-001",
    "horizon-2-001",
    "horizon-4-001",
    "horizon-8-001",
];

fn suite() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios")
}

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_emrgym")
}

/// A run directory of `agent` in `mode` over `instances`, `trials` each.
fn make_run(out: &Path, agent: AgentKind, mode: Mode, instances: &[&str], trials: u32) {
    let cfg = RunConfig {
        suite: suite(),
        agent,
        mode,
        trials,
        seed: 7,
        concurrency: 2,
        instances: instances.iter().map(|s| s.to_string()).collect(),
        ..RunConfig::default()
    };
    execute(cfg, out, false).unwrap();
}

fn row<'a>(lb: &'a Leaderboard, model: &str, mode: &str) -> &'a Row {
    lb.rows.iter().find(|r| r.model == model && r.mode == mode).unwrap_or_else(|| {
        panic!(
            "no row {model} {mode} in {:?}",
            lb.rows.iter().map(|r| (&r.model, &r.mode)).collect::<Vec<_>>()
        )
    })
}

fn edit_manifest(dir: &Path, f: impl FnOnce(&mut Value)) {
    let p = dir.join("manifest.json");
    let mut m: Value = serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
    f(&mut m);
    std::fs::write(&p, serde_json::to_string_pretty(&m).unwrap()).unwrap();
}

/// Three real runs in one temporary directory: oracle flat and guided (2 trials), null flat.
struct Runs {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    oracle_flat: PathBuf,
    oracle_guided: PathBuf,
    null_flat: PathBuf,
}

fn runs() -> Runs {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().to_path_buf();
    let (oracle_flat, oracle_guided, null_flat) = (root.join("oracle-flat"), root.join("oracle-guided"), root.join("null-flat"));
    make_run(&oracle_flat, AgentKind::Oracle, Mode::Flat, &INSTANCES, 2);
    make_run(&oracle_guided, AgentKind::Oracle, Mode::Guided, &INSTANCES, 2);
    make_run(&null_flat, AgentKind::Null, Mode::Flat, &INSTANCES, 1);
    Runs {
        _tmp: tmp,
        root,
        oracle_flat,
        oracle_guided,
        null_flat,
    }
}

#[test]
fn rows_paired_differences_and_the_horizon_from_real_runs() {
    let r = runs();
    let lb = build(&[r.oracle_guided.clone(), r.null_flat.clone(), r.oracle_flat.clone()]).unwrap();
    // sorted by model then mode, whatever the order given
    let keys: Vec<(&str, &str)> = lb.rows.iter().map(|r| (r.model.as_str(), r.mode.as_str())).collect();
    assert_eq!(keys, vec![("null", "flat"), ("oracle", "flat"), ("oracle", "guided")]);

    let o = row(&lb, "oracle", "flat");
    assert_eq!((o.episodes, o.scored, o.instances, o.trials), (12, 12, 6, 2));
    assert_eq!((o.infrastructure_failures, o.harness_failures), (0, 0));
    let s = o.success.as_ref().unwrap();
    assert_eq!((s.mean, s.ci95, s.n), (1.0, [1.0, 1.0], 12));
    assert_eq!(o.progress.as_ref().unwrap().mean, 1.0);
    assert_eq!(o.node_accuracy.as_ref().unwrap().mean, 1.0);
    assert_eq!(
        o.pass_k.iter().map(|p| (p.k, p.estimate.mean)).collect::<Vec<_>>(),
        vec![(1, 1.0), (2, 1.0)]
    );
    assert_eq!(o.families.len(), 6);
    assert_eq!(o.families["horizon_mrn_4"].episodes, 2);
    // the row's success interval is the one its run's summary reports
    let summary: Value = serde_json::from_str(&std::fs::read_to_string(r.oracle_flat.join("summary.json")).unwrap()).unwrap();
    assert_eq!(json!(s.ci95), summary["success"]["ci95"]);

    let n = row(&lb, "null", "flat");
    assert_eq!((n.episodes, n.trials), (6, 1));
    let ns = n.success.as_ref().unwrap();
    assert_eq!((ns.mean, ns.ci95), (0.0, [0.0, 0.0]));
    let acc = n.node_accuracy.as_ref().unwrap();
    assert!(acc.mean < 0.5, "the null agent passes few nodes: {acc:?}");
    assert!(acc.ci95[0] <= acc.mean && acc.mean <= acc.ci95[1], "{acc:?}");
    let np = n.progress.as_ref().unwrap();
    assert!(np.ci95[0] <= np.mean && np.mean <= np.ci95[1], "{np:?}");

    // one comparison: the two modes of the oracle, no difference on any of the 6 instances
    assert_eq!(lb.paired.len(), 1, "{:?}", lb.paired);
    let p = &lb.paired[0];
    assert_eq!(
        (p.model.as_str(), p.a.as_str(), p.b.as_str(), p.pairs),
        ("oracle", "flat", "guided", 6)
    );
    let ps = p.success.as_ref().unwrap();
    assert_eq!((ps.difference.mean, ps.difference.ci95), (0.0, [0.0, 0.0]));
    assert_eq!((ps.better, ps.worse, ps.ties, ps.sign_test_p), (0, 0, 6, 1.0));

    // the horizon: every length solved by the oracle, none by the null agent
    let h = lb.horizon.iter().find(|h| h.model == "oracle" && h.mode == "flat").unwrap();
    assert_eq!(h.base, "horizon_mrn");
    assert_eq!(
        h.lengths.iter().map(|l| (l.length, l.episodes, l.success.mean)).collect::<Vec<_>>(),
        vec![(2, 2, 1.0), (4, 2, 1.0), (8, 2, 1.0)]
    );
    assert_eq!((h.below_half_at, h.longest), (None, 8));
    // steps 1-2 are in every chain, 3-4 in the 4 and 8 chains, 5-8 in the 8 chain (2 trials each)
    assert_eq!(
        h.steps.iter().map(|s| (s.step, s.episodes, s.accuracy)).collect::<Vec<_>>(),
        (1..=8u32)
            .map(|i| (
                i,
                if i <= 2 {
                    6
                } else if i <= 4 {
                    4
                } else {
                    2
                },
                1.0
            ))
            .collect::<Vec<_>>()
    );
    let hn = lb.horizon.iter().find(|h| h.model == "null").unwrap();
    assert_eq!(hn.below_half_at, Some(2));
    assert!(hn.steps.iter().all(|s| s.accuracy == 0.0), "{:?}", hn.steps);
}

#[test]
fn a_mode_that_loses_every_instance_has_the_sign_test_of_its_discordant_pairs() {
    let r = runs();
    // the null agent's episodes relabelled as the oracle's guided mode: 6 instances, all lost
    let worse = r.root.join("relabelled");
    crate::common::copy_dir(&r.null_flat, &worse);
    edit_manifest(&worse, |m| {
        m["config"]["agent"] = json!("oracle");
        m["config"]["mode"] = json!("guided");
    });
    let lb = build(&[r.oracle_flat.clone(), worse]).unwrap();
    let p = &lb.paired[0];
    assert_eq!((p.a.as_str(), p.b.as_str(), p.pairs), ("flat", "guided", 6));
    let s = p.success.as_ref().unwrap();
    assert_eq!((s.difference.mean, s.difference.ci95), (-1.0, [-1.0, -1.0]));
    assert_eq!((s.better, s.worse, s.ties), (0, 6, 0));
    assert_eq!(s.sign_test_p, 0.03125, "2 · (1/2)^6");
    let pr = p.progress.as_ref().unwrap();
    assert!(pr.difference.mean < 0.0 && pr.worse > 0, "{pr:?}");
}

#[test]
fn shards_combine_into_one_row_and_conflicting_runs_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (tmp.path().join("shard-a"), tmp.path().join("shard-b"));
    make_run(&a, AgentKind::Oracle, Mode::Flat, &INSTANCES[..3], 1);
    make_run(&b, AgentKind::Oracle, Mode::Flat, &INSTANCES[3..], 1);
    let lb = build(&[a.clone(), b.clone()]).unwrap();
    assert_eq!(lb.rows.len(), 1);
    assert_eq!((lb.rows[0].episodes, lb.rows[0].instances), (6, 6));
    assert_eq!(lb.rows[0].runs.len(), 2);
    // the same directory twice adds nothing
    assert_eq!(build(&[a.clone(), a.clone()]).unwrap().rows[0].episodes, 3);

    // a family that only one of the runs ran may differ between them: each family's
    // episodes still come from one version (shard-b ran the horizon chains, not mab_k_replete)
    let other = tmp.path().join("other-scenarios");
    crate::common::copy_dir(&b, &other);
    edit_manifest(&other, |m| m["scenarios"]["mab_k_replete"]["sha256"] = json!("0000"));
    assert_eq!(build(&[a.clone(), other.clone()]).unwrap().rows[0].episodes, 6);
    // a family both ran, in other versions: refused, naming both directories and the family
    let mixed = tmp.path().join("mixed-scenarios");
    make_run(&mixed, AgentKind::Oracle, Mode::Flat, &INSTANCES[2..4], 1);
    edit_manifest(&mixed, |m| m["scenarios"]["mab_k_replete"]["sha256"] = json!("0000"));
    let e = format!("{:#}", build(&[a.clone(), mixed.clone()]).unwrap_err());
    assert!(
        e.contains("shard-a") && e.contains("mixed-scenarios") && e.contains("mab_k_replete"),
        "{e}"
    );

    // the same episode with another result: refused, naming both directories and the episode
    let changed = tmp.path().join("changed");
    crate::common::copy_dir(&a, &changed);
    let results = changed.join("results.jsonl");
    let text = std::fs::read_to_string(&results).unwrap();
    let lines: Vec<String> = text
        .lines()
        .map(|l| {
            let mut v: Value = serde_json::from_str(l).unwrap();
            if v["instance"] == "mab-age-001" {
                v["success"] = json!(false);
            }
            v.to_string()
        })
        .collect();
    std::fs::write(&results, format!("{}\n", lines.join("\n"))).unwrap();
    let e = format!("{:#}", build(&[a, changed]).unwrap_err());
    assert!(e.contains("shard-a") && e.contains("changed") && e.contains("mab-age-001"), "{e}");
}

/// Runs of one model and mode on different suites are different rows: a rate over the quick
/// and the horizon suite together would weigh each suite by its size and match no row that
/// ran one of them. Paired differences compare modes within a suite, and a stopped run of
/// one suite withholds that suite's row alone (a long horizon run can be committed unfinished
/// without hiding the model's finished quick rows).
#[test]
fn runs_of_different_suites_are_different_rows_and_pairs_stay_within_a_suite() {
    let tmp = tempfile::tempdir().unwrap();
    let named = |dir: &str, mode: Mode, name: &str, instances: &[&str]| -> PathBuf {
        let out = tmp.path().join(dir);
        let cfg = RunConfig {
            suite: suite(),
            agent: AgentKind::Oracle,
            mode,
            trials: 1,
            seed: 7,
            concurrency: 2,
            suite_name: Some(name.into()),
            instances: instances.iter().map(|s| s.to_string()).collect(),
            ..RunConfig::default()
        };
        execute(cfg, &out, false).unwrap();
        out
    };
    let quick = ["mab-age-001", "mab-k-001"];
    let chains = ["horizon-2-001", "horizon-4-001", "horizon-8-001"];
    let runs = [
        named("q-flat", Mode::Flat, "quick", &quick),
        named("h-guided", Mode::Guided, "horizon", &chains),
        named("q-guided", Mode::Guided, "quick", &quick),
        named("h-flat", Mode::Flat, "horizon", &chains),
    ];
    let lb = build(&runs).unwrap();
    let keys: Vec<(&str, &str, usize)> = lb.rows.iter().map(|r| (r.suite.as_str(), r.mode.as_str(), r.episodes)).collect();
    assert_eq!(
        keys,
        [
            ("quick", "flat", 2),
            ("quick", "guided", 2),
            ("horizon", "flat", 3),
            ("horizon", "guided", 3)
        ],
        "one row per suite and mode, quick first"
    );
    let pairs: Vec<(&str, usize)> = lb.paired.iter().map(|p| (p.suite.as_str(), p.pairs)).collect();
    assert_eq!(pairs, [("quick", 2), ("horizon", 3)], "{:?}", lb.paired);
    assert_eq!(lb.horizon.len(), 2);
    assert!(lb.horizon.iter().all(|h| h.suite == "horizon"), "{:?}", lb.horizon);
    let md = emrgym_engine::leaderboard::markdown(&lb);
    assert!(
        md.contains("| oracle | flat | quick | 2 |") && md.contains("| oracle | flat | horizon | 3 |"),
        "{md}"
    );
    assert!(
        md.contains("| family | oracle (flat, quick) | oracle (guided, quick) | oracle (flat, horizon) |"),
        "{md}"
    );

    // the horizon flat run stopped after one episode: its row alone is withheld
    let results = runs[3].join("results.jsonl");
    let text = std::fs::read_to_string(&results).unwrap();
    std::fs::write(&results, format!("{}\n", text.lines().next().unwrap())).unwrap();
    let lb = build(&runs).unwrap();
    let withheld: Vec<(&str, &str)> = lb
        .rows
        .iter()
        .filter(|r| r.withheld.is_some())
        .map(|r| (r.suite.as_str(), r.mode.as_str()))
        .collect();
    assert_eq!(withheld, [("horizon", "flat")]);
    assert!(
        lb.rows[0].success.is_some() && lb.paired[0].withheld.is_none(),
        "the quick rows stay published"
    );
    assert!(
        lb.paired[1].withheld.as_deref().unwrap().contains("(flat, horizon)"),
        "{:?}",
        lb.paired[1]
    );
}

/// A run stopped before the end (its manifest promises episodes that have no result line)
/// is withheld, however good its scored episodes: a partial suite is not published. Its
/// shard partner finishing the rest does not help: each run must be whole.
#[test]
fn a_run_that_did_not_finish_its_episodes_is_withheld_until_it_is_resumed() {
    let tmp = tempfile::tempdir().unwrap();
    let whole = tmp.path().join("whole");
    make_run(&whole, AgentKind::Oracle, Mode::Flat, &INSTANCES[..3], 2);
    let lb = build(std::slice::from_ref(&whole)).unwrap();
    assert_eq!(lb.rows[0].withheld, None, "a whole run is published");
    let stopped = tmp.path().join("stopped");
    crate::common::copy_dir(&whole, &stopped);
    let results = stopped.join("results.jsonl");
    let text = std::fs::read_to_string(&results).unwrap();
    let kept: Vec<&str> = text
        .lines()
        .filter(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            !(v["instance"] == "mab-k-001" && v["trial"] == 1)
        })
        .collect();
    assert_eq!(kept.len(), 5);
    std::fs::write(&results, format!("{}\n", kept.join("\n"))).unwrap();
    let lb = build(std::slice::from_ref(&stopped)).unwrap();
    let r = &lb.rows[0];
    assert_eq!((r.episodes, r.scored), (5, 5));
    let why = r.withheld.as_deref().unwrap();
    assert!(
        why.starts_with("incomplete: 1 of the 6 episodes") && why.contains("mab-k-001 trial 1") && why.contains("--resume"),
        "{why}"
    );
    let md = emrgym_engine::leaderboard::markdown(&lb);
    assert!(md.contains("withheld") && md.contains("incomplete: 1 of the 6"), "{md}");
    // resumed, it is whole again
    let out = Command::new(bin()).args(["run", "--resume"]).arg(&stopped).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(build(&[stopped]).unwrap().rows[0].withheld, None);
}

#[test]
fn the_command_is_deterministic_self_contained_and_names_bad_directories() {
    let r = runs();
    let dirs = [&r.oracle_flat, &r.oracle_guided, &r.null_flat];
    let out = |extra: &[&str]| {
        let o = Command::new(bin()).arg("leaderboard").args(dirs).args(extra).output().unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        o.stdout
    };
    for flag in [&[][..], &["--markdown"], &["--html"], &["--json"]] {
        assert_eq!(out(flag), out(flag), "{flag:?}: two invocations differ");
    }
    let text = String::from_utf8(out(&[])).unwrap();
    assert!(
        text.contains("oracle  guided") && text.contains("100.0% [100.0%, 100.0%]"),
        "{text}"
    );
    let md = String::from_utf8(out(&["--markdown"])).unwrap();
    assert!(md.contains("| model | mode | suite | episodes |"), "{md}");
    assert!(
        md.contains("| oracle | selection | guided − flat | 6 | +0.0 [+0.0, +0.0] | 0/0/6 | 1.0000 |"),
        "{md}"
    );
    assert!(md.contains("### Horizon: horizon_mrn") && md.contains("none within 8"), "{md}");
    let json: Value = serde_json::from_slice(&out(&["--json"])).unwrap();
    assert_eq!(json["rows"].as_array().unwrap().len(), 3);

    // HTML to a file: one inline SVG per curve (success by length, accuracy by step), nothing fetched
    let page = r.root.join("leaderboard.html");
    out(&["--html", "--out", page.to_str().unwrap()]);
    let html = std::fs::read_to_string(&page).unwrap();
    assert_eq!(html.matches("<svg").count(), 2, "{html}");
    assert_eq!(html.matches("<polyline").count(), 6, "one line per row in each curve");
    assert!(!html.contains("http"), "no external resource: {html}");
    assert!(!html.contains("<script") && !html.contains("<link"), "{html}");

    // not a run directory, a missing one, and none at all
    let empty = r.root.join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    for bad in [empty, r.root.join("missing")] {
        let o = Command::new(bin())
            .arg("leaderboard")
            .arg(&r.oracle_flat)
            .arg(&bad)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success() && err.contains(bad.to_str().unwrap()), "{err}");
    }
    let o = Command::new(bin()).arg("leaderboard").output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("RUNS"), "{err}");
    let o = Command::new(bin())
        .arg("leaderboard")
        .arg(&r.oracle_flat)
        .args(["--markdown", "--html"])
        .output()
        .unwrap();
    assert!(!o.status.success(), "one output format at a time");
}

/// A minimal OpenAI-compatible endpoint: every request gets a `finish` tool call.
async fn stub() -> String {
    async fn chat(Json(req): Json<Value>) -> Json<Value> {
        let model = req["model"].as_str().unwrap_or_default().to_string();
        let args = json!({"answer": "unknown"}).to_string();
        Json(json!({"id": "x", "object": "chat.completion", "created": 0, "model": model,
            "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {"role": "assistant", "content": null,
                "tool_calls": [{"id": "call_finish", "type": "function", "function": {"name": "finish", "arguments": args}}]}}],
            "usage": {"prompt_tokens": 100, "completion_tokens": 10, "total_tokens": 110}}))
    }
    let app = Router::new().route("/v1/chat/completions", axum::routing::post(chat));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    format!("http://{addr}/v1")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_openai_compatible_model_is_a_row_in_one_command() {
    let base = stub().await;
    let tmp = tempfile::tempdir().unwrap();
    let (api, oracle) = (tmp.path().join("api"), tmp.path().join("oracle"));
    let (api2, oracle2, base2) = (api.clone(), oracle.clone(), base.clone());
    let (run_out, table) = tokio::task::spawn_blocking(move || {
        make_run(&oracle2, AgentKind::Oracle, Mode::Flat, &INSTANCES[..3], 1);
        let mut c = Command::new(bin());
        c.args(["run", "--suite"]).arg(suite());
        for i in &INSTANCES[..3] {
            c.args(["--instance", i]);
        }
        let run_out = c
            .args([
                "--model",
                &format!("openai:stub-model@{base2}"),
                "--api-key-env",
                "STUB_KEY",
                "--out",
            ])
            .arg(&api2)
            .env("STUB_KEY", "not-a-secret")
            .output()
            .unwrap();
        let table = Command::new(bin())
            .args(["leaderboard", "--json"])
            .arg(&api2)
            .arg(&oracle2)
            .output()
            .unwrap();
        (run_out, table)
    })
    .await
    .unwrap();
    assert!(run_out.status.success(), "{}", String::from_utf8_lossy(&run_out.stderr));
    assert!(table.status.success(), "{}", String::from_utf8_lossy(&table.stderr));
    let lb: Value = serde_json::from_slice(&table.stdout).unwrap();
    let host = base.trim_start_matches("http://").trim_end_matches("/v1");
    let rows: Vec<(String, String)> = lb["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["model"].as_str().unwrap().to_string(), r["agent"].as_str().unwrap().to_string()))
        .collect();
    assert_eq!(
        rows,
        vec![
            ("oracle".to_string(), "oracle".to_string()),
            (format!("stub-model@{host}"), "model".to_string())
        ]
    );
    let api_row = &lb["rows"][1];
    assert_eq!(api_row["episodes"], 3);
    assert_eq!(api_row["infrastructure_failures"], 0, "the stub answered every request: {api_row}");
    assert_eq!(api_row["success"]["mean"], 0.0, "finishing at once solves none of them");
    assert_eq!(lb["paired"], json!([]), "different models are not paired");
}

/// The Runs table says where each row's episodes come from: its directories, the builds that
/// ran them (the build recorded in each manifest, `unrecorded` for a manifest from before
/// builds were recorded, and a build that resumed a run with `--allow-other-build`), the
/// model file's digest when there is one, and for an in-process model the machines its
/// episodes ran on, counted from the result lines (`unrecorded` where a line names none).
#[test]
fn the_runs_table_names_each_rows_directories_builds_weights_and_machines() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (tmp.path().join("shard-a"), tmp.path().join("shard-b"));
    make_run(&a, AgentKind::Oracle, Mode::Flat, &INSTANCES[..2], 1);
    make_run(&b, AgentKind::Oracle, Mode::Flat, &INSTANCES[2..3], 1);
    let lb = build(&[a.clone(), b.clone()]).unwrap();
    let r = row(&lb, "oracle", "flat");
    assert_eq!(r.builds, [emrgym_engine::BUILD], "both runs are this build's");
    assert!(r.model_sha256.is_empty(), "the oracle has no weights");
    // one run from before builds were recorded, the other resumed by a second build
    edit_manifest(&a, |m| {
        m.as_object_mut().unwrap().remove("build");
    });
    edit_manifest(&b, |m| m["resumed_by_other_builds"] = json!(["0123456789ab+dirty.cafecafecafe"]));
    let lb = build(&[a.clone(), b.clone()]).unwrap();
    let r = row(&lb, "oracle", "flat");
    assert_eq!(
        r.builds,
        [
            emrgym_engine::leaderboard::UNRECORDED,
            emrgym_engine::BUILD,
            "0123456789ab+dirty.cafecafecafe"
        ]
    );
    let md = emrgym_engine::leaderboard::markdown(&lb);
    let runs = md.split("### Runs").nth(1).expect("a Runs section");
    let line = runs.lines().find(|l| l.starts_with("| oracle | flat |")).unwrap();
    assert!(
        line.contains(&a.display().to_string())
            && line.contains(&b.display().to_string())
            && line.contains("unrecorded")
            && line.contains("+dirty.cafecafecafe")
            && line.ends_with("| - | - |"),
        "{line}"
    );
    assert!(r.machines.is_empty(), "the oracle runs no model: {:?}", r.machines);
    // as runs of an in-process model: `a` from before result lines named their machine, `b`
    // with one episode on each of two machines
    let host = |cpu: &str| json!({"cpu": cpu, "cores": 2, "features": ["avx2"]});
    edit_manifest(&a, |m| m["model_sha256"] = json!("ab".repeat(32)));
    edit_manifest(&b, |m| {
        m["model_sha256"] = json!("ab".repeat(32));
        m["hosts"] = json!([host("AMD EPYC"), host("Intel(R) Xeon(R) Processor")]);
    });
    let results = b.join("results.jsonl");
    let text = std::fs::read_to_string(&results).unwrap();
    let one = text.lines().next().unwrap();
    let mut second: Value = serde_json::from_str(one).unwrap();
    second["trial"] = json!(1);
    second["host"] = json!(1);
    let mut first: Value = serde_json::from_str(one).unwrap();
    first["host"] = json!(0);
    std::fs::write(&results, format!("{first}\n{second}\n")).unwrap();
    let lb = build(&[a.clone(), b.clone()]).unwrap();
    let r = row(&lb, "oracle", "flat");
    let got: Vec<(&str, usize)> = r.machines.iter().map(|m| (m.machine.as_str(), m.episodes)).collect();
    assert_eq!(
        got,
        [
            (emrgym_engine::leaderboard::UNRECORDED, 2),
            ("AMD EPYC, 2 cores (avx2)", 1),
            ("Intel(R) Xeon(R) Processor, 2 cores (avx2)", 1)
        ]
    );
    let md = emrgym_engine::leaderboard::markdown(&lb);
    let runs = md.split("### Runs").nth(1).expect("a Runs section");
    let line = runs.lines().find(|l| l.starts_with("| oracle | flat |")).unwrap();
    assert!(
        line.ends_with("| unrecorded: 2; AMD EPYC, 2 cores (avx2): 1; Intel(R) Xeon(R) Processor, 2 cores (avx2): 1 |"),
        "{line}"
    );
}

/// A run re-graded into a new directory (`emrgym replay DIR --out NEW`) keeps where each of
/// its episodes ran: the manifest's machines and each line's `host`.
#[test]
fn a_re_graded_run_keeps_each_episodes_machine() {
    let tmp = tempfile::tempdir().unwrap();
    let (run, out) = (tmp.path().join("run"), tmp.path().join("regraded"));
    make_run(&run, AgentKind::Oracle, Mode::Flat, &INSTANCES[..2], 1);
    let hosts =
        json!([{"cpu": "AMD EPYC", "cores": 2, "features": ["avx2"]}, {"cpu": "Intel Xeon", "cores": 2, "features": ["avx2", "amx_int8"]}]);
    edit_manifest(&run, |m| m["hosts"] = hosts.clone());
    let results = run.join("results.jsonl");
    let lines: Vec<String> = std::fs::read_to_string(&results)
        .unwrap()
        .lines()
        .enumerate()
        .map(|(i, l)| {
            let mut v: Value = serde_json::from_str(l).unwrap();
            v["host"] = json!(1 - i);
            v.to_string()
        })
        .collect();
    assert_eq!(lines.len(), 2);
    std::fs::write(&results, lines.join("\n") + "\n").unwrap();
    let replayed = emrgym_engine::replay::replay(&run, None).unwrap();
    emrgym_engine::replay::write_run(&run, None, &out, &replayed).unwrap();
    let m: Value = serde_json::from_str(&std::fs::read_to_string(out.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(m["hosts"], hosts);
    let got: Vec<Option<usize>> = emrgym_engine::rundir::read_results(&out.join("results.jsonl"))
        .unwrap()
        .iter()
        .map(|l| l.host)
        .collect();
    assert_eq!(got, [Some(1), Some(0)]);
}

/// The committed run directories under results/, as the shell's `results/*/` names them in a
/// fresh clone: those whose manifest git tracks (a run in progress in a working tree is not
/// published), or every one with a manifest where git is not at hand.
fn committed_runs(root: &Path) -> Vec<String> {
    let tracked = Command::new("git")
        .current_dir(root)
        .args(["ls-files", "-z", "--", "results"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned());
    let mut dirs: Vec<String> = match tracked {
        Some(files) => files
            .split('\0')
            .filter_map(|f| f.strip_suffix("/manifest.json"))
            .filter(|d| d.matches('/').count() == 1)
            .map(|d| format!("{d}/"))
            .collect(),
        None => std::fs::read_dir(root.join("results"))
            .unwrap()
            .flatten()
            .filter(|e| e.path().join("manifest.json").is_file())
            .map(|e| format!("results/{}/", e.file_name().to_string_lossy()))
            .collect(),
    };
    dirs.sort();
    dirs
}

/// docs/results.md publishes the leaderboard of the runs committed under results/ exactly as
/// `emrgym leaderboard results/*/ --markdown` prints it (its headings one level down), so the
/// published table cannot drift from the runs a clone can replay.
#[test]
fn the_published_table_is_the_leaderboard_of_the_committed_runs() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dirs = committed_runs(root);
    assert!(dirs.len() >= 4, "{dirs:?}");
    let out = Command::new(bin())
        .current_dir(root)
        .arg("leaderboard")
        .args(&dirs)
        .arg("--markdown")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let want = format!("\n{}", String::from_utf8_lossy(&out.stdout)).replace("\n### ", "\n#### ");
    let doc = std::fs::read_to_string(root.join("docs/results.md")).unwrap();
    let start = doc.find("\n#### Leaderboard\n").expect("docs/results.md has the leaderboard");
    let end = start + doc[start..].find("\n**What the").expect("and its commentary after it");
    assert_eq!(
        doc[start..end].trim(),
        want.trim(),
        "docs/results.md's tables differ from `emrgym leaderboard results/*/ --markdown`: regenerate them"
    );
}

/// Every committed run re-grades, with this build's scenarios, grader and tools, to the grades
/// it records: `emrgym replay DIR --check` re-executes its recorded tool calls into fresh
/// sandboxes, finds no grade that changed and no tool that answers a recorded call otherwise.
/// A change to a scenario, the grader or the FHIR server that would change a published grade
/// (or what a model was shown) fails here until the runs are re-graded (`replay --out`) or
/// re-run, so the table cannot publish grades this build would not give.
#[test]
fn every_committed_run_re_grades_to_its_recorded_grades() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dirs = committed_runs(root);
    assert!(dirs.len() >= 4, "{dirs:?}");
    let mut stale = Vec::new();
    for d in &dirs {
        let out = Command::new(bin())
            .current_dir(root)
            .args(["replay", d, "--check"])
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let summary = stdout.lines().next().unwrap_or_default().to_string();
        // "replayed N episodes: N grades unchanged, 0 changed; tool results differ in 0 episodes"
        let episodes: usize = summary
            .strip_prefix("replayed ")
            .and_then(|s| s.split(' ').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("{d}: unexpected replay output {stdout:?} {}", String::from_utf8_lossy(&out.stderr)));
        assert!(episodes > 0, "{d}: {summary}");
        if !out.status.success() || !summary.ends_with("tool results differ in 0 episodes") {
            stale.push(format!("{d}: {stdout}{}", String::from_utf8_lossy(&out.stderr)));
        }
    }
    assert!(
        stale.is_empty(),
        "committed runs whose grades or tool results this build does not reproduce (re-grade with `emrgym replay DIR --out NEW` \
         or run again, then regenerate docs/results.md):\n{}",
        stale.join("\n")
    );
}
