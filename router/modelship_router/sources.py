"""Where the routing configuration comes from: a file (local use, tests) or Kubernetes.

A source calls ``apply`` with every new valid configuration and ``reject`` with a
readable reason for every invalid one; the router keeps the last valid configuration.
"""

from __future__ import annotations

import asyncio
import logging
import os
from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path

import yaml
from pydantic import ValidationError

from modelship_router.config import RoutingConfig

log = logging.getLogger(__name__)

Apply = Callable[[RoutingConfig], None]
Reject = Callable[[str], None]


class ConfigError(ValueError):
    """A routing configuration that cannot be used, with the reason."""


def describe_validation_error(exc: ValidationError) -> str:
    """One line per problem: ``variants.1.weight: Input should be ...``."""
    problems = []
    for error in exc.errors():
        where = ".".join(str(part) for part in error["loc"]) or "(top level)"
        problems.append(f"{where}: {error['msg'].removeprefix('Value error, ')}")
    return "; ".join(problems)


def parse_config(text: bytes, name: str) -> RoutingConfig:
    """Parse a YAML or JSON routing document (``name`` ending in .json: strict JSON)."""
    try:
        if name.endswith(".json"):
            return RoutingConfig.from_json(text)
        data = yaml.safe_load(text)
        if not isinstance(data, dict):
            raise ConfigError(f"{name}: expected a mapping at the top level")
        return RoutingConfig.from_data(data)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{name}: not valid YAML: {exc}") from exc
    except ValidationError as exc:
        raise ConfigError(f"{name}: {describe_validation_error(exc)}") from exc


def load_config_file(path: Path) -> RoutingConfig:
    """Read and validate a routing file (raises ConfigError)."""
    try:
        text = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror or exc}") from exc
    return parse_config(text, str(path))


class ConfigSource(ABC):
    """Produces routing configurations until cancelled."""

    @abstractmethod
    async def run(self, apply: Apply, reject: Reject) -> None:
        """Deliver the current configuration, then every change."""


class FileConfigSource(ConfigSource):
    """A YAML/JSON file, re-read when its modification time, size or inode changes.

    Polling (default every 0.1 s) works for plain files, editors that replace the file,
    and Kubernetes ConfigMap volumes (which swap a symlink).
    """

    def __init__(self, path: Path, interval: float = 0.1) -> None:
        self.path = path
        self.interval = interval
        self._signature: tuple[int, int, int] | None = None

    def _stat(self) -> tuple[int, int, int] | None:
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_size, st.st_ino)

    def check(self, apply: Apply, reject: Reject) -> None:
        """Apply the file if it changed since the last check."""
        signature = self._stat()
        if signature is None or signature == self._signature:
            return
        self._signature = signature
        try:
            config = load_config_file(self.path)
        except ConfigError as exc:
            reject(str(exc))
            return
        apply(config)

    async def run(self, apply: Apply, reject: Reject) -> None:
        while True:
            self.check(apply, reject)
            await asyncio.sleep(self.interval)
