#!/usr/bin/env python3
"""Adds instances on the generated `gen` cohort to the scenario families, balanced by branch.

For each family, `emrgym scenarios branches FILE --cohort gen --json` gives the branches the
task network takes for every patient; patients are taken in MRN order, the same number from
each branch (combination), and appended as instances with `"cohort": "gen"` and the
variables the family needs (name and birth date for look-ups, a reading for blood-pressure
tasks). Instances already on `gen` are replaced, so rerunning is idempotent. Then run
`emrgym scenarios check`.

    python3 scripts/add_gen_instances.py target/release/emrgym
"""
import json
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = sys.argv[1] if len(sys.argv) > 1 else str(ROOT / "target/release/emrgym")
COHORT = json.loads("{}")  # filled below
PER_BRANCH = {
    "mab_a1c": 5, "mab_k_replete": 4, "mab_latest_mg_24h": 8, "mab_mean_glucose_24h": 8, "mab_mg_replete": 6,
    "diabetes_followup": 5, "electrolyte_review": 3, "metformin_renal_review": 8,
    "qtc_review": 5, "start_lisinopril": 4,
    "af_anticoagulation": 3, "meld_na_referral": 4, "sepsis_bundle": 3, "dka_insulin": 3, "admission_med_review": 2,
}
# families whose task applies to some patients only: in hospital now, with diabetes, with cirrhosis
ELIGIBLE = {
    "sepsis_bundle": lambda p, cur, conds: p in cur,
    "admission_med_review": lambda p, cur, conds: p in cur,
    "dka_insulin": lambda p, cur, conds: p in cur and "44054006" in conds.get(p, ()),
    "meld_na_referral": lambda p, cur, conds: "19943007" in conds.get(p, ()),
}
PLAIN = {"mab_latest_glucose": 18, "mab_patient_age": 18, "mab_ortho_referral": 18, "mab_record_bp": 18,
         "unsolvable_no_order_tool": 10}
LOOKUP = 9  # found and near-miss not-found each


def patients():
    out = {}
    for line in (ROOT / "fhir-fixtures/cohorts/gen/Patient.ndjson").read_text().splitlines():
        p = json.loads(line)
        out[p["id"]] = p
    return out


def with_glucose():
    """Patients with at least one glucose result (the latest-glucose task assumes one)."""
    out = set()
    for line in (ROOT / "fhir-fixtures/cohorts/gen/Observation.ndjson").read_text().splitlines():
        o = json.loads(line)
        if any(c["code"] == "2339-0" for c in o["code"]["coding"]):
            out.add(o["subject"]["reference"].split("/")[1])
    return out


def in_hospital():
    """Patients with an encounter in progress at the clinical now."""
    out = set()
    for line in (ROOT / "fhir-fixtures/cohorts/gen/Encounter.ndjson").read_text().splitlines():
        e = json.loads(line)
        if e["status"] == "in-progress":
            out.add(e["subject"]["reference"].split("/")[1])
    return out


def conditions():
    """SNOMED condition codes by patient."""
    out = {}
    for line in (ROOT / "fhir-fixtures/cohorts/gen/Condition.ndjson").read_text().splitlines():
        c = json.loads(line)
        codes = {x["code"] for x in c["code"]["coding"]}
        out.setdefault(c["subject"]["reference"].split("/")[1], set()).update(codes)
    return out


def bp(i):
    return f"{112 + (i * 7) % 40}/{68 + (i * 5) % 24} mmHg"


def main():
    pts = patients()
    glucose = with_glucose()
    cur, conds = in_hospital(), conditions()
    for path in sorted((ROOT / "scenarios").glob("*.json")):
        if path.name.endswith("schema.json"):
            continue
        fam = json.loads(path.read_text())
        name = fam["family"]
        if name.startswith("horizon_"):
            continue  # scripts/make_horizon.py writes these
        generated = "added by scripts/add_gen_instances.py"
        mine = [i for i in fam["instances"] if i.get("cohort") != "gen" and i.get("doc", "").find(generated) < 0]
        prefix = re.sub(r"-\d+$", "", mine[0]["id"])
        n = max(int(re.search(r"(\d+)$", i["id"]).group(1)) for i in mine)
        width = len(re.search(r"(\d+)$", mine[0]["id"]).group(1))
        first_vars = mine[0].get("vars", {})
        branches = json.loads(subprocess.run([BIN, "scenarios", "branches", str(path), "--cohort", "gen", "--json"],
                                             check=True, capture_output=True, text=True).stdout)
        if name in ELIGIBLE:
            branches = {p: v for p, v in branches.items() if ELIGIBLE[name](p, cur, conds)}
        # families on gen keep their hand-written instances; their patients are not reused
        if fam["cohort"] == "gen":
            for i in mine:
                branches.pop(i["patient"], None)
        added = []

        def add(patient, vars_=None, expect=None, doc=""):
            nonlocal n
            n += 1
            inst = {"id": f"{prefix}-{n:0{width}d}", "patient": patient}
            if fam["cohort"] != "gen":
                inst["cohort"] = "gen"
            if vars_:
                inst["vars"] = vars_
            if expect:
                inst["expect_branch"] = expect
            if fam["cohort"] == "gen":
                doc = (doc + "; " if doc else "") + generated
            if doc:
                inst["doc"] = doc
            added.append(inst)

        if name == "mab_patient_lookup":
            for k, mrn in enumerate(sorted(pts)[:LOOKUP]):
                p = pts[mrn]
                v = {"given": p["name"][0]["given"][0], "family": p["name"][0]["family"], "birthdate": p["birthDate"]}
                add(mrn, v, {"ans": "found"}, "generated patient, exact name and birth date")
            for k, mrn in enumerate(sorted(pts)[LOOKUP:2 * LOOKUP]):
                p = pts[mrn]
                y, m, d = p["birthDate"].split("-")
                wrong = f"{y}-{m}-{int(d) % 28 + 1:02d}"
                v = {"given": p["name"][0]["given"][0], "family": p["name"][0]["family"], "birthdate": wrong}
                add(mrn, v, {"ans": "not_found"}, "a near miss of a generated patient (birth date off): no match")
        elif name in PLAIN:
            eligible = [m for m in sorted(branches) if name != "mab_latest_glucose" or m in glucose]
            for k, mrn in enumerate(eligible[:PLAIN[name]]):
                v = dict(first_vars)
                if "bp" in v:
                    v["bp"] = bp(k)
                add(mrn, v or None)
        else:
            groups = {}
            for mrn in sorted(branches):
                label = json.dumps(branches[mrn], sort_keys=True)
                groups.setdefault(label, []).append(mrn)
            k = PER_BRANCH[name]
            # round-robin over the branch combinations, k from each (fewer where fewer exist)
            for label in sorted(groups):
                for mrn in groups[label][:k]:
                    v = dict(first_vars)
                    if "bp" in v:
                        v["bp"] = bp(n)
                    expect = {p: m for p, m in json.loads(label).items() if p != ""}
                    add(mrn, v or None, expect)
        fam["instances"] = mine + added
        text = json.dumps(fam, indent=2, ensure_ascii=False) + "\n"
        path.write_text(text)
        print(f"{name}: {len(mine)} + {len(added)} on gen")


if __name__ == "__main__":
    main()
