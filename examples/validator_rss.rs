//! Memory and time of R4 schema validation across resource types: validates one minimal
//! resource of every R4 type (the write a hostile client can send to each type) and prints
//! the process RSS before, after the first type, and after all types, plus validation time.
//! Run: `cargo run --example validator_rss` (figures in docs/performance.md).

use emrgym_fhir::validate::SchemaValidator;
use serde_json::json;
use std::time::Instant;

// the server's allocator, so RSS figures match `emrgym serve`
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|k| k.parse::<f64>().ok()))
        })
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

fn main() {
    let v = SchemaValidator::r4();
    let types: Vec<String> = v.resource_types().map(String::from).collect();
    let start = rss_mib();
    let t0 = Instant::now();
    let mut first = (0.0, 0.0);
    let mut ok = 0;
    for (i, ty) in types.iter().enumerate() {
        if v.validate(ty, &json!({"resourceType": ty})).is_ok() {
            ok += 1;
        }
        if i == 0 {
            first = (rss_mib(), t0.elapsed().as_secs_f64() * 1000.0);
        }
    }
    let cold_ms = t0.elapsed().as_secs_f64() * 1000.0;
    let all = rss_mib();
    // warm: the same writes again, 20 rounds
    let t1 = Instant::now();
    for _ in 0..20 {
        for ty in &types {
            let _ = v.validate(ty, &json!({"resourceType": ty, "id": "x"}));
        }
    }
    let warm_us = t1.elapsed().as_secs_f64() * 1e6 / (20.0 * types.len() as f64);
    println!("types: {} ({ok} minimal resources valid)", types.len());
    println!("rss at start: {start:.1} MiB");
    println!("after the first type: {:.1} MiB ({:.0} ms)", first.0, first.1);
    println!(
        "after all types: {all:.1} MiB ({cold_ms:.0} ms); growth per type after the first: {:.2} MiB",
        (all - first.0) / (types.len().saturating_sub(1).max(1)) as f64
    );
    println!("warm validation: {warm_us:.1} us per resource");
}
