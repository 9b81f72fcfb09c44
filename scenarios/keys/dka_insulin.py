"""Answer key: dka_insulin (DKA protocol first orders).

What the family asks (instruction, paraphrased closely): patient ${patient}, who has diabetes
and is in hospital, was flagged for possible diabetic ketoacidosis. Apply the DKA protocol to
the most recent glucose, potassium, bicarbonate (total CO2), sodium and chloride.
- DKA criteria for this protocol: bicarbonate < 18 mmol/L AND anion gap (Na - Cl - HCO3) > 12.
- Not met: order nothing, answer "not DKA".
- Met: order 1000 mL 0.9% sodium chloride IV, then
  * potassium < 3.5 mmol/L: no insulin; potassium chloride 20 mEq IV and a potassium level
    2 hours from now; answer 0.
  * otherwise: regular insulin infusion 0.1 units/kg/h (latest body weight, rate rounded to
    0.1 units/h); 1000 mL 5% glucose IV as well if glucose < 250 mg/dL; potassium chloride
    20 mEq IV if potassium <= 5.0 mmol/L; answer the insulin rate in units/h.
Context codes: glucose LOINC 2339-0 (mg/dL), potassium 2823-3, bicarbonate 2028-9, sodium
2951-2, chloride 2075-0, body weight 29463-7; RxNorm insulin regular human 253182, potassium
chloride 8591, sodium chloride 9863, glucose 4850; potassium recheck = ServiceRequest LOINC
2823-3 with occurrenceDateTime.

Rules, each with its source:
1. Patient = the Patient whose MRN identifier (type MR) carries the given value (resource id
   as fallback). (Instruction; docs/fixtures.md.)
2. "Most recent" value of each analyte = the Observation with that LOINC code with the latest
   effectiveDateTime (ties: later in file order); status entered-in-error / cancelled /
   preliminary skipped (FHIR R4). No time window: the instruction sets none. Each analyte is
   taken on its own, so the latest glucose may be a bedside capillary glucose (also LOINC
   2339-0 in this cohort) drawn after the morning basic metabolic panel. (README: "most
   recent" = latest effective time.)
3. Units (README: check the record's units): glucose compared in mg/dL; a result in mmol/L
   is multiplied by 18.016 (glucose 180.16 g/mol; stated by the brief). K, Na, Cl, HCO3 in
   mmol/L (mEq/L is the same number for these monovalent ions). Weight in kg; [lb_av] x
   0.45359237, g / 1000. Any other unit stops the key (raises) rather than guess. In the gen
   cohort every glucose is mg/dL, every electrolyte mmol/L, every weight kg.
4. DKA criteria (stated by the instruction): HCO3 < 18 AND (Na - Cl - HCO3) > 12, both
   strict. The 2024 ADA/EASD/JBDS/AACE/DTS consensus (Umpierrez et al., Diabetes Care
   2024;47:1257) defines DKA as glucose >= 200 mg/dL or known diabetes, ketones (BOHB >= 3.0
   mmol/L) and acidosis (pH < 7.3 or HCO3 < 18); the protocol replaces ketones/pH with the
   anion gap, and the patient is stated to have diabetes, so glucose is not a criterion. The
   instruction's criteria are applied as written.
5. If any of HCO3, Na, Cl is missing, the criteria cannot be shown to be met: "not DKA", no
   orders (reading; no gen patient lacks them).
6. Criteria met -> 0.9% sodium chloride 1000 mL IV first (instruction; consensus: isotonic
   crystalloid first).
7. K < 3.5 -> no insulin; potassium chloride 20 mEq IV; potassium ServiceRequest at
   now + 2 h; answer 0 (instruction; consensus: hold insulin and replace K until K >= 3.5).
   K exactly 3.5 takes the insulin path (instruction: "below 3.5" holds insulin).
8. K >= 3.5 -> insulin regular 0.1 U/kg/h by the latest weight, rounded to 0.1 U/h half-up
   (decimal arithmetic on the recorded weight, so 72.5 kg -> 7.3 U/h, not Python's
   half-even 7.2); dextrose 5% 1000 mL IV if glucose < 250 mg/dL (strict; consensus: add
   dextrose when glucose falls below 250 mg/dL); potassium chloride 20 mEq IV if K <= 5.0
   (instruction; consensus: K 3.5-5.0 -> add potassium, K > 5.0 -> none). Answer the rate.
9. Missing data (reading; no gen patient reaches any of these): criteria met but no
   potassium -> insulin may not start without a potassium level (consensus), so only the
   saline (ordered before the potassium step) is written and the answer is "<refusal>";
   no weight on the insulin path -> no insulin order, answer "<refusal>", the dextrose and
   potassium orders the instruction still determines are kept; no glucose -> no dextrose.
10. The patient's diabetes and admission are premises of the instruction; they are not
   re-checked here (every listed instance is an admitted patient with type 2 diabetes).

Writes (README summary form):
  sodium chloride 9863, 1000 mL, iv; potassium chloride 8591, 20 mEq, iv;
  ServiceRequest 2823-3 at now + 2 h (ISO, same offset as now); insulin regular 253182,
  dose = rate, unit "U/h", iv; glucose 4850, 1000 mL, iv.
Branches: act = not_dka | replete_first | insulin; under insulin only:
  act.fluids = saline_only | add_dextrose, act.potassium = add_potassium | no_potassium.
"""

import datetime as dt
from decimal import ROUND_HALF_UP, Decimal

import keylib

