"""Fixtures: the real `emrgym serve` (binary from EMRGYM_BIN, else `emrgym` on PATH) on the
repository's scenarios, and the oracle's calls from a real `emrgym run --agent oracle`.
Imports the client from its source directory, so no install is needed."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
REPO = HERE.parents[2]
SUITE = REPO / "scenarios"

from emrgym_client import Client, LocalServer  # noqa: E402


def binary() -> str:
    exe = os.environ.get("EMRGYM_BIN") or shutil.which("emrgym")
    if not exe:
        pytest.fail("set EMRGYM_BIN to the emrgym binary (or put emrgym on PATH)")
    return exe


@pytest.fixture(scope="session")
def emrgym_bin():
    return binary()


@pytest.fixture(scope="session")
def suite_dir():
    return SUITE


@pytest.fixture(scope="session")
def server(tmp_path_factory):
    with LocalServer(binary(), suite=SUITE, record=tmp_path_factory.mktemp("rec") / "episodes") as s:
        yield s


@pytest.fixture()
def client(server):
    with Client(server.url) as c:
        yield c


@pytest.fixture(scope="session")
def oracle_calls(tmp_path_factory):
    """instance -> the oracle's (tool, arguments) calls, the last one `finish` (seed 0, as the server's)."""
    cache = {}

    def calls(instance):
        if instance not in cache:
            out = tmp_path_factory.mktemp("oracle") / "run"
            subprocess.run([binary(), "run", "--suite", str(SUITE), "--agent", "oracle", "--seed", "0", "--instance", instance, "--out", str(out)],
                           check=True, capture_output=True, timeout=120)
            events = [json.loads(l) for l in (out / "trajectories" / f"{instance}.0.jsonl").read_text().splitlines()]
            cache[instance] = [(e["name"], e["arguments"]) for e in events if e.get("type") == "tool_call"]
        return cache[instance]

    return calls
