"""Interop: external agents on the episode API of a running `emrgym serve`, over real HTTP with
`requests`.

Started by tests/integration/external_agents.rs with EMRGYM_URL (the server), EMRGYM_TOKEN (its
operator token), EMRGYM_ORACLE_RUN (an `emrgym run --agent oracle` run directory whose calls the
clients replay; seed 0, as the server's) and EMRGYM_EXAMPLE (docs/examples/episode_agent.py).
The first test must run first: it makes trial 0 of every instance, which the Rust side compares
with the oracle run. The last leaves an episode open, which the server records as abandoned
when it stops.

Roles as a benchmark would use them: the operator (OP) creates episodes and reads grades; each
agent holds only its episode's token (agent(ep)) and learns no more than that its episode ended.
"""

import json
import os
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlencode

import requests

URL = os.environ["EMRGYM_URL"]
ORACLE = Path(os.environ["EMRGYM_ORACLE_RUN"])
EXAMPLE = os.environ["EMRGYM_EXAMPLE"]
OP = {"Authorization": f"Bearer {os.environ['EMRGYM_TOKEN']}"}
JSON = {"Content-Type": "application/json"}


def agent(ep):
    """The headers of the agent that holds episode `ep`."""
    return {"Authorization": f"Bearer {ep['token']}"}


def graded(ep):
    """The operator's view of an ended episode: the whole result."""
    return requests.get(f"{URL}/episodes/{ep['id']}", headers=OP).json()["result"]


def oracle_calls(instance):
    events = [json.loads(l) for l in (ORACLE / "trajectories" / f"{instance}.0.jsonl").read_text().splitlines()]
    return [(e["name"], e["arguments"]) for e in events if e.get("type") == "tool_call"]


ORACLE_RESULTS = {
    r["instance"]: r
    for r in (json.loads(l) for l in (ORACLE / "results.jsonl").read_text().splitlines())
    if r["trial"] == 0
}


def create(instance, mode="flat", status=201):
    r = requests.post(f"{URL}/episodes", json={"instance": instance, "mode": mode}, headers=OP)
    assert r.status_code == status, r.text
    return r.json()


def rest(ep, name, args):
    """A FHIR tool call sent as the FHIR REST request it stands for, to the episode's base."""
    base, rt, h = ep["fhir_base"], args["resource_type"], agent(ep)
    if name == "fhir_search":
        query = urlencode([(k, x) for k, v in args.get("params", {}).items() for x in (v if isinstance(v, list) else [v])])
        return requests.get(f"{base}/{rt}?{query}", headers=h)
    if name == "fhir_read":
        return requests.get(f"{base}/{rt}/{args['id']}", headers=h)
    if name == "fhir_create":
        return requests.post(f"{base}/{rt}", json=args["resource"], headers=h)
    if name == "fhir_update":
        return requests.put(f"{base}/{rt}/{args['id']}", json=args["resource"], headers=h)
    raise ValueError(name)


def oracle_like(job):
    """Replay the oracle's calls in a new episode. REST clients send the FHIR calls to the
    episode's FHIR base and the other tools to /sandboxes/{id}/tools/{name}; tool clients use
    the episode's tool URL. Either way every call is recorded as a step of the episode."""
    instance, via_rest = job
    ep = create(instance)
    assert ep["trial"] == 0 and ep["status"] == "active"
    assert {t["function"]["name"] for t in ep["tools"]} >= {n for n, _ in oracle_calls(instance)}
    calls = oracle_calls(instance)
    for name, args in calls[:-1]:
        if via_rest and name.startswith("fhir_"):
            r = rest(ep, name, args)
        elif via_rest:
            r = requests.post(f"{URL}/sandboxes/{ep['id']}/tools/{name}", json=args, headers=agent(ep))
        else:
            r = requests.post(ep["tool_url"].format(name=name), json=args, headers=agent(ep))
        assert r.status_code < 400, (instance, name, r.text)
    assert calls[-1][0] == "finish"
    done = requests.post(ep["finish_url"], json=calls[-1][1], headers=agent(ep))
    assert done.status_code == 200, done.text
    return instance, via_rest, ep, done.json()


