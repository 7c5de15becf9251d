"""The data plane: decode → infer → record → encode, independent of the HTTP framework.

Both the fast ASGI lane and the FastAPI routes call these methods, so behaviour is identical
whichever path a request takes.
"""

from __future__ import annotations

import logging
from typing import Any

import anyio.to_thread
import numpy as np
import orjson

from .codec import Limits, decode_v1, decode_v2, encode_v2_output, parse_json
from .config import Settings
from .errors import ServingError
from .fastpath import Prediction, SklearnPath
from .feedback import PredictionStore, score_feedback
from .loading import LoadedModel
from .metrics import ServingMetrics

log = logging.getLogger("modelship.serving")


class DataPlane:
    """Serves one loaded model."""

    def __init__(
        self,
        settings: Settings,
        model: LoadedModel,
        path: Any,
        metrics: ServingMetrics,
    ) -> None:
        self.settings = settings
        self.model = model
        self.signature = model.signature
        self.path = path
        self.reference = path if isinstance(path, SklearnPath) else SklearnPath(model.estimator)
        self.metrics = metrics
        self.limits = Limits(settings.max_rows, settings.allow_non_finite)
        self.store = PredictionStore(
            settings.prediction_store_size, settings.prediction_ttl_seconds
        )
        self._regression = self.signature.estimator_type != "classifier"
        self._classifier = self.signature.estimator_type == "classifier"

    async def _infer(self, features: np.ndarray, want_proba: bool) -> Prediction:
        path = self.path
        # The accelerated paths assume finite input; NaN (when allowed) goes to scikit-learn.
        if self.settings.allow_non_finite and not np.isfinite(features).all():
            path = self.reference
        try:
            if features.shape[0] > self.settings.inline_max_rows:
                return await anyio.to_thread.run_sync(path.run, features, want_proba)
            return path.run(features, want_proba)  # type: ignore[no-any-return]
        except (ValueError, TypeError) as exc:
            raise ServingError(422, f"the model rejected the input: {exc}") from None

    def _record(self, features: np.ndarray, prediction: Prediction, request_id: str) -> list[Any]:
        labels = prediction.labels.tolist()
        metrics = self.metrics
        if self._classifier and prediction.class_indices is not None:
            metrics.observe_classes(prediction.class_indices)
        elif self._regression:
            metrics.observe_values(prediction.labels)
        if metrics.drift is not None:
            metrics.drift.observe(features)
        if self.settings.prediction_store_size:
            self.store.put(request_id, labels)
        return labels  # type: ignore[no-any-return]

    async def v1_predict(self, body: bytes, request_id: str) -> bytes:
        features, want_proba = decode_v1(parse_json(body), self.signature, self.limits)
        prediction = await self._infer(features, want_proba)
        response: dict[str, Any] = {"predictions": self._record(features, prediction, request_id)}
        if prediction.proba is not None:
            response["probabilities"] = prediction.proba.tolist()
            response["classes"] = list(self.signature.classes or ())
        return orjson.dumps(response)

    async def v2_infer(self, body: bytes, request_id: str) -> bytes:
        request = decode_v2(parse_json(body), self.signature, self.limits)
        want_proba = "predict_proba" in request.outputs
        prediction = await self._infer(request.features, want_proba)
        self._record(request.features, prediction, request_id)
        outputs = []
        for name in request.outputs:
            values = prediction.labels if name == "predict" else prediction.proba
            assert values is not None
            outputs.append(encode_v2_output(name, values))
        return orjson.dumps(
            {
                "model_name": self.settings.model_name,
                "model_version": self.settings.model_version,
                "id": request.request_id or request_id,
                "outputs": outputs,
            }
        )

    def feedback(self, body: bytes) -> bytes:
        result = score_feedback(parse_json(body), self.store, self._regression)
        metrics = self.metrics
        if result.rows:
            metrics.feedback_total.inc(result.rows)
        if result.correct:
            metrics.feedback_correct.inc(result.correct)
        for error in result.absolute_errors:
            metrics.feedback_error.observe(error)
        if result.unknown_ids:
            metrics.feedback_unknown.inc(len(result.unknown_ids))
        return orjson.dumps(result.as_json())
