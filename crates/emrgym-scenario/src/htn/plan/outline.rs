//! The outline condition: an instance's task network written out as one static procedure,
//! given to the agent at the start with the instruction. Every step the network can take is
//! listed with the instruction guided mode would release for it, and where the record
//! decides (a task with methods chosen by conditions) every method is listed with its `doc`
//! (the rule in words) and its own steps. Nothing is read from the record: no method is
//! chosen, no fact is known, and a step whose text needs a value the record would give
//! shows the variable's name in brackets instead. So the outline carries the procedure's
//! structure and its step texts, and leaves to the agent what guided mode's planner does:
//! choosing the next step from what the record showed.

use super::planner::{eval_arg, globals_coll, root_args};
use super::tree::{Env, Globals};
use crate::htn::expr::{self, Coll, EvalError};
use crate::htn::library::{Library, Method, Order};
use emrgym_core::topological_order;
use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// One line of the outline and the lines under it.
struct Item {
    text: String,
    /// The items under it may be done in any order.
    any_order: bool,
    /// Alternatives (each a method), rather than steps.
    alternatives: bool,
    children: Vec<Item>,
}

struct Writer<'a> {
    lib: &'a Library,
    globals: BTreeMap<String, Coll>,
    now: chrono::DateTime<chrono::FixedOffset>,
    depth: usize,
}

/// How a value the record would give reads in a step's text.
fn unknown(var: &str) -> String {
    format!("[{var}]")
}

/// Deeper than any library nests (the planner has no limit either; a recursive library is
/// refused when it is loaded), so only a broken library reaches it.
const MAX_DEPTH: usize = 64;

impl Writer<'_> {
    fn env(&self, locals: &BTreeMap<String, Option<Coll>>) -> Env<'_> {
        Env {
            globals: &self.globals,
            locals: locals.clone(),
            now: self.now,
        }
    }

    /// The items of `task` called with `args` (`None`: known only from the record), and
    /// whether they may be done in any order. A task with one way to do it gives that
    /// method's steps, for the caller's list.
    fn task(&mut self, task: &str, args: BTreeMap<String, Option<Coll>>) -> Result<(bool, Vec<Item>), String> {
        if self.depth > MAX_DEPTH {
            return Err(format!("task '{task}' nests deeper than {MAX_DEPTH} levels"));
        }
        if let Some(p) = self.lib.primitives.get(task) {
            let text = expr::render_with_unknowns(&p.instruction, &self.env(&args), &unknown)
                .map_err(|e| format!("the instruction of '{task}': {e}"))?;
            return Ok((
                false,
                vec![Item {
                    text,
                    any_order: false,
                    alternatives: false,
                    children: Vec::new(),
                }],
            ));
        }
        let t = self.lib.tasks.get(task).ok_or_else(|| format!("unknown task '{task}'"))?;
        self.depth += 1;
        let out = match t.methods.as_slice() {
            [m] if m.when.is_none() => self.method(m, args)?,
            methods => {
                let mut alternatives = Vec::new();
                for m in methods {
                    let (any_order, children) = self.method(m, args.clone())?;
                    let text = if m.doc.trim().is_empty() {
                        m.name.clone()
                    } else {
                        m.doc.trim().to_string()
                    };
                    alternatives.push(Item {
                        text,
                        any_order,
                        alternatives: false,
                        children,
                    });
                }
                (
                    false,
                    vec![Item {
                        text: "As the record shows, one of:".into(),
                        any_order: false,
                        alternatives: true,
                        children: alternatives,
                    }],
                )
            }
        };
        self.depth -= 1;
        Ok(out)
    }

    /// A method's steps in a topological order (each subtask's fact bound, unknown, for the
    /// ones after it), and whether they may be done in any order.
    fn method(&mut self, m: &Method, mut locals: BTreeMap<String, Option<Coll>>) -> Result<(bool, Vec<Item>), String> {
        for (name, e) in &m.lets {
            let v = match expr::eval(e, &Vec::new(), &self.env(&locals)) {
                Ok(c) => Some(c),
                Err(EvalError::Unknown(_)) => None,
                Err(err) => return Err(format!("let {name} of method '{}': {err}", m.name)),
            };
            locals.insert(name.clone(), v);
        }
        let mut items = Vec::new();
        for si in topological_order(m.subtasks.len(), &Library::edges(m)) {
            let s = &m.subtasks[si];
            let mut args = BTreeMap::new();
            for (name, a) in &s.args {
                let v = match eval_arg(a, &self.env(&locals)) {
                    Ok(c) => Some(c),
                    Err(EvalError::Unknown(_)) => None,
                    Err(err) => return Err(format!("argument {name} of subtask '{}': {err}", s.id)),
                };
                args.insert(name.clone(), v);
            }
            // a nested task's steps join this list, in an order that is valid for them
            items.extend(self.task(&s.task, args)?.1);
            locals.insert(s.id.clone(), None);
        }
        Ok((m.order == Order::Unordered && items.len() > 1, items))
    }
}

fn write_items(items: &[Item], indent: usize, alternatives: bool, out: &mut String) {
    let pad = " ".repeat(indent);
    for (i, item) in items.iter().enumerate() {
        let mark = if alternatives { "-".to_string() } else { format!("{}.", i + 1) };
        let any = if item.any_order { " (these in any order)" } else { "" };
        out.push_str(&format!("{pad}{mark} {}{any}\n", item.text));
        write_items(&item.children, indent + mark.len() + 1, item.alternatives, out);
    }
}

/// The outline of `root` called with `args` (an instance's root declaration) over `globals`:
/// numbered steps, alternatives as `-` lines with their steps under them. The error names
/// the task, subtask or argument that could not be written out.
pub fn outline(lib: &Library, root: &str, args: &Map<String, Value>, globals: &Globals) -> Result<String, String> {
    let g = globals_coll(globals);
    let env = Env {
        globals: &g,
        locals: BTreeMap::new(),
        now: globals.now,
    };
    let args = root_args(args, &env)?.into_iter().map(|(k, v)| (k, Some(v))).collect();
    let mut w = Writer {
        lib,
        globals: g.clone(),
        now: globals.now,
        depth: 0,
    };
    let (any_order, items) = w.task(root, args)?;
    let mut out = format!(
        "The procedure, all of it: the steps {}; where what the record shows decides, every case with its \
         steps (a value in [brackets] comes from the record).\n",
        if any_order { "(in any order)" } else { "in order" }
    );
    write_items(&items, 0, false, &mut out);
    Ok(out)
}
