"""Answer key: diabetes_followup (blood pressure, HbA1c surveillance, glucose; long chain).

WHAT THE FAMILY ASKS
  "Diabetes follow-up for patient P: record today's blood pressure of "<bp>", make sure there
  is an HbA1c from the last 12 months (order one if it is missing or older than a year), and
  tell me the last HbA1c value and the latest glucose as [HbA1c, glucose], using -1 for a
  value that is not available."
  Context: flowsheet ID for blood pressure "BP"; HbA1c code "A1C", ordered with LOINC 4548-4;
  glucose code "GLU".

RULES (source of each)
  R1 Record the blood pressure: one Observation with flowsheet id "BP" whose value is the
     text given (vars.bp, verbatim, e.g. "121/79 mmHg").           [stated by the instruction]
  R2 Last HbA1c = the A1C (or LOINC 4548-4) Observation with the latest effectiveDateTime at or
     before now, any age; only final / amended / corrected numeric results count.
  R3 "From the last 12 months": effective >= now minus one calendar year (inclusive) ->
     branch "current", nothing ordered; older -> "stale", order one (ServiceRequest LOINC
     4548-4); none at all -> "missing", order one.               [stated by the instruction]
  R4 Latest glucose = the GLU (LOINC 2339-0) Observation with the latest effectiveDateTime at
     or before now, any age, in mg/dL (mmol/L would be converted x 18.016, glucose molar mass
     180.16 g/mol; none occur).                                   [stated by the instruction]
  R5 Answer = [HbA1c %, glucose mg/dL], each as recorded, unrounded; -1 for a value that is
     not on file.                                                  [stated by the instruction]

AMBIGUITIES AND HOW THEY ARE READ
  A1 "The last HbA1c value" is reported even when it is older than a year (it is still the
     last value in the chart and is therefore "available"); the staleness only drives the order.
  A2 "Latest glucose" has no time window; any glucose (venous lab or capillary; all carry
     GLU) counts. The instruction gives no age limit, so none is applied.
  A3 The 12-month boundary is inclusive (a result exactly one year old still counts as "from
     the last 12 months"); one year = the same instant one calendar year before now.
  A4 The BP write carries no time: the instruction says "today's" without a time, and the
     summary field "at" is for ServiceRequests. The write is made whatever the value.
  A5 The instruction presumes diabetes; whether the patient has diabetes on the problem list
     does not change the steps asked for (the key author's report lists the instances whose
     patient has no diabetes, a curation question).
"""

from decimal import Decimal

import keylib

RESULT_STATUSES = {"final", "amended", "corrected"}
A1C_CODES = ("A1C", "4548-4")
GLU_CODES = ("GLU", "2339-0")
LOINC_A1C_ORDER = "4548-4"
BP_FLOWSHEET = "BP"


def _num(d):
    return int(d) if d == d.to_integral_value() else float(d)


def latest(cohort, pid, codes, now):
    best, best_key = None, None
    for i, o in enumerate(cohort.of_patient("Observation", pid)):
        if not any(keylib.has_code(o.get("code"), c) for c in codes):
            continue
        if o.get("status") not in RESULT_STATUSES:
            continue
        if (o.get("valueQuantity") or {}).get("value") is None:
            continue
        t = keylib.effective(o)
        if t is None or t > now:
            continue
        k = (t, keylib.parse_instant(o.get("issued")) or t, i)
        if best_key is None or k > best_key:
            best, best_key = o, k
    return best


def a1c_percent(obs):
    q = obs["valueQuantity"]
    v = Decimal(str(q["value"]))
    unit = (q.get("code") or q.get("unit") or "").strip().lower()
    if unit == "%":
        return v
    if unit == "mmol/mol":
        return Decimal("0.09148") * v + Decimal("2.152")
    raise ValueError("unexpected HbA1c unit %r in %s" % (unit, obs.get("id")))


def glucose_mg_dl(obs):
    q = obs["valueQuantity"]
    v = Decimal(str(q["value"]))
    unit = (q.get("code") or q.get("unit") or "").strip().lower()
    if unit == "mg/dl":
        return v
    if unit == "mmol/l":
        return v * Decimal("18.016")
    raise ValueError("unexpected glucose unit %r in %s" % (unit, obs.get("id")))


def one_year_before(t):
    try:
        return t.replace(year=t.year - 1)
    except ValueError:  # 29 February -> 28 February
        return t.replace(year=t.year - 1, day=28)


def key(inst, cohort):
    pid = inst["patient"]
    now = keylib.parse_instant(inst["now"])
    writes = [keylib.write("create", "Observation", BP_FLOWSHEET, value=inst["vars"]["bp"])]  # R1

    a1c = latest(cohort, pid, A1C_CODES, now)                                                # R2
    if a1c is None:
        act = "missing"
    elif keylib.effective(a1c) >= one_year_before(now):
        act = "current"
    else:
        act = "stale"
    if act in ("missing", "stale"):                                                           # R3
        writes.append(keylib.write("create", "ServiceRequest", LOINC_A1C_ORDER))

    glu = latest(cohort, pid, GLU_CODES, now)                                                 # R4
    answer = [_num(a1c_percent(a1c)) if a1c is not None else -1,
              _num(glucose_mg_dl(glu)) if glu is not None else -1]                           # R5
    return {"answer": answer, "branches": {"act": act}, "writes": writes}


if __name__ == "__main__":
    keylib.main(key)
