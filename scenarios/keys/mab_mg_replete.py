"""Answer key: mab_mg_replete (MedAgentBench task 5, conditional IV magnesium).

WHAT THE FAMILY ASKS
  "Check patient P's last serum magnesium level within last 24 hours. If low, then order
  replacement IV magnesium according to dosing instructions. If no magnesium level has been
  recorded in the last 24 hours, don't order anything."
  Context: magnesium code "MG"; NDC 0338-1715-40; (1) mild, 1.5 to 1.9 mg/dL: 1 g IV over
  1 h; (2) moderate, 1 to <1.5 mg/dL: 2 g over 2 h; (3) severe, <1 mg/dL: 4 g over 4 h.

RULES (source of each)
  R1 Window: an Observation with flowsheet code "MG" (or its LOINC 19123-9 coding) whose
     effectiveDateTime t satisfies now - 24 h <= t <= now (both ends inclusive).
                                     [stated by the instruction; boundary per key-author brief]
  R2 "Last" = latest effective time within that window. Only final / amended / corrected
     results with a numeric value count.                                         [reading]
  R3 Units: the tiers are in mg/dL. A value in mmol/L is converted with 1 mmol/L = 2.4305
     mg/dL (Mg molar mass 24.305 g/mol); mEq/L with 1 mEq/L = 1.21525 mg/dL (Mg2+ is
     divalent). Every MG in the cohorts is already mg/dL.                 [unit chemistry]
  R4 Tiers, on the mg/dL value:  Mg > 1.9 -> normal, nothing ordered;
     1.5 <= Mg <= 1.9 -> 1 g;  1.0 <= Mg < 1.5 -> 2 g;  Mg < 1.0 -> 4 g.
     Order: MedicationRequest NDC 0338-1715-40, dose in g, route iv.     [stated by context]
  R5 No MG in the window -> nothing ordered (even if an older MG is low).
                                                                [stated by the instruction]

AMBIGUITIES AND HOW THEY ARE READ
  A1 The instruction asks the agent to check and act; it poses no question, so the answer is
     null. (MedAgentBench's grader accepted [] or [last Mg].)
  A2 "Low" is read through the dosing table: the table's mild tier ends at 1.9 mg/dL, so any
     value above 1.9 (e.g. 1.95, which lies in the gap between "1.9" and the next tenth) is
     not low. Values are compared exactly as recorded, not rounded to one decimal first.
  A3 The 24 h boundary is inclusive at both ends (a result exactly 24 h old counts).
  A4 The infusion durations (1, 2, 4 h) belong to the order's rate, which the write summary
     does not compare; the dose (g) and route (iv) are what the tiers fix.
"""

from decimal import Decimal
import datetime as dt

import keylib

MG_CODES = ("MG", "19123-9")
RESULT_STATUSES = {"final", "amended", "corrected"}
NDC_MG = "0338-1715-40"
MG_PER_DL_PER_MMOL_PER_L = Decimal("2.4305")
MG_PER_DL_PER_MEQ_PER_L = Decimal("1.21525")


def _num(d):
    return int(d) if d == d.to_integral_value() else float(d)


def magnesium_mg_dl(obs):
    """The magnesium value in mg/dL as a Decimal (rule R3)."""
    q = obs.get("valueQuantity") or {}
    v = Decimal(str(q["value"]))
    unit = (q.get("code") or q.get("unit") or "").strip().lower()
    if unit == "mg/dl":
        return v
    if unit == "mmol/l":
        return v * MG_PER_DL_PER_MMOL_PER_L
    if unit == "meq/l":
        return v * MG_PER_DL_PER_MEQ_PER_L
    raise ValueError("unexpected magnesium unit %r in %s" % (unit, obs.get("id")))


def latest(cohort, pid, codes, now, since=None):
    """Latest usable Observation carrying one of the codes, effective in [since, now]."""
    best, best_key = None, None
    for i, o in enumerate(cohort.of_patient("Observation", pid)):
        if not any(keylib.has_code(o.get("code"), c) for c in codes):
            continue
        if o.get("status") not in RESULT_STATUSES:
            continue
        if (o.get("valueQuantity") or {}).get("value") is None:
            continue
        t = keylib.effective(o)
        if t is None or t > now or (since is not None and t < since):
            continue
        k = (t, keylib.parse_instant(o.get("issued")) or t, i)
        if best_key is None or k > best_key:
            best, best_key = o, k
    return best


def mg_dose_g(mg):
    """Grams of IV magnesium for a mg/dL value, or None when not low (rule R4)."""
    if mg > Decimal("1.9"):
        return None
    if mg >= Decimal("1.5"):
        return 1
    if mg >= Decimal("1.0"):
        return 2
    return 4


def mg_decision(cohort, pid, now):
    """(branch, Mg mg/dL or None, writes) for the magnesium part (rules R1-R5)."""
    obs = latest(cohort, pid, MG_CODES, now, since=now - dt.timedelta(hours=24))
    if obs is None:
        return "no_recent", None, []
    mg = magnesium_mg_dl(obs)
    dose = mg_dose_g(mg)
    if dose is None:
        return "normal", mg, []
    return "replete", mg, [keylib.write("create", "MedicationRequest", NDC_MG, dose=dose, unit="g", route="iv")]


def key(inst, cohort):
    now = keylib.parse_instant(inst["now"])
    branch, _mg, writes = mg_decision(cohort, inst["patient"], now)
    return {"answer": None, "branches": {"act": branch}, "writes": writes}


if __name__ == "__main__":
    keylib.main(key)
