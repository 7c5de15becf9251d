"""Request/response shapes for the OpenAPI document (validation itself lives in codec.py).

The server validates bodies itself so that every refusal carries a precise reason; these models
only describe the API to humans and to schema-driven tools.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

#: The Open Inference Protocol's tensor datatypes.
Datatype = Literal[
    "BOOL",
    "BYTES",
    "FP16",
    "FP32",
    "FP64",
    "INT8",
    "INT16",
    "INT32",
    "INT64",
    "UINT8",
    "UINT16",
    "UINT32",
    "UINT64",
]

Number = float | int
Scalar = float | int | str | bool | None


class V1PredictRequest(BaseModel):
    instances: list[list[Scalar] | dict[str, Scalar]] | None = Field(
        default=None,
        description=(
            "Rows: lists of values in column order, or objects keyed by column name. Numbers "
            "for numeric columns, strings for string columns, null where the model imputes."
        ),
    )
    inputs: list[list[Scalar] | dict[str, Scalar]] | dict[str, list[Scalar]] | None = Field(
        default=None,
        description=(
            "Same as instances, or columnar: an object of column name to its values, one per "
            "row (send exactly one of instances and inputs)."
        ),
    )
    probabilities: bool = Field(
        default=False, description="Also return predict_proba (classifiers)."
    )


class V1PredictResponse(BaseModel):
    predictions: list[Any]
    probabilities: list[list[float]] | None = None
    classes: list[Any] | None = None


class V2Tensor(BaseModel):
    name: str = Field(description="'input-0' for a [rows, features] tensor, or a column name.")
    shape: list[int] = Field(description="[rows, features], or [rows] for one named column.")
    datatype: Datatype
    data: list[Any] | None = Field(
        default=None,
        description="Row-major flat values (nested lists are accepted); absent for binary data.",
    )
    parameters: dict[str, Any] | None = Field(
        default=None,
        description="binary_data_size (bytes of this tensor after the JSON header), content_type.",
    )


class V2RequestedOutput(BaseModel):
    name: Literal["predict", "predict_proba"]
    parameters: dict[str, Any] | None = Field(
        default=None, description="binary_data: true returns this output as binary data."
    )


class V2InferRequest(BaseModel):
    id: str | None = None
    inputs: list[V2Tensor]
    outputs: list[V2RequestedOutput] | None = Field(
        default=None, description="Default: predict only."
    )
    parameters: dict[str, Any] | None = Field(
        default=None,
        description=(
            "content_type: 'pd' (one input per column); binary_data_output: true returns every "
            "output as binary data (Inference-Header-Content-Length)."
        ),
    )


class V2OutputTensor(BaseModel):
    name: str
    shape: list[int]
    datatype: str
    data: list[Any] | None = None
    parameters: dict[str, Any] | None = None


class V2InferResponse(BaseModel):
    model_name: str
    model_version: str
    id: str
    outputs: list[V2OutputTensor]


class FeedbackItem(BaseModel):
    request_id: str = Field(description="The x-request-id of the prediction.")
    label: Any | None = Field(default=None, description="True label of a one-row prediction.")
    labels: list[Any] | None = Field(default=None, description="True labels, one per row.")


class FeedbackRequest(BaseModel):
    feedback: list[FeedbackItem]


class FeedbackResponse(BaseModel):
    matched: int
    rows: int
    correct: int
    unknown_request_ids: list[str]
    row_count_mismatch_request_ids: list[str]


class ErrorBody(BaseModel):
    error: str = Field(description="What is wrong with the request, and how to fix it.")


def inline_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The model's JSON schema with $defs inlined (for openapi_extra request bodies)."""
    schema = model.model_json_schema()
    defs = schema.pop("$defs", {})

    def resolve(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/$defs/"):
                return resolve(defs[ref.removeprefix("#/$defs/")])
            return {k: resolve(v) for k, v in node.items()}
        if isinstance(node, list):
            return [resolve(v) for v in node]
        return node

    return resolve(schema)  # type: ignore[no-any-return]


def json_body(model: type[BaseModel]) -> dict[str, Any]:
    return {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": inline_schema(model)}},
        }
    }
