"""Independent answer key: metformin_renal_review.

WHAT THE FAMILY ASKS
    Compute the eGFR (CKD-EPI 2021) from the most recent serum creatinine (code "CREAT",
    mg/dL). If the patient has an active metformin order (RxNorm 860975) and the eGFR is below
    30 mL/min/1.73 m2, stop the metformin order. Report the eGFR rounded to one decimal, or -1
    if there is no creatinine on file. Age in completed years.

RULES AND SOURCES
    CKD-EPI 2021 creatinine equation, race-free (Inker LA et al., NEJM 2021;385:1737-49):
        eGFR = 142 x min(Scr/k, 1)^a x max(Scr/k, 1)^-1.200 x 0.9938^age x 1.012 [if female]
        k = 0.7 (female) / 0.9 (male); a = -0.241 (female) / -0.302 (male);
        Scr in mg/dL, age in completed years on the date of "now" (stated by the context).
    Stop rule: active metformin order AND eGFR < 30 -> MedicationRequest status "stopped"
        (stated by the instruction; FDA metformin labeling, April 2016 safety communication:
        contraindicated at eGFR < 30 mL/min/1.73 m2).
    "Most recent creatinine": the Observation coded "CREAT" (flowsheet code named by the
        context; the same Observations carry LOINC 2160-0, which is accepted too) with the latest
        effective time not after now; no age limit (the instruction sets none).
    "Active metformin order": MedicationRequest.status == "active" whose medication is
        metformin (RxNorm 860975 as the context names it, the ingredient 6809, or any product
        whose name contains "metformin"). Every such active order is stopped; the update
        carries the order's own RxNorm code and resource id.

UNITS: creatinine in the record is mg/dL everywhere (checked); umol/L would be divided by 88.42.

AMBIGUITIES AND HOW THIS KEY READS THEM
    * The < 30 comparison uses the unrounded eGFR; the report lists any instance whose eGFR
      lies within 0.05 of 30 (where rounding first could flip the decision) - none here.
    * Rounding of the reported eGFR: one decimal, half up.
    * Sex for CKD-EPI comes from Patient.gender; a patient whose gender is neither "male" nor
      "female" (the demo record S0000001 is "other") has no defined equation. That patient has
      no creatinine, so the -1 branch applies first; were a creatinine present, the key would
      answer null (it cannot choose an equation) and take no action.
    * "Stop" is the only write: no replacement therapy, no repeat creatinine (not asked).
"""

import keylib

FLOWSHEET = "http://emrgym.dev/fhir/CodeSystem/flowsheet"
METFORMIN_RXNORM = {"860975", "6809", "861007", "861004", "860981", "861010", "861025"}


def is_creatinine(obs):
    return (keylib.has_code(obs.get("code"), "CREAT")
            or keylib.has_code(obs.get("code"), "2160-0", keylib.LOINC))


def latest_creatinine(cohort, pid, now):
    best = None
    for obs in cohort.of_patient("Observation", pid):
        if obs.get("status") in ("entered-in-error", "cancelled"):
            continue
        if not is_creatinine(obs) or "valueQuantity" not in obs:
            continue
        t = keylib.effective(obs)
        if t is None or t > now:
            continue
        if best is None or t > keylib.effective(best):
            best = obs
    return best


def creat_mg_dl(obs):
    q = obs["valueQuantity"]
    v = float(q["value"])
    u = (q.get("code") or q.get("unit") or "mg/dL").strip()
    return {"mg/dL": v, "mg/dl": v, "umol/L": v / 88.42, "µmol/L": v / 88.42}[u]


def ckd_epi_2021(scr, age, female):
    k = 0.7 if female else 0.9
    a = -0.241 if female else -0.302
    egfr = 142.0 * min(scr / k, 1.0) ** a * max(scr / k, 1.0) ** -1.200 * 0.9938 ** age
    return egfr * 1.012 if female else egfr


def is_metformin(mr):
    concept = mr.get("medicationCodeableConcept") or {}
    if any(s == keylib.RXNORM and c in METFORMIN_RXNORM for s, c in keylib.codes(concept)):
        return True
    text = " ".join([concept.get("text") or ""] + [c.get("display") or "" for c in concept.get("coding", [])])
    return "metformin" in text.lower()


def rxnorm_code(mr):
    for s, c in keylib.codes(mr.get("medicationCodeableConcept")):
        if s == keylib.RXNORM:
            return c
    return None


def round1(x):
    from decimal import Decimal, ROUND_HALF_UP
    return float(Decimal(repr(x)).quantize(Decimal("0.1"), rounding=ROUND_HALF_UP))


def key(inst, cohort):
    pid = inst["patient"]
    now = keylib.parse_instant(inst["now"])
    patient = cohort.patient(pid)

    cr_obs = latest_creatinine(cohort, pid, now)
    if cr_obs is None:
        return {"answer": -1, "branches": {"act": "no_creatinine"}, "writes": []}

    gender = patient.get("gender")
    if gender not in ("male", "female"):
        return {"answer": None, "branches": {}, "writes": []}   # no defined equation (see docstring)

    age = keylib.completed_years(keylib.parse_date(patient["birthDate"]), now.date())
    egfr = ckd_epi_2021(creat_mg_dl(cr_obs), age, gender == "female")

    active_metformin = [mr for mr in cohort.of_patient("MedicationRequest", pid)
                        if mr.get("status") == "active" and is_metformin(mr)]
    if active_metformin and egfr < 30.0:
        return {"answer": round1(egfr), "branches": {"act": "has_creatinine", "act.rule": "stop"},
                "writes": [keylib.write("update", "MedicationRequest", rxnorm_code(mr),
                                        status="stopped", id=mr["id"])
                           for mr in active_metformin]}
    return {"answer": round1(egfr), "branches": {"act": "has_creatinine", "act.rule": "continue"}, "writes": []}


if __name__ == "__main__":
    keylib.main(key)