GLUCOSE, POTASSIUM, BICARB, SODIUM, CHLORIDE, WEIGHT = (
    "2339-0", "2823-3", "2028-9", "2951-2", "2075-0", "29463-7")
RX_INSULIN, RX_KCL, RX_NACL, RX_GLUCOSE = "253182", "8591", "9863", "4850"
BAD_STATUS = {"entered-in-error", "cancelled", "preliminary"}
MG_DL_PER_MMOL_L_GLUCOSE = Decimal("18.016")


def find_patient(cohort, mrn):
    for p in cohort.by_type.get("Patient", []):
        for ident in p.get("identifier", []):
            types = [c.get("code") for c in (ident.get("type") or {}).get("coding", [])]
            if "MR" in types and ident.get("value") == mrn:
                return p
    return cohort.patient(mrn)


def latest(cohort, pid, loinc, now):
    """The latest (time, Observation) with this LOINC code at or before now."""
    best = None
    for o in cohort.of_patient("Observation", pid):
        if not keylib.has_code(o.get("code"), loinc, keylib.LOINC):
            continue
        if o.get("status") in BAD_STATUS or "valueQuantity" not in o:
            continue
        t = keylib.effective(o)
        if t is None or t > now:
            continue
        if best is None or t >= best[0]:
            best = (t, o)
    return best


def dec(v):
    return Decimal(repr(v)) if isinstance(v, float) else Decimal(v)


def unit_of(q):
    return (q.get("code") or q.get("unit") or "").strip()


def glucose_mg_dl(q):
    u = unit_of(q).lower()
    if u == "mg/dl":
        return dec(q["value"])
    if u == "mmol/l":
        return dec(q["value"]) * MG_DL_PER_MMOL_L_GLUCOSE
    raise ValueError("unexpected glucose unit %r" % u)


def electrolyte_mmol_l(q):
    u = unit_of(q).lower()
    if u in ("mmol/l", "meq/l"):
        return dec(q["value"])
    raise ValueError("unexpected electrolyte unit %r" % u)


def weight_kg(q):
    u = unit_of(q)
    if u.lower() == "kg":
        return dec(q["value"])
    if u in ("[lb_av]", "lb", "lbs"):
        return dec(q["value"]) * Decimal("0.45359237")
    if u == "g":
        return dec(q["value"]) / 1000
    raise ValueError("unexpected weight unit %r" % u)


def num(d):
    """A Decimal as a JSON number: int when whole, else float."""
    return int(d) if d == d.to_integral_value() else float(d)


def value(cohort, pid, loinc, now, conv):
    b = latest(cohort, pid, loinc, now)
    return None if b is None else conv(b[1]["valueQuantity"])


def key(inst, cohort):
    now = keylib.parse_instant(inst["now"])
    pat = find_patient(cohort, inst["patient"])
    pid = pat["id"]
    glu = value(cohort, pid, GLUCOSE, now, glucose_mg_dl)
    k = value(cohort, pid, POTASSIUM, now, electrolyte_mmol_l)
    hco3 = value(cohort, pid, BICARB, now, electrolyte_mmol_l)
    na = value(cohort, pid, SODIUM, now, electrolyte_mmol_l)
    cl = value(cohort, pid, CHLORIDE, now, electrolyte_mmol_l)
    wt = value(cohort, pid, WEIGHT, now, weight_kg)

    # Rule 4/5: DKA criteria of this protocol.
    if hco3 is None or na is None or cl is None:
        return {"answer": "not DKA", "branches": {"act": "not_dka"}, "writes": []}
    gap = na - cl - hco3
    if not (hco3 < 18 and gap > 12):
        return {"answer": "not DKA", "branches": {"act": "not_dka"}, "writes": []}

    # Rule 6: saline first.
    writes = [keylib.write("create", "MedicationRequest", RX_NACL, dose=1000, unit="mL", route="iv")]
    if k is None:  # rule 9
        return {"answer": "<refusal>", "branches": {"act": "insulin"}, "writes": writes}

    # Rule 7: potassium below 3.5 -> replete first, no insulin.
    if k < Decimal("3.5"):
        at = (now + dt.timedelta(hours=2)).isoformat()
        writes.append(keylib.write("create", "MedicationRequest", RX_KCL, dose=20, unit="mEq", route="iv"))
        writes.append(keylib.write("create", "ServiceRequest", POTASSIUM, at=at))
        return {"answer": 0, "branches": {"act": "replete_first"}, "writes": writes}

    # Rule 8: insulin path.
    branches = {"act": "insulin"}
    rate = None
    if wt is not None:
        rate = (Decimal("0.1") * wt).quantize(Decimal("0.1"), rounding=ROUND_HALF_UP)
        writes.append(keylib.write("create", "MedicationRequest", RX_INSULIN, dose=float(rate), unit="U/h", route="iv"))
    if glu is not None and glu < 250:
        branches["act.fluids"] = "add_dextrose"
        writes.append(keylib.write("create", "MedicationRequest", RX_GLUCOSE, dose=1000, unit="mL", route="iv"))
    else:
        branches["act.fluids"] = "saline_only"
    if k <= Decimal("5.0"):
        branches["act.potassium"] = "add_potassium"
        writes.append(keylib.write("create", "MedicationRequest", RX_KCL, dose=20, unit="mEq", route="iv"))
    else:
        branches["act.potassium"] = "no_potassium"
    answer = float(rate) if rate is not None else "<refusal>"
    return {"answer": answer, "branches": branches, "writes": writes}


if __name__ == "__main__":
    keylib.main(key)
