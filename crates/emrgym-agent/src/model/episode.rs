//! The model episode loop: [`run_model_episode`] and the hooks an episode can be given
//! (guidance, recording, cancellation).

use super::Briefing;
use super::{
    Backend, CUT_REPLIES_TO_END, Cassette, Limits, ToolProtocol, cut_note, degenerate, degenerate_note, fit_result, is_cut, repeated_write,
    request_hash, stuck_cycle, system_prompt, user_prompt,
};
use emrgym_scenario::trajectory::{EndReason, RawCall, Step, ToolCall, ToolResult, Trajectory, Turn};
use emrgym_tools::{FhirBackend, Registry};
use serde_json::{Value, json};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// Guided-mode guidance: asked after every step for the text to add to the next request.
pub type GuidanceFn<'a> = &'a mut (dyn FnMut(&[Step]) -> Option<String> + Send);

/// What an episode can be hooked up to besides the model and the tools.
#[derive(Default)]
pub struct Hooks<'a> {
    /// Guided mode: asked after every step for the text to add to the next request (the
    /// steps that can be done now); it must never reveal a branch.
    pub guidance: Option<GuidanceFn<'a>>,
    /// Record every reply under its request hash.
    pub record: Option<&'a Cassette>,
    /// Cancellation (Ctrl-C): the episode ends `cancelled` at once, even mid-request.
    pub cancel: Option<CancellationToken>,
}

/// Stands for "no wall-time limit" (about 31 years).
const NO_WALL_LIMIT: Duration = Duration::from_secs(1 << 30);

