"""Loading artifacts: integrity, safe formats, signatures and version skew."""

from __future__ import annotations

import json
import pickle
import zipfile
from collections.abc import Iterator
from pathlib import Path

import joblib
import numpy as np
import pytest
from modelship_serving.artifacts import save_model, sha256_file
from modelship_serving.config import Settings
from modelship_serving.errors import ModelLoadError
from modelship_serving.loading import load_model
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer


def double(x: np.ndarray) -> np.ndarray:
    return x * 2


@pytest.fixture(scope="module")
def iris_model() -> LogisticRegression:
    X, y = load_iris(return_X_y=True)
    return LogisticRegression(max_iter=1000).fit(X, y)


def settings(path: Path, **kw: object) -> Settings:
    return Settings(model_uri=path.as_uri(), **kw)  # type: ignore[arg-type]


def test_skops_round_trip_records_signature(tmp_path: Path, iris_model: LogisticRegression) -> None:
    path = tmp_path / "m.skops"
    sha = save_model(iris_model, path)
    assert sha == sha256_file(path)
    loaded = load_model(settings(path, model_sha256=sha))
    sig = loaded.signature
    assert (sig.n_features, sig.classes, sig.estimator_type) == (4, (0, 1, 2), "classifier")
    assert sig.has_predict_proba and not sig.version_skew and loaded.artifact_format == "skops"
    assert loaded.load_seconds > 0
    X = load_iris().data[:5]
    assert (loaded.estimator.predict(X) == iris_model.predict(X)).all()


def test_sha256_mismatch_is_refused(tmp_path: Path, iris_model: LogisticRegression) -> None:
    path = tmp_path / "m.skops"
    save_model(iris_model, path)
    with pytest.raises(ModelLoadError, match="sha256 mismatch"):
        load_model(settings(path, model_sha256="a" * 64))


def test_unpinned_pickle_is_refused_unless_opted_in(
    tmp_path: Path, iris_model: LogisticRegression
) -> None:
    path = tmp_path / "m.joblib"
    joblib.dump(iris_model, path)
    with pytest.raises(ModelLoadError, match="can run arbitrary code") as info:
        load_model(settings(path))
    assert "MODELSHIP_ALLOW_UNSAFE_PICKLE" in str(info.value)
    assert load_model(settings(path, model_sha256=sha256_file(path))).artifact_format == "joblib"
    assert load_model(settings(path, allow_unsafe_pickle=True)).signature.n_features == 4
    plain = tmp_path / "m.pkl"
    plain.write_bytes(pickle.dumps(iris_model))
    assert load_model(settings(plain, model_sha256=sha256_file(plain))).signature.n_features == 4


def test_skops_with_untrusted_types_is_refused_with_the_fix(tmp_path: Path) -> None:
    X, y = load_iris(return_X_y=True)
    model = make_pipeline(FunctionTransformer(double), LogisticRegression(max_iter=1000)).fit(X, y)
    path = tmp_path / "custom.skops"
    save_model(model, path)
    with pytest.raises(ModelLoadError, match="outside the trusted list") as info:
        load_model(settings(path))
    assert "test_loading.double" in str(info.value)
    assert "MODELSHIP_TRUSTED_TYPES" in str(info.value)


def test_version_skew_is_detected(
    tmp_path: Path, iris_model: LogisticRegression, caplog: pytest.LogCaptureFixture
) -> None:
    """An artifact saved by another scikit-learn (its recorded version rewritten)."""
    original = tmp_path / "m.skops"
    save_model(iris_model, original)
    skewed = tmp_path / "old.skops"
    with zipfile.ZipFile(original) as src, zipfile.ZipFile(skewed, "w") as dst:
        for item in src.infolist():
            data = src.read(item.filename)
            if item.filename == "schema.json":
                schema = json.loads(data)
                schema["content"]["content"]["_sklearn_version"]["content"] = '"1.0.2"'
                data = json.dumps(schema).encode()
            dst.writestr(item, data)
    with caplog.at_level("WARNING"):
        loaded = load_model(settings(skewed))
    assert loaded.signature.sklearn_version_saved == "1.0.2"
    assert loaded.signature.version_skew
    assert "VERSION SKEW" in caplog.text


@pytest.mark.parametrize(
    ("uri", "message"),
    [
        ("gs://bucket/model.skops", r"unsupported model URI scheme 'gs'.*or s3://$"),
        ("s3://bucket", "S3 URI must be s3://bucket/key"),
        ("file:///does/not/exist.skops", "model file not found"),
    ],
)
def test_bad_uris_are_explained(uri: str, message: str) -> None:
    with pytest.raises(ModelLoadError, match=message):
        load_model(Settings(model_uri=uri))


def test_objects_without_predict_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "x.skops"
    save_model({"not": "a model"}, path)
    with pytest.raises(ModelLoadError, match="has no predict"):
        load_model(settings(path))


def test_settings_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODELSHIP_MODEL_URI", "file:///m.skops")
    monkeypatch.setenv("MODELSHIP_MODEL_SHA256", "AB" * 32)
    monkeypatch.setenv("MODELSHIP_VARIANT", "canary")
    monkeypatch.setenv("MODELSHIP_TRUSTED_TYPES", "a.B, c.D")
    s = Settings()
    assert (s.model_sha256, s.variant, s.trusted_types) == ("ab" * 32, "canary", ["a.B", "c.D"])
    assert (s.host, s.port, s.allow_unsafe_pickle) == ("0.0.0.0", 8080, False)
    with pytest.raises(ValueError, match="64 hex"):
        Settings(model_uri="x", model_sha256="123")


@pytest.fixture
def flaky_http(tmp_path: Path, iris_model: LogisticRegression) -> Iterator[tuple[str, list[int]]]:
    """A real HTTP server on loopback serving m.skops after answering 503 twice; yields its
    URL and the statuses it sent."""
    import http.server
    import threading

    path = tmp_path / "m.skops"
    save_model(iris_model, path)
    payload = path.read_bytes()
    sent: list[int] = []

    class Flaky(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            status = 503 if len(sent) < 2 else 200
            sent.append(status)
            self.send_response(status)
            self.send_header("content-length", str(len(payload) if status == 200 else 0))
            self.end_headers()
            if status == 200:
                self.wfile.write(payload)

        def log_message(self, *args: object) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Flaky)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/m.skops", sent
    httpd.shutdown()


def test_http_downloads_retry_transient_errors(
    tmp_path: Path, flaky_http: tuple[str, list[int]]
) -> None:
    url, sent = flaky_http
    loaded = load_model(Settings(model_uri=url, model_cache_dir=str(tmp_path / "cache")))
    assert sent == [503, 503, 200]
    assert loaded.local_path.read_bytes()[:2] == b"PK"


def test_http_downloads_give_up_after_their_attempts(
    tmp_path: Path, flaky_http: tuple[str, list[int]]
) -> None:
    url, sent = flaky_http
    with pytest.raises(ModelLoadError, match="failed after 2 attempts, the last with: HTTP 503"):
        load_model(Settings(model_uri=url, model_cache_dir=str(tmp_path), download_attempts=2))
    assert sent == [503, 503]


def test_http_downloads_over_the_size_limit_are_refused(
    tmp_path: Path, flaky_http: tuple[str, list[int]]
) -> None:
    url, _ = flaky_http
    cache = tmp_path / "cache"
    with pytest.raises(ModelLoadError, match="over the limit of 100 bytes"):
        load_model(Settings(model_uri=url, model_cache_dir=str(cache), model_max_bytes=100))
    assert list(cache.iterdir()) == []
