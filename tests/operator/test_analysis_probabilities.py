"""log-loss, roc-auc and drift end to end without a cluster: real model servers (stable and
canary, real scikit-learn models trained here and saved with a reference profile of their
training inputs) answer predictions and ground truth over HTTP, a real Prometheus scrapes
their /metrics, and the operator's analysis queries it and judges. The values must be
scikit-learn's own ``log_loss`` and ``roc_auc_score`` on the same rows, and the PSI of the
rows sent against the profile.

Every series is scraped at zero for a whole window before the traffic, and the analysis is
evaluated at a last scrape once everything shows (as in test_analysis_runner.py), so the
windowed ratios carry no extrapolation error.
"""

from __future__ import annotations

import asyncio
import bisect
import json
import math
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from analysis_prom import PrometheusProcess
from mdep_fixtures import ACCESS, SHA_CANARY, base_resource, rolling_out
from modelship_operator.analysis.prometheus import PrometheusClient
from modelship_operator.analysis.runner import analyse
from modelship_operator.rollout import Analysis, RolloutState, target
from modelship_operator.spec import ModelDeployment
from modelship_operator.status import Traffic
from modelship_serving.artifacts import save_model
from modelship_serving.contract import SCORE_BUCKETS
from modelship_serving.profile import profile_of, psi
from sklearn.datasets import load_breast_cancer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import log_loss, roc_auc_score
from sklearn.model_selection import train_test_split
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

# The serving tests' helpers start real model servers (as tests/storage does).
sys.path.append(str(Path(__file__).resolve().parents[1] / "serving"))
from serving_helpers import Artifact, Server, start_server, stop_server

pytestmark = pytest.mark.slow

WINDOW = 15
ROWS = 500  # PSI_MIN_ROWS: each pod's drift needs as many rows
STABLE, CANARY = "1.4.0", "2.0.0"
#: A third server, a canary version sent inputs whose first feature moved by 3 std.
DRIFTED = "3.0.0"


@dataclass
class Scraped:
    """A model server as a scrape target of :class:`PrometheusProcess` (which reads the port
    and the labels a Kubernetes scrape would add)."""

    port: int
    labels: dict[str, str]


@dataclass(frozen=True)
class Bed:
    prom: PrometheusProcess
    at: datetime
    rows: np.ndarray
    truth: np.ndarray
    models: dict[str, Pipeline]
    #: The training inputs (the reference profile) and the rows the drifted canary got.
    train: np.ndarray
    shifted: np.ndarray


def _train(C: float, X: np.ndarray, y: np.ndarray) -> Pipeline:
    return make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=5000)).fit(X, y)


def _server(tmp: Path, model: Pipeline, X: np.ndarray, y: np.ndarray, variant: str,
            version: str) -> Server:  # fmt: skip
    path = tmp / f"{variant}-{version}.skops"
    artifact = Artifact(path, save_model(model, path, reference=X), X, y, model)
    env = {
        "MODELSHIP_DEPLOYMENT": "churn",
        "MODELSHIP_FEEDBACK_LOG_LOSS": "true",
        "MODELSHIP_FEEDBACK_SCORE_CLASSES": json.dumps(["1"]),  # as the operator renders it
    }
    return start_server(tmp, artifact, "--variant", variant, "--model-version", version,
                        "--sha256", artifact.sha256, name="churn", env=env)  # fmt: skip


def _traffic(server: Server, rows: np.ndarray, truth: np.ndarray, variant: str) -> None:
    """Each row predicted alone (a client's request id), then its true label as feedback."""
    for i, row in enumerate(rows):
        rid = f"{variant}-{i}"
        answer = server.client.post("/v1/models/churn:predict",
                                    json={"instances": [row.tolist()]},
                                    headers={"x-request-id": rid})  # fmt: skip
        assert answer.status_code == 200, answer.text
        assert "probabilities" not in answer.json()  # remembered, not answered unasked
    feedback = [{"request_id": f"{variant}-{i}", "label": int(t)} for i, t in enumerate(truth)]
    answer = server.client.post("/v1/models/churn:feedback", json={"feedback": feedback})
    assert answer.status_code == 200 and answer.json()["matched"] == len(rows), answer.text


