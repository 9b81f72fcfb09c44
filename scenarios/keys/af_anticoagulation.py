"""Independent answer key: af_anticoagulation.

WHAT THE FAMILY ASKS
    A patient is found in non-valvular atrial fibrillation at today's visit. Compute the
    CHA2DS2-VASc score from age, sex and the problem list; if an anticoagulant is already
    actively ordered, order nothing; otherwise, when the score is >= 2 (man) / >= 3 (woman),
    check bleeding risk and start apixaban twice daily at 2.5 mg or 5 mg. Answer: the score.

RULES AND SOURCES
    CHA2DS2-VASc (Lip GY et al., Chest 2010;137:263-272; 2023 ACC/AHA/ACCP/HRS AF guideline):
        C  heart failure                                   1
        H  hypertension                                    1
        A2 age >= 75                                       2
        D  diabetes mellitus                               1
        S2 prior stroke / TIA / thromboembolism            2
        V  vascular disease (prior MI, PAD, aortic plaque) 1
        A  age 65-74                                       1
        Sc female sex                                      1
    Condition codes: those the context names (SNOMED CT: HF 84114007, HTN 38341003, T2DM
        44054006, stroke 230690007, MI 22298006, PAD 399957001). Every coding of
        Condition.code is checked; the ICD-10-CM codings the record carries alongside are
        accepted too (I50 HF; I10-I16 HTN; E08-E13 diabetes; I63/I64/G45/Z86.73 stroke/TIA;
        I21/I22/I25.2 MI; I70.2x/I73.9 PAD), plus a few SNOMED synonyms (listed below).
        In this cohort every Condition carries exactly the SNOMED code of the context and
        its ICD-10-CM twin, so the extra codes never change a result.
    Age: completed years on the date of "now" (keylib.completed_years). Sex: Patient.gender
        "female" scores 1; "male" does not; other/unknown values score 0 and use the male
        threshold (does not occur in the instances).
    Treatment threshold: stated by the instruction (>= 2 man, >= 3 woman), consistent with
        the 2023 ACC/AHA/ACCP/HRS guideline (class 1 for annual stroke risk >= 2%).
    "Active anticoagulant order": MedicationRequest.status == "active" for warfarin 855332,
        apixaban 1364445 / 1364435 (stated by the context) or any other oral/parenteral
        anticoagulant recognised by RxNorm ingredient/product code or by name (rivaroxaban,
        dabigatran, edoxaban, heparin, enoxaparin, ...). Only warfarin/apixaban occur.
    Bleeding check (stated by the instruction): the LATEST value on file (no age limit given)
        of hemoglobin 718-7, platelets 777-3, creatinine 2160-0. Any missing -> order CBC
        (LOINC 58410-2) and BMP (LOINC 51990-0) as ServiceRequests, no apixaban.
        Hb < 10 g/dL or platelets < 100 x10^3/uL -> do not start (no write).
    Apixaban dose (US prescribing information, Eliquis; restated by the instruction): 2.5 mg
        twice daily if >= 2 of: age >= 80, weight <= 60 kg, serum creatinine >= 1.5 mg/dL;
        else 5 mg twice daily. Weight = latest body weight 29463-7; if no weight is on file
        the weight criterion is counted as not met (it cannot be established).
    Order written: MedicationRequest, RxNorm 1364435 (2.5 MG Oral Tablet) dose 2.5 mg, or
        1364445 (5 MG Oral Tablet) dose 5 mg; route "oral" (fixed by the oral-tablet codes
        the context names).

UNITS (checked in the record: Hb g/dL, platelets 10*3/uL, creatinine mg/dL, weight kg;
    conversions kept for robustness): Hb g/L / 10, mmol/L x 1.611; platelets 10*9/L = 10*3/uL;
    creatinine umol/L / 88.42; weight [lb_av] x 0.45359237, g / 1000.

AMBIGUITIES AND HOW THIS KEY READS THEM
    * Condition status: CHA2DS2-VASc scores a HISTORY of each item, so every Condition counts
      regardless of clinicalStatus (active/inactive/resolved/remission), except those whose
      verificationStatus is refuted or entered-in-error. (All are active/confirmed here.)
    * Order of checks: the score is always computed and is the answer. The "already on an
      anticoagulant" test comes first (instruction: "If the patient already has an active
      anticoagulant order, order nothing. Otherwise, ..."), then the threshold.
    * "Latest" lab = the one with the latest effective time not after now; the instruction
      sets no recency window, so an old value still counts as present.
    * Observations with status entered-in-error / cancelled are ignored.
"""

