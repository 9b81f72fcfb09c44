//! Scenario files: a family is a template (instruction and context with `${%slot}` slots,
//! the clinical "now", the cohort, the allowed tools, the HTN library files and root task,
//! variables) plus its instances (patient, variable bindings, the expected branches).
//! This module parses and instantiates them; it knows nothing of HTN planning or FHIR.

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
}

/// Render `${%name}` slots from `vars` (and `now`); any other hole is an error.
pub fn render_slots(template: &str, vars: &Map<String, Value>, now: &str) -> Result<String, String> {
    let mut out = String::new();
    let mut rest = template;
    while let Some(i) = rest.find("${") {
        out.push_str(&rest[..i]);
        let after = &rest[i + 2..];
        let end = after.find('}').ok_or_else(|| format!("unterminated ${{ in '{template}'"))?;
        let name = after[..end].trim();
        let Some(var) = name.strip_prefix('%') else {
            return Err(format!("slot '${{{name}}}' must be a variable like ${{%patient}}"));
        };
        let text = if var == "now" {
            now.to_string()
        } else {
            match vars.get(var) {
                Some(Value::String(s)) => s.clone(),
                Some(Value::Null) | None => return Err(format!("slot ${{%{var}}} has no value")),
                Some(other) => other.to_string(),
            }
        };
        out.push_str(&text);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

impl Family {
    /// Instantiate every instance.
    pub fn instances(&self) -> Result<Vec<Instance>, String> {
        self.instances.iter().map(|i| self.instantiate(i)).collect()
    }

    /// Instantiate one instance.
    pub fn instantiate(&self, i: &InstanceDecl) -> Result<Instance, String> {
        let mut vars = self.vars.clone();
        for (k, v) in &i.vars {
            vars.insert(k.clone(), v.clone());
        }
        vars.insert("patient".into(), Value::String(i.patient.clone()));
        let instruction = render_slots(&self.instruction, &vars, &self.now).map_err(|e| format!("{}: instruction: {e}", i.id))?;
        let context = render_slots(&self.context, &vars, &self.now).map_err(|e| format!("{}: context: {e}", i.id))?;
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
        })
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
    pub fn instances(&self) -> Result<Vec<Instance>, String> {
        let mut out = Vec::new();
        for (_, _, f) in &self.families {
            out.extend(f.instances()?);
        }
        Ok(out)
    }

    /// Read a library file named by a family.
    pub fn library_text(&self, rel: &str) -> Result<String, String> {
        let p = self.dir.join(rel);
        std::fs::read_to_string(&p).map_err(|e| format!("{}: {e}", p.display()))
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
        assert!(render_slots("${%nope}", &vars, "T").unwrap_err().contains("%nope"));
        assert!(render_slots("${1 + 1}", &vars, "T").unwrap_err().contains("must be a variable"));
        assert!(render_slots("${%patient", &vars, "T").unwrap_err().contains("unterminated"));
    }
}
