//! Episode limits, and what the loop does at them: replies cut by the reply cap (answered
//! with a note) and tool results too long for the conversation (fitted with a note).

use super::Reply;
use emrgym_scenario::trajectory::Step;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// Episode limits.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Tool calls.
    pub max_steps: u32,
    /// Model turns.
    pub max_turns: u32,
    /// Prompt + completion tokens over the episode (0: no cap).
    pub max_tokens: u64,
    /// Wall time, seconds (0: no wall-time limit).
    pub timeout_s: f64,
    /// Consecutive turns whose tool calls could not be parsed before giving up.
    pub max_parse_errors: u32,
    /// Longest tool result put into the conversation, in characters of JSON: a longer search
    /// Bundle keeps its first entries and says how many it left out and how to page; any
    /// other longer result is cut with a note. The step records what the model was shown.
    #[serde(default = "default_result_chars")]
    pub max_result_chars: usize,
    /// The same tool call (name and arguments) answered with the same result this many times
    /// in a row ends the episode `stuck` (the model's failure: the sandbox is deterministic,
    /// so the call told it nothing new the last times). 0: no limit; missing in a
    /// configuration recorded before it existed, which therefore had none (and 0 is not
    /// written, so such a configuration keeps its hash and resumes).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub max_repeats: u32,
}

/// The default [`Limits::max_result_chars`]: see docs/agent.md ("Harness failures").
pub(crate) const DEFAULT_RESULT_CHARS: usize = 24_000;

fn is_zero(n: &u32) -> bool {
    *n == 0
}

fn default_result_chars() -> usize {
    DEFAULT_RESULT_CHARS
}

/// The default [`Limits::max_repeats`]: four identical calls with identical results, the
/// threshold of OpenHands' stuck detector for a repeated action and observation
/// (`StuckDetector`, `openhands/controller/stuck.py`, and `openhands.sdk.conversation.
/// stuck_detector` in its V1 SDK: "the same action produces the same observation
/// repeatedly (4+ times)"). No reference
/// plan comes near it (`emrgym scenarios check` refuses a plan that repeats a call with its result).
pub(crate) const DEFAULT_REPEATS: u32 = 4;

/// Whether the last `n` steps are one call (name and arguments) answered with one result
/// (`ok`, status and content): the agent is stuck ([`Limits::max_repeats`]). False for `n`
/// of 0 or more steps than were taken.
pub fn stuck(steps: &[Step], n: u32) -> bool {
    let n = n as usize;
    if n == 0 || steps.len() < n {
        return false;
    }
    let tail = &steps[steps.len() - n..];
    tail.windows(2).all(|w| w[0].call == w[1].call && w[0].result == w[1].result)
}

/// The longest cycle of calls [`stuck_cycle`] looks for: two (A, B, A, B, ...).
pub const STUCK_MAX_PERIOD: usize = 2;

/// The length of the cycle of calls that the last steps repeat `n` times in a row, each
/// call answered with the result it had the time before ([`Limits::max_repeats`]): 1 when
/// the last `n` steps are one call with one result ([`stuck`]), 2 when the last `2n`
/// alternate between two calls, each with its one result (A, B, A, B, ...), which [`stuck`]
/// does not see. The sandbox is deterministic, so such a loop tells the model nothing new,
/// as in OpenHands' stuck detector (`openhands/controller/stuck.py`, scenario 4, "action,
/// observation pattern on the last six steps": the same two actions with the same
/// observations three times; here `n` times, 4 by default). Measured on the committed runs
/// (`scripts/stuck-whatif.py --period 2`, docs/performance.md): it would have ended 8 of
/// 496 episodes sooner, all Qwen2.5-Coder-1.5B loops, with no grade changed. None for `n`
/// of 0.
pub fn stuck_cycle(steps: &[Step], n: u32) -> Option<usize> {
    let n = n as usize;
    if n == 0 {
        return None;
    }
    let same = |a: &Step, b: &Step| a.call == b.call && a.result == b.result;
    let len = steps.len();
    (1..=STUCK_MAX_PERIOD).find(|&p| len >= n * p && (0..p).all(|j| (1..n).all(|k| same(&steps[len - 1 - j], &steps[len - 1 - j - k * p]))))
}

