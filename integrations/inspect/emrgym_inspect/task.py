"""The `emrgym` Inspect AI task: EMRGym scenario instances as samples, each run as one episode of
the episode API of `emrgym serve`, graded by EMRGym (docs/inspect.md).

    inspect eval emrgym_inspect/emrgym --model openai/gpt-4o-mini -T suite=quick
    inspect eval emrgym_inspect/emrgym --model ... -T family=mab_k_replete -T mode=guided -T url=http://127.0.0.1:8080
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import threading
from pathlib import Path
from typing import Any, Sequence

import anyio
from inspect_ai import Task, task
from inspect_ai.dataset import MemoryDataset, Sample
from inspect_ai.log import transcript
from inspect_ai.model import ChatMessageSystem, ChatMessageUser, execute_tools, get_model
from inspect_ai.scorer import CORRECT, INCORRECT, Metric, SampleScore, Score, Scorer, Target, accuracy, metric, scorer, stderr
from inspect_ai.solver import Generate, Solver, TaskState, solver
from inspect_ai.tool import ToolDef, ToolError, ToolParams

from emrgym_client import Client, EmrgymError, Episode, Instance, LocalServer

STORE_KEY = "emrgym"
BUILTIN_SUITES = ("full", "quick", "mab", "horizon")
MODES = ("flat", "guided", "goal")
logger = logging.getLogger(__name__)

_servers: dict[tuple, LocalServer] = {}
_servers_lock = threading.Lock()


def _close_servers() -> None:
    for s in _servers.values():
        s.close()


atexit.register(_close_servers)


def _names(value: str | Sequence[str] | None) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    return [str(v) for v in value]


def server_url(url: str | None = None, emrgym: str | None = None, scenarios: str | None = None, record: str | None = None, seed: int = 0) -> str:
    """The episode API to use: `url` (or env EMRGYM_URL) if given; otherwise an `emrgym serve`
    started here (binary `emrgym`, or env EMRGYM_BIN, on PATH), on loopback, for the life of
    this process, recording in `record` (default runs/inspect)."""
    url = url or os.environ.get("EMRGYM_URL")
    if url:
        return url.rstrip("/")
    key = (emrgym, str(scenarios), str(record), seed)
    with _servers_lock:
        if key not in _servers:
            _servers[key] = LocalServer(emrgym, suite=scenarios, record=record or "runs/inspect", seed=seed)
        return _servers[key].url


def select(instances: list[Instance], suite: str | None, family: list[str], instance: list[str], scenarios: str | None, mode: str = "flat") -> list[Instance]:
    """Filter by suite (a name), families and instance ids; unknown names are errors that name them.
    In goal mode, as `emrgym run --mode goal`: instances whose family has no goal are left out
    (with a warning), and naming one is an error that names it."""
    known = {i.id for i in instances}
    families = {i.family for i in instances}
    for f in family:
        if f not in families:
            raise ValueError(f"unknown family {f!r} (known: {', '.join(sorted(families))})")
    for i in instance:
        if i not in known:
            raise ValueError(f"unknown instance {i!r}")
    chosen = instances
    if suite:
        listed = Path(scenarios or "scenarios") / "suites" / f"{suite}.json"
        if listed.is_file():  # scenarios/suites/NAME.json: {"instances": [...]}
            ids = set(json.loads(listed.read_text())["instances"])
            chosen = [i for i in chosen if i.id in ids]
        elif suite == "full":
            pass
        elif suite in ("mab", "horizon"):
            chosen = [i for i in chosen if i.family.startswith(suite + "_")]
        elif suite == "quick":  # without the file: the first instance of every family but the horizon ones
            firsts: dict[str, Instance] = {}
            for i in sorted(chosen, key=lambda i: i.id):
                if not i.family.startswith("horizon_"):
                    firsts.setdefault(i.family, i)
            chosen = sorted(firsts.values(), key=lambda i: i.id)
        else:
            raise ValueError(f"unknown suite {suite!r} (no {listed}; built in: {', '.join(BUILTIN_SUITES)})")
    if family:
        chosen = [i for i in chosen if i.family in family]
    if instance:
        chosen = [i for i in chosen if i.id in instance]
    if mode == "goal":
        by_id = {i.id: i for i in instances}
        named = [f"family {f!r}" for f in family if not any(i.goal for i in instances if i.family == f)]
        named += [f"instance {i!r}" for i in instance if not by_id[i].goal]
        if named:
            raise ValueError(f"mode goal: no goal instruction for {', '.join(named)} (docs/suite.md, \"The goal condition\"); run it in flat or guided mode")
        left = sorted({i.family for i in chosen if not i.goal})
        if left:
            skipped = sum(1 for i in chosen if not i.goal)
            logger.warning("mode goal: skipping %d instances of %d families without a goal instruction: %s", skipped, len(left), ", ".join(left))
        chosen = [i for i in chosen if i.goal]
    return chosen


def dataset(url: str, token: str | None = None, suite: str | None = None, family: Sequence[str] = (), instance: Sequence[str] = (), scenarios: str | None = None, mode: str = "flat") -> MemoryDataset:
    """One Sample per instance of `GET /scenarios` (id = instance id) that `select` keeps."""
    with Client(url, token=token) as client:
        instances = select(client.scenarios(), suite, list(family), list(instance), scenarios, mode)
    if not instances:
        raise ValueError("no instance selected")
    samples = [
        Sample(
            id=i.id,
            input=f"EMRGym instance {i.id}",  # the solver puts the episode's own prompt in its place
            metadata={"family": i.family, "cohort": i.cohort, "now": i.now, "max_steps": i.max_steps, "goal": i.goal},
        )
        for i in instances
    ]
    return MemoryDataset(samples, name=f"emrgym-{suite or 'instances'}")


def episode_tools(episode: Episode) -> list[ToolDef]:
    """The episode's tools (its OpenAI function specs) as Inspect tools bound to its sandbox."""

    def bind(name: str):
        async def execute(**kwargs: Any) -> str:
            try:
                result = await anyio.to_thread.run_sync(episode.call_tool, name, kwargs)
            except EmrgymError as e:  # a failed call is an observation for the model (the OperationOutcome)
                raise ToolError(e.body) from None
            return result.text

        return execute

    return [
        ToolDef(bind(f["name"]), name=f["name"], description=f.get("description", ""), parameters=ToolParams.model_validate(f["parameters"]))
        for f in (t["function"] for t in episode.tools)
    ]


