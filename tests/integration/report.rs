//! `emrgym report` (terminal and HTML, checked in a real headless Chromium), `compare` and
//! `export --format atif` on real run directories.

use emrgym_engine::run::{AgentKind, RunConfig, execute};
use emrgym_engine::rundir::read_results;
use emrgym_scenario::trajectory::atif;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

fn suite() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios")
}

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_emrgym"))
}

const FAMILIES: [&str; 3] = ["mab_k_replete", "metformin_renal_review", "mab_patient_age"];

/// The instances of [`FAMILIES`] on the demo cohort (18).
fn demo_instances() -> Vec<String> {
    emrgym_engine::scenarios::instances(&suite())
        .unwrap()
        .into_iter()
        .filter(|i| i.cohort == "demo" && FAMILIES.contains(&i.family.as_str()))
        .map(|i| i.id)
        .collect()
}

fn run(agent: AgentKind, out: &Path) {
    let cfg = RunConfig {
        suite: suite(),
        agent,
        families: FAMILIES.iter().map(|s| s.to_string()).collect(),
        instances: demo_instances(),
        ..RunConfig::default()
    };
    execute(cfg, out, false).unwrap();
}

/// The DOM after the page's scripts ran, from headless Chromium.
fn dom(html: &Path, hash: &str) -> Option<String> {
    let chromium = ["chromium", "chromium-browser", "google-chrome"]
        .into_iter()
        .find(|c| Command::new(c).arg("--version").output().is_ok_and(|o| o.status.success()));
    let Some(chromium) = chromium else {
        assert!(
            std::env::var("EMRGYM_SKIP_BROWSER_TEST").is_ok(),
            "the report's browser test needs Chromium: apt-get install chromium (or set EMRGYM_SKIP_BROWSER_TEST=1)"
        );
        return None;
    };
    let profile = tempfile::tempdir().unwrap();
    let out = Command::new(chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--virtual-time-budget=10000",
            "--dump-dom",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(format!("file://{}{hash}", html.display()))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    Some(String::from_utf8(out.stdout).unwrap())
}

/// The verdict the page shows for a node.
fn shown_verdict(dom: &str, path: &str) -> Option<String> {
    let at = dom.find(&format!("data-path=\"{path}\""))?;
    let rest = &dom[at..];
    let v = rest.find("class=\"verdict ")? + "class=\"verdict ".len();
    Some(rest[v..].split('"').next()?.to_string())
}

#[test]
fn the_html_report_renders_in_a_browser_with_the_right_verdicts() {
    let dir = tempfile::tempdir().unwrap();
    let null = dir.path().join("null");
    run(AgentKind::Null, &null);
    let html = dir.path().join("report.html");
    let out = bin().arg("report").arg(&null).arg("--html").arg(&html).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("agent null  mode flat"), "{text}");
    assert!(text.contains("not successful (18):"), "{text}");
    assert!(text.contains("metformin-renal-001.0"), "{text}");
    let page = std::fs::read_to_string(&html).unwrap();
    assert!(
        !page.contains("http://") || !page.contains("<script src"),
        "self-contained: no external scripts"
    );
    assert!(!page.contains("<link"), "self-contained: no external stylesheets");
    let results = read_results(&null.join("results.jsonl")).unwrap();
    for key in ["metformin-renal-001", "mab-k-004"] {
        let Some(d) = dom(&html, &format!("#ep={key}.0")) else { return };
        assert!(d.contains("data-ready=\"1\""), "the page finished rendering");
        assert!(!d.contains("data-errors="), "no script errors: {}", &d[..d.len().min(400)]);
        assert!(d.contains(&format!("data-episode=\"{key}.0\"")), "the episode opened");
        let grade = results.iter().find(|r| r.instance == key).unwrap().grade.clone().unwrap();
        assert!(grade.nodes.len() >= 3);
        for n in &grade.nodes {
            let path = n.path.as_str();
            assert_eq!(
                shown_verdict(&d, path).as_deref(),
                Some(n.verdict.as_str()),
                "node {path:?} of {key}"
            );
        }
        // summary tables and the trajectory are there
        assert!(d.contains("metformin_renal_review") && d.contains("premature_finish"));
        assert!(d.contains("end: finished"));
    }
    // an oracle run: every verdict passed, writes shown with their field changes
    let oracle = dir.path().join("oracle");
    run(AgentKind::Oracle, &oracle);
    let html2 = dir.path().join("oracle.html");
    assert!(
        bin()
            .arg("report")
            .arg(&oracle)
            .arg("--html")
            .arg(&html2)
            .output()
            .unwrap()
            .status
            .success()
    );
    if let Some(d) = dom(&html2, "#ep=metformin-renal-001.0") {
        assert!(!d.contains("data-errors="));
        assert!(!d.contains("class=\"verdict failed\""));
        assert!(d.contains("class=\"verdict passed\""));
        assert!(d.contains("FHIR update MedicationRequest/"), "the write is listed");
        assert!(d.contains("status: \"active\" → \"stopped\""), "with its field change");
    }
    // a missing run is named
    let out = bin().arg("report").arg(dir.path().join("nope")).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no such run directory"));
}

