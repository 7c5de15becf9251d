"""Property-based fuzz of the HTTP API: no client input ever produces a 5xx.

Hypothesis generates arbitrary JSON, near-valid payloads (right shape, wrong values), typed V2
tensors with random shapes and datatypes, raw bytes, odd paths and request ids, and sends them
to a real server process. Every answer must be < 500, and every 4xx must carry a JSON reason.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from serving_helpers import Server

FUZZ = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    derandomize=True,
)

numbers = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(min_value=-(2**70), max_value=2**70),
)
scalars = st.one_of(numbers, st.booleans(), st.none(), st.text(max_size=8))
json_values = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=5),
        st.dictionaries(st.text(max_size=6), children, max_size=5),
    ),
    max_leaves=25,
)
feature_names = st.sampled_from(["sl", "sw", "pl", "pw", "petal", ""])
rows = st.one_of(
    st.lists(st.one_of(numbers, scalars), min_size=3, max_size=5),
    st.dictionaries(feature_names, st.one_of(numbers, scalars), max_size=5),
    scalars,
)
v1_bodies = st.one_of(
    *(
        st.fixed_dictionaries(
            {key: st.lists(rows, max_size=4)},
            optional={"probabilities": st.one_of(st.booleans(), scalars)},
        )
        for key in ("instances", "inputs")
    )
)
datatypes = st.sampled_from(
    ["FP64", "FP32", "FP16", "INT64", "INT32", "INT8", "UINT8", "BOOL", "BYTES", "fp64", ""]
)
tensors = st.fixed_dictionaries(
    {
        "name": st.one_of(feature_names, st.integers()),
        "shape": st.one_of(
            st.lists(st.integers(min_value=-2, max_value=6), max_size=3), json_values
        ),
        "datatype": datatypes,
        "data": st.one_of(
            st.lists(st.one_of(numbers, st.booleans()), max_size=24),
            st.lists(st.lists(numbers, max_size=5), max_size=5),
            json_values,
        ),
    }
)
v2_bodies = st.fixed_dictionaries(
    {"inputs": st.one_of(st.lists(tensors, max_size=5), json_values)},
    optional={
        "outputs": st.one_of(
            st.lists(
                st.fixed_dictionaries({"name": st.sampled_from(["predict", "predict_proba", "x"])})
            ),
            json_values,
        ),
        "id": json_values,
        "parameters": json_values,
    },
)
feedback_bodies = st.one_of(
    st.fixed_dictionaries(
        {
            "feedback": st.lists(
                st.fixed_dictionaries(
                    {"request_id": st.one_of(st.text(max_size=10), json_values)},
                    optional={"label": json_values, "labels": json_values},
                ),
                max_size=4,
            )
        }
    ),
    json_values,
)


# Tabular models (churn_server, strict_server): the new input forms, near-valid and not.
column_names = st.sampled_from(["plan", "region", "tenure", "spend", "age", ""])
column_values = st.one_of(
    st.sampled_from(["basic", "pro", "team", "enterprise", "platinum", "eu", "us", ""]),
    numbers,
    scalars,
    st.lists(scalars, max_size=2),
)
good_row = st.fixed_dictionaries(
    {
        "plan": st.one_of(st.sampled_from(["basic", "pro", "zzz"]), scalars),
        "region": st.one_of(st.sampled_from(["eu", "us"]), scalars),
        "tenure": st.one_of(st.integers(-5, 100), numbers, scalars),
        "spend": st.one_of(st.floats(allow_nan=True, allow_infinity=True), scalars),
    }
)
table_rows = st.one_of(
    good_row,
    st.dictionaries(column_names, column_values, max_size=5),
    st.lists(column_values, min_size=3, max_size=5),
    scalars,
)
v1_tabular = st.one_of(
    st.fixed_dictionaries({"instances": st.lists(table_rows, max_size=4)}),
    st.fixed_dictionaries({"inputs": st.lists(table_rows, max_size=4)}),
    st.fixed_dictionaries(
        {"inputs": st.dictionaries(column_names, st.lists(column_values, max_size=4), max_size=5)},
        optional={"probabilities": st.one_of(st.booleans(), scalars)},
    ),
)
column_tensors = st.fixed_dictionaries(
    {
        "name": column_names,
        "shape": st.one_of(
            st.lists(st.integers(min_value=-1, max_value=4), max_size=2), json_values
        ),
        "datatype": datatypes,
        "data": st.one_of(st.lists(column_values, max_size=6), json_values),
    },
    optional={"parameters": st.one_of(st.just({"content_type": "str"}), json_values)},
)
v2_tabular = st.fixed_dictionaries(
    {"inputs": st.one_of(st.lists(column_tensors, max_size=5), json_values)},
    optional={
        "parameters": st.one_of(
            st.just({"content_type": "pd"}),
            st.fixed_dictionaries(
                {"content_type": st.one_of(st.just("pd"), scalars)},
                optional={"binary_data_output": st.one_of(st.booleans(), scalars)},
            ),
            json_values,
        ),
        "outputs": st.one_of(
            st.lists(
                st.fixed_dictionaries(
                    {"name": st.sampled_from(["predict", "predict_proba", "x"])},
                    optional={"parameters": st.one_of(st.just({"binary_data": True}), json_values)},
                )
            ),
            json_values,
        ),
    },
)
# Binary extension: a JSON header whose tensors claim binary_data_size, then random bytes.
binary_tensors = st.fixed_dictionaries(
    {
        "name": st.one_of(column_names, st.just("input-0")),
        "shape": st.lists(st.integers(min_value=0, max_value=4), min_size=1, max_size=2),
        "datatype": datatypes,
        "parameters": st.fixed_dictionaries(
            {"binary_data_size": st.one_of(st.integers(-2, 40), scalars)}
        ),
    }
)
binary_requests = st.tuples(
    st.fixed_dictionaries(
        {"inputs": st.lists(binary_tensors, max_size=4)},
        optional={"parameters": st.just({"binary_data_output": True})},
    ),
    st.binary(max_size=80),
    st.one_of(
        st.none(), st.integers(-3, 400), st.text(alphabet="0123456789x+-.", min_size=1, max_size=4)
    ),
)


def check(response: httpx.Response) -> None:
    assert response.status_code < 500, (response.status_code, response.text)
    if response.status_code >= 400:
        assert isinstance(response.json().get("error"), str)


def post(server: Server, path: str, body: Any) -> None:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    check(server.client.post(path, content=content))


@FUZZ
@given(body=st.one_of(v1_bodies, json_values))
def test_v1_predict_never_5xx(forest_server: Server, body: Any) -> None:
    post(forest_server, "/v1/models/iris:predict", body)


@FUZZ
@given(body=st.one_of(v2_bodies, json_values))
def test_v2_infer_never_5xx(forest_server: Server, body: Any) -> None:
    post(forest_server, "/v2/models/iris/infer", body)


@FUZZ
@given(body=feedback_bodies)
def test_feedback_never_5xx(forest_server: Server, body: Any) -> None:
    post(forest_server, "/v1/models/iris:feedback", body)


@FUZZ
@given(
    body=st.binary(max_size=200),
    path=st.sampled_from(
        ["/v1/models/iris:predict", "/v2/models/iris/infer", "/v1/models/iris:feedback"]
    ),
)
def test_raw_bytes_never_5xx(forest_server: Server, body: bytes, path: str) -> None:
    post(forest_server, path, body)


@FUZZ
@given(
    name=st.text(
        alphabet=st.characters(min_codepoint=33, max_codepoint=126, exclude_characters="/?#%"),
        min_size=1,
        max_size=12,
    ),
    suffix=st.sampled_from([":predict", ":feedback", "/infer", "/ready", "", "/versions/x/infer"]),
    method=st.sampled_from(["GET", "POST", "PUT", "DELETE"]),
    request_id=st.text(
        alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=200
    ).map(str.strip),
)
def test_paths_methods_and_request_ids_never_5xx(
    forest_server: Server, name: str, suffix: str, method: str, request_id: str
) -> None:
    prefix = "/v1/models/" if suffix.startswith(":") else "/v2/models/"
    response = forest_server.client.request(
        method,
        httpx.URL(prefix + name + suffix),
        content=b'{"instances": [[1, 2, 3, 4]]}',
        headers={"x-request-id": request_id},
    )
    check(response)
    assert response.headers["x-model-name"] == "iris"


@FUZZ
@given(body=st.one_of(v1_tabular, v1_bodies, json_values))
def test_tabular_v1_predict_never_5xx(
    churn_server: Server, strict_server: Server, body: Any
) -> None:
    post(churn_server, "/v1/models/churn:predict", body)
    post(strict_server, "/v1/models/strict:predict", body)


@FUZZ
@given(body=st.one_of(v2_tabular, v2_bodies))
def test_tabular_v2_infer_never_5xx(churn_server: Server, strict_server: Server, body: Any) -> None:
    post(churn_server, "/v2/models/churn/infer", body)
    post(strict_server, "/v2/models/strict/infer", body)


def binary_post(server: Server, path: str, request: tuple[Any, bytes, Any]) -> None:
    header, blob, declared = request
    text = json.dumps(header).encode()
    length = len(text) if declared is None else declared
    check(
        server.client.post(
            path,
            content=text + blob,
            headers={"Inference-Header-Content-Length": str(length)},
        )
    )


@FUZZ
@given(request=binary_requests)
def test_binary_requests_never_5xx(
    forest_server: Server, churn_server: Server, request: tuple[Any, bytes, Any]
) -> None:
    binary_post(forest_server, "/v2/models/iris/infer", request)
    binary_post(churn_server, "/v2/models/churn/infer", request)
