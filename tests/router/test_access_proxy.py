"""Privileged variant forcing, the shadow refusal and the pinned header, over real HTTP:
a real router process, real upstreams, and a token file replaced as the kubelet does."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from router_harness import SecretVolume, UpstreamServer, routing, write_config

TESTER = {"header": "x-group", "value": "beta", "variant": "canary"}
FORCE = [
    {"header": "x-modelship-variant", "value": v, "variant": v, "privileged": True}
    for v in ("stable", "canary", "shadow")
]


@pytest.fixture(scope="module")
def upstreams(tmp_path_factory: pytest.TempPathFactory) -> Any:
    log_dir = tmp_path_factory.mktemp("upstreams")
    servers = {name: UpstreamServer(f"{name}-1", log_dir) for name in ("stable", "canary")}
    servers["shadow"] = UpstreamServer("shadow-1", log_dir)
    yield servers
    for server in servers.values():
        server.stop()


def config(upstreams: dict[str, UpstreamServer], **extra: Any) -> dict[str, Any]:
    """stable, canary (weight 0) and a weightless shadow receiving copies of everything."""
    data = routing([upstreams["stable"].address], [upstreams["canary"].address], 0, **extra)
    data["variants"].append(
        {"name": "shadow", "modelVersion": "3.0.0", "upstreams": [upstreams["shadow"].address]}
    )
    data.setdefault("mirror", {"variant": "shadow", "percent": 100})
    return data


def wait_for(predicate: Any, timeout: float = 5.0) -> float:
    """Poll ``predicate`` until it holds; returns the seconds it took."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if predicate():
            return time.monotonic() - start
        time.sleep(0.05)
    raise AssertionError("condition not reached in time")


def forced(client: httpx.Client, variant: str, token: str | None = None) -> httpx.Response:
    headers = {"x-modelship-variant": variant}
    if token is not None:
        headers["x-modelship-token"] = token
    return client.post("/v1/models/churn:predict", json={"instances": [[1]]}, headers=headers)


def test_forcing_a_variant_needs_the_current_token(
    upstreams: dict[str, UpstreamServer], tmp_path: Path, spawn_router: Any
) -> None:
    path = tmp_path / "routing.json"
    write_config(path, config(upstreams, match=[TESTER, *FORCE]))
    volume = SecretVolume(tmp_path / "access")  # the key is not there yet
    router = spawn_router(path, token_file=str(volume.path))
    canary_before = upstreams["canary"].stats()["requests"]
    with httpx.Client(base_url=router.url, timeout=10) as client:
        off = forced(client, "canary", "s3cret")
        assert off.status_code == 403
        assert off.json() == {
            "error": "variant forcing is off: no access token is configured",
            "status": 403,
        }
        volume.write(b"s3cret\n")
        wait_for(lambda: forced(client, "canary", "s3cret").status_code == 200)

        missing = forced(client, "canary")
        assert missing.status_code == 403
        assert missing.json()["error"] == "forcing variant canary needs a valid x-modelship-token"
        assert "x-modelship-variant" not in missing.headers
        wrong = forced(client, "canary", "S3CRET")
        assert wrong.status_code == 403
        assert wrong.json()["error"] == "forcing variant canary needs a valid x-modelship-token"

        right = forced(client, "canary", "s3cret")
        assert right.status_code == 200
        assert right.headers["x-modelship-variant"] == "canary"
        echo = right.json()
        assert echo["upstream"] == "canary-1"
        # The token goes on unchanged (the serving pod checks it again); a forced request
        # is not a tester's: not pinned.
        assert echo["headers"]["x-modelship-token"] == "s3cret"
        assert "x-modelship-pinned" not in echo["headers"]
        assert forced(client, "stable", "s3cret").json()["upstream"] == "stable-1"

        # The shadow serves no client, even with the token (without, the token is what
        # the router says is missing: it tells nothing about its variants to strangers).
        shadow = forced(client, "shadow", "s3cret")
        assert shadow.status_code == 403
        assert shadow.json()["error"] == "variant shadow is a shadow: it serves no client"
        assert forced(client, "shadow").json()["error"] == (
            "forcing variant shadow needs a valid x-modelship-token"
        )

        # The Secret changes: the old token is refused, the new one accepted, within ~1 s.
        volume.write(b"rotated")
        took = wait_for(lambda: forced(client, "canary", "rotated").status_code == 200)
        assert took < 3.0
        assert forced(client, "canary", "s3cret").status_code == 403

    # Only the accepted requests reached the canary (refusals never go upstream).
    accepted = upstreams["canary"].stats()["requests"] - canary_before
    assert accepted == 3, accepted
    metrics = router.metrics()
    assert 'code="403",deployment="churn",variant="none"}' in metrics
    # One warning for the missing key, not one per refused request.
    assert router.log().count("cannot be read") == 1, router.log()


def test_without_a_token_file_forcing_is_off_and_testers_still_work(
    upstreams: dict[str, UpstreamServer], tmp_path: Path, spawn_router: Any
) -> None:
    path = tmp_path / "routing.json"
    write_config(path, config(upstreams, match=[TESTER, *FORCE]))
    router = spawn_router(path)
    with httpx.Client(base_url=router.url, timeout=10) as client:
        refused = forced(client, "canary", "anything")
        assert refused.status_code == 403
        assert refused.json()["error"] == "variant forcing is off: no access token is configured"
        tester = client.post(
            "/v1/models/churn:predict", json={"instances": [[1]]}, headers={"x-group": "beta"}
        )
        assert tester.status_code == 200
        assert tester.json()["upstream"] == "canary-1"
        assert tester.json()["headers"]["x-modelship-pinned"] == "1"
        # An ordinary request is not pinned.
        plain = client.post("/v1/models/churn:predict", json={"instances": [[1]]})
        assert plain.json()["upstream"] == "stable-1"
        assert "x-modelship-pinned" not in plain.json()["headers"]


@pytest.mark.parametrize("rules", [[TESTER], []], ids=["with-rules", "weights-only"])
def test_a_clients_own_pinned_header_never_reaches_the_upstream(
    upstreams: dict[str, UpstreamServer], tmp_path: Path, spawn_router: Any, rules: Any
) -> None:
    path = tmp_path / "routing.json"
    write_config(path, config(upstreams, match=rules))
    router = spawn_router(path)
    with httpx.Client(base_url=router.url, timeout=10) as client:
        for value in ("1", "0", "yes"):
            resp = client.get("/p", headers={"x-modelship-pinned": value, "x-other": "kept"})
            assert resp.status_code == 200
            echo = resp.json()
            assert echo["upstream"] == "stable-1"
            assert "x-modelship-pinned" not in echo["headers"]
            assert echo["headers"]["x-other"] == "kept"
        if rules:
            # A tester's request is pinned by the router, whatever the client sent.
            tester = client.get("/p", headers={"x-group": "beta", "x-modelship-pinned": "0"})
            assert tester.json()["upstream"] == "canary-1"
            assert tester.json()["headers"]["x-modelship-pinned"] == "1"
