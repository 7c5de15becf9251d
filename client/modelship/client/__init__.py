"""Python client for modelship model servers.

>>> from modelship.client import ModelshipClient
>>> with ModelshipClient("http://churn-router.ml", "churn") as client:  # doctest: +SKIP
...     answer = client.predict(frame, probabilities=True)
...     client.feedback(answer.request_id, labels=truth)

DataFrames (named columns, strings and numbers) or NumPy arrays in, the same kind out; KServe
V1 or the Open Inference Protocol V2 (JSON or binary tensors); typed errors carrying the
server's reason. Depends on httpx and NumPy; pandas only when you pass DataFrames.
"""

from ._client import FeedbackResult, ModelMetadata, ModelshipClient, Prediction
from .errors import (
    AccessDenied,
    BadRequest,
    ConnectionFailed,
    InvalidInput,
    ModelNotFound,
    ModelshipError,
    NotReady,
    PayloadTooLarge,
    ProtocolError,
    ServerError,
    Timeout,
)

__all__ = [
    "AccessDenied",
    "BadRequest",
    "ConnectionFailed",
    "FeedbackResult",
    "InvalidInput",
    "ModelMetadata",
    "ModelNotFound",
    "ModelshipClient",
    "ModelshipError",
    "NotReady",
    "PayloadTooLarge",
    "Prediction",
    "ProtocolError",
    "ServerError",
    "Timeout",
]
__version__ = "0.1.0"
