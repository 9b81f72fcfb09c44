"""Answer key: electrolyte_review (potassium and magnesium review with repletion).

WHAT THE FAMILY ASKS
  "Review patient P's electrolytes. Check the most recent potassium and the last magnesium
  within 24 hours. Replete potassium if low (with a serum potassium recheck tomorrow at 8am)
  and magnesium if low, following the dosing rules. Then report both values as
  [potassium, magnesium], using -1 for a value that is not available."
  Context: potassium code "K"; magnesium code "MG"; oral potassium NDC 40032-917-01, 10 mEq
  for every 0.1 mmol/L below 3.5; serum potassium LOINC 2823-3; IV magnesium NDC
  0338-1715-40: 1 g if 1.5 to 1.9 mg/dL, 2 g if 1 to <1.5, 4 g if <1.

RULES (source of each)
  Potassium (decision "k_act")
  K1 Most recent K = the Observation with flowsheet code "K" (or LOINC 2823-3) with the latest
     effectiveDateTime at or before now; no age limit ("most recent", unlike magnesium).
                                                                [stated by the instruction]
  K2 mmol/L = mEq/L for potassium (monovalent).                            [unit chemistry]
  K3 Low = K < 3.5 mmol/L. Dose = 10 mEq per 0.1 mmol/L below 3.5 = 100 x (3.5 - K) mEq,
     exact decimal arithmetic; MedicationRequest NDC 40032-917-01, unit mEq, route oral.
                                                                     [stated by context]
  K4 With it, ServiceRequest LOINC 2823-3 at vars.recheck_at ("tomorrow at 8am").
                                                 [stated by the instruction / instance vars]
  K5 No K on file, or K >= 3.5: no potassium order and no recheck (the recheck is part of
     "replete potassium if low (with a ... recheck)").             [stated by the instruction]
  Magnesium (decision "mg_act")
  M1 Window: MG (or LOINC 19123-9) with now - 24 h <= effective <= now, both ends inclusive;
     the latest one in the window is used.      [stated by the instruction; boundary: brief]
  M2 Units: tiers in mg/dL; mmol/L x 2.4305 = mg/dL; mEq/L x 1.21525 = mg/dL. (All cohort
     MG values are mg/dL.)                                                 [unit chemistry]
  M3 Mg > 1.9 -> normal; 1.5 <= Mg <= 1.9 -> 1 g; 1.0 <= Mg < 1.5 -> 2 g; Mg < 1.0 -> 4 g;
     MedicationRequest NDC 0338-1715-40, unit g, route iv.                [stated by context]
  M4 No MG in the window -> no magnesium order.                [stated by the instruction]
  Answer
  A  [K, Mg]: K in mmol/L as recorded, Mg in mg/dL (the unit of the dosing rules), each
     unrounded; -1 where the value is not available (K: none on file; Mg: none within 24 h).
                                                                [stated by the instruction]

AMBIGUITIES AND HOW THEY ARE READ
  B1 "The last magnesium within 24 hours" both for acting and for reporting: an older Mg is
     "not available" and reported as -1.
  B2 The potassium has no time limit, so a low K from weeks ago is still repleted per the
     text; such cases are flagged in the key author's SAFETY list, not changed here.
  B3 Mg values above 1.9 but below 2.0 (e.g. 1.95) are not low (the table stops at 1.9);
     values are compared as recorded, not rounded.
  B4 Only final / amended / corrected results with a numeric value count; ties at the same
     instant are broken by later "issued", then file order (none occur in the cohorts).
  B5 Reported numbers are the recorded values (no rounding: the instruction gives none).
"""

from decimal import Decimal
import datetime as dt

import keylib

RESULT_STATUSES = {"final", "amended", "corrected"}
K_CODES = ("K", "2823-3")
MG_CODES = ("MG", "19123-9")
K_THRESHOLD = Decimal("3.5")
NDC_KCL = "40032-917-01"
LOINC_SERUM_K = "2823-3"
NDC_MG = "0338-1715-40"


def _num(d):
    return int(d) if d == d.to_integral_value() else float(d)


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


def potassium_mmol(obs):
    q = obs["valueQuantity"]
    unit = (q.get("code") or q.get("unit") or "").strip().lower()
    if unit not in ("mmol/l", "meq/l"):
        raise ValueError("unexpected potassium unit %r in %s" % (unit, obs.get("id")))
    return Decimal(str(q["value"]))


def magnesium_mg_dl(obs):
    q = obs["valueQuantity"]
    v = Decimal(str(q["value"]))
    unit = (q.get("code") or q.get("unit") or "").strip().lower()
    if unit == "mg/dl":
        return v
    if unit == "mmol/l":
        return v * Decimal("2.4305")
    if unit == "meq/l":
        return v * Decimal("1.21525")
    raise ValueError("unexpected magnesium unit %r in %s" % (unit, obs.get("id")))


def key(inst, cohort):
    pid = inst["patient"]
    now = keylib.parse_instant(inst["now"])
    branches, writes = {}, []

    # Potassium: most recent, any age (K1-K5).
    k_obs = latest(cohort, pid, K_CODES, now)
    if k_obs is None:
        branches["k_act"] = "no_result"
        k_answer = -1
    else:
        k = potassium_mmol(k_obs)
        k_answer = _num(k)
        if k >= K_THRESHOLD:
            branches["k_act"] = "normal"
        else:
            branches["k_act"] = "replete"
            dose = (K_THRESHOLD - k) / Decimal("0.1") * 10
            writes.append(keylib.write("create", "MedicationRequest", NDC_KCL, dose=_num(dose), unit="mEq", route="oral"))
            writes.append(keylib.write("create", "ServiceRequest", LOINC_SERUM_K, at=inst["vars"]["recheck_at"]))

    # Magnesium: last within 24 h (M1-M4).
    mg_obs = latest(cohort, pid, MG_CODES, now, since=now - dt.timedelta(hours=24))
    if mg_obs is None:
        branches["mg_act"] = "no_recent"
        mg_answer = -1
    else:
        mg = magnesium_mg_dl(mg_obs)
        mg_answer = _num(mg)
        if mg > Decimal("1.9"):
            branches["mg_act"] = "normal"
        else:
            branches["mg_act"] = "replete"
            grams = 1 if mg >= Decimal("1.5") else 2 if mg >= Decimal("1.0") else 4
            writes.append(keylib.write("create", "MedicationRequest", NDC_MG, dose=grams, unit="g", route="iv"))

    return {"answer": [k_answer, mg_answer], "branches": branches, "writes": writes}


if __name__ == "__main__":
    keylib.main(key)
