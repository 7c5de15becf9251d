"""Helpers for the serving tests: real modelship-serve processes on loopback."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
from modelship_cluster.ports import free_port

SERVE = [sys.executable, "-c", "from modelship_serving.cli import main; main()"]


@dataclass
class Artifact:
    path: Path
    sha256: str
    X: np.ndarray
    y: np.ndarray
    estimator: object

    @property
    def uri(self) -> str:
        return self.path.as_uri()


@dataclass
class Server:
    process: subprocess.Popen[str]
    base: str
    name: str
    log_path: Path
    #: host:port of the gRPC service ("" when started with --grpc-port 0).
    grpc_target: str = ""
    client: httpx.Client = field(init=False)

    def __post_init__(self) -> None:
        self.client = httpx.Client(base_url=self.base, timeout=30)

    def log(self) -> str:
        return self.log_path.read_text()


def start_server(
    tmp: Path,
    artifact: Artifact,
    *extra: str,
    name: str = "model",
    wait_ready: bool = True,
    env: dict[str, str] | None = None,
) -> Server:
    port = free_port()
    # Each server its own gRPC port too (the default, 8081, would clash between servers).
    grpc_port = 0 if "--grpc-port" in extra else free_port()
    if grpc_port:
        extra = ("--grpc-port", str(grpc_port), *extra)
    log_path = tmp / f"server-{port}.log"
    cmd = [
        *SERVE,
        "--model-uri",
        artifact.uri,
        "--name",
        name,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--drain-seconds",
        "0",
        *extra,
    ]
    out = open(log_path, "w")  # noqa: SIM115 - closed with the process
    process = subprocess.Popen(
        cmd,
        stdout=out,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, **(env or {})},
    )
    grpc_target = f"127.0.0.1:{grpc_port}" if grpc_port else ""
    server = Server(process, f"http://127.0.0.1:{port}", name, log_path, grpc_target)
    if wait_ready:
        wait_for(server, "/v2/health/ready")
    return server


def wait_for(server: Server, path: str, status: int = 200, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise AssertionError(f"server exited {server.process.returncode}:\n{server.log()}")
        try:
            if server.client.get(path).status_code == status:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    raise AssertionError(f"{path} never returned {status}:\n{server.log()}")


def stop_server(server: Server) -> None:
    if server.process.poll() is None:
        server.process.send_signal(signal.SIGTERM)
        try:
            server.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.process.kill()
            server.process.wait()
    server.client.close()
