//! Scenario files, the HTN task language and the trajectory wire types: everything a
//! scenario is made of, and nothing of FHIR, calculators or models.
//!
//! - [`trajectory`]: the steps, turns, writes and end reasons shared by the agent, the planner
//!   and the grader, and the versioned JSONL file format.
//! - [`htn`]: the expression language, task libraries, the planner, clinical equivalence.
//! - this crate's root: scenario family files and their instances.
//!
//! Scenario files: a family is a template (instruction and context with `${%slot}` slots,
//! the clinical "now", the cohort, the allowed tools, the HTN library files and root task,
//! variables) plus its instances (patient, variable bindings, the expected branches).
//! The crate root parses and instantiates them; it knows nothing of FHIR.
//!
//! Entry points: [`Suite::load`] (a scenario directory) and [`Family::instances`] (ready
//! [`Instance`]s); [`Library::load`] and [`plan`] (an instance's HTN library and its
//! reference plan); [`trajectory::file::read`] and [`trajectory::file::to_jsonl`] (trajectory
//! files).

pub mod htn;
pub mod trajectory;

pub use htn::library::Library;
pub use htn::plan::plan;

use serde::Deserialize;
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Version of the scenario file format.
pub const FORMAT_VERSION: u32 = 1;

/// The root task of a family.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RootDecl {
    /// Task name.
    pub task: String,
    /// Arguments (literal JSON or `%var` expressions).
    #[serde(default)]
    pub args: Map<String, Value>,
}

/// How a family's answer must be given, as its instruction states it: the precision of numbers
/// and the order of lists. The grader derives its numeric tolerance and its list matching from
/// it, and `scenarios check` fails a family whose instruction does not state it
/// ([`AnswerFormat::stated_in`]) or whose answers need it and lack it.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AnswerFormat {
    /// Numbers rounded to this many decimal places (0: a whole number).
    #[serde(default)]
    pub decimals: Option<u8>,
    /// Numbers exactly as the chart records them.
    #[serde(default)]
    pub as_recorded: bool,
    /// The order of a list answer.
    #[serde(default)]
    pub list_order: Option<ListOrder>,
}

/// The order of a list answer.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ListOrder {
    /// The order the instruction gives (`[potassium, magnesium]`, "in the same order").
    AsAsked,
    /// Any order: the list is a set.
    Any,
}

/// The most decimals a family may ask for.
pub const MAX_DECIMALS: u8 = 6;

impl AnswerFormat {
    /// The numeric tolerance the stated precision implies: half a unit in the last stated
    /// decimal place (a correctly rounded answer is never further than that from the exact
    /// value), 0 for values given as recorded or when no precision is stated.
    pub fn tolerance(&self) -> f64 {
        match self.decimals {
            Some(d) => 0.5 * 10f64.powi(-i32::from(d)),
            None => 0.0,
        }
    }

    /// Is a list answer a set?
    pub fn unordered(&self) -> bool {
        self.list_order == Some(ListOrder::Any)
    }

    /// Is the format itself coherent?
    pub fn validate(&self) -> Result<(), FormatError> {
        if self.as_recorded && self.decimals.is_some() {
            return Err(FormatError::DecimalsAndAsRecorded);
        }
        if let Some(d) = self.decimals.filter(|d| *d > MAX_DECIMALS) {
            return Err(FormatError::TooManyDecimals(d));
        }
        Ok(())
    }

    /// Does `text` (the rendered instruction and context) state this format? Each declared
    /// part needs its phrase: decimals 0 "whole number" or "integer", 1 "one decimal" or
    /// "1 decimal", 2 "two decimals" or "2 decimals" and so on (a count, "the number of", is a
    /// whole number too); as_recorded "as recorded";
    /// list order `as_asked` a bracketed template such as `[potassium, magnesium]` or "same
    /// order"; `any` "any order". The error names what is missing.
    pub fn stated_in(&self, text: &str) -> Result<(), FormatError> {
        let t = text.to_lowercase();
        if let Some(d) = self.decimals {
            const WORDS: [&str; 7] = ["zero", "one", "two", "three", "four", "five", "six"];
            let ok = if d == 0 {
                t.contains("whole number") || t.contains("integer") || t.contains("the number of")
            } else {
                let word = WORDS.get(usize::from(d)).copied().unwrap_or("");
                [format!("{word} decimal"), format!("{d} decimal")]
                    .iter()
                    .any(|p| t.contains(p.as_str()))
            };
            if !ok {
                return Err(FormatError::DecimalsNotStated(d));
            }
        }
        if self.as_recorded && !t.contains("as recorded") {
            return Err(FormatError::AsRecordedNotStated);
        }
        match self.list_order {
            Some(ListOrder::AsAsked) if !(t.contains("same order") || has_list_template(&t)) => Err(FormatError::OrderNotStated),
            Some(ListOrder::Any) if !t.contains("any order") => Err(FormatError::AnyOrderNotStated),
            _ => Ok(()),
        }
    }
}

