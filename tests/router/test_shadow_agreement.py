"""Shadow agreement: the router compares a mirrored copy's predictions with the client's.

The rules are checked on a table of answer pairs; then end to end with real model servers
behind a real router: a shadow running the same model agrees on every row, a shadow trained
on corrupted labels disagrees exactly where its predictions differ (counted offline with the
estimators themselves), and errors on either side are counted as incomparable.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from modelship_demo.models import DemoModel, train
from modelship_router.agreement import (
    NO_PREDICTIONS,
    NOT_JSON,
    PRIMARY_ERROR,
    SHADOW_ERROR,
    Comparison,
    compare,
    is_prediction,
)
from router_harness import VENV_BIN, free_port, routing, stop, wait_http, write_config


def v1(*rows: Any) -> bytes:
    return json.dumps({"predictions": list(rows)}).encode()


def v2(**outputs: list[Any]) -> bytes:
    return json.dumps(
        {"outputs": [{"name": n, "datatype": "FP64", "shape": [len(d)], "data": d}
                     for n, d in outputs.items()]}
    ).encode()  # fmt: skip


@pytest.mark.parametrize(
    ("primary", "shadow", "expected"),
    [
        ((200, v1(0, 1, 1)), (200, v1(0, 1, 1)), Comparison(3, 0)),
        ((200, v1(0, 1, 1)), (200, v1(1, 1, 0)), Comparison(1, 2)),
        ((200, v1("a", "b")), (200, v1("a", "B")), Comparison(1, 1)),
        ((200, v1(0.5, 1000.0)), (200, v1(0.5 + 1e-7, 1000.0005)), Comparison(2, 0)),
        ((200, v1(0.5, 1000.0)), (200, v1(0.5 + 1e-5, 1000.01)), Comparison(0, 2)),
        ((200, v1(True, 1)), (200, v1(1, 1)), Comparison(1, 1)),  # a bool is not a number
        ((200, v1([0.1, 0.9])), (200, v1([0.1, 0.9])), Comparison(1, 0)),
        ((200, v1([0.1, 0.9])), (200, v1([0.9, 0.1])), Comparison(0, 1)),
        ((200, v1(1, 2)), (200, v1(1, 2, 3)), Comparison(0, 3)),  # rows cannot be paired
        ((200, v1()), (200, v1()), Comparison(0, 0)),
        ((200, v2(p=[1, 0])), (200, v2(p=[1, 1])), Comparison(1, 1)),
        ((200, v2(p=[1, 0], q=[0.2])), (200, v2(q=[0.2], p=[1, 0])), Comparison(3, 0)),
        ((200, v2(p=[1, 0], q=[0.2])), (200, v2(p=[1, 0])), Comparison(2, 1)),
        ((201, v1(3)), (200, v1(3)), Comparison(1, 0)),
        ((500, b"oops"), (200, v1(0)), Comparison(incomparable=PRIMARY_ERROR)),
        ((422, v1(0)), (200, v1(0)), Comparison(incomparable=PRIMARY_ERROR)),
        ((None, b""), (200, v1(0)), Comparison(incomparable=PRIMARY_ERROR)),
        ((200, v1(0)), (503, v1(0)), Comparison(incomparable=SHADOW_ERROR)),
        ((200, v1(0)), (None, b""), Comparison(incomparable=SHADOW_ERROR)),
        ((200, v1(0)), (200, b"<html>"), Comparison(incomparable=NOT_JSON)),
        ((200, b"\xff\xfe"), (200, v1(0)), Comparison(incomparable=NOT_JSON)),
        (
            (200, b'{"ready": true}'),
            (200, b'{"ready": true}'),
            Comparison(incomparable=NO_PREDICTIONS),
        ),
        ((200, v1(0)), (200, b'{"outputs": []}'), Comparison(incomparable=NO_PREDICTIONS)),
        ((200, b"[1, 2]"), (200, b"[1, 2]"), Comparison(incomparable=NO_PREDICTIONS)),
    ],
)
def test_compare(
    primary: tuple[int | None, bytes], shadow: tuple[int | None, bytes], expected: Comparison
) -> None:
    assert compare(primary[0], primary[1], shadow[0], shadow[1]) == expected


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (b"/v1/models/churn:predict", True),
        (b"/v2/models/churn/infer", True),
        (b"/v2/models/churn/versions/2/infer?x=1", True),
        (b"/v1/models/churn:feedback", False),
        (b"/v2/models/churn/ready", False),
        (b"/v2/models/churn", False),
    ],
)
def test_only_predictions_are_compared(url: bytes, expected: bool) -> None:
    assert is_prediction(url) is expected


def test_nan_agrees_only_with_nan() -> None:
    nan = b'{"predictions": [NaN, NaN, 1.0]}'
    assert compare(200, nan, 200, b'{"predictions": [NaN, 0.0, 1.0]}') == Comparison(2, 1)


# --- end to end ----------------------------------------------------------------------------


class Serving:
    """A modelship-serve process on loopback with one of the demo's models."""

    def __init__(self, model: DemoModel, variant: str, log_dir: Path) -> None:
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        log_path = log_dir / f"serve-{variant}-{self.port}.log"
        self.proc = subprocess.Popen(
            [str(VENV_BIN / "modelship-serve"), "--model-uri", model.path.as_uri(),
             "--sha256", model.sha256, "--name", "churn", "--model-version", model.version,
             "--variant", variant, "--host", "127.0.0.1", "--port", str(self.port),
             "--grpc-port", "0", "--drain-seconds", "0"],
            stdout=log_path.open("wb"), stderr=subprocess.STDOUT,
        )  # fmt: skip
        self.proc.log_path = log_path  # type: ignore[attr-defined]
        wait_http(f"http://{self.address}/v2/health/live", self.proc, timeout=60)
        deadline = time.monotonic() + 60
        while httpx.get(f"http://{self.address}/v2/health/ready").status_code != 200:
            assert time.monotonic() < deadline and self.proc.poll() is None, "never ready"
            time.sleep(0.05)


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[DemoModel], np.ndarray]:
    models, holdout = train(tmp_path_factory.mktemp("models"))
    return models, holdout.features


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Any]:
    started: list[Serving] = []

    def spawn(model: DemoModel, variant: str) -> Serving:
        server = Serving(model, variant, tmp_path)
        started.append(server)
        return server

    yield spawn
    for server in started:
        stop(server.proc)  # type: ignore[arg-type]


