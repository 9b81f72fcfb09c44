//! Calculator tests: the registry, the MedCalc-Bench worked cases, published examples,
//! a boundary case at every threshold of every scored item, unit invariance,
//! monotonicity (proptest) and refusal of impossible input.
//!
//! One file per kind of test (`unit_invariance`, not `units`, which would hide the crate's
//! `units` module from the others); this module holds the helpers they share.

mod boundaries;
mod medcalc;
mod properties;
mod published;
mod refusals;
mod registry;
mod unit_invariance;

use super::*;
use serde_json::{Value, json};

fn go(name: &str, args: Value) -> CalcResult {
    match run_named(name, &args) {
        Ok(r) => r,
        Err(e) => panic!("{name} {args}: {e}"),
    }
}

fn num(name: &str, args: Value) -> f64 {
    go(name, args).value.as_f64().unwrap()
}

fn err(name: &str, args: Value) -> String {
    match run_named(name, &args) {
        Ok(r) => panic!("{name} {args} should fail, got {}", r.value),
        Err(e) => e.to_string(),
    }
}

fn close(a: f64, b: f64, rel: f64) -> bool {
    (a - b).abs() <= rel * b.abs().max(1e-9)
}

/// Merge `extra` into `base`.
fn with(base: &Value, extra: Value) -> Value {
    let mut b = base.clone();
    for (k, v) in extra.as_object().unwrap() {
        b[k] = v.clone();
    }
    b
}
