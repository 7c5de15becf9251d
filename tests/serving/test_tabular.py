"""Tabular models (pipelines over DataFrames with string columns) served by a real process:
every input form gives scikit-learn's own predictions, and bad columns get a 422 naming them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from modelship_serving.artifacts import save_model
from serving_helpers import Server, start_server, stop_server
from tabular_models import COLUMNS, TabularArtifact, churn_frame, records


def sample(artifact: TabularArtifact, n: int = 12, seed: int = 7) -> pd.DataFrame:
    frame, _ = churn_frame(n, seed=seed, missing="churn" in artifact.path.name)
    return frame


def expected(artifact: TabularArtifact, frame: pd.DataFrame) -> tuple[list[Any], np.ndarray]:
    est = artifact.estimator
    return est.predict(frame).tolist(), est.predict_proba(frame)


def v2_columns(frame: pd.DataFrame, **extra: Any) -> dict[str, Any]:
    inputs = []
    for name, values in records_by_column(frame).items():
        datatype = (
            "BYTES"
            if frame[name].dtype.kind in "OUT" or name in ("plan", "region")
            else ("INT64" if frame[name].dtype.kind in "iu" else "FP64")
        )
        inputs.append({"name": name, "shape": [len(frame)], "datatype": datatype, "data": values})
    return {"inputs": inputs, **extra}


def records_by_column(frame: pd.DataFrame) -> dict[str, list[Any]]:
    rows = records(frame)
    return {c: [r[c] for r in rows] for c in frame.columns}


@pytest.mark.parametrize("model", ["churn", "strict"])
def test_v1_objects_rows_and_columns_equal_scikit_learn(
    model: str, request: pytest.FixtureRequest
) -> None:
    artifact: TabularArtifact = request.getfixturevalue(model)
    server: Server = request.getfixturevalue(f"{model}_server")
    frame = sample(artifact)
    labels, proba = expected(artifact, frame)
    rows = records(frame)
    bodies = {
        "objects": {"instances": rows},
        "rows": {"instances": [[r[c] for c in COLUMNS] for r in rows]},
        "columnar": {"inputs": records_by_column(frame)},
        "inputs-objects": {"inputs": rows},
    }
    for form, body in bodies.items():
        response = server.client.post(
            f"/v1/models/{model}:predict", json={**body, "probabilities": True}
        )
        assert response.status_code == 200, (form, response.text)
        answer = response.json()
        assert answer["predictions"] == labels, form
        np.testing.assert_allclose(answer["probabilities"], proba, rtol=1e-9, atol=1e-12)
    one = server.client.post(f"/v1/models/{model}:predict", json={"instances": rows[:1]})
    assert one.json()["predictions"] == labels[:1]


@pytest.mark.parametrize("model", ["churn", "strict"])
def test_v2_named_columns_equal_scikit_learn(model: str, request: pytest.FixtureRequest) -> None:
    artifact: TabularArtifact = request.getfixturevalue(model)
    server: Server = request.getfixturevalue(f"{model}_server")
    frame = sample(artifact, n=9, seed=11)
    labels, proba = expected(artifact, frame)
    body = v2_columns(
        frame,
        parameters={"content_type": "pd"},
        outputs=[{"name": "predict"}, {"name": "predict_proba"}],
    )
    response = server.client.post(f"/v2/models/{model}/infer", json=body)
    assert response.status_code == 200, response.text
    predict, probabilities = response.json()["outputs"]
    assert predict["data"] == labels
    assert predict["datatype"] == ("INT64" if model == "churn" else "BYTES")
    np.testing.assert_allclose(
        np.reshape(probabilities["data"], probabilities["shape"]), proba, rtol=1e-9, atol=1e-12
    )
    without = v2_columns(frame)  # no content type: named inputs are columns all the same
    assert (
        server.client.post(f"/v2/models/{model}/infer", json=without).json()["outputs"][0]["data"]
        == labels
    )


def test_missing_values_follow_the_imputers(churn_server: Server, churn: TabularArtifact) -> None:
    frame = pd.DataFrame(
        {
            "plan": [None, "pro", "basic"],
            "region": ["eu", "us", "apac"],
            "tenure": [3, 40, 12],
            "spend": [20.5, None, 70.0],
        }
    )
    response = churn_server.client.post(
        "/v1/models/churn:predict", json={"instances": records(frame), "probabilities": True}
    )
    assert response.status_code == 200, response.text
    labels, proba = expected(churn, frame)
    assert response.json()["predictions"] == labels
    np.testing.assert_allclose(response.json()["probabilities"], proba, rtol=1e-9, atol=1e-12)


def test_unseen_category_follows_handle_unknown(
    churn_server: Server, strict_server: Server, churn: TabularArtifact
) -> None:
    row = {"plan": "platinum", "region": "mars", "tenure": 5, "spend": 30.0}
    ignored = churn_server.client.post("/v1/models/churn:predict", json={"instances": [row]})
    assert ignored.status_code == 200, ignored.text
    assert ignored.json()["predictions"] == churn.estimator.predict(pd.DataFrame([row])).tolist()
    refused = strict_server.client.post("/v1/models/strict:predict", json={"instances": [row]})
    assert refused.status_code == 422
    reason = refused.json()["error"]
    assert "'plan'" in reason and "'platinum'" in reason and "did not see in training" in reason


GOOD = {"plan": "pro", "region": "eu", "tenure": 5, "spend": 30.0}


@pytest.mark.parametrize(
    ("server", "body", "reason"),
    [
        (
            "churn",
            {"instances": [{"plan": "pro", "tenure": 5, "spend": 1.0}]},
            "missing columns ['region']",
        ),
        ("churn", {"instances": [{**GOOD, "age": 3}]}, "unknown columns ['age']"),
        ("churn", {"instances": [{**GOOD, "tenure": "five"}]}, "column 'tenure' row 0 is 'five'"),
        (
            "churn",
            {"instances": [{**GOOD, "plan": 3}]},
            "column 'plan' row 0 is 3: expected a string",
        ),
        ("churn", {"instances": [{**GOOD, "tenure": True}]}, "column 'tenure' row 0 is True"),
        (
            "churn",
            {"inputs": {"plan": ["pro"], "region": ["eu"], "tenure": [1]}},
            "missing columns ['spend']",
        ),
        (
            "churn",
            {"inputs": {**{k: [v] for k, v in GOOD.items()}, "spend": [1, 2]}},
            "different numbers of rows",
        ),
        ("churn", {"instances": [["pro", "eu", 5]]}, "has 3 values; the model takes 4 columns"),
        ("strict", {"instances": [{**GOOD, "tenure": None}]}, "column 'tenure' row 0 is missing"),
        ("strict", {"instances": [{**GOOD, "plan": None}]}, "column 'plan' row 0 is missing"),
        ("churn", {"instances": [{**GOOD, "spend": 1e999}]}, "column 'spend' row 0 is inf"),
        ("churn", {"instances": [{**GOOD, "plan": ["pro"]}]}, "column 'plan' row 0 is ['pro']"),
        ("churn", {"instances": []}, "at least one instance"),
    ],
)
def test_bad_columns_get_a_422_naming_them(
    server: str, body: dict[str, Any], reason: str, request: pytest.FixtureRequest
) -> None:
    served: Server = request.getfixturevalue(f"{server}_server")
    content = json.dumps(body).encode()  # Infinity literals too
    response = served.client.post(f"/v1/models/{server}:predict", content=content)
    assert response.status_code == 422, response.text
    assert reason in response.json()["error"]


@pytest.mark.parametrize(
    ("inputs", "reason"),
    [
        (
            [{"name": "plan", "shape": [1], "datatype": "FP64", "data": [1.0]}],
            "missing columns",
        ),
        (
            [
                {"name": "plan", "shape": [1], "datatype": "BYTES", "data": ["pro"]},
                {"name": "region", "shape": [1], "datatype": "BYTES", "data": ["eu"]},
                {"name": "tenure", "shape": [1], "datatype": "BYTES", "data": ["3"]},
                {"name": "spend", "shape": [1], "datatype": "FP64", "data": [1.0]},
            ],
            "column 'tenure' row 0 is '3': expected a number",
        ),
        (
            [
                {"name": "plan", "shape": [1], "datatype": "BYTES", "data": [4]},
            ],
            "is BYTES but holds 4",
        ),
    ],
)
def test_v2_bad_columns_get_a_422(churn_server: Server, inputs: list[Any], reason: str) -> None:
    response = churn_server.client.post("/v2/models/churn/infer", json={"inputs": inputs})
    assert response.status_code == 422, response.text
    assert reason in response.json()["error"]


def test_metadata_describes_each_column(churn_server: Server, strict_server: Server) -> None:
    churn = churn_server.client.get("/v2/models/churn").json()
    inputs = {i["name"]: i for i in churn["inputs"]}
    assert list(inputs) == COLUMNS
    assert inputs["plan"]["datatype"] == "BYTES" and inputs["plan"]["shape"] == [-1]
    assert inputs["plan"]["parameters"]["categories"] == ["basic", "enterprise", "pro", "team"]
    assert inputs["plan"]["parameters"]["handle_unknown"] == "ignore"
    assert inputs["plan"]["parameters"]["nullable"] is True
    assert inputs["tenure"]["datatype"] == "INT64"  # from the example frame
    assert churn["parameters"]["signature_source"] == "saved"
    assert churn["parameters"]["inference_path"] == "numpy-tabular"
    assert churn["parameters"]["tabular"] is True
    assert churn["outputs"][0] == {
        "name": "predict",
        "datatype": "INT64",
        "shape": [-1],
        "parameters": {"classes": [0, 1]},
    }
    strict = strict_server.client.get("/v2/models/strict").json()
    columns = {i["name"]: i for i in strict["inputs"]}
    assert strict["parameters"]["signature_source"] == "estimator"
    assert columns["plan"]["parameters"]["handle_unknown"] == "error"
    assert "nullable" not in columns["tenure"]["parameters"]
    assert strict["outputs"][0]["datatype"] == "BYTES"
    assert strict["outputs"][1]["shape"] == [-1, 2]


def test_uncovered_pipeline_is_served_by_scikit_learn_on_a_dataframe(tmp_path: Path) -> None:
    """OrdinalEncoder and a categorical dtype: no numpy-tabular, the same answers."""
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OrdinalEncoder

    frame, y = churn_frame(400, seed=4, missing=False)
    frame["region"] = frame["region"].astype("category")
    columns = ColumnTransformer(
        [
            (
                "c",
                OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=-1),
                ["plan", "region"],
            )
        ],
        remainder="passthrough",
    )
    model = HistGradientBoostingClassifier(max_iter=20, random_state=0)
    est = Pipeline([("ct", columns), ("m", model)]).fit(frame, y)
    path = tmp_path / "ordinal.skops"
    artifact = TabularArtifact(path, save_model(est, path, example=frame.head()), frame, y, est)
    server = start_server(tmp_path, artifact, "--sha256", artifact.sha256, name="ordinal")
    try:
        meta = server.client.get("/v2/models/ordinal").json()
        assert meta["parameters"]["inference_path"] == "sklearn"
        region = next(i for i in meta["inputs"] if i["name"] == "region")
        assert region["parameters"]["dtype"] == "category"
        test, _ = churn_frame(25, seed=6, missing=False)
        test["region"] = pd.Categorical(test["region"], categories=frame["region"].cat.categories)
        response = server.client.post(
            "/v1/models/ordinal:predict", json={"instances": records(test), "probabilities": True}
        )
        assert response.status_code == 200, response.text
        assert response.json()["predictions"] == est.predict(test).tolist()
        np.testing.assert_allclose(
            response.json()["probabilities"], est.predict_proba(test), rtol=1e-9, atol=1e-12
        )
        row = {"plan": "x", "region": "mars", "tenure": 1, "spend": 2.0}
        unknown = server.client.post("/v1/models/ordinal:predict", json={"instances": [row]})
        assert unknown.status_code == 200, unknown.text  # the encoder's unknown_value
        # pandas turns a value outside a categorical column's categories into a missing value
        alone = pd.DataFrame([{**row, "region": None}]).astype({"region": frame["region"].dtype})
        assert unknown.json()["predictions"] == est.predict(alone).tolist()
        wrong = server.client.post(
            "/v1/models/ordinal:predict", json={"instances": [{**row, "tenure": "1"}]}
        )
        assert wrong.status_code == 422 and "'tenure'" in wrong.json()["error"]
    finally:
        stop_server(server)


def test_numeric_columns_feed_the_drift_summary(churn_server: Server) -> None:
    rows = [
        {"plan": "pro", "region": "eu", "tenure": 10, "spend": None},
        {"plan": "basic", "region": "us", "tenure": 30, "spend": 50.0},
    ]
    response = churn_server.client.post("/v1/models/churn:predict", json={"instances": rows})
    assert response.status_code == 200, response.text
    text = churn_server.client.get("/metrics").text
    medians = {}
    for line in text.splitlines():
        if line.startswith("modelship_input_feature_window_quantile{") and 'quantile="0.5"' in line:
            feature = line.split('feature="')[1].split('"')[0]
            medians[feature] = float(line.rsplit(" ", 1)[1])
    assert set(medians) == {"tenure", "spend"}  # the string columns have no quantiles
    assert all(value == value for value in medians.values())  # a missing spend is no NaN
