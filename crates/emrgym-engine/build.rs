//! The build's identity, `EMRGYM_BUILD`: the checkout's commit (12 hex digits), with
//! `+dirty.<hash>` when the sources that shape behaviour (the crates, the binary, the
//! scenarios, the cohorts, the lock file) differ from it, `<hash>` being the first 12 hex
//! digits of SHA-256 over that difference (so two different dirty builds differ); `unknown`
//! outside a git checkout. A run directory's manifest records it, and `emrgym run --resume`
//! refuses to mix two builds in one run (docs/results.md).

use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The paths whose content shapes what a run does (relative to the repository root).
const SOURCES: &[&str] = &["crates", "src", "scenarios", "fhir-fixtures", "Cargo.toml", "Cargo.lock"];

fn git(root: &Path, args: &[&str]) -> Option<Vec<u8>> {
    let out = Command::new("git").arg("-C").arg(root).args(args).output().ok()?;
    out.status.success().then_some(out.stdout)
}

fn text(bytes: Vec<u8>) -> String {
    String::from_utf8_lossy(&bytes).trim().to_string()
}

fn main() {
    let root = std::env::var_os("CARGO_MANIFEST_DIR").map(|d| PathBuf::from(d).join("../.."));
    let build = root.as_deref().and_then(identity).unwrap_or_else(|| "unknown".to_string());
    println!("cargo:rustc-env=EMRGYM_BUILD={build}");
    let Some(root) = root else { return };
    // run again when the commit or the sources change (only paths that exist: cargo reruns a
    // build script on every build while one of its paths is missing)
    let mut watch: Vec<PathBuf> = SOURCES.iter().map(|p| root.join(p)).collect();
    if let Some(dir) = git(&root, &["rev-parse", "--absolute-git-dir"]).map(text) {
        let dir = PathBuf::from(dir);
        watch.push(dir.join("HEAD"));
        watch.push(dir.join("index"));
        if let Some(common) = git(&root, &["rev-parse", "--git-common-dir"]).map(text) {
            let common = root.join(common);
            watch.push(common.join("packed-refs"));
            if let Some(head) = git(&root, &["symbolic-ref", "-q", "HEAD"]).map(text) {
                watch.push(common.join(head));
            }
        }
    }
    for p in watch.into_iter().filter(|p| p.exists()) {
        println!("cargo:rerun-if-changed={}", p.display());
    }
}

fn identity(root: &Path) -> Option<String> {
    let commit = text(git(root, &["rev-parse", "--short=12", "HEAD"])?);
    if commit.is_empty() {
        return None;
    }
    let mut diff = vec!["diff", "--binary", "HEAD", "--"];
    diff.extend_from_slice(SOURCES);
    let mut hasher = Sha256::new();
    let mut dirty = false;
    let changed = git(root, &diff)?;
    if !changed.is_empty() {
        dirty = true;
        hasher.update(&changed);
    }
    let mut others = vec!["ls-files", "-z", "--others", "--exclude-standard", "--"];
    others.extend_from_slice(SOURCES);
    for name in git(root, &others)?.split(|b| *b == 0).filter(|n| !n.is_empty()) {
        dirty = true;
        hasher.update(name);
        hasher.update([0]);
        if let Ok(bytes) = std::fs::read(root.join(String::from_utf8_lossy(name).as_ref())) {
            hasher.update(&bytes);
        }
    }
    if !dirty {
        return Some(commit);
    }
    let hash: String = hasher.finalize().iter().take(6).map(|b| format!("{b:02x}")).collect();
    Some(format!("{commit}+dirty.{hash}"))
}