@pytest.fixture(scope="module")
def bed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bed]:
    tmp = tmp_path_factory.mktemp("probabilities")
    X, y = load_breast_cancer(return_X_y=True)
    X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.4, random_state=3)
    # stable: a good model; canary: one regularised so hard that it hedges every answer
    # (about as often right, far less sure: what log-loss sees and accuracy does not).
    models = {"stable": _train(1.0, X_train, y_train), "canary": _train(0.002, X_train, y_train)}
    servers = {
        STABLE: _server(tmp, models["stable"], X_train, y_train, "stable", STABLE),
        CANARY: _server(tmp, models["canary"], X_train, y_train, "canary", CANARY),
        DRIFTED: _server(tmp, models["canary"], X_train, y_train, "canary", DRIFTED),
    }
    targets = [
        Scraped(int(s.base.rsplit(":", 1)[1]), {"namespace": "ml", "pod": f"churn-{v}"})
        for v, s in servers.items()
    ]
    prom = PrometheusProcess(tmp, targets)  # type: ignore[arg-type]
    try:
        prom.start()
        prom.wait_value('count(up{job="pods"} == 1)', lambda v: v == len(targets))
        # a whole window of zeros before the traffic
        prom.wait_value(
            f"min(count_over_time(modelship_feedback_log_loss_count[{WINDOW + 2}s]))",
            lambda v: v >= WINDOW + 1,
        )
        # The test split's rows drawn with replacement (the PSI needs 500 of them).
        pick = np.random.default_rng(5).integers(0, len(X_test), ROWS)
        rows, truth = X_test[pick], y_test[pick]
        shifted = rows.copy()
        shifted[:, 0] += 3 * X_train[:, 0].std()
        for version, server in servers.items():
            _traffic(server, shifted if version == DRIFTED else rows, truth, version)
        for version in servers:
            prom.wait_value(
                f'sum(modelship_feedback_log_loss_count{{version="{version}"}})',
                lambda v: v == ROWS,
            )
            prom.wait_value(f'count(modelship_input_feature_psi{{version="{version}"}})',
                            lambda v: v == X.shape[1])  # fmt: skip
        # The evaluation instant: the later of the two targets' last scrapes, both of which
        # show every row (each variant's numbers are ratios of its own series, so the other
        # target's last scrape being up to a second earlier changes nothing).
        stamp = prom.instant("max(timestamp(modelship_feedback_log_loss_count))")
        at = datetime.fromtimestamp(float(stamp[0]["value"][1]), UTC)
        yield Bed(prom, at, rows, truth, models, X_train, shifted)
    finally:
        prom.stop()
        for server in servers.values():
            stop_server(server)


def _analyse(bed: Bed, metrics: list[dict[str, Any]], version: str = CANARY) -> Analysis:
    body = base_resource(
        strategy={"interval": f"{WINDOW}s", "minSamples": 50, "metrics": metrics}, access=ACCESS
    )
    candidate = {"version": version, "uri": "file:///models/x.skops", "sha256": SHA_CANARY}
    md = ModelDeployment.from_api(rolling_out(body, candidate))
    key = target(md).key
    assert key is not None
    begun = RolloutState.begin(key, None, bed.at - timedelta(seconds=WINDOW))
    fields = begun.status_fields() | {"traffic": Traffic(stable=90, canary=10)}
    md = md.model_copy(update={"status": md.status.model_copy(update=fields)})
    state = RolloutState.from_status(md.status)
    assert state is not None

    async def go() -> Analysis:
        async with PrometheusClient(bed.prom.url, timeout=5) as client:
            return await analyse(md, state, client, bed.at)

    return asyncio.run(go())


