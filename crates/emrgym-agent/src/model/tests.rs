//! Unit tests of the model module: prompts, reply parsing, cut replies, fitted results and
//! the default reply cap.

use super::*;
use serde_json::{Value, json};

#[test]
fn the_system_prompt_is_the_same_for_every_episode_and_the_now_is_in_the_task() {
    let b = |now: &str, instruction: &str, context: &str| Briefing {
        instruction: instruction.into(),
        context: context.into(),
        now: now.into(),
        fhir_base: "http://emrgym.local/fhir".into(),
    };
    let (x, y) = (
        b("2023-11-13T10:15:00+00:00", "Task A", ""),
        b("2024-02-01T08:00:00+00:00", "Task B", "K 3.1"),
    );
    let tools = json!([]);
    assert_eq!(
        system_prompt(&x, ToolProtocol::Native, &tools),
        system_prompt(&y, ToolProtocol::Native, &tools)
    );
    assert!(!system_prompt(&x, ToolProtocol::Native, &tools).contains("2023"));
    assert_eq!(user_prompt(&x), "It is now 2023-11-13T10:15:00+00:00.\n\nTask A");
    assert_eq!(user_prompt(&y), "It is now 2024-02-01T08:00:00+00:00.\n\nTask B\n\nContext: K 3.1");
}

fn reply(content: &str) -> Value {
    json!({"choices": [{"finish_reason": "stop", "message": {"role": "assistant", "content": content}}]})
}

#[test]
fn bare_and_fenced_json_calls_are_tool_calls() {
    let r = parse_reply(
        &reply("{\"name\": \"fhir_read\", \"arguments\": {\"id\": \"1\"}}"),
        ToolProtocol::Native,
    )
    .unwrap();
    assert_eq!(
        r.tool_calls,
        vec![("call_1".to_string(), "fhir_read".to_string(), "{\"id\":\"1\"}".to_string())]
    );
    assert!(r.text.is_none());
    let r = parse_reply(
        &reply("```json\n{\"name\": \"finish\", \"arguments\": {\"answer\": 3}}\n```"),
        ToolProtocol::Native,
    )
    .unwrap();
    assert_eq!(r.tool_calls[0].1, "finish");
    // prose, or JSON that is not a call, stays text
    for t in ["The answer is 42.", "{\"answer\": 42}", "{\"name\": \"x\", \"arguments\": 3}"] {
        let r = parse_reply(&reply(t), ToolProtocol::Native).unwrap();
        assert!(r.tool_calls.is_empty() && r.text.as_deref() == Some(t), "{t}");
    }
    let r = parse_reply(
        &reply("Let me look.\n<tool_call>\n{\"name\": \"fhir_read\", \"arguments\": {}}\n</tool_call>"),
        ToolProtocol::Text,
    )
    .unwrap();
    assert_eq!(r.tool_calls[0].1, "fhir_read");
    assert_eq!(r.text.as_deref(), Some("Let me look."));
    assert!(parse_reply(&json!({"error": "x"}), ToolProtocol::Native).is_err());
    // several calls back to back
    let r = parse_reply(
        &reply("{\"name\": \"a\", \"arguments\": {}}\n{\"name\": \"b\", \"arguments\": {\"x\": 1}}"),
        ToolProtocol::Native,
    )
    .unwrap();
    assert_eq!(r.tool_calls.iter().map(|c| c.1.as_str()).collect::<Vec<_>>(), vec!["a", "b"]);
    assert_eq!(r.tool_calls[1].0, "call_2");
}

#[test]
fn doubled_brace_calls_are_read_and_nothing_else_changes() {
    let doubled = "{{\"name\": \"fhir_read\", \"arguments\": {\"resource_type\": \"Patient\", \"id\": \"S1\"}}}";
    let v = undouble_braces(doubled).unwrap();
    assert_eq!(v["name"], "fhir_read");
    assert_eq!(v["arguments"]["id"], "S1");
    // in a <tool_call> block, bare, and in the text protocol
    for text in [format!("<tool_call>\n{doubled}\n</tool_call>"), doubled.to_string()] {
        let r = parse_reply(&reply(&text), ToolProtocol::Native).unwrap();
        assert_eq!(r.tool_calls.len(), 1, "{text}");
        assert_eq!(r.tool_calls[0].1, "fhir_read");
        assert_eq!(r.tool_calls[0].2, "{\"resource_type\":\"Patient\",\"id\":\"S1\"}");
    }
    // a normal call, two calls, a call-less object: not touched
    assert!(undouble_braces("{\"name\": \"a\", \"arguments\": {\"x\": {\"y\": 1}}}").is_none());
    assert!(undouble_braces("{{\"answer\": 1}}").is_none());
    assert!(undouble_braces("{\"name\": \"a\", \"arguments\": {}}\n{\"name\": \"b\", \"arguments\": {}}").is_none());
}

