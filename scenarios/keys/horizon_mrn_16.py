"""Answer key: horizon_mrn_16 (16 chained MRN lookups by name and date of birth).

Instruction: "Find the MRN of each of these 16 patients and answer with the list of their MRNs,
in the same order: ${roster}." Every rule, source and reading is in horizon.py (shared by the
five horizon_mrn_N families): exact name + DOB match, MRN = the MR-type identifier's value,
answer = list of MRNs in roster order, "Patient not found" in a slot with no match; no
branches, no writes.
"""

import horizon
import keylib

key = horizon.make_key(16)

if __name__ == "__main__":
    keylib.main(key)