/// An answer format that is incoherent ([`AnswerFormat::validate`]) or that the instruction
/// does not state ([`AnswerFormat::stated_in`]); the message names the setting at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FormatError {
    /// Both `decimals` and `as_recorded`.
    #[error("answer: give either decimals or as_recorded, not both")]
    DecimalsAndAsRecorded,
    /// More than [`MAX_DECIMALS`] decimals.
    #[error("answer: decimals must be at most {MAX_DECIMALS}, got {0}")]
    TooManyDecimals(u8),
    /// The instruction does not ask for this many decimals.
    #[error("the answer has decimals {}, but the instruction does not ask for {}", .0, decimals_phrase(.0))]
    DecimalsNotStated(u8),
    /// The instruction does not say "as recorded".
    #[error("the answer is as_recorded, but the instruction does not say \"as recorded\"")]
    AsRecordedNotStated,
    /// The list order is `as_asked`, and the instruction gives none.
    #[error("the list order is as_asked, but the instruction gives no order (a template like [a, b] or \"in the same order\")")]
    OrderNotStated,
    /// The list order is `any`, and the instruction does not say so.
    #[error("the list order is any, but the instruction does not say \"in any order\"")]
    AnyOrderNotStated,
}

/// How an instruction asks for `d` decimals, as [`FormatError::DecimalsNotStated`] names it.
fn decimals_phrase(d: &u8) -> String {
    if *d == 0 {
        "a whole number".to_string()
    } else {
        format!("{d} decimal places")
    }
}

/// Does the text hold a bracketed list template of two or more named items (`[a, b]`)?
fn has_list_template(t: &str) -> bool {
    let mut rest = t;
    while let Some(i) = rest.find('[') {
        let after = &rest[i + 1..];
        let Some(j) = after.find(']') else { return false };
        let inner = &after[..j];
        if inner.contains(',') && inner.chars().any(char::is_alphabetic) {
            return true;
        }
        rest = &after[j + 1..];
    }
    false
}

/// A family's goal: the task as a clinician would ask it (the `goal` condition of a run), for
/// families whose procedure is standard clinical knowledge. The instruction says what to
/// achieve, never how; the context states only the conventions an agent cannot guess (codes,
/// resource types, units, the answer format, the clinical now, and any local choice the
/// guideline leaves open), never the procedure's thresholds, decision rules or doses.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Goal {
    /// Goal instruction template (`${%slot}` slots, as the family's instruction).
    pub instruction: String,
    /// Goal context template: conventions only.
    #[serde(default)]
    pub context: String,
    /// The guideline the family's key follows (name, version or year).
    pub guideline: String,
}

/// A family's goal rendered for one instance.
#[derive(Debug, Clone, PartialEq)]
pub struct GoalText {
    /// Rendered goal instruction.
    pub instruction: String,
    /// Rendered goal context.
    pub context: String,
    /// The guideline the key follows.
    pub guideline: String,
}

/// One instance of a family.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct InstanceDecl {
    /// Globally unique id.
    pub id: String,
    /// Patient id (bound as `%patient`).
    pub patient: String,
    /// Cohort of this instance (default: the family's).
    #[serde(default)]
    pub cohort: Option<String>,
    /// Variable bindings (override the family's).
    #[serde(default)]
    pub vars: Map<String, Value>,
    /// Expected method at each compound node path (checked against the oracle plan).
    #[serde(default)]
    pub expect_branch: BTreeMap<String, String>,
    /// A note on why this instance exists.
    #[serde(default)]
    pub doc: String,
}

