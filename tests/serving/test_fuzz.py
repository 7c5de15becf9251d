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
