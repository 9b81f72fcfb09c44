//! Fact revelation: whether, and at which step, the agent's own tool results showed it a
//! fact (the resources of the oracle result, a covering search for an empty one, or the
//! same computed value), and the facts a trajectory has revealed so far.

use super::planner::value_text;
use super::tree::{Fact, Tree};
use crate::trajectory::Step;
use emrgym_core::text::search_fold;
use serde_json::Value;
use std::collections::BTreeSet;

fn collect_ids(v: &Value, out: &mut BTreeSet<(String, String)>) {
    match v {
        Value::Object(m) => {
            if let (Some(Value::String(t)), Some(Value::String(id))) = (m.get("resourceType"), m.get("id")) {
                out.insert((t.clone(), id.clone()));
            }
            for x in m.values() {
                collect_ids(x, out);
            }
        }
        Value::Array(a) => a.iter().for_each(|x| collect_ids(x, out)),
        _ => {}
    }
}

fn norm_ref(s: &str) -> String {
    s.rsplit('/').next().unwrap_or(s).to_string()
}

fn norm_token(s: &str) -> String {
    s.rsplit('|').next().unwrap_or(s).to_lowercase()
}

/// Did a search show the agent that the fact's query finds nothing? It must be a search of
/// the fact's resource type whose matches were all on its page ([`complete`]), and whose query
/// is no narrower than the fact's: every parameter the agent gave is implied by the fact's
/// query ([`implied`]), so every resource the fact's query could find is one the agent's
/// search would have shown. Then an empty (or complete and unrelated) result proves what the
/// empty fact says. A search that could not have found what it looked for proves nothing:
/// `Patient?name=Stafford Peter` matches no one (a `name` value must start a part of the name
/// or the name written out given names first), so its empty result says nothing about whether
/// Peter Stafford, born on a given day, is on file; nor does a search of a narrower date
/// window, another status or another code.
/// Leaving a parameter out widens a search, and a wider search that finds nothing proves more.
fn covers(fact: &Fact, args: &Value, result: &Value) -> bool {
    if args.get("resource_type").and_then(Value::as_str) != Some(fact.resource_type.as_str()) {
        return false;
    }
    let params = args.get("params").and_then(Value::as_object);
    if params.is_none() && !args.get("params").is_none_or(Value::is_null) {
        return false;
    }
    let sorted_newest_first = params
        .and_then(|p| p.get("_sort"))
        .is_some_and(|s| value_text(s).split(',').next().map(str::trim) == Some("-date"));
    if !(complete(result) || sorted_newest_first && older_than_window(fact, result)) {
        return false;
    }
    params.into_iter().flatten().all(|(k, v)| {
        let values: Vec<String> = match v {
            // a repeated parameter: each occurrence constrains the search (AND)
            Value::Array(a) => a.iter().map(value_text).collect(),
            other => vec![value_text(other)],
        };
        values.iter().all(|v| implied(fact, k, v))
    })
}

/// Search parameters that page, sort or shape a result without choosing what matches
/// (FHIR R4 search §3.1.1.5-6; `_offset` is judged on its own).
const NOT_FILTERING: [&str; 9] = [
    "_count",
    "_sort",
    "_elements",
    "_summary",
    "_format",
    "_pretty",
    "_total",
    "_include",
    "_revinclude",
];

/// Date-typed search parameters (FHIR R4 search §3.1.1.4.2: a value, with a prefix, stands
/// for the period of its precision).
const DATE_PARAMS: [&str; 8] = [
    "date",
    "birthdate",
    "authoredon",
    "onset-date",
    "recorded-date",
    "issued",
    "effective",
    "_lastUpdated",
];