/// The tools that change the record.
pub const WRITE_TOOLS: [&str; 2] = ["fhir_create", "fhir_update"];

/// What makes two writes the same write: the tool and its arguments without what the server
/// assigns. A create's resource `id` and `meta` are the server's (FHIR R4 RESTful API,
/// "create": the server assigns the logical id and ignores one in the body; `meta.versionId`
/// and `meta.lastUpdated` are set by the server on every write), so a create sent again with
/// another client-side id is the same create; an update keeps its target id and drops `meta`.
/// None for a call that is not a write.
fn write_key(step: &Step) -> Option<(&str, Value)> {
    let name = step.call.name.as_str();
    if !WRITE_TOOLS.contains(&name) {
        return None;
    }
    let mut args = step.call.arguments.clone();
    if let Some(r) = args.get_mut("resource").and_then(Value::as_object_mut) {
        r.remove("meta");
        if name == "fhir_create" {
            r.remove("id");
        }
    }
    Some((name, args))
}

/// Whether the last step is a write ([`WRITE_TOOLS`]) that the episode has now made `n`
/// times, anywhere in it and whatever the results ([`write_key`]): the agent is stuck
/// ([`Limits::max_repeats`], the same number). A create repeated with a new client-side id
/// each time, around reads of what it created, never repeats a call with its result (each
/// create gets a new id), so [`stuck`] does not see it: Qwen2.5-Coder-1.5B (goal,
/// `mab-a1c-007`) alternated one Observation's create with a read of the new id 12 times, to
/// the step budget (44 minutes). No reference plan makes one write twice (`emrgym scenarios
/// check`). False for `n` of 0.
pub fn repeated_write(steps: &[Step], n: u32) -> bool {
    let Some(last) = steps.last().and_then(write_key) else {
        return false;
    };
    n > 0 && steps.iter().filter(|s| write_key(s).as_ref() == Some(&last)).count() >= n as usize
}

/// Consecutive replies cut by the reply cap before their call was complete that end the
/// episode `max_tokens` (one is answered with a note and the model writes again).
pub(crate) const CUT_REPLIES_TO_END: u32 = 2;

/// The note a cut reply is answered with.
pub(crate) fn cut_note(tokens: u64) -> String {
    let at = if tokens > 0 {
        format!("{tokens} tokens")
    } else {
        "the reply limit".to_string()
    };
    format!("Your reply was cut at {at} before the call was complete; write a shorter call.")
}

/// A reply that ends by repeating one short pattern: greedy decoding's known failure mode
/// (Holtzman et al., "The Curious Case of Neural Text Degeneration", ICLR 2020): once a
/// model's greedy continuation cycles, it does not leave the cycle, so a longer reply cap
/// would not have let it finish. Such a reply is the model's failure, not the reply cap's
/// (docs/agent.md, "Harness failures"), and the in-process backend stops it as soon as it
/// is seen instead of decoding to the cap.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Repetition {
    /// Length of the repeated pattern, bytes of UTF-8.
    pub period: usize,
    /// How many bytes at the end of the text repeat it (at least [`REPEAT_MIN_SPAN`]).
    pub span: usize,
    /// The pattern (the text's last `period` bytes, lossily decoded).
    pub pattern: String,
}

/// The longest pattern looked for, bytes (a sentence: SmolLM2 repeated one of 110 bytes).
pub const REPEAT_MAX_PERIOD: usize = 128;
/// The fewest bytes at the end of a reply that must repeat one pattern for it to be
/// degenerate; a pattern longer than a quarter of this must repeat [`REPEAT_COPIES`] times.
/// No reference call of the suite, in any format a model may write it, comes near at any
/// point while it is written (integration test `no_reference_call_looks_degenerate...`).
pub const REPEAT_MIN_SPAN: usize = 256;
/// The fewest copies of the pattern.
pub const REPEAT_COPIES: usize = 4;

