"""Interop: the official Python MCP SDK (PyPI `mcp`) as the client of `emrgym mcp` over stdio.

Started by tests/integration/external_agents.rs with EMRGYM_BIN (the emrgym binary),
EMRGYM_SUITE (the scenarios), EMRGYM_ORACLE_RUN (an `emrgym run --agent oracle` run directory
whose calls the client replays) and EMRGYM_WORK (a scratch directory for recordings).
"""

import json
import os
from pathlib import Path

import anyio
from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client

BIN = os.environ["EMRGYM_BIN"]
SUITE = os.environ["EMRGYM_SUITE"]
ORACLE = Path(os.environ["EMRGYM_ORACLE_RUN"])
WORK = Path(os.environ["EMRGYM_WORK"])


def oracle_calls(instance):
    events = [json.loads(l) for l in (ORACLE / "trajectories" / f"{instance}.0.jsonl").read_text().splitlines()]
    return [(e["name"], e["arguments"]) for e in events if e.get("type") == "tool_call"]


def oracle_result(instance):
    for line in (ORACLE / "results.jsonl").read_text().splitlines():
        r = json.loads(line)
        if r["instance"] == instance and r["trial"] == 0:
            return r
    raise KeyError(instance)


def results(record):
    return [json.loads(l) for l in (record / "results.jsonl").read_text().splitlines()]


def server(record, *args):
    return StdioServerParameters(
        command=BIN,
        args=["mcp", "--suite", SUITE, "--record", str(record), *args],
        env={"EMRGYM_LOG": "warn"},
    )


def text_of(result):
    return "\n".join(c.text for c in result.content if getattr(c, "type", "") == "text")


async def with_session(params, body):
    async with stdio_client(params) as streams:
        async with ClientSession(*streams) as session:
            init = await session.initialize()
            return await body(session, init)


def test_an_mcp_client_lists_calls_and_finishes_a_guided_episode():
    instance = "metformin-renal-001"
    record = WORK / "mcp-guided"

    async def body(session, init):
        assert init.server_info.name == "emrgym"
        oracle = oracle_calls(instance)
        tools = {t.name: t for t in (await session.list_tools()).tools}
        assert {"fhir_search", "fhir_read", "fhir_update", "ckd_epi_2021", "finish"} <= set(tools)
        assert all(t.input_schema["type"] == "object" and t.description for t in tools.values())
        assert {name for name, _ in oracle} <= set(tools)

        prompts = (await session.list_prompts()).prompts
        assert [p.name for p in prompts] == ["task"]
        task = (await session.get_prompt("task")).messages[0].content.text
        assert "metformin" in task.lower() and "finish" in task
        assert init.instructions == task

        uris = [str(r.uri) for r in (await session.list_resources()).resources]
        assert uris == ["emrgym://episode/instruction", "emrgym://episode/guidance"]
        guidance = (await session.read_resource("emrgym://episode/guidance")).contents[0].text
        assert guidance.startswith("Next step"), guidance

        last = None
        for name, args in oracle:
            last = await session.call_tool(name, args)
            assert not last.is_error, (name, text_of(last))
        # the tool's own result, as structured content, then the end of the episode
        assert last.structured_content == {"finished": True, "answer": oracle[-1][1].get("answer")}
        # the client learns that the episode ended, nothing of the grade (--agent-feedback none)
        ended = text_of(last)
        assert "Episode ended" in ended and '"end":"finished"' in ended, ended
        for leak in ("success", "progress", "grade", "expected"):
            assert leak not in ended, (leak, ended)

        after = await session.call_tool("fhir_search", {"resource_type": "Patient"})
        assert after.is_error and "has ended" in text_of(after)

    anyio.run(with_session, server(record, "--scenario", instance, "--mode", "guided"), body)
    rs = results(record)
    assert len(rs) == 1 and rs[0]["instance"] == instance and rs[0]["end"] == "finished"
    assert rs[0]["grade"] == oracle_result(instance)["grade"]
    assert rs[0]["success"] is True  # the grade went to the recording
    header = json.loads((record / "trajectories" / f"{instance}.0.jsonl").read_text().splitlines()[0])
    assert header["agent"] == "external" and header["mode"] == "guided"
    manifest = json.loads((record / "manifest.json").read_text())
    assert manifest["access"] == {"interface": "mcp", "agent_feedback": "none"}


def test_agent_feedback_progress_tells_success_and_progress_never_expected_values():
    record = WORK / "mcp-progress"

    async def body(session, _init):
        done = await session.call_tool("finish", {"answer": None})
        assert not done.is_error, text_of(done)
        ended = text_of(done)
        assert '"success":false' in ended and '"progress":' in ended, ended
        assert "grade" not in ended and "expected" not in ended, ended

    anyio.run(with_session, server(record, "--scenario", "mab-age-001", "--agent-feedback", "progress"), body)
    assert [r["end"] for r in results(record)] == ["finished"]


def test_tool_errors_are_results_and_a_disconnect_is_graded_as_stopped():
    record = WORK / "mcp-stopped"

    async def body(session, _init):
        bad = await session.call_tool("fhir_read", {"resource_type": "Patient", "id": "no-such-patient"})
        assert bad.is_error and bad.structured_content["status"] == 404
        invalid = await session.call_tool("fhir_search", {"resource_type": 7})
        assert invalid.is_error and invalid.structured_content["status"] == 400
        unknown = await session.call_tool("order_pizza", {})
        assert unknown.is_error and "no tool named 'order_pizza'" in text_of(unknown)
        # then the client goes away without calling finish

    anyio.run(with_session, server(record), body)
    rs = results(record)
    # no --scenario: the first instance by id with the fewest recorded episodes
    assert [(r["instance"], r["trial"], r["end"], r["success"]) for r in rs] == [("af-anticoag-001", 0, "stopped", False)]
    # a second launch goes on to the next instance
    anyio.run(with_session, server(record), lambda s, i: s.list_tools())
    assert [r["instance"] for r in results(record)] == ["af-anticoag-001", "af-anticoag-002"]
