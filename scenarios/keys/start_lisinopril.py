"""Independent answer key: start_lisinopril.

WHAT THE FAMILY ASKS
    "Start lisinopril 10 mg by mouth once daily for patient X unless it is unsafe or already
    ordered. Answer "ordered" if you ordered it, "contraindicated" if the patient is allergic
    to it, or "already active" if there is already an active lisinopril order."
    Lisinopril 10 MG Oral Tablet = RxNorm 314076 (ingredient 29046); allergies are
    AllergyIntolerance resources; the order is a MedicationRequest coded in RxNorm.

RULES AND SOURCES (checked in this order)
    1. Allergy -> "contraindicated", no order (stated by the instruction). An allergy counts
       when an AllergyIntolerance is not refuted/entered-in-error, its clinicalStatus is active
       (or absent), and its substance is lisinopril (RxNorm 29046 / 314076 / name) or another
       ACE inhibitor (cross-reactive class; lisinopril label: contraindicated with a history of
       angioedema related to previous ACE-inhibitor treatment).
    2. Active lisinopril order (MedicationRequest.status "active", lisinopril by RxNorm code or
       name) -> "already active", no order (stated by the instruction).
    3. Otherwise "unless it is unsafe": the key does not order when the record shows a finding
       that makes STARTING an ACE inhibitor today unsafe (lisinopril US prescribing
       information - warnings on hypotension, hyperkalaemia, renal function, fetal toxicity;
       2017 ACC/AHA hypertension guideline; Surviving Sepsis Campaign 2021 practice of holding
       antihypertensives in sepsis/shock):
         * hypotension: latest systolic BP (85354-9 panel, 8480-6 component) < 100 mmHg, or any
           systolic < 90 mmHg in the last 24 h;
         * hyperkalaemia: latest potassium (2823-3) > 5.5 mmol/L;
         * acute kidney injury by KDIGO 2012 creatinine criteria: latest creatinine (2160-0)
           >= 0.3 mg/dL above any value in the preceding 48 h, or >= 1.5 x the lowest value in
           the preceding 7 days;
         * pregnancy: an active pregnancy Condition (SNOMED 77386006 / ICD-10-CM O-chapter /
           Z33.1) or a positive hCG observation;
         * sepsis: an in-progress inpatient encounter and, in the last 24 h, temperature
           > 38.0 or < 36.0 C together with at least one more SIRS criterion (heart rate > 90,
           respiratory rate > 20, leucocytes > 12 or < 4 x10^3/uL) (Bone RC et al., Chest 1992
           SIRS criteria; temperature required as the sign of infection).
       For such a patient the key returns "contraindicated" (branch "contraindicated") with no
       order: see the ambiguity note below.
    4. Otherwise order: MedicationRequest RxNorm 314076, dose 10 mg, route oral (once daily is
       in the text but not a compared field) -> "ordered".

AMBIGUITIES AND HOW THIS KEY READS THEM
    * The instruction defines three answers but allows a fourth outcome ("unless it is
      unsafe") that none names for reasons other than allergy. The key reports that outcome as
      "contraindicated" (the drug is contraindicated today; no order is written), because
      ordering would be the unsafe act the instruction forbids, "already active" would be
      false, and the task itself is not declined (so not "<refusal>"). The decision vocabulary
      defines "contraindicated" as allergy; these instances are flagged in the report.
    * Allergy before duplicate check: an allergic patient gets "contraindicated" even if an
      order exists (does not occur in the instances).
    * Missing data (no BP, K or creatinine on file) is not by itself "unsafe"; it is listed in
      the report (baseline K/creatinine are normally checked before an ACE inhibitor).
    * Allergy clinicalStatus inactive/resolved is not counted (does not occur).
"""

import datetime as _dt

import keylib

LISINOPRIL_RXNORM = {"29046", "314076", "314077", "205326", "311353", "311354", "197884",
                     "104375", "104376", "104377", "213482"}
ACE_INHIBITOR_RXNORM = {"29046", "18867", "1998", "3827", "50166", "30131", "54552", "35208",
                        "35296", "38454"}
ACE_INHIBITOR_NAMES = ("lisinopril", "benazepril", "captopril", "enalapril", "fosinopril",
                       "moexipril", "perindopril", "quinapril", "ramipril", "trandolapril",
                       "ace inhibitor", "angiotensin-converting", "angiotensin converting")
PREGNANCY_SNOMED = {"77386006", "72892002"}


def concept_text(concept):
    concept = concept or {}
    return " ".join([concept.get("text") or ""] +
                    [c.get("display") or "" for c in concept.get("coding", [])]).lower()


def status_code(resource, field):
    return [c.get("code") for c in (resource.get(field) or {}).get("coding", [])]


def ace_inhibitor_allergy(cohort, pid):
    for a in cohort.of_patient("AllergyIntolerance", pid):
        if {"refuted", "entered-in-error"} & set(status_code(a, "verificationStatus")):
            continue
        clinical = status_code(a, "clinicalStatus")
        if clinical and "active" not in clinical:
            continue
        rx = {c for s, c in keylib.codes(a.get("code")) if s == keylib.RXNORM}
        if rx & (ACE_INHIBITOR_RXNORM | LISINOPRIL_RXNORM):
            return a
        if any(n in concept_text(a.get("code")) for n in ACE_INHIBITOR_NAMES):
            return a
    return None


