"""End-to-end behaviour of a real modelship-serve process on loopback."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from serving_helpers import Artifact, Server, start_server, stop_server


def metric(server: Server, name: str, **labels: str) -> float:
    """Value of one series from /metrics (0 when absent)."""
    text = server.client.get("/metrics").text
    for line in text.splitlines():
        if not line.startswith(name + "{") and line.split(" ")[0] != name:
            continue
        series, value = line.rsplit(" ", 1)
        found = dict(re.findall(r'(\w+)="([^"]*)"', series))
        if series.split("{")[0] == name and all(found.get(k) == v for k, v in labels.items()):
            return float(value)
    return 0.0


def test_v1_predict_matches_scikit_learn_with_probabilities(
    classifier_server: Server, classifier: Artifact
) -> None:
    rows = classifier.X[:5]
    response = classifier_server.client.post(
        "/v1/models/bc:predict", json={"instances": rows.tolist(), "probabilities": True}
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["predictions"] == classifier.estimator.predict(rows).tolist()
    np.testing.assert_allclose(
        body["probabilities"], classifier.estimator.predict_proba(rows), rtol=1e-9, atol=1e-12
    )
    assert body["classes"] == [0, 1]


def test_every_response_names_the_version_and_carries_a_request_id(
    classifier_server: Server,
) -> None:
    for method, path in [
        ("GET", "/v2/health/live"),
        ("GET", "/metrics"),
        ("GET", "/no/such/path"),
        ("POST", "/v1/models/bc:predict"),
    ]:
        response = classifier_server.client.request(method, path, content=b"{}")
        assert response.headers["x-model-version"] == "1.4.0", path
        assert response.headers["x-model-name"] == "bc", path
        assert response.headers["x-model-variant"] == "canary", path
        assert len(response.headers["x-request-id"]) >= 16, path
    sent = classifier_server.client.post(
        "/v1/models/bc:predict",
        json={"instances": [[0.0] * 30]},
        headers={"x-request-id": "router-abc-123"},
    )
    assert sent.headers["x-request-id"] == "router-abc-123"
    unsafe = classifier_server.client.get("/v2/health/live", headers={"x-request-id": "a b\tc"})
    assert unsafe.headers["x-request-id"] != "a b\tc"


def test_v2_infer_returns_typed_tensors(classifier_server: Server, classifier: Artifact) -> None:
    rows = classifier.X[:3]
    payload = {
        "id": "req-7",
        "inputs": [
            {"name": "x", "shape": [3, 30], "datatype": "FP64", "data": rows.ravel().tolist()}
        ],
        "outputs": [{"name": "predict"}, {"name": "predict_proba"}],
    }
    for path in ("/v2/models/bc/infer", "/v2/models/bc/versions/1.4.0/infer"):
        response = classifier_server.client.post(path, json=payload)
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["model_name"] == "bc" and body["model_version"] == "1.4.0"
        assert body["id"] == "req-7"
        predict, proba = body["outputs"]
        assert predict == {
            "name": "predict",
            "shape": [3],
            "datatype": "INT64",
            "data": classifier.estimator.predict(rows).tolist(),
        }
        assert proba["shape"] == [3, 2] and proba["datatype"] == "FP64"
        np.testing.assert_allclose(
            np.reshape(proba["data"], (3, 2)), classifier.estimator.predict_proba(rows), rtol=1e-9
        )
    wrong_version = classifier_server.client.post("/v2/models/bc/versions/9.9/infer", json=payload)
    assert wrong_version.status_code == 404
    assert "1.4.0" in wrong_version.json()["error"]


def test_metadata_endpoints_describe_the_signature(classifier_server: Server) -> None:
    client = classifier_server.client
    assert client.get("/v1/models").json() == {"models": ["bc"]}
    v1 = client.get("/v1/models/bc").json()
    assert v1["ready"] is True and v1["version"] == "1.4.0"
    assert v1["signature"]["n_features"] == 30
    assert v1["signature"]["estimator_type"] == "classifier"
    v2 = client.get("/v2/models/bc").json()
    assert v2["versions"] == ["1.4.0"] and v2["inputs"][0]["shape"] == [-1, 30]
    assert v2["parameters"]["inference_path"] == "numpy-linear"
    assert client.get("/v2/models/bc/versions/1.4.0").status_code == 200
    assert client.get("/v2/models/bc/ready").json() == {"name": "bc", "ready": True}
    assert client.get("/v2/models/other").status_code == 404
    assert client.get("/v2").json()["name"] == "modelship"
    schema = client.get("/openapi.json").json()
    assert "/v1/models/{name}:predict" in schema["paths"]
    assert "/v2/models/{name}/infer" in schema["paths"]


@pytest.mark.parametrize(
    ("body", "status", "reason"),
    [
        (b'{"instances": [[1, 2, 3]]}', 422, "has 3 features; the model expects 30"),
        (b'{"instances": [' + b'"x", ' * 1 + b"1]}", 422, "must be a list of 30 numbers"),
        (b'{"instances": [[' + b"1, " * 29 + b'"a"]]}', 422, "instances[0][29]"),
        (b'{"instances": [[' + b"1, " * 29 + b"true]]}", 422, "features must be numbers"),
        (b'{"instances": [[' + b"1, " * 29 + b"NaN]]}", 422, "NaN and infinity"),
        (b'{"instances": [[' + b"1, " * 29 + b"1e999]]}", 422, "NaN and infinity"),
        (b'{"instances": []}', 422, "at least one instance"),
        (b'{"instances": [[1]], "inputs": [[1]]}', 422, "exactly one"),
        (b'{"instances": [[1, 2', 400, "malformed JSON"),
        (b"[1, 2]", 400, "JSON object"),
        (b"", 400, "empty request body"),
        (b'{"instances": [{"a": 1}]}', 422, "fitted without feature names"),
    ],
)
def test_bad_input_gets_a_4xx_with_a_reason(
    classifier_server: Server, body: bytes, status: int, reason: str
) -> None:
    response = classifier_server.client.post("/v1/models/bc:predict", content=body)
    assert response.status_code == status, response.text
    assert reason in response.json()["error"]


def test_limits_and_non_finite_opt_in(tmp_path: Path, named_forest: Artifact) -> None:
    server = start_server(
        tmp_path,
        named_forest,
        "--max-rows",
        "2",
        "--max-body-bytes",
        "4096",
        "--allow-non-finite",
        name="iris",
    )
    try:
        rows = named_forest.X[:3].tolist()
        many = server.client.post("/v1/models/iris:predict", json={"instances": rows})
        assert many.status_code == 413 and "at most 2" in many.json()["error"]
        big = server.client.post("/v1/models/iris:predict", content=b" " * 5000 + b"{}")
        assert big.status_code == 413 and "4096" in big.json()["error"]
        ok = server.client.post("/v1/models/iris:predict", json={"instances": rows[:2]})
        assert ok.status_code == 200
        nan = server.client.post(
            "/v1/models/iris:predict", content=b'{"instances": [[NaN, 3.0, 1.4, 0.2]]}'
        )
        assert nan.status_code == 200, nan.text
        expected = named_forest.estimator.predict(np.array([[np.nan, 3.0, 1.4, 0.2]]))
        assert nan.json()["predictions"] == expected.tolist()
    finally:
        stop_server(server)


def test_named_features_and_string_classes(forest_server: Server, named_forest: Artifact) -> None:
    rows = named_forest.X[:2]
    objects = [dict(zip(["sl", "sw", "pl", "pw"], r.tolist(), strict=True)) for r in rows]
    response = forest_server.client.post("/v1/models/iris:predict", json={"instances": objects})
    assert response.status_code == 200, response.text
    assert response.json()["predictions"] == named_forest.estimator.predict(rows).tolist()
    shuffled = [{"pw": 0.2, "pl": 1.4, "sw": 3.0, "sl": 5.0}]
    assert (
        forest_server.client.post("/v1/models/iris:predict", json={"instances": shuffled}).json()[
            "predictions"
        ]
        == named_forest.estimator.predict([[5.0, 3.0, 1.4, 0.2]]).tolist()
    )
    wrong = forest_server.client.post(
        "/v1/models/iris:predict", json={"instances": [{"sl": 1, "sw": 2, "pl": 3, "petal": 4}]}
    )
    assert wrong.status_code == 422
    assert "missing features ['pw']" in wrong.json()["error"]
    assert "unknown features ['petal']" in wrong.json()["error"]
    names = ["sl", "sw", "pl", "pw"]
    columnar = {"inputs": {n: rows[:, i].tolist() for i, n in reversed(list(enumerate(names)))}}
    v1_columns = forest_server.client.post("/v1/models/iris:predict", json=columnar)
    assert v1_columns.json()["predictions"] == named_forest.estimator.predict(rows).tolist()
    columns = {
        "inputs": [
            {"name": n, "shape": [2], "datatype": "FP32", "data": rows[:, i].tolist()}
            for i, n in enumerate(["sl", "sw", "pl", "pw"])
        ]
    }
    v2 = forest_server.client.post("/v2/models/iris/infer", json=columns)
    assert v2.status_code == 200, v2.text
    assert v2.json()["outputs"][0]["datatype"] == "BYTES"
    assert v2.json()["outputs"][0]["data"] == named_forest.estimator.predict(rows).tolist()


def test_regressor_predictions_and_output_histogram(
    regressor_server: Server, regressor: Artifact
) -> None:
    rows = regressor.X[:4]
    response = regressor_server.client.post(
        "/v1/models/diabetes:predict", json={"inputs": rows.tolist()}
    )
    assert response.status_code == 200, response.text
    np.testing.assert_allclose(response.json()["predictions"], regressor.estimator.predict(rows))
    proba = regressor_server.client.post(
        "/v1/models/diabetes:predict", json={"inputs": rows.tolist(), "probabilities": True}
    )
    assert proba.status_code == 422 and "predict_proba" in proba.json()["error"]
    count = metric(regressor_server, "modelship_prediction_value_count", version="2")
    assert count >= 4


def test_metrics_count_requests_classes_and_model_info(
    classifier_server: Server, classifier: Artifact
) -> None:
    labels = {"model": "bc", "version": "1.4.0", "variant": "canary"}
    before_ok = metric(
        classifier_server, "modelship_requests_total", handler="v1_predict", code="200", **labels
    )
    before_bad = metric(
        classifier_server, "modelship_requests_total", handler="v1_predict", code="422", **labels
    )
    rows = classifier.X[:10]
    predicted = classifier.estimator.predict(rows)
    before_class1 = metric(
        classifier_server, "modelship_predictions_total", **labels, **{"class": "1"}
    )
    classifier_server.client.post("/v1/models/bc:predict", json={"instances": rows.tolist()})
    classifier_server.client.post("/v1/models/bc:predict", json={"instances": [[1]]})
    after = lambda name, **kw: metric(classifier_server, name, **labels, **kw)  # noqa: E731
    assert after("modelship_requests_total", handler="v1_predict", code="200") == before_ok + 1
    assert after("modelship_requests_total", handler="v1_predict", code="422") == before_bad + 1
    assert after("modelship_predictions_total", **{"class": "1"}) == before_class1 + int(
        (predicted == 1).sum()
    )
    assert (
        after("modelship_request_duration_seconds_bucket", handler="v1_predict", le="0.0005") >= 0
    )
    assert (
        after("modelship_model_info", sha256=classifier.sha256, inference_path="numpy-linear") == 1
    )
    assert after("modelship_model_load_seconds") > 0
    assert after("modelship_input_rows_total") >= 10
    assert after("modelship_input_feature_window_quantile", feature="0", quantile="0.5") > 0
    text = classifier_server.client.get("/metrics").text
    assert 'inference_path="' in text
    for line in text.splitlines():
        if line.startswith("modelship_"):
            assert 'model="bc"' in line and 'version="1.4.0"' in line, line
            assert 'variant="canary"' in line, line


def test_inference_series_exist_at_zero_before_any_request(
    tmp_path: Path, classifier: Artifact
) -> None:
    """A new version's first failures must show in increase() over the first window, so the
    success-rate and latency series are published at zero from the start."""
    server = start_server(tmp_path, classifier, name="fresh")
    try:
        text = server.client.get("/metrics").text
        lines = [line.rsplit(" ", 1) for line in text.splitlines()]
        series = {name: float(value) for name, value in lines if name.startswith("modelship_")}
        base = 'model="fresh",variant="stable",version="0"'
        for endpoint in ("v1_predict", "v2_infer"):
            for code in ("200", "500"):
                labels = f'code="{code}",deployment="",handler="{endpoint}",{base}'
                name = f"modelship_requests_total{{{labels}}}"
                assert series.get(name) == 0, (name, sorted(series))
            labels = f'deployment="",handler="{endpoint}",{base}'
            name = f"modelship_request_duration_seconds_count{{{labels}}}"
            assert series.get(name) == 0, (name, sorted(series))
    finally:
        stop_server(server)


def test_feedback_counts_correct_predictions_once(
    classifier_server: Server, classifier: Artifact
) -> None:
    labels = {"model": "bc", "version": "1.4.0", "variant": "canary"}
    rows, truth = classifier.X[:6], classifier.y[:6]
    predicted = classifier.estimator.predict(rows)
    ids = [f"fb-{i}" for i in range(3)]
    for i, rid in enumerate(ids):
        classifier_server.client.post(
            "/v1/models/bc:predict",
            json={"instances": rows[2 * i : 2 * i + 2].tolist()},
            headers={"x-request-id": rid},
        )
    total0 = metric(classifier_server, "modelship_feedback_total", **labels)
    correct0 = metric(classifier_server, "modelship_feedback_correct_total", **labels)
    wrong_labels = [int(1 - t) for t in truth[4:6]]
    response = classifier_server.client.post(
        "/v1/models/bc:feedback",
        json={
            "feedback": [
                {"request_id": ids[0], "labels": truth[0:2].tolist()},
                {"request_id": ids[1], "labels": truth[2:4].tolist()},
                {"request_id": ids[2], "labels": wrong_labels},
                {"request_id": "never-seen", "label": 1},
            ]
        },
    )
    assert response.status_code == 200, response.text
    body = response.json()
    expected_correct = int((predicted[:4] == truth[:4]).sum()) + int(
        (predicted[4:6] == np.array(wrong_labels)).sum()
    )
    assert body["matched"] == 3 and body["rows"] == 6
    assert body["correct"] == expected_correct
    assert body["unknown_request_ids"] == ["never-seen"]
    assert metric(classifier_server, "modelship_feedback_total", **labels) == total0 + 6
    assert (
        metric(classifier_server, "modelship_feedback_correct_total", **labels)
        == correct0 + expected_correct
    )
    again = classifier_server.client.post(
        "/v1/models/bc:feedback", json={"feedback": [{"request_id": ids[0], "labels": [0, 1]}]}
    )
    assert again.json()["unknown_request_ids"] == [ids[0]]
    bad = classifier_server.client.post("/v1/models/bc:feedback", json={"feedback": [{"x": 1}]})
    assert bad.status_code == 422 and "request_id" in bad.json()["error"]


def test_sha256_mismatch_refuses_to_start(tmp_path: Path, classifier: Artifact) -> None:
    server = start_server(tmp_path, classifier, "--sha256", "0" * 64, name="bc", wait_ready=False)
    try:
        assert server.process.wait(timeout=60) == 1
        assert "sha256 mismatch" in server.log()
        assert "Refusing to start" in server.log()
    finally:
        stop_server(server)


def test_not_ready_while_loading_a_slow_download(tmp_path: Path, classifier: Artifact) -> None:
    """The model comes from a real HTTP server that holds the response; probes answer meanwhile."""
    import http.server
    import threading

    release = threading.Event()
    payload = classifier.path.read_bytes()

    class Slow(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            release.wait(30)
            self.send_response(200)
            self.send_header("content-length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args: object) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Slow)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{httpd.server_address[1]}/bc.skops"
    remote = Artifact(Path("unused"), classifier.sha256, classifier.X, classifier.y, None)
    remote.__class__ = type("Remote", (Artifact,), {"uri": property(lambda self: url)})
    server = start_server(
        tmp_path,
        remote,
        "--sha256",
        classifier.sha256,
        "--cache-dir",
        str(tmp_path / "cache"),
        name="bc",
        wait_ready=False,
    )
    try:
        from serving_helpers import wait_for

        wait_for(server, "/v2/health/live")
        ready = server.client.get("/v2/health/ready")
        assert ready.status_code == 503 and "loading" in ready.json()["error"]
        early = server.client.post("/v1/models/bc:predict", json={"instances": [[0.0] * 30]})
        assert early.status_code == 503
        release.set()
        wait_for(server, "/v2/health/ready")
        ok = server.client.post("/v1/models/bc:predict", json={"instances": [[0.0] * 30]})
        assert ok.status_code == 200
    finally:
        release.set()
        stop_server(server)
        httpd.shutdown()


def test_cli_help_and_missing_model_uri() -> None:
    import subprocess

    from serving_helpers import SERVE

    help_text = subprocess.run([*SERVE, "--help"], capture_output=True, text=True, check=True)
    for flag in ("--model-uri", "--sha256", "--name", "--model-version", "--variant", "--port"):
        assert flag in help_text.stdout
    assert "MODELSHIP_MODEL_URI" in help_text.stdout
    missing = subprocess.run(SERVE, capture_output=True, text=True, env={"PATH": "/usr/bin"})
    assert missing.returncode == 2
    assert "model_uri" in missing.stderr and "MODELSHIP_MODEL_URI" in missing.stderr


def predict_then_label(
    server: Server, name: str, rows: np.ndarray, truth: np.ndarray, prefix: str
) -> None:
    """Predict ``rows`` ten per request (ids ``<prefix>-<n>``) through V1, then send their
    ground truth ``truth`` as one feedback request."""
    ids = [f"{prefix}-{i}" for i in range(0, len(rows), 10)]
    for rid, start in zip(ids, range(0, len(rows), 10), strict=True):
        answer = server.client.post(
            f"/v1/models/{name}:predict",
            json={"instances": rows[start : start + 10].tolist()},
            headers={"x-request-id": rid},
        )
        assert answer.status_code == 200, answer.text
    feedback = [
        {"request_id": rid, "labels": truth[start : start + 10].tolist()}
        for rid, start in zip(ids, range(0, len(rows), 10), strict=True)
    ]
    response = server.client.post(f"/v1/models/{name}:feedback", json={"feedback": feedback})
    assert response.status_code == 200, response.text
    assert response.json()["rows"] == len(rows)


def test_regressor_feedback_gives_sklearns_mae_and_rmse(
    regressor_server: Server, regressor: Artifact
) -> None:
    """The counters the built-in mae and rmse checks divide (absolute error sum and count,
    squared error total) give scikit-learn's own metrics on the same labels."""
    from sklearn.metrics import mean_absolute_error, mean_squared_error

    def counters() -> tuple[float, float, float]:
        return (
            metric(regressor_server, "modelship_feedback_absolute_error_sum"),
            metric(regressor_server, "modelship_feedback_absolute_error_count"),
            metric(regressor_server, "modelship_feedback_squared_error_total"),
        )

    before = counters()
    rows, truth = regressor.X[:40], regressor.y[:40] + np.linspace(-30, 30, 40)
    predict_then_label(regressor_server, "diabetes", rows, truth, "reg")
    after = counters()
    abs_sum, count, squared = (a - b for a, b in zip(after, before, strict=True))
    predicted = regressor.estimator.predict(rows)
    assert count == 40
    # mae_query / rmse_query in modelship_operator.analysis.queries: the same arithmetic.
    assert abs_sum / count == pytest.approx(mean_absolute_error(truth, predicted), rel=1e-9)
    assert (squared / count) ** 0.5 == pytest.approx(
        mean_squared_error(truth, predicted) ** 0.5, rel=1e-9
    )


