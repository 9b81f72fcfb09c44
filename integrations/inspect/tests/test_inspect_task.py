"""The `emrgym` Inspect task end to end: the real Inspect AI (mockllm provider only) against the
real `emrgym serve`; EMRGym's grade as the score, the episode in both Inspect's log and
EMRGym's run directory."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from inspect_ai import eval as inspect_eval
from inspect_ai.log import read_eval_log
from inspect_ai.model import ChatMessageTool, ModelOutput, get_model

from emrgym_client import Instance
from emrgym_inspect import emrgym, select

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[2]
SOURCES = [str(HERE.parent), str(REPO / "clients" / "python")]
SUITE = REPO / "scenarios"


def run(task, model, tmp_path):
    [log] = inspect_eval(task, model=model, log_dir=str(tmp_path / "logs"), display="none")
    assert log.status == "success", log.error
    assert os.path.isfile(log.location)
    return read_eval_log(log.location)  # what is on disk


def results(record):
    return [json.loads(l) for l in (record / "results.jsonl").read_text().splitlines()]


def test_a_model_that_never_calls_a_tool_fails_and_is_recorded(server, tmp_path, emrgym_bin):
    log = run(emrgym(url=server.url, instance="mab-k-001", max_turns=2), "mockllm/model", tmp_path)
    [sample] = log.samples
    score = sample.scores["emrgym_scorer"]
    assert sample.id == "mab-k-001" and sample.metadata["family"] == "mab_k_replete"
    assert score.value == "I" and score.metadata["success"] is False and score.metadata["end"] == "stopped"
    assert any(n["verdict"] == "not_reached" for n in score.metadata["nodes"]) and "not_reached" in score.explanation
    assert log.results.scores[0].metrics["accuracy"].value == 0.0
    # the transcript: the episode's prompt, then the model's turns and our nudges
    assert sample.messages[0].role == "system" and "electronic health record" in sample.messages[0].text
    assert "S2823623" in sample.messages[1].text and "S2823623" not in sample.messages[0].text
    assert "Default output from mockllm" in sample.messages[2].text
    info = [e for e in sample.events if e.event == "info" and e.source == "emrgym"]
    assert info and info[0].data["emrgym_episode"] == score.metadata["episode"]
    # EMRGym recorded the same episode in its run directory, and `emrgym report` reads it
    line = next(r for r in results(server.record) if r["instance"] == "mab-k-001" and r["trial"] == score.metadata["trial"])
    assert line["end"] == "stopped" and line["success"] is False
    assert score.metadata["run_dir"] == str(server.record)
    out = subprocess.run([emrgym_bin, "report", str(server.record)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "agent external" in out.stdout and "mab_k_replete" in out.stdout, out.stdout + out.stderr


def scripted(calls, seen):
    """A mockllm script: the oracle's calls, one per turn; `seen` keeps each turn's input."""
    outputs = iter([ModelOutput.for_tool_call("mockllm/model", name, args) for name, args in calls])

    def reply(input, tools, tool_choice, config):
        seen.append((list(input), [t.name for t in tools]))
        return next(outputs)

    return reply


def test_a_scripted_model_making_the_oracles_calls_passes_in_guided_mode(server, tmp_path, oracle_calls):
    calls = oracle_calls("dm-followup-001")
    seen = []
    model = get_model("mockllm/model", custom_outputs=scripted(calls, seen))
    log = run(emrgym(url=server.url, instance="dm-followup-001", mode="guided"), model, tmp_path)
    [sample] = log.samples
    score = sample.scores["emrgym_scorer"]
    assert score.value == "C", score.explanation
    assert score.metadata["success"] is True and score.metadata["progress"] == 1.0 and score.metadata["end"] == "finished"
    assert all(n["verdict"] == "passed" for n in score.metadata["nodes"]) and score.metadata["classes"] == []
    assert score.answer == json.dumps(calls[-1][1]["answer"]) and score.metadata["mode"] == "guided"
    assert log.results.scores[0].metrics["accuracy"].value == 1.0 and log.results.scores[0].metrics["progress"].value == 1.0
    # the model got the episode's tools, and guidance released as it went (guided mode)
    assert len(seen) == len(calls) and {"fhir_search", "fhir_create", "finish"} <= set(seen[0][1])
    guidance = [m.text for m in sample.messages if m.role == "user" and m.text.startswith("Next step")]
    assert len(guidance) >= 2 and guidance[0] != guidance[-1]
    tool_messages = [m for m in sample.messages if isinstance(m, ChatMessageTool)]
    assert len(tool_messages) == len(calls) and all(m.error is None for m in tool_messages)
    line = next(r for r in results(server.record) if r["instance"] == "dm-followup-001" and r["trial"] == score.metadata["trial"])
    assert line["success"] is True and line["grade"]["nodes"] == score.metadata["nodes"]


def test_a_failed_tool_call_is_an_observation_and_a_step(server, tmp_path, oracle_calls):
    calls = [("fhir_search", {"resource_type": "Observation", "params": {"bogus": "x"}})] + oracle_calls("mab-k-001")
    seen = []
    model = get_model("mockllm/model", custom_outputs=scripted(calls, seen))
    [sample] = run(emrgym(url=server.url, instance="mab-k-001"), model, tmp_path).samples
    first = next(m for m in sample.messages if isinstance(m, ChatMessageTool))
    assert first.error is not None and "bogus" in first.error.message and "OperationOutcome" in first.error.message
    score = sample.scores["emrgym_scorer"]
    assert score.metadata["steps"] == len(calls)  # the failed search counted as a step, as in EMRGym


def test_the_inspect_cli_starts_its_own_server_and_the_log_dumps(emrgym_bin, tmp_path):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(SOURCES + [os.environ.get("PYTHONPATH", "")]), INSPECT_LOG_DIR=str(tmp_path / "logs"))
    record = tmp_path / "rec"
    task = REPO / "integrations" / "inspect" / "emrgym_inspect" / "task.py"
    out = subprocess.run(
        [sys.executable, str(HERE / "inspect_offline.py"), "eval", f"{task}@emrgym", "--model", "mockllm/model", "--display", "none",
         "-T", f"emrgym={emrgym_bin}", "-T", f"scenarios={SUITE}", "-T", f"record={record}",
         "-T", "suite=mab", "-T", "instance=mab-age-001,mab-a1c-001", "-T", "max_turns=1"],
        env=env, capture_output=True, text=True, timeout=180, cwd=tmp_path,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    [log_file] = list((tmp_path / "logs").glob("*.eval"))
    dump = subprocess.run([sys.executable, str(HERE / "inspect_offline.py"), "log", "dump", str(log_file)], capture_output=True, text=True, timeout=120)
    assert dump.returncode == 0, dump.stderr
    log = json.loads(dump.stdout)
    samples = sorted(log["samples"], key=lambda s: s["id"])
    assert [s["id"] for s in samples] == ["mab-a1c-001", "mab-age-001"]
    for sample in samples:
        assert sample["scores"]["emrgym_scorer"]["value"] == "I"
        assert [m["role"] for m in sample["messages"][:3]] == ["system", "user", "assistant"]
    lines = [json.loads(l) for l in (record / "results.jsonl").read_text().splitlines()]
    assert sorted((l["instance"], l["end"]) for l in lines) == [("mab-a1c-001", "stopped"), ("mab-age-001", "stopped")]
    episodes = {s["scores"]["emrgym_scorer"]["metadata"]["episode"] for s in samples}
    assert len(episodes) == 2  # one episode (sandbox) per sample


INSTANCES = [Instance(i, f, "demo", "", [], 4, {}) for i, f in [
    ("mab-k-001", "mab_k_replete"), ("mab-k-002", "mab_k_replete"), ("dm-followup-001", "diabetes_followup"),
    ("horizon-2-001", "horizon_mrn_2"), ("af-001", "af_anticoagulation"),
]]


def test_selection_by_suite_family_and_instance(tmp_path):
    ids = lambda chosen: [i.id for i in chosen]  # noqa: E731
    assert ids(select(INSTANCES, "full", [], [], str(tmp_path))) == ids(INSTANCES)
    assert ids(select(INSTANCES, "mab", [], [], str(tmp_path))) == ["mab-k-001", "mab-k-002"]
    assert ids(select(INSTANCES, "horizon", [], [], str(tmp_path))) == ["horizon-2-001"]
    assert ids(select(INSTANCES, "quick", [], [], str(tmp_path))) == ["af-001", "dm-followup-001", "mab-k-001"]
    assert ids(select(INSTANCES, None, ["mab_k_replete"], ["mab-k-002"], None)) == ["mab-k-002"]
    (tmp_path / "suites").mkdir()
    (tmp_path / "suites" / "quick.json").write_text(json.dumps({"name": "quick", "instances": ["mab-k-002", "af-001"]}))
    assert ids(select(INSTANCES, "quick", [], [], str(tmp_path))) == ["mab-k-002", "af-001"]  # the file wins
    with pytest.raises(ValueError, match="unknown suite 'quik'.*built in: full, quick, mab, horizon"):
        select(INSTANCES, "quik", [], [], str(tmp_path))
    with pytest.raises(ValueError, match="unknown family 'mab_k'.*mab_k_replete"):
        select(INSTANCES, None, ["mab_k"], [], None)
    with pytest.raises(ValueError, match="unknown instance 'mab-k-9'"):
        select(INSTANCES, None, [], ["mab-k-9"], None)


def test_goal_mode_runs_only_instances_with_a_goal_and_names_one_without(server):
    from emrgym_client import Client

    with Client(server.url) as client:
        served = {i.id: i for i in client.scenarios()}
    # GET /scenarios says which instances have a goal (docs/suite.md: admission_med_review has none)
    assert served["dm-followup-001"].goal is True and served["dm-followup-001"].raw["goal"] is True
    no_goal = next(i for i in served.values() if i.family == "admission_med_review")
    assert no_goal.goal is False
    everything = list(served.values())
    kept = select(everything, None, [], [], None, "goal")
    assert kept and all(i.goal for i in kept) and no_goal.id not in {i.id for i in kept}
    assert len(select(everything, None, [], [], None, "flat")) == len(everything)
    with pytest.raises(ValueError, match=f"no goal instruction for instance '{no_goal.id}'"):
        select(everything, None, [], [no_goal.id], None, "goal")
    with pytest.raises(ValueError, match="no goal instruction for family 'admission_med_review'"):
        emrgym(url=server.url, family="admission_med_review", mode="goal")


def test_a_scripted_model_making_the_oracles_calls_passes_in_goal_mode_and_reads_the_goal(server, tmp_path, oracle_calls):
    family = json.loads((SUITE / "diabetes_followup.json").read_text())
    goal_text, flat_text = family["goal"]["instruction"], family["instruction"]
    calls = oracle_calls("dm-followup-001")
    seen = []
    model = get_model("mockllm/model", custom_outputs=scripted(calls, seen))
    log = run(emrgym(url=server.url, instance="dm-followup-001", mode="goal"), model, tmp_path)
    [sample] = log.samples
    score = sample.scores["emrgym_scorer"]
    assert score.value == "C", score.explanation
    assert score.metadata["mode"] == "goal" and score.metadata["progress"] == 1.0
    assert sample.metadata["goal"] is True
    task_text = sample.messages[1].text
    assert "surveillance up to date" in task_text and "surveillance up to date" in goal_text, task_text
    assert "order one if it is missing" not in task_text and "order one if it is missing" in flat_text, task_text
    assert not any(m.text.startswith("Next step") for m in sample.messages if m.role == "user"), "no guidance in goal mode"
    line = next(r for r in results(server.record) if r["instance"] == "dm-followup-001" and r["trial"] == score.metadata["trial"])
    assert line["success"] is True


def test_bad_task_arguments_are_named(server):
    with pytest.raises(ValueError, match="mode must be flat, guided or goal, not 'bossy'"):
        emrgym(url=server.url, mode="bossy")
    with pytest.raises(ValueError, match="unknown family 'nope'"):
        emrgym(url=server.url, family="nope")
