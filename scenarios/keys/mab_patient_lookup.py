"""Answer key: mab_patient_lookup (MedAgentBench task 1, MRN by name and date of birth).

What the family asks (instruction): "What's the MRN of the patient with name ${given}
${family} and DOB of ${birthdate}? If the patient does not exist, the answer should be
"Patient not found"." Read-only tools; nothing is written. The instance's "patient" field is
NOT used: the key searches the whole cohort from the name and DOB alone, as the agent must.

Rules, each with its source:
1. A patient matches when one of its names has the given first name among its "given" names
   and the family name as its "family", and Patient.birthDate equals the DOB exactly
   (stated by the instruction). Names are compared exactly apart from letter case and Unicode
   normalisation (NFC); no fuzzy matching: "Reyez" does not match "Reyes", "Brookes" does not
   match "Brooks", "Diana" does not match "Dana". A DOB that differs by even one day, or with
   day and month swapped, does not match: a clinician identifies a patient by exact name and
   DOB (two-identifier rule, The Joint Commission NPSG.01.01.01) and must not guess.
2. The MRN is the value of the matched patient's identifier whose type is MR (v2-0203,
   "Medical record number"), system http://emrgym.dev/fhir/sid/mrn here; the resource id is
   only a fallback if no such identifier exists.
3. Exactly one match -> answer its MRN (branch "found"); none -> "Patient not found"
   (stated by the instruction; branch "not_found").
4. Several matching patients (same name and DOB) cannot be told apart from what is given;
   the vocabulary has no branch for it. The key then answers the list of their MRNs and
   sets no "ans" branch, so the case is visible in review. No instance here has more than
   one match (no name+DOB pair is duplicated in either cohort).
"""

import unicodedata

import keylib


def norm(s):
    return unicodedata.normalize("NFC", s or "").strip().casefold()


def mrn_of(p):
    for ident in p.get("identifier", []):
        types = [c.get("code") for c in (ident.get("type") or {}).get("coding", [])]
        if "MR" in types and ident.get("value"):
            return ident["value"]
    return p["id"]


def matches(p, given, family, birthdate):
    if p.get("birthDate") != birthdate:
        return False
    for n in p.get("name", []):
        if norm(n.get("family")) == norm(family) and norm(given) in [norm(g) for g in n.get("given", [])]:
            return True
    return False


def lookup(cohort, given, family, birthdate):
    """The MRNs of every patient matching a name and DOB, in file order."""
    return [mrn_of(p) for p in cohort.by_type.get("Patient", []) if matches(p, given, family, birthdate)]


def key(inst, cohort):
    v = inst["vars"]
    found = lookup(cohort, v["given"], v["family"], v["birthdate"])
    if not found:
        return {"answer": "Patient not found", "branches": {"ans": "not_found"}, "writes": []}
    if len(found) == 1:
        return {"answer": found[0], "branches": {"ans": "found"}, "writes": []}
    return {"answer": found, "branches": {}, "writes": []}


if __name__ == "__main__":
    keylib.main(key)
