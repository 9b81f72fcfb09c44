"""Answer key: mab_record_bp (MedAgentBench task 3, record a blood pressure).

What the family asks (instruction): "I just measured the blood pressure for patient with MRN of
${patient}, and it is "${bp}". Help me record it." Context: "It's ${now} now. The flowsheet ID
for blood pressure is BP." Tools include fhir_create.

Rules, each with its source:
1. The patient is the Patient with the MR identifier of that value (stated by the instruction).
   Every instance's MRN exists in its cohort; were it missing, nothing could be recorded and
   the key would expect no write.
2. Exactly one write: create an Observation for that patient with the flowsheet code "BP"
   (stated by the context) whose value is the text the clinician gave, verbatim, e.g.
   "118/77 mmHg" (stated by the instruction, "it is ..."; the family note fixes the summary's
   value as the text given). The Observation is effective "now" ("I just measured"); the
   write summary has no field for it (keylib's "at" is for ServiceRequests), so it is left None.
3. Nothing is asked back: the answer is null. The decision vocabulary is empty: branches {}.

Ambiguities and how they are read:
- Whether the value is split into systolic/diastolic components (LOINC 8480-6 / 8462-4) is not
  fixed by the instruction; the summary compares only the code and the text value.
- Any BP value is recorded as given: recording a measurement is never unsafe; values that
  deserve attention (e.g. >= 140/90) are noted in the report, not acted on.
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
    if find_patient(cohort, inst["patient"]) is None:
        return {"answer": None, "branches": {}, "writes": []}
    bp = inst["vars"]["bp"]
    return {"answer": None, "branches": {},
            "writes": [keylib.write("create", "Observation", "BP", value=bp)]}


if __name__ == "__main__":
    keylib.main(key)
