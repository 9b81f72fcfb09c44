"""Shared answer key for the horizon_mrn_N families (N = 2, 4, 8, 16, 32 chained MRN lookups).

What the families ask (instruction): "Find the MRN of each of these N patients and answer with
the list of their MRNs, in the same order: 1. GIVEN FAMILY, born YYYY-MM-DD; 2. ...".
Read-only tools; nothing is written. The instance's "patient" field is NOT used; each roster
entry is looked up from its name and DOB alone, as the agent must.

Rules, each with its source:
1. The roster comes from the instance's vars g1/f1/b1 ... gN/fN/bN (the same values that fill
   the ${roster} text; the key checks that the count of entries is N, stated by the
   instruction "these N patients").
2. Each entry is matched exactly as in MedAgentBench task 1 (mab_patient_lookup): given name
   among the name's given names, same family name (case-insensitive, NFC-normalised, no fuzzy
   matching) and birthDate equal to the DOB to the day. The MRN is the value of the matched
   patient's identifier of type MR (v2-0203), system http://emrgym.dev/fhir/sid/mrn here.
3. The answer is the list of MRNs in roster order (stated by the instruction), one per entry.
   Repeated entries would repeat the MRN.

Ambiguities and how they are read:
- The instruction does not say what to put for a patient that cannot be found; the key puts
  "Patient not found" in that slot (the MedAgentBench task-1 wording). Where several patients
  match one entry, it puts the list of their MRNs in that slot. In all instances here every
  roster entry matches exactly one patient, so neither case arises.
- Two gen patients share a name with different DOBs (Sofia Ramos 1936-06-25 / 1956-04-01;
  Grace Fischer 1963-03-15 / 1990-08-27); the DOB tells them apart.
- The decision vocabulary is empty: branches {}.
"""

import unicodedata

import keylib

NOT_FOUND = "Patient not found"


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


def roster(vars_, n):
    out = []
    for i in range(1, n + 1):
        out.append((vars_["g%d" % i], vars_["f%d" % i], vars_["b%d" % i]))
    if "g%d" % (n + 1) in vars_:
        raise ValueError("roster has more than %d entries" % n)
    return out


def make_key(n):
    def key(inst, cohort):
        answer = []
        for given, family, dob in roster(inst["vars"], n):
            found = [mrn_of(p) for p in cohort.by_type.get("Patient", []) if matches(p, given, family, dob)]
            if not found:
                answer.append(NOT_FOUND)
            elif len(found) == 1:
                answer.append(found[0])
            else:
                answer.append(found)
        return {"answer": answer, "branches": {}, "writes": []}
    return key
