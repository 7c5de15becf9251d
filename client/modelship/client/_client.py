"""The client: predictions over V1 and V2, feedback, model metadata."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import quote

import httpx
import numpy as np

from .codec import decode_v2, encode_v1, encode_v2, is_frame
from .errors import ConnectionFailed, ProtocolError, ServerError, Timeout, error_for

Protocol = Literal["v1", "v2"]
TOKEN_HEADER = "x-modelship-token"
VARIANT_HEADER = "x-modelship-variant"


@dataclass
class Prediction:
    """One prediction call's answer, shaped like the input: a pandas Series (and a DataFrame of
    probabilities, one column per class) for a DataFrame, NumPy arrays for arrays."""

    predictions: Any
    probabilities: Any | None
    classes: list[Any] | None
    request_id: str
    model_version: str | None
    variant: str | None
    #: The pod that served (the router's x-modelship-replica); pass it to feedback().
    replica: str | None = None


@dataclass
class FeedbackResult:
    """What the server matched: requests, rows, correct rows, unknown or expired ids."""

    matched: int
    rows: int
    correct: int
    unknown_request_ids: list[str]
    row_count_mismatch_request_ids: list[str]


@dataclass
class ModelMetadata:
    """The model's OIP metadata: its inputs (one per column for named columns), outputs and
    signature (``parameters``)."""

    name: str
    versions: list[str]
    platform: str
    inputs: list[dict[str, Any]]
    outputs: list[dict[str, Any]]
    parameters: dict[str, Any] = field(default_factory=dict)

    @property
    def columns(self) -> list[str]:
        return [i["name"] for i in self.inputs]

    @property
    def classes(self) -> list[Any] | None:
        classes = self.parameters.get("classes")
        return list(classes) if classes is not None else None


class ModelshipClient:
    """Talks to one model on a modelship server (or its router).

    ``timeout`` bounds every call (seconds); ``retries`` re-sends a request only when the
    connection could not be made (nothing reached the server), waiting ``backoff`` seconds,
    doubled each time. Errors: :class:`~modelship.client.InvalidInput` and its siblings carry
    the server's status and reason; :class:`~modelship.client.ConnectionFailed` and
    :class:`~modelship.client.Timeout` say the server did not answer.

    ``token`` is the deployment's access token: sent as ``x-modelship-token`` with feedback
    and with any request that forces a variant (an ``x-modelship-variant`` header), never
    with anything else. Without it (or with a wrong one) such a request raises
    :class:`~modelship.client.AccessDenied` where the deployment protects them.
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        version: str | None = None,
        timeout: float = 10.0,
        retries: int = 2,
        backoff: float = 0.1,
        headers: dict[str, str] | None = None,
        token: str | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        if retries < 0:
            raise ValueError("retries must be >= 0")
        self._token = token or None
        self.model = model
        self.version = version
        self.retries = retries
        self.backoff = backoff
        self._http = httpx.Client(
            base_url=base_url.rstrip("/"),
            timeout=timeout,
            headers=headers,
            transport=transport,
        )

    def __enter__(self) -> ModelshipClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    # -- transport ---------------------------------------------------------------------------

    def _send(
        self,
        method: str,
        path: str,
        content: bytes | None = None,
        headers: dict[str, str] | None = None,
        privileged: bool = False,
    ) -> httpx.Response:
        """One request; ``privileged`` ones (feedback) carry the token when there is one."""
        if self._token is not None and (privileged or self._forces_variant(headers)):
            headers = {**(headers or {}), TOKEN_HEADER: self._token}
        delay = self.backoff
        for attempt in range(self.retries + 1):
            try:
                response = self._http.request(method, path, content=content, headers=headers)
            except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
                if attempt == self.retries:
                    raise ConnectionFailed(
                        f"cannot reach {self._http.base_url}: {exc} ({self.retries + 1} attempts)"
                    ) from exc
                time.sleep(delay)
                delay *= 2
                continue
            except httpx.TimeoutException as exc:
                raise Timeout(f"{method} {path}: no answer in time ({exc})") from exc
            except httpx.TransportError as exc:
                raise ConnectionFailed(f"{method} {path}: {exc}") from exc
            if response.status_code >= 400:
                raise error_for(
                    response.status_code, _reason(response), response.headers.get("x-request-id")
                )
            return response
        raise AssertionError("unreachable")  # pragma: no cover

    def _forces_variant(self, headers: dict[str, str] | None) -> bool:
        if VARIANT_HEADER in self._http.headers:
            return True
        return headers is not None and any(k.lower() == VARIANT_HEADER for k in headers)

    def _model_path(self, suffix: str, versioned: bool = True) -> str:
        path = f"/v2/models/{quote(self.model, safe='')}"
        if versioned and self.version is not None:
            path += f"/versions/{quote(self.version, safe='')}"
        return path + suffix

    # -- the API -----------------------------------------------------------------------------

    def ready(self) -> bool:
        """Whether the model is loaded and the server takes traffic."""
        try:
            self._send("GET", self._model_path("/ready"))
        except (ConnectionFailed, Timeout):
            return False
        except ServerError as exc:
            if exc.status in (404, 503):
                return False
            raise
        return True

    def metadata(self) -> ModelMetadata:
        body = self._send("GET", self._model_path("")).json()
        try:
            return ModelMetadata(
                name=body["name"],
                versions=list(body.get("versions", [])),
                platform=body.get("platform", ""),
                inputs=list(body["inputs"]),
                outputs=list(body["outputs"]),
                parameters=dict(body.get("parameters") or {}),
            )
        except (KeyError, TypeError) as exc:
            raise ProtocolError(f"unexpected metadata: {exc!r}") from None

    def predict(
        self,
        data: Any,
        *,
        protocol: Protocol = "v2",
        probabilities: bool = False,
        binary: bool = False,
        request_id: str | None = None,
    ) -> Prediction:
        """Predict for ``data``: a pandas DataFrame (named columns, any dtypes) or a 2-D array.

        ``protocol="v1"`` posts ``{"instances": ...}`` to ``:predict``; ``"v2"`` (default) posts
        an Open Inference Protocol request (one input per column for a DataFrame), in binary
        tensors when ``binary``. ``request_id`` (sent as ``x-request-id``) is what
        :meth:`feedback` refers to later; the server makes one when it is not given.
        """
        headers: dict[str, str] = {}
        if request_id is not None:
            headers["x-request-id"] = request_id
        if protocol == "v1":
            if self.version is not None:
                raise ValueError("V1 has no versioned path: use protocol='v2' with a version")
            body = encode_v1(data, probabilities)
            path = f"/v1/models/{quote(self.model, safe='')}:predict"
            response = self._send("POST", path, body.content, {**body.headers, **headers})
            answer = response.json()
            try:
                labels = np.asarray(answer["predictions"])
                proba = answer.get("probabilities")
                classes = answer.get("classes")
            except (KeyError, TypeError, AttributeError) as exc:
                raise ProtocolError(f"unexpected V1 answer: {exc!r}") from None
            proba_array = np.asarray(proba, dtype=np.float64) if proba is not None else None
        elif protocol == "v2":
            outputs = ["predict", "predict_proba"] if probabilities else ["predict"]
            body = encode_v2(data, outputs, binary, None)
            response = self._send(
                "POST", self._model_path("/infer"), body.content, {**body.headers, **headers}
            )
            _, arrays = decode_v2(
                response.content, response.headers.get("inference-header-content-length")
            )
            if "predict" not in arrays:
                raise ProtocolError("the V2 answer has no 'predict' output")
            labels = arrays["predict"]
            proba_array = arrays.get("predict_proba")
            classes = None
            if proba_array is not None:
                classes = self._classes()
        else:
            raise ValueError("protocol must be 'v1' or 'v2'")
        return Prediction(
            predictions=_shaped(labels, data),
            probabilities=_shaped_proba(proba_array, classes, data),
            classes=list(classes) if classes is not None else None,
            request_id=response.headers.get("x-request-id", request_id or ""),
            model_version=response.headers.get("x-model-version"),
            variant=response.headers.get("x-model-variant"),
            replica=response.headers.get("x-modelship-replica"),
        )

    def feedback(
        self,
        request_id: str,
        label: Any = None,
        *,
        labels: Any = None,
        variant: str | None = None,
        replica: str | None = None,
    ) -> FeedbackResult:
        """Send the ground truth of an earlier prediction: ``label`` for a one-row request,
        ``labels`` (one per row) otherwise. Behind the router pass the prediction's
        ``variant`` and ``replica`` so the label reaches the pod that predicted it.

        A deployment that protects feedback needs the client's ``token``: without it the
        server answers 401, with a wrong one (or feedback off) 403, both raised as
        :class:`~modelship.client.AccessDenied`."""
        if (label is None) == (labels is None):
            raise ValueError("give exactly one of label and labels")
        item: dict[str, Any] = {"request_id": request_id}
        if labels is not None:
            item["labels"] = [_json_value(v) for v in np.asarray(labels, dtype=object).tolist()]
        else:
            item["label"] = _json_value(label)
        content = json.dumps({"feedback": [item]}).encode()
        path = f"/v1/models/{quote(self.model, safe='')}:feedback"
        headers = {"content-type": "application/json"}
        if variant is not None:
            headers[VARIANT_HEADER] = variant
        if replica is not None:
            headers["x-modelship-replica"] = replica
        answer = self._send("POST", path, content, headers, privileged=True).json()
        try:
            return FeedbackResult(
                matched=answer["matched"],
                rows=answer["rows"],
                correct=answer["correct"],
                unknown_request_ids=list(answer["unknown_request_ids"]),
                row_count_mismatch_request_ids=list(answer["row_count_mismatch_request_ids"]),
            )
        except (KeyError, TypeError) as exc:
            raise ProtocolError(f"unexpected feedback answer: {exc!r}") from None

    def _classes(self) -> list[Any] | None:
        if not hasattr(self, "_cached_classes"):
            self._cached_classes = self.metadata().classes
        return self._cached_classes


def _reason(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:500] or response.reason_phrase
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, str):
            return error
    return response.text[:500]


def _json_value(value: Any) -> Any:
    item = getattr(value, "item", None)
    return item() if callable(item) else value


def _shaped(labels: np.ndarray, data: Any) -> Any:
    if is_frame(data):
        import pandas as pd

        values = labels.tolist()
        return pd.Series(values, index=data.index, name="predict")
    return labels


def _shaped_proba(proba: np.ndarray | None, classes: list[Any] | None, data: Any) -> Any:
    if proba is None:
        return None
    if is_frame(data):
        import pandas as pd

        return pd.DataFrame(proba, index=data.index, columns=classes)
    return proba
