"""Answer key: mab_latest_glucose (MedAgentBench task 7, "latest CBG").

What the family asks (instruction): "What is the most recent CBG of the patient ${patient}?"
Context: "It's ${now} now. The code for CBG is "GLU"." The agent can only read the record
(fhir_search, fhir_read, finish), and nothing is to be written.

Rules, each with its source:
1. The patient is the Patient resource whose identifier of type MR (v2-0203, "Medical record
   number") carries the given value; the resource id is the fallback. (Stated by the
   instruction: "the patient S..."; the MRN is the patient's identifier, docs/fixtures.md.)
2. A CBG is any Observation of that patient with a coding whose code is "GLU" (stated by the
   context: "The code for CBG is GLU"). In these cohorts that coding lives in the system
   http://emrgym.dev/fhir/CodeSystem/flowsheet next to LOINC 2339-0; the key matches the code
   "GLU" in any system, as the context names no system.
3. Observations with status entered-in-error, cancelled or preliminary are not results and are
   skipped (FHIR R4 Observation.status semantics); every one in these cohorts is "final".
4. "Most recent" = the latest effective time (effectiveDateTime; keylib.effective) that is not
   after "now" (a result from the future of the clinical now cannot be "most recent" at now).
   If two share the latest time, the later one in file order is taken (none does here).
5. The value is reported in mg/dL, the unit MedAgentBench uses for CBG. Each observation's unit
   is checked: mg/dL as is; mmol/L x 18.016 (glucose molar mass 180.16 g/mol; 1 mmol/L =
   18.016 mg/dL). Any other unit stops the key (raise) rather than guess. In both cohorts
   every GLU observation is in mg/dL, so no answer here depends on a conversion.
6. Precision: the instruction states none, so the value is reported unrounded, as a JSON
   number (an integral float is given as an int).

Ambiguities and how they are read:
- No time window: the instruction asks for the most recent CBG at any time, not within 24 h.
- No "-1 if missing" is stated for this task. If a patient had no GLU observation at all the
  key answers -1 (the MedAgentBench convention for an unavailable value, README) - no
  instance here reaches that case.
- "CBG" (capillary blood glucose) vs. serum/blood glucose drawn with a metabolic panel: the
  context defines CBG by the code "GLU", so every GLU result counts, whatever the draw.
- The decision vocabulary is empty, so "branches" is {}.
"""

import keylib

CODE = "GLU"
BAD_STATUS = {"entered-in-error", "cancelled", "preliminary"}
MG_DL_PER_MMOL_L = 18.016  # glucose, 180.16 g/mol


def find_patient(cohort, mrn):
    for p in cohort.by_type.get("Patient", []):
        for ident in p.get("identifier", []):
            types = [c.get("code") for c in (ident.get("type") or {}).get("coding", [])]
            if "MR" in types and ident.get("value") == mrn:
                return p
    return cohort.patient(mrn)


def to_mg_dl(q):
    unit = (q.get("code") or q.get("unit") or "").strip()
    v = q["value"]
    if unit.lower() == "mg/dl":
        return v
    if unit.lower() == "mmol/l":
        return v * MG_DL_PER_MMOL_L
    raise ValueError("unexpected glucose unit %r" % unit)


def num(x):
    return int(x) if isinstance(x, float) and x.is_integer() else x


def key(inst, cohort):
    now = keylib.parse_instant(inst["now"])
    pat = find_patient(cohort, inst["patient"])
    best = None
    for o in cohort.of_patient("Observation", pat["id"]) if pat else []:
        if not any(c == CODE for _, c in keylib.codes(o.get("code"))):
            continue
        if o.get("status") in BAD_STATUS or "valueQuantity" not in o:
            continue
        t = keylib.effective(o)
        if t is None or t > now:
            continue
        if best is None or t >= best[0]:
            best = (t, o)
    if best is None:
        return {"answer": -1, "branches": {}, "writes": []}
    return {"answer": num(to_mg_dl(best[1]["valueQuantity"])), "branches": {}, "writes": []}


if __name__ == "__main__":
    keylib.main(key)