/// Run one model episode.
pub async fn run_model_episode(
    backend: &Backend,
    registry: &Registry,
    fhir: &mut (dyn FhirBackend + Send),
    briefing: &Briefing,
    limits: Limits,
    hooks: Hooks<'_>,
) -> Trajectory {
    let Hooks {
        mut guidance,
        record,
        cancel,
    } = hooks;
    let cancel = cancel.unwrap_or_default();
    // the episode's own handle: an in-process model keeps this conversation on one sequence
    let episode_backend = backend.for_episode();
    let backend: &Backend = &episode_backend;
    let protocol = backend.protocol();
    let tools = registry.openai_tools();
    let mut messages: Vec<Value> = vec![
        json!({"role": "system", "content": system_prompt(briefing, protocol, &tools)}),
        json!({"role": "user", "content": user_prompt(briefing)}),
    ];
    let mut traj = Trajectory::new(Vec::new(), EndReason::Stopped);
    let started = Instant::now();
    let deadline = if limits.timeout_s > 0.0 && limits.timeout_s.is_finite() {
        Duration::from_secs_f64(limits.timeout_s.min(NO_WALL_LIMIT.as_secs_f64()))
    } else {
        NO_WALL_LIMIT
    };
    let mut tokens = 0u64;
    let mut parse_errors = 0u32;
    let mut cut_replies = 0u32;
    let mut degenerate_replies = 0u32;
    let mut last_guidance: Option<String> = None;
    let mut sent_upto = 0usize;
    loop {
        if cancel.is_cancelled() {
            traj.end = EndReason::Cancelled;
            traj.detail = Some("the run was interrupted".into());
            return traj;
        }
        if traj.turns.len() as u32 >= limits.max_turns {
            traj.end = EndReason::MaxTurns;
            return traj;
        }
        if limits.max_tokens > 0 && tokens >= limits.max_tokens {
            traj.end = EndReason::MaxTokens;
            traj.detail = Some(format!(
                "token budget: the episode used {tokens} tokens of its {}",
                limits.max_tokens
            ));
            return traj;
        }
        if let Some(g) = guidance.as_mut()
            && let Some(text) = g(&traj.steps)
            && last_guidance.as_ref() != Some(&text)
        {
            messages.push(json!({"role": "user", "content": text.clone()}));
            last_guidance = Some(text);
        }
        let remaining = if limits.timeout_s > 0.0 {
            let Some(r) = deadline.checked_sub(started.elapsed()) else {
                traj.end = EndReason::Timeout;
                traj.detail = Some(format!("episode wall time of {} s exceeded", limits.timeout_s));
                return traj;
            };
            r
        } else {
            NO_WALL_LIMIT
        };
        let hash = request_hash(&messages, &tools);
        let sent: Vec<Value> = messages[sent_upto..]
            .iter()
            .filter(|m| m.get("role").and_then(Value::as_str) != Some("assistant"))
            .cloned()
            .collect();
        sent_upto = messages.len();
        let t0 = Instant::now();
        let request = tokio::time::timeout(remaining, backend.complete(&messages, &tools));
        let reply = match tokio::select! {
            r = request => Some(r),
            () = cancel.cancelled() => None,
        } {
            None => {
                traj.end = EndReason::Cancelled;
                traj.detail = Some("the run was interrupted during a model request".into());
                return traj;
            }
            Some(Err(_)) => {
                traj.end = EndReason::Timeout;
                traj.detail = Some(format!("episode wall time of {} s exceeded", limits.timeout_s));
                return traj;
            }
            Some(Ok(Err(e))) => {
                traj.end = e.end_reason();
                traj.detail = Some(e.to_string());
                return traj;
            }
            Some(Ok(Ok(r))) => r,
        };
        if let Some(c) = record {
            c.record(hash.clone(), reply.clone());
        }
        tokens += reply.prompt_tokens + reply.completion_tokens;
        let turn_index = traj.turns.len();
        traj.turns.push(Turn {
            request_sha256: hash,
            messages: messages.len(),
            sent,
            text: reply.text.clone(),
            tool_calls: reply
                .tool_calls
                .iter()
                .map(|(id, name, arguments)| RawCall {
                    id: id.clone(),
                    name: name.clone(),
                    arguments: arguments.clone(),
                })
                .collect(),
            prompt_tokens: reply.prompt_tokens,
            completion_tokens: reply.completion_tokens,
            latency_ms: t0.elapsed().as_millis() as u64,
            finish_reason: reply.finish_reason.clone(),
        });
        // a reply the reply cap cut before its call was complete is answered, not parsed: it is
        // the harness's limit, not a malformed call (docs/agent.md, "Harness failures")
        // A cut reply that ends repeating one short pattern is degenerate: the model's failure,
        // which a longer cap would not have avoided; only when every cut reply of the run was
        // degenerate is the end the model's, else it stays the reply cap's.
        if is_cut(&reply) {
            cut_replies += 1;
            let repeated = degenerate(&reply);
            degenerate_replies += u32::from(repeated.is_some());
            if cut_replies >= CUT_REPLIES_TO_END {
                if degenerate_replies == cut_replies
                    && let Some(r) = &repeated
                {
                    traj.end = EndReason::Degenerate;
                    traj.detail = Some(format!(
                        "degenerate: {cut_replies} replies in a row ended repeating one pattern until stopped (the last: {:?}, {} bytes of its end, after {} tokens)",
                        r.pattern, r.span, reply.completion_tokens
                    ));
                } else {
                    traj.end = EndReason::MaxTokens;
                    traj.detail = Some(format!(
                        "reply cap: {cut_replies} replies in a row were cut at {} tokens before the call was complete",
                        reply.completion_tokens
                    ));
                }
                return traj;
            }
            let note = match &repeated {
                Some(r) => degenerate_note(reply.completion_tokens, r),
                None => cut_note(reply.completion_tokens),
            };
            messages.push(json!({"role": "assistant", "content": reply.text.clone().unwrap_or_default()}));
            messages.push(json!({"role": "user", "content": note}));
            continue;
        }
        cut_replies = 0;
        degenerate_replies = 0;
        if reply.tool_calls.is_empty() {
            traj.end = EndReason::Stopped;
            traj.detail = reply.text.clone();
            return traj;
        }
        // the assistant message, with malformed arguments repaired to valid JSON
        let mut parsed: Vec<(String, String, Result<Value, String>)> = Vec::new();
        for (id, name, raw) in &reply.tool_calls {
            let args = if raw.trim().is_empty() {
                Ok(json!({}))
            } else {
                serde_json::from_str::<Value>(raw).map_err(|e| {
                    format!("the arguments of {name} are not valid JSON: {e}. Send the call again with a JSON object of arguments.")
                })
            };
            let args = match args {
                Ok(Value::Object(m)) => Ok(Value::Object(m)),
                Ok(other) => Err(format!("the arguments of {name} must be a JSON object, got {other}")),
                Err(e) => Err(e),
            };
            let name = if name.is_empty() {
                "(missing name)".to_string()
            } else {
                name.clone()
            };
            parsed.push((id.clone(), name, args));
        }
        let all_bad = parsed.iter().all(|(_, _, a)| a.is_err());
        match protocol {
            ToolProtocol::Native => messages.push(json!({
                "role": "assistant",
                "content": reply.text.clone().unwrap_or_default(),
                "tool_calls": parsed.iter().map(|(id, name, a)| json!({
                    "id": id, "type": "function",
                    "function": {"name": name, "arguments": a.as_ref().map(|v| v.to_string()).unwrap_or_else(|_| "{}".into())}
                })).collect::<Vec<_>>()
            })),
            ToolProtocol::Text => {
                let text = parsed
                    .iter()
                    .map(|(_, name, a)| {
                        format!(
                            "<tool_call>\n{}\n</tool_call>",
                            json!({"name": name, "arguments": a.as_ref().cloned().unwrap_or_else(|_| json!({}))})
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("\n");
                messages.push(json!({"role": "assistant", "content": text}));
            }
        }
        let mut finished = false;
        for (id, name, args) in parsed {
            let content = match args {
                Err(msg) => json!({"error": msg}),
                Ok(a) => {
                    if traj.steps.len() as u32 >= limits.max_steps {
                        traj.end = EndReason::MaxSteps;
                        return traj;
                    }
                    let mut obs = registry.call(&name, &a, fhir);
                    finished |= obs.ok && obs.answer.is_some();
                    // a result too long for the conversation is shortened with a note on how
                    // to ask for less; the step records what the model was shown
                    obs.content = fit_result(obs.content, limits.max_result_chars).0;
                    let mut step = Step::new(
                        ToolCall {
                            name: name.clone(),
                            arguments: a,
                        },
                        ToolResult {
                            ok: obs.ok,
                            status: obs.status,
                            content: obs.content.clone(),
                        },
                    );
                    step.turn = Some(turn_index);
                    step.call_id = Some(id.clone());
                    traj.steps.push(step);
                    if let Some(period) = (!finished).then(|| stuck_cycle(&traj.steps, limits.max_repeats)).flatten() {
                        let call = |s: &Step| format!("{} {}", s.call.name, s.call.arguments);
                        let n = traj.steps.len();
                        traj.end = EndReason::Stuck;
                        traj.detail = Some(if period == 1 {
                            format!(
                                "stuck: the same call ({}) got the same result {} times in a row",
                                call(&traj.steps[n - 1]),
                                limits.max_repeats
                            )
                        } else {
                            format!(
                                "stuck: the same {period} calls ({}) got the same results {} times in a row",
                                traj.steps[n - period..].iter().map(call).collect::<Vec<_>>().join("; "),
                                limits.max_repeats
                            )
                        });
                        return traj;
                    }
                    if !finished && repeated_write(&traj.steps, limits.max_repeats) {
                        traj.end = EndReason::Stuck;
                        traj.detail = Some(format!(
                            "stuck: the same write ({name} {}) was made {} times",
                            traj.steps
                                .last()
                                .map(|s| s.call.arguments["resource_type"].to_string())
                                .unwrap_or_default(),
                            limits.max_repeats
                        ));
                        return traj;
                    }
                    obs.content
                }
            };
            match protocol {
                ToolProtocol::Native => messages.push(json!({"role": "tool", "tool_call_id": id, "content": content.to_string()})),
                ToolProtocol::Text => {
                    messages.push(json!({"role": "user", "content": format!("<tool_response>\n{content}\n</tool_response>")}))
                }
            }
            if finished {
                traj.end = EndReason::Finished;
                return traj;
            }
        }
        if all_bad {
            parse_errors += 1;
            if parse_errors >= limits.max_parse_errors {
                traj.end = EndReason::ToolCallParseError;
                traj.detail = Some(format!("{parse_errors} consecutive turns without a parseable tool call"));
                return traj;
            }
        } else {
            parse_errors = 0;
        }
    }
}
