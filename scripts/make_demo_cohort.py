#!/usr/bin/env python3
"""Writes the hand-made `demo` cohort (fhir-fixtures/cohorts/demo/*.ndjson).

Twelve patients around a clinical "now" of 2023-11-13T10:15:00Z, with labs under both LOINC
and the local codes MedAgentBench tasks use (MG, GLU, K, A1C, BP), chosen so each task
branch has a patient: low/normal/missing magnesium in the last 24 h, low/normal potassium,
stale/current/missing HbA1c, several CBGs in 24 h, CKD with high creatinine, AF, and one
patient with no labs. Deterministic: rerunning gives identical files.

    python3 scripts/make_demo_cohort.py fhir-fixtures/cohorts/demo
"""
import json
import random
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

NOW = datetime(2023, 11, 13, 10, 15, tzinfo=timezone.utc)
LOINC = "http://loinc.org"
LOCAL = "http://emrgym.dev/fhir/CodeSystem/flowsheet"
SCT = "http://snomed.info/sct"
ICD10 = "http://hl7.org/fhir/sid/icd-10-cm"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
NDC = "http://hl7.org/fhir/sid/ndc"
UCUM = "http://unitsofmeasure.org"
MRN_TYPE = {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "MR", "display": "Medical record number"}], "text": "MRN"}
LAB_CAT = [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "laboratory", "display": "Laboratory"}]}]
VITAL_CAT = [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "vital-signs", "display": "Vital Signs"}]}]

LABS = {
    # key: (local code, loinc, display, unit, ucum)
    "K": ("K", "2823-3", "Potassium [Moles/volume] in Serum or Plasma", "mmol/L", "mmol/L"),
    "MG": ("MG", "19123-9", "Magnesium [Mass/volume] in Serum or Plasma", "mg/dL", "mg/dL"),
    "GLU": ("GLU", "2339-0", "Glucose [Mass/volume] in Blood", "mg/dL", "mg/dL"),
    "A1C": ("A1C", "4548-4", "Hemoglobin A1c/Hemoglobin.total in Blood", "%", "%"),
    "CREAT": ("CREAT", "2160-0", "Creatinine [Mass/volume] in Serum or Plasma", "mg/dL", "mg/dL"),
    "NA": ("NA", "2951-2", "Sodium [Moles/volume] in Serum or Plasma", "mmol/L", "mmol/L"),
}

# MRN, given, family, gender, birthDate, plan
PATIENTS = [
    ("S6534835", "Peter", "Stafford", "male", "1932-12-29", {"mg": 1.3, "k": 3.1, "a1c": None, "conds": ["htn"]}),
    ("S2874099", "Maria", "Alvarez", "female", "1961-04-02", {"mg": 2.1, "k": 4.2, "a1c": (6.1, 400), "conds": ["t2dm", "htn"]}),
    ("S2380121", "Dana", "Okafor", "female", "1978-09-15", {"mg": None, "k": 3.4, "a1c": (7.8, 60), "conds": ["t2dm"]}),
    ("S3032536", "Hiroshi", "Tanaka", "male", "1949-06-30", {"mg": 1.8, "k": 3.9, "a1c": (8.4, 500), "conds": ["ckd", "t2dm", "af"], "creat": 2.4}),
    ("S6315806", "Amelia", "Brooks", "female", "1990-01-11", {"mg": 0.9, "k": 2.9, "a1c": None, "conds": []}),
    ("S6307599", "Jonas", "Lindqvist", "male", "1955-11-20", {"mg": 2.0, "k": 5.1, "a1c": (5.6, 30), "glu_24h": [110, 145, 188], "conds": ["af", "htn"]}),
    ("S2823623", "Chloé", "Dubois", "female", "1983-03-08", {"mg": None, "k": None, "a1c": (6.9, 800), "glu_24h": [201], "conds": ["t2dm"]}),
    ("S2016972", "Samuel", "Reyes", "male", "2001-07-19", {"mg": 1.6, "k": 3.6, "a1c": None, "conds": ["knee"]}),
    ("S3241217", "Grace", "Whitfield", "female", "1940-02-14", {"mg": 1.2, "k": 3.2, "a1c": (7.1, 200), "conds": ["ckd", "htn"], "creat": 1.9}),
    ("S6227720", "Omar", "Haddad", "male", "1967-10-05", {"mg": 1.95, "k": 3.5, "a1c": (6.4, 420), "conds": ["t2dm"]}),
    ("S1311412", "Eleanor", "Voss", "female", "1936-05-23", {"mg": 1.7, "k": 4.8, "a1c": (5.9, 100), "conds": ["af", "htn", "ckd"], "creat": 1.4, "deceased": False}),
    ("S0000001", "Test", "Nolabs", "other", "1999-12-31", {"mg": None, "k": None, "a1c": None, "conds": [], "nolabs": True}),
]

