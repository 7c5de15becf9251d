"""The sticky unit: computed with the bucket, forwarded as x-modelship-unit (a client's is
dropped), and the rendezvous choice of a user's pod within its variant. Pure tests, then a
real router process in front of real upstreams."""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from modelship_router.config import RoutingConfig
from modelship_router.replica import UNIT_HEADER, rendezvous, rendezvous_weight, replica_token
from modelship_router.routing import (
    REASON_MATCH,
    REASON_STICKY,
    REASON_WEIGHT,
    build_table,
    decide,
    sticky_bucket,
    sticky_unit,
    variant_for_bucket,
)
from router_harness import UpstreamServer, routing, write_config

UPSTREAMS = 3


def table(salt: str | None = None, **extra: Any) -> Any:
    data: dict[str, Any] = {
        "deployment": "churn",
        "variants": [
            {"name": "stable", "modelVersion": "1", "upstreams": ["127.0.0.1:9001"]},
            {"name": "canary", "modelVersion": "2", "upstreams": ["127.0.0.1:9002"], "weight": 50},
        ],
        "sticky": {"header": "x-user"},
        **extra,
    }
    if salt is not None:
        data["salt"] = salt
    return build_table(RoutingConfig.model_validate(data))


@dataclass
class FakeUpstream:
    address: str
    down_until: float = 0.0

    @property
    def token(self) -> str:
        return replica_token(self.address)


# --- the unit in the decision -------------------------------------------------------------


def test_the_unit_is_the_documented_digest_and_the_same_as_the_bucket() -> None:
    digest = hashlib.sha256(b"churn\x00user-42").digest()
    assert sticky_unit("churn", "user-42") == digest[:8].hex()
    decision = decide(table(), {"x-user": "user-42"}, 0)
    assert decision.reason == REASON_STICKY
    assert decision.unit == digest[:8].hex() and len(decision.unit) == 16
    assert decision.variant == variant_for_bucket(table(), sticky_bucket("churn", "user-42"))
    # Same key, same unit, whatever the draw.
    assert all(decide(table(), {"x-user": "user-42"}, d).unit == decision.unit for d in (1, 9999))


def test_different_salts_give_different_units() -> None:
    units = {decide(table(salt), {"x-user": "user-42"}, 0).unit for salt in ("a", "b", "c")}
    assert len(units) == 3
    assert decide(table("a"), {"x-user": "user-42"}, 0).unit == sticky_unit("a", "user-42")


def test_no_key_no_unit() -> None:
    for headers in ({}, {"x-user": ""}, {"x-other": "user-42"}):
        decision = decide(table(), headers, 7)
        assert decision.reason == REASON_WEIGHT and decision.unit is None
    # No sticky key in the config: no unit either.
    stable = {"name": "stable", "modelVersion": "1", "upstreams": ["127.0.0.1:9001"]}
    plain = build_table(RoutingConfig.model_validate({"deployment": "churn", "variants": [stable]}))
    assert decide(plain, {"x-user": "u"}, 0).unit is None


def test_a_cookie_key_and_a_tester_with_a_key_carry_the_unit() -> None:
    cookie = table(sticky={"cookie": "uid"})
    assert decide(cookie, {"cookie": "a=1; uid=u7"}, 0).unit == sticky_unit("churn", "u7")
    tester = table(match=[{"header": "x-group", "value": "beta", "variant": "canary"}])
    decision = decide(tester, {"x-group": "beta", "x-user": "u7"}, 0)
    assert decision.reason == REASON_MATCH and decision.pinned
    assert decision.unit == sticky_unit("churn", "u7")
    assert decide(tester, {"x-group": "beta"}, 0).unit is None


# --- rendezvous ---------------------------------------------------------------------------


def test_rendezvous_is_the_documented_weight() -> None:
    ups = [FakeUpstream(f"10.0.0.{i}:8080") for i in range(UPSTREAMS)]
    unit = sticky_unit("churn", "user-1")
    weights = [
        int.from_bytes(hashlib.sha256(f"{unit}\x00{u.token}".encode()).digest()[:8], "big")
        for u in ups
    ]
    assert [rendezvous_weight(unit, u.token) for u in ups] == weights
    assert rendezvous(ups, unit, 0.0) is ups[weights.index(max(weights))]


def test_same_unit_same_upstream_and_units_spread_over_all() -> None:
    ups = [FakeUpstream(f"10.0.0.{i}:8080") for i in range(UPSTREAMS)]
    picks = Counter[str]()
    for user in range(600):
        unit = sticky_unit("churn", f"user-{user}")
        first = rendezvous(ups, unit, 0.0)
        assert first is not None
        # The same in another router (other objects, other order), every time.
        others = [FakeUpstream(u.address) for u in reversed(ups)]
        chosen = rendezvous(others, unit, 0.0)
        assert chosen is not None and chosen.address == first.address
        picks[first.address] += 1
    assert len(picks) == UPSTREAMS and min(picks.values()) > 120


