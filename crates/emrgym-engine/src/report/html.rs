//! The static HTML report: one self-contained file (no server, no network, no external
//! asset) with the run summary, pass^k with intervals, per-family, failure-class and
//! end-reason tables with bar plots, a progress histogram, and an episode browser. Each
//! episode's details (HTN verdicts with diffs, conversation, tool calls and results, FHIR write
//! diffs, tokens and latency) sit in their own embedded JSON block, parsed only when the
//! episode is opened, so a run of thousands of episodes stays usable. `#ep=INSTANCE.TRIAL`
//! in the URL opens one episode.

use super::Run;
use emrgym_scenario::trajectory::file::events;
use serde_json::{Value, json};

const TEMPLATE: &str = include_str!("report.html");

/// Longest tool-result text kept in the report (the trajectory file has the whole).
pub const MAX_CONTENT: usize = 4000;

/// JSON safe inside a `<script>` element.
fn embed(v: &Value) -> String {
    serde_json::to_string(v)
        .unwrap_or_else(|_| "null".into())
        .replace("</", "<\\/")
        .replace("<!--", "<\\!--")
}

fn shorten(v: &Value) -> Value {
    let text = match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    if text.len() <= MAX_CONTENT {
        return v.clone();
    }
    let mut end = MAX_CONTENT;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    json!({"truncated": true, "chars": text.len(), "text": &text[..end]})
}

/// One episode's details for the page.
fn details(run: &Run, r: &Value) -> Value {
    let instance = r["instance"].as_str().unwrap_or("");
    let trial = r["trial"].as_u64().unwrap_or(0);
    let (header, evs, error) = match run.trajectory(instance, trial) {
        Ok(f) => {
            let evs: Vec<Value> = events(&f.trajectory)
                .into_iter()
                .filter_map(|e| serde_json::to_value(e).ok())
                .map(|mut e| {
                    if let Some(c) = e.get("content") {
                        e["content"] = shorten(c);
                    }
                    if let Some(sent) = e.get_mut("sent").and_then(Value::as_array_mut) {
                        for m in sent {
                            if let Some(c) = m.get("content") {
                                m["content"] = shorten(c);
                            }
                        }
                    }
                    e
                })
                .collect();
            (serde_json::to_value(&f.header).unwrap_or(Value::Null), evs, Value::Null)
        }
        Err(e) => (Value::Null, Vec::new(), json!(e.to_string())),
    };
    json!({"grade": r["grade"], "header": header, "events": evs, "error": error})
}

/// The report page.
pub fn render(run: &Run) -> String {
    let episodes: Vec<Value> = run
        .results
        .iter()
        .map(|r| {
            json!({
                "key": Run::key(r),
                "instance": r["instance"], "family": r["family"], "trial": r["trial"],
                "success": r["success"], "progress": r["progress"], "end": r["end"], "harness": r["harness_limit"],
                "infrastructure": r["infrastructure"], "primary": r["grade"]["primary"],
                "steps": r["steps"], "turns": r["turns"],
                "tokens": r["prompt_tokens"].as_u64().unwrap_or(0) + r["completion_tokens"].as_u64().unwrap_or(0),
            })
        })
        .collect();
    let data = json!({
        "name": run.dir.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default(),
        "config": run.manifest["config"],
        "emrgym_version": run.manifest["emrgym_version"],
        "model": super::model_name(&run.manifest),
        "summary": run.summary,
        "episodes": episodes,
    });
    let mut blocks = String::new();
    for (i, r) in run.results.iter().enumerate() {
        blocks.push_str(&format!(
            "<script type=\"application/json\" id=\"ep-{i}\">{}</script>\n",
            embed(&details(run, r))
        ));
    }
    TEMPLATE
        .replace(
            "{{TITLE}}",
            &html_escape(&format!("EMRGym report: {}", data["name"].as_str().unwrap_or(""))),
        )
        .replace("/*RUN_DATA*/null", &embed(&data))
        .replace("<!--EPISODE_DATA-->", &blocks)
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}
