import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest
from _store_subproc import expect_line, spawn

from widthscan.store import SweepLock, SweepLockedError, lock_holder
from widthscan.store import lock as lock_mod

HOLDER = """
import sys
from widthscan.store import SweepLock
lock = SweepLock(sys.argv[1])
lock.acquire()
print("locked", flush=True)
sys.stdin.readline()
lock.release()
print("released", flush=True)
sys.stdin.readline()
"""


def _close(proc):
    for stream in (proc.stdin, proc.stdout, proc.stderr):
        stream.close()


def test_second_process_is_refused_then_waits_for_release(tmp_path):
    proc = spawn(HOLDER, str(tmp_path))
    try:
        expect_line(proc, "locked")
        assert lock_holder(tmp_path)["pid"] == proc.pid
        with pytest.raises(SweepLockedError) as err:
            SweepLock(tmp_path).acquire()
        assert err.value.pid == proc.pid
        assert f"pid {proc.pid}" in str(err.value)
        assert socket.gethostname() in str(err.value)
        assert "--wait" in str(err.value)

        with pytest.raises(SweepLockedError, match="still locked"):
            SweepLock(tmp_path, wait=True, timeout=0.3, poll_s=0.05).acquire()

        threading.Timer(0.5, lambda: proc.stdin.write("release\n")).start()
        t0 = time.monotonic()
        with SweepLock(tmp_path, wait=True, timeout=30, poll_s=0.05) as lock:
            assert lock.held
            assert time.monotonic() - t0 >= 0.4
            assert proc.poll() is None
            assert json.loads((tmp_path / "sweep.lock").read_text())["pid"] == os.getpid()
        assert not (tmp_path / "sweep.lock").exists()
    finally:
        proc.kill()
        proc.wait(timeout=10)
        _close(proc)


def test_lock_of_a_killed_holder_is_taken_over(tmp_path):
    proc = spawn(HOLDER, str(tmp_path))
    try:
        expect_line(proc, "locked")
        with pytest.raises(SweepLockedError):
            SweepLock(tmp_path).acquire()
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        _close(proc)
    assert json.loads((tmp_path / "sweep.lock").read_text())["pid"] == proc.pid
    assert lock_holder(tmp_path) is None
    with SweepLock(tmp_path) as lock:
        assert lock.held
        assert json.loads((tmp_path / "sweep.lock").read_text())["pid"] == os.getpid()


def test_same_process_cannot_take_it_twice(tmp_path):
    assert lock_holder(tmp_path) is None
    with SweepLock(tmp_path), pytest.raises(SweepLockedError, match=f"pid {os.getpid()}"):
        SweepLock(tmp_path).acquire()
    assert lock_holder(tmp_path) is None
    with SweepLock(tmp_path) as again:
        assert again.held


@pytest.fixture
def no_flock(monkeypatch):
    def unsupported(fd, op):
        raise OSError(lock_mod.errno.ENOLCK, "no locks on this file system")

    monkeypatch.setattr(lock_mod.fcntl, "flock", unsupported)


def _dead_pid():
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_pidfile_fallback_takes_over_dead_holder_and_refuses_live_one(tmp_path, no_flock):
    lock_file = tmp_path / "sweep.lock"
    dead = {"pid": _dead_pid(), "host": socket.gethostname(), "started": time.time()}
    lock_file.write_text(json.dumps(dead))
    with SweepLock(tmp_path) as lock:
        assert lock.held
        assert json.loads(lock_file.read_text())["pid"] == os.getpid()
        with pytest.raises(SweepLockedError, match=f"pid {os.getpid()}"):
            SweepLock(tmp_path).acquire()
        assert lock_holder(tmp_path)["pid"] == os.getpid()
    assert not lock_file.exists()
    assert lock_holder(tmp_path) is None

    other_host = {"pid": dead["pid"], "host": "elsewhere.example", "started": time.time()}
    lock_file.write_text(json.dumps(other_host))
    with pytest.raises(SweepLockedError, match=r"elsewhere\.example"):
        SweepLock(tmp_path).acquire()