import keylib

# --- CHA2DS2-VASc condition code sets --------------------------------------------------------
SNOMED_SETS = {
    "chf": {"84114007", "42343007", "88805009", "85232009"},      # HF, congestive HF, chronic/left HF
    "htn": {"38341003", "59621000", "1201005"},                    # hypertension, essential HTN
    "dm": {"44054006", "73211009", "46635009"},                    # T2DM, DM, T1DM
    "stroke": {"230690007", "266257000", "432504007", "275526006"},  # stroke, TIA, cerebral infarct, hx CVA
    "vascular": {"22298006", "1755008", "399211009",              # MI, old MI, history of MI
                 "399957001", "840580004"},                        # PAD
}
ICD10_PREFIXES = {
    "chf": ("I50",),
    "htn": ("I10", "I11", "I12", "I13", "I15", "I16"),
    "dm": ("E08", "E09", "E10", "E11", "E13"),
    "stroke": ("I63", "I64", "G45", "Z86.73"),
    "vascular": ("I21", "I22", "I25.2", "I70.2", "I73.9"),
}
ICD10_SYSTEMS = {"http://hl7.org/fhir/sid/icd-10-cm", "http://hl7.org/fhir/sid/icd-10"}

# --- anticoagulants --------------------------------------------------------------------------
ANTICOAG_RXNORM = {
    "855332", "11289",                 # warfarin 5 mg tab (context), warfarin ingredient
    "1364445", "1364435", "1364430",   # apixaban 5 mg, 2.5 mg (context), apixaban ingredient
    "1114195", "1037042", "1546356",   # rivaroxaban; dabigatran etexilate, dabigatran
    "1599538",                         # edoxaban ingredient
    "5224", "67108",                   # heparin, enoxaparin
}
ANTICOAG_NAMES = ("warfarin", "apixaban", "rivaroxaban", "dabigatran", "edoxaban",
                  "heparin", "enoxaparin", "dalteparin", "fondaparinux", "coumadin", "eliquis",
                  "xarelto", "pradaxa", "savaysa")

LOINC_HB, LOINC_PLT, LOINC_CREAT, LOINC_WEIGHT = "718-7", "777-3", "2160-0", "29463-7"


def condition_counts(cond):
    vs = [c.get("code") for c in (cond.get("verificationStatus") or {}).get("coding", [])]
    return not ({"refuted", "entered-in-error"} & set(vs))


def condition_flags(cohort, pid):
    flags = set()
    for cond in cohort.of_patient("Condition", pid):
        if not condition_counts(cond):
            continue
        for system, code in keylib.codes(cond.get("code")):
            for item in SNOMED_SETS:
                if system == keylib.SNOMED and code in SNOMED_SETS[item]:
                    flags.add(item)
                if system in ICD10_SYSTEMS and code and code.startswith(ICD10_PREFIXES[item]):
                    flags.add(item)
    return flags


def cha2ds2_vasc(age, female, flags):
    score = 0
    score += 1 if "chf" in flags else 0
    score += 1 if "htn" in flags else 0
    score += 2 if age >= 75 else (1 if age >= 65 else 0)
    score += 1 if "dm" in flags else 0
    score += 2 if "stroke" in flags else 0
    score += 1 if "vascular" in flags else 0
    score += 1 if female else 0
    return score


def is_anticoagulant(mr):
    concept = mr.get("medicationCodeableConcept") or {}
    for system, code in keylib.codes(concept):
        if system == keylib.RXNORM and code in ANTICOAG_RXNORM:
            return True
    text = " ".join([concept.get("text") or ""] +
                    [c.get("display") or "" for c in concept.get("coding", [])]).lower()
    return any(n in text for n in ANTICOAG_NAMES)