def test_oracle_like_clients_get_the_oracles_grades_concurrently():
    instances = [i["id"] for i in requests.get(f"{URL}/scenarios", headers=OP).json()["instances"]]
    assert sorted(instances) == sorted(ORACLE_RESULTS) and len(instances) >= 89
    jobs = [(i, k % 2 == 1) for k, i in enumerate(instances)]
    with ThreadPoolExecutor(max_workers=8) as pool:
        outcomes = list(pool.map(oracle_like, jobs))
    for instance, via_rest, ep, done in outcomes:
        want = ORACLE_RESULTS[instance]
        # the agent learns that its episode ended, nothing of the grade (--agent-feedback none)
        assert done == {"id": ep["id"], "ended": True, "end": "finished"}, done
        shown = requests.get(f"{URL}/episodes/{ep['id']}", headers=agent(ep)).json()
        assert shown["status"] == "ended" and shown["steps"] == len(oracle_calls(instance))
        assert shown["result"] == done
        # the operator reads the whole grade
        result = graded(ep)
        assert (result["end"], result["success"], result["progress"]) == ("finished", want["success"], want["progress"]), instance
        assert result["grade"] == want["grade"], (instance, via_rest)


def test_concurrent_episodes_are_isolated():
    a, b = create("mab-lookup-001"), create("mab-lookup-001")
    assert a["fhir_base"] != b["fhir_base"] and (a["trial"], b["trial"]) == (1, 2)
    obs = {
        "resourceType": "Observation", "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "ISOLATION-TEST"}]},
        "subject": {"reference": "Patient/S6534835"}, "valueString": "only in episode a",
    }
    made = requests.post(f"{a['fhir_base']}/Observation", json=obs, headers=agent(a))
    assert made.status_code == 201, made.text
    find = "Observation?code=ISOLATION-TEST"
    assert requests.get(f"{a['fhir_base']}/{find}", headers=agent(a)).json()["total"] == 1
    assert requests.get(f"{b['fhir_base']}/{find}", headers=agent(b)).json()["total"] == 0
    assert requests.get(f"{URL}/fhir/{find}", headers=OP).json()["total"] == 0
    # a's token does not open b's sandbox, nor the operator's routes
    outcome(requests.get(f"{b['fhir_base']}/{find}", headers=agent(a)), 403, "only its own episode")
    outcome(requests.get(f"{URL}/episodes", headers=agent(a)), 403, "only its own episode")
    outcome(requests.get(f"{URL}/episodes"), 401, "Bearer")
    # ending a leaves b running; a's sandbox and token are gone
    gone = requests.delete(f"{URL}/episodes/{a['id']}", headers=OP).json()
    assert gone["end"] == "stopped" and gone["success"] is False
    assert requests.get(f"{b['fhir_base']}/Patient/S6534835", headers=agent(b)).status_code == 200
    outcome(requests.get(f"{a['fhir_base']}/Patient/S6534835", headers=agent(a)), 401, "live episode")
    outcome(requests.get(f"{a['fhir_base']}/Patient/S6534835", headers=OP), 404, a["id"])
    assert requests.delete(f"{URL}/episodes/{b['id']}", headers=OP).status_code == 200


def outcome(r, status, *words):
    assert r.status_code == status, r.text
    body = r.json()
    assert body["resourceType"] == "OperationOutcome", body
    text = json.dumps(body)
    for w in words:
        assert w in text, (w, text)


