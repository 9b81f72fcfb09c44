"""Interop: third-party FHIR clients against a running `emrgym serve`.

Run by the Rust integration test `interop`, which starts the server and passes its base URL
in EMRGYM_FHIR_BASE. Clients: fhirpy (SyncFHIRClient), SMART's fhirclient (R4 models);
every resource returned is validated with fhir.resources' R4B pydantic models.
"""
import os

import pytest
import requests
from fhir.resources.R4B import get_fhir_model_class
from fhirclient import client as smart_client
from fhirclient.models.observation import Observation as SmartObservation
from fhirclient.models.patient import Patient as SmartPatient
from fhirpy import SyncFHIRClient
from fhirpy.base.exceptions import OperationOutcome, ResourceNotFound

BASE = os.environ.get("EMRGYM_FHIR_BASE", "http://127.0.0.1:8080/fhir")


def r4b(resource):
    """Validate a resource dict with fhir.resources' R4B model; returns the model."""
    return get_fhir_model_class(resource["resourceType"]).model_validate(resource)


@pytest.fixture()
def sandbox_base():
    root = BASE.rsplit("/fhir", 1)[0]
    r = requests.post(f"{root}/sandboxes", json={"seed": 5, "now": "2023-11-13T10:15:00Z"})
    assert r.status_code == 201, r.text
    info = r.json()
    yield info["fhirBase"]
    assert requests.delete(f"{root}/sandboxes/{info['id']}").status_code == 204


def test_capability_statement_validates():
    r = requests.get(f"{BASE}/metadata")
    assert r.status_code == 200
    cs = r4b(r.json())
    assert cs.fhirVersion == "4.0.1"
    assert any(res.type == "Observation" for res in cs.rest[0].resource)


def test_fhirpy_search_read_and_validate():
    c = SyncFHIRClient(BASE)
    patients = c.resources("Patient").search(family="Stafford").fetch()
    assert [p.id for p in patients] == ["S6534835"]
    r4b(patients[0].serialize())
    obs = c.resources("Observation").search(patient="S3241217", code="K").sort("-date").limit(1).fetch()
    assert len(obs) == 1
    assert obs[0]["valueQuantity"]["value"] == 3.2
    r4b(obs[0].serialize())
    # fetch_all follows `next` links across pages
    everything = c.resources("Observation").search(patient="S3241217").limit(3).fetch_all()
    total = requests.get(f"{BASE}/Observation", params={"patient": "S3241217", "_summary": "count"}).json()["total"]
    assert len(everything) == total
    assert len({o.id for o in everything}) == total
    for o in everything:
        r4b(o.serialize())
    assert c.resources("Observation").search(patient="S3241217", code="K").count() == 2
    with pytest.raises(ResourceNotFound):
        c.reference("Patient", "does-not-exist").to_resource()


def test_fhirpy_create_update_delete_in_sandbox(sandbox_base):
    c = SyncFHIRClient(sandbox_base)
    obs = c.resource(
        "Observation",
        status="final",
        code={"text": "BP"},
        subject={"reference": "Patient/S2380121"},
        effectiveDateTime="2023-11-13T10:15:00+00:00",
        valueString="118/77 mmHg",
    )
    obs.save()
    assert obs.id
    assert obs["meta"]["versionId"] == "1"
    r4b(obs.serialize())
    obs["valueString"] = "120/80 mmHg"
    obs.save()
    assert obs["meta"]["versionId"] == "2"
    again = c.reference("Observation", obs.id).to_resource()
    assert again["valueString"] == "120/80 mmHg"
    # the default sandbox never saw it
    assert SyncFHIRClient(BASE).resources("Observation").search(_id=obs.id).count() == 0
    # invalid resources are refused with an OperationOutcome
    bad = c.resource("Observation", status="nonsense", code={"text": "x"})
    with pytest.raises(OperationOutcome) as err:
        bad.save()
    assert "nonsense" in str(err.value)
    obs.delete()
    assert requests.get(f"{sandbox_base}/Observation/{obs.id}").status_code == 410


def test_smart_fhirclient_models(sandbox_base):
    smart = smart_client.FHIRClient(settings={"app_id": "emrgym-interop", "api_base": sandbox_base})
    p = SmartPatient.read("S6534835", smart.server)
    assert p.name[0].family == "Stafford"
    assert p.birthDate.isostring == "1932-12-29"
    bundle = SmartObservation.where(struct={"patient": "S3241217", "code": "MG", "_sort": "-date"}).perform(smart.server)
    assert bundle.total == 2
    values = [e.resource.valueQuantity.value for e in bundle.entry]
    assert values == [1.2, 2.2]
    new = SmartObservation({"resourceType": "Observation", "status": "final", "code": {"text": "K"},
                            "subject": {"reference": "Patient/S3241217"}, "valueQuantity": {"value": 3.9, "unit": "mmol/L"}})
    created = new.create(smart.server)
    assert created["resourceType"] == "Observation"
    r4b(created)


