//! The task library: JSON files of compound tasks (ordered methods with `when`
//! conditions, `let` values, subtasks and their partial order), primitive tasks (an
//! instruction, the reference tool call, an optional `sense` query whose result becomes a
//! fact, and `expect` postconditions) and named write selectors. Loading merges files,
//! compiles every expression and checks the network statically (names, arity, variable
//! scope, acyclic orders, facts bound before use, no recursion).

// The library by concept: the files as written, the compiled network, loading and
// merging, static lints, and source lines of JSON pointers. Everything public is
// re-exported here.
mod compiled;
mod decl;
mod lint;
mod load;
mod locate;

pub(crate) use compiled::template_vars;
pub use compiled::{Arg, Check, Library, Method, Order, Primitive, Selector, Subtask, Task};
pub use decl::{CheckDecl, LibraryFile, MethodDecl, PrimitiveDecl, SelectRef, SelectorDecl, SenseDecl, SubtaskDecl, TaskDecl, ToolDecl};
pub use load::LoadError;
pub use locate::locate;
