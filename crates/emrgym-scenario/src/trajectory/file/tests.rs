//! Round trips and version handling of the trajectory file.

use super::*;
use crate::trajectory::{FieldChange, json_changes};

fn sample() -> Trajectory {
    let mut read = Step::new(
        ToolCall {
            name: "fhir_read".into(),
            arguments: json!({"resource_type": "Patient", "id": "p1"}),
        },
        ToolResult {
            ok: true,
            status: 200,
            content: json!({"resourceType": "Patient", "id": "p1"}),
        },
    );
    read.turn = Some(0);
    read.call_id = Some("c0".into());
    let mut create = Step::new(
        ToolCall {
            name: "fhir_create".into(),
            arguments: json!({"resource_type": "Observation", "resource": {"status": "final"}}),
        },
        ToolResult {
            ok: true,
            status: 201,
            content: json!({"resourceType": "Observation", "id": "o1"}),
        },
    );
    create.turn = Some(1);
    create.call_id = Some("c1".into());
    create.writes.push(FhirWrite {
        interaction: "create".into(),
        resource_type: "Observation".into(),
        id: "o1".into(),
        version: 1,
        changes: Vec::new(),
        resource: Some(json!({"resourceType": "Observation", "id": "o1"})),
    });
    let mut finish = Step::new(
        ToolCall {
            name: "finish".into(),
            arguments: json!({"answer": 42}),
        },
        ToolResult {
            ok: true,
            status: 200,
            content: json!({"finished": true}),
        },
    );
    finish.turn = Some(2);
    finish.call_id = Some("c2".into());
    let turn = |i: usize, name: &str| Turn {
        request_sha256: format!("{i:064}"),
        messages: 2 + 2 * i,
        sent: vec![json!({"role": "user", "content": format!("m{i}")})],
        text: (i == 0).then(|| "looking".to_string()),
        tool_calls: vec![RawCall {
            id: format!("c{i}"),
            name: name.into(),
            arguments: "{}".into(),
        }],
        prompt_tokens: 100 + i as u64,
        completion_tokens: 10,
        latency_ms: 50,
        finish_reason: Some("tool_calls".into()),
    };
    let mut t = Trajectory::new(vec![read, create, finish], EndReason::Finished);
    t.turns = vec![turn(0, "fhir_read"), turn(1, "fhir_create"), turn(2, "finish")];
    t.htn = vec![
        HtnTransition {
            after_step: 0,
            next: vec!["pt".into()],
        },
        HtnTransition {
            after_step: 1,
            next: vec!["record".into()],
        },
        HtnTransition {
            after_step: 3,
            next: vec![],
        },
    ];
    t
}

