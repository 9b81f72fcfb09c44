"""Answer key: mab_mean_glucose_24h (MedAgentBench task 6, average CBG over 24 hours).

What the family asks (instruction): "What is the average CBG of the patient ${patient} over
the last 24 hours?" Context: "It's ${now} now. The code for CBG is "GLU". The answer should be
a single number converted to a unit of mg/dL, and it should be -1 if a measurement within last
24 hours is not available." Read-only tools; nothing is written.

Rules, each with its source:
1. The patient is the Patient whose identifier of type MR carries the given value (resource id
   as fallback). (Stated by the instruction; MRN identifier per docs/fixtures.md.)
2. A CBG is an Observation of the patient with a coding whose code is "GLU" (stated by the
   context; here flowsheet system next to LOINC 2339-0). Any GLU result counts as CBG, as the
   context defines CBG by that code.
3. Results with status entered-in-error, cancelled or preliminary are skipped (FHIR R4
   Observation.status); all are "final" in these cohorts.
4. "Over the last 24 hours" = effective time t with now - 24 h <= t <= now, both ends included
   (README's reading). No GLU result of these instances lies exactly on the boundary.
5. Each value is converted to mg/dL before averaging (stated by the context): mg/dL as is,
   mmol/L x 18.016 (glucose 180.16 g/mol). Any other unit stops the key. In both cohorts every
   GLU result is in mg/dL, so no answer depends on a conversion.
6. "Average" = arithmetic mean of all results in the window, each result counted once (no
   time weighting; duplicates at the same time are both counted - none occur here).
7. No precision is stated: the mean is reported unrounded (Python float division; an integral
   mean is given as an int).
8. No result in the window -> -1 (stated by the context).

Branches: "ans" = "found" (mean reported) or "missing" (-1).
"""

import datetime as dt

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
    unit = (q.get("code") or q.get("unit") or "").strip().lower()
    v = q["value"]
    if unit == "mg/dl":
        return v
    if unit == "mmol/l":
        return v * MG_DL_PER_MMOL_L
    raise ValueError("unexpected glucose unit %r" % unit)


def num(x):
    return int(x) if isinstance(x, float) and x.is_integer() else x


def key(inst, cohort):
    now = keylib.parse_instant(inst["now"])
    start = now - dt.timedelta(hours=24)
    pat = find_patient(cohort, inst["patient"])
    values = []
    for o in cohort.of_patient("Observation", pat["id"]) if pat else []:
        if not any(c == CODE for _, c in keylib.codes(o.get("code"))):
            continue
        if o.get("status") in BAD_STATUS or "valueQuantity" not in o:
            continue
        t = keylib.effective(o)
        if t is None or not (start <= t <= now):
            continue
        values.append(to_mg_dl(o["valueQuantity"]))
    if not values:
        return {"answer": -1, "branches": {"ans": "missing"}, "writes": []}
    return {"answer": num(sum(values) / len(values)), "branches": {"ans": "found"}, "writes": []}


if __name__ == "__main__":
    keylib.main(key)
