//! The agent-facing tool catalogue: one manifest per tool (name, description for a
//! model, JSON Schema of the arguments, examples), argument validation with jsonschema
//! before dispatch, and dispatch to calculators, unit conversion, the FHIR API (through
//! the same request handler the server uses, in process) and `finish`.
//!
//! A tool failure is an [`Observation`] with `ok: false` and a message naming what was
//! wrong; nothing a model sends can make a call panic or fail the run.
//!
//! The manifests are built from the calculator specifications and the FHIR tool
//! definitions in [`fhir_tools`]; `tools/*.json` in the repository is the same catalogue
//! written out by `emrgym tools export` (a test keeps the two equal).
//!
//! Entry points: [`Registry::standard`] (the whole catalogue) and [`Registry::subset`]
//! (a family's tools), [`Registry::call`] / [`Registry::call_text`] (an [`Observation`]),
//! [`Registry::check`] (argument validation), [`FhirTool`] and [`http::app`] (the tool routes).

pub mod facts;
pub mod fhir_tools;
pub mod http;

pub use fhir_tools::{FhirTool, RequestError};

use emrgym_calc as calc;
use emrgym_calc::Calculator;
use emrgym_fhir::rest::{FhirRequest, FhirResponse};
use serde::Serialize;
use serde_json::{Value, json};
use std::collections::BTreeMap;

/// Version of the manifest layout written to `tools/*.json`.
pub const MANIFEST_VERSION: u32 = 1;

/// One worked example of a tool call.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Example {
    /// What the example shows.
    pub description: String,
    /// The arguments.
    pub arguments: Value,
}

/// A tool's manifest.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Manifest {
    /// Layout version.
    pub manifest_version: u32,
    /// Tool name (what the model calls).
    pub name: String,
    /// `calculator`, `units`, `fhir` or `control`.
    pub kind: String,
    /// Description written for a model.
    pub description: String,
    /// JSON Schema of the arguments.
    pub parameters: Value,
    /// At least one example.
    pub examples: Vec<Example>,
}

/// What runs a tool.
#[derive(Debug, Clone, Copy)]
pub enum Handler {
    /// A calculator.
    Calc(&'static Calculator),
    /// `convert_units`.
    ConvertUnits,
    /// A FHIR tool.
    Fhir(fhir_tools::FhirTool),
    /// `finish`: ends the episode with an answer.
    Finish,
}

/// Where FHIR tools send their requests (a sandbox, in process).
pub trait FhirBackend {
    /// Execute one request.
    fn call(&mut self, req: FhirRequest) -> FhirResponse;
}

/// A backend for contexts with no sandbox: every FHIR call is refused.
#[derive(Debug, Default)]
pub struct NoFhir;

impl FhirBackend for NoFhir {
    fn call(&mut self, _req: FhirRequest) -> FhirResponse {
        FhirResponse::error(&emrgym_fhir::FhirError::NotSupported(
            "no FHIR sandbox is attached to this tool call".into(),
        ))
    }
}

/// The result of one tool call, as the agent sees it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Observation {
    /// Tool name as called.
    pub tool: String,
    /// Did the call succeed?
    pub ok: bool,
    /// HTTP-like status: 200 on success; 400 bad arguments, 404 unknown tool, 422 refused
    /// calculation, or the FHIR status.
    pub status: u16,
    /// What the agent reads: the result, or `{"error": message, ...}`.
    pub content: Value,
    /// The final answer, when the tool was `finish`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub answer: Option<Value>,
}

impl Observation {
    fn ok(tool: &str, content: Value) -> Observation {
        Observation {
            tool: tool.to_string(),
            ok: true,
            status: 200,
            content,
            answer: None,
        }
    }

    /// A failed observation with a message.
    pub fn fail(tool: &str, status: u16, message: impl Into<String>) -> Observation {
        Observation {
            tool: tool.to_string(),
            ok: false,
            status,
            content: json!({"error": message.into()}),
            answer: None,
        }
    }

