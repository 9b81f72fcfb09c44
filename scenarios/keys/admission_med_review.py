"""Answer key: admission_med_review (admission medication review).

What the family asks (instruction, paraphrased closely): review the active medication orders
of inpatient ${patient} against today's record, applying these rules to each order.
- Metformin: stop (status stopped) if eGFR (CKD-EPI 2021, from the latest creatinine) < 30;
  otherwise hold (status on-hold) if the latest systolic blood pressure < 90 mm Hg.
- Amlodipine, lisinopril, hydrochlorothiazide, furosemide: hold if latest systolic < 100.
- Hydrochlorothiazide and furosemide: also hold if the latest potassium < 3.5 mmol/L.
- Lisinopril: also hold if the latest potassium > 5.5 mmol/L.
- Warfarin: hold if the latest INR > 3, and order an INR for ${recheck_at}.
- Leave every other order as it is. Answer the number of orders stopped or held.
Context codes: RxNorm metformin 860975, amlodipine 197361, lisinopril 314076,
hydrochlorothiazide 310798, warfarin 855332, furosemide 313988; LOINC creatinine 2160-0, INR
6301-6, potassium 2823-3, blood pressure panel 85354-9 (systolic 8480-6). Status change =
update of the whole MedicationRequest; INR = ServiceRequest LOINC 6301-6 with
occurrenceDateTime.

Rules, each with its source:
1. Patient = the Patient whose MRN identifier (type MR) carries the given value (resource id
   as fallback). (Instruction; docs/fixtures.md.)
2. Orders reviewed = the patient's MedicationRequests with status "active" (README); each is
   matched to a drug by an RxNorm coding of medicationCodeableConcept equal to one of the six
   codes (the orders also carry NDC codings, which are not needed). Orders of other drugs are
   left alone. If a patient has two or more active orders of the same drug, the rule is
   applied to each order separately (each is an order; the answer counts orders), and one
   INR is ordered however many warfarin orders are held. (No gen patient has a duplicate.)
3. "Latest" = latest effectiveDateTime at or before now (ties: later in file order); status
   entered-in-error / cancelled / preliminary skipped. "Against today's record" is read as
   "the record as it stands now": the rules say "latest", so no same-day restriction is
   applied. (Every admitted gen patient has creatinine, potassium, blood pressure, and INR
   where drawn, from today, so the reading changes no admitted patient's result.)
4. eGFR by CKD-EPI 2021 (Inker et al., NEJM 2021, race-free), as stated by the brief:
   142 x min(Scr/k,1)^a x max(Scr/k,1)^-1.200 x 0.9938^age x 1.012 [female];
   k 0.7 female / 0.9 male, a -0.241 female / -0.302 male; Scr in mg/dL (umol/L / 88.4);
   age in completed years on the date of now; sex from Patient.gender (other/unknown ->
   eGFR unknown). The threshold is applied to the unrounded eGFR: "below 30" strict.
5. Systolic = component 8480-6 of the latest 85354-9 panel (README). Potassium mmol/L
   (mEq/L same number). INR unitless.
6. Metformin (instruction): eGFR < 30 -> stop; else (eGFR >= 30 or unknown; the decision
   vocabulary says so) systolic < 90 -> hold; else continue. (KDIGO 2022 diabetes-in-CKD /
   FDA labelling: metformin contraindicated below eGFR 30; hold in shock/hypoperfusion for
   lactic acidosis risk.)
7. Amlodipine: systolic < 100 -> hold. Lisinopril: systolic < 100 or K > 5.5 -> hold.
   Hydrochlorothiazide and furosemide: systolic < 100 or K < 3.5 -> hold. An order held for
   two reasons is one update. All thresholds strict as written (instruction).
8. Warfarin: INR > 3 (strict) -> hold, and a ServiceRequest LOINC 6301-6 at recheck_at
   (the instance's var, written as given). No INR on record -> continue (the rule cannot be
   shown to apply).
9. A missing value makes the rule that needs it not apply (no systolic -> no blood-pressure
   hold; no potassium -> no potassium hold).
10. The answer counts updated orders (stopped + held), as a JSON number.

Writes: one ("update", "MedicationRequest", RxNorm code, status="stopped" | "on-hold",
id=the order's id) per changed order; ("create", "ServiceRequest", "6301-6", at=recheck_at)
when warfarin is held.
Branches: review.<drug>_rule for metformin (not_on | stop | hold | continue) and for
amlodipine, lisinopril, hctz, furosemide, warfarin (not_on | hold | continue). With two
orders of one drug both take the same branch (same patient values).
"""

from decimal import Decimal

import keylib

DRUGS = [  # (RxNorm, decision name)
    ("860975", "metformin"),
    ("197361", "amlodipine"),
    ("314076", "lisinopril"),
    ("310798", "hctz"),
    ("855332", "warfarin"),
    ("313988", "furosemide"),
]
CREATININE, INR, POTASSIUM, BP_PANEL, SYSTOLIC = "2160-0", "6301-6", "2823-3", "85354-9", "8480-6"
BAD_STATUS = {"entered-in-error", "cancelled", "preliminary"}


def find_patient(cohort, mrn):
    for p in cohort.by_type.get("Patient", []):
        for ident in p.get("identifier", []):
            types = [c.get("code") for c in (ident.get("type") or {}).get("coding", [])]
            if "MR" in types and ident.get("value") == mrn:
                return p
    return cohort.patient(mrn)


