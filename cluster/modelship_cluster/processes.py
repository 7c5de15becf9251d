"""Long-lived background processes with a log file and a pid file each.

`up` starts every component detached (its own session), so the command can return while
the cluster keeps running; `down` finds them again through their pid files. A pid file
also records the process's start time, so a recycled pid is never signalled by mistake.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path


def _start_ticks(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (field 22 of /proc/PID/stat)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name may hold spaces and parentheses: split after its closing ')'.
    fields = stat.rsplit(")", 1)[1].split()
    return int(fields[19])


@dataclass(frozen=True)
class ManagedProcess:
    name: str
    pid: int
    start_ticks: int | None
    log: Path

    def alive(self) -> bool:
        ticks = _start_ticks(self.pid)
        if ticks is None or ticks != self.start_ticks:
            return False
        try:
            state = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            return False
        return state != "Z"


class ProcessDir:
    """Pid and log files of one cluster's processes."""

    def __init__(self, root: Path) -> None:
        self.pids = root / "pids"
        self.logs = root / "logs"

    def pidfile(self, name: str) -> Path:
        return self.pids / f"{name}.json"

    def start(
        self,
        name: str,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
    ) -> ManagedProcess:
        existing = self.get(name)
        if existing and existing.alive():
            return existing
        self.pids.mkdir(parents=True, exist_ok=True)
        self.logs.mkdir(parents=True, exist_ok=True)
        log = self.logs / f"{name}.log"
        with open(log, "ab") as out:
            out.write(f"\n--- {time.strftime('%Y-%m-%dT%H:%M:%S')} starting {name}\n".encode())
            out.flush()
            proc = subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env={**os.environ, **(env or {})},
                cwd=cwd,
                start_new_session=True,
            )
        managed = ManagedProcess(name, proc.pid, _start_ticks(proc.pid), log)
        self.pidfile(name).write_text(
            json.dumps({"pid": managed.pid, "start_ticks": managed.start_ticks, "argv": argv})
        )
        return managed

    def get(self, name: str) -> ManagedProcess | None:
        path = self.pidfile(name)
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            return None
        return ManagedProcess(name, data["pid"], data["start_ticks"], self.logs / f"{name}.log")

    def all(self) -> list[ManagedProcess]:
        if not self.pids.exists():
            return []
        found = (self.get(p.stem) for p in sorted(self.pids.glob("*.json")))
        return [p for p in found if p is not None]

    def stop(self, name: str, grace: float = 10.0) -> None:
        """SIGTERM the process's group, SIGKILL after `grace` seconds, forget it."""
        proc = self.get(name)
        if proc is not None and proc.alive():
            _signal_group(proc.pid, signal.SIGTERM)
            deadline = time.monotonic() + grace
            while proc.alive() and time.monotonic() < deadline:
                time.sleep(0.05)
            if proc.alive():
                _signal_group(proc.pid, signal.SIGKILL)
                while proc.alive() and time.monotonic() < deadline + 5:
                    time.sleep(0.05)
        self.pidfile(name).unlink(missing_ok=True)


def _signal_group(pid: int, sig: signal.Signals) -> None:
    # Each component was started in its own session, so its pgid is its pid.
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:
        return
    except PermissionError:
        os.kill(pid, sig)


def tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""
