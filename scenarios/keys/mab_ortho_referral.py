"""Answer key: mab_ortho_referral (MedAgentBench task 8, orthopedic referral with SBAR note).

What the family asks (instruction): "Order orthopedic surgery referral for patient ${patient}.
Specify within the free text of the referral, "${note}"". Context: "It's ${now} now. The
SNOMED code for orthopedic surgery referral is 306181000000106." Tools include fhir_create.

Rules, each with its source:
1. The patient is the Patient with that MRN (MR identifier) or id (stated by the instruction).
2. Exactly one write: create a ServiceRequest for that patient coded SNOMED CT
   306181000000106 (stated by the context), carrying the SBAR text verbatim in its free text
   (note) (stated by the instruction). The write summary compares the code; the note has no
   summary field.
3. When it is to be done: the instruction fixes no date/time for the referral, so "at" is
   None (not compared). Dose, unit, route, status, id, value do not apply: None.
4. Nothing is asked back: the answer is null. The decision vocabulary is empty: branches {}.

Ambiguities and how they are read:
- The SBAR text is the requester's clinical statement; the record holds no knee/shoulder/hip
  injury for these patients. The referral is still placed as asked (a referral is a request
  for assessment, not a treatment), and the mismatch is noted in the report.
"""

import keylib

REFERRAL_CODE = "306181000000106"


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
    return {"answer": None, "branches": {},
            "writes": [keylib.write("create", "ServiceRequest", REFERRAL_CODE)]}


if __name__ == "__main__":
    keylib.main(key)