def test_bad_requests_get_operation_outcomes_and_lose_nothing():
    outcome(requests.post(f"{URL}/episodes", json={}, headers=OP), 400, "'instance'")
    outcome(requests.post(f"{URL}/episodes", json={"instance": "no-such-task"}, headers=OP), 404, "no-such-task")
    outcome(requests.post(f"{URL}/episodes", json={"instance": "mab-age-001", "mode": "bossy"}, headers=OP), 400, "bossy")
    outcome(requests.post(f"{URL}/episodes", json={"instance": "mab-age-001", "sede": 1}, headers=OP), 400, "sede")
    outcome(requests.post(f"{URL}/episodes", json={"instance": "mab-age-001", "seed": 5}, headers=OP), 400, "seed 5")
    outcome(requests.post(f"{URL}/episodes", data="{not json", headers={**OP, **JSON}), 400, "not valid JSON")
    # a body not declared JSON (what a web form or a text/plain fetch sends) changes nothing
    outcome(requests.post(f"{URL}/episodes", data='{"instance": "mab-age-001"}', headers=OP), 415, "application/json")
    outcome(requests.post(f"{URL}/episodes", data='{"instance": "mab-age-001"}', headers={**OP, "Content-Type": "text/plain"}), 415, "text/plain")
    outcome(requests.get(f"{URL}/episodes/ep999999", headers=OP), 404, "ep999999")
    ep = create("mab-age-001")
    me = agent(ep)
    outcome(requests.get(ep["tool_url"].replace("{name}", "x").replace("/tools/x", "/guidance"), headers=me), 409, "flat mode")
    outcome(requests.post(ep["tool_url"].format(name="fhir_search"), json={"resource_type": 7}, headers=me), 400, "resource_type")
    outcome(requests.post(ep["tool_url"].format(name="fhir_read"), data="{", headers={**me, **JSON}), 400, "not valid JSON")
    outcome(requests.post(ep["tool_url"].format(name="cha2ds2_vasc"), json={}, headers=me), 404, "no tool named 'cha2ds2_vasc'")
    outcome(requests.post(f"{ep['fhir_base']}/Observation", json={"resourceType": "Observation"}, headers=me), 422, "code")
    # failed calls are steps of the episode too (the agent made them: the bad search, the
    # unknown tool, the invalid create), but a body that is not JSON is no call at all
    assert requests.get(f"{URL}/episodes/{ep['id']}", headers=me).json()["steps"] == 3
    calls = oracle_calls("mab-age-001")
    for name, args in calls[:-1]:
        assert requests.post(ep["tool_url"].format(name=name), json=args, headers=me).status_code < 400
    done = requests.post(ep["finish_url"], json=calls[-1][1], headers=me)
    assert done.status_code == 200 and done.json()["end"] == "finished"
    outcome(requests.post(ep["finish_url"], json=calls[-1][1], headers=me), 409, "already ended")
    outcome(requests.post(ep["tool_url"].format(name="fhir_search"), json={"resource_type": "Patient"}, headers=me), 409, "has ended")


def test_a_web_page_cannot_drive_the_server_over_http():
    """What a browser would send: a simple text/plain POST, a foreign Origin, a rebound Host."""
    obs = {"resource_type": "Observation", "resource": {"resourceType": "Observation", "status": "final",
           "code": {"text": "csrf"}, "subject": {"reference": "Patient/S6534835"}}}
    body = json.dumps(obs)
    outcome(requests.post(f"{URL}/tools/fhir_create", data=body, headers={**OP, "Content-Type": "text/plain"}), 415, "application/json")
    outcome(requests.post(f"{URL}/tools/fhir_create", json=obs, headers={**OP, "Origin": "http://evil.example"}), 403, "evil.example")
    port = URL.rsplit(":", 1)[1]
    outcome(requests.get(f"{URL}/episodes", headers={**OP, "Host": f"evil.example:{port}"}), 421, "DNS rebinding")
    # without the token too: the browser refusal is what the page learns
    outcome(requests.post(f"{URL}/episodes", json={"instance": "mab-age-001"}, headers={"Origin": "http://evil.example"}), 403, "Origin")
    assert requests.get(f"{URL}/fhir/Observation?code:text=csrf", headers=OP).json()["total"] == 0