CONDS = {
    "htn": (("38341003", "Hypertensive disorder, systemic arterial"), ("I10", "Essential (primary) hypertension")),
    "t2dm": (("44054006", "Diabetes mellitus type 2"), ("E11.9", "Type 2 diabetes mellitus without complications")),
    "ckd": (("433144002", "Chronic kidney disease stage 3"), ("N18.30", "Chronic kidney disease, stage 3 unspecified")),
    "af": (("49436004", "Atrial fibrillation"), ("I48.91", "Unspecified atrial fibrillation")),
    "knee": (("239720000", "Tear of anterior cruciate ligament of knee joint"), ("S83.512A", "Sprain of anterior cruciate ligament of left knee, initial encounter")),
}

MEDS = {
    "htn": ("197361", "Amlodipine 5 MG Oral Tablet", "0069-1530-68", 5, "mg", "once daily"),
    "t2dm": ("860975", "Metformin hydrochloride 500 MG Oral Tablet", "0093-1048-01", 500, "mg", "twice daily"),
    "af": ("855332", "Warfarin Sodium 5 MG Oral Tablet", "0056-0172-70", 5, "mg", "once daily"),
    "ckd": ("310798", "Hydrochlorothiazide 25 MG Oral Tablet", "0172-2083-60", 25, "mg", "once daily"),
}


def iso(t):
    return t.strftime("%Y-%m-%dT%H:%M:%S+00:00")