/// The shortest pattern of at most [`REPEAT_MAX_PERIOD`] bytes, not whitespace alone, that
/// the end of `text` repeats over at least [`REPEAT_MIN_SPAN`] bytes and [`REPEAT_COPIES`]
/// copies, if any.
pub fn repetition(text: &str) -> Option<Repetition> {
    let b = text.as_bytes();
    if b.len() < REPEAT_MIN_SPAN {
        return None;
    }
    (1..=REPEAT_MAX_PERIOD).find_map(|p| {
        // bytes i (from the end) with b[i] == b[i - p]: the suffix of length n + p has period p
        let n = (p..b.len()).rev().take_while(|&i| b[i] == b[i - p]).count();
        // whitespace alone is left to the reply cap: a JSON grammar's whitespace rules, not
        // only the model, could keep a reply there
        (n + p >= REPEAT_MIN_SPAN.max(REPEAT_COPIES * p) && b[b.len() - p..].iter().any(|c| !c.is_ascii_whitespace())).then(|| Repetition {
            period: p,
            span: n + p,
            pattern: String::from_utf8_lossy(&b[b.len() - p..]).into_owned(),
        })
    })
}

/// The repetition a reply ends with: in its text, or in the argument text of a call.
pub(crate) fn degenerate(reply: &Reply) -> Option<Repetition> {
    reply
        .text
        .as_deref()
        .into_iter()
        .chain(reply.tool_calls.iter().map(|(_, _, raw)| raw.as_str()))
        .find_map(repetition)
}

/// The note a degenerate reply is answered with.
pub(crate) fn degenerate_note(tokens: u64, r: &Repetition) -> String {
    format!(
        "Your reply was stopped after {tokens} tokens: it kept repeating {:?}. Write the call once, without repeating.",
        r.pattern
    )
}

/// A tool result that fits `max_chars` (as JSON text), and whether it was shortened. A
/// searchset Bundle keeps its first entries (the page order the server gave) and gains an
/// `emrgym_note` naming how many it left out and how to ask for fewer; anything else is
/// cut to its first characters, with the same kind of note.
pub(crate) fn fit_result(content: Value, max_chars: usize) -> (Value, bool) {
    let full = content.to_string();
    if max_chars == 0 || full.len() <= max_chars {
        return (content, false);
    }
    if let Some(entries) = content.get("entry").and_then(Value::as_array) {
        let n = entries.len();
        let note_for = |k: usize| {
            format!(
                "This result was {} characters, more than the {max_chars} a tool result may take in this conversation: it shows the first {k} of its {n} entries. Ask for fewer with _count (and page with _offset), or narrow the search.",
                full.len()
            )
        };
        let mut base = content.clone();
        if let Some(o) = base.as_object_mut() {
            o.insert("entry".into(), json!([]));
            o.insert("emrgym_note".into(), json!(note_for(n)));
        }
        let mut size = base.to_string().len();
        let mut k = 0;
        for e in entries {
            let add = e.to_string().len() + usize::from(k > 0);
            if size + add > max_chars {
                break;
            }
            size += add;
            k += 1;
        }
        let mut out = content.clone();
        if let Some(o) = out.as_object_mut() {
            o.insert("entry".into(), Value::Array(entries[..k].to_vec()));
            o.insert("emrgym_note".into(), json!(note_for(k)));
        }
        return (out, true);
    }
    let keep = max_chars.saturating_sub(400).max(max_chars / 2);
    let mut end = keep.min(full.len());
    while !full.is_char_boundary(end) {
        end -= 1;
    }
    (
        json!({
            "truncated": true,
            "chars": full.len(),
            "text": &full[..end],
            "emrgym_note": format!("This result was {} characters, more than the {max_chars} a tool result may take in this conversation: only its beginning is shown. Ask for less (a narrower search, _count, _elements).", full.len()),
        }),
        true,
    )
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_steps: 30,
            max_turns: 30,
            max_tokens: 200_000,
            timeout_s: 600.0,
            max_parse_errors: 3,
            max_result_chars: DEFAULT_RESULT_CHARS,
            max_repeats: DEFAULT_REPEATS,
        }
    }
}

/// A reply cut by the reply cap (`finish_reason: length`) before its call was complete: no
/// call, or a call whose arguments are not yet a JSON value.
pub(crate) fn is_cut(reply: &Reply) -> bool {
    reply.finish_reason.as_deref() == Some("length")
        && (reply.tool_calls.is_empty()
            || reply
                .tool_calls
                .iter()
                .any(|(_, _, raw)| !raw.trim().is_empty() && serde_json::from_str::<Value>(raw).is_err()))
}