/// A scenario family file.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Family {
    /// JSON Schema reference (ignored).
    #[serde(rename = "$schema", default)]
    pub schema: Option<String>,
    /// Format version (1).
    pub format_version: u32,
    /// Family id.
    pub family: String,
    /// Title.
    pub title: String,
    /// What the family tests.
    #[serde(default)]
    pub doc: String,
    /// Where the task comes from (e.g. MedAgentBench task 9).
    #[serde(default)]
    pub source: String,
    /// Cohort (built-in name or path).
    pub cohort: String,
    /// The clinical now (RFC 3339).
    pub now: String,
    /// HTN library files, relative to the scenario directory.
    pub library: Vec<String>,
    /// Tools the agent may use.
    pub tools: Vec<String>,
    /// Instruction template.
    pub instruction: String,
    /// Context template (facts the task gives: codes, dosing rules).
    #[serde(default)]
    pub context: String,
    /// The root task.
    pub root: RootDecl,
    /// Family variables.
    #[serde(default)]
    pub vars: Map<String, Value>,
    /// Step budget (tool calls).
    #[serde(default = "default_steps")]
    pub max_steps: u32,
    /// How the answer must be given (precision, list order), as the instruction states it.
    #[serde(default)]
    pub answer: AnswerFormat,
    /// The goal-only instruction (the `goal` condition); none for families whose procedure
    /// is not clinical knowledge.
    #[serde(default)]
    pub goal: Option<Goal>,
    /// Unsafe findings the family's rules handle on purpose (`hypotension`, `potassium`,
    /// `inr`, `sirs`): `scenarios check` does not flag instances whose patient has them.
    #[serde(default)]
    pub handles: Vec<String>,
    /// Instances.
    pub instances: Vec<InstanceDecl>,
}

fn default_steps() -> u32 {
    20
}

/// A ready-to-run instance: family settings with the instance's bindings applied.
#[derive(Debug, Clone, PartialEq)]
pub struct Instance {
    /// Instance id.
    pub id: String,
    /// Family id.
    pub family: String,
    /// Patient id.
    pub patient: String,
    /// Cohort.
    pub cohort: String,
    /// Clinical now.
    pub now: String,
    /// Rendered instruction.
    pub instruction: String,
    /// Rendered context.
    pub context: String,
    /// Allowed tools.
    pub tools: Vec<String>,
    /// Library files (paths relative to the scenario directory).
    pub library: Vec<String>,
    /// Root task.
    pub root: RootDecl,
    /// All variables (`patient` included; `now` is separate).
    pub vars: Map<String, Value>,
    /// Expected branches.
    pub expect_branch: BTreeMap<String, String>,
    /// Step budget.
    pub max_steps: u32,
    /// Unsafe findings the family handles (see [`Family::handles`]).
    pub handles: Vec<String>,
    /// How the answer must be given.
    pub answer: AnswerFormat,
    /// The rendered goal (none when the family has no goal).
    pub goal: Option<GoalText>,
}

/// An instance asked for in the `goal` condition whose family has no goal.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("instance '{instance}' (family {family}) has no goal instruction: its family defines no `goal`")]
pub struct NoGoal {
    /// The instance.
    pub instance: String,
    /// Its family.
    pub family: String,
}

impl Instance {
    /// The instance as the `goal` condition presents it: the goal's instruction and context
    /// in place of the family's (everything the grader reads is unchanged). Applying it twice
    /// gives the same instance. The error names the instance and its family.
    pub fn goal_condition(&self) -> Result<Instance, NoGoal> {
        let Some(g) = &self.goal else {
            return Err(NoGoal {
                instance: self.id.clone(),
                family: self.family.clone(),
            });
        };
        let mut out = self.clone();
        out.instruction = g.instruction.clone();
        out.context = g.context.clone();
        Ok(out)
    }
}

/// A `${...}` slot of an instruction or context that cannot be rendered ([`render_slots`]);
/// each names the template or the slot.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SlotError {
    /// A `${` without its `}`.
    #[error("unterminated ${{ in '{0}'")]
    Unterminated(String),
    /// A slot that is not `%variable`.
    #[error("slot '${{{0}}}' must be a variable like ${{%patient}}")]
    NotAVariable(String),
    /// A variable without a value.
    #[error("slot ${{%{0}}} has no value")]
    NoValue(String),
}

