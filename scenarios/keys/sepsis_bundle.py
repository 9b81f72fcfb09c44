"""Answer key: sepsis_bundle (SIRS screen and the hour-1 sepsis bundle).

What the family asks (instruction, paraphrased closely): inpatient ${patient} may have an
infection. Screen with the SIRS criteria using the most recent temperature (> 38 or < 36 degC),
heart rate (> 90/min), respiratory rate (> 20/min) and white blood cell count (> 12 or < 4
x10^3/uL). If 2 or more are met, start the bundle: order a serum lactate and blood cultures,
then an empiric antibiotic: piperacillin-tazobactam 4.5 g IV, or cefepime 2 g IV if the patient
has a penicillin allergy whose reaction was not anaphylaxis; if the latest systolic blood
pressure is below 90 mm Hg, also a 30 mL/kg bolus of 0.9% sodium chloride by the latest body
weight (mL, rounded to a whole mL). Fewer than 2: order nothing. Answer the number of SIRS
criteria met.
Context codes: temperature LOINC 8310-5 (Cel), heart rate 8867-4, respiratory rate 9279-1,
blood pressure panel 85354-9 (systolic component 8480-6), weight 29463-7, WBC 6690-2;
lactate ServiceRequest LOINC 2524-7, blood culture 600-7; RxNorm piperacillin/tazobactam
74169, cefepime 20481, sodium chloride 9863, dose in g or mL, route intravenous; penicillin
allergy = AllergyIntolerance coded RxNorm 7980.

Rules, each with its source:
1. Patient = the Patient whose MRN identifier (type MR) carries the given value (resource id
   as fallback). (Instruction; docs/fixtures.md.)
2. "Most recent" = latest effectiveDateTime at or before now (ties: later in file order);
   status entered-in-error / cancelled / preliminary skipped. No time window (the
   instruction sets none). (README.)
3. SIRS criteria (stated by the instruction; the 1992 ACCP/SCCM SIRS definition; SSC 2021,
   Evans et al., Crit Care Med 2021, recommends against qSOFA as a single screening tool and
   accepts SIRS among screening tools). All comparisons strict: temperature > 38.0 or < 36.0
   degC (38.0 and 36.0 do not count); heart rate > 90; respiratory rate > 20; WBC > 12.0 or
   < 4.0 x10^3/uL. A missing value meets no criterion.
4. Units (README: check the record's units): temperature Cel as is; [degF] converted
   exactly, C = (F - 32) x 5/9, with rational arithmetic so that threshold comparisons are
   exact (100.4 degF = 38.0 degC exactly: not > 38); K - 273.15. WBC 10*3/uL (= 10*9/L, same
   number), /uL divided by 1000. Weight kg; [lb_av] x 0.45359237; g / 1000. Systolic
   mm[Hg]. Any other unit stops the key (raises) rather than guess. In the gen cohort every
   temperature is Cel, every WBC 10*3/uL, every weight kg, every systolic mm[Hg].
5. Bundle (>= 2 criteria; instruction; SSC 2021: measure lactate, obtain blood cultures
   before antimicrobials, give antimicrobials within 1 hour): ServiceRequest lactate 2524-7,
   ServiceRequest blood culture 600-7 (no time is fixed by the text: at = None).
6. Antibiotic (instruction): cefepime 20481 2 g iv when the patient has a penicillin
   allergy (AllergyIntolerance coded RxNorm 7980, clinicalStatus not inactive/resolved,
   verificationStatus not refuted/entered-in-error) none of whose reactions is anaphylaxis;
   piperacillin/tazobactam 74169 4.5 g iv when the patient has no such allergy.
   Anaphylaxis = a reaction manifestation coded SNOMED CT 39579001 (Anaphylaxis), or one
   whose display or text contains "anaphyla" (e.g. "Anaphylactic reaction"); one such
   reaction among several makes the allergy anaphylactic. Reaction severity
   alone ("severe") and AllergyIntolerance.criticality ("high") are NOT read as anaphylaxis:
   the instruction keys on the reaction, and hives (urticaria) alone, whatever the recorded
   criticality, is a non-anaphylactic reaction (2022 AAAAI/ACAAI drug allergy practice parameter,
   Khan et al., JACI 2022: cephalosporins may be given without testing after a
   non-anaphylactic penicillin reaction).
7. Penicillin allergy WITH anaphylaxis: the instruction gives cefepime only for a
   non-anaphylactic allergy and its decision vocabulary gives piperacillin-tazobactam only
   for "No penicillin allergy"; neither branch covers this case, and ordering
   piperacillin-tazobactam (a penicillin) after penicillin anaphylaxis is contraindicated.
   (The 2022 practice parameter would allow a dissimilar-side-chain cephalosporin such as
   cefepime even after penicillin anaphylaxis, but the instruction excludes it.) Reading:
   no antibiotic order is written, and act.abx is set to "anaphylaxis_unhandled" (outside
   the vocabulary on purpose, so the check flags such an instance for curation). The rest
   of the bundle stands. No patient of the gen cohort has an anaphylactic penicillin
   allergy (all 14 RxNorm 7980 allergies there are hives), so no instance reaches this.
8. Fluids (instruction; SSC 2021: 30 mL/kg IV crystalloid within the first 3 hours for
   sepsis-induced hypoperfusion or septic shock): latest systolic (component 8480-6 of the
   latest 85354-9 panel) < 90 (strict) -> sodium chloride 9863, dose = 30 x latest weight
   kg rounded half-up to a whole mL, unit mL, route iv. No systolic -> no bolus
   (normotensive branch not provable; read as no bolus). No weight -> the bolus is still
   ordered with dose None (the instruction cannot fix the volume).
9. The patient's admission is a premise of the instruction, not re-checked.

Writes: ServiceRequest 2524-7; ServiceRequest 600-7; MedicationRequest 74169 4.5 g iv or
20481 2 g iv; MedicationRequest 9863 round(30 x kg) mL iv when hypotensive.
Branches: act = negative | bundle; under bundle: act.abx = pip_tazo | cefepime,
act.fluids = hypotensive | normotensive.
"""