def main(out):
    rng = random.Random(20231113)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    res = {k: [] for k in ["Organization", "Practitioner", "Patient", "Encounter", "Condition", "Observation", "MedicationRequest", "AllergyIntolerance", "Procedure", "Immunization"]}
    res["Organization"].append({"resourceType": "Organization", "id": "org-1", "active": True, "name": "EMRGym General Hospital",
                                "identifier": [{"system": "http://hl7.org/fhir/sid/us-npi", "value": "1234567893"}]})
    res["Practitioner"].append({"resourceType": "Practitioner", "id": "prac-1", "active": True,
                                "name": [{"family": "House", "given": ["Gregory"], "prefix": ["Dr."]}],
                                "identifier": [{"system": "http://hl7.org/fhir/sid/us-npi", "value": "1003000126"}]})
    counters = {}

    def nid(prefix):
        counters[prefix] = counters.get(prefix, 0) + 1
        return f"{prefix}-{counters[prefix]}"

    def lab(pid, key, value, when, enc):
        local, loinc, display, unit, ucum = LABS[key]
        res["Observation"].append({
            "resourceType": "Observation", "id": nid("obs"), "status": "final", "category": LAB_CAT,
            "code": {"coding": [{"system": LOINC, "code": loinc, "display": display}, {"system": LOCAL, "code": local, "display": display}], "text": local},
            "subject": {"reference": f"Patient/{pid}"}, "encounter": {"reference": f"Encounter/{enc}"},
            "effectiveDateTime": iso(when), "issued": iso(when + timedelta(hours=1)),
            "valueQuantity": {"value": value, "unit": unit, "system": UCUM, "code": ucum},
        })

    def bp(pid, sys_, dia, when, enc):
        res["Observation"].append({
            "resourceType": "Observation", "id": nid("obs"), "status": "final", "category": VITAL_CAT,
            "code": {"coding": [{"system": LOINC, "code": "85354-9", "display": "Blood pressure panel with all children optional"}, {"system": LOCAL, "code": "BP", "display": "Blood pressure"}], "text": "BP"},
            "subject": {"reference": f"Patient/{pid}"}, "encounter": {"reference": f"Encounter/{enc}"},
            "effectiveDateTime": iso(when),
            "component": [
                {"code": {"coding": [{"system": LOINC, "code": "8480-6", "display": "Systolic blood pressure"}]}, "valueQuantity": {"value": sys_, "unit": "mmHg", "system": UCUM, "code": "mm[Hg]"}},
                {"code": {"coding": [{"system": LOINC, "code": "8462-4", "display": "Diastolic blood pressure"}]}, "valueQuantity": {"value": dia, "unit": "mmHg", "system": UCUM, "code": "mm[Hg]"}},
            ],
        })

    for i, (mrn, given, family, gender, dob, plan) in enumerate(PATIENTS):
        pid = mrn
        p = {"resourceType": "Patient", "id": pid, "active": True,
             "identifier": [{"use": "usual", "type": MRN_TYPE, "system": "http://emrgym.dev/fhir/sid/mrn", "value": mrn}],
             "name": [{"use": "official", "family": family, "given": [given]}], "gender": gender, "birthDate": dob,
             "telecom": [{"system": "phone", "value": f"555-01{i:02d}", "use": "home"}, {"system": "email", "value": f"{given.lower()}.{family.lower()}@example.org"}],
             "address": [{"use": "home", "line": [f"{100 + i} Main St"], "city": rng.choice(["Springfield", "Riverton", "Fairview"]), "state": "MA", "postalCode": f"02{100 + i}", "country": "US"}],
             "generalPractitioner": [{"reference": "Practitioner/prac-1"}], "managingOrganization": {"reference": "Organization/org-1"}}
        if "deceased" in plan:
            p["deceasedBoolean"] = plan["deceased"]
        res["Patient"].append(p)
        # two encounters: an old outpatient visit and the current admission
        old = nid("enc")
        cur = nid("enc")
        old_start = NOW - timedelta(days=400 + 17 * i)
        res["Encounter"].append({"resourceType": "Encounter", "id": old, "status": "finished",
                                 "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB", "display": "ambulatory"},
                                 "type": [{"coding": [{"system": SCT, "code": "185349003", "display": "Encounter for check up"}]}],
                                 "subject": {"reference": f"Patient/{pid}"}, "participant": [{"individual": {"reference": "Practitioner/prac-1"}}],
                                 "period": {"start": iso(old_start), "end": iso(old_start + timedelta(minutes=30))},
                                 "serviceProvider": {"reference": "Organization/org-1"}})
        res["Encounter"].append({"resourceType": "Encounter", "id": cur, "status": "in-progress",
                                 "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "IMP", "display": "inpatient encounter"},
                                 "subject": {"reference": f"Patient/{pid}"}, "participant": [{"individual": {"reference": "Practitioner/prac-1"}}],
                                 "period": {"start": iso(NOW - timedelta(days=2, hours=i))}, "serviceProvider": {"reference": "Organization/org-1"}})
        for c in plan["conds"]:
            (sct, sdisp), (icd, idisp) = CONDS[c]
            res["Condition"].append({"resourceType": "Condition", "id": nid("cond"),
                                     "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical", "code": "active"}]},
                                     "verificationStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-ver-status", "code": "confirmed"}]},
                                     "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-category", "code": "problem-list-item"}]}],
                                     "code": {"coding": [{"system": SCT, "code": sct, "display": sdisp}, {"system": ICD10, "code": icd, "display": idisp}], "text": sdisp},
                                     "subject": {"reference": f"Patient/{pid}"}, "encounter": {"reference": f"Encounter/{old}"},
                                     "onsetDateTime": iso(old_start - timedelta(days=300 + 11 * i)), "recordedDate": iso(old_start)})
            if c in MEDS:
                rx, name, ndc, dose, unit, freq = MEDS[c]
                res["MedicationRequest"].append({"resourceType": "MedicationRequest", "id": nid("medrx"), "status": "active", "intent": "order",
                                                 "medicationCodeableConcept": {"coding": [{"system": RXNORM, "code": rx, "display": name}, {"system": NDC, "code": ndc}], "text": name},
                                                 "subject": {"reference": f"Patient/{pid}"}, "encounter": {"reference": f"Encounter/{old}"},
                                                 "authoredOn": iso(old_start), "requester": {"reference": "Practitioner/prac-1"},
                                                 "dosageInstruction": [{"text": f"{dose} {unit} by mouth {freq}", "route": {"coding": [{"system": SCT, "code": "26643006", "display": "Oral route"}]},
                                                                        "doseAndRate": [{"doseQuantity": {"value": dose, "unit": unit, "system": UCUM, "code": unit}}]}]})
        if plan.get("nolabs"):
            continue
        # history of labs, older than 24 h
        for d in (90, 30, 3):
            t = NOW - timedelta(days=d, hours=rng.randint(0, 6))
            lab(pid, "NA", round(rng.uniform(134, 144)), t, old if d > 2 else cur)
            lab(pid, "CREAT", round(plan.get("creat", rng.uniform(0.7, 1.1)) + rng.uniform(-0.1, 0.1), 2), t, old if d > 2 else cur)
            lab(pid, "GLU", round(rng.uniform(85, 160)), t, old if d > 2 else cur)
            bp(pid, rng.randint(110, 165), rng.randint(65, 100), t, old if d > 2 else cur)
        # last-24-hour values that drive the task branches
        if plan["mg"] is not None:
            lab(pid, "MG", 2.2, NOW - timedelta(days=5), old)
            lab(pid, "MG", plan["mg"], NOW - timedelta(hours=6 + i % 5, minutes=7 * i), cur)
        if plan["k"] is not None:
            lab(pid, "K", 4.0, NOW - timedelta(days=10), old)
            lab(pid, "K", plan["k"], NOW - timedelta(hours=4 + i % 3), cur)
        for j, g in enumerate(plan.get("glu_24h", [])):
            lab(pid, "GLU", g, NOW - timedelta(hours=20 - 6 * j), cur)
        if plan["a1c"] is not None:
            v, age_days = plan["a1c"]
            lab(pid, "A1C", round(v + 0.6, 1), NOW - timedelta(days=age_days + 180), old)
            lab(pid, "A1C", v, NOW - timedelta(days=age_days), old)
        if i % 3 == 0:
            res["AllergyIntolerance"].append({"resourceType": "AllergyIntolerance", "id": nid("allergy"),
                                              "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/allergyintolerance-clinical", "code": "active"}]},
                                              "verificationStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/allergyintolerance-verification", "code": "confirmed"}]},
                                              "type": "allergy", "category": ["medication"], "criticality": "high",
                                              "code": {"coding": [{"system": RXNORM, "code": "7980", "display": "Penicillin G"}], "text": "Penicillin"},
                                              "patient": {"reference": f"Patient/{pid}"}, "recordedDate": iso(old_start),
                                              "reaction": [{"manifestation": [{"coding": [{"system": SCT, "code": "247472004", "display": "Hives"}]}], "severity": "moderate"}]})
        if i % 4 == 1:
            res["Procedure"].append({"resourceType": "Procedure", "id": nid("proc"), "status": "completed",
                                     "code": {"coding": [{"system": SCT, "code": "73761001", "display": "Colonoscopy"}]},
                                     "subject": {"reference": f"Patient/{pid}"}, "encounter": {"reference": f"Encounter/{old}"},
                                     "performedDateTime": iso(old_start + timedelta(minutes=10))})
        res["Immunization"].append({"resourceType": "Immunization", "id": nid("imm"), "status": "completed",
                                    "vaccineCode": {"coding": [{"system": "http://hl7.org/fhir/sid/cvx", "code": "140", "display": "Influenza, seasonal, injectable, preservative free"}]},
                                    "patient": {"reference": f"Patient/{pid}"}, "occurrenceDateTime": iso(NOW - timedelta(days=40 + i)), "primarySource": True})
    for ty, items in res.items():
        with open(out / f"{ty}.ndjson", "w", encoding="utf-8") as f:
            for r in items:
                f.write(json.dumps(r, ensure_ascii=False, separators=(",", ":")) + "\n")
        print(f"{ty}: {len(items)}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "fhir-fixtures/cohorts/demo")