def split_prompt(episode: Episode) -> tuple[str, str]:
    """The prompt as `emrgym run` gives it to a model: the system part, and the task (user)."""
    user = episode.instruction + (f"\n\nContext: {episode.context}" if episode.context.strip() else "")
    if user and episode.prompt.endswith("\n\n" + user):
        return episode.prompt[: -len(user) - 2], user
    return episode.prompt, episode.instruction or "Do the task."


@solver
def emrgym_agent(url: str, token: str | None = None, mode: str = "flat", max_turns: int | None = None) -> Solver:
    """Creates an episode per sample and lets the model work through the episode's tools until it
    calls `finish` (or runs out of turns: the step limit plus 5, as `emrgym run`); the episode
    then ends (DELETE: graded `stopped` if unfinished) and its result goes to the store."""

    async def solve(state: TaskState, generate: Generate) -> TaskState:
        client = Client(url, token=token)
        ep = await anyio.to_thread.run_sync(client.create_episode, str(state.sample_id), mode)
        state.store.set(STORE_KEY, {"episode": ep.id, "trial": ep.trial, "mode": ep.mode, "fhir_base": ep.fhir_base})
        transcript().info({"emrgym_episode": ep.id, "instance": ep.instance, "trial": ep.trial, "mode": ep.mode, "fhir_base": ep.fhir_base}, source="emrgym")
        system, user = split_prompt(ep)
        state.messages = [ChatMessageSystem(content=system), ChatMessageUser(content=user)]
        tools = episode_tools(ep)
        state.tools = [t.as_tool() for t in tools]
        model = get_model()
        try:
            for _ in range(max_turns or ep.max_steps + 5):
                if ep.result is not None:
                    break  # `finish` was called
                if ep.mode == "guided":
                    steps = (await anyio.to_thread.run_sync(ep.guidance)).next
                    if steps:
                        label = "Next steps (any order)" if len(steps) > 1 else "Next step"
                        state.messages.append(ChatMessageUser(content=f"{label}: " + " | ".join(steps)))
                output = await model.generate(state.messages, tools)
                state.output = output
                state.messages.append(output.message)
                if output.message.tool_calls:
                    result = await execute_tools(state.messages, tools)
                    state.messages.extend(result.messages)
                else:
                    state.messages.append(ChatMessageUser(content="Use the tools, and call finish when you are done."))
        finally:
            result = await anyio.to_thread.run_sync(ep.close)  # the operator's answer: the whole result
            client.close()
            if result is not None:
                state.store.set(STORE_KEY, {**state.store.get(STORE_KEY), "result": result.raw, "grade": result.grade.raw if result.grade else None})
        return state

    return solve


