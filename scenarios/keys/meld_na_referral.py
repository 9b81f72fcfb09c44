"""Independent answer key: meld_na_referral.

WHAT THE FAMILY ASKS
    A patient with cirrhosis: compute MELD-Na (OPTN 2016) from the most recent serum
    creatinine (LOINC 2160-0), total bilirubin (1975-2), INR (6301-6) and serum sodium
    (2951-2). If any of the four is missing or older than 30 days, do not compute it: order a
    comprehensive metabolic panel (ServiceRequest LOINC 24323-8) and an INR (ServiceRequest
    LOINC 6301-6) and answer -1. If the score is 15 or more, refer to hepatology for transplant
    evaluation (ServiceRequest SNOMED CT 3457005, note naming hepatology). Answer: the score.

RULES AND SOURCES
    OPTN/UNOS MELD-Na, in force January 2016 - July 2023 (OPTN Policy 9.1 "MELD Score"; OPTN
    policy notice "Changes to MELD: addition of serum sodium", November 2015; Kim WR et al.,
    NEJM 2008;359:1018-26 for the sodium term):
      1. Bounds: creatinine, bilirubin and INR values below 1.0 are set to 1.0; creatinine
         above 4.0 mg/dL is set to 4.0, and creatinine is set to 4.0 if the candidate had
         dialysis at least twice in the prior week (or 24 h of CVVHD) - checked here against
         Procedure resources with a dialysis code performed in the 7 days before now (there
         are none in the cohort). Sodium below 125 is set to 125, above 137 to 137.
      2. MELD(i) = 0.957 x ln(Cr) + 0.378 x ln(bilirubin) + 1.120 x ln(INR) + 0.643,
         "then round to the tenth decimal place and multiply by 10" (policy wording).
         Read as: round to one decimal (the tenths place, half up), then x 10, so MELD(i) is
         a whole number (e.g. 1.436 -> 1.4 -> 14). This is how MDCalc and the OPTN's own
         integer MELD(i) reports read it.
      3. If MELD(i) > 11: MELD = MELD(i) + 1.32 x (137 - Na) - 0.033 x MELD(i) x (137 - Na);
         otherwise MELD = MELD(i).
      4. The score is reported as a whole number (OPTN MELD scores are integers): rounded half
         up; capped at 40 (OPTN: maximum MELD score 40).
    Inputs: the most recent value (latest effectiveDateTime not after now) of each LOINC code;
        "older than 30 days" = effective time earlier than now - 30 days (exactly 30 days old
        is still usable). Stated by the instruction.
    Referral threshold: the reported (integer) MELD-Na >= 15 (stated by the instruction).

UNITS (checked: creatinine and bilirubin mg/dL, sodium mmol/L, INR {INR}; conversions kept
    for robustness): creatinine umol/L / 88.42; bilirubin umol/L / 17.1; sodium mEq/L = mmol/L.

AMBIGUITIES AND HOW THIS KEY READS THEM
    * "round to the tenth decimal place": read as the tenths place (one decimal). Two other
      readings exist in public implementations (ten decimal places; two decimals); the key's
      report lists the instances where they would give a different integer score.
    * Answer precision: the instruction says "Answer with the MELD-Na score" and gives -1 as
      the "unavailable" value; MELD-Na is an integer score in OPTN use, so the key answers the
      rounded integer and applies the >= 15 threshold to it.
    * No hyperglycaemia correction of sodium (OPTN MELD-Na does not apply one).
    * Anticoagulation (warfarin raises INR independently of liver function) does not change
      the computation, which the instruction fixes; such patients are flagged in the report.
"""

import datetime as _dt
import math
from decimal import Decimal, ROUND_HALF_UP

import keylib

LOINC_CREAT, LOINC_BILI, LOINC_INR, LOINC_NA = "2160-0", "1975-2", "6301-6", "2951-2"
DIALYSIS_SNOMED = {"108241001", "302497006", "265764009", "714749008", "233575001", "71192002"}


