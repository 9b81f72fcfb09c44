"""Interop: the official Python MCP SDK's streamable HTTP client on the `/mcp` endpoint of a
running `emrgym serve`: one server, several MCP sessions at once, each its own episode.

Started by tests/integration/external_agents.rs with EMRGYM_URL (the server), EMRGYM_TOKEN (its
operator token), EMRGYM_RECORD (its recording directory), EMRGYM_ORACLE_RUN (an `emrgym run
--agent oracle` run directory whose calls the clients replay; seed 0, as the server's). The
server runs with --max-open-episodes-per-instance 2.
"""

import json
import os
import time
from pathlib import Path

import anyio
import httpx2
import pytest
import requests
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError as McpError

URL = os.environ["EMRGYM_URL"]
TOKEN = os.environ["EMRGYM_TOKEN"]
RECORD = Path(os.environ["EMRGYM_RECORD"])
ORACLE = Path(os.environ["EMRGYM_ORACLE_RUN"])
OP = {"Authorization": f"Bearer {TOKEN}"}
INIT = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "raw", "version": "0"}},
}
ACCEPT = {"Accept": "application/json, text/event-stream"}


def oracle_calls(instance):
    events = [json.loads(l) for l in (ORACLE / "trajectories" / f"{instance}.0.jsonl").read_text().splitlines()]
    return [(e["name"], e["arguments"]) for e in events if e.get("type") == "tool_call"]


ORACLE_RESULTS = {
    r["instance"]: r
    for r in (json.loads(l) for l in (ORACLE / "results.jsonl").read_text().splitlines())
    if r["trial"] == 0
}


def results():
    path = RECORD / "results.jsonl"
    return [json.loads(l) for l in path.read_text().splitlines()] if path.exists() else []


