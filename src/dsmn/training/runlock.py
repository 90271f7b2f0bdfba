"""One training process per run folder: an exclusive lock on RUN_DIR/.dsmn-train.lock.

The lock is an `flock` on an open file, so the kernel drops it when its process ends in any way
(finished, crashed, killed with SIGKILL): a dead run never leaves the folder locked. The file holds
the owner's pid, host and start time, which the refusal message quotes.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from pathlib import Path

from dsmn.errors import UserError

LOCK_NAME = ".dsmn-train.lock"


class RunLockedError(UserError, RuntimeError):
    """Another live process is training into the same run folder."""


class RunLock:
    """Held while a run writes its folder; `acquire` refuses at once when another process holds it."""

    def __init__(self, run_dir: Path) -> None:
        self.path = Path(run_dir) / LOCK_NAME
        self._fd: int | None = None

    def acquire(self) -> RunLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                owner = _describe(fd)
                os.close(fd)
                raise RunLockedError(
                    f"{self.path.parent} is in use by another `dsmn train` ({owner}); wait for it to end, "
                    "or train into another --out folder") from None
            # the holder before us may have removed the file after we opened it: lock the current one
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        owner = {"pid": os.getpid(), "host": socket.gethostname(),
                 "started": time.strftime("%Y-%m-%d %H:%M:%S")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(owner).encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            self.path.unlink(missing_ok=True)  # while still locked: no one can lock a file we then delete
        finally:
            os.close(self._fd)  # closing drops the flock
            self._fd = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def _describe(fd: int) -> str:
    try:
        owner = json.loads(os.pread(fd, 4096, 0) or b"{}")
        return f"pid {owner['pid']} on {owner['host']}, started {owner['started']}"
    except (ValueError, KeyError, OSError):
        return "owner unknown"