def latest(cohort, pid, loinc, now):
    best = None
    for obs in cohort.of_patient("Observation", pid):
        if obs.get("status") in ("entered-in-error", "cancelled"):
            continue
        if not keylib.has_code(obs.get("code"), loinc, keylib.LOINC) or "valueQuantity" not in obs:
            continue
        t = keylib.effective(obs)
        if t is None or t > now:
            continue
        if best is None or t > keylib.effective(best):
            best = obs
    return best


def value_in(obs, kind):
    q = obs["valueQuantity"]
    v = float(q["value"])
    u = (q.get("code") or q.get("unit") or "").strip()
    if kind == "creat":
        return {"mg/dL": v, "mg/dl": v, "umol/L": v / 88.42, "µmol/L": v / 88.42}[u]
    if kind == "bili":
        return {"mg/dL": v, "mg/dl": v, "umol/L": v / 17.1, "µmol/L": v / 17.1}[u]
    if kind == "inr":
        return v
    if kind == "na":
        return {"mmol/L": v, "mEq/L": v, "meq/L": v}[u]
    raise ValueError(kind)


def dialysed_twice_last_week(cohort, pid, now):
    n = 0
    for proc in cohort.of_patient("Procedure", pid):
        if proc.get("status") not in ("completed", "in-progress"):
            continue
        if not any(s == keylib.SNOMED and c in DIALYSIS_SNOMED for s, c in keylib.codes(proc.get("code"))):
            continue
        t = keylib.parse_instant(proc.get("performedDateTime") or
                                 (proc.get("performedPeriod") or {}).get("start"))
        if t is not None and now - _dt.timedelta(days=7) <= t <= now:
            n += 1
    return n >= 2


def half_up(x, places):
    q = Decimal(1).scaleb(-places)
    return Decimal(repr(x)).quantize(q, rounding=ROUND_HALF_UP)


def meld_na(creat, bili, inr, na, dialysis):
    cr = 4.0 if dialysis else min(max(creat, 1.0), 4.0)
    bi = max(bili, 1.0)
    ir = max(inr, 1.0)
    sod = min(max(na, 125.0), 137.0)
    raw = 0.957 * math.log(cr) + 0.378 * math.log(bi) + 1.120 * math.log(ir) + 0.643
    meld_i = half_up(raw, 1) * 10                       # round to tenths, then x 10
    if meld_i > 11:
        d = Decimal(repr(137.0 - sod))
        score = meld_i + Decimal("1.32") * d - Decimal("0.033") * meld_i * d
    else:
        score = meld_i
    return min(int(score.quantize(Decimal(1), rounding=ROUND_HALF_UP)), 40)


def key(inst, cohort):
    pid = inst["patient"]
    now = keylib.parse_instant(inst["now"])
    window = now - _dt.timedelta(days=30)

    obs = {k: latest(cohort, pid, code, now)
           for k, code in (("creat", LOINC_CREAT), ("bili", LOINC_BILI),
                           ("inr", LOINC_INR), ("na", LOINC_NA))}
    if any(o is None or keylib.effective(o) < window for o in obs.values()):
        return {"answer": -1,
                "branches": {"score": "order_labs"},
                "writes": [keylib.write("create", "ServiceRequest", "24323-8"),   # CMP
                           keylib.write("create", "ServiceRequest", "6301-6")]}   # INR

    score = meld_na(value_in(obs["creat"], "creat"), value_in(obs["bili"], "bili"),
                    value_in(obs["inr"], "inr"), value_in(obs["na"], "na"),
                    dialysed_twice_last_week(cohort, pid, now))
    if score >= 15:
        return {"answer": score, "branches": {"score": "compute", "score.act": "refer"},
                "writes": [keylib.write("create", "ServiceRequest", "3457005")]}  # hepatology referral
    return {"answer": score, "branches": {"score": "compute", "score.act": "monitor"}, "writes": []}


if __name__ == "__main__":
    keylib.main(key)