def test_an_episode_out_of_steps_can_only_finish():
    ep = create("mab-age-001")
    me = agent(ep)
    for _ in range(ep["max_steps"]):
        assert requests.get(f"{ep['fhir_base']}/Patient/S6534835", headers=me).status_code == 200
    outcome(requests.get(f"{ep['fhir_base']}/Patient/S6534835", headers=me), 429, "call finish")
    outcome(requests.post(ep["tool_url"].format(name="fhir_search"), json={"resource_type": "Patient"}, headers=me), 429, "call finish")
    assert requests.get(f"{URL}/episodes/{ep['id']}", headers=me).json()["steps"] == ep["max_steps"]
    # finishing through the sandbox's tool route: the tool's result, and that the episode ended
    done = requests.post(f"{URL}/sandboxes/{ep['id']}/tools/finish", json={"answer": None}, headers=me)
    assert done.status_code == 200 and done.json()["finished"] is True, done.text
    assert done.json()["episode"] == {"id": ep["id"], "ended": True, "end": "finished"}, done.text
    assert "grade" in graded(ep)
    # the record stays readable after the end, and reading it is no step
    assert requests.get(f"{ep['fhir_base']}/Patient/S6534835", headers=me).status_code == 200
    assert requests.get(f"{URL}/episodes/{ep['id']}", headers=me).json()["steps"] == ep["max_steps"] + 1


def test_guided_episodes_release_steps_without_leaking_a_branch():
    ep = create("dm-followup-001", mode="guided")
    me = agent(ep)
    first = requests.get(ep["guidance_url"], headers=me).json()
    assert first["next"] and not first["complete"] and not first["ended"]
    assert all(isinstance(s, str) for s in first["next"])
    calls = oracle_calls("dm-followup-001")
    for name, args in calls[:-1]:
        requests.post(ep["tool_url"].format(name=name), json=args, headers=me)
    before = requests.get(ep["guidance_url"], headers=me).json()
    assert before["next"] != first["next"]
    finish = requests.post(ep["tool_url"].format(name="finish"), json=calls[-1][1], headers=me)
    assert finish.status_code == 200 and finish.json()["episode"]["end"] == "finished"
    assert "success" not in finish.json()["episode"] and graded(ep)["success"] is True
    assert requests.get(ep["guidance_url"], headers=me).json()["ended"] is True


class StubModel(BaseHTTPRequestHandler):
    """An OpenAI-compatible chat endpoint that replies with the oracle's calls, one per turn."""

    calls = []

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        k = sum(1 for m in body["messages"] if m["role"] == "tool")
        name, args = self.calls[min(k, len(self.calls) - 1)]
        call = {"id": f"call_{k}", "type": "function", "function": {"name": name, "arguments": json.dumps(args)}}
        reply = {"choices": [{"index": 0, "finish_reason": "tool_calls",
                              "message": {"role": "assistant", "content": None, "tool_calls": [call]}}]}
        data = json.dumps(reply).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


def test_the_documented_example_agent_runs_an_episode_end_to_end():
    instance = "mab-k-001"
    StubModel.calls = oracle_calls(instance)
    stub = ThreadingHTTPServer(("127.0.0.1", 0), StubModel)
    threading.Thread(target=stub.serve_forever, daemon=True).start()
    try:
        for mode in ([], ["--guided"]):
            env = dict(os.environ, EMRGYM_URL=URL, OPENAI_BASE_URL=f"http://127.0.0.1:{stub.server_port}/v1")
            assert env["EMRGYM_TOKEN"]  # the example creates the episode as the operator
            out = subprocess.run([sys.executable, EXAMPLE, instance, *mode], env=env, capture_output=True, text=True, timeout=120)
            assert out.returncode == 0, out.stderr
            result = json.loads(out.stdout)
            assert result["instance"] == instance and result["end"] == "finished", result
            assert result["success"] is True and result["progress"] == 1.0, result
    finally:
        stub.shutdown()


def test_an_episode_left_open_is_recorded_as_abandoned_when_the_server_stops():
    """Runs last: the Rust side stops the server and finds this episode in the results."""
    ep = create("mab-lookup-001")
    assert requests.get(f"{ep['fhir_base']}/Patient/S6534835", headers=agent(ep)).status_code == 200
