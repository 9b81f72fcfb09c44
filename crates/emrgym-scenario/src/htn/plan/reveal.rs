//! Fact revelation: whether, and at which step, the agent's own tool results showed it a
//! fact (the resources of the oracle result, a covering search for an empty one, or the
//! same computed value), and the facts a trajectory has revealed so far.

use super::planner::value_text;
use super::tree::{Fact, Tree};
use crate::trajectory::Step;
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

/// Did a search cover the fact's query (same type, same patient, same code)? A search
/// without a code covers every code when its result is complete (no next page): "all active
/// orders" shows that none is an anticoagulant.
fn covers(fact: &Fact, args: &Value, result: &Value) -> bool {
    if args.get("resource_type").and_then(Value::as_str) != Some(fact.resource_type.as_str()) {
        return false;
    }
    let params = args.get("params").and_then(Value::as_object);
    let get = |k: &str| -> Vec<String> {
        params
            .and_then(|p| p.get(k))
            .map(|v| match v {
                Value::Array(a) => a.iter().map(value_text).collect(),
                other => vec![value_text(other)],
            })
            .unwrap_or_default()
    };
    for (k, v) in &fact.params {
        match k.as_str() {
            "patient" | "subject" => {
                let given: Vec<String> = get("patient").into_iter().chain(get("subject")).map(|s| norm_ref(&s)).collect();
                if !given.contains(&norm_ref(v)) {
                    return false;
                }
            }
            "code" => {
                // a code names its concept: a local code and its LOINC codes cover each other
                let wanted: BTreeSet<String> = v
                    .split(',')
                    .map(norm_token)
                    .flat_map(|c| {
                        let mut all = vec![c.clone()];
                        all.extend(crate::htn::equiv::concept_codes(&c).into_iter().map(str::to_lowercase));
                        all
                    })
                    .collect();
                let given: BTreeSet<String> = get("code").iter().flat_map(|s| s.split(',').map(norm_token)).collect();
                if given.is_empty() {
                    if !complete(result) {
                        return false;
                    }
                } else if wanted.is_disjoint(&given) {
                    return false;
                }
            }
            _ => {}
        }
    }
    true
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
/// covers the query (same resource type, patient and code) and it succeeded.
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
        };
        // the same code (without its system)
        assert_eq!(
            fact_revealed(&fact, &[search(json!({"patient": "S1", "code": "1364445"}), false)]),
            Some(0)
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
}
