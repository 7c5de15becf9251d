"""Free loopback ports for the servers the test bed and the tests start.

A port from `bind(port 0)` comes from the kernel's ephemeral range, the same range it
draws the local end of every outgoing connection from. Between closing the probe socket
and the server's own bind, any client connection on the machine can take that port, and
the server fails with "address already in use" (seen in CI on a loaded machine). The
ports here come from below the ephemeral range, which `connect()` never picks, so only
another listener can take one; each is handed out once per process, and each process
starts at its own offset so two test runs side by side do not walk the same ports.
"""

from __future__ import annotations

import errno
import os
import socket
import threading
from pathlib import Path

_LOWEST = 20000
_RANGE_FILE = Path("/proc/sys/net/ipv4/ip_local_port_range")
_lock = threading.Lock()
_handed_out: set[int] = set()
_next: int | None = None


def _ceiling() -> int:
    """One below the ephemeral range's start (32768 on Linux's default)."""
    try:
        low = int(_RANGE_FILE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    return max(low, _LOWEST + 1000)


def _bindable(host: str, port: int) -> bool:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                return False
            raise
    return True


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port on HOST that nothing listens on and no client connection will take."""
    global _next
    ceiling = _ceiling()
    span = ceiling - _LOWEST
    with _lock:
        if _next is None:
            _next = _LOWEST + (os.getpid() * 211) % span
        for _ in range(span):
            port = _next
            _next = _LOWEST + (_next - _LOWEST + 1) % span
            if port not in _handed_out and _bindable(host, port):
                _handed_out.add(port)
                return port
    raise RuntimeError(f"no free TCP port on {host} in {_LOWEST}-{ceiling - 1}")


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """COUNT distinct free ports on HOST (see free_port)."""
    return [free_port(host) for _ in range(count)]
