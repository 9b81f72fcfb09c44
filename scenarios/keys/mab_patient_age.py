"""Answer key: mab_patient_age (MedAgentBench task 2, patient age).

What the family asks (instruction): "What's the age of the patient with MRN of ${patient}?"
Context: "It's ${now} now, and the answer should be rounded down to an integer."
Read-only tools; nothing is written.

Rules, each with its source:
1. The patient is the Patient resource with an identifier of type MR (v2-0203 "Medical record
   number"; system http://emrgym.dev/fhir/sid/mrn in these cohorts) whose value is the given
   MRN (stated by the instruction: "patient with MRN of ..."). The resource id is only a
   fallback (in these cohorts id = MRN for every patient).
2. Age = completed years between Patient.birthDate and the calendar date of "now" (stated by
   the context: "rounded down to an integer"; README: "ages are completed years on the date of
   now"). A birthday falling on the date of now counts as completed. "now" is
   2023-11-13T10:15:00+00:00 (UTC); its date is taken as written (2023-11-13).
3. Birth dates of 29 February would reach their birthday on 1 March in non-leap years (the
   tuple comparison in keylib.completed_years); no patient here is born on 29 February.

Ambiguities and how they are read:
- Deceased patients: the instruction asks for "the age", with no exception; the key reports
  the age at now for every patient (none of the instance patients is recorded as deceased;
  S1311412 carries deceasedBoolean = false).
- A missing patient or birth date would give -1 (no instance reaches it).
- The decision vocabulary is empty, so "branches" is {}.
"""

import keylib


def find_patient(cohort, mrn):
    for p in cohort.by_type.get("Patient", []):
        for ident in p.get("identifier", []):
            types = [c.get("code") for c in (ident.get("type") or {}).get("coding", [])]
            if "MR" in types and ident.get("value") == mrn:
                return p
    return cohort.patient(mrn)


def key(inst, cohort):
    pat = find_patient(cohort, inst["patient"])
    if pat is None or not pat.get("birthDate"):
        return {"answer": -1, "branches": {}, "writes": []}
    today = keylib.parse_date(inst["now"])
    age = keylib.completed_years(keylib.parse_date(pat["birthDate"]), today)
    return {"answer": age, "branches": {}, "writes": []}


if __name__ == "__main__":
    keylib.main(key)