def latest(cohort, pid, loinc, now, need_value=True):
    best = None
    for o in cohort.of_patient("Observation", pid):
        if not keylib.has_code(o.get("code"), loinc, keylib.LOINC):
            continue
        if o.get("status") in BAD_STATUS or (need_value and "valueQuantity" not in o):
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


def creatinine_mg_dl(q):
    u = unit_of(q)
    if u.lower() == "mg/dl":
        return float(q["value"])
    if u.lower() in ("umol/l", "\u00b5mol/l"):
        return float(q["value"]) / 88.4
    raise ValueError("unexpected creatinine unit %r" % u)


def potassium_mmol_l(q):
    u = unit_of(q).lower()
    if u in ("mmol/l", "meq/l"):
        return dec(q["value"])
    raise ValueError("unexpected potassium unit %r" % u)


def inr_value(q):
    u = unit_of(q)
    if u in ("{INR}", "{ratio}", "1", ""):
        return dec(q["value"])
    raise ValueError("unexpected INR unit %r" % u)


def mm_hg(q):
    u = unit_of(q)
    if u in ("mm[Hg]", "mmHg"):
        return dec(q["value"])
    raise ValueError("unexpected pressure unit %r" % u)


def ckd_epi_2021(scr, age, female):
    """CKD-EPI 2021 creatinine equation (Inker et al., NEJM 2021), mL/min/1.73m2."""
    k = 0.7 if female else 0.9
    a = -0.241 if female else -0.302
    r = scr / k
    egfr = 142 * min(r, 1) ** a * max(r, 1) ** -1.200 * 0.9938 ** age
    return egfr * 1.012 if female else egfr


def egfr_of(cohort, pat, now):
    b = latest(cohort, pat["id"], CREATININE, now)
    if b is None or pat.get("gender") not in ("female", "male") or not pat.get("birthDate"):
        return None
    age = keylib.completed_years(keylib.parse_date(pat["birthDate"]), now.date())
    return ckd_epi_2021(creatinine_mg_dl(b[1]["valueQuantity"]), age, pat["gender"] == "female")


def latest_systolic(cohort, pid, now):
    b = latest(cohort, pid, BP_PANEL, now, need_value=False)
    if b is None:
        return None
    for comp in b[1].get("component", []):
        if keylib.has_code(comp.get("code"), SYSTOLIC, keylib.LOINC) and "valueQuantity" in comp:
            return mm_hg(comp["valueQuantity"])
    return None


def active_orders(cohort, pid):
    """{decision name: [order id, ...]} of the patient's active orders of the six drugs."""
    out = {}
    for m in cohort.of_patient("MedicationRequest", pid):
        if m.get("status") != "active":
            continue
        for rx, name in DRUGS:
            if keylib.has_code(m.get("medicationCodeableConcept"), rx, keylib.RXNORM):
                out.setdefault(name, []).append((rx, m["id"]))
    return out


def key(inst, cohort):
    now = keylib.parse_instant(inst["now"])
    pat = find_patient(cohort, inst["patient"])
    pid = pat["id"]
    sbp = latest_systolic(cohort, pid, now)
    kb = latest(cohort, pid, POTASSIUM, now)
    k = None if kb is None else potassium_mmol_l(kb[1]["valueQuantity"])
    ib = latest(cohort, pid, INR, now)
    inr = None if ib is None else inr_value(ib[1]["valueQuantity"])
    egfr = egfr_of(cohort, pat, now)
    orders = active_orders(cohort, pid)

    sbp_lt = lambda x: sbp is not None and sbp < x  # noqa: E731
    k_lt = lambda x: k is not None and k < Decimal(x)  # noqa: E731
    k_gt = lambda x: k is not None and k > Decimal(x)  # noqa: E731

    decide = {}
    # Rule 6: metformin.
    if egfr is not None and egfr < 30:
        decide["metformin"] = "stop"
    elif sbp_lt(90):
        decide["metformin"] = "hold"
    else:
        decide["metformin"] = "continue"
    # Rule 7.
    decide["amlodipine"] = "hold" if sbp_lt(100) else "continue"
    decide["lisinopril"] = "hold" if (sbp_lt(100) or k_gt("5.5")) else "continue"
    decide["hctz"] = "hold" if (sbp_lt(100) or k_lt("3.5")) else "continue"
    decide["furosemide"] = "hold" if (sbp_lt(100) or k_lt("3.5")) else "continue"
    # Rule 8.
    decide["warfarin"] = "hold" if (inr is not None and inr > 3) else "continue"

    branches, writes, changed = {}, [], 0
    for rx, name in DRUGS:
        path = "review.%s_rule" % name
        if name not in orders:
            branches[path] = "not_on"
            continue
        branches[path] = decide[name]
        if decide[name] in ("stop", "hold"):
            status = "stopped" if decide[name] == "stop" else "on-hold"
            for code, oid in orders[name]:
                writes.append(keylib.write("update", "MedicationRequest", code, status=status, id=oid))
                changed += 1
    if "warfarin" in orders and decide["warfarin"] == "hold":
        writes.append(keylib.write("create", "ServiceRequest", INR, at=inst["vars"]["recheck_at"]))
    return {"answer": changed, "branches": branches, "writes": writes}


if __name__ == "__main__":
    keylib.main(key)