/// Whether one parameter of the agent's search (`key`, with its modifier, and one value) is
/// implied by the fact's query: every resource the fact's query matches also matches it.
fn implied(fact: &Fact, key: &str, value: &str) -> bool {
    let (name, modifier) = match key.split_once(':') {
        Some((n, m)) => (n, Some(m)),
        None => (key, None),
    };
    let fact_values = |n: &str| -> Vec<&str> { fact.params.iter().filter(|(k, _)| k == n).map(|(_, v)| v.as_str()).collect() };
    if NOT_FILTERING.contains(&name) {
        return true;
    }
    if name == "_offset" {
        return value.trim() == "0"; // a later page shows only part of the matches
    }
    match name {
        "patient" | "subject" => {
            if modifier.is_some_and(|m| m != "Patient") {
                return false;
            }
            let wanted: Vec<String> = fact_values("patient")
                .into_iter()
                .chain(fact_values("subject"))
                .map(norm_ref)
                .collect();
            // a comma is OR: one of them must be the fact's patient
            !wanted.is_empty() && value.split(',').any(|v| wanted.contains(&norm_ref(v.trim())))
        }
        "code" if modifier.is_none() => {
            // a comma is OR: each of the fact's codes (two products of one drug, say) must be
            // among the agent's, itself or a code of its concept (a local code and its LOINC
            // codes name one concept: the record codes a result with both)
            let given: BTreeSet<String> = value.split(',').map(norm_token).collect();
            let wanted: Vec<String> = fact_values("code").into_iter().flat_map(|v| v.split(',')).map(norm_token).collect();
            !wanted.is_empty()
                && wanted.iter().all(|c| {
                    given.contains(c)
                        || crate::htn::equiv::concept_codes(c)
                            .into_iter()
                            .any(|x| given.contains(&x.to_lowercase()))
                })
        }
        "given" | "family" | "name" if fact.resource_type == "Patient" => {
            // the name asked for: every patient with that name must match. A `name` value
            // matches a part (given or family) or the whole name written out, a given name
            // then the family name (the server also matches middle names, so "Peter
            // Stafford" finds Peter James Stafford). Compared as the server compares strings,
            // case, accents and white-space runs folded; `:exact` as written
            let givens = fact_values("given");
            let families = fact_values("family");
            let parts: Vec<String> = match name {
                "name" => givens
                    .iter()
                    .chain(&families)
                    .map(|p| p.to_string())
                    .chain(givens.iter().flat_map(|g| families.iter().map(move |f| format!("{g} {f}"))))
                    .collect(),
                n => fact_values(n).into_iter().map(str::to_string).collect(),
            };
            !parts.is_empty()
                && value.split(',').any(|alt| {
                    !alt.trim().is_empty()
                        && parts.iter().any(|p| match modifier {
                            None => search_fold(p).starts_with(&search_fold(alt)),
                            Some("exact") => p == alt,
                            Some("contains") => search_fold(p).contains(&search_fold(alt)),
                            _ => false,
                        })
                })
        }
        n if DATE_PARAMS.contains(&n) && modifier.is_none() => date_implied(fact, n, value),
        // any other parameter (status, category, identifier...) narrows the search unless the
        // fact's query has it with a value among the agent's
        _ => {
            modifier.is_none() && {
                let alts: Vec<String> = value.split(',').map(norm_token).collect();
                let own = fact_values(name);
                !own.is_empty() && own.iter().all(|v| alts.contains(&norm_token(v)))
            }
        }
    }
}

/// A date parameter's prefix (FHIR R4 search §3.1.1.4.1) and the period of its value.
fn date_bound(value: &str) -> Option<(&str, emrgym_core::date::FhirDate)> {
    let v = value.trim();
    let (prefix, rest) = match v.get(..2) {
        Some(p) if p.chars().all(|c| c.is_ascii_alphabetic()) => (p, &v[2..]),
        _ => ("eq", v),
    };
    Some((prefix, emrgym_core::date::parse(rest)?))
}

/// Whether the agent's date constraint `value` on parameter `name` keeps every period the
/// fact's query keeps: the fact's constraints on `name` bound it between `lo` and `hi` (no
/// later than the clinical now, when nothing is recorded after it), and the agent's bound
/// must lie outside that interval.
fn date_implied(fact: &Fact, name: &str, value: &str) -> bool {
    let mut lo = i64::MIN;
    let mut hi = fact.now.map_or(i64::MAX, |n| n.timestamp_millis() + 1);
    for (k, v) in &fact.params {
        if k != name {
            continue;
        }
        let Some((p, d)) = date_bound(v) else { return false };
        match p {
            "ge" => lo = lo.max(d.start_ms),
            "gt" => lo = lo.max(d.end_ms),
            "le" => hi = hi.min(d.end_ms),
            "lt" => hi = hi.min(d.start_ms),
            "eq" => {
                lo = lo.max(d.start_ms);
                hi = hi.min(d.end_ms);
            }
            _ => return false,
        }
    }
    let Some((p, d)) = date_bound(value) else { return false };
    match p {
        "ge" => lo >= d.start_ms,
        "gt" => lo >= d.end_ms,
        "le" => hi <= d.end_ms,
        "lt" => hi <= d.start_ms,
        "eq" => d.start_ms <= lo && hi <= d.end_ms,
        _ => false,
    }
}

