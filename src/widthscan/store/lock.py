"""SweepLock: one writer per sweep directory.

``fcntl.flock`` on ``SWEEP/sweep.lock`` (released by the kernel when the holder dies,
so a kill -9 never leaves a stuck lock), with the holder's pid, host and start time
written inside for error messages. Where flock is unavailable (Windows, some network
file systems) it falls back to an O_EXCL pid file whose dead holders are taken over.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import socket
import time
from pathlib import Path
from types import TracebackType
from typing import Any

from widthscan.store.layout import SWEEP_LOCK

try:
    import fcntl
except ImportError:
    fcntl = None  # type: ignore[assignment]

_NO_FLOCK = {errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL}
_EMPTY_PIDFILE_GRACE_S = 30.0


class SweepLockedError(RuntimeError):
    """The sweep is locked by another live process (``pid``, ``host`` if known)."""

    def __init__(self, message: str, pid: int | None = None, host: str | None = None) -> None:
        super().__init__(message)
        self.pid = pid
        self.host = host


def _holder_info() -> dict[str, Any]:
    return {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time()}


def read_lock_holder(sweep_dir: str | os.PathLike[str]) -> dict[str, Any] | None:
    """``{"pid", "host", "started"}`` written by the current (or last, if it died) holder."""
    try:
        text = (Path(sweep_dir) / SWEEP_LOCK).read_text(encoding="utf-8")
        info = json.loads(text)
    except (OSError, ValueError):
        return None
    return info if isinstance(info, dict) else None


def lock_holder(sweep_dir: str | os.PathLike[str]) -> dict[str, Any] | None:
    """Holder info if the sweep is locked right now by a live process, else None.

    For status displays: a lock file left by a dead holder reads as unlocked. Probing
    takes a shared flock for an instant, which can make a racing acquirer refuse.
    """
    path = Path(sweep_dir) / SWEEP_LOCK
    info = read_lock_holder(sweep_dir)
    if fcntl is not None:
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return info or {}
        except OSError:
            pass
        else:
            fcntl.flock(fd, fcntl.LOCK_UN)
            return None
        finally:
            os.close(fd)
    if not path.exists() or _is_stale(info, path):
        return None
    return info or {}


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists on this host."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OSError:
        return False
    return True


def _is_stale(info: dict[str, Any] | None, path: Path) -> bool:
    if info is None:
        try:
            age = time.time() - path.stat().st_mtime
        except FileNotFoundError:
            return True
        return age > _EMPTY_PIDFILE_GRACE_S
    if info.get("host") != socket.gethostname():
        return False
    pid = info.get("pid")
    return isinstance(pid, int) and not pid_alive(pid)


class SweepLock:
    """Context manager holding ``SWEEP/sweep.lock``.

    wait=False: raise SweepLockedError at once if another process holds it.
    wait=True: poll every ``poll_s`` seconds until free, or until ``timeout`` seconds
    have passed (then raise SweepLockedError).
    """

    def __init__(
        self,
        sweep_dir: str | os.PathLike[str],
        wait: bool = False,
        timeout: float | None = None,
        poll_s: float = 0.2,
    ) -> None:
        self.sweep_dir = Path(sweep_dir)
        self.path = self.sweep_dir / SWEEP_LOCK
        self.wait = wait
        self.timeout = timeout
        self.poll_s = poll_s
        self._fd: int | None = None
        self._flock = fcntl is not None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def __enter__(self) -> SweepLock:
        self.acquire()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()

    def acquire(self) -> None:
        if self._fd is not None:
            raise RuntimeError(f"{self.path} is already held by this SweepLock")
        self.sweep_dir.mkdir(parents=True, exist_ok=True)
        deadline = None if self.timeout is None else time.monotonic() + self.timeout
        while True:
            fd, busy = self._try_flock() if self._flock else self._try_pidfile()
            if fd is not None:
                os.ftruncate(fd, 0)
                os.pwrite(fd, json.dumps(_holder_info()).encode(), 0)
                os.fsync(fd)
                self._fd = fd
                return
            if not busy:
                continue
            if not self.wait or (deadline is not None and time.monotonic() >= deadline):
                raise self._locked_error(timed_out=self.wait)
            time.sleep(self.poll_s)

    def _try_flock(self) -> tuple[int | None, bool]:
        """(fd holding the lock, None) or (None, whether another process holds it)."""
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None, True
        except OSError as e:
            os.close(fd)
            if e.errno not in _NO_FLOCK:
                raise
            self._flock = False
            return None, False
        try:
            same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if not same:
            os.close(fd)
            return None, False
        return fd, False

    def _try_pidfile(self) -> tuple[int | None, bool]:
        """Like _try_flock with an O_EXCL file; a dead holder's file is removed (retry)."""
        try:
            return os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644), False
        except FileExistsError:
            pass
        if _is_stale(read_lock_holder(self.sweep_dir), self.path):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)
            return None, False
        return None, True

    def _locked_error(self, timed_out: bool) -> SweepLockedError:
        info = None
        for _ in range(10):
            info = read_lock_holder(self.sweep_dir)
            if info is not None:
                break
            time.sleep(0.05)
        info = info or {}
        pid, host = info.get("pid"), info.get("host")
        since = ""
        if isinstance(info.get("started"), (int, float)):
            since = time.strftime(" since %Y-%m-%d %H:%M:%S", time.localtime(info["started"]))
        who = f"pid {pid} on host {host}{since}" if pid is not None else "another process"
        if timed_out:
            msg = f"sweep {self.sweep_dir} is still locked by {who} after waiting {self.timeout} s"
        else:
            msg = (
                f"sweep {self.sweep_dir} is locked by {who}; wait for it to finish, or pass "
                "--wait (wait=True) to wait for the lock"
            )
        return SweepLockedError(msg, pid=pid, host=host)

    def moved_to(self, sweep_dir: str | os.PathLike[str]) -> None:
        """The held sweep folder was renamed to ``sweep_dir``; its lock file went with it."""
        self.sweep_dir = Path(sweep_dir)
        self.path = self.sweep_dir / SWEEP_LOCK

    def release(self) -> None:
        """Remove the lock file and drop the lock; a no-op when not held."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
        os.close(fd)