def test_classifier_feedback_gives_sklearns_precision_recall_and_f1(
    classifier_server: Server, classifier: Artifact
) -> None:
    """The confusion counts the built-in precision, recall and f1 checks divide give
    scikit-learn's own metrics for the named class, on the same labels."""
    from sklearn.metrics import f1_score, precision_score, recall_score

    labels = {"model": "bc", "version": "1.4.0", "variant": "canary"}

    def confusion(**which: str) -> float:
        text = classifier_server.client.get("/metrics").text
        total = 0.0
        for line in text.splitlines():
            if not line.startswith("modelship_feedback_confusion_total{"):
                continue
            series, value = line.rsplit(" ", 1)
            found = dict(re.findall(r'(\w+)="([^"]*)"', series))
            if all(found.get(k) == v for k, v in {**labels, **which}.items()):
                total += float(value)
        return total

    def counts(cls: str) -> tuple[float, float, float]:
        return (
            confusion(true_class=cls, **{"class": cls}),
            confusion(**{"class": cls}),
            confusion(true_class=cls),
        )

    before = {cls: counts(cls) for cls in ("0", "1")}
    # Labels with some flipped, so that both classes have false positives and negatives.
    rows, truth = classifier.X[100:180], classifier.y[100:180].copy()
    truth[::7] = 1 - truth[::7]
    predict_then_label(classifier_server, "bc", rows, truth, "cm")
    predicted = classifier.estimator.predict(rows)
    for cls in ("0", "1"):
        tp, positive, actual = (a - b for a, b in zip(counts(cls), before[cls], strict=True))
        label = int(cls)
        # class_query in modelship_operator.analysis.queries: the same arithmetic.
        assert 100 * tp / positive == pytest.approx(
            100 * precision_score(truth, predicted, pos_label=label), rel=1e-9
        )
        assert 100 * tp / actual == pytest.approx(
            100 * recall_score(truth, predicted, pos_label=label), rel=1e-9
        )
        assert 100 * 2 * tp / (positive + actual) == pytest.approx(
            100 * f1_score(truth, predicted, pos_label=label), rel=1e-9
        )
    # A label that is none of the model's classes is counted as other, not as a new series.
    classifier_server.client.post(
        "/v1/models/bc:predict",
        json={"instances": rows[:1].tolist()},
        headers={"x-request-id": "cm-x"},
    )
    classifier_server.client.post(
        "/v1/models/bc:feedback", json={"feedback": [{"request_id": "cm-x", "label": "banana"}]}
    )
    assert confusion(true_class="other") >= 1
    assert "banana" not in classifier_server.client.get("/metrics").text