#[test]
fn a_trajectory_survives_the_round_trip() {
    let t = sample();
    let text = to_jsonl(&example_header(), &t).unwrap();
    let back = from_jsonl(&text).unwrap();
    assert_eq!(back.header, example_header());
    assert_eq!(back.trajectory, t);
    // one header and one event per line, in the order things happened
    let types: Vec<String> = text
        .lines()
        .skip(1)
        .map(|l| serde_json::from_str::<Value>(l).unwrap()["type"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        types,
        [
            "htn_step",
            "model_request",
            "model_reply",
            "tool_call",
            "tool_result",
            "htn_step",
            "model_request",
            "model_reply",
            "tool_call",
            "tool_result",
            "fhir_write",
            "model_request",
            "model_reply",
            "tool_call",
            "tool_result",
            "htn_step",
            "end"
        ]
    );
    // writing again gives the same bytes
    assert_eq!(to_jsonl(&back.header, &back.trajectory).unwrap(), text);
}

#[test]
fn model_free_and_empty_trajectories_round_trip() {
    let mut t = sample();
    t.turns.clear();
    for s in &mut t.steps {
        s.turn = None;
        s.call_id = None;
    }
    let back = from_jsonl(&to_jsonl(&example_header(), &t).unwrap()).unwrap();
    assert_eq!(back.trajectory, t);
    let mut empty = Trajectory::new(Vec::new(), EndReason::BackendError);
    empty.detail = Some("HTTP 500".into());
    let back = from_jsonl(&to_jsonl(&example_header(), &empty).unwrap()).unwrap();
    assert_eq!(back.trajectory, empty);
}

#[test]
fn newer_minor_versions_are_read_and_other_majors_refused() {
    let text = to_jsonl(&example_header(), &sample()).unwrap();
    // 1.7: an unknown event type and unknown fields are skipped
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    let mut head: Value = serde_json::from_str(&lines[0]).unwrap();
    head["format_version"] = json!("1.7");
    head["future_field"] = json!({"x": 1});
    lines[0] = head.to_string();
    lines.insert(2, r#"{"type":"model_thought","turn":0,"text":"hmm"}"#.into());
    let mut ev: Value = serde_json::from_str(&lines[3]).unwrap();
    ev["cache_hit_tokens"] = json!(12);
    lines[3] = ev.to_string();
    let newer = lines.join("\n");
    let back = from_jsonl(&newer).unwrap();
    assert_eq!(back.trajectory, sample());
    assert_eq!(back.header.format_version, "1.7");
    // 2.0: refused, saying what to do
    let two = newer.replacen("\"1.7\"", "\"2.0\"", 1);
    let e = from_jsonl(&two).unwrap_err();
    assert_eq!(e, ReadError::Version("2.0".into()));
    let msg = e.to_string();
    assert!(
        msg.contains("2.0") && msg.contains("1.x") && msg.contains("upgrade emrgym"),
        "{msg}"
    );
    let zero = newer.replacen("\"1.7\"", "\"0.3\"", 1);
    assert!(from_jsonl(&zero).unwrap_err().to_string().contains("0.3"));
}

#[test]
fn broken_files_say_what_is_wrong_and_where() {
    let text = to_jsonl(&example_header(), &sample()).unwrap();
    assert_eq!(from_jsonl(""), Err(ReadError::Empty));
    assert!(matches!(from_jsonl("{\"a\":1}\n"), Err(ReadError::NotATrajectory(_))));
    assert!(matches!(from_jsonl("not json"), Err(ReadError::NotATrajectory(_))));
    // a kill mid-write leaves no end event
    let cut: Vec<&str> = text.lines().collect();
    let truncated = cut[..cut.len() - 1].join("\n");
    assert_eq!(from_jsonl(&truncated), Err(ReadError::Truncated));
    // a malformed line is named by number
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    lines[4] = "{\"type\":\"tool_call\",".into();
    match from_jsonl(&lines.join("\n")) {
        Err(ReadError::Line { line, .. }) => assert_eq!(line, 5),
        other => panic!("{other:?}"),
    }
    // events out of order
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    lines.swap(2, 3);
    let e = from_jsonl(&lines.join("\n")).unwrap_err().to_string();
    assert!(e.contains("line 3") && e.contains("before its request"), "{e}");
    // an end that disagrees with the events
    let bad_end = text.replace("\"steps\":3,\"turns\":3", "\"steps\":4,\"turns\":3");
    assert!(from_jsonl(&bad_end).unwrap_err().to_string().contains("4 steps"));
}

#[test]
fn changes_are_listed_field_by_field() {
    let a = json!({"resourceType": "MedicationRequest", "meta": {"versionId": "1"}, "status": "active",
        "dosage": [{"dose": {"value": 1, "unit": "g"}}], "note": "x"});
    let b = json!({"resourceType": "MedicationRequest", "meta": {"versionId": "2"}, "status": "stopped",
        "dosage": [{"dose": {"value": 2, "unit": "g"}}], "reason": "eGFR"});
    let c = json_changes(&a, &b);
    assert_eq!(
        c,
        vec![
            FieldChange {
                path: "dosage.0.dose.value".into(),
                before: Some(json!(1)),
                after: Some(json!(2))
            },
            FieldChange {
                path: "note".into(),
                before: Some(json!("x")),
                after: None
            },
            FieldChange {
                path: "reason".into(),
                before: None,
                after: Some(json!("eGFR"))
            },
            FieldChange {
                path: "status".into(),
                before: Some(json!("active")),
                after: Some(json!("stopped"))
            },
        ]
    );
    assert!(json_changes(&a, &a).is_empty());
    // arrays that change length are replaced whole
    let d = json_changes(&json!({"x": [1]}), &json!({"x": [1, 2]}));
    assert_eq!(d.len(), 1);
    assert_eq!(d[0].path, "x");
}

#[test]
fn reading_a_file_names_it_in_every_error() {
    let dir = std::env::temp_dir().join(format!("emrgym-read-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let missing = dir.join("missing.jsonl");
    let e = read(&missing).unwrap_err();
    assert!(matches!(&e, FileError::Io { path, .. } if path == &missing), "{e}");
    assert!(e.to_string().starts_with(&missing.display().to_string()), "{e}");
    let empty = dir.join("empty.jsonl");
    std::fs::write(&empty, "").unwrap();
    let e = read(&empty).unwrap_err();
    assert!(
        matches!(
            &e,
            FileError::Format {
                error: ReadError::Empty,
                ..
            }
        ),
        "{e}"
    );
    assert_eq!(e.to_string(), format!("{}: empty trajectory file", empty.display()));
    std::fs::remove_dir_all(&dir).unwrap();
}
