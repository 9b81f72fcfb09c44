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