/// Whether a page sorted newest first ends with a resource dated before the fact's window
/// (its `date` lower bound): every match the page leaves out is older still, so none is in
/// the window. `_sort=-date&_count=1` over a wider window shows the latest result, and one
/// from before the window shows that the window holds none.
fn older_than_window(fact: &Fact, result: &Value) -> bool {
    let lo = fact
        .params
        .iter()
        .filter(|(k, _)| k == "date")
        .filter_map(|(_, v)| date_bound(v))
        .filter_map(|(p, d)| match p {
            "ge" | "eq" => Some(d.start_ms),
            "gt" => Some(d.end_ms),
            _ => None,
        })
        .max();
    let last = result
        .get("entry")
        .and_then(Value::as_array)
        .and_then(|e| e.last())
        .and_then(|e| e.get("resource"));
    match (lo, last.and_then(clinical_date)) {
        (Some(lo), Some(end)) => end <= lo,
        _ => false,
    }
}

/// The end of the period a resource's `date` search parameter reads (FHIR R4: an
/// Observation's `effective[x]`, a MedicationRequest's `authoredOn`, ...), in Unix
/// milliseconds.
fn clinical_date(r: &Value) -> Option<i64> {
    let text = |k: &str| r.get(k).and_then(Value::as_str);
    let v = text("effectiveDateTime")
        .or_else(|| text("effectiveInstant"))
        .or_else(|| r.pointer("/effectivePeriod/end").and_then(Value::as_str))
        .or_else(|| r.pointer("/effectivePeriod/start").and_then(Value::as_str))
        .or_else(|| text("authoredOn"))
        .or_else(|| text("issued"))?;
    Some(emrgym_core::date::parse(v)?.end_ms)
}

/// A search result with every match on its page (no link to a next page).
fn complete(result: &Value) -> bool {
    !result
        .get("link")
        .and_then(Value::as_array)
        .is_some_and(|links| links.iter().any(|l| l.get("relation").and_then(Value::as_str) == Some("next")))
}

/// The step at which the agent was first shown the fact: every resource of the oracle
/// result appeared in a tool result, or (for an empty result) the agent ran a search that
/// covers the query (no narrower than it, all its matches shown: [`covers`]) and it
/// succeeded.
pub fn fact_revealed(fact: &Fact, steps: &[Step]) -> Option<usize> {
    if let Some(tool) = &fact.tool {
        // a computed fact: the agent ran the same tool and got the same value
        let want = fact.value.first().and_then(|v| v.get("value"));
        return steps.iter().position(|s| {
            s.call.name == *tool
                && s.result.ok
                && match (want, s.result.content.get("value")) {
                    (Some(Value::Number(a)), Some(Value::Number(b))) => a
                        .as_f64()
                        .zip(b.as_f64())
                        .is_some_and(|(a, b)| (a - b).abs() <= 1e-9 * a.abs().max(1.0)),
                    (Some(a), Some(b)) => a == b,
                    _ => false,
                }
        });
    }
    let wanted: BTreeSet<(String, String)> = fact
        .value
        .iter()
        .filter_map(|r| Some((r.get("resourceType")?.as_str()?.to_string(), r.get("id")?.as_str()?.to_string())))
        .collect();
    if wanted.is_empty() {
        return steps
            .iter()
            .position(|s| s.call.name == "fhir_search" && s.result.ok && covers(fact, &s.call.arguments, &s.result.content));
    }
    let mut seen = BTreeSet::new();
    for (i, s) in steps.iter().enumerate() {
        // only what the agent read shows it a fact (a write's response echoes what it wrote)
        if !s.result.ok || !is_read_step(s) {
            continue;
        }
        collect_ids(&s.result.content, &mut seen);
        if wanted.is_subset(&seen) {
            return Some(i);
        }
    }
    None
}

/// A step that reads the record: a search or read, or any other REST GET (vread, history,
/// compartment search), or a batch sent to the base (whose entries may be reads).
fn is_read_step(s: &Step) -> bool {
    match s.call.name.as_str() {
        "fhir_search" | "fhir_read" => true,
        "fhir_rest" => {
            let rest = s.call.arguments.get("rest");
            let method = rest.and_then(|r| r.get("method")).and_then(Value::as_str);
            let to_base = rest
                .and_then(|r| r.get("path"))
                .and_then(Value::as_array)
                .is_some_and(Vec::is_empty);
            method == Some("GET") || (method == Some("POST") && to_base)
        }
        _ => false,
    }
}