def _binned(scores: np.ndarray) -> np.ndarray:
    bounds = [*SCORE_BUCKETS, math.inf]
    return np.array([bisect.bisect_left(bounds, s) for s in scores])


def test_log_loss_is_sklearns_and_rolls_back_a_hedging_canary(bed: Bed) -> None:
    checks = {
        c.metric: c
        for c in _analyse(
            bed,
            [
                {"name": "log-loss", "max": 0.2},
                {"name": "accuracy", "min": 85},
            ],
        ).checks
    }
    expected = log_loss(bed.truth, bed.models["canary"].predict_proba(bed.rows), labels=[0, 1])
    assert checks["log-loss"].value == pytest.approx(expected, rel=1e-6)
    accuracy = 100 * (bed.models["canary"].predict(bed.rows) == bed.truth).mean()
    assert checks["accuracy"].value == pytest.approx(accuracy, rel=1e-9)
    # Right about as often as a good model, yet far less sure: accuracy passes, log-loss
    # (0.33 against stable's 0.08) does not.
    assert checks["accuracy"].verdict == "Successful"
    assert checks["log-loss"].verdict == "Failed", checks["log-loss"]
    compared = {
        c.metric: c
        for c in _analyse(
            bed, [{"name": "log-loss", "compareTo": "stable", "margin": {"relative": 0.5}}]
        ).checks
    }
    stable = log_loss(bed.truth, bed.models["stable"].predict_proba(bed.rows), labels=[0, 1])
    assert stable < expected / 2  # the canary really is worse
    assert compared["log-loss"].stable_value == pytest.approx(stable, rel=1e-6)
    assert compared["log-loss"].verdict == "Failed", compared["log-loss"]


def test_roc_auc_is_sklearns_on_the_binned_scores(bed: Bed) -> None:
    checks = {
        c.metric: c
        for c in _analyse(
            bed,
            [
                {"name": "roc-auc", "className": "1", "min": 0.9},
            ],
        ).checks
    }
    scores = bed.models["canary"].predict_proba(bed.rows)[:, 1]
    positive = bed.truth == 1
    value = checks["roc-auc"].value
    assert value == pytest.approx(roc_auc_score(positive, _binned(scores)), abs=1e-9)
    assert value == pytest.approx(roc_auc_score(positive, scores), abs=0.01)
    assert checks["roc-auc"].verdict == "Successful"
    # An AUC the canary cannot reach fails it.
    strict = _analyse(bed, [{"name": "roc-auc", "className": "1", "min": 0.9999}])
    assert strict.checks[0].verdict == "Failed"


def test_a_class_without_feedback_rows_on_one_side_is_inconclusive(bed: Bed) -> None:
    analysis = _analyse(bed, [{"name": "roc-auc", "className": "0", "min": 0.5}])
    # Only class "1" has score histograms (MODELSHIP_FEEDBACK_SCORE_CLASSES): no data.
    assert analysis.checks[0].verdict == "Inconclusive", analysis.checks[0]


def _worst_psi(train: np.ndarray, rows: np.ndarray) -> float:
    profile = profile_of(train)
    values = [psi(f, rows[:, j]) for j, f in enumerate(profile.features)]
    return max(v for v in values if v is not None)


def test_drift_is_the_worst_features_psi_and_stops_a_canary_sent_other_inputs(bed: Bed) -> None:
    check = {"name": "drift", "max": 0.25}
    calm = _analyse(bed, [check]).checks[0]
    # Sampling noise alone gives a PSI of about 9/500 against deciles.
    assert calm.value == pytest.approx(_worst_psi(bed.train, bed.rows), rel=1e-9)
    assert calm.verdict == "Successful", calm
    drifted = _analyse(bed, [check], version=DRIFTED).checks[0]
    assert drifted.value == pytest.approx(_worst_psi(bed.train, bed.shifted), rel=1e-9)
    assert drifted.value > 1, drifted  # a 3-std shift empties most training bins
    assert drifted.verdict == "Failed", drifted