    /// The error message, for a failed call.
    pub fn error(&self) -> Option<&str> {
        if self.ok {
            None
        } else {
            self.content.get("error").and_then(Value::as_str)
        }
    }
}

struct Tool {
    manifest: Manifest,
    handler: Handler,
    validator: jsonschema::Validator,
}

/// Errors building the catalogue (a defect in a manifest, not in a call).
#[derive(Debug, thiserror::Error)]
pub enum CatalogueError {
    /// A schema that does not compile.
    #[error("tool {tool}: invalid JSON Schema: {message}")]
    Schema {
        /// Tool.
        tool: String,
        /// Why.
        message: String,
    },
    /// Two tools with one name.
    #[error("duplicate tool name {0}")]
    Duplicate(String),
}

/// A subset of the catalogue that cannot be made ([`Registry::subset`]).
#[derive(Debug, thiserror::Error)]
pub enum SubsetError {
    /// Names that are not in the catalogue (every one of them, in the order given).
    #[error("unknown tools {}", .0.join(", "))]
    Unknown(Vec<String>),
    /// The subset is not a valid catalogue (a name given twice).
    #[error(transparent)]
    Catalogue(#[from] CatalogueError),
}

/// Arguments a tool refuses ([`Registry::check`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ArgsError {
    /// No tool has this name.
    #[error("no tool named '{0}'")]
    NoSuchTool(String),
    /// The arguments break the tool's schema: one message per violation, each naming the
    /// argument (`Display` is one per line).
    #[error("{}", .problems.join("\n"))]
    Invalid {
        /// The tool.
        tool: String,
        /// One message per violation.
        problems: Vec<String>,
    },
}