/// The facts a trajectory has revealed so far (node paths), given the oracle tree.
pub fn revealed_paths(oracle: &Tree, steps: &[Step]) -> BTreeSet<String> {
    oracle
        .nodes
        .iter()
        .filter(|n| n.fact.as_ref().is_some_and(|f| fact_revealed(f, steps).is_some()))
        .map(|n| n.path.clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trajectory::{Step, ToolCall, ToolResult};
    use serde_json::json;

    fn search(params: Value, next_page: bool) -> Step {
        let mut bundle = json!({"resourceType": "Bundle", "type": "searchset", "entry": []});
        if next_page {
            bundle["link"] = json!([{"relation": "self", "url": "x"}, {"relation": "next", "url": "y"}]);
        }
        Step::new(
            ToolCall {
                name: "fhir_search".into(),
                arguments: json!({"resource_type": "MedicationRequest", "params": params}),
            },
            ToolResult {
                ok: true,
                status: 200,
                content: bundle,
            },
        )
    }

    #[test]
    fn an_empty_coded_fact_is_shown_by_the_coded_search_or_by_a_complete_uncoded_one() {
        let fact = Fact {
            resource_type: "MedicationRequest".into(),
            params: vec![
                ("patient".into(), "S1".into()),
                ("status".into(), "active".into()),
                (
                    "code".into(),
                    "http://www.nlm.nih.gov/research/umls/rxnorm|855332,http://www.nlm.nih.gov/research/umls/rxnorm|1364445".into(),
                ),
            ],
            value: Vec::new(),
            tool: None,
            now: None,
        };
        // both codes (without their system)
        assert_eq!(
            fact_revealed(&fact, &[search(json!({"patient": "S1", "code": "855332,1364445"}), false)]),
            Some(0)
        );
        // one of the two products only: the patient may be on the other
        assert_eq!(
            fact_revealed(&fact, &[search(json!({"patient": "S1", "code": "1364445"}), false)]),
            None
        );
        // all the patient's orders, on one page: none is an anticoagulant
        assert_eq!(
            fact_revealed(&fact, &[search(json!({"patient": "Patient/S1", "status": "active"}), false)]),
            Some(0)
        );
        // a first page only proves nothing, nor does another code or another patient
        assert_eq!(fact_revealed(&fact, &[search(json!({"patient": "S1"}), true)]), None);
        assert_eq!(
            fact_revealed(&fact, &[search(json!({"patient": "S1", "code": "860975"}), false)]),
            None
        );
        assert_eq!(fact_revealed(&fact, &[search(json!({"patient": "S2"}), false)]), None);
    }

    #[test]
    fn an_empty_fact_by_local_code_is_shown_by_a_search_by_its_loinc_code() {
        let fact = Fact {
            resource_type: "Observation".into(),
            params: vec![("patient".into(), "S1".into()), ("code".into(), "K".into())],
            value: Vec::new(),
            tool: None,
            now: None,
        };
        let obs = |code: &str| {
            let mut s = search(json!({"patient": "S1", "code": code}), false);
            s.call.arguments["resource_type"] = json!("Observation");
            s
        };
        assert_eq!(fact_revealed(&fact, &[obs("http://loinc.org|2823-3")]), Some(0));
        assert_eq!(fact_revealed(&fact, &[obs("K")]), Some(0));
        assert_eq!(fact_revealed(&fact, &[obs("2951-2")]), None);
    }

    fn step(resource_type: &str, params: Value, entries: Vec<Value>, next_page: bool) -> Step {
        let mut bundle = json!({"resourceType": "Bundle", "type": "searchset",
            "entry": entries.into_iter().map(|r| json!({"resource": r})).collect::<Vec<_>>()});
        if next_page {
            bundle["link"] = json!([{"relation": "next", "url": "y"}]);
        }
        Step::new(
            ToolCall {
                name: "fhir_search".into(),
                arguments: json!({"resource_type": resource_type, "params": params}),
            },
            ToolResult {
                ok: true,
                status: 200,
                content: bundle,
            },
        )
    }

    /// MedAgentBench's lookup of a patient who is not on file (a near miss of a real one):
    /// only a search that would have found the patient shows the absence.
    #[test]
    fn a_patient_is_shown_absent_only_by_a_search_that_would_have_found_them() {
        let fact = Fact {
            resource_type: "Patient".into(),
            params: vec![
                ("given".into(), "Peter".into()),
                ("family".into(), "Stafford".into()),
                ("birthdate".into(), "1932-12-30".into()),
            ],
            value: Vec::new(),
            tool: None,
            now: None,
        };
        let shown = |params: Value| fact_revealed(&fact, &[step("Patient", params, vec![], false)]).is_some();
        // the name written out, given name first, finds every Peter Stafford (middle names too)
        assert!(shown(json!({"name": "Peter Stafford", "birthdate": "1932-12-30"})));
        assert!(shown(json!({"name": "peter  staff"})));
        assert!(shown(json!({"name:exact": "Peter Stafford"})));
        assert!(shown(json!({"name:contains": "er staf"})));
        // family name first, a trailing space, another case for :exact, or a longer name
        // match no Peter Stafford
        assert!(!shown(json!({"name": "Stafford Peter", "birthdate": "1932-12-30"})));
        assert!(!shown(json!({"name": "Stafford "})));
        assert!(!shown(json!({"name:exact": "peter stafford"})));
        assert!(!shown(json!({"family:exact": "stafford"})));
        assert!(!shown(json!({"name": "Peter Stafford Jr"})));
        assert!(!shown(json!({"given": "Peter Stafford"})));
        // the asked name, its parts, a prefix of them, exact, any case; leaving parts out widens it
        assert!(shown(json!({"given": "Peter", "family": "Stafford", "birthdate": "1932-12-30"})));
        assert!(shown(json!({"family": "Stafford", "birthdate": "1932-12-30"})));
        assert!(shown(json!({"name": "stafford", "birthdate": "1932-12-30"})));
        assert!(shown(json!({"name": "Peter"})));
        assert!(shown(json!({"given": "Pet", "family": "Staff"})));
        assert!(shown(json!({"family:exact": "Stafford", "given:contains": "ete"})));
        assert!(shown(json!({"family": "Smith,Stafford"})), "a comma is OR");
        assert!(!shown(json!({"family:exact": "Staff"})));
        assert!(!shown(json!({"family": "Stafforde"})));
        // the birth date: the day asked, or a period that holds it
        assert!(shown(json!({"family": "Stafford", "birthdate": "1932"})));
        assert!(shown(json!({"family": "Stafford", "birthdate": ["ge1932-12-01", "le1932-12-31"]})));
        assert!(!shown(json!({"family": "Stafford", "birthdate": "1932-12-29"})));
        assert!(!shown(json!({"family": "Stafford", "birthdate": "ge1933-01-01"})));
        assert!(!shown(json!({"family": "Stafford", "birthdate": "ne1932-12-30"})));
        // a parameter the question does not have narrows the search
        assert!(!shown(json!({"family": "Stafford", "identifier": "S6534835"})));
        assert!(!shown(json!({"family": "Stafford", "gender": "male"})));
        assert!(!shown(json!({"family": "Stafford", "_offset": 20})));
        assert!(shown(json!({"family": "Stafford", "_offset": 0, "_count": 5})));
        // a wider search whose complete result is the near miss shows it too
        let near = json!({"resourceType": "Patient", "id": "S6534835", "birthDate": "1932-12-29"});
        assert!(fact_revealed(&fact, &[step("Patient", json!({"family": "Stafford"}), vec![near.clone()], false)]).is_some());
        assert!(fact_revealed(&fact, &[step("Patient", json!({"family": "Stafford"}), vec![near], true)]).is_none());
    }

    /// A name with accents is found, on the server, by the name without them and in any case
    /// (FHIR string search is accent-insensitive), so such a search shows its absence too;
    /// `:exact` keeps the accents.
    #[test]
    fn an_accented_name_is_shown_absent_by_a_search_without_its_accents() {
        let fact = Fact {
            resource_type: "Patient".into(),
            params: vec![("given".into(), "Chloé".into()), ("family".into(), "Núñez".into())],
            value: Vec::new(),
            tool: None,
            now: None,
        };
        let shown = |params: Value| fact_revealed(&fact, &[step("Patient", params, vec![], false)]).is_some();
        assert!(shown(json!({"name": "Chloe Nunez"})));
        assert!(shown(json!({"name": "CHLOÉ núñez"})));
        assert!(shown(json!({"given": "chloe", "family": "NUNEZ"})));
        assert!(shown(json!({"family:contains": "une"})));
        assert!(shown(json!({"family:exact": "Núñez"})));
        assert!(!shown(json!({"family:exact": "Nunez"})));
        assert!(!shown(json!({"name": "Chloa"})));
    }

    /// No magnesium in the last 24 hours: a search of the same window or a wider one shows it;
    /// a narrower window, a window that starts now, or an extra filter does not, whatever it
    /// returned.
    #[test]
    fn an_absence_in_a_window_is_shown_by_that_window_or_a_wider_one() {
        let now = chrono::DateTime::parse_from_rfc3339("2023-11-13T10:15:00+00:00").unwrap();
        let fact = Fact {
            resource_type: "Observation".into(),
            params: vec![
                ("patient".into(), "S1".into()),
                ("code".into(), "MG".into()),
                ("date".into(), "ge2023-11-12T10:15:00+00:00".into()),
            ],
            value: Vec::new(),
            tool: None,
            now: Some(now),
        };
        let shown = |params: Value| fact_revealed(&fact, &[step("Observation", params, vec![], false)]).is_some();
        assert!(shown(json!({"patient": "S1", "code": "MG", "date": "ge2023-11-12T10:15:00+00:00"})));
        assert!(shown(json!({"patient": "Patient/S1", "code": "MG", "date": "ge2023-11-12"})));
        assert!(shown(json!({"patient": "S1", "code": "MG"})));
        assert!(shown(
            json!({"patient": "S1", "code": "MG", "date": "gt2023-11-11", "_sort": "-date", "_count": 1})
        ));
        assert!(
            shown(json!({"patient": "S1", "code": "MG", "date": ["ge2023-11-12T10:15:00Z", "le2023-11-13T10:15:00Z"]})),
            "bounded at the clinical now: nothing is recorded after it"
        );
        assert!(shown(json!({"patient": "S1", "code": "MG", "date": "le2023-11-13"})));
        // narrower: the window starts later, or at now (it can hold nothing), or ends earlier
        assert!(!shown(
            json!({"patient": "S1", "code": "MG", "date": "ge2023-11-13T00:00:00+00:00"})
        ));
        assert!(!shown(
            json!({"patient": "S1", "code": "MG", "date": "ge2023-11-13T10:15:00+00:00"})
        ));
        assert!(!shown(json!({"patient": "S1", "code": "MG", "date": "2023-11-13T10:15:00+00:00"})));
        assert!(!shown(
            json!({"patient": "S1", "code": "MG", "date": "le2023-11-13T09:00:00+00:00"})
        ));
        // another patient or code, an extra filter, a code list ANDed with another code
        assert!(!shown(json!({"patient": "S2", "code": "MG"})));
        assert!(!shown(json!({"patient": "S1", "code": "K"})));
        assert!(!shown(json!({"patient": "S1", "code": "MG", "category": "laboratory"})));
        assert!(!shown(json!({"patient": "S1", "code": ["MG", "K"]})));
        assert!(shown(json!({"patient": "S1", "code": "MG,K"})), "a comma is OR: wider");
        // a wider window sorted newest first whose page ends before the window: none is in it
        let mg = |when: &str| json!({"resourceType": "Observation", "id": "o1", "effectiveDateTime": when});
        let sorted = json!({"patient": "S1", "code": "MG", "_sort": "-date", "_count": 1});
        let paged = |params: &Value, when: &str| fact_revealed(&fact, &[step("Observation", params.clone(), vec![mg(when)], true)]);
        assert!(paged(&sorted, "2023-11-10T08:00:00+00:00").is_some());
        assert!(
            paged(&sorted, "2023-11-12T12:00:00+00:00").is_none(),
            "inside the window: no absence to show"
        );
        let unsorted = json!({"patient": "S1", "code": "MG", "_count": 1});
        assert!(
            paged(&unsorted, "2023-11-10T08:00:00+00:00").is_none(),
            "unsorted: a later page may hold a newer one"
        );
        let oldest_first = json!({"patient": "S1", "code": "MG", "_sort": "date", "_count": 1});
        assert!(paged(&oldest_first, "2023-11-10T08:00:00+00:00").is_none());
    }
}
