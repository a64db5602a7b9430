"""One run at a time per workflow id, also across machines sharing the storage (NFS).

The lock is a file created with ``O_CREAT | O_EXCL`` (atomic on local filesystems and on
NFSv3 and later): whoever creates it holds the workflow. It records the holder (host, pid,
the process's start time, the command, when it started) and a heartbeat: the holder touches
the file every ``HEARTBEAT_S`` seconds. A second run finds the file and stops at once, naming
the holder. A lock is *stale* when its holder is gone: on the same host, the process no longer
exists (or the pid now belongs to a newer process); from another host, the heartbeat is older
than ``STALE_AFTER_S``. A stale lock is reported, never taken over silently: ``dwsfusion
pipeline unlock ID`` breaks it.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from dwsfusion.errors import UsageError

LOCK_FILE = "_LOCK.json"
HEARTBEAT_S = 30.0
STALE_AFTER_S = 600.0


def _process_start(pid: int) -> float | None:
    """When process ``pid`` started (epoch seconds), or None if it does not exist."""
    try:
        import psutil  # optional: not a dependency of ours; without it, existence only

        return psutil.Process(pid).create_time()
    except ImportError:  # no psutil: existence only
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            return 0.0
        return 0.0
    except Exception:  # noqa: BLE001 - psutil.NoSuchProcess, AccessDenied, ...
        return None


@dataclass
class Holder:
    host: str
    pid: int
    process_start: float  # of the holding process: a reused pid has another
    started: float
    command: str
    token: str
    heartbeat: float  # the lock file's last modification

    def describe(self) -> str:
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.started))
        return f"pid {self.pid} on host {self.host} since {since} ({self.command})"

    def stale_reason(self, now: float | None = None) -> str | None:
        """Why the holder is gone, or None while it may still run."""
        now = time.time() if now is None else now
        if self.host == socket.gethostname():
            start = _process_start(self.pid)
            if start is None:
                return f"process {self.pid} on {self.host} no longer exists"
            if start and self.process_start and abs(start - self.process_start) > 1.0:
                return f"pid {self.pid} on {self.host} now belongs to another process"
            return None
        if now - self.heartbeat > STALE_AFTER_S:
            return f"no heartbeat from {self.host} for {now - self.heartbeat:.0f} s"
        return None


def read_holder(path: Path) -> Holder | None:
    try:
        record = json.loads(path.read_text())
        heartbeat = path.stat().st_mtime
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise UsageError(f"{path}: unreadable workflow lock ({exc}); remove it if no run is active") from None
    return Holder(heartbeat=heartbeat, **record)


class LockHeld(UsageError):
    """The workflow is locked by another run (live or stale)."""


class WorkflowLock:
    """``with WorkflowLock(root, workflow_id):`` holds the workflow for the block."""

    def __init__(self, root: Path, workflow_id: str):
        self.path, self.workflow_id = Path(root) / LOCK_FILE, workflow_id
        self.token = uuid.uuid4().hex
        self._stop = threading.Event()
        self._beat: threading.Thread | None = None

    def __enter__(self) -> WorkflowLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        me = os.getpid()
        record = {
            "host": socket.gethostname(),
            "pid": me,
            "process_start": _process_start(me) or 0.0,
            "started": time.time(),
            "command": " ".join(["dwsfusion", *sys.argv[1:]]) if sys.argv else "python",
            "token": self.token,
        }
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            raise self._held() from None
        with os.fdopen(fd, "w") as handle:
            handle.write(json.dumps(record, indent=2))
            handle.flush()
            os.fsync(handle.fileno())
        self._beat = threading.Thread(target=self._heartbeat, name="workflow-lock-heartbeat", daemon=True)
        self._beat.start()
        return self

    def _held(self) -> LockHeld:
        holder = read_holder(self.path)
        if holder is None:  # released between our attempt and the read: a plain race, try again
            return LockHeld(f"workflow '{self.workflow_id}': its lock changed hands just now; run again")
        unlock = f"dwsfusion pipeline unlock {self.workflow_id} --storage {self.path.parent.parent}"
        reason = holder.stale_reason()
        if reason:
            return LockHeld(
                f"workflow '{self.workflow_id}' has a stale lock ({reason}): held by {holder.describe()}; "
                f"if no run of it is active, break the lock with: {unlock}"
            )
        return LockHeld(
            f"workflow '{self.workflow_id}' is running: {holder.describe()}. Wait for it to finish "
            f"(dwsfusion pipeline status {self.workflow_id} --storage {self.path.parent.parent})"
        )

    def _heartbeat(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            try:
                os.utime(self.path)
            except OSError:
                return

    def __exit__(self, *exc_info) -> None:
        self._stop.set()
        holder = read_holder(self.path)
        if holder is not None and holder.token == self.token:  # never remove a lock someone broke and retook
            self.path.unlink(missing_ok=True)


def break_lock(root: Path, force: bool = False) -> Holder | None:
    """Remove the lock of the workflow at ``root``; refuses a live local holder unless ``force``."""
    path = Path(root) / LOCK_FILE
    holder = read_holder(path)
    if holder is None:
        return None
    if not force and holder.stale_reason() is None:
        raise LockHeld(f"{path}: held by a live run, {holder.describe()}; --force breaks it anyway")
    path.unlink(missing_ok=True)
    return holder
