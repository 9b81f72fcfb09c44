"""Fixtures: the real `emrgym serve` (EMRGYM_BIN, else `emrgym` on PATH) on the repository's
scenarios, and the oracle's calls from a real `emrgym run --agent oracle`. Imports
emrgym_inspect and emrgym_client from their source directories (no install needed) and keeps
Inspect offline: only the mockllm provider, logs in a temporary directory."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[2]
SOURCES = [str(HERE.parent), str(REPO / "clients" / "python")]
sys.path[:0] = SOURCES
SUITE = REPO / "scenarios"

from emrgym_client import LocalServer  # noqa: E402


@pytest.fixture(scope="session")
def emrgym_bin():
    exe = os.environ.get("EMRGYM_BIN") or shutil.which("emrgym")
    if not exe:
        pytest.fail("set EMRGYM_BIN to the emrgym binary (or put emrgym on PATH)")
    return exe


@pytest.fixture(scope="session")
def server(emrgym_bin, tmp_path_factory):
    record = tmp_path_factory.mktemp("rec") / "inspect"
    with LocalServer(emrgym_bin, suite=SUITE, record=record) as s:
        yield s


@pytest.fixture(autouse=True)
def offline_inspect(tmp_path, monkeypatch):
    import inspect_offline  # token counts without tiktoken's download  # noqa: F401

    monkeypatch.setenv("INSPECT_LOG_DIR", str(tmp_path / "logs"))
    monkeypatch.delenv("EMRGYM_URL", raising=False)
    monkeypatch.delenv("INSPECT_EVAL_MODEL", raising=False)


@pytest.fixture(scope="session")
def oracle_calls(emrgym_bin, tmp_path_factory):
    cache = {}

    def calls(instance):
        if instance not in cache:
            out = tmp_path_factory.mktemp("oracle") / "run"
            subprocess.run([emrgym_bin, "run", "--suite", str(SUITE), "--agent", "oracle", "--seed", "0", "--instance", instance, "--out", str(out)],
                           check=True, capture_output=True, timeout=120)
            events = [json.loads(l) for l in (out / "trajectories" / f"{instance}.0.jsonl").read_text().splitlines()]
            cache[instance] = [(e["name"], e["arguments"]) for e in events if e.get("type") == "tool_call"]
        return cache[instance]

    return calls