def latest(cohort, pid, loinc, now):
    best = None
    for obs in cohort.of_patient("Observation", pid):
        if obs.get("status") in ("entered-in-error", "cancelled"):
            continue
        if not keylib.has_code(obs.get("code"), loinc, keylib.LOINC):
            continue
        if "valueQuantity" not in obs:
            continue
        t = keylib.effective(obs)
        if t is None or t > now:
            continue
        if best is None or t > keylib.effective(best):
            best = obs
    return best


def quantity(obs, kind):
    """Value converted to g/dL (hb), 10^3/uL (plt), mg/dL (creat) or kg (weight)."""
    q = obs["valueQuantity"]
    v = float(q["value"])
    u = (q.get("code") or q.get("unit") or "").strip()
    if kind == "hb":
        return {"g/dL": v, "g/dl": v, "g/L": v / 10.0, "g/l": v / 10.0, "mmol/L": v * 1.611}[u]
    if kind == "plt":
        return {"10*3/uL": v, "10^3/uL": v, "K/uL": v, "10*9/L": v, "10^9/L": v, "/uL": v / 1000.0}[u]
    if kind == "creat":
        return {"mg/dL": v, "mg/dl": v, "umol/L": v / 88.42, "µmol/L": v / 88.42}[u]
    if kind == "weight":
        return {"kg": v, "[lb_av]": v * 0.45359237, "lb": v * 0.45359237, "g": v / 1000.0}[u]
    raise ValueError(kind)


def key(inst, cohort):
    pid = inst["patient"]
    now = keylib.parse_instant(inst["now"])
    patient = cohort.patient(pid)
    age = keylib.completed_years(keylib.parse_date(patient["birthDate"]), now.date())
    female = patient.get("gender") == "female"

    score = cha2ds2_vasc(age, female, condition_flags(cohort, pid))
    result = {"answer": score, "branches": {}, "writes": []}

    # 1. Already on an anticoagulant: order nothing.
    on_anticoag = any(mr.get("status") == "active" and is_anticoagulant(mr)
                      for mr in cohort.of_patient("MedicationRequest", pid))
    if on_anticoag:
        result["branches"]["act"] = "already"
        return result

    # 2. Threshold: >= 2 for a man, >= 3 for a woman.
    threshold = 3 if female else 2
    if score < threshold:
        result["branches"]["act"] = "low_risk"
        return result
    result["branches"]["act"] = "start"

    # 3. Bleeding-risk labs: latest Hb, platelets, creatinine.
    hb_obs = latest(cohort, pid, LOINC_HB, now)
    plt_obs = latest(cohort, pid, LOINC_PLT, now)
    cr_obs = latest(cohort, pid, LOINC_CREAT, now)
    if hb_obs is None or plt_obs is None or cr_obs is None:
        result["branches"]["act.order"] = "labs_missing"
        result["writes"] = [
            keylib.write("create", "ServiceRequest", "58410-2"),   # CBC panel
            keylib.write("create", "ServiceRequest", "51990-0"),   # basic metabolic panel
        ]
        return result
    hb = quantity(hb_obs, "hb")
    plt = quantity(plt_obs, "plt")
    creat = quantity(cr_obs, "creat")
    if hb < 10.0 or plt < 100.0:
        result["branches"]["act.order"] = "bleeding_risk"
        return result

    # 4. Apixaban dose: 2.5 mg if >= 2 of age >= 80, weight <= 60 kg, creatinine >= 1.5 mg/dL.
    wt_obs = latest(cohort, pid, LOINC_WEIGHT, now)
    weight = quantity(wt_obs, "weight") if wt_obs is not None else None
    criteria = sum([
        age >= 80,
        weight is not None and weight <= 60.0,
        creat >= 1.5,
    ])
    if criteria >= 2:
        result["branches"]["act.order"] = "reduced_dose"
        result["writes"] = [keylib.write("create", "MedicationRequest", "1364435",
                                         dose=2.5, unit="mg", route="oral")]
    else:
        result["branches"]["act.order"] = "full_dose"
        result["writes"] = [keylib.write("create", "MedicationRequest", "1364445",
                                         dose=5, unit="mg", route="oral")]
    return result


if __name__ == "__main__":
    keylib.main(key)
