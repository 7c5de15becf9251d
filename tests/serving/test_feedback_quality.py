"""The log loss and the per-class score histograms of feedback (MODELSHIP_FEEDBACK_LOG_LOSS,
MODELSHIP_FEEDBACK_SCORE_CLASSES): scoring, settings, and real modelship-serve processes
serving models trained here, checked against scikit-learn on the same rows."""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
import tritonclient.grpc as triton
from modelship_serving import contract
from modelship_serving.app import create_app
from modelship_serving.artifacts import save_model
from modelship_serving.config import Settings
from modelship_serving.feedback import PredictionStore, Stored, score_feedback
from modelship_serving.loading import load_model
from modelship_serving.quality import OFF, QualityPlan, plan_quality
from prometheus_client import generate_latest
from serving_helpers import Artifact, Server, start_server, stop_server
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import log_loss
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from tabular_models import TabularArtifact, records

LOSS = contract.FEEDBACK_LOG_LOSS
SCORE = contract.FEEDBACK_SCORE

# -- scoring (pure) ---------------------------------------------------------------------------


def _plan(*scored: tuple[int, str], log: bool = True) -> QualityPlan:
    return QualityPlan(log, tuple(n for _, n in scored), tuple(i for i, _ in scored))


def test_scoring_gives_log_loss_terms_and_scores_of_unpinned_rows() -> None:
    store = PredictionStore(max_rows=100, ttl=100)
    store.put("a", ["x", "y"], probabilities=((0.7, 0.2, 0.1), (0.0, 1.0, 0.0)))
    store.put("tester", ["x"], pinned=True, probabilities=((0.9, 0.05, 0.05),))
    store.put("plain", ["z"])  # predicted before the probabilities were remembered
    payload = {
        "feedback": [
            {"request_id": "a", "labels": ["x", "z"]},
            {"request_id": "tester", "label": "x"},
            {"request_id": "plain", "label": "z"},
        ]
    }
    result = score_feedback(payload, store, False, ["x", "y", "z"], _plan((1, "y"), (0, "x")))
    assert result.rows == 4 and result.pinned_rows == 1
    # p(true) 0.7, then 0.0 clipped to scikit-learn's eps
    assert result.log_losses == [-math.log(0.7), -math.log(contract.LOG_LOSS_EPS)]
    assert result.scores == [
        ("y", False, 0.2),
        ("x", True, 0.7),
        ("y", False, 1.0),
        ("x", False, 0.0),
    ]


def test_a_truth_that_is_no_class_is_only_a_negative() -> None:
    store = PredictionStore(max_rows=100, ttl=100)
    store.put("a", [1, 0], probabilities=((0.25, 0.75), (0.5, 0.5)))
    payload = {"feedback": [{"request_id": "a", "labels": ["maybe", 1.0]}]}
    result = score_feedback(payload, store, False, ["0", "1"], _plan((1, "1")))
    # 1.0 is not the class "1" when compared as strings, as the confusion counts do
    assert result.log_losses == []
    assert result.scores == [("1", False, 0.75), ("1", False, 0.5)]
    store.put("b", [1], probabilities=((0.25, 0.75),))
    result = score_feedback(
        {"feedback": [{"request_id": "b", "label": 1}]}, store, False, ["0", "1"], _plan((1, "1"))
    )
    assert result.log_losses == [-math.log(0.75)] and result.scores == [("1", True, 0.75)]


def test_scoring_needs_a_plan_that_asks() -> None:
    store = PredictionStore(max_rows=100, ttl=100)
    store.put("a", [1], probabilities=((0.25, 0.75),))
    store.put("b", [1], probabilities=((0.25, 0.75),))
    one = {"feedback": [{"request_id": "a", "label": 1}]}
    only_scores = score_feedback(one, store, False, ["0", "1"], _plan((0, "0"), log=False))
    assert only_scores.log_losses == [] and only_scores.scores == [("0", False, 0.25)]
    none = score_feedback({"feedback": [{"request_id": "b", "label": 1}]}, store, False, ["0", "1"])
    assert none.log_losses == [] and none.scores == [] and none.correct == 1


def test_the_store_keeps_probabilities_within_its_bound() -> None:
    store = PredictionStore(max_rows=3, ttl=100)
    store.put("a", [1, 0], probabilities=((0.1, 0.9), (0.8, 0.2)))
    store.put("b", [1, 1], probabilities=((0.3, 0.7), (0.4, 0.6)))  # pushes "a" out
    assert store.rows == 2 and store.take("a") is None
    assert store.take("b") == Stored([1, 1], False, ((0.3, 0.7), (0.4, 0.6)))
    store.put("c", [0])
    assert store.take("c") == Stored([0], False, None)


