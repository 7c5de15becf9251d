"""What a fitted model expects and returns, read once at load time and used to validate input."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

EstimatorType = Literal["classifier", "regressor", "other"]


@dataclass(frozen=True)
class ModelSignature:
    """The contract between clients and the model: feature count/names, classes, kind."""

    n_features: int
    feature_names: tuple[str, ...] | None
    classes: tuple[Any, ...] | None
    estimator_type: EstimatorType
    estimator_class: str
    has_predict_proba: bool
    sklearn_version_saved: str
    sklearn_version_runtime: str

    @property
    def version_skew(self) -> bool:
        """True when the artifact was saved with another scikit-learn than the one serving it."""
        return self.sklearn_version_saved != self.sklearn_version_runtime

    def drift_features(self) -> tuple[str, ...]:
        """Names of the numeric input features the drift summary follows."""
        return self.feature_names or tuple(str(i) for i in range(self.n_features))

    def v2_inputs(self) -> list[dict[str, Any]]:
        return [{"name": "input-0", "datatype": "FP64", "shape": [-1, self.n_features]}]

    def v2_outputs(self) -> list[dict[str, Any]]:
        outputs: list[dict[str, Any]] = [{"name": "predict", "datatype": "FP64", "shape": [-1]}]
        if self.has_predict_proba:
            n = len(self.classes or ())
            outputs.append({"name": "predict_proba", "datatype": "FP64", "shape": [-1, n]})
        return outputs

    def as_json(self) -> dict[str, Any]:
        """JSON-friendly description for the metadata endpoints."""
        return {
            "n_features": self.n_features,
            "feature_names": list(self.feature_names) if self.feature_names else None,
            "classes": list(self.classes) if self.classes is not None else None,
            "estimator_type": self.estimator_type,
            "estimator_class": self.estimator_class,
            "predict_proba": self.has_predict_proba,
            "sklearn_version_saved": self.sklearn_version_saved,
            "sklearn_version_runtime": self.sklearn_version_runtime,
        }


def _native(value: Any) -> Any:
    """numpy scalars to plain Python, so classes compare and serialise like JSON values."""
    item = getattr(value, "item", None)
    return item() if callable(item) else value


def signature_of(estimator: Any, sklearn_version_saved: str) -> ModelSignature:
    """Read the signature from a fitted estimator (pipelines delegate to their steps)."""
    import sklearn
    from sklearn.base import is_classifier, is_regressor

    n_features = getattr(estimator, "n_features_in_", None)
    if not isinstance(n_features, int) or n_features < 1:
        raise ValueError(
            f"{type(estimator).__name__} has no n_features_in_: is it fitted on a 2-D array?"
        )
    names = getattr(estimator, "feature_names_in_", None)
    feature_names = tuple(str(n) for n in names) if names is not None else None
    classes_attr = getattr(estimator, "classes_", None)
    classes = tuple(_native(c) for c in classes_attr) if classes_attr is not None else None
    kind: EstimatorType
    if is_classifier(estimator):
        kind = "classifier"
    elif is_regressor(estimator):
        kind = "regressor"
    else:
        kind = "other"
    try:
        has_proba = callable(getattr(estimator, "predict_proba", None))
    except AttributeError:  # available_if raises when the final step lacks it
        has_proba = False
    return ModelSignature(
        n_features=n_features,
        feature_names=feature_names,
        classes=classes if kind == "classifier" else None,
        estimator_type=kind,
        estimator_class=f"{type(estimator).__module__}.{type(estimator).__qualname__}",
        has_predict_proba=has_proba and kind == "classifier",
        sklearn_version_saved=sklearn_version_saved,
        sklearn_version_runtime=sklearn.__version__,
    )
