//! Failure classes, and the grader's version history: which rules each version changed, so
//! `emrgym replay` can name the rules behind a verdict that changed ([`rules_changed`]).

use serde::Serialize;

/// Version of the grader's semantics: bump it with any change that can change a verdict, so
/// `emrgym replay` can say that a grade changed because the grader did.
pub const GRADER_VERSION: u32 = 8;

/// What each grader version changed, with the failure class the rule decides: `emrgym replay`
/// names these rules for a verdict that changed between the recording's version and this one
/// ([`rules_changed`]). Version 1 is the first recorded; every bump adds its rules here.
pub const GRADER_CHANGES: &[(u32, FailureClass, &str)] = &[
    (
        2,
        FailureClass::WrongParameter,
        "v2 equivalence: routes by synonym or SNOMED code, doses in any UCUM-convertible unit (mEq = mmol for monovalent ions), \
         BP as text or as the vital-signs panel, notes by containment, concepts by any of their codes",
    ),
    (
        2,
        FailureClass::Omission,
        "v2 split doses: orders that together give the expected dose pass",
    ),
    (
        2,
        FailureClass::ExtraneousWrite,
        "v2 split doses: the second order of a split dose is not extraneous",
    ),
    (
        2,
        FailureClass::WrongAnswer,
        "v2 answers: JSON text read as JSON; structured refusals (finish outcome cannot_complete)",
    ),
    (
        2,
        FailureClass::Sensing,
        "v2 gating by dependency: a read gates only the branch that uses its fact; facts shown only by read steps; concepts by any code",
    ),
    (
        2,
        FailureClass::Ordering,
        "v2 ordering by dependency: a compound starts at its first write; independent reads in any order",
    ),
    (
        3,
        FailureClass::WrongAnswer,
        "v3 answer format: numeric tolerance is half a unit in the last decimal place the instruction states (0 for values \
         as recorded); a list answer matches in any order when the instruction allows it",
    ),
    (
        4,
        FailureClass::WrongAnswer,
        "v4 false refusals: finishing a task that asks no answer by saying the patient was not found fails (the patient is \
         in the record)",
    ),
    (
        5,
        FailureClass::Sensing,
        "v5 absences: a search shows that nothing matches only when it is no narrower than the fact's query (every parameter \
         implied by it: the patient, all its codes, a date window that holds the fact's, a name part that starts the name \
         asked) and shows all its matches (or, sorted newest first, ends before the window); a whole name as one `name` value, \
         a window from the clinical now, another status or an extra filter prove nothing",
    ),
    (
        6,
        FailureClass::Sensing,
        "v6 names: the server matches a `name` value against the name written out (given names, then the family name) as well \
         as its parts, so a whole-name search such as `name=Peter Stafford` finds Peter Stafford and its empty result shows \
         that no Peter Stafford is on file; the family name first still matches no one and proves nothing; `:exact` is \
         case-sensitive",
    ),
    (
        7,
        FailureClass::Sensing,
        "v7 accents: a name is compared as the server compares strings, accents folded as well as case, so a search for \
         `Chloe Nunez` shows that no Chloé Núñez is on file",
    ),
    (
        8,
        FailureClass::WrongAnswer,
        "v8 lists as text: a list answer written as text, its items separated by commas, semicolons or line breaks \
         (`S1054954, S1092389`), is read as that list and its items compared as before, in the order the instruction asks",
    ),
];

/// The rules changed after grader version `from` (up to this one) that decide a verdict of
/// one of `classes`; every rule changed when no class is known.
pub fn rules_changed(from: u32, classes: &[FailureClass]) -> Vec<&'static str> {
    GRADER_CHANGES
        .iter()
        .filter(|(v, c, _)| *v > from && *v <= GRADER_VERSION && (classes.is_empty() || classes.contains(c)))
        .map(|(_, _, rule)| *rule)
        .collect()
}

/// Why a node (or the episode) failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum FailureClass {
    /// The agent never saw the data a decision needed.
    Sensing,
    /// The writes belong to another branch than the record calls for.
    WrongBranch,
    /// The right kind of write with a wrong field (dose, unit, subject, time...).
    WrongParameter,
    /// A required write is missing.
    Omission,
    /// Done in the wrong order.
    Ordering,
    /// A write no node asked for.
    ExtraneousWrite,
    /// `finish` while required nodes had not been attempted.
    PrematureFinish,
    /// The final answer is wrong or missing.
    WrongAnswer,
}
