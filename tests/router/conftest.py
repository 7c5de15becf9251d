"""Fixtures: real upstream servers and real router processes on 127.0.0.1."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from router_harness import RouterProcess, UpstreamServer


@pytest.fixture
def spawn_upstream(tmp_path: Path) -> Iterator[Any]:
    servers: list[UpstreamServer] = []

    def spawn(name: str, **env: str) -> UpstreamServer:
        server = UpstreamServer(name, tmp_path, **env)
        servers.append(server)
        return server

    yield spawn
    for server in servers:
        server.stop()


@pytest.fixture
def spawn_router(tmp_path: Path) -> Iterator[Any]:
    routers: list[RouterProcess] = []

    def spawn(config: Path, port: int | None = None, **env: str) -> RouterProcess:
        router = RouterProcess(config, tmp_path, port, **env)
        routers.append(router)
        return router

    yield spawn
    for router in routers:
        router.stop()
