"""The test bed's free ports: never from the range client connections draw from."""

from __future__ import annotations

import socket
from pathlib import Path

from modelship_cluster.ports import free_port, free_ports


def test_ports_are_distinct_bindable_and_below_the_ephemeral_range() -> None:
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    picked = free_ports(50)
    assert len(set(picked)) == 50
    assert all(20000 <= port < low for port in picked)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", picked[-1]))  # still free: nothing bound it


def test_a_port_in_use_is_skipped() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        first = free_port()
        # hold the next candidate port so the helper must walk past it
        with socket.socket() as held:
            held.bind(("127.0.0.1", first + 1))
            held.listen()
            assert free_port() not in (first, first + 1)
