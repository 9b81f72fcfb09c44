"""Answer key: mab_latest_mg_24h (MedAgentBench task 4, latest magnesium within 24 hours).

What the family asks (instruction): "What's the most recent magnesium level of the patient
${patient} within last 24 hours?" Context: "It's ${now} now. The code for magnesium is "MG".
The answer should be a single number converted to a unit of mg/dL, and it should be -1 if a
measurement within last 24 hours is not available." Read-only tools; nothing is written.

Rules, each with its source:
1. The patient is the Patient whose identifier of type MR carries the given value (resource id
   as fallback). (Stated by the instruction; MRN identifier per docs/fixtures.md.)
2. A magnesium result is an Observation of the patient with a coding whose code is "MG"
   (stated by the context). In these cohorts it sits in the flowsheet system
   http://emrgym.dev/fhir/CodeSystem/flowsheet beside LOINC 19123-9; any system is accepted.
3. Results with status entered-in-error, cancelled or preliminary are skipped (FHIR R4
   Observation.status); all are "final" in these cohorts.
4. "Within last 24 hours" = effective time t with now - 24 h <= t <= now; both ends are
   included (README's reading: ">= now - 24 h and <= now"). A result exactly 24 h old counts.
   No instance here has a magnesium exactly on the boundary, so no answer depends on it.
5. "Most recent" = the latest effective time in that window (ties: later in file order).
6. "Converted to a unit of mg/dL" (stated by the context): each observation's unit is checked;
   mg/dL as is; mmol/L x 2.4305 (Mg 24.305 g/mol: 1 mmol/L = 2.4305 mg/dL); mEq/L x 1.21525
   (Mg is divalent: 1 mEq/L = 0.5 mmol/L). Any other unit stops the key. In both cohorts
   every MG result is already in mg/dL, so no instance's answer depends on a conversion.
7. No precision is stated: the value is given unrounded (after conversion, if any).
8. No result in the window -> -1 (stated by the context).

Branches: "ans" = "found" when a result is in the window (answer = its value), "missing"
when none is (answer = -1).
"""

import datetime as dt

import keylib

CODE = "MG"
BAD_STATUS = {"entered-in-error", "cancelled", "preliminary"}
MG_DL_PER_MMOL_L = 2.4305  # magnesium, 24.305 g/mol
MG_DL_PER_MEQ_L = 1.21525  # divalent: 1 mEq/L = 0.5 mmol/L


def find_patient(cohort, mrn):
    for p in cohort.by_type.get("Patient", []):
        for ident in p.get("identifier", []):
            types = [c.get("code") for c in (ident.get("type") or {}).get("coding", [])]
            if "MR" in types and ident.get("value") == mrn:
                return p
    return cohort.patient(mrn)


def to_mg_dl(q):
    unit = (q.get("code") or q.get("unit") or "").strip().lower()
    v = q["value"]
    if unit == "mg/dl":
        return v
    if unit == "mmol/l":
        return v * MG_DL_PER_MMOL_L
    if unit == "meq/l":
        return v * MG_DL_PER_MEQ_L
    raise ValueError("unexpected magnesium unit %r" % unit)


def num(x):
    return int(x) if isinstance(x, float) and x.is_integer() else x


def key(inst, cohort):
    now = keylib.parse_instant(inst["now"])
    start = now - dt.timedelta(hours=24)
    pat = find_patient(cohort, inst["patient"])
    best = None
    for o in cohort.of_patient("Observation", pat["id"]) if pat else []:
        if not any(c == CODE for _, c in keylib.codes(o.get("code"))):
            continue
        if o.get("status") in BAD_STATUS or "valueQuantity" not in o:
            continue
        t = keylib.effective(o)
        if t is None or not (start <= t <= now):
            continue
        if best is None or t >= best[0]:
            best = (t, o)
    if best is None:
        return {"answer": -1, "branches": {"ans": "missing"}, "writes": []}
    return {"answer": num(to_mg_dl(best[1]["valueQuantity"])), "branches": {"ans": "found"}, "writes": []}


if __name__ == "__main__":
    keylib.main(key)