fn cut(finish: &str, calls: &[&str]) -> Reply {
    Reply {
        text: None,
        tool_calls: calls
            .iter()
            .map(|a| ("c".to_string(), "fhir_read".to_string(), a.to_string()))
            .collect(),
        prompt_tokens: 0,
        completion_tokens: 7,
        finish_reason: Some(finish.into()),
    }
}

#[test]
fn a_reply_is_cut_only_when_the_cap_stopped_it_before_the_call_was_complete() {
    assert!(is_cut(&cut("length", &["{\"resource_type\": \"Pat"])));
    assert!(is_cut(&cut("length", &[])), "cut before any call");
    assert!(
        !is_cut(&cut("length", &["{\"id\": \"1\"}"])),
        "a complete call at the cap is a call"
    );
    assert!(!is_cut(&cut("tool_calls", &["{\"resource_type\": \"Pat"])), "malformed, not cut");
    assert!(!is_cut(&cut("stop", &[])));
    assert_eq!(
        cut_note(7),
        "Your reply was cut at 7 tokens before the call was complete; write a shorter call."
    );
    assert!(cut_note(0).contains("cut at the reply limit"));
}

#[test]
fn long_results_are_fitted_and_short_ones_are_untouched() {
    let entries: Vec<Value> = (0..50)
        .map(|i| json!({"resource": {"resourceType": "Observation", "id": format!("o{i}"), "note": "x".repeat(100)}}))
        .collect();
    let bundle = json!({"resourceType": "Bundle", "type": "searchset", "total": 50, "entry": entries});
    let (same, cut) = fit_result(bundle.clone(), 100_000);
    assert!(!cut);
    assert_eq!(same, bundle);
    let (fitted, cut) = fit_result(bundle.clone(), 2_000);
    assert!(cut);
    let text = fitted.to_string();
    assert!(text.len() <= 2_000, "{}", text.len());
    let kept = fitted["entry"].as_array().unwrap();
    assert!(!kept.is_empty() && kept.len() < 50);
    assert_eq!(
        kept[..],
        bundle["entry"].as_array().unwrap()[..kept.len()],
        "the first entries, in order"
    );
    let note = fitted["emrgym_note"].as_str().unwrap();
    assert!(note.contains(&format!("the first {} of its 50 entries", kept.len())), "{note}");
    assert_eq!(fitted["total"], 50, "the rest of the Bundle is kept");
    // the entry that would just not fit is left out: one more would pass the limit
    let mut one_more = fitted.clone();
    one_more["entry"].as_array_mut().unwrap().push(bundle["entry"][kept.len()].clone());
    assert!(one_more.to_string().len() > 2_000);
    // not a Bundle: cut text with the note
    let big = json!({"resourceType": "Patient", "text": "y".repeat(10_000)});
    let (fitted, cut) = fit_result(big, 3_000);
    assert!(cut);
    assert_eq!(fitted["truncated"], true);
    assert!(fitted.to_string().len() <= 3_000);
    assert!(fitted["emrgym_note"].as_str().unwrap().contains("only its beginning"));
    // 0: no limit
    assert!(!fit_result(bundle, 0).1);
}

#[test]
fn the_default_reply_cap_is_the_rule_applied_to_the_measured_largest_call() {
    // docs/agent.md: the next power of two at or above twice the largest reference call
    // (470 tokens pretty-printed, Qwen2.5 tokenizer, `emrgym model budget`)
    let largest = 470u32;
    assert_eq!(DEFAULT_REPLY_TOKENS, (2 * largest).next_power_of_two());
    assert_eq!(LlamaConfig::for_model("m.gguf".into()).max_reply_tokens, DEFAULT_REPLY_TOKENS);
    let cfg: LlamaConfig = serde_json::from_value(json!({"model_path": "m.gguf"})).unwrap();
    assert_eq!(
        (cfg.max_reply_tokens, cfg.n_ctx),
        (DEFAULT_REPLY_TOKENS, 0),
        "0: the model's trained context"
    );
}