/// Render `${%name}` slots from `vars` (and `now`); any other hole is an error.
pub fn render_slots(template: &str, vars: &Map<String, Value>, now: &str) -> Result<String, SlotError> {
    let mut out = String::new();
    let mut rest = template;
    while let Some(i) = rest.find("${") {
        out.push_str(&rest[..i]);
        let after = &rest[i + 2..];
        let end = after.find('}').ok_or_else(|| SlotError::Unterminated(template.to_string()))?;
        let name = after[..end].trim();
        let Some(var) = name.strip_prefix('%') else {
            return Err(SlotError::NotAVariable(name.to_string()));
        };
        let text = if var == "now" {
            now.to_string()
        } else {
            match vars.get(var) {
                Some(Value::String(s)) => s.clone(),
                Some(Value::Null) | None => return Err(SlotError::NoValue(var.to_string())),
                Some(other) => other.to_string(),
            }
        };
        out.push_str(&text);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// A family or instance that cannot be instantiated ([`Family::instantiate`]): the message
/// names the family or the instance and the text at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InstanceError {
    /// The family's answer format is incoherent.
    #[error("{family}: {error}")]
    Format {
        /// The family.
        family: String,
        /// What is wrong.
        error: FormatError,
    },
    /// A slot of the instruction or context does not render.
    #[error("{instance}: {part}: {error}")]
    Slot {
        /// The instance.
        instance: String,
        /// The text (`instruction`, `context`, `goal.instruction`, `goal.context`).
        part: &'static str,
        /// What is wrong.
        error: SlotError,
    },
}

impl Family {
    /// Instantiate every instance.
    pub fn instances(&self) -> Result<Vec<Instance>, InstanceError> {
        self.instances.iter().map(|i| self.instantiate(i)).collect()
    }

    /// Instantiate one instance.
    pub fn instantiate(&self, i: &InstanceDecl) -> Result<Instance, InstanceError> {
        self.answer.validate().map_err(|error| InstanceError::Format {
            family: self.family.clone(),
            error,
        })?;
        let slot = |part: &'static str| {
            move |error| InstanceError::Slot {
                instance: i.id.clone(),
                part,
                error,
            }
        };
        let mut vars = self.vars.clone();
        for (k, v) in &i.vars {
            vars.insert(k.clone(), v.clone());
        }
        vars.insert("patient".into(), Value::String(i.patient.clone()));
        let instruction = render_slots(&self.instruction, &vars, &self.now).map_err(slot("instruction"))?;
        let context = render_slots(&self.context, &vars, &self.now).map_err(slot("context"))?;
        let goal = match &self.goal {
            None => None,
            Some(g) => Some(GoalText {
                instruction: render_slots(&g.instruction, &vars, &self.now).map_err(slot("goal.instruction"))?,
                context: render_slots(&g.context, &vars, &self.now).map_err(slot("goal.context"))?,
                guideline: g.guideline.clone(),
            }),
        };
        Ok(Instance {
            id: i.id.clone(),
            family: self.family.clone(),
            patient: i.patient.clone(),
            cohort: i.cohort.clone().unwrap_or_else(|| self.cohort.clone()),
            now: self.now.clone(),
            instruction,
            context,
            tools: self.tools.clone(),
            library: self.library.clone(),
            root: self.root.clone(),
            vars,
            expect_branch: i.expect_branch.clone(),
            max_steps: self.max_steps,
            handles: self.handles.clone(),
            answer: self.answer.clone(),
            goal,
        })
    }

    /// Does the family's goal state its answer format (goal instruction and context, rendered
    /// for `instance`, as [`AnswerFormat::stated_in`] reads the instruction)? None when the
    /// family has no goal; the error names the family.
    pub fn goal_format_problem(&self, instance: &Instance) -> Option<String> {
        let g = instance.goal.as_ref()?;
        self.answer
            .stated_in(&format!("{} {}", g.instruction, g.context))
            .err()
            .map(|e| format!("{}: goal: {e}", self.family))
    }
}

/// A scenario directory: families and the library files they use.
#[derive(Debug, Clone)]
pub struct Suite {
    /// The directory.
    pub dir: PathBuf,
    /// Families with the file each came from and its text.
    pub families: Vec<(PathBuf, String, Family)>,
}

/// A problem loading scenario files.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{file}{}: {message}", .line.map(|l| format!(":{l}")).unwrap_or_default())]
pub struct FileError {
    /// The file.
    pub file: String,
    /// 1-based line.
    pub line: Option<usize>,
    /// What is wrong.
    pub message: String,
}

