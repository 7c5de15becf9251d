"""Test harness: real upstream servers and real router processes on 127.0.0.1."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
from modelship_cluster.ports import free_port

HERE = Path(__file__).parent
VENV_BIN = Path(sys.executable).parent


def wait_http(url: str, proc: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
    """Wait until ``url`` answers at all (any status), or fail with the process output."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode}: {read_log(proc)}")
        try:
            httpx.get(url, timeout=1.0)
            return
        except httpx.HTTPError:
            time.sleep(0.05)
    raise RuntimeError(f"{url} did not come up: {read_log(proc)}")


def read_log(proc: subprocess.Popen[bytes]) -> str:
    path = getattr(proc, "log_path", None)
    return Path(path).read_text(errors="replace")[-4000:] if path else ""


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class UpstreamServer:
    """A uvicorn process running upstream_app with a name and behaviour."""

    def __init__(self, name: str, log_dir: Path, **env: str) -> None:
        self.name = name
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.url = f"http://{self.address}"
        log_path = log_dir / f"upstream-{name}-{self.port}.log"
        environment = {**os.environ, "UPSTREAM_NAME": name, **env}
        self.proc = subprocess.Popen(
            [
                str(VENV_BIN / "uvicorn"),
                "--app-dir",
                str(HERE),
                "upstream_app:app",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--log-level",
                "warning",
                "--no-access-log",
            ],
            env=environment,
            stdout=log_path.open("wb"),
            stderr=subprocess.STDOUT,
        )
        self.proc.log_path = log_path  # type: ignore[attr-defined]
        wait_http(f"{self.url}/_stats", self.proc)

    def stats(self) -> dict[str, int]:
        return httpx.get(f"{self.url}/_stats", timeout=5).json()  # type: ignore[no-any-return]

    def kill(self) -> None:
        """SIGKILL: the process dies with its connections, as a crashed pod would."""
        self.proc.kill()
        self.proc.wait()

    def stop(self) -> None:
        stop(self.proc)


class RouterProcess:
    """A ``modelship-router --config FILE`` process."""

    def __init__(self, config: Path, log_dir: Path, port: int | None = None, **env: str) -> None:
        self.config = config
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_dir / f"router-{self.port}-{time.monotonic_ns()}.log"
        # No drain after SIGTERM unless a test asks for one (test_router_drain.py).
        env = {"drain_seconds": "0", **env}
        environment = {**os.environ, **{f"MODELSHIP_ROUTER_{k.upper()}": v for k, v in env.items()}}
        self.proc = subprocess.Popen(
            [
                str(VENV_BIN / "modelship-router"),
                "--config",
                str(config),
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
            ],
            env=environment,
            stdout=self.log_path.open("wb"),
            stderr=subprocess.STDOUT,
        )
        self.proc.log_path = self.log_path  # type: ignore[attr-defined]
        wait_http(f"{self.url}/healthz", self.proc)

    def ready(self) -> dict[str, Any]:
        return httpx.get(f"{self.url}/readyz", timeout=5).json()  # type: ignore[no-any-return]

    def wait_generation(self, generation: int, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.ready().get("generation") == generation:
                return
            time.sleep(0.02)
        raise AssertionError(f"generation {generation} not applied: {self.ready()}")

    def metrics(self) -> str:
        return httpx.get(f"{self.url}/metrics", timeout=5).text

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        stop(self.proc)


class SecretVolume:
    """A Secret volume as the kubelet writes it: ``token -> ..data/token``, ``..data`` a
    symlink to a timestamped directory, replaced by an atomic rename of a new symlink
    (one atomic step for a reader). The router's and the serving tests share it."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.generation = 0
        root.mkdir(parents=True, exist_ok=True)
        (root / "token").symlink_to("..data/token")

    @property
    def path(self) -> Path:
        return self.root / "token"

    def write(self, content: bytes | str) -> None:
        self.generation += 1
        directory = self.root / f"..2026_12_04_00_00_{self.generation:02d}"
        directory.mkdir()
        data = content.encode() if isinstance(content, str) else content
        (directory / "token").write_bytes(data)
        tmp = self.root / "..data_tmp"
        tmp.symlink_to(directory.name)
        os.replace(tmp, self.root / "..data")


def write_config(path: Path, data: dict[str, Any]) -> None:
    """Replace the file atomically, as a careful editor or a ConfigMap volume does."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data))
    tmp.replace(path)


def routing(
    stable: list[str],
    canary: list[str],
    canary_weight: float = 0,
    generation: int = 1,
    **extra: Any,
) -> dict[str, Any]:
    data: dict[str, Any] = {
        "deployment": "churn",
        "generation": generation,
        "variants": [
            {"name": "stable", "modelVersion": "1.0.0", "upstreams": stable},
            {
                "name": "canary",
                "modelVersion": "2.0.0",
                "upstreams": canary,
                "weight": canary_weight,
            },
        ],
    }
    data.update(extra)
    return data
