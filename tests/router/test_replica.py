"""The pure replica-affinity parts: tokens and finding the upstream they name."""

from __future__ import annotations

from dataclasses import dataclass

from modelship_router.replica import find_replica, replica_token


@dataclass(frozen=True)
class Up:
    address: str

    @property
    def token(self) -> str:
        return replica_token(self.address)


def test_tokens_are_stable_opaque_and_distinct_per_address() -> None:
    token = replica_token("10.0.0.7:8080")
    assert token == replica_token("10.0.0.7:8080")  # a restarted router decodes it too
    assert "10.0.0.7" not in token and len(token) == 16
    assert token != replica_token("10.0.0.8:8080")


def test_a_token_finds_its_upstream_or_nothing_when_the_pod_is_gone() -> None:
    ups = [Up("10.0.0.7:8080"), Up("10.0.0.8:8080"), Up("10.0.0.9:8080")]
    assert find_replica(ups, replica_token("10.0.0.8:8080")) is ups[1]
    assert find_replica(ups, replica_token("10.0.0.6:8080")) is None
    assert find_replica(ups, "not-a-token") is None