/// Is this JSON file a family (as opposed to a library or schema file)?
fn is_family_file(p: &Path) -> bool {
    p.extension().is_some_and(|e| e == "json") && !p.file_name().is_some_and(|n| n.to_string_lossy().ends_with(".schema.json"))
}

impl Suite {
    /// Load every family file in `path` (a directory, searched one level deep, or one file).
    /// Library files live under `htn/` and are read by the planner, not here.
    pub fn load(path: &Path) -> Result<Suite, Vec<FileError>> {
        let (suite, errors) = Suite::load_partial(path);
        if errors.is_empty() { Ok(suite) } else { Err(errors) }
    }

    /// Load what parses, and report the files that do not.
    pub fn load_partial(path: &Path) -> (Suite, Vec<FileError>) {
        let (dir, files): (PathBuf, Vec<PathBuf>) = if path.is_dir() {
            let mut files: Vec<PathBuf> = match std::fs::read_dir(path) {
                Ok(rd) => rd
                    .filter_map(|e| e.ok().map(|e| e.path()))
                    .filter(|p| p.is_file() && is_family_file(p))
                    .collect(),
                Err(e) => {
                    let err = FileError {
                        file: path.display().to_string(),
                        line: None,
                        message: e.to_string(),
                    };
                    return (
                        Suite {
                            dir: path.to_path_buf(),
                            families: Vec::new(),
                        },
                        vec![err],
                    );
                }
            };
            files.sort();
            (path.to_path_buf(), files)
        } else if !path.exists() {
            let err = FileError {
                file: path.display().to_string(),
                line: None,
                message: "no such file or directory".into(),
            };
            return (
                Suite {
                    dir: PathBuf::new(),
                    families: Vec::new(),
                },
                vec![err],
            );
        } else {
            (path.parent().map(Path::to_path_buf).unwrap_or_default(), vec![path.to_path_buf()])
        };
        let mut families = Vec::new();
        let mut errors = Vec::new();
        for f in files {
            let text = match std::fs::read_to_string(&f) {
                Ok(t) => t,
                Err(e) => {
                    errors.push(FileError {
                        file: f.display().to_string(),
                        line: None,
                        message: e.to_string(),
                    });
                    continue;
                }
            };
            match serde_json::from_str::<Family>(&text) {
                Ok(fam) if fam.format_version != FORMAT_VERSION => errors.push(FileError {
                    file: f.display().to_string(),
                    line: crate::htn::library::locate(&text, "/format_version"),
                    message: format!(
                        "format_version {} is not supported (this emrgym reads {FORMAT_VERSION})",
                        fam.format_version
                    ),
                }),
                Ok(fam) => families.push((f, text, fam)),
                Err(e) => errors.push(FileError {
                    file: f.display().to_string(),
                    line: Some(e.line()),
                    message: e.to_string(),
                }),
            }
        }
        (Suite { dir, families }, errors)
    }

    /// Every instance with its family.
    pub fn instances(&self) -> Result<Vec<Instance>, InstanceError> {
        let mut out = Vec::new();
        for (_, _, f) in &self.families {
            out.extend(f.instances()?);
        }
        Ok(out)
    }

