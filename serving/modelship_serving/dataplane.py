"""The data plane: decode → infer → record → encode, independent of the HTTP framework.

The protocol-level fast lane, the ASGI lane and the FastAPI routes all call these methods, so
behaviour is identical whichever path a request takes. A one-row request to a model whose
inference path has ``run_row`` (linear models) stays in plain Python values from the parsed JSON
to the encoded answer; everything else goes through NumPy arrays. Tabular models (named,
mixed-type columns) decode into validated columns (tabular.py) for numpy-tabular or, built into
a DataFrame, for scikit-learn. V2 bodies may use the binary tensor extension (binary.py) in
and out.
"""

from __future__ import annotations

import logging
from typing import Any, NamedTuple

import anyio.to_thread
import numpy as np
import orjson

from .binary import binary_outputs, encode_binary, split_binary_request
from .codec import (
    Limits,
    decode_v1,
    decode_v2,
    encode_v2_output,
    parse_json,
    requested_outputs,
    v1_single_row,
    v1_wants_proba,
    v2_datatype,
    v2_request_id,
    v2_single_row,
)
from .config import Settings
from .errors import ServingError
from .fastpath import Prediction, RowPrediction, SklearnPath
from .feedback import (
    REASON_EXPIRED,
    REASON_UNKNOWN,
    CountedUnits,
    PredictionStore,
    score_feedback,
)
from .loading import LoadedModel
from .metrics import ServingMetrics
from .quality import OFF, QualityPlan
from .responses import Reply, binary_reply
from .tabular import Table, decode_v1_table, decode_v2_table, to_frame

log = logging.getLogger("modelship.serving")


def _outputs_have_parameters(payload: dict[str, Any]) -> bool:
    outputs = payload.get("outputs")
    return type(outputs) is list and any(type(o) is dict and "parameters" in o for o in outputs)


class V2Prediction(NamedTuple):
    """What :meth:`DataPlane.v2_predict` returns: the requested outputs, the request's own
    id (if it had one) and the prediction."""

    outputs: tuple[str, ...]
    own_id: str | None
    prediction: Prediction


