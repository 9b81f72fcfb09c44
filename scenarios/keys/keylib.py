"""Shared plumbing for the independent answer keys (Python standard library only).

An answer key is a second implementation of a scenario family, written from the family's
instruction text and the guideline it cites, never from the HTN library. `emrgym scenarios
check` runs every key and compares what it computes with the oracle's reference plan.

This module holds only plumbing: reading a cohort's NDJSON, FHIR date handling, and the
command-line protocol. It holds no clinical rule; those live in each family's key.

Protocol: `python3 scenarios/keys/FAMILY.py` reads one JSON object on stdin:

    {"family": "...", "cohort_dir": "/path/to/ndjson", "instances": [
        {"id": "...", "patient": "...", "now": "2023-11-13T10:15:00+00:00", "vars": {...}}]}

and writes one JSON object on stdout:

    {"instances": {"ID": {"answer": <JSON>, "branches": {"path": "method"}, "writes": [WRITE...]}}}

where each WRITE is a summary of one expected write:

    {"action": "create" | "update", "resourceType": "...", "code": "...",
     "dose": number | null, "unit": "..." | null, "route": "oral" | "iv" | null,
     "status": "..." | null (the new status of an update), "id": "..." | null (the updated id),
     "at": "ISO date-time" | null (when a ServiceRequest is to be done), "value": "..." | null}

Keys built with `write(...)` below fill the fields they do not name with null.
"""

import datetime as _dt
import json
import os
import sys

RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
LOINC = "http://loinc.org"
SNOMED = "http://snomed.info/sct"


class Cohort:
    """A cohort directory of FHIR NDJSON files, indexed by type, id and patient."""

    def __init__(self, directory):
        """A directory of .ndjson/.json files (read recursively, sorted), or one such file."""
        self.by_type = {}
        self.by_id = {}
        if os.path.isdir(directory):
            paths = sorted(os.path.join(d, n) for d, _, ns in os.walk(directory) for n in ns)
        else:
            paths = [directory]
        for path in paths:
            name = os.path.basename(path)
            if name.endswith(".ndjson"):
                with open(path, encoding="utf-8") as f:
                    for line in f:
                        line = line.strip()
                        if line:
                            self._add(json.loads(line))
            elif name.endswith(".json"):
                with open(path, encoding="utf-8") as f:
                    doc = json.load(f)
                if doc.get("resourceType") == "Bundle":
                    for e in doc.get("entry", []):
                        if "resource" in e:
                            self._add(e["resource"])
                else:
                    self._add(doc)

    def _add(self, r):
        self.by_type.setdefault(r["resourceType"], []).append(r)
        self.by_id[(r["resourceType"], r.get("id"))] = r

    def patient(self, pid):
        return self.by_id.get(("Patient", pid))

    def of_patient(self, rtype, pid):
        """Every resource of a type whose subject or patient is Patient/pid, in file order."""
        ref = "Patient/" + pid
        out = []
        for r in self.by_type.get(rtype, []):
            subj = r.get("subject") or r.get("patient") or {}
            if subj.get("reference") == ref:
                out.append(r)
        return out


def parse_instant(text):
    """A FHIR date or dateTime as an aware datetime (a bare date is its start, UTC)."""
    if text is None:
        return None
    t = text.strip()
    if len(t) == 4:
        t += "-01-01"
    elif len(t) == 7:
        t += "-01"
    if len(t) == 10:
        return _dt.datetime.fromisoformat(t + "T00:00:00+00:00")
    if t.endswith("Z"):
        t = t[:-1] + "+00:00"
    d = _dt.datetime.fromisoformat(t)
    if d.tzinfo is None:
        d = d.replace(tzinfo=_dt.timezone.utc)
    return d


def parse_date(text):
    return _dt.date.fromisoformat(text[:10])


def completed_years(birth, on):
    """Age in completed years on a date."""
    years = on.year - birth.year
    if (on.month, on.day) < (birth.month, birth.day):
        years -= 1
    return years


def codes(concept):
    """The (system, code) pairs of a CodeableConcept."""
    return [(c.get("system"), c.get("code")) for c in (concept or {}).get("coding", [])]


def has_code(concept, code, system=None):
    return any(c == code and (system is None or s == system) for s, c in codes(concept))


def effective(obs):
    """An Observation's effective instant (effectiveDateTime or the period's start)."""
    if "effectiveDateTime" in obs:
        return parse_instant(obs["effectiveDateTime"])
    if "effectivePeriod" in obs:
        return parse_instant(obs["effectivePeriod"].get("start"))
    if "issued" in obs:
        return parse_instant(obs["issued"])
    return None


def write(action, resource_type, code, dose=None, unit=None, route=None, status=None, id=None, at=None, value=None):
    """One expected write, in the summary form the check compares."""
    return {
        "action": action,
        "resourceType": resource_type,
        "code": code,
        "dose": dose,
        "unit": unit,
        "route": route,
        "status": status,
        "id": id,
        "at": at,
        "value": value,
    }


def main(key):
    """Run `key(instance, cohort) -> {"answer", "branches", "writes"}` over the request on stdin."""
    req = json.load(sys.stdin)
    cohort = Cohort(req["cohort_dir"])
    out = {}
    for inst in req["instances"]:
        res = key(inst, cohort)
        out[inst["id"]] = {
            "answer": res.get("answer"),
            "branches": res.get("branches", {}),
            "writes": res.get("writes", []),
        }
    json.dump({"instances": out}, sys.stdout, indent=1, sort_keys=True)
    sys.stdout.write("\n")
