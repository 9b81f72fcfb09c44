#!/usr/bin/env python3
"""Writes the horizon families: one procedure (find a patient's MRN by name and birth date)
chained 2, 4, 8, 16 and 32 times, on the generated `gen` cohort, so runs can show per-step
accuracy against step index and the chain length at which success falls below 50%.

Writes scenarios/htn/horizon.json (task `mrn_chain_N`: N lookups, then the list of MRNs)
and scenarios/horizon_mrn_N.json (4 instances each, consecutive patients in MRN order).
Deterministic; rerun after the gen cohort changes, then `emrgym scenarios check`.

    python3 scripts/make_horizon.py
"""
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LENGTHS = [2, 4, 8, 16, 32]
INSTANCES = 4


def main():
    pts = sorted((json.loads(l) for l in (ROOT / "fhir-fixtures/cohorts/gen/Patient.ndjson").read_text().splitlines()),
                 key=lambda p: p["id"])
    keys = [(p["name"][0]["given"][0], p["name"][0]["family"], p["birthDate"]) for p in pts]
    assert len(set(keys)) == len(keys), "names and birth dates must identify the gen patients"
    tasks = {}
    for n in LENGTHS:
        params = [f"{k}{i}" for i in range(1, n + 1) for k in ("g", "f", "b")]
        subtasks = [{"id": f"p{i}", "task": "find_patient", "args": {"given": f"%g{i}", "family": f"%f{i}", "birthdate": f"%b{i}"}}
                    for i in range(1, n + 1)]
        mrn = lambda i: f"%p{i}.identifier.where(type.text = 'MRN').value.first()"
        answer = mrn(1) + "".join(f".combine({mrn(i)})" for i in range(2, n + 1))
        subtasks.append({"id": "done", "task": "report", "args": {"answer": {"expr": answer}}})
        tasks[f"mrn_chain_{n}"] = {
            "doc": f"Look up {n} patients by name and birth date, then report their MRNs in order.",
            "params": params,
            "methods": [{"name": "default", "subtasks": subtasks, "order": [[f"p{i}", "done"] for i in range(1, n + 1)]}],
        }
    lib = {"$schema": "./htn.schema.json",
           "doc": "The horizon families: one lookup chained 2 to 32 times (written by scripts/make_horizon.py).",
           "tasks": tasks}
    (ROOT / "scenarios/htn/horizon.json").write_text(json.dumps(lib, indent=2) + "\n")
    for n in LENGTHS:
        instances = []
        for k in range(INSTANCES):
            chosen = [pts[(k * n + j) % len(pts)] for j in range(n)]
            if len({p["id"] for p in chosen}) < n:
                chosen = [pts[(k * 7 + j * 2) % len(pts)] for j in range(n)]
            v = {}
            roster = []
            for i, p in enumerate(chosen, 1):
                g, f, b = p["name"][0]["given"][0], p["name"][0]["family"], p["birthDate"]
                v.update({f"g{i}": g, f"f{i}": f, f"b{i}": b})
                roster.append(f"{i}. {g} {f}, born {b}")
            v["roster"] = "; ".join(roster)
            instances.append({"id": f"horizon-{n}-{k + 1:03d}", "patient": chosen[0]["id"], "vars": v,
                              "doc": f"{n} lookups starting at patient {k * n % len(pts)} in MRN order"})
        fam = {
            "$schema": "./scenario.schema.json", "format_version": 1, "family": f"horizon_mrn_{n}",
            "title": f"Horizon: {n} chained MRN lookups",
            "doc": f"The same procedure (find a patient by name and birth date) {n} times in one episode; with the other lengths it shows how accuracy falls with chain length.",
            "source": "EMRGym", "cohort": "gen", "now": "2023-11-13T10:15:00+00:00",
            "library": ["htn/common.json", "htn/horizon.json"], "tools": ["fhir_search", "fhir_read", "finish"],
            "instruction": f"Find the MRN of each of these {n} patients and answer with the list of their MRNs, in the same order: ${{%roster}}.",
            "context": "It's ${%now} now.",
            "root": {"task": f"mrn_chain_{n}", "args": {p: f"%{p}" for p in tasks[f"mrn_chain_{n}"]["params"]}},
            "vars": {}, "max_steps": n + 6, "instances": instances,
        }
        (ROOT / f"scenarios/horizon_mrn_{n}.json").write_text(json.dumps(fam, indent=2, ensure_ascii=False) + "\n")
        print(f"horizon_mrn_{n}: {len(instances)} instances")


if __name__ == "__main__":
    main()