/// The tool registry.
pub struct Registry {
    tools: Vec<Tool>,
    index: BTreeMap<String, usize>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("tools", &self.index.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// The manifest of one calculator.
pub(crate) fn calculator_manifest(c: &'static Calculator) -> Manifest {
    let example = serde_json::from_str(c.example).unwrap_or(Value::Null);
    Manifest {
        manifest_version: MANIFEST_VERSION,
        name: c.name.to_string(),
        kind: "calculator".into(),
        description: format!(
            "{} {} Output unit: {}. Returns value, unit, interpretation, the steps and the conventions used. Give numbers as {{\"value\": x, \"unit\": \"...\"}} or as a bare number in the default unit.",
            c.title, c.summary, c.unit
        ),
        parameters: calc::schema(c),
        examples: vec![Example {
            description: format!("{}: worked example", c.title),
            arguments: example,
        }],
    }
}

fn convert_units_manifest() -> Manifest {
    Manifest {
        manifest_version: MANIFEST_VERSION,
        name: "convert_units".into(),
        kind: "units".into(),
        description: "Convert a laboratory value between conventional and SI units for one analyte (for example creatinine mg/dL to µmol/L, glucose mmol/L to mg/dL, urea mmol/L to BUN mg/dL). Uses exact molar-mass constants and returns the converted value with the constant used.".into(),
        parameters: calc::convert_units_schema(),
        examples: vec![
            Example {
                description: "Creatinine from µmol/L to mg/dL".into(),
                arguments: json!({"analyte": "creatinine", "value": 97, "from": "µmol/L", "to": "mg/dL"}),
            },
            Example {
                description: "Glucose from mmol/L to mg/dL".into(),
                arguments: json!({"analyte": "glucose", "value": 7.2, "from": "mmol/L", "to": "mg/dL"}),
            },
        ],
    }
}

/// Why a task cannot be completed: `finish`'s `reason` when `outcome` is `cannot_complete`.
pub const CANNOT_REASONS: &[&str] = &["patient_not_found", "data_missing", "tool_missing", "contraindicated", "other"];

fn finish_manifest() -> Manifest {
    Manifest {
        manifest_version: MANIFEST_VERSION,
        name: "finish".into(),
        kind: "control".into(),
        description: "Finish the task and give your final answer. Call it exactly once, after all the actions the task needs. The answer is what the task asks for: a number, a date, a list, or a short text. When the task says what to answer if a value is not in the record (for example -1), answer that. When the task cannot be done at all, set outcome to \"cannot_complete\", give the reason, and explain in the answer.".into(),
        parameters: json!({
            "type": "object",
            "properties": {
                "answer": {
                    "description": "The final answer: a value, a list of values, or a short text (with outcome cannot_complete: why).",
                    "type": ["string", "number", "integer", "boolean", "array", "object", "null"]
                },
                "outcome": {
                    "description": "done (the default) or cannot_complete.",
                    "type": "string",
                    "enum": ["done", "cannot_complete"]
                },
                "reason": {
                    "description": "With outcome cannot_complete: why the task cannot be done.",
                    "type": "string",
                    "enum": CANNOT_REASONS
                }
            },
            "required": ["answer"],
            "additionalProperties": false
        }),
        examples: vec![
            Example {
                description: "A numeric answer".into(),
                arguments: json!({"answer": [2.3]}),
            },
            Example {
                description: "The task cannot be done".into(),
                arguments: json!({"answer": "No patient has that name and birth date.", "outcome": "cannot_complete", "reason": "patient_not_found"}),
            },
        ],
    }
}

impl Registry {
    /// The full catalogue: FHIR tools, every calculator, `convert_units` and `finish`.
    pub fn standard() -> Result<Registry, CatalogueError> {
        let mut entries: Vec<(Manifest, Handler)> = Vec::new();
        for t in fhir_tools::FhirTool::ALL {
            entries.push((t.manifest(), Handler::Fhir(t)));
        }
        entries.push((convert_units_manifest(), Handler::ConvertUnits));
        for c in calc::all() {
            entries.push((calculator_manifest(c), Handler::Calc(c)));
        }
        entries.push((finish_manifest(), Handler::Finish));
        Registry::from_entries(entries)
    }

    /// Build from manifests paired with handlers.
    pub(crate) fn from_entries(entries: Vec<(Manifest, Handler)>) -> Result<Registry, CatalogueError> {
        let mut tools = Vec::new();
        let mut index = BTreeMap::new();
        for (manifest, handler) in entries {
            let validator = jsonschema::validator_for(&manifest.parameters).map_err(|e| CatalogueError::Schema {
                tool: manifest.name.clone(),
                message: e.to_string(),
            })?;
            if index.insert(manifest.name.clone(), tools.len()).is_some() {
                return Err(CatalogueError::Duplicate(manifest.name));
            }
            tools.push(Tool {
                manifest,
                handler,
                validator,
            });
        }
        Ok(Registry { tools, index })
    }

    /// Keep only the named tools (for scenarios that allow a subset); unknown names are returned.
    pub fn subset(&self, names: &[&str]) -> Result<Registry, SubsetError> {
        let unknown: Vec<String> = names
            .iter()
            .filter(|n| !self.index.contains_key(**n))
            .map(|n| n.to_string())
            .collect();
        if !unknown.is_empty() {
            return Err(SubsetError::Unknown(unknown));
        }
        let entries = names
            .iter()
            .filter_map(|n| self.index.get(*n).map(|i| &self.tools[*i]))
            .map(|t| (t.manifest.clone(), t.handler))
            .collect();
        Ok(Registry::from_entries(entries)?)
    }

    /// Every manifest, in catalogue order.
    pub fn manifests(&self) -> impl Iterator<Item = &Manifest> {
        self.tools.iter().map(|t| &t.manifest)
    }

    /// One manifest.
    pub fn manifest(&self, name: &str) -> Option<&Manifest> {
        self.index.get(name).map(|i| &self.tools[*i].manifest)
    }

    /// One handler.
    pub fn handler(&self, name: &str) -> Option<Handler> {
        self.index.get(name).map(|i| self.tools[*i].handler)
    }

    /// Tool names.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.index.keys().map(String::as_str)
    }

    /// The catalogue as OpenAI function-calling tools.
    pub fn openai_tools(&self) -> Value {
        Value::Array(
            self.tools
                .iter()
                .map(|t| {
                    json!({
                        "type": "function",
                        "function": {
                            "name": t.manifest.name,
                            "description": t.manifest.description,
                            "parameters": t.manifest.parameters,
                        }
                    })
                })
                .collect(),
        )
    }

    /// Validate arguments against a tool's schema; the messages name each bad argument.
    pub fn check(&self, name: &str, args: &Value) -> Result<(), ArgsError> {
        let Some(t) = self.index.get(name).map(|i| &self.tools[*i]) else {
            return Err(ArgsError::NoSuchTool(name.to_string()));
        };
        let problems: Vec<String> = t
            .validator
            .iter_errors(args)
            .map(|e| {
                let path = e.instance_path().to_string();
                if path.is_empty() {
                    e.to_string()
                } else {
                    format!("{}: {e}", path.trim_start_matches('/').replace('/', "."))
                }
            })
            .collect();
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ArgsError::Invalid {
                tool: name.to_string(),
                problems,
            })
        }
    }

    /// Call a tool with arguments given as JSON text (as models send them).
    pub fn call_text(&self, name: &str, args: &str, fhir: &mut dyn FhirBackend) -> Observation {
        let trimmed = args.trim();
        let value = if trimmed.is_empty() {
            json!({})
        } else {
            match serde_json::from_str::<Value>(trimmed) {
                Ok(v) => v,
                Err(e) => return Observation::fail(name, 400, format!("arguments for {name} are not valid JSON: {e}")),
            }
        };
        self.call(name, &value, fhir)
    }

    /// Call a tool: validate, then dispatch. Never panics; failures are observations.
    pub fn call(&self, name: &str, args: &Value, fhir: &mut dyn FhirBackend) -> Observation {
        let Some(tool) = self.index.get(name).map(|i| &self.tools[*i]) else {
            let names: Vec<&str> = self.names().collect();
            let shown = if names.len() > 12 {
                format!("{}, ... ({} tools)", names[..12].join(", "), names.len())
            } else {
                names.join(", ")
            };
            return Observation::fail(name, 404, format!("no tool named '{name}'; available: {shown}"));
        };
        if let Err(error) = self.check(name, args) {
            // A calculator's own parser names units and ranges more precisely than the schema.
            let detail = match tool.handler {
                Handler::Calc(c) => calc::run(c, args).err().map(|e| e.to_string()),
                _ => None,
            };
            let message = match detail {
                Some(d) => format!("invalid arguments for {name}: {d}"),
                None => match &error {
                    ArgsError::Invalid { problems, .. } => format!("invalid arguments for {name}: {}", problems.join("; ")),
                    ArgsError::NoSuchTool(_) => format!("invalid arguments for {name}: {error}"),
                },
            };
            return Observation::fail(name, 400, message);
        }
        match tool.handler {
            Handler::Calc(c) => match calc::run(c, args) {
                Ok(r) => Observation::ok(name, serde_json::to_value(&r).unwrap_or(Value::Null)),
                Err(e) => Observation::fail(name, 422, format!("{name}: {e}")),
            },
            Handler::ConvertUnits => match calc::convert_units(args) {
                Ok(v) => Observation::ok(name, v),
                Err(e) => Observation::fail(name, 422, format!("{name}: {e}")),
            },
            Handler::Fhir(t) => t.call(name, args, fhir),
            Handler::Finish => {
                let mut answer = args.get("answer").cloned().unwrap_or(Value::Null);
                // a structured refusal is kept as one object the grader reads
                if args.get("outcome").and_then(Value::as_str) == Some("cannot_complete") {
                    answer = json!({
                        "outcome": "cannot_complete",
                        "reason": args.get("reason").cloned().unwrap_or(json!("other")),
                        "explanation": answer,
                    });
                }
                let mut o = Observation::ok(name, json!({"finished": true, "answer": answer}));
                o.answer = Some(answer);
                o
            }
        }
    }
}

/// A manifest as the file `tools/<name>.json` holds it (pretty JSON, trailing newline).
pub fn manifest_file(m: &Manifest) -> Result<String, serde_json::Error> {
    let mut s = serde_json::to_string_pretty(m)?;
    s.push('\n');
    Ok(s)
}

#[cfg(test)]
mod tests;