def wait_for(done, failure, timeout=20):
    """Poll `done()` until it holds; past `timeout` seconds fail with `failure()`."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if done():
            return
        time.sleep(0.1)
    raise AssertionError(failure())


def wait_for_results(n, timeout=20):
    """The recording once it holds `n` episodes (a closed session is recorded in the background)."""
    wait_for(lambda: len(results()) >= n, lambda: f"the recording holds {len(results())} episodes, not {n}", timeout)
    return results()


def text_of(result):
    return "\n".join(c.text for c in result.content if getattr(c, "type", "") == "text")


async def session_at(query, body, headers=OP):
    """Open an MCP session at /mcp?query as the operator, run body(session, init), close it."""
    async with httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(30, read=300)) as http:
        async with streamable_http_client(f"{URL}/mcp?{query}", http_client=http) as (read, write):
            async with ClientSession(read, write) as session:
                init = await session.initialize()
                return await body(session, init)


def leaves(e):
    """The exceptions inside (task groups wrap them in groups)."""
    if isinstance(e, BaseExceptionGroup):
        return [x for sub in e.exceptions for x in leaves(sub)]
    return [e]


def outcome(r, status, *words):
    assert r.status_code == status, r.text
    body = r.json()
    assert body["resourceType"] == "OperationOutcome", body
    text = json.dumps(body)
    for w in words:
        assert w in text, (w, text)


def test_concurrent_sessions_replay_the_oracle_and_are_graded_and_recorded():
    instances = ["metformin-renal-001", "mab-age-001", "af-anticoag-001"]
    ended = {}

    async def replay(instance, mode):
        async def body(session, init):
            assert init.server_info.name == "emrgym" and init.instructions
            tools = {t.name for t in (await session.list_tools()).tools}
            calls = oracle_calls(instance)
            assert {n for n, _ in calls} <= tools
            last = None
            for name, args in calls:
                last = await session.call_tool(name, args)
                assert not last.is_error, (instance, name, text_of(last))
            ended[instance] = text_of(last)

        await session_at(f"instance={instance}&mode={mode}", body)

    async def main():
        async with anyio.create_task_group() as tg:
            for k, instance in enumerate(instances):
                tg.start_soon(replay, instance, "guided" if k == 0 else "flat")

    anyio.run(main)
    for instance, text in ended.items():
        # the client learns that its episode ended, nothing of the grade (--agent-feedback none)
        assert "Episode ended" in text and '"end":"finished"' in text, text
        for leak in ("success", "progress", "grade", "expected"):
            assert leak not in text, (leak, text)
    rs = wait_for_results(3)
    got = {r["instance"]: r for r in rs}
    assert sorted(got) == sorted(instances)
    for instance in instances:
        r, want = got[instance], ORACLE_RESULTS[instance]
        assert (r["trial"], r["end"]) == (0, "finished")
        assert (r["success"], r["progress"], r["grade"]) == (want["success"], want["progress"], want["grade"]), instance
    header = json.loads((RECORD / "trajectories" / "metformin-renal-001.0.jsonl").read_text().splitlines()[0])
    assert header["agent"] == "external" and header["mode"] == "guided"


def test_sessions_are_isolated_budgeted_and_an_unfinished_one_is_abandoned():
    instance = "af-anticoag-002"
    obs = {
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "ISOLATION-TEST"}]},
        "subject": {"reference": "Patient/S2143879"},  # the instance's patient
        "valueString": "only in session a",
    }
    find = {"resource_type": "Observation", "params": {"code": "ISOLATION-TEST"}}
    before = len(results())
    a_wrote, b_checked = anyio.Event(), anyio.Event()
    seen = {}

    async def a(session, _init):
        made = await session.call_tool("fhir_create", {"resource_type": "Observation", "resource": obs})
        assert not made.is_error, text_of(made)
        seen["a"] = (await session.call_tool("fhir_search", find)).structured_content["total"]
        a_wrote.set()
        await b_checked.wait()
        # then session a goes away without finishing

    async def b(session, _init):
        await a_wrote.wait()
        seen["b"] = (await session.call_tool("fhir_search", find)).structured_content["total"]
        # a third session of the instance is over --max-open-episodes-per-instance 2
        r = await anyio.to_thread.run_sync(
            lambda: requests.post(f"{URL}/mcp?instance={instance}", json=INIT, headers={**OP, **ACCEPT})
        )
        outcome(r, 429, "max-open-episodes-per-instance")
        # the operator sees both episodes open, each with its own sandbox
        listed = await anyio.to_thread.run_sync(lambda: requests.get(f"{URL}/episodes", headers=OP).json())
        mine = [e for e in listed["episodes"] if e["instance"] == instance and e["status"] == "active"]
        assert len(mine) == 2, listed
        b_checked.set()
        done = await session.call_tool("finish", {"answer": None})
        assert not done.is_error and '"end":"finished"' in text_of(done)

    async def main():
        async with anyio.create_task_group() as tg:
            tg.start_soon(session_at, f"instance={instance}", a)
            tg.start_soon(session_at, f"instance={instance}", b)

    anyio.run(main)
    assert seen == {"a": 1, "b": 0}
    # the operator's FHIR base never saw the write either
    assert requests.get(f"{URL}/fhir/Observation?code=ISOLATION-TEST", headers=OP).json()["total"] == 0
    rs = wait_for_results(before + 2)[before:]
    assert sorted((r["instance"], r["end"]) for r in rs) == [(instance, "abandoned"), (instance, "finished")]
    # a closed session's episode leaves the server's table (in the background, as it is
    # recorded: the client's DELETE returns before the server has dropped the session)
    wait_for(
        lambda: not [e for e in requests.get(f"{URL}/episodes", headers=OP).json()["episodes"] if e["instance"] == instance],
        lambda: f"the episodes of {instance} are still listed: {requests.get(f'{URL}/episodes', headers=OP).json()}",
    )


def test_without_an_instance_a_session_gets_the_least_run_one():
    ids = sorted(i["id"] for i in requests.get(f"{URL}/scenarios", headers=OP).json()["instances"])
    used = {r["instance"] for r in results()}
    want = next(i for i in ids if i not in used)
    before = len(results())

    async def body(session, _init):
        uris = [str(r.uri) for r in (await session.list_resources()).resources]
        assert uris == ["emrgym://episode/instruction", "emrgym://episode/guidance"]

    anyio.run(session_at, "mode=guided", body)
    rs = wait_for_results(before + 1)
    assert (rs[-1]["instance"], rs[-1]["end"]) == (want, "abandoned")


def test_an_episode_token_opens_mcp_sessions_of_its_own_episode():
    """Least privilege: the operator opens the episode; the agent holds only its token and
    talks MCP to that episode (the session does not own it: it stays open when the session
    closes, and the operator ends it)."""
    ep = requests.post(f"{URL}/episodes", json={"instance": "mab-age-001", "mode": "guided"}, headers=OP).json()
    agent = {"Authorization": f"Bearer {ep['token']}"}

    async def look(session, init):
        assert "S2874099" in init.instructions
        r = await session.call_tool("fhir_read", {"resource_type": "Patient", "id": "S2874099"})
        return r.is_error

    anyio.run(session_at, "", look, agent)
    shown = requests.get(f"{URL}/episodes/{ep['id']}", headers=OP).json()
    assert (shown["status"], shown["steps"]) == ("active", 1), shown

    async def finish(session, _init):
        done = await session.call_tool("finish", {"answer": None})
        return text_of(done)

    text = anyio.run(session_at, "instance=mab-age-001&mode=guided", finish, agent)
    assert '"end":"finished"' in text and "grade" not in text and "success" not in text, text
    result = requests.get(f"{URL}/episodes/{ep['id']}", headers=OP).json()["result"]
    assert result["end"] == "finished" and "grade" in result

    # a session the operator opened is no door for an episode token, even with its id
    other = requests.post(f"{URL}/episodes", json={"instance": "mab-age-001"}, headers=OP).json()
    init = requests.post(f"{URL}/mcp?instance=mab-age-002", json=INIT, headers={**OP, **ACCEPT})
    sid = {"Mcp-Session-Id": init.headers["mcp-session-id"], **ACCEPT}
    assert len(sid["Mcp-Session-Id"]) == 36  # a UUID
    note = {"jsonrpc": "2.0", "method": "notifications/initialized"}
    assert requests.post(f"{URL}/mcp", json=note, headers={**OP, **sid}).status_code == 202
    ask = {"jsonrpc": "2.0", "id": 2, "method": "tools/list"}
    theirs = requests.post(f"{URL}/mcp", json=ask, headers={"Authorization": f"Bearer {other['token']}", **sid})
    assert "another episode's" in theirs.text and "fhir_search" not in theirs.text, theirs.text
    assert "fhir_search" in requests.post(f"{URL}/mcp", json=ask, headers={**OP, **sid}).text
    assert requests.delete(f"{URL}/mcp", headers={**OP, **sid}).status_code < 300
    for e in (ep, other):
        assert requests.delete(f"{URL}/episodes/{e['id']}", headers=OP).status_code == 200


def test_bad_sessions_are_refused_with_clear_errors():
    # an unknown instance: an OperationOutcome before the protocol starts ...
    r = requests.post(f"{URL}/mcp?instance=no-such-instance", json=INIT, headers={**OP, **ACCEPT})
    outcome(r, 404, "no scenario instance 'no-such-instance'")
    # ... which the SDK's client reports as a failed initialize
    with pytest.raises(BaseException) as err:
        anyio.run(session_at, "instance=no-such-instance", lambda s, i: s.list_tools())
    assert any(isinstance(e, McpError) for e in leaves(err.value)), err.value
    outcome(requests.post(f"{URL}/mcp?mode=chaotic", json=INIT, headers={**OP, **ACCEPT}), 400, "'chaotic' is not flat, guided, goal or outline")
    outcome(requests.post(f"{URL}/mcp?scenario=x", json=INIT, headers={**OP, **ACCEPT}), 400, "unknown parameter 'scenario'")
    # the guard: the operator's token, the Host and Origin checks
    outcome(requests.post(f"{URL}/mcp", json=INIT, headers=ACCEPT), 401, "Bearer")
    outcome(requests.post(f"{URL}/mcp", json=INIT, headers={**OP, **ACCEPT, "Origin": "http://evil.example"}), 403, "evil.example")
    outcome(requests.post(f"{URL}/mcp", json=INIT, headers={**OP, **ACCEPT, "Host": "evil.example"}), 421, "rebinding")
    # an episode token opens MCP sessions of its own episode only
    ep = requests.post(f"{URL}/episodes", json={"instance": "mab-age-001"}, headers=OP).json()
    agent = {"Authorization": f"Bearer {ep['token']}"}
    outcome(requests.post(f"{URL}/mcp?instance=mab-lookup-001", json=INIT, headers={**agent, **ACCEPT}), 403, "its own episode")
    outcome(requests.post(f"{URL}/mcp?mode=guided", json=INIT, headers={**agent, **ACCEPT}), 403, "its own episode")
    assert requests.delete(f"{URL}/episodes/{ep['id']}", headers=OP).status_code == 200
    outcome(requests.post(f"{URL}/mcp", json=INIT, headers={**agent, **ACCEPT}), 401, "live episode")
    # an unknown session id
    r = requests.post(f"{URL}/mcp", json={"jsonrpc": "2.0", "id": 2, "method": "tools/list"},
                      headers={**OP, **ACCEPT, "Mcp-Session-Id": "not-a-session"})
    assert r.status_code == 404, r.text
