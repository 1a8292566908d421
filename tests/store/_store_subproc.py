"""Run small Python scripts in a child process that can import widthscan from this tree."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import widthscan.store

SRC_ROOT = Path(widthscan.store.__file__).resolve().parents[2]


def child_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(SRC_ROOT), env.get("PYTHONPATH")) if p)
    return env


def spawn(script: str, *args: str) -> subprocess.Popen[str]:
    """Start ``python -c script *args`` with line-buffered text pipes."""
    return subprocess.Popen(
        [sys.executable, "-c", script, *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        bufsize=1,
        env=child_env(),
    )


def expect_line(proc: subprocess.Popen[str], want: str) -> str:
    """Read stdout until a line starting with ``want``; fail with the child's stderr if it dies."""
    assert proc.stdout is not None
    while True:
        line = proc.stdout.readline()
        if not line:
            proc.wait(timeout=10)
            err = proc.stderr.read() if proc.stderr else ""
            raise AssertionError(f"child exited ({proc.returncode}) before {want!r}:\n{err}")
        if line.startswith(want):
            return line.strip()