def test_an_ejected_upstream_is_skipped_until_it_recovers() -> None:
    ups = [FakeUpstream(f"10.0.0.{i}:8080") for i in range(UPSTREAMS)]
    units = [sticky_unit("churn", f"user-{n}") for n in range(60)]
    home = {unit: rendezvous(ups, unit, 0.0) for unit in units}
    down = ups[0]
    down.down_until = 10.0
    moved = {unit: rendezvous(ups, unit, 1.0) for unit in units}
    for unit in units:
        assert moved[unit] is not down
        if home[unit] is not down:
            assert moved[unit] is home[unit]  # only the ejected pod's users move
        # ... and they stay on their new pick while it is ejected.
        assert rendezvous(ups, unit, 5.0) is moved[unit]
    assert any(home[unit] is down for unit in units)
    # Back: every user is home again.
    assert all(rendezvous(ups, unit, 10.0) is home[unit] for unit in units)
    # exclude (a retry) skips the one that failed; none usable: None.
    unit = units[0]
    assert rendezvous(ups, unit, 10.0, exclude=home[unit]) not in (home[unit], None)
    assert rendezvous([down], unit, 1.0) is None


# --- over HTTP: a real router and real upstreams -----------------------------------------


@pytest.fixture(scope="module")
def upstreams(tmp_path_factory: pytest.TempPathFactory) -> Any:
    log_dir = tmp_path_factory.mktemp("unit-upstreams")
    servers = {
        variant: [UpstreamServer(f"{variant}-{i}", log_dir) for i in range(UPSTREAMS)]
        for variant in ("stable", "canary")
    }
    yield servers
    for group in servers.values():
        for server in group:
            server.stop()


def start(upstreams: dict[str, list[UpstreamServer]], tmp_path: Path, spawn_router: Any) -> Any:
    path = tmp_path / "routing.json"
    stable = [s.address for s in upstreams["stable"]]
    canary = [s.address for s in upstreams["canary"]]
    write_config(path, routing(stable, canary, 50, sticky={"header": "x-user"}))
    return spawn_router(path)


def test_a_users_requests_carry_its_unit_and_reach_one_upstream(
    upstreams: dict[str, list[UpstreamServer]], tmp_path: Path, spawn_router: Any
) -> None:
    router = start(upstreams, tmp_path, spawn_router)
    seen: dict[str, set[str]] = {}
    with httpx.Client(base_url=router.url, timeout=10) as client:
        for user in range(30):
            key = f"user-{user}"
            for _ in range(4):
                resp = client.post(
                    "/v1/models/churn:predict",
                    json={"instances": [[1]]},
                    headers={"x-user": key, UNIT_HEADER: "forged"},
                )
                assert resp.status_code == 200
                echo = resp.json()
                assert echo["headers"][UNIT_HEADER] == sticky_unit("churn", key)
                assert key not in {v for k, v in echo["headers"].items() if k != "x-user"}
                seen.setdefault(key, set()).add(echo["upstream"])
    assert all(len(names) == 1 for names in seen.values())
    # Users spread over more than one pod of each variant.
    landed = {name for names in seen.values() for name in names}
    assert len({n for n in landed if n.startswith("stable")}) > 1
    assert len({n for n in landed if n.startswith("canary")}) > 1


def test_without_a_key_no_unit_round_robin_and_a_clients_unit_dropped(
    upstreams: dict[str, list[UpstreamServer]], tmp_path: Path, spawn_router: Any
) -> None:
    router = start(upstreams, tmp_path, spawn_router)
    served = Counter[str]()
    with httpx.Client(base_url=router.url, timeout=10) as client:
        for _ in range(60):
            resp = client.get("/p", headers={UNIT_HEADER: "0123456789abcdef", "x-other": "kept"})
            assert resp.status_code == 200
            echo = resp.json()
            assert UNIT_HEADER not in echo["headers"]
            assert echo["headers"]["x-other"] == "kept"
            served[echo["upstream"]] += 1
    # Round robin within each variant: every upstream of a variant took its turn.
    for variant in ("stable", "canary"):
        counts = [served[f"{variant}-{i}"] for i in range(UPSTREAMS)]
        assert min(counts) > 0 and max(counts) - min(counts) <= 1, served


def test_a_users_pod_gone_moves_it_to_one_other_pod(
    tmp_path: Path, spawn_router: Any, spawn_upstream: Any
) -> None:
    group = [spawn_upstream(f"stable-{i}") for i in range(UPSTREAMS)]
    path = tmp_path / "routing.json"
    write_config(
        path, routing([s.address for s in group], ["127.0.0.1:9"], 0, sticky={"header": "x-user"})
    )
    router = spawn_router(path)
    with httpx.Client(base_url=router.url, timeout=10) as client:

        def pod(key: str) -> str:
            resp = client.get("/p", headers={"x-user": key})
            assert resp.status_code == 200
            return str(resp.json()["upstream"])

        home = {f"user-{n}": pod(f"user-{n}") for n in range(30)}
        victim = group[0]
        assert victim.name in home.values()
        victim.kill()
        for key, name in home.items():
            first = pod(key)  # a retry elsewhere, and the dead pod is ejected
            assert first != victim.name
            if name != victim.name:
                assert first == name
            assert {pod(key) for _ in range(3)} == {first}