    /// Read a library file named by a family; the error names the file.
    pub fn library_text(&self, rel: &str) -> Result<String, FileError> {
        let p = self.dir.join(rel);
        std::fs::read_to_string(&p).map_err(|e| FileError {
            file: p.display().to_string(),
            line: None,
            message: e.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn slots_render_and_missing_ones_are_named() {
        let vars = json!({"patient": "S1", "dose": 40}).as_object().cloned().unwrap();
        assert_eq!(
            render_slots("Give ${%patient} ${%dose} mEq at ${%now}", &vars, "T").unwrap(),
            "Give S1 40 mEq at T"
        );
        assert_eq!(render_slots("${%nope}", &vars, "T").unwrap_err(), SlotError::NoValue("nope".into()));
        let e = |t: &str| render_slots(t, &vars, "T").unwrap_err().to_string();
        assert!(e("${%nope}").contains("%nope"));
        assert!(e("${1 + 1}").contains("must be a variable"));
        assert!(e("${%patient").contains("unterminated"));
    }

    #[test]
    fn an_instance_error_names_the_instance_or_family_and_the_text() {
        let family = |instruction: &str, answer: Value| -> Family {
            serde_json::from_value(json!({
                "format_version": 1, "family": "fam", "title": "t", "cohort": "demo",
                "now": "2023-11-13T10:15:00+00:00", "library": [], "tools": ["finish"],
                "instruction": instruction, "context": "c", "root": {"task": "r"}, "answer": answer,
                "instances": [{"id": "fam-1", "patient": "S1"}]
            }))
            .unwrap()
        };
        let f = family("Dose for ${%dose}.", json!({}));
        let e = f.instances().unwrap_err();
        assert_eq!(
            e,
            InstanceError::Slot {
                instance: "fam-1".into(),
                part: "instruction",
                error: SlotError::NoValue("dose".into())
            }
        );
        assert_eq!(e.to_string(), "fam-1: instruction: slot ${%dose} has no value");
        let f = family("x", json!({"decimals": 1, "as_recorded": true}));
        let e = f.instantiate(&f.instances[0]).unwrap_err();
        assert_eq!(e.to_string(), "fam: answer: give either decimals or as_recorded, not both");
    }

    #[test]
    fn the_tolerance_is_half_a_unit_in_the_stated_place() {
        let f = |d| AnswerFormat {
            decimals: Some(d),
            ..AnswerFormat::default()
        };
        assert!((f(0).tolerance() - 0.5).abs() < 1e-12);
        assert!((f(1).tolerance() - 0.05).abs() < 1e-12);
        assert!((f(2).tolerance() - 0.005).abs() < 1e-12);
        let recorded = AnswerFormat {
            as_recorded: true,
            ..AnswerFormat::default()
        };
        assert_eq!(recorded.tolerance(), 0.0);
        assert_eq!(AnswerFormat::default().tolerance(), 0.0);
    }

    #[test]
    fn a_format_must_be_stated_by_the_instruction() {
        let one = AnswerFormat {
            decimals: Some(1),
            ..AnswerFormat::default()
        };
        assert!(one.stated_in("Report the eGFR rounded to one decimal place.").is_ok());
        assert!(one.stated_in("Report the eGFR to 1 decimal.").is_ok());
        let e = one.stated_in("Report the eGFR.").unwrap_err().to_string();
        assert!(e.contains("decimals 1") && e.contains("1 decimal places"), "{e}");
        let whole = AnswerFormat {
            decimals: Some(0),
            ..AnswerFormat::default()
        };
        assert!(whole.stated_in("the score, a whole number").is_ok());
        assert!(whole.stated_in("rounded down to an integer").is_ok());
        assert!(whole.stated_in("answer with the number of orders you held").is_ok());
        assert!(whole.stated_in("rounded to one decimal").is_err());
        let recorded = AnswerFormat {
            as_recorded: true,
            ..AnswerFormat::default()
        };
        assert!(recorded.stated_in("the value as recorded, in mg/dL").is_ok());
        assert!(recorded.stated_in("the value in mg/dL").is_err());
        let listed = AnswerFormat {
            list_order: Some(ListOrder::AsAsked),
            ..AnswerFormat::default()
        };
        assert!(listed.stated_in("report both values as [potassium, magnesium]").is_ok());
        assert!(listed.stated_in("their MRNs, in the same order").is_ok());
        assert!(listed.stated_in("report both values [3]").is_err());
        let set = AnswerFormat {
            list_order: Some(ListOrder::Any),
            ..AnswerFormat::default()
        };
        assert!(set.stated_in("list them in any order").is_ok());
        assert!(set.stated_in("list them as [a, b]").is_err());
    }

    /// A one-instance family with `goal` (and an answer in one decimal).
    fn family_with_goal(goal: Value) -> Family {
        serde_json::from_value(json!({
            "format_version": 1, "family": "egfr_review", "title": "t", "cohort": "demo",
            "now": "2023-11-13T10:15:00+00:00", "library": [], "tools": ["finish"],
            "instruction": "Compute the eGFR of ${%patient} (CKD-EPI 2021) and stop metformin below 30; one decimal.",
            "context": "It's ${%now} now.", "root": {"task": "r"},
            "answer": {"decimals": 1}, "goal": goal,
            "instances": [{"id": "egfr-1", "patient": "S1"}]
        }))
        .unwrap()
    }

    #[test]
    fn a_goal_renders_its_slots_and_replaces_the_instruction_in_the_goal_condition() {
        let f = family_with_goal(json!({
            "instruction": "Review metformin for ${%patient}; report the eGFR to one decimal.",
            "context": "It's ${%now} now. Metformin is RxNorm 860975.",
            "guideline": "KDIGO 2022 diabetes in CKD"
        }));
        let i = f.instantiate(&f.instances[0]).unwrap();
        let g = i.goal.clone().unwrap();
        assert_eq!(g.instruction, "Review metformin for S1; report the eGFR to one decimal.");
        assert_eq!(g.context, "It's 2023-11-13T10:15:00+00:00 now. Metformin is RxNorm 860975.");
        assert_eq!(g.guideline, "KDIGO 2022 diabetes in CKD");
        // the family's own texts are unchanged; the goal condition swaps them, and only them
        assert!(i.instruction.contains("stop metformin below 30"));
        let goal = i.goal_condition().unwrap();
        assert_eq!(
            (goal.instruction.as_str(), goal.context.as_str()),
            (g.instruction.as_str(), g.context.as_str())
        );
        assert_eq!(
            (&goal.answer, &goal.root, &goal.vars, &goal.id),
            (&i.answer, &i.root, &i.vars, &i.id)
        );
        assert_eq!(goal.goal_condition().unwrap(), goal, "applying the goal twice changes nothing");
        assert_eq!(f.goal_format_problem(&i), None);
    }

    #[test]
    fn a_goal_slot_without_a_value_is_named() {
        let f = family_with_goal(json!({"instruction": "Review ${%patient} for ${%drug}; one decimal.", "guideline": "g"}));
        let e = f.instantiate(&f.instances[0]).unwrap_err().to_string();
        assert!(e.contains("egfr-1") && e.contains("goal.instruction") && e.contains("%drug"), "{e}");
        let f = family_with_goal(json!({"instruction": "one decimal", "context": "${%drug}", "guideline": "g"}));
        let e = f.instantiate(&f.instances[0]).unwrap_err().to_string();
        assert!(e.contains("goal.context") && e.contains("%drug"), "{e}");
    }

    #[test]
    fn a_goal_that_does_not_state_the_answer_format_is_rejected_by_family() {
        let f = family_with_goal(json!({"instruction": "Review metformin safety for ${%patient}.", "guideline": "g"}));
        let i = f.instantiate(&f.instances[0]).unwrap();
        let e = f.goal_format_problem(&i).expect("the goal states no precision");
        assert!(e.starts_with("egfr_review: goal:") && e.contains("decimals 1"), "{e}");
        // the format may be stated in the goal context instead
        let f = family_with_goal(json!({"instruction": "Review ${%patient}.", "context": "Give the eGFR to 1 decimal.", "guideline": "g"}));
        assert_eq!(f.goal_format_problem(&f.instantiate(&f.instances[0]).unwrap()), None);
    }

    #[test]
    fn a_family_without_a_goal_has_none_and_the_goal_condition_names_the_instance() {
        let mut f = family_with_goal(Value::Null);
        f.goal = None;
        let i = f.instantiate(&f.instances[0]).unwrap();
        assert_eq!(i.goal, None);
        assert_eq!(f.goal_format_problem(&i), None);
        let e = i.goal_condition().unwrap_err().to_string();
        assert!(
            e.contains("'egfr-1'") && e.contains("egfr_review") && e.contains("no goal instruction"),
            "{e}"
        );
        // unknown fields of a goal are refused (inputs are strict)
        let bad = serde_json::from_value::<Goal>(json!({"instruction": "x", "guideline": "g", "hint": "y"}));
        assert!(bad.unwrap_err().to_string().contains("hint"));
    }

    #[test]
    fn an_incoherent_format_is_refused_by_name() {
        let both = AnswerFormat {
            decimals: Some(1),
            as_recorded: true,
            ..AnswerFormat::default()
        };
        assert!(both.validate().unwrap_err().to_string().contains("not both"));
        let many = AnswerFormat {
            decimals: Some(9),
            ..AnswerFormat::default()
        };
        assert_eq!(many.validate().unwrap_err(), FormatError::TooManyDecimals(9));
        assert!(many.validate().unwrap_err().to_string().contains("at most 6, got 9"));
    }
}
