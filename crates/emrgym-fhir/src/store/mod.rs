//! The resource store: an immutable, indexed cohort snapshot (`cohort`) and
//! copy-on-write sandboxes forked from it in O(1) (`sandbox`).

mod cohort;
mod execute;
mod index;
mod sandbox;
#[cfg(test)]
mod tests;

pub use cohort::{Cohort, CohortBuilder, CohortError, Method, Version};
pub use sandbox::{CreateOutcome, MAX_INCLUDED, Sandbox, SandboxOptions, SearchResult, WriteRecord};

use serde_json::Value;

/// Every `reference` string anywhere in a JSON value.
pub fn collect_references(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(o) => {
            for (k, x) in o {
                if k == "reference"
                    && let Value::String(s) = x
                {
                    out.push(s.clone());
                } else {
                    collect_references(x, out);
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|x| collect_references(x, out)),
        _ => {}
    }
}

/// Parse `a=1&b=2` (percent-decoded, `+` as space) into ordered pairs.
pub fn parse_query_string(q: &str) -> Vec<(String, String)> {
    url::form_urlencoded::parse(q.trim_start_matches('?').as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}