#[test]
fn the_request_hash_is_over_the_same_bytes_as_before_so_recorded_cassettes_still_match() {
    use sha2::{Digest, Sha256};
    let messages = vec![json!({"role": "user", "content": "Patient S6426560: latest potassium?"})];
    let tools = json!([{"type": "function", "function": {"name": "fhir_search", "parameters": {"type": "object"}}}]);
    // the hash cassettes were recorded with: serde_json::to_vec of the same value
    let bytes = serde_json::to_vec(&json!({"messages": messages, "tools": tools})).unwrap();
    assert_eq!(request_hash(&messages, &tools), emrgym_core::hex(&Sha256::digest(&bytes)));
}

#[test]
fn a_bad_model_spec_is_refused_naming_the_spec() {
    let e = OpenAiConfig::from_spec("gpt-4o-mini").unwrap_err();
    assert_eq!(e, SpecError::NoAt("gpt-4o-mini".into()));
    assert!(
        e.to_string().contains("'gpt-4o-mini'") && e.to_string().contains("MODEL@BASE_URL"),
        "{e}"
    );
    let e = OpenAiConfig::from_spec("m@ftp://host").unwrap_err();
    assert_eq!(e, SpecError::NotAnHttpUrl("m@ftp://host".into()));
    assert!(OpenAiConfig::from_spec("@http://host").is_err(), "an empty model name");
    let ok = OpenAiConfig::from_spec("m@http://host/v1/").unwrap();
    assert_eq!((ok.model.as_str(), ok.base_url.as_str()), ("m", "http://host/v1"));
}

#[test]
fn one_sequence_is_not_written_so_earlier_manifests_keep_their_hash() {
    let one = LlamaConfig::for_model("m.gguf".into());
    let v = serde_json::to_value(&one).unwrap();
    assert!(v.get("parallel").is_none(), "{v}");
    let back: LlamaConfig = serde_json::from_value(v).unwrap();
    assert_eq!(back.parallel, 1);
    let four = LlamaConfig { parallel: 4, ..one };
    assert_eq!(serde_json::to_value(&four).unwrap()["parallel"], 4);
}

#[test]
fn a_reply_is_degenerate_only_when_its_end_repeats_one_short_visible_pattern_long_enough() {
    use super::{REPEAT_COPIES, REPEAT_MAX_PERIOD, REPEAT_MIN_SPAN, degenerate, repetition};
    let r = repetition(&format!("{{\"id\": \"{}", "1.".repeat(200))).unwrap();
    assert_eq!((r.period, r.span, r.pattern.as_str()), (2, 400, "1."));
    // the shortest period is named, not a multiple of it
    assert_eq!(repetition(&"ab".repeat(300)).unwrap().period, 2);
    // exactly the span, and one byte short of it
    assert_eq!(repetition(&"x".repeat(REPEAT_MIN_SPAN)).unwrap().span, REPEAT_MIN_SPAN);
    assert_eq!(repetition(&format!("{{{}", "x".repeat(REPEAT_MIN_SPAN - 1))), None);
    // the longest period, four times; one byte longer is not looked for
    let long: String = (0..REPEAT_MAX_PERIOD)
        .map(|i| char::from(b'A' + (i % 26) as u8))
        .collect::<String>();
    let long = format!("{long}!");
    assert_eq!(long.len(), REPEAT_MAX_PERIOD + 1);
    assert_eq!(repetition(&long[1..].repeat(REPEAT_COPIES)).unwrap().period, REPEAT_MAX_PERIOD);
    assert_eq!(repetition(&long.repeat(5)), None);
    // a long pattern needs its copies even past the span: a 111-byte sentence three times
    // (333 bytes) is not enough, four times is
    let sentence = format!("{} ", "It is a medication that is used to treat heart disease".repeat(2));
    assert!(sentence.len() > REPEAT_MIN_SPAN / REPEAT_COPIES && 3 * sentence.len() >= REPEAT_MIN_SPAN);
    assert_eq!(repetition(&format!("{{{}", sentence.repeat(3))), None);
    assert_eq!(repetition(&format!("{{{}", sentence.repeat(4))).unwrap().pattern, sentence);
    // a repetition that stopped before the end is not degenerate: the reply went on
    assert_eq!(repetition(&format!("{}\"}}", "1.".repeat(300))), None);
    // whitespace alone is left to the reply cap
    assert_eq!(repetition(&format!("{{\"a\": 1,{}", " \n".repeat(300))), None);
    // UTF-8: the pattern is whole characters when the period is
    assert_eq!(repetition(&"é".repeat(200)).unwrap().pattern, "é");
    // a reply: its text, or the argument text of a call
    let reply = |text: Option<String>, args: String| Reply {
        text,
        tool_calls: vec![("c".into(), "fhir_read".into(), args)],
        prompt_tokens: 0,
        completion_tokens: 0,
        finish_reason: Some("length".into()),
    };
    assert!(degenerate(&reply(None, format!("{{\"id\": \"{}", "0".repeat(300)))).is_some());
    assert!(degenerate(&reply(Some("ha".repeat(200)), "{}".into())).is_some());
    assert!(degenerate(&reply(Some("Let me look.".into()), "{\"id\": \"S1".into())).is_none());
}