#[test]
fn compare_lists_flips_and_progress_changes() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("oracle"), dir.path().join("null"));
    run(AgentKind::Oracle, &a);
    run(AgentKind::Null, &b);
    let out = bin().arg("compare").arg(&a).arg(&b).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("18 episodes in both; success 100.0% -> 0.0%"), "{text}");
    assert!(text.contains("0 gained, 18 lost"), "{text}");
    assert!(text.contains("mab-age-001.0                pass -> fail (sensing)"), "{text}");
    let out = bin().arg("compare").arg(&a).arg(&b).arg("--json").output().unwrap();
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["lost"], 18);
    assert_eq!(v["families"]["mab_patient_age"]["delta"], -1.0);
    // a run compared with itself changes nothing
    let v: Value = serde_json::from_slice(&bin().arg("compare").arg(&a).arg(&a).arg("--json").output().unwrap().stdout).unwrap();
    assert_eq!(v["flips"].as_array().unwrap().len(), 0);
    assert_eq!(v["progress_changes"].as_array().unwrap().len(), 0);
}

#[test]
fn export_writes_valid_atif_for_every_episode() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("oracle");
    run(AgentKind::Oracle, &a);
    let out = dir.path().join("atif");
    let o = bin()
        .arg("export")
        .arg(&a)
        .args(["--format", "atif", "--out"])
        .arg(&out)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stdout).contains("wrote 18 ATIF trajectories"));
    let mut n = 0;
    for e in std::fs::read_dir(&out).unwrap() {
        let v: Value = serde_json::from_str(&std::fs::read_to_string(e.unwrap().path()).unwrap()).unwrap();
        assert_eq!(atif::validate(&v), Vec::<String>::new());
        assert_eq!(v["schema_version"], "ATIF-v1.4");
        assert_eq!(v["extra"]["grade"]["success"], true);
        n += 1;
    }
    assert_eq!(n, 18);
    let o = bin().arg("export").arg(&a).args(["--format", "parquet"]).output().unwrap();
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("parquet"));
}

#[test]
fn report_shows_the_horizon_of_a_run_over_chain_lengths() {
    // the oracle succeeds at every length (no horizon); the null agent at none (horizon 2)
    for (agent, horizon, first_step) in [(AgentKind::Oracle, Value::Null, 1.0), (AgentKind::Null, Value::from(2), 0.0)] {
        let dir = tempfile::tempdir().unwrap();
        let cfg = RunConfig {
            suite: suite(),
            agent,
            families: vec!["horizon_mrn_2".into(), "horizon_mrn_4".into()],
            ..RunConfig::default()
        };
        execute(cfg, dir.path(), false).unwrap();
        let out = bin().args(["report", "--json"]).arg(dir.path()).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let s: Value = serde_json::from_slice(&out.stdout).unwrap();
        let h = &s["horizon"]["horizon_mrn"];
        assert_eq!(h["horizon"], horizon, "{h}");
        let lengths: Vec<u64> = h["lengths"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["length"].as_u64().unwrap())
            .collect();
        assert_eq!(lengths, vec![2, 4]);
        assert_eq!(h["steps"].as_array().unwrap().len(), 4);
        assert_eq!(h["steps"][0]["accuracy"].as_f64(), Some(first_step));
        let text = bin().arg("report").arg(dir.path()).output().unwrap();
        assert!(String::from_utf8_lossy(&text.stdout).contains("horizon horizon_mrn: success falls below 50% at length"));
    }
}
