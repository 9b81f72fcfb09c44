"""Interop: `emrgym export --format atif` read by third-party ATIF loaders.

Harbor's own validator (`harbor.utils.trajectory_validator`, PyPI `harbor`) is used when it can
be imported; `harbor` needs Python >= 3.12, so on older Pythons (CI's) the check uses PyPI
`atif` (independent Pydantic models of the same RFC, `extra="forbid"`). Started by
tests/integration/interop.rs with EMRGYM_BIN (the binary)."""

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
INSTANCES = ["dm-followup-001", "mab-k-001", "af-anticoag-001", "no-tool-001", "horizon-32-001"]


def load_with_third_party(path: Path) -> None:
    try:
        from harbor.utils.trajectory_validator import TrajectoryValidator
    except ImportError:
        from atif import Trajectory

        Trajectory.model_validate_json(path.read_text())
        return
    v = TrajectoryValidator()
    assert v.validate(str(path)), v.errors


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    exe = os.environ.get("EMRGYM_BIN") or shutil.which("emrgym")
    assert exe, "set EMRGYM_BIN to the emrgym binary"
    tmp = tmp_path_factory.mktemp("atif")
    args = [exe, "run", "--suite", str(REPO / "scenarios"), "--agent", "oracle", "--out", str(tmp / "run")]
    for i in INSTANCES:
        args += ["--instance", i]
    subprocess.run(args, check=True, capture_output=True, timeout=300)
    subprocess.run([exe, "export", str(tmp / "run"), "--format", "atif", "--out", str(tmp / "atif")], check=True, capture_output=True, timeout=300)
    return sorted((tmp / "atif").glob("*.json"))


def test_every_exported_trajectory_loads(exported):
    assert len(exported) == len(INSTANCES)
    for path in exported:
        load_with_third_party(path)


def test_the_loader_rejects_a_broken_trajectory(exported, tmp_path):
    data = json.loads(exported[0].read_text())
    data["steps"][0]["source"] = "robot"
    broken = tmp_path / "broken.json"
    broken.write_text(json.dumps(data))
    with pytest.raises((AssertionError, ValueError)):
        load_with_third_party(broken)