@metric
def progress() -> Metric:
    """Mean EMRGym progress (the weighted share of subtasks passed)."""

    def compute(scores: list[SampleScore]) -> float:
        values = [float((s.score.metadata or {}).get("progress") or 0.0) for s in scores]
        return sum(values) / len(values) if values else 0.0

    return compute


@scorer(metrics=[accuracy(), stderr(), progress()])
def emrgym_scorer() -> Scorer:
    """EMRGym's grade: CORRECT when the episode succeeded; progress, failure classes and the
    per-node verdicts as metadata."""

    async def score(state: TaskState, target: Target) -> Score:
        got = state.store.get(STORE_KEY) or {}
        grade = got.get("grade")
        if not grade:
            return Score(value=INCORRECT, explanation="the episode has no grade", metadata={"episode": got.get("episode")})
        result = got.get("result") or {}
        failed = [n for n in grade.get("nodes", []) if n.get("verdict") != "passed"]
        explanation = "all subtasks passed" if not failed else "; ".join(
            f"{n.get('path') or '(root)'} {n.get('task')}: {n.get('verdict')}" + (f" [{n['class']}]" if n.get("class") else "") + (f" ({'; '.join(n['reasons'])})" if n.get("reasons") else "")
            for n in failed
        )
        calls = [c for m in state.messages if m.role == "assistant" for c in (m.tool_calls or []) if c.function == "finish"]
        return Score(
            value=CORRECT if grade.get("success") else INCORRECT,
            answer=json.dumps(calls[-1].arguments.get("answer")) if calls else None,
            explanation=explanation,
            metadata={
                "episode": got.get("episode"),
                "trial": got.get("trial"),
                "mode": got.get("mode"),
                "end": grade.get("end") or result.get("end"),
                "success": bool(grade.get("success")),
                "progress": grade.get("progress"),
                "primary": grade.get("primary"),
                "classes": grade.get("classes", []),
                "nodes": grade.get("nodes", []),
                "steps": grade.get("steps"),
                "run_dir": result.get("run_dir"),
            },
        )

    return score


@task
def emrgym(
    suite: str | None = None,
    family: str | list[str] | None = None,
    instance: str | list[str] | None = None,
    mode: str = "flat",
    url: str | None = None,
    token: str | None = None,
    emrgym: str | None = None,
    scenarios: str | None = None,
    record: str | None = None,
    seed: int = 0,
    max_turns: int | None = None,
) -> Task:
    """EMRGym scenarios as an Inspect task.

    Args:
      suite: a named suite: scenarios/suites/NAME.json when present, else full (all), mab or
        horizon (by family), quick (the first instance of each non-horizon family).
      family: only these families (a name, a comma-separated list, or a list).
      instance: only these instances.
      mode: flat (the protocol in prose), guided (plus the planner's steps) or goal (the family's
        goal only: what a clinician would ask; instances without one are left out).
      url: a running `emrgym serve` (env EMRGYM_URL); without it, one is started here.
      token: the operator token of that server (env EMRGYM_TOKEN).
      emrgym: the binary to start (env EMRGYM_BIN, else `emrgym` on PATH).
      scenarios: the scenario directory of a started server, and where suites/NAME.json is read
        (default ./scenarios when present).
      record: the run directory a started server records episodes in (default runs/inspect).
      seed: the seed of a started server (episodes are seeded as `emrgym run --seed`).
      max_turns: model turns per episode (default: the episode's step limit plus 5).
    """
    if mode not in MODES:
        raise ValueError(f"mode must be {', '.join(MODES[:-1])} or {MODES[-1]}, not {mode!r}")
    if scenarios is None and Path("scenarios").is_dir():
        scenarios = "scenarios"
    token = token or os.environ.get("EMRGYM_TOKEN")
    base = server_url(url, emrgym, scenarios, record, seed)
    data = dataset(base, token, suite, _names(family), _names(instance), scenarios, mode)
    return Task(
        dataset=data,
        solver=emrgym_agent(base, token, mode, max_turns),
        scorer=emrgym_scorer(),
        metadata={"emrgym_url": base, "mode": mode, "suite": suite},
    )
