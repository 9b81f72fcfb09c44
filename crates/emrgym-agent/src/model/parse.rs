//! Reply parsing: a chat-completions response to a [`Reply`], with native tool calls, the
//! text protocol's `<tool_call>` blocks, calls written as bare JSON and calls with doubled
//! braces.

use super::{BackendError, Reply, ToolProtocol};
use serde_json::Value;

/// A call written with doubled outer braces, `{{"name": ..., "arguments": {...}}}`, as the
/// Qwen2.5-Coder-1.5B chat template's system example shows it (its Jinja string has
/// `{{\"name\": ...}}`, which renders doubled): the call inside, when the inside is one
/// JSON object with a `name`. Anything else is left alone.
pub(crate) fn undouble_braces(body: &str) -> Option<Value> {
    let t = body.trim();
    let inner = t.strip_prefix('{')?.strip_suffix('}')?.trim();
    if !(inner.starts_with('{') && inner.ends_with('}')) {
        return None;
    }
    let v: Value = serde_json::from_str(inner).ok()?;
    v.get("name").and_then(Value::as_str)?;
    Some(v)
}

/// Parse `<tool_call>{"name": ..., "arguments": ...}</tool_call>` blocks from text.
pub(crate) fn parse_text_tool_calls(text: &str) -> (Option<String>, Vec<(String, String, String)>) {
    let mut calls = Vec::new();
    let mut rest = text;
    let mut plain = String::new();
    let mut n = 0;
    while let Some(i) = rest.find("<tool_call>") {
        plain.push_str(&rest[..i]);
        let after = &rest[i + "<tool_call>".len()..];
        let (body, next) = match after.find("</tool_call>") {
            Some(j) => (&after[..j], &after[j + "</tool_call>".len()..]),
            None => (after, ""),
        };
        n += 1;
        let body = body.trim();
        match serde_json::from_str::<Value>(body).ok().or_else(|| undouble_braces(body)).ok_or(()) {
            Ok(v) => {
                let name = v.get("name").and_then(Value::as_str).unwrap_or_default().to_string();
                let args = match v.get("arguments") {
                    Some(Value::String(s)) => s.clone(),
                    Some(other) => other.to_string(),
                    None => "{}".into(),
                };
                calls.push((format!("call_{n}"), name, args));
            }
            // an unparseable call keeps its raw text so the agent is told exactly what was wrong
            Err(_) => calls.push((format!("call_{n}"), String::new(), body.to_string())),
        }
        rest = next;
    }
    plain.push_str(rest);
    let plain = plain.trim().to_string();
    ((!plain.is_empty()).then_some(plain), calls)
}

/// A reply that is only JSON tool calls: one or more `{"name": ..., "arguments": {...}}`
/// objects (back to back, optionally in a ```json fence).
fn bare_json_calls(text: &str) -> Option<Vec<(String, String, String)>> {
    let t = text.trim();
    let t = t
        .strip_prefix("```json")
        .or_else(|| t.strip_prefix("```"))
        .map(|x| x.trim_end().trim_end_matches("```"))
        .unwrap_or(t)
        .trim();
    if let Some(v) = undouble_braces(t) {
        let args = v.get("arguments")?;
        return args.is_object().then(|| {
            vec![(
                "call_1".to_string(),
                v["name"].as_str().unwrap_or_default().to_string(),
                args.to_string(),
            )]
        });
    }
    let mut calls = Vec::new();
    for (i, v) in serde_json::Deserializer::from_str(t).into_iter::<Value>().enumerate() {
        let v = v.ok()?;
        let name = v.get("name")?.as_str()?.to_string();
        let args = v.get("arguments")?;
        if !args.is_object() {
            return None;
        }
        calls.push((format!("call_{}", i + 1), name, args.to_string()));
    }
    (!calls.is_empty()).then_some(calls)
}

/// Parse a chat-completions response.
pub(crate) fn parse_reply(v: &Value, protocol: ToolProtocol) -> Result<Reply, BackendError> {
    let choice = v
        .get("choices")
        .and_then(|c| c.get(0))
        .ok_or_else(|| BackendError::Other(format!("response has no choices: {}", truncate(&v.to_string(), 300))))?;
    let msg = choice.get("message").cloned().unwrap_or(Value::Null);
    let text = msg
        .get("content")
        .and_then(Value::as_str)
        .map(str::to_string)
        .filter(|s| !s.trim().is_empty());
    let mut tool_calls: Vec<(String, String, String)> = msg
        .get("tool_calls")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .enumerate()
                .map(|(i, c)| {
                    let id = c
                        .get("id")
                        .and_then(Value::as_str)
                        .map(str::to_string)
                        .unwrap_or_else(|| format!("call_{}", i + 1));
                    let f = c.get("function").cloned().unwrap_or(Value::Null);
                    let name = f.get("name").and_then(Value::as_str).unwrap_or_default().to_string();
                    let args = match f.get("arguments") {
                        Some(Value::String(s)) => s.clone(),
                        Some(Value::Null) | None => String::new(),
                        Some(other) => other.to_string(),
                    };
                    (id, name, args)
                })
                .collect()
        })
        .unwrap_or_default();
    let mut text = text;
    if (protocol == ToolProtocol::Text || tool_calls.is_empty())
        && let Some(t) = &text
        && t.contains("<tool_call>")
    {
        let (plain, calls) = parse_text_tool_calls(t);
        text = plain;
        tool_calls.extend(calls);
    }
    // small models often write the call as bare JSON (or in a ```json fence) without the
    // protocol's tags; a reply that is exactly one {"name", "arguments"} object is that call
    if tool_calls.is_empty()
        && let Some(t) = &text
        && let Some(calls) = bare_json_calls(t)
    {
        tool_calls = calls;
        text = None;
    }
    let usage = v.get("usage");
    let tok = |k: &str| usage.and_then(|u| u.get(k)).and_then(Value::as_u64).unwrap_or(0);
    Ok(Reply {
        text,
        tool_calls,
        prompt_tokens: tok("prompt_tokens"),
        completion_tokens: tok("completion_tokens"),
        finish_reason: choice.get("finish_reason").and_then(Value::as_str).map(str::to_string),
    })
}

fn truncate(s: &str, n: usize) -> String {
    if s.len() <= n {
        return s.to_string();
    }
    let mut end = n;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &s[..end])
}