class DataPlane:
    """Serves one loaded model."""

    def __init__(
        self,
        settings: Settings,
        model: LoadedModel,
        path: Any,
        metrics: ServingMetrics,
        quality: QualityPlan = OFF,
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
        #: Units whose feedback this pod has counted (feedback.py).
        self.counted_units = CountedUnits()
        self.quality = quality
        # Probabilities are computed for every prediction (and remembered) when feedback
        # scores them; answers still hold them only when the client asked.
        self._proba_always = quality.remember and settings.prediction_store_size > 0
        self._regression = self.signature.estimator_type != "classifier"
        self._classifier = self.signature.estimator_type == "classifier"
        self._n_features = self.signature.n_features
        # The one-row path: only when the inference path covers it and NaN never reaches it
        # (single-row decoding accepts finite numbers only).
        self._row_path = path if getattr(path, "rows_supported", False) else None
        classes = getattr(model.estimator, "classes_", None)
        self._label_datatype = v2_datatype(np.asarray(classes)) if self._classifier else "FP64"
        self._proba_shape = [1, len(classes) if classes is not None else 0]
        # Named, mixed-type columns: requests become validated columns (tabular.py), not a matrix.
        self.tabular = self.signature.tabular
        self._drift_names = self.signature.drift_features() if self.tabular else ()
        # The compiled tabular path assumes missing values only where an imputer fills them;
        # with non-finite input allowed, scikit-learn judges every table.
        self._run_table_fast = (
            None if settings.allow_non_finite else getattr(path, "run_table", None)
        )

    def _run(self, features: np.ndarray, want_proba: bool) -> Prediction:
        path = self.path
        # The accelerated paths assume finite input; NaN (when allowed) goes to scikit-learn.
        if self.settings.allow_non_finite and not np.isfinite(features).all():
            path = self.reference
        try:
            return path.run(features, want_proba)  # type: ignore[no-any-return]
        except (ValueError, TypeError) as exc:
            raise ServingError(422, f"the model rejected the input: {exc}") from None

    def _run_table(self, table: Table, want_proba: bool) -> Prediction:
        try:
            if self._run_table_fast is not None:
                return self._run_table_fast(table, want_proba)  # type: ignore[no-any-return]
            return self.reference.run_frame(to_frame(table, self.signature), want_proba)
        except (ValueError, TypeError, KeyError, IndexError) as exc:
            # scikit-learn's own refusal of a value the signature let through
            raise ServingError(422, f"the model rejected the input: {exc}") from None

    async def _infer_table(self, table: Table, want_proba: bool) -> Prediction:
        if table.rows > self.settings.inline_max_rows:
            return await anyio.to_thread.run_sync(self._run_table, table, want_proba)
        return self._run_table(table, want_proba)

    async def _infer(self, features: np.ndarray, want_proba: bool) -> Prediction:
        if features.shape[0] > self.settings.inline_max_rows:
            return await anyio.to_thread.run_sync(self._run, features, want_proba)
        return self._run(features, want_proba)

    def _record(
        self,
        features: np.ndarray,
        prediction: Prediction,
        request_id: str,
        pinned: bool,
        unit: str | None,
    ) -> list[Any]:
        labels = prediction.labels.tolist()
        metrics = self.metrics
        if self._classifier and prediction.class_indices is not None:
            metrics.observe_classes(prediction.class_indices)
        elif self._regression:
            metrics.observe_values(prediction.labels)
        if metrics.drift is not None:
            metrics.drift.observe(features)
        if self.settings.prediction_store_size:
            # Tuples of plain values: the garbage collector stops tracking them.
            if self._proba_always and prediction.proba is not None:
                rows = tuple(map(tuple, prediction.proba.tolist()))
                self.store.put(request_id, tuple(labels), pinned, rows, unit)
            else:
                self.store.put(request_id, tuple(labels), pinned, None, unit)
        return labels  # type: ignore[no-any-return]

    def _record_row(
        self,
        row: list[float],
        result: RowPrediction,
        request_id: str,
        pinned: bool,
        unit: str | None,
    ) -> None:
        metrics = self.metrics
        if result.class_index is not None:
            metrics.count_class(result.class_index)
        elif self._regression:
            metrics.observe_value(result.label)
        if metrics.drift is not None:
            metrics.drift.observe_row(row)
        if self.settings.prediction_store_size:
            if self._proba_always and result.proba is not None:
                self.store.put(request_id, (result.label,), pinned, (tuple(result.proba),), unit)
            else:
                self.store.put(request_id, (result.label,), pinned, None, unit)

    def _v1_row(
        self,
        payload: dict[str, Any],
        row: list[float],
        request_id: str,
        pinned: bool,
        unit: str | None,
    ) -> bytes:
        want_proba = v1_wants_proba(payload, self.signature)
        assert self._row_path is not None
        result = self._row_path.run_row(row, want_proba or self._proba_always)
        self._record_row(row, result, request_id, pinned, unit)
        response: dict[str, Any] = {"predictions": [result.label]}
        if want_proba and result.proba is not None:
            response["probabilities"] = [result.proba]
            response["classes"] = list(self.signature.classes or ())
        return orjson.dumps(response)

    def _v2_row(
        self,
        payload: dict[str, Any],
        row: list[float],
        request_id: str,
        pinned: bool,
        unit: str | None,
    ) -> bytes:
        own_id = v2_request_id(payload)
        names = requested_outputs(payload.get("outputs"), self.signature)
        assert self._row_path is not None
        result = self._row_path.run_row(row, "predict_proba" in names or self._proba_always)
        self._record_row(row, result, request_id, pinned, unit)
        label = str(result.label) if self._label_datatype == "BYTES" else result.label
        outputs = []
        for name in names:
            if name == "predict":
                outputs.append(
                    {"name": name, "shape": [1], "datatype": self._label_datatype, "data": [label]}
                )
            else:
                outputs.append(
                    {
                        "name": name,
                        "shape": self._proba_shape,
                        "datatype": "FP64",
                        "data": result.proba,
                    }
                )
        return orjson.dumps(
            {
                "model_name": self.settings.model_name,
                "model_version": self.settings.model_version,
                "id": own_id or request_id,
                "outputs": outputs,
            }
        )

    def _single_row(self, payload: Any, v2: bool) -> list[float] | None:
        if self._row_path is None or type(payload) is not dict:
            return None
        if v2:
            if "parameters" in payload or _outputs_have_parameters(payload):
                return None  # binary outputs and other options: the general path
            return v2_single_row(payload, self._n_features)
        return v1_single_row(payload, self._n_features)

    def _v1_response(
        self,
        features: np.ndarray,
        prediction: Prediction,
        request_id: str,
        pinned: bool,
        unit: str | None,
        want_proba: bool,
    ) -> bytes:
        response: dict[str, Any] = {
            "predictions": self._record(features, prediction, request_id, pinned, unit)
        }
        if want_proba and prediction.proba is not None:
            response["probabilities"] = prediction.proba.tolist()
            response["classes"] = list(self.signature.classes or ())
        return orjson.dumps(response)

    # Each endpoint comes in two forms: ``*_now`` runs the model on the calling thread (the
    # protocol-level fast lane uses it only for bodies too small to hold more than
    # ``inline_max_rows`` rows), the async form moves larger batches to a worker thread.

    def v1_predict_now(
        self, body: bytes, request_id: str, pinned: bool = False, unit: str | None = None
    ) -> bytes:
        payload = parse_json(body)
        if self.tabular:
            table, want_proba = decode_v1_table(payload, self.signature, self.limits)
            prediction = self._run_table(table, want_proba or self._proba_always)
            return self._v1_response(
                self._drift_of(table), prediction, request_id, pinned, unit, want_proba
            )
        row = self._single_row(payload, v2=False)
        if row is not None:
            return self._v1_row(payload, row, request_id, pinned, unit)
        features, want_proba = decode_v1(payload, self.signature, self.limits)
        prediction = self._run(features, want_proba or self._proba_always)
        return self._v1_response(features, prediction, request_id, pinned, unit, want_proba)

    async def v1_predict(
        self,
        body: bytes,
        request_id: str,
        header_length: int | None = None,
        pinned: bool = False,
        unit: str | None = None,
    ) -> bytes:
        payload = parse_json(body)
        if self.tabular:
            table, want_proba = decode_v1_table(payload, self.signature, self.limits)
            prediction = await self._infer_table(table, want_proba or self._proba_always)
            return self._v1_response(
                self._drift_of(table), prediction, request_id, pinned, unit, want_proba
            )
        row = self._single_row(payload, v2=False)
        if row is not None:
            return self._v1_row(payload, row, request_id, pinned, unit)
        features, want_proba = decode_v1(payload, self.signature, self.limits)
        prediction = await self._infer(features, want_proba or self._proba_always)
        return self._v1_response(features, prediction, request_id, pinned, unit, want_proba)

    def _drift_of(self, table: Table) -> np.ndarray:
        return table.numeric(self._drift_names)

    def _v2_response(
        self,
        payload: dict[str, Any],
        outputs: tuple[str, ...],
        own_id: str | None,
        features: np.ndarray,
        prediction: Prediction,
        request_id: str,
        pinned: bool,
        unit: str | None,
    ) -> bytes | Reply:
        self._record(features, prediction, request_id, pinned, unit)
        binary = binary_outputs(payload, outputs)
        tensors: list[dict[str, Any]] = []
        blobs: list[bytes] = []
        for name in outputs:
            values = prediction.labels if name == "predict" else prediction.proba
            assert values is not None
            if name in binary:
                datatype = v2_datatype(values)
                blob = encode_binary(values, datatype)
                tensors.append(
                    {
                        "name": name,
                        "shape": list(values.shape),
                        "datatype": datatype,
                        "parameters": {"binary_data_size": len(blob)},
                    }
                )
                blobs.append(blob)
            else:
                tensors.append(encode_v2_output(name, values))
        header = orjson.dumps(
            {
                "model_name": self.settings.model_name,
                "model_version": self.settings.model_version,
                "id": own_id or request_id,
                "outputs": tensors,
            }
        )
        return binary_reply(header, blobs) if blobs else header

    def _v2_payload(self, body: bytes, header_length: int | None) -> Any:
        if header_length is None:
            return parse_json(body)
        return split_binary_request(body, header_length)

    def v2_infer_now(
        self, body: bytes, request_id: str, pinned: bool = False, unit: str | None = None
    ) -> bytes | Reply:
        payload = parse_json(body)
        if self.tabular:
            tables = decode_v2_table(payload, self.signature, self.limits)
            prediction = self._run_table(tables.table, tables.want_proba or self._proba_always)
            return self._v2_response(
                payload,
                tables.outputs,
                tables.request_id,
                self._drift_of(tables.table),
                prediction,
                request_id,
                pinned,
                unit,
            )
        row = self._single_row(payload, v2=True)
        if row is not None:
            return self._v2_row(payload, row, request_id, pinned, unit)
        request = decode_v2(payload, self.signature, self.limits)
        prediction = self._run(
            request.features, "predict_proba" in request.outputs or self._proba_always
        )
        return self._v2_response(
            payload,
            request.outputs,
            request.request_id,
            request.features,
            prediction,
            request_id,
            pinned,
            unit,
        )

    async def v2_infer(
        self,
        body: bytes,
        request_id: str,
        header_length: int | None = None,
        pinned: bool = False,
        unit: str | None = None,
    ) -> bytes | Reply:
        payload = self._v2_payload(body, header_length)
        if self.tabular:
            tables = decode_v2_table(payload, self.signature, self.limits)
            prediction = await self._infer_table(
                tables.table, tables.want_proba or self._proba_always
            )
            return self._v2_response(
                payload,
                tables.outputs,
                tables.request_id,
                self._drift_of(tables.table),
                prediction,
                request_id,
                pinned,
                unit,
            )
        row = self._single_row(payload, v2=True)
        if row is not None:
            return self._v2_row(payload, row, request_id, pinned, unit)
        request = decode_v2(payload, self.signature, self.limits)
        prediction = await self._infer(
            request.features, "predict_proba" in request.outputs or self._proba_always
        )
        return self._v2_response(
            payload,
            request.outputs,
            request.request_id,
            request.features,
            prediction,
            request_id,
            pinned,
            unit,
        )

    async def v2_predict(
        self, payload: Any, request_id: str, pinned: bool = False, unit: str | None = None
    ) -> V2Prediction:
        """A decoded V2 request (the gRPC service's), validated, run and recorded as
        :meth:`v2_infer` does, with the prediction left for the caller to encode."""
        if self.tabular:
            tables = decode_v2_table(payload, self.signature, self.limits)
            prediction = await self._infer_table(
                tables.table, tables.want_proba or self._proba_always
            )
            self._record(self._drift_of(tables.table), prediction, request_id, pinned, unit)
            return V2Prediction(tables.outputs, tables.request_id, prediction)
        request = decode_v2(payload, self.signature, self.limits)
        prediction = await self._infer(
            request.features, "predict_proba" in request.outputs or self._proba_always
        )
        self._record(request.features, prediction, request_id, pinned, unit)
        return V2Prediction(request.outputs, request.request_id, prediction)

    def feedback(self, body: bytes) -> bytes:
        result = score_feedback(
            parse_json(body),
            self.store,
            self._regression,
            self.metrics.hot.classes,
            self.quality,
            self.counted_units,
        )
        metrics = self.metrics
        # Pinned predictions (testers) are answered above but counted apart.
        if result.pinned_rows:
            metrics.feedback_pinned.inc(result.pinned_rows)
        if result.rows > result.pinned_rows:
            metrics.feedback_total.inc(result.rows - result.pinned_rows)
        # Units (users with a sticky key) once each: what A/B tests count with a sticky key.
        if result.units:
            metrics.feedback_units.inc(result.units)
        if result.units_correct:
            metrics.feedback_units_correct.inc(result.units_correct)
        if result.correct > result.pinned_correct:
            metrics.feedback_correct.inc(result.correct - result.pinned_correct)
        for error in result.absolute_errors:
            metrics.feedback_error.observe(error)
        if result.absolute_errors:
            metrics.feedback_squared_error.inc(sum(e * e for e in result.absolute_errors))
        if result.confusion:
            metrics.observe_confusion(result.confusion)
        if result.log_losses:
            metrics.observe_log_losses(result.log_losses)
        if result.scores:
            metrics.observe_scores(result.scores)
        if result.unknown_ids:
            metrics.feedback_unknown.inc(len(result.unknown_ids))
            expired = len(result.expired_ids)
            if expired:
                metrics.feedback_unjoined[REASON_EXPIRED].inc(expired)
            if len(result.unknown_ids) > expired:
                metrics.feedback_unjoined[REASON_UNKNOWN].inc(len(result.unknown_ids) - expired)
        return orjson.dumps(result.as_json())
