"""The typed client against the real `emrgym serve`, over real HTTP."""

import json

import pytest

from emrgym_client import Client, EmrgymError, EpisodeResult, Grade, Instance, LocalServer, ToolResult


def test_scenarios_are_typed_instances(client):
    instances = client.scenarios()
    assert len(instances) >= 89 and all(isinstance(i, Instance) for i in instances)
    k = next(i for i in instances if i.id == "mab-k-001")
    assert k.family == "mab_k_replete" and "finish" in k.tools and k.max_steps > 0


def test_oracle_calls_through_the_client_succeed_and_are_recorded(client, server, oracle_calls):
    calls = oracle_calls("dm-followup-001")
    assert any(name == "fhir_create" for name, _ in calls)  # it writes, so the grade reads the sandbox
    with client.create_episode("dm-followup-001") as ep:
        assert ep.mode == "flat" and ep.prompt and ep.fhir_base.endswith(f"/sandboxes/{ep.id}/fhir")
        assert {n for n, _ in calls} <= set(ep.tool_names)
        for name, args in calls[:-1]:
            r = ep.call_tool(name, args)
            assert isinstance(r, ToolResult) and r.status < 300 and r.ended is None and json.loads(r.text) == r.value
        result = ep.finish(**calls[-1][1])
        assert isinstance(result, EpisodeResult) and isinstance(result.grade, Grade)
        assert (result.end, result.success, result.progress) == ("finished", True, 1.0)
        assert result.grade.nodes and all(n.passed for n in result.grade.nodes) and result.grade.classes == []
        assert result.instance == "dm-followup-001" and result.trial == ep.trial
        assert client.result(ep.id).grade.raw == result.grade.raw  # the operator's view agrees
        assert ep.status() == "ended"
    # the context manager ended (DELETEd) it; the server recorded it in its run directory
    with pytest.raises(EmrgymError) as e:
        client.episode(ep.id)
    assert e.value.status == 404 and ep.id in e.value.diagnostics
    assert ep.result.grade.raw == result.grade.raw and ep.result.run_dir == str(server.record)
    lines = [json.loads(l) for l in (server.record / "results.jsonl").read_text().splitlines()]
    assert any(l["instance"] == "dm-followup-001" and l["trial"] == ep.trial and l["success"] for l in lines)


def test_finish_as_a_tool_call_carries_the_grade(client, oracle_calls):
    calls = oracle_calls("mab-k-001")
    with client.create_episode("mab-k-001") as ep:
        for name, args in calls:
            r = ep.call_tool(name, args)
        assert r.name == "finish" and r.ended is not None and r.ended.success is True
        assert r.ended.grade.progress == 1.0 and ep.result is r.ended


def test_a_wrong_answer_fails_with_failure_classes_and_node_verdicts(client):
    with client.create_episode("mab-k-002") as ep:
        result = ep.finish(5)
    assert result.success is False and result.grade.classes and result.grade.primary
    failed = [n for n in result.grade.nodes if not n.passed]
    assert failed and failed[0].reasons and any(n.failure_class for n in failed)


def test_closing_an_unfinished_episode_grades_it_stopped(client):
    ep = client.create_episode("mab-age-001")
    assert any(e["id"] == ep.id and e["status"] == "active" for e in client.episodes())
    result = ep.close()
    assert result.end == "stopped" and result.success is False
    assert ep.close() is result  # idempotent


def test_fhir_rest_through_the_episode_base_is_isolated_and_counted(client):
    obs = {
        "resourceType": "Observation", "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "CLIENT-TEST"}]},
        "subject": {"reference": "Patient/S6534835"}, "valueString": "only in episode a",
    }
    with client.create_episode("mab-lookup-001") as a, client.create_episode("mab-lookup-001") as b:
        made = a.fhir.post("Observation", obs)
        assert made.status == 201 and made.resource["id"] and made.location
        assert a.fhir.get(f"Observation/{made.resource['id']}").resource["valueString"] == "only in episode a"
        assert a.fhir.get("Observation", {"code": "CLIENT-TEST"}).resource["total"] == 1
        assert b.fhir.get("Observation", {"code": "CLIENT-TEST"}).resource["total"] == 0
        changed = dict(made.resource, valueString="changed")
        assert a.fhir.put(f"Observation/{made.resource['id']}", changed).resource["valueString"] == "changed"
        with pytest.raises(EmrgymError) as e:
            a.fhir.post("Observation", {"resourceType": "Observation"})
        assert e.value.status == 422 and e.value.outcome["resourceType"] == "OperationOutcome" and "code" in e.value.diagnostics
        assert client.episode(a.id)["steps"] == 5 and client.episode(b.id)["steps"] == 1  # failed calls are steps too


def test_errors_are_typed_and_carry_the_operation_outcome(client):
    with pytest.raises(EmrgymError) as e:
        client.create_episode("no-such-task")
    assert (e.value.status, e.value.code) == (404, "not-found") and "no-such-task" in e.value.diagnostics
    assert e.value.outcome["issue"][0]["diagnostics"] == e.value.diagnostics and "no-such-task" in str(e.value)
    with pytest.raises(EmrgymError) as e:
        client.create_episode("mab-age-001", mode="bossy")
    assert e.value.status == 400 and "bossy" in e.value.diagnostics
    with pytest.raises(EmrgymError) as e:
        client.create_episode("mab-age-001", seed=5)
    assert e.value.status == 400 and "seed 5" in e.value.diagnostics
    with client.create_episode("mab-age-001") as ep:
        with pytest.raises(EmrgymError) as e:
            ep.call_tool("cha2ds2_vasc", {})
        assert e.value.status == 404 and "no tool named 'cha2ds2_vasc'" in e.value.diagnostics
        with pytest.raises(EmrgymError) as e:
            ep.call_tool("fhir_search", {"resource_type": 7})
        assert e.value.status == 400 and "resource_type" in e.value.diagnostics and e.value.code
        with pytest.raises(EmrgymError) as e:
            ep.guidance()
        assert e.value.status == 409 and "flat mode" in e.value.diagnostics
        ep.finish(None)
        with pytest.raises(EmrgymError) as e:
            ep.finish(None)
        assert e.value.status == 409 and "already ended" in e.value.diagnostics


def test_guided_mode_releases_guidance_as_the_agent_goes(client, oracle_calls):
    calls = oracle_calls("dm-followup-001")
    with client.create_episode("dm-followup-001", mode="guided") as ep:
        first = ep.guidance()
        assert first.next and all(isinstance(s, str) for s in first.next) and not first.complete and not first.ended
        for name, args in calls[:-1]:
            ep.call_tool(name, args)
        assert ep.guidance().next != first.next
        assert ep.finish(**calls[-1][1]).success is True
        assert ep.guidance().ended is True


def test_a_server_with_a_token_needs_the_operators_token(tmp_path, oracle_calls, emrgym_bin, suite_dir):
    with LocalServer(emrgym_bin, suite=suite_dir, record=tmp_path / "rec", args=["--token", "op-secret"]) as server:
        with pytest.raises(EmrgymError) as e:
            Client(server.url).create_episode("mab-k-001")
        assert e.value.status == 401
        with Client(server.url, token="op-secret") as client, client.create_episode("mab-k-001") as ep:
            for name, args in oracle_calls("mab-k-001")[:-1]:
                ep.call_tool(name, args)
            assert ep.finish(None).success is True


def test_a_missing_binary_is_named():
    with pytest.raises(FileNotFoundError, match="no-such-emrgym"):
        LocalServer("/nonexistent/no-such-emrgym")
