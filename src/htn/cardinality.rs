//! Cardinality of FHIR R4 elements, for the expression lint that rejects comparisons whose
//! operand can hold more than one item (`code.coding.code = 'x'` is false when a Condition
//! carries two codings; `code.coding.where(code = 'x').exists()` is the membership test).
//!
//! [`REPEATING`] is derived from the official R4 JSON Schema (`fhir-fixtures/spec/fhir.schema.json`):
//! the element names that are arrays in every definition, reachable from the clinical
//! resources scenarios read (Patient, Observation, Condition, MedicationRequest, ServiceRequest, AllergyIntolerance, Encounter, Procedure, Immunization, MedicationAdministration, DiagnosticReport, Medication), where they occur. [`MOSTLY_REPEATING`] adds names that
//! repeat on those resources though a nested type has a single element of the same name.
//! A test recomputes both from the schema, so the list cannot drift.

/// Resource types whose element closure [`REPEATING`] is computed over.
pub const ROOTS: &[&str] = &[
    "Patient",
    "Observation",
    "Condition",
    "MedicationRequest",
    "ServiceRequest",
    "AllergyIntolerance",
    "Encounter",
    "Procedure",
    "Immunization",
    "MedicationAdministration",
    "DiagnosticReport",
    "Medication",
];

/// Element names that are arrays wherever they occur in the closure of [`ROOTS`].
pub const REPEATING: &[&str] = &[
    "account",
    "additionalInstruction",
    "appliesTo",
    "appointment",
    "assessment",
    "basedOn",
    "classHistory",
    "codeFilter",
    "coding",
    "communication",
    "complication",
    "complicationDetail",
    "component",
    "conclusionCode",
    "contact",
    "contained",
    "dateFilter",
    "dayOfWeek",
    "derivedFrom",
    "detectedIssue",
    "diagnosis",
    "dietPreference",
    "dosageInstruction",
    "doseAndRate",
    "education",
    "episodeOfCare",
    "event",
    "eventHistory",
    "evidence",
    "focalDevice",
    "focus",
    "followUp",
    "generalPractitioner",
    "given",
    "hasMember",
    "imagingStudy",
    "ingredient",
    "instantiates",
    "instantiatesCanonical",
    "instantiatesUri",
    "insurance",
    "interpretation",
    "line",
    "locationCode",
    "locationReference",
    "manifestation",
    "media",
    "mustSupport",
    "note",
    "orderDetail",
    "participant",
    "photo",
    "prefix",
    "presentedForm",
    "programEligibility",
    "protocolApplied",
    "reaction",
    "reasonCode",
    "reasonReference",
    "referenceRange",
    "relationship",
    "relevantHistory",
    "replaces",
    "report",
    "result",
    "resultsInterpreter",
    "security",
    "sort",
    "specialArrangement",
    "specialCourtesy",
    "stage",
    "statusHistory",
    "subpotentReason",
    "suffix",
    "supportingInfo",
    "supportingInformation",
    "tag",
    "targetDisease",
    "telecom",
    "timeOfDay",
    "usedCode",
    "usedReference",
];

/// Names that are arrays on the resources themselves (`Condition.category`,
/// `Patient.identifier`, `Patient.name`, `Observation.performer`, ...) but single on some
/// nested type; a path through them is treated as repeating.
pub const MOSTLY_REPEATING: &[&str] = &["address", "bodySite", "category", "identifier", "name", "performer"];

/// Does a path step with this element name yield a collection of possibly many items?
pub fn repeats(name: &str) -> bool {
    REPEATING.binary_search(&name).is_ok() || MOSTLY_REPEATING.contains(&name)
}
