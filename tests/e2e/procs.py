"""Starting and stopping the harness's own services (moto, cargo lambda watch): each runs in its own
process group, logs to a file, and is stopped by its PID at exit, never by name."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path


class HarnessError(Exception):
    """A failed assertion or a broken service: the harness stops with a non-zero status."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Service:
    def __init__(self, name: str, argv: list[str], log: Path, env: dict[str, str] | None = None, cwd: Path | None = None):
        self.name = name
        self.log_path = log
        self._log = open(log, "ab")
        self.proc = subprocess.Popen(
            argv,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            cwd=cwd,
            start_new_session=True,  # own process group: stop() ends it and its children only
        )

    def alive(self) -> bool:
        return self.proc.poll() is None

    def wait_http(self, url: str, timeout: float, accept_status: tuple[int, ...] = (200,)) -> None:
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            if not self.alive():
                raise HarnessError(f"{self.name} exited with {self.proc.returncode}; see {self.log_path}")
            try:
                with urllib.request.urlopen(url, timeout=2) as response:
                    if response.status in accept_status:
                        return
            except urllib.error.HTTPError as e:
                if e.code in accept_status:
                    return
                last = str(e)
            except OSError as e:
                last = str(e)
            time.sleep(0.2)
        raise HarnessError(f"{self.name} did not answer {url} within {timeout:.0f}s ({last}); see {self.log_path}")

    def stop(self) -> None:
        if self.alive():
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.proc.wait(timeout=10)
        self._log.close()