/// A step: the call `name(args)` answered with `status` and `content`.
fn step(name: &str, args: Value, status: u16, content: Value) -> emrgym_scenario::trajectory::Step {
    use emrgym_scenario::trajectory::{Step, ToolCall, ToolResult};
    Step::new(
        ToolCall {
            name: name.into(),
            arguments: args,
        },
        ToolResult {
            ok: status < 400,
            status,
            content,
        },
    )
}

#[test]
fn an_agent_is_stuck_only_when_one_call_got_one_result_the_last_n_times() {
    use emrgym_scenario::trajectory::{Step, ToolResult};
    let read = || {
        step(
            "fhir_read",
            json!({"resource_type": "Patient", "id": "S1"}),
            200,
            json!({"id": "S1"}),
        )
    };
    let four: Vec<Step> = (0..4).map(|_| read()).collect();
    assert!(stuck(&four, 4));
    assert!(stuck(&four, 3), "the last three are enough for a limit of three");
    assert!(!stuck(&four[..3], 4), "three of four");
    assert!(!stuck(&four, 0), "0 is no limit");
    assert!(!stuck(&four, 5), "fewer steps than the limit");
    // argument order does not make two calls different (JSON objects compare by key)
    let mut reordered = four.clone();
    reordered[1].call.arguments = serde_json::from_str(r#"{"id": "S1", "resource_type": "Patient"}"#).unwrap();
    assert!(stuck(&reordered, 4));
    // another argument, another result or another status in the window: not stuck
    let mut other = four.clone();
    other[2].call.arguments = json!({"resource_type": "Patient", "id": "S2"});
    assert!(!stuck(&other, 4));
    let mut changed = four.clone();
    changed[3].result.content = json!({"id": "S1", "meta": {"versionId": "2"}});
    assert!(!stuck(&changed, 4), "a result that changed told the agent something");
    let mut failed = four.clone();
    failed[0].result = ToolResult {
        ok: false,
        status: 404,
        content: json!({"id": "S1"}),
    };
    assert!(!stuck(&failed, 4));
    // only the last n count
    let mut late = vec![step("fhir_search", json!({"resource_type": "Patient"}), 200, json!({}))];
    late.extend(four.clone());
    assert!(stuck(&late, 4));
}

/// Two calls that alternate, each answered as before, `n` times in a row are a cycle of 2
/// (Qwen2.5-Coder-1.5B, flat, `horizon-16-001`: a search that found no one and a read of a
/// made-up id, 22 times to the step budget); one call repeated is a cycle of 1, whichever
/// is looked at first; a result that changed, or a third call, breaks the cycle.
#[test]
fn two_calls_alternating_with_the_same_results_n_times_are_a_stuck_cycle_of_two() {
    use emrgym_scenario::trajectory::Step;
    let search = || {
        step(
            "fhir_search",
            json!({"resource_type": "Patient", "params": {"name": "2000-05-12"}}),
            200,
            json!({"resourceType": "Bundle", "total": 0}),
        )
    };
    let read = || {
        step(
            "fhir_read",
            json!({"resource_type": "Patient", "id": "123"}),
            404,
            json!({"error": "not known"}),
        )
    };
    let cycle = |times: usize| -> Vec<Step> { (0..times).flat_map(|_| [search(), read()]).collect() };
    assert_eq!(stuck_cycle(&cycle(4), 4), Some(2));
    assert_eq!(stuck_cycle(&cycle(4)[..7], 4), None, "three cycles and a half");
    assert_eq!(stuck_cycle(&cycle(3), 4), None, "three cycles");
    assert_eq!(stuck_cycle(&cycle(3), 3), Some(2), "a limit of three");
    assert_eq!(stuck_cycle(&cycle(4), 0), None, "0 is no limit");
    assert!(!stuck(&cycle(4), 4), "the one-call limit does not see it");
    // starting on the other call of the pair, after other steps: still the cycle
    let mut late = vec![read()];
    late.extend(cycle(4));
    assert_eq!(stuck_cycle(&late, 4), Some(2));
    // one call repeated is a cycle of one (it is also a cycle of two, looked at second)
    let same: Vec<Step> = (0..8).map(|_| read()).collect();
    assert_eq!(stuck_cycle(&same, 4), Some(1));
    assert_eq!(stuck_cycle(&same[..4], 4), Some(1));
    // a result that changed in the window, or another call in it: no cycle
    let mut changed = cycle(4);
    changed[2].result.content = json!({"resourceType": "Bundle", "total": 1});
    assert_eq!(stuck_cycle(&changed, 4), None);
    let mut third = cycle(4);
    third[5].call.arguments = json!({"resource_type": "Patient", "id": "124"});
    assert_eq!(stuck_cycle(&third, 4), None);
    // a cycle of three is not looked for
    let three: Vec<Step> = (0..4)
        .flat_map(|_| {
            [
                search(),
                read(),
                step("fhir_search", json!({"resource_type": "Patient"}), 200, json!({"total": 120})),
            ]
        })
        .collect();
    assert_eq!(stuck_cycle(&three, 4), None);
}

#[test]
fn the_same_write_made_n_times_anywhere_in_the_episode_is_stuck_whatever_id_it_was_given() {
    use emrgym_scenario::trajectory::{Step, ToolCall, ToolResult};
    let step = |name: &str, args: Value| {
        Step::new(
            ToolCall {
                name: name.into(),
                arguments: args,
            },
            ToolResult {
                ok: true,
                status: 201,
                content: json!({}),
            },
        )
    };
    let create = |id: &str, value: f64| {
        step(
            "fhir_create",
            json!({"resource_type": "Observation", "resource": {"resourceType": "Observation", "id": id,
                "meta": {"versionId": "1", "lastUpdated": format!("2023-11-13T10:{id}:00Z")},
                "status": "final", "subject": {"reference": "Patient/S1"}, "valueQuantity": {"value": value}}}),
        )
    };
    let read = |id: &str| step("fhir_read", json!({"resource_type": "Observation", "id": id}));
    // create, read the new id, create again with the next id...: no call repeats with its result
    let mut steps = Vec::new();
    for i in 0..4 {
        steps.push(create(&format!("obs-{}", 50 + i), 7.1));
        assert_eq!(repeated_write(&steps, 4), i == 3, "after the create number {}", i + 1);
        steps.push(read(&format!("new-{i}")));
        assert!(!repeated_write(&steps, 4), "the last step is a read");
        assert!(!stuck(&steps, 4));
    }
    assert!(!repeated_write(&steps[..5], 4) && !repeated_write(&steps[..7], 0));
    assert!(repeated_write(&steps[..5], 3), "a limit of three: the third create");
    // another value is another write
    let mut other = steps[..6].to_vec();
    other.push(create("obs-99", 7.2));
    assert!(!repeated_write(&other, 4));
    // an update of one resource to one content, four times: stuck; to another target: not
    let update = |id: &str| {
        step(
            "fhir_update",
            json!({"resource_type": "MedicationRequest", "id": id, "resource": {"resourceType": "MedicationRequest", "id": id,
                "meta": {"versionId": "2"}, "status": "stopped"}}),
        )
    };
    let mut ups: Vec<Step> = (0..3).map(|_| update("m1")).collect();
    ups.push(update("m2"));
    assert!(!repeated_write(&ups, 4));
    ups.push(update("m1"));
    assert!(repeated_write(&ups, 4));
    // reads are never writes, however often they repeat
    let reads: Vec<Step> = (0..6).map(|i| read(&format!("x{}", i % 2))).collect();
    assert!(!repeated_write(&reads, 2));
}

#[test]
fn the_stuck_limit_is_four_by_default_and_none_in_a_configuration_recorded_before_it() {
    assert_eq!(Limits::default().max_repeats, 4);
    let mut old = serde_json::to_value(Limits::default()).unwrap();
    old.as_object_mut().unwrap().remove("max_repeats");
    let read: Limits = serde_json::from_value(old).unwrap();
    assert_eq!(read.max_repeats, 0, "an older run had no such limit, and resumes without one");
    // written back without it, so the older configuration's hash is unchanged
    let again = serde_json::to_value(read).unwrap();
    assert!(again.get("max_repeats").is_none(), "{again}");
    assert_eq!(serde_json::to_value(Limits::default()).unwrap()["max_repeats"], 4);
}
