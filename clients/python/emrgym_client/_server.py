"""Start a local `emrgym serve` (for tests, and for harnesses that own their server)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import threading
from pathlib import Path
from typing import Sequence


class LocalServer:
    """A child `emrgym serve --port 0` on loopback; `url` is its root (no `/fhir`).

        with LocalServer(suite="scenarios", record="runs/episodes") as server:
            client = Client(server.url)
    """

    def __init__(
        self,
        binary: str | None = None,
        suite: str | os.PathLike | None = None,
        record: str | os.PathLike | None = None,
        seed: int | None = 0,
        args: Sequence[str] = (),
        startup_timeout: float = 60.0,
    ):
        exe = binary or os.environ.get("EMRGYM_BIN") or shutil.which("emrgym")
        if not exe or not (Path(exe).exists() or shutil.which(exe)):
            raise FileNotFoundError(f"no emrgym binary: {binary or os.environ.get('EMRGYM_BIN') or 'emrgym'} (put it on PATH or set EMRGYM_BIN)")
        cmd = [exe, "serve", "--port", "0"]
        if seed is not None:
            cmd += ["--seed", str(seed)]
        if suite is not None:
            cmd += ["--suite", str(suite)]
        if record is not None:
            cmd += ["--record", str(record)]
        cmd += list(args)
        self.command = cmd
        self.record = Path(record) if record is not None else None
        self.process = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.lines: list[str] = []
        found = threading.Event()
        self.url = ""

        def read() -> None:  # drain stdout for the server's whole life
            assert self.process.stdout is not None
            for line in self.process.stdout:
                self.lines.append(line.rstrip("\n"))
                if not self.url:
                    for word in line.split():
                        if word.startswith("http://") and word.endswith("/fhir"):
                            self.url = word[: -len("/fhir")]
                            found.set()
            found.set()

        self.stderr: list[str] = []

        def read_err() -> None:
            assert self.process.stderr is not None
            for line in self.process.stderr:
                self.stderr.append(line.rstrip("\n"))

        threading.Thread(target=read, daemon=True).start()
        threading.Thread(target=read_err, daemon=True).start()
        found.wait(startup_timeout)
        if not self.url:
            self.close()
            raise RuntimeError(f"{' '.join(cmd)} did not announce its URL: {' | '.join(self.lines + self.stderr)[-2000:]}")

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)  # graceful: the server flushes its run directory
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def __enter__(self) -> "LocalServer":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
