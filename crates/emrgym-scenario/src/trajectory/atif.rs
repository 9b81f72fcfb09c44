//! Export to ATIF, the Agent Trajectory Interchange Format used by Harbor and Terminal-Bench
//! (schema ATIF-v1.4): one JSON object per episode whose steps are the system prompt, user
//! messages and agent turns, each agent turn with its tool calls, their results as the
//! observation, and its token metrics. What ATIF has no field for (the FHIR writes, end
//! reason, HTN transitions, the grade) goes in `extra`.

use super::Trajectory;
use super::file::Header;
use serde_json::{Map, Value, json};

/// The schema version written.
pub(crate) const SCHEMA_VERSION: &str = "ATIF-v1.4";

fn text_of(content: &Value) -> String {
    match content {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// One episode as an ATIF trajectory. `grade` (the episode's grade, if graded) goes in
/// `extra.grade`.
pub fn export(header: &Header, t: &Trajectory, grade: Option<&Value>) -> Value {
    let mut steps: Vec<Value> = Vec::new();
    let push = |steps: &mut Vec<Value>, mut step: Map<String, Value>| {
        step.insert("step_id".into(), json!(steps.len() + 1));
        steps.push(Value::Object(step));
    };
    let model_name = header
        .model
        .as_ref()
        .and_then(|m| m.get("model").or_else(|| m.get("path")).or_else(|| m.get("name")))
        .and_then(Value::as_str)
        .map(str::to_string);
    let observation = |t: &Trajectory, idx: &[usize]| -> (Value, Vec<Value>) {
        let results: Vec<Value> = idx
            .iter()
            .map(|&i| {
                let s = &t.steps[i];
                let mut r = Map::new();
                if let Some(id) = &s.call_id {
                    r.insert("source_call_id".into(), json!(id));
                }
                r.insert("content".into(), json!(text_of(&s.result.content)));
                Value::Object(r)
            })
            .collect();
        let writes: Vec<Value> = idx
            .iter()
            .flat_map(|&i| t.steps[i].writes.iter().map(move |w| json!({"step": i, "write": w})))
            .collect();
        (json!({ "results": results }), writes)
    };
    if t.turns.is_empty() {
        // a model-free agent: the task, then one agent step per tool call
        let mut u = Map::new();
        u.insert("source".into(), json!("user"));
        u.insert("message".into(), json!(header.instruction));
        push(&mut steps, u);
        for (i, s) in t.steps.iter().enumerate() {
            let id = s.call_id.clone().unwrap_or_else(|| format!("call_{i}"));
            let mut a = Map::new();
            a.insert("source".into(), json!("agent"));
            a.insert("message".into(), json!(""));
            a.insert(
                "tool_calls".into(),
                json!([{"tool_call_id": id, "function_name": s.call.name, "arguments": s.call.arguments}]),
            );
            a.insert(
                "observation".into(),
                json!({"results": [{"source_call_id": id, "content": text_of(&s.result.content)}]}),
            );
            if !s.writes.is_empty() {
                a.insert("extra".into(), json!({"fhir_writes": s.writes}));
            }
            push(&mut steps, a);
        }
    } else {
        for (ti, turn) in t.turns.iter().enumerate() {
            for m in &turn.sent {
                let role = m.get("role").and_then(Value::as_str).unwrap_or("");
                let content = m.get("content").map(text_of).unwrap_or_default();
                let source = match role {
                    "system" => "system",
                    "user" if content.starts_with("<tool_response>") => continue, // in the observation
                    "user" => "user",
                    _ => continue, // tool results: in the previous agent step's observation
                };
                let mut st = Map::new();
                st.insert("source".into(), json!(source));
                st.insert("message".into(), json!(content));
                push(&mut steps, st);
            }
            let mut a = Map::new();
            a.insert("source".into(), json!("agent"));
            if let Some(m) = &model_name {
                a.insert("model_name".into(), json!(m));
            }
            a.insert("message".into(), json!(turn.text.clone().unwrap_or_default()));
            if !turn.tool_calls.is_empty() {
                let calls: Vec<Value> = turn
                    .tool_calls
                    .iter()
                    .map(|c| {
                        let parsed = serde_json::from_str::<Value>(&c.arguments).ok().filter(Value::is_object);
                        let mut o = json!({
                            "tool_call_id": c.id,
                            "function_name": c.name,
                            "arguments": parsed.clone().unwrap_or_else(|| json!({})),
                        });
                        if parsed.is_none() {
                            o["extra"] = json!({"raw_arguments": c.arguments, "malformed": true});
                        }
                        o
                    })
                    .collect();
                a.insert("tool_calls".into(), Value::Array(calls));
            }
            let idx: Vec<usize> = (0..t.steps.len()).filter(|&i| t.steps[i].turn == Some(ti)).collect();
            let mut extra = Map::new();
            if !idx.is_empty() {
                let (obs, writes) = observation(t, &idx);
                a.insert("observation".into(), obs);
                if !writes.is_empty() {
                    extra.insert("fhir_writes".into(), Value::Array(writes));
                }
            }
            a.insert(
                "metrics".into(),
                json!({"prompt_tokens": turn.prompt_tokens, "completion_tokens": turn.completion_tokens}),
            );
            extra.insert("latency_ms".into(), json!(turn.latency_ms));
            extra.insert("request_sha256".into(), json!(turn.request_sha256));
            if let Some(f) = &turn.finish_reason {
                extra.insert("finish_reason".into(), json!(f));
            }
            a.insert("extra".into(), Value::Object(extra));
            push(&mut steps, a);
        }
    }
    let mut agent = Map::new();
    agent.insert("name".into(), json!(format!("emrgym-{}", header.agent)));
    agent.insert("version".into(), json!(header.emrgym_version));
    if let Some(m) = &model_name {
        agent.insert("model_name".into(), json!(m));
    }
    agent.insert("extra".into(), json!({"mode": header.mode, "model": header.model}));
    let total_steps = steps.len();
    let mut extra = json!({
        "emrgym_trajectory_format": header.format_version,
        "scenario": header.scenario,
        "trial": header.trial,
        "seed": header.seed,
        "episode_seed": header.episode_seed,
        "now": header.now,
        "cohort": header.cohort,
        "tool_catalogue_sha256": header.tool_catalogue_sha256,
        "end_reason": t.end,
        "htn_transitions": t.htn,
    });
    if let Some(d) = &t.detail {
        extra["end_detail"] = json!(d);
    }
    if let Some(g) = grade {
        extra["grade"] = g.clone();
    }
    json!({
        "schema_version": SCHEMA_VERSION,
        "session_id": format!("{}.{}", header.scenario.instance, header.trial),
        "agent": agent,
        "steps": steps,
        "notes": "Exported by emrgym from its JSONL trajectory; FHIR writes, HTN transitions, the end reason and the grade are under extra.",
        "final_metrics": {
            "total_prompt_tokens": t.turns.iter().map(|x| x.prompt_tokens).sum::<u64>(),
            "total_completion_tokens": t.turns.iter().map(|x| x.completion_tokens).sum::<u64>(),
            "total_steps": total_steps,
        },
        "extra": extra,
    })
}

/// Check the ATIF invariants a consumer relies on: required fields, sequential step ids from
/// 1, sources, agent-only fields, and every observation's `source_call_id` naming a tool call
/// of its step. Returns every problem found.
pub fn validate(v: &Value) -> Vec<String> {
    let mut errs = Vec::new();
    for k in ["schema_version", "session_id", "agent", "steps"] {
        if v.get(k).is_none() {
            errs.push(format!("missing {k}"));
        }
    }
    for k in ["name", "version"] {
        if v["agent"].get(k).and_then(Value::as_str).is_none() {
            errs.push(format!("agent.{k} must be a string"));
        }
    }
    let Some(steps) = v["steps"].as_array() else {
        errs.push("steps must be an array".into());
        return errs;
    };
    for (i, s) in steps.iter().enumerate() {
        if s["step_id"].as_u64() != Some(i as u64 + 1) {
            errs.push(format!("steps[{i}].step_id is {}, expected {}", s["step_id"], i + 1));
        }
        let source = s["source"].as_str().unwrap_or("");
        if !matches!(source, "system" | "user" | "agent") {
            errs.push(format!("steps[{i}].source {source:?}"));
        }
        if !s["message"].is_string() {
            errs.push(format!("steps[{i}].message must be a string"));
        }
        if source != "agent" {
            for k in ["tool_calls", "metrics", "model_name", "reasoning_content"] {
                if s.get(k).is_some() {
                    errs.push(format!("steps[{i}].{k} on a {source} step"));
                }
            }
        }
        let ids: Vec<&str> = s["tool_calls"]
            .as_array()
            .map(|a| a.iter().filter_map(|c| c["tool_call_id"].as_str()).collect())
            .unwrap_or_default();
        for c in s["tool_calls"].as_array().into_iter().flatten() {
            if !c["function_name"].is_string() || !c["arguments"].is_object() || !c["tool_call_id"].is_string() {
                errs.push(format!(
                    "steps[{i}]: a tool call lacks tool_call_id, function_name or object arguments"
                ));
            }
        }
        for r in s["observation"]["results"].as_array().into_iter().flatten() {
            if let Some(id) = r.get("source_call_id").and_then(Value::as_str)
                && !ids.contains(&id)
            {
                errs.push(format!("steps[{i}]: observation for unknown call {id}"));
            }
        }
    }
    errs
}
