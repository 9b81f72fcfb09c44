//! What the agent is told: the briefing, the system prompt (shared by every episode with
//! the same tools) and the first user message.

use super::ToolProtocol;
use serde_json::Value;

/// What the agent is told.
#[derive(Debug, Clone, PartialEq)]
pub struct Briefing {
    /// The task.
    pub instruction: String,
    /// Facts the task gives.
    pub context: String,
    /// The clinical now.
    pub now: String,
    /// The FHIR base the tools act on.
    pub fhir_base: String,
}

/// The system prompt for an episode. It holds nothing episode-specific (the clinical now
/// and the task are in [`user_prompt`]): with the tool schemas that the chat template puts
/// after it, it is a prefix shared by every episode with the same tools, which the
/// in-process backend evaluates once per run (`agent::llama`).
pub fn system_prompt(b: &Briefing, protocol: ToolProtocol, tools: &Value) -> String {
    let mut s = format!(
        "You are a clinician's assistant working inside an electronic health record (FHIR R4 at {}). \
Use the tools to read the record, compute, and write orders or observations; \
every write really lands in the record. Patients are identified by their MRN, which is also their FHIR id. \
When the task is complete, call `finish` with the answer in the format the task asks for; \
when the task says what to answer if a value is not in the record (for example -1), answer that. \
If the task cannot be done at all (no such patient, a tool it needs is missing, the order is contraindicated), \
call `finish` with outcome \"cannot_complete\", the reason, and a short explanation as the answer. \
Do not make writes the task does not ask for.",
        b.fhir_base
    );
    if protocol == ToolProtocol::Text {
        s.push_str("\n\nTools (JSON Schema of arguments):\n");
        for t in tools.as_array().into_iter().flatten() {
            let f = &t["function"];
            s.push_str(&format!(
                "- {}: {}\n  arguments: {}\n",
                f["name"].as_str().unwrap_or_default(),
                f["description"].as_str().unwrap_or_default(),
                f["parameters"]
            ));
        }
        s.push_str("\nTo call a tool, reply with exactly one block:\n<tool_call>\n{\"name\": \"TOOL\", \"arguments\": {...}}\n</tool_call>\nThe result comes back in a <tool_response> block.");
    }
    s
}

/// The first user message: the clinical now, the task and the facts it gives.
pub fn user_prompt(b: &Briefing) -> String {
    if b.context.trim().is_empty() {
        format!("It is now {}.\n\n{}", b.now, b.instruction)
    } else {
        format!("It is now {}.\n\n{}\n\nContext: {}", b.now, b.instruction, b.context)
    }
}