def counts(metrics: str) -> dict[str, float]:
    """agree/disagree rows and incomparable reasons of the canary shadow."""
    found: dict[str, float] = {}
    for line in metrics.splitlines():
        for family, label in (
            ("modelship_router_shadow_predictions_total", "result"),
            ("modelship_router_shadow_incomparable_total", "reason"),
        ):
            if line.startswith(family + "{") and 'variant="canary"' in line:
                key = line.split(f'{label}="', 1)[1].split('"', 1)[0]
                found[key] = float(line.rsplit(" ", 1)[1])
    return found


def settle(router: Any, total: int, timeout: float = 20.0) -> dict[str, float]:
    """Counts once ``total`` comparisons (rows plus incomparable copies) are in."""
    deadline = time.monotonic() + timeout
    while True:
        found = counts(router.metrics())
        if sum(found.values()) >= total or time.monotonic() > deadline:
            return found
        time.sleep(0.05)


def direct_agreement(stable: Serving, shadow: Serving, rows: np.ndarray) -> int:
    """Rows on which the two servers, asked directly, predict the same class."""
    answers = []
    for server in (stable, shadow):
        resp = httpx.post(
            f"http://{server.address}/v1/models/churn:predict",
            json={"instances": rows.tolist()},
            timeout=30,
        )
        answers.append(np.array(resp.json()["predictions"]))
    return int((answers[0] == answers[1]).sum())