def test_transaction_bundle_round_trip(sandbox_base):
    bundle = {
        "resourceType": "Bundle", "type": "transaction",
        "entry": [
            {"fullUrl": "urn:uuid:0c6f5e0e-1c1f-4c54-9a54-3b9a5c3c1a01", "resource": {"resourceType": "Patient", "name": [{"family": "Interop"}]},
             "request": {"method": "POST", "url": "Patient"}},
            {"resource": {"resourceType": "Observation", "status": "final", "code": {"text": "GLU"},
                          "subject": {"reference": "urn:uuid:0c6f5e0e-1c1f-4c54-9a54-3b9a5c3c1a01"}, "valueQuantity": {"value": 101, "unit": "mg/dL"}},
             "request": {"method": "POST", "url": "Observation"}},
        ],
    }
    r = requests.post(sandbox_base, json=bundle, headers={"Content-Type": "application/fhir+json"})
    assert r.status_code == 200, r.text
    resp = r4b(r.json())
    assert [e.response.status for e in resp.entry] == ["201 Created", "201 Created"]
    pid = r.json()["entry"][0]["resource"]["id"]
    assert r.json()["entry"][1]["resource"]["subject"]["reference"] == f"Patient/{pid}"


def test_errors_are_operation_outcomes():
    for method, path, body, status in [
        ("GET", "/Patient/nope", None, 404),
        ("GET", "/Observation?date=yesterday", None, 400),
        ("POST", "/Observation", "{broken", 400),
        ("PUT", "/Patient/S6534835", '{"resourceType":"Patient","id":"other"}', 400),
    ]:
        r = requests.request(method, BASE + path, data=body, headers={"Content-Type": "application/fhir+json"})
        assert r.status_code == status, (path, r.text)
        oo = r4b(r.json())
        assert oo.issue[0].severity == "error"


def test_tool_catalogue_over_http():
    """The catalogue is valid JSON Schema for a third-party validator, and tools run over HTTP."""
    from jsonschema import Draft202012Validator

    root = BASE.rsplit("/fhir", 1)[0]
    catalogue = requests.get(f"{root}/tools").json()
    assert catalogue["count"] >= 63
    for tool in catalogue["tools"]:
        Draft202012Validator.check_schema(tool["parameters"])
        validator = Draft202012Validator(tool["parameters"])
        for example in tool["examples"]:
            errors = [e.message for e in validator.iter_errors(example["arguments"])]
            assert not errors, (tool["name"], errors)
    openai = requests.get(f"{root}/tools", params={"format": "openai"}).json()
    assert {t["function"]["name"] for t in openai} == {t["name"] for t in catalogue["tools"]}

    r = requests.post(f"{root}/tools/meld_3", json={"sex": "female", "bilirubin": 2.5, "sodium": 130,
                                                   "inr": 1.6, "creatinine": 1.4, "albumin": 2.9})
    assert r.status_code == 200, r.text
    assert r.json()["unit"] == "points" and r.json()["interpretation"]
    r = requests.post(f"{root}/tools/bmi", json={"weight": {"value": 70, "unit": "stone"}, "height": 170})
    assert r.status_code == 400
    assert "stone" in r4b(r.json()).issue[0].diagnostics


def test_fhir_tool_writes_a_valid_resource(sandbox_base):
    root, sandbox_id = sandbox_base.rsplit("/sandboxes/", 1)
    sandbox_id = sandbox_id.split("/")[0]
    r = requests.post(f"{root}/sandboxes/{sandbox_id}/tools/fhir_create", json={
        "resource_type": "MedicationRequest",
        "resource": {"status": "active", "intent": "order", "subject": {"reference": "Patient/S6534835"},
                     "medicationCodeableConcept": {"coding": [{"system": "http://www.nlm.nih.gov/research/umls/rxnorm",
                                                               "code": "197361"}]}}})
    assert r.status_code == 201, r.text
    created = r4b(r.json())
    read = requests.get(f"{sandbox_base}/MedicationRequest/{created.id}")
    assert read.status_code == 200
    assert r4b(read.json()).subject.reference == "Patient/S6534835"