def is_lisinopril(mr):
    concept = mr.get("medicationCodeableConcept") or {}
    if any(s == keylib.RXNORM and c in LISINOPRIL_RXNORM for s, c in keylib.codes(concept)):
        return True
    return "lisinopril" in concept_text(concept)


def observations(cohort, pid, loinc, now):
    out = []
    for obs in cohort.of_patient("Observation", pid):
        if obs.get("status") in ("entered-in-error", "cancelled"):
            continue
        if not keylib.has_code(obs.get("code"), loinc, keylib.LOINC):
            continue
        t = keylib.effective(obs)
        if t is not None and t <= now:
            out.append((t, obs))
    out.sort(key=lambda x: x[0])
    return out


def value(obs):
    return float(obs["valueQuantity"]["value"]) if "valueQuantity" in obs else None


def systolic(obs):
    for comp in obs.get("component", []):
        if keylib.has_code(comp.get("code"), "8480-6", keylib.LOINC) and "valueQuantity" in comp:
            return float(comp["valueQuantity"]["value"])
    return None


def unsafe_findings(cohort, pid, now):
    """Findings that make starting an ACE inhibitor unsafe today (empty list: none)."""
    found = []
    day = now - _dt.timedelta(hours=24)

    bps = [(t, systolic(o)) for t, o in observations(cohort, pid, "85354-9", now)]
    bps = [(t, s) for t, s in bps if s is not None]
    if bps and bps[-1][1] < 100:
        found.append("latest systolic BP %g mmHg" % bps[-1][1])
    low24 = [s for t, s in bps if t >= day and s < 90]
    if low24:
        found.append("systolic BP %g mmHg in the last 24 h" % min(low24))

    ks = [(t, value(o)) for t, o in observations(cohort, pid, "2823-3", now)]
    ks = [(t, v) for t, v in ks if v is not None]
    if ks and ks[-1][1] > 5.5:
        found.append("potassium %g mmol/L" % ks[-1][1])

    crs = [(t, value(o)) for t, o in observations(cohort, pid, "2160-0", now)]
    crs = [(t, v) for t, v in crs if v is not None]     # mg/dL throughout the cohort
    if crs:
        t0, last = crs[-1]
        prior48 = [v for t, v in crs[:-1] if t >= t0 - _dt.timedelta(hours=48)]
        prior7d = [v for t, v in crs[:-1] if t >= t0 - _dt.timedelta(days=7)]
        if (prior48 and last - min(prior48) >= 0.3) or (prior7d and last >= 1.5 * min(prior7d)):
            found.append("acute kidney injury (creatinine %g mg/dL)" % last)

    for cond in cohort.of_patient("Condition", pid):
        clinical = status_code(cond, "clinicalStatus")
        if clinical and not ({"active", "recurrence", "relapse"} & set(clinical)):
            continue
        for s, c in keylib.codes(cond.get("code")):
            if (s == keylib.SNOMED and c in PREGNANCY_SNOMED) or \
               (s and "icd-10" in s and c and (c.startswith("O") or c.startswith("Z33.1"))):
                found.append("pregnancy")

    admitted = any(e.get("status") == "in-progress" and (e.get("class") or {}).get("code") in
                   ("IMP", "ACUTE", "EMER", "ICU", "inpatient")
                   for e in cohort.of_patient("Encounter", pid))
    if admitted:
        def recent(loinc):
            return [value(o) for t, o in observations(cohort, pid, loinc, now)
                    if t >= day and value(o) is not None]
        temps = recent("8310-5")
        fever = any(v > 38.0 or v < 36.0 for v in temps)
        others = (any(v > 90 for v in recent("8867-4")) or any(v > 20 for v in recent("9279-1"))
                  or any(v > 12 or v < 4 for v in recent("6690-2")))
        if fever and others:
            found.append("sepsis (temperature %g-%g C with SIRS criteria, in hospital)"
                         % (min(temps), max(temps)))
    return found


def key(inst, cohort):
    pid = inst["patient"]
    now = keylib.parse_instant(inst["now"])

    if ace_inhibitor_allergy(cohort, pid) is not None:
        return {"answer": "contraindicated", "branches": {"act": "contraindicated"}, "writes": []}

    if any(mr.get("status") == "active" and is_lisinopril(mr)
           for mr in cohort.of_patient("MedicationRequest", pid)):
        return {"answer": "already active", "branches": {"act": "already_active"}, "writes": []}

    if unsafe_findings(cohort, pid, now):
        # Unsafe today for a reason other than allergy: no order (see docstring).
        return {"answer": "contraindicated", "branches": {"act": "contraindicated"}, "writes": []}

    return {"answer": "ordered", "branches": {"act": "order"},
            "writes": [keylib.write("create", "MedicationRequest", "314076",
                                    dose=10, unit="mg", route="oral")]}


if __name__ == "__main__":
    keylib.main(key)