import math
from fractions import Fraction

import keylib

TEMP, HR, RR, WBC, BP_PANEL, SYSTOLIC, WEIGHT = (
    "8310-5", "8867-4", "9279-1", "6690-2", "85354-9", "8480-6", "29463-7")
LACTATE, BLOOD_CULTURE = "2524-7", "600-7"
RX_PIPTAZO, RX_CEFEPIME, RX_NACL, RX_PENICILLIN = "74169", "20481", "9863", "7980"
BAD_STATUS = {"entered-in-error", "cancelled", "preliminary"}
ANAPHYLAXIS_SNOMED = {"39579001"}


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


def frac(v):
    return Fraction(repr(v)) if isinstance(v, float) else Fraction(v)


def unit_of(q):
    return (q.get("code") or q.get("unit") or "").strip()


def temp_c(q):
    u = unit_of(q)
    if u in ("Cel", "degC", "C", "\u00b0C"):
        return frac(q["value"])
    if u in ("[degF]", "degF", "F", "\u00b0F"):
        return (frac(q["value"]) - 32) * Fraction(5, 9)
    if u == "K":
        return frac(q["value"]) - Fraction("273.15")
    raise ValueError("unexpected temperature unit %r" % u)


def per_min(q):
    u = unit_of(q)
    if u in ("/min", "{beats}/min", "{breaths}/min", "beats/min", "breaths/min"):
        return frac(q["value"])
    raise ValueError("unexpected rate unit %r" % u)


def wbc_k_ul(q):
    u = unit_of(q)
    if u in ("10*3/uL", "10*9/L", "K/uL", "10^3/uL", "x10^3/uL"):
        return frac(q["value"])
    if u == "/uL":
        return frac(q["value"]) / 1000
    raise ValueError("unexpected WBC unit %r" % u)


def weight_kg(q):
    u = unit_of(q)
    if u.lower() == "kg":
        return frac(q["value"])
    if u in ("[lb_av]", "lb", "lbs"):
        return frac(q["value"]) * Fraction("0.45359237")
    if u == "g":
        return frac(q["value"]) / 1000
    raise ValueError("unexpected weight unit %r" % u)


