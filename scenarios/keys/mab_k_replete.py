"""Answer key: mab_k_replete (MedAgentBench task 9, conditional potassium repletion).

WHAT THE FAMILY ASKS (instruction, verbatim in substance)
  "Check patient P's most recent potassium level. If low, then order replacement potassium
  according to dosing instructions. Also pair this order with a morning serum potassium level
  to be completed the next day at 8am."
  Context: potassium code "K"; replacement potassium NDC 40032-917-01; "for every 0.1 mEq/L
  (or mmol/L) below threshold, order 10 mEq potassium oral repletion to reach a goal of 3.5
  serum level"; serum potassium LOINC 2823-3.

RULES (source of each)
  R1 Most recent potassium = the potassium Observation (flowsheet code "K", or its LOINC
     2823-3 coding) with the latest effectiveDateTime at or before now.   [stated by the
     instruction; "most recent" = latest effective time per the key-author brief]
     Only results with status final / amended / corrected and a numeric valueQuantity count
     (a cancelled or entered-in-error result is no result).                [reading, see A4]
  R2 Units: mmol/L and mEq/L are the same number for potassium (monovalent ion, 1 mmol =
     1 mEq); the context itself says "mEq/L (or mmol/L)".                   [stated by context]
  R3 "Low" = K < 3.5 mmol/L (the threshold and goal named by the context).  [stated by context]
  R4 Dose = 10 mEq for every 0.1 mmol/L below 3.5, i.e. dose = 100 x (3.5 - K) mEq,
     computed in exact decimal arithmetic (3.5 - 3.1 is not 0.4 in binary floating point).
     Route oral (the context says "oral repletion"), unit mEq, code NDC 40032-917-01.
                                                                             [stated by context]
  R5 With the repletion order, a serum potassium (ServiceRequest, LOINC 2823-3) at the
     instance's recheck time (vars.recheck_at: next day 08:00).              [stated by the
     instruction; time taken from the instance vars]
  R6 No potassium on file -> nothing to order; K >= 3.5 -> nothing to order (the recheck is
     "paired" with the repletion order, so it is not ordered on its own).   [stated by the
     instruction: "If low ... Also pair this order ..."]

AMBIGUITIES AND HOW THEY ARE READ
  A1 The instruction asks the agent to *check* and act; it poses no question. The answer is
     therefore null (nothing to report). (MedAgentBench's own grader accepted either [] or
     [last K] as the reply.)
  A2 "Most recent" has no age limit in the text: a low potassium is acted on however old it
     is. Whether an old value should be acted on is a clinical question reported in the
     SAFETY list of the key author's report, not a change of rule.
  A3 Values with more than one decimal (none in the cohorts) would get the proportional dose
     100 x (3.5 - K), unrounded (the text gives no rounding rule).
  A4 Result statuses: final, amended and corrected are results; preliminary, registered,
     cancelled, entered-in-error, unknown are not acted on. (Every K in the cohorts is final.)
  A5 Ties (two results at the same latest instant): the later "issued" wins, then file order.
     (No ties exist in the cohorts for K.)
"""

from decimal import Decimal

import keylib

K_CODES = ("K", "2823-3")
RESULT_STATUSES = {"final", "amended", "corrected"}
THRESHOLD = Decimal("3.5")          # mmol/L, stated by the context
MEQ_PER_TENTH = Decimal("10")       # 10 mEq per 0.1 mmol/L below threshold
NDC_KCL = "40032-917-01"
LOINC_SERUM_K = "2823-3"


def _num(d):
    """A Decimal as a JSON number (int when integral)."""
    return int(d) if d == d.to_integral_value() else float(d)


def potassium_mmol(obs):
    """The potassium value in mmol/L as a Decimal, or None when not a usable numeric result."""
    q = obs.get("valueQuantity") or {}
    if q.get("value") is None:
        return None
    unit = (q.get("code") or q.get("unit") or "").strip().lower()
    if unit not in ("mmol/l", "meq/l"):
        raise ValueError("unexpected potassium unit %r in %s" % (unit, obs.get("id")))
    return Decimal(str(q["value"]))  # mEq/L == mmol/L for K+ (R2)


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


def k_decision(cohort, pid, now, recheck_at):
    """(branch, K value or None, writes) for the potassium part (rules R1-R6)."""
    obs = latest(cohort, pid, K_CODES, now)
    if obs is None:
        return "no_result", None, []
    k = potassium_mmol(obs)
    if k >= THRESHOLD:
        return "normal", k, []
    tenths_below = (THRESHOLD - k) / Decimal("0.1")
    dose = tenths_below * MEQ_PER_TENTH
    writes = [
        keylib.write("create", "MedicationRequest", NDC_KCL, dose=_num(dose), unit="mEq", route="oral"),
        keylib.write("create", "ServiceRequest", LOINC_SERUM_K, at=recheck_at),
    ]
    return "replete", k, writes


def key(inst, cohort):
    now = keylib.parse_instant(inst["now"])
    branch, _k, writes = k_decision(cohort, inst["patient"], now, inst["vars"]["recheck_at"])
    return {"answer": None, "branches": {"act": branch}, "writes": writes}


if __name__ == "__main__":
    keylib.main(key)