def test_the_plan_follows_the_model_and_warns_about_the_rest() -> None:
    def plan(**kw: Any) -> QualityPlan:
        model = {"estimator_type": "classifier", "has_predict_proba": True, "classes": [0, 1]}
        return plan_quality(kw.pop("log", False), kw.pop("scored", ()), **{**model, **kw})

    assert plan() is OFF and not OFF.remember
    both = plan(log=True, scored=["1", "nope", "1"])
    assert (both.log_loss, both.score_classes, both.score_indices) == (True, ("1",), (1,))
    assert both.remember and len(both.warnings) == 1 and "'nope'" in both.warnings[0]
    scores_only = plan(scored=["nope"])
    assert not scores_only.remember and scores_only.warnings
    for refused, why in (
        (plan(log=True, estimator_type="regressor", classes=None), "not a classifier"),
        (plan(scored=["1"], has_predict_proba=False), "no predict_proba"),
        (plan(log=True, classes=list(range(contract.MAX_SCORED_CLASSES + 1))), "33 classes"),
    ):
        assert not refused.remember and why in refused.warnings[0]
    assert plan(log=True, classes=list(range(contract.MAX_SCORED_CLASSES))).log_loss


def test_score_classes_are_a_json_list_or_comma_separated(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODELSHIP_FEEDBACK_SCORE_CLASSES", '["1", "a,b"]')
    monkeypatch.setenv("MODELSHIP_FEEDBACK_LOG_LOSS", "true")
    settings = Settings(model_uri="file:///m.skops")
    assert settings.feedback_score_classes == ["1", "a,b"] and settings.feedback_log_loss
    monkeypatch.setenv("MODELSHIP_FEEDBACK_SCORE_CLASSES", " churn, 1 ,")
    assert Settings(model_uri="file:///m.skops").feedback_score_classes == ["churn", "1"]
    monkeypatch.setenv("MODELSHIP_FEEDBACK_SCORE_CLASSES", "[not json")
    with pytest.raises(ValueError, match="JSON list"):
        Settings(model_uri="file:///m.skops")
    monkeypatch.delenv("MODELSHIP_FEEDBACK_SCORE_CLASSES")
    monkeypatch.delenv("MODELSHIP_FEEDBACK_LOG_LOSS")
    defaults = Settings(model_uri="file:///m.skops")
    assert defaults.feedback_score_classes == [] and not defaults.feedback_log_loss


# -- in process: what is remembered, what is exported, what is warned ---------------------------


def _app_text(settings: Settings) -> tuple[Any, str]:
    app = create_app(settings, model=load_model(settings))
    return app, generate_latest(app.metrics.registry).decode()


def test_off_nothing_is_remembered_or_exported(classifier: Artifact) -> None:
    app, text = _app_text(Settings(model_uri=classifier.uri))
    assert LOSS not in text and SCORE not in text
    plane = app.lifecycle.dataplane
    plane.v1_predict_now(b'{"instances": %s}' % str(classifier.X[:2].tolist()).encode(), "r1")
    assert plane.store.take("r1").probabilities is None


def test_on_probabilities_are_remembered_but_not_answered(classifier: Artifact) -> None:
    settings = Settings(
        model_uri=classifier.uri, feedback_log_loss=True, feedback_score_classes=["0"]
    )
    app, text = _app_text(settings)
    assert f"{LOSS}_count{{" in text and f"{SCORE}_bucket{{" in text
    plane = app.lifecycle.dataplane
    body = b'{"instances": %s}' % str(classifier.X[:2].tolist()).encode()
    assert b"probabilities" not in plane.v1_predict_now(body, "r1")
    expected = classifier.estimator.predict_proba(classifier.X[:2])  # type: ignore[attr-defined]
    np.testing.assert_allclose(plane.store.take("r1").probabilities, expected, rtol=1e-9)
    # No store, nothing to score: the prediction path stays as it was.
    app, text = _app_text(settings.model_copy(update={"prediction_store_size": 0}))
    assert not app.lifecycle.dataplane._proba_always


def test_a_regressor_ignores_the_settings_with_a_warning(
    regressor: Artifact, caplog: pytest.LogCaptureFixture
) -> None:
    settings = Settings(
        model_uri=regressor.uri, feedback_log_loss=True, feedback_score_classes=["1"]
    )
    with caplog.at_level(logging.WARNING, logger="modelship.serving"):
        _, text = _app_text(settings)
    assert LOSS not in text and SCORE not in text
    assert "feedback_log_loss is ignored: the model is not a classifier" in caplog.text


# -- real servers ------------------------------------------------------------------------------


def _samples(server: Server, family: str) -> dict[tuple[tuple[str, str], ...], float]:
    """Every sample of ``family`` (its _bucket, _sum, _count, ...) by name and labels."""
    out: dict[tuple[tuple[str, str], ...], float] = {}
    for line in server.client.get("/metrics").text.splitlines():
        if not line.startswith(family):
            continue
        series, value = line.rsplit(" ", 1)
        labels = dict(re.findall(r'(\w+)="([^"]*)"', series))
        labels["__name__"] = series.split("{")[0]
        out[tuple(sorted(labels.items()))] = float(value)
    return out


def _value(samples: dict[tuple[tuple[str, str], ...], float], name: str, **labels: str) -> float:
    found = [
        v
        for key, v in samples.items()
        if dict(key)["__name__"] == name and all(dict(key).get(k) == x for k, x in labels.items())
    ]
    assert len(found) == 1, (name, labels, found)
    return found[0]


def _bounds() -> list[str]:
    return [*(repr(float(b)) for b in contract.SCORE_BUCKETS), "+Inf"]


def assert_histogram(server: Server, cls: str, scores: np.ndarray, positive: np.ndarray) -> None:
    """The score histogram of ``cls`` holds ``scores``, split by ``positive``."""
    samples = _samples(server, SCORE)
    for flag, rows in (("true", scores[positive]), ("false", scores[~positive])):
        labels = {"class": cls, "positive": flag}
        for bound in _bounds():
            got = _value(samples, f"{SCORE}_bucket", le=bound, **labels)
            assert got == np.count_nonzero(rows <= float(bound)), (cls, flag, bound)
        assert _value(samples, f"{SCORE}_count", **labels) == len(rows)
        assert _value(samples, f"{SCORE}_sum", **labels) == pytest.approx(rows.sum(), rel=1e-9)


def assert_log_loss(server: Server, truth: np.ndarray, proba: np.ndarray, classes: Any) -> None:
    samples = _samples(server, LOSS)
    count = _value(samples, f"{LOSS}_count")
    assert count == len(truth)
    expected = log_loss(truth, proba, labels=classes)
    assert _value(samples, f"{LOSS}_sum") / count == pytest.approx(expected, rel=1e-9)


class Traffic:
    """Rows predicted through every kind of request, with what each answer held."""

    def __init__(self, server: Server, name: str) -> None:
        self.server, self.name = server, name
        self.feedback: list[dict[str, Any]] = []

    def _label(self, rid: str, truth: np.ndarray) -> None:
        self.feedback.append({"request_id": rid, "labels": truth.tolist()})

    def v1(self, rid: str, rows: np.ndarray, truth: np.ndarray, pinned: bool = False) -> None:
        headers = {"x-request-id": rid, **({"x-modelship-pinned": "1"} if pinned else {})}
        answer = self.server.client.post(
            f"/v1/models/{self.name}:predict", json={"instances": rows.tolist()}, headers=headers
        )
        assert answer.status_code == 200, answer.text
        assert set(answer.json()) == {"predictions"}
        self._label(rid, truth)

    def v2(self, rid: str, rows: np.ndarray, truth: np.ndarray) -> None:
        body = {"inputs": [{"name": "input-0", "shape": list(rows.shape), "datatype": "FP64",
                            "data": rows.reshape(-1).tolist()}]}  # fmt: skip
        answer = self.server.client.post(
            f"/v2/models/{self.name}/infer", json=body, headers={"x-request-id": rid}
        )
        assert answer.status_code == 200, answer.text
        assert [o["name"] for o in answer.json()["outputs"]] == ["predict"]
        self._label(rid, truth)

    def grpc(self, rid: str, rows: np.ndarray, truth: np.ndarray) -> None:
        client = triton.InferenceServerClient(self.server.grpc_target)
        try:
            tensor = triton.InferInput("input-0", list(rows.shape), "FP64")
            tensor.set_data_from_numpy(rows)
            result = client.infer(self.name, [tensor], headers={"x-request-id": rid})
        finally:
            client.close()
        assert [o.name for o in result.get_response().outputs] == ["predict"]
        self._label(rid, truth)

    def send_feedback(self) -> None:
        response = self.server.client.post(
            f"/v1/models/{self.name}:feedback", json={"feedback": self.feedback}
        )
        assert response.status_code == 200, response.text
        assert response.json()["matched"] == len(self.feedback)


@pytest.fixture(scope="module")
def bc_server(tmp_path_factory: pytest.TempPathFactory, classifier: Artifact) -> Iterator[Server]:
    """The breast-cancer classifier with the log loss and class 1's scores, on the
    protocol-level lane (one-row requests stay in Python values)."""
    env = {
        "MODELSHIP_FEEDBACK_LOG_LOSS": "true",
        "MODELSHIP_FEEDBACK_SCORE_CLASSES": '["1", "nope"]',
    }
    server = start_server(tmp_path_factory.mktemp("srv"), classifier, name="bc", env=env)
    yield server
    stop_server(server)


def test_binary_feedback_gives_sklearns_log_loss_and_score_histogram(
    bc_server: Server, classifier: Artifact
) -> None:
    # Published at zero from the start, for both values of positive.
    assert _value(_samples(bc_server, LOSS), f"{LOSS}_count") == 0
    assert_histogram(bc_server, "1", np.array([]), np.array([], dtype=bool))
    assert "'nope' is not one of the model's classes" in bc_server.log()
    X, y = classifier.X[:80], classifier.y[:80].astype(object)
    y[7] = "maybe"  # none of the classes: out of the log loss, a negative of every class
    traffic = Traffic(bc_server, "bc")
    for i in range(5):
        traffic.v1(f"bc-v1-{i}", X[i : i + 1], y[i : i + 1])
    traffic.v1("bc-v1-batch", X[5:25], y[5:25])
    for i in range(25, 30):
        traffic.v2(f"bc-v2-{i}", X[i : i + 1], y[i : i + 1])
    traffic.v2("bc-v2-batch", X[30:50], y[30:50])
    traffic.grpc("bc-grpc", X[50:70], y[50:70])
    # A tester's rows: joined and answered, but in none of these series.
    traffic.v1("bc-pinned", X[70:80], y[70:80], pinned=True)
    traffic.send_feedback()
    proba = classifier.estimator.predict_proba(X[:70])  # type: ignore[attr-defined]
    truth = y[:70]
    known = np.array([t != "maybe" for t in truth])
    assert_log_loss(bc_server, truth[known].astype(int), proba[known], [0, 1])
    assert_histogram(bc_server, "1", proba[:, 1], truth == 1)
    samples = _samples(bc_server, SCORE)
    assert {dict(key)["class"] for key in samples} == {"1"}


def test_asking_for_probabilities_still_gets_them(bc_server: Server, classifier: Artifact) -> None:
    rows = classifier.X[100:102]
    answer = bc_server.client.post(
        "/v1/models/bc:predict", json={"instances": rows.tolist(), "probabilities": True}
    ).json()
    expected = classifier.estimator.predict_proba(rows)  # type: ignore[attr-defined]
    np.testing.assert_allclose(answer["probabilities"], expected, rtol=1e-9)
    one = bc_server.client.post(
        "/v2/models/bc/infer",
        json={"inputs": [{"name": "input-0", "shape": [1, rows.shape[1]], "datatype": "FP64",
                          "data": rows[0].tolist()}],
              "outputs": [{"name": "predict_proba"}]},
    ).json()  # fmt: skip
    assert [o["name"] for o in one["outputs"]] == ["predict_proba"]
    np.testing.assert_allclose(one["outputs"][0]["data"], expected[0], rtol=1e-9)


@pytest.fixture(scope="module")
def iris(tmp_path_factory: pytest.TempPathFactory) -> Artifact:
    """Three string classes, a scaler in front."""
    X, y = load_iris(return_X_y=True)
    labels = np.array(["setosa", "versicolor", "virginica"])[y]
    est = make_pipeline(StandardScaler(), LogisticRegression(C=0.05)).fit(X, labels)
    path = Path(tmp_path_factory.mktemp("models")) / "iris-scores.skops"
    return Artifact(path, save_model(est, path), X, labels, est)


def test_three_classes_on_the_asgi_lane(
    tmp_path_factory: pytest.TempPathFactory, iris: Artifact
) -> None:
    """No protocol-level lane (inline rows 0: batches in worker threads), two scored classes
    named by hand, comma separated."""
    env = {
        "MODELSHIP_FEEDBACK_LOG_LOSS": "true",
        "MODELSHIP_FEEDBACK_SCORE_CLASSES": "virginica, setosa",
        "MODELSHIP_INLINE_MAX_ROWS": "0",
    }
    tmp = tmp_path_factory.mktemp("srv")
    server = start_server(tmp, iris, "--grpc-port", "0", name="iris", env=env)
    try:
        order = np.random.default_rng(0).permutation(len(iris.X))[:60]
        X, y = iris.X[order], iris.y[order].astype(object)
        y[[3, 40]] = "daisy"
        traffic = Traffic(server, "iris")
        for i in range(4):
            traffic.v1(f"ir-v1-{i}", X[i : i + 1], y[i : i + 1])
        traffic.v1("ir-v1-batch", X[4:30], y[4:30])
        traffic.v2("ir-v2-one", X[30:31], y[30:31])
        traffic.v2("ir-v2-batch", X[31:50], y[31:50])
        traffic.v1("ir-pinned", X[50:60], y[50:60], pinned=True)
        traffic.send_feedback()
        est = iris.estimator
        proba = est.predict_proba(X[:50])  # type: ignore[attr-defined]
        truth = y[:50]
        known = truth != "daisy"
        assert_log_loss(server, truth[known], proba[known], est.classes_)  # type: ignore[attr-defined]
        for cls in ("virginica", "setosa"):
            k = list(est.classes_).index(cls)  # type: ignore[attr-defined]
            assert_histogram(server, cls, proba[:, k], truth == cls)
    finally:
        stop_server(server)


def test_the_exported_families_are_the_contracts() -> None:
    """Names, types, labels and buckets as contract.py declares them (the operator's
    queries import the same names)."""
    from modelship_serving.metrics import ServingMetrics
    from prometheus_client.parser import text_string_to_metric_families

    metrics = ServingMetrics("bc", "1", "canary", deployment="bc")
    metrics.model_loaded(
        sha256="ab" * 32,
        sklearn_version="1.9",
        sklearn_saved_version="1.9",
        inference_path="sklearn",
        estimator="x.Y",
        load_seconds=0.5,
        classes=["no", "yes"],
        feature_names=["f0"],
        drift_window=16,
        quality=plan_quality(
            True,
            ["yes"],
            estimator_type="classifier",
            has_predict_proba=True,
            classes=["no", "yes"],
        ),
    )
    metrics.observe_log_losses([0.5, 0.25])
    metrics.observe_scores([("yes", True, 0.9), ("yes", False, 0.2), ("no", True, 0.3)])
    families = {
        f.name: f
        for f in text_string_to_metric_families(generate_latest(metrics.registry).decode())
    }
    loss, score = families[LOSS], families[SCORE]
    assert LOSS in contract.SUMMARIES and loss.type == "summary"
    assert {s.name: s.value for s in loss.samples} == {f"{LOSS}_sum": 0.75, f"{LOSS}_count": 2}
    assert SCORE in contract.HISTOGRAMS and score.type == "histogram"
    buckets = [s for s in score.samples if s.name.endswith("_bucket")]
    assert {(s.labels["class"], s.labels["positive"]) for s in buckets} == {
        ("yes", "true"),
        ("yes", "false"),
    }
    bounds = [float(s.labels["le"]) for s in buckets if s.labels["positive"] == "true"]
    assert bounds == [*contract.SCORE_BUCKETS, math.inf]
    assert set(buckets[0].labels) == {
        *contract.BASE_LABELS,
        contract.CLASS,
        contract.POSITIVE,
        "le",
    }


def test_a_tabular_pipeline_remembers_probabilities_too(churn: TabularArtifact) -> None:
    """Named, mixed-type columns (V1 records): the same, through the tabular decoding and
    the DataFrame pipeline."""
    settings = Settings(model_uri=churn.uri, feedback_log_loss=True)
    app, _ = _app_text(settings)
    plane = app.lifecycle.dataplane
    frame = churn.frame.iloc[:6]
    body = orjson.dumps({"instances": records(frame)})
    for rid in ("t1", "t2"):
        assert set(orjson.loads(plane.v1_predict_now(body, rid))) == {"predictions"}
    expected = churn.estimator.predict_proba(frame)
    np.testing.assert_allclose(plane.store.take("t1").probabilities, expected, rtol=1e-9)
    truth = churn.y[:6].tolist()
    plane.feedback(orjson.dumps({"feedback": [{"request_id": "t2", "labels": truth}]}))
    text = generate_latest(app.metrics.registry).decode()
    count = float(re.search(rf"{LOSS}_count\{{[^}}]*\}} (\S+)", text).group(1))  # type: ignore[union-attr]
    total = float(re.search(rf"{LOSS}_sum\{{[^}}]*\}} (\S+)", text).group(1))  # type: ignore[union-attr]
    assert count == 6
    classes = churn.estimator.classes_
    assert total / count == pytest.approx(log_loss(truth, expected, labels=classes), rel=1e-9)