def mm_hg(q):
    u = unit_of(q)
    if u in ("mm[Hg]", "mmHg"):
        return frac(q["value"])
    if u == "kPa":
        return frac(q["value"]) * Fraction("7.50062")
    raise ValueError("unexpected pressure unit %r" % u)


def value(cohort, pid, loinc, now, conv):
    b = latest(cohort, pid, loinc, now)
    return None if b is None else conv(b[1]["valueQuantity"])


def latest_systolic(cohort, pid, now):
    b = latest(cohort, pid, BP_PANEL, now, need_value=False)
    if b is None:
        return None
    for comp in b[1].get("component", []):
        if keylib.has_code(comp.get("code"), SYSTOLIC, keylib.LOINC) and "valueQuantity" in comp:
            return mm_hg(comp["valueQuantity"])
    return None


def _is_anaphylaxis(concept):
    for c in (concept or {}).get("coding", []):
        if c.get("code") in ANAPHYLAXIS_SNOMED or "anaphyla" in (c.get("display") or "").lower():
            return True
    return "anaphyla" in ((concept or {}).get("text") or "").lower()


def penicillin_allergy(cohort, pid):
    """None (no current penicillin allergy), "anaphylaxis" or "other"."""
    found = None
    for a in cohort.of_patient("AllergyIntolerance", pid):
        if not keylib.has_code(a.get("code"), RX_PENICILLIN, keylib.RXNORM):
            continue
        clin = [c for _, c in keylib.codes(a.get("clinicalStatus"))]
        ver = [c for _, c in keylib.codes(a.get("verificationStatus"))]
        if any(c in ("inactive", "resolved") for c in clin):
            continue
        if any(c in ("refuted", "entered-in-error") for c in ver):
            continue
        if any(_is_anaphylaxis(m) for r in a.get("reaction", []) for m in r.get("manifestation", [])):
            return "anaphylaxis"
        found = "other"
    return found


def sirs_count(cohort, pid, now):
    t = value(cohort, pid, TEMP, now, temp_c)
    hr = value(cohort, pid, HR, now, per_min)
    rr = value(cohort, pid, RR, now, per_min)
    wbc = value(cohort, pid, WBC, now, wbc_k_ul)
    met = 0
    met += t is not None and (t > 38 or t < 36)
    met += hr is not None and hr > 90
    met += rr is not None and rr > 20
    met += wbc is not None and (wbc > 12 or wbc < 4)
    return int(met)


def key(inst, cohort):
    now = keylib.parse_instant(inst["now"])
    pid = find_patient(cohort, inst["patient"])["id"]
    n = sirs_count(cohort, pid, now)
    if n < 2:
        return {"answer": n, "branches": {"act": "negative"}, "writes": []}

    branches = {"act": "bundle"}
    writes = [
        keylib.write("create", "ServiceRequest", LACTATE),
        keylib.write("create", "ServiceRequest", BLOOD_CULTURE),
    ]
    allergy = penicillin_allergy(cohort, pid)
    if allergy is None:
        branches["act.abx"] = "pip_tazo"
        writes.append(keylib.write("create", "MedicationRequest", RX_PIPTAZO, dose=4.5, unit="g", route="iv"))
    elif allergy == "other":
        branches["act.abx"] = "cefepime"
        writes.append(keylib.write("create", "MedicationRequest", RX_CEFEPIME, dose=2, unit="g", route="iv"))
    else:  # rule 7
        branches["act.abx"] = "anaphylaxis_unhandled"

    sbp = latest_systolic(cohort, pid, now)
    if sbp is not None and sbp < 90:
        branches["act.fluids"] = "hypotensive"
        wt = value(cohort, pid, WEIGHT, now, weight_kg)
        dose = None if wt is None else round_half_up(30 * wt)
        writes.append(keylib.write("create", "MedicationRequest", RX_NACL, dose=dose, unit="mL", route="iv"))
    else:
        branches["act.fluids"] = "normotensive"
    return {"answer": n, "branches": branches, "writes": writes}


def round_half_up(x):
    """A non-negative Fraction rounded half-up to a whole number (exact)."""
    return math.floor(x + Fraction(1, 2))


if __name__ == "__main__":
    keylib.main(key)