@pytest.mark.parametrize("shadow_version", ["1.0.0", "3.0.0"], ids=["same", "corrupted"])
def test_shadow_rows_are_counted_exactly_as_the_models_differ(
    tmp_path: Path,
    demo: tuple[list[DemoModel], np.ndarray],
    serve: Any,
    spawn_router: Any,
    shadow_version: str,
) -> None:
    models, features = demo
    by_version = {m.version: m for m in models}
    stable_model, shadow_model = by_version["1.0.0"], by_version[shadow_version]
    stable = serve(stable_model, "stable")
    shadow = serve(shadow_model, "canary")
    config = tmp_path / "routing.json"
    mirror = {"variant": "canary", "percent": 100}
    write_config(config, routing([stable.address], [shadow.address], 0, mirror=mirror))
    router = spawn_router(config)

    rows = features[:120]
    batches = [rows[i : i + 3] for i in range(0, len(rows), 3)]
    with httpx.Client(base_url=router.url, timeout=30) as client:
        for i, batch in enumerate(batches):
            if i % 2:
                body = {"instances": batch.tolist()}
                resp = client.post("/v1/models/churn:predict", json=body)
            else:
                tensor = {"name": "input-0", "shape": list(batch.shape), "datatype": "FP64",
                          "data": batch.ravel().tolist()}  # fmt: skip
                resp = client.post("/v2/models/churn/infer", json={"inputs": [tensor]})
            assert resp.status_code == 200, resp.text
            assert resp.headers["x-modelship-variant"] == "stable"
        # Not predictions: mirrored, not compared.
        assert client.get("/v2/models/churn/ready").status_code == 200
        feedback = {"feedback": [{"request_id": "nobody", "label": 1}]}
        assert client.post("/v1/models/churn:feedback", json=feedback).status_code < 500

    found = settle(router, len(rows))
    agree = direct_agreement(stable, shadow, rows)
    assert found == {"agree": agree, "disagree": len(rows) - agree}, router.metrics()
    if shadow_version == "1.0.0":
        assert agree == len(rows)
    else:  # the corrupted model is wrong on large tumours, so it disagrees there
        assert 0 < agree < len(rows) - 10


def test_errors_on_either_side_are_incomparable_not_disagreement(
    tmp_path: Path, demo: tuple[list[DemoModel], np.ndarray], serve: Any, spawn_router: Any
) -> None:
    models, features = demo
    stable = serve(models[0], "stable")
    shadow = serve(models[0], "canary")
    config = tmp_path / "routing.json"
    mirror = {"variant": "canary", "percent": 100}
    write_config(config, routing([stable.address], [shadow.address], 0, mirror=mirror))
    router = spawn_router(config)
    # Published at zero before any comparison: the analysis takes increase() over a window,
    # which a series born inside the window would not show.
    assert counts(router.metrics()) == {"agree": 0, "disagree": 0}
    with httpx.Client(base_url=router.url, timeout=30) as client:
        for _ in range(4):  # the client's own mistake: 4xx from stable, nothing to compare
            bad = client.post("/v1/models/churn:predict", json={"instances": [[1.0, 2.0]]})
            assert bad.status_code == 422
        assert settle(router, 4) == {"agree": 0, "disagree": 0, PRIMARY_ERROR: 4}
        stop(shadow.proc)  # type: ignore[arg-type]
        for _ in range(3):
            ok = client.post("/v1/models/churn:predict", json={"instances": [features[0].tolist()]})
            assert ok.status_code == 200
    found = settle(router, 5)
    assert found.get(PRIMARY_ERROR) == 4
    assert found["agree"] == 0 and found["disagree"] == 0
    assert found.get(SHADOW_ERROR, 0) >= 1  # copies that could still be sent failed
