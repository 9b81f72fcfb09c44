//! Interop: start the real `emrgym serve` binary and drive it with third-party Python FHIR
//! clients (fhirpy, fhirclient) and validate what comes back with fhir.resources (R4B models).

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

#[test]
fn python_fhir_clients_against_running_server() {
    let bin = env!("CARGO_BIN_EXE_emrgym");
    let mut child = Command::new(bin)
        .args(["serve", "--port", "0", "--now", "2023-11-13T10:15:00Z", "--seed", "3"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start emrgym serve");
    let stdout = child.stdout.take().unwrap();
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).unwrap();
    let base = line
        .split_whitespace()
        .find(|w| w.starts_with("http://") && w.ends_with("/fhir"))
        .unwrap_or_else(|| panic!("no base URL in: {line}"))
        .to_string();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/interop/test_fhir_clients.py");
    let out = Command::new("python3")
        .args(["-m", "pytest", "-q", "-p", "no:cacheprovider", script])
        .env("EMRGYM_FHIR_BASE", &base)
        .output();
    let _ = child.kill();
    let _ = child.wait();
    let out = out.expect("run python3 -m pytest (install: pip install pytest fhirpy fhirclient fhir.resources requests)");
    let text = format!("{}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "python interop tests failed:\n{text}");
    assert!(text.contains("passed"), "{text}");
}

/// The Python client (clients/python) and the Inspect AI task (integrations/inspect), run from
/// their source directories against this binary, which their tests start themselves
/// (`EMRGYM_BIN`); Inspect runs only its offline mock model. Also the ATIF export read by a
/// third-party ATIF loader (tests/interop/test_atif_export.py).
#[test]
fn python_client_and_inspect_task_against_the_binary() {
    let root = env!("CARGO_MANIFEST_DIR");
    let out = Command::new("python3")
        .args(["-m", "pytest", "-q", "-p", "no:cacheprovider"])
        .arg(format!("{root}/clients/python/tests"))
        .arg(format!("{root}/integrations/inspect/tests"))
        .arg(format!("{root}/tests/interop/test_atif_export.py"))
        .env("EMRGYM_BIN", env!("CARGO_BIN_EXE_emrgym"))
        .output();
    let out = out.expect("run python3 -m pytest (pip install -r tests/interop/requirements.txt)");
    let text = format!("{}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "python client and inspect tests failed:\n{text}");
    assert!(text.contains("passed"), "{text}");
}
