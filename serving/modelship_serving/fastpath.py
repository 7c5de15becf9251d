"""Inference paths: plain scikit-learn, and accelerated paths chosen per model at load time.

scikit-learn spends 100-300 µs of input validation and dispatch on every call, which dwarfs the
arithmetic of a one-row prediction. The accelerated paths run the fitted model's own arithmetic
in NumPy without that overhead, in the same order of operations as scikit-learn, so results
match it (tests assert identical class predictions, and probabilities / regression values
within rtol=1e-9, atol=1e-12; in practice they are bit-identical):

- ``numpy-linear``: LogisticRegression (binary and multinomial), RidgeClassifier, LinearSVC,
  LinearRegression, Ridge, Lasso, ElasticNet, SGDRegressor;
- ``numpy-trees``: DecisionTree, RandomForest and ExtraTrees (classifier and regressor, one
  output), all trees walked together, one vectorised step per tree level;
- either of them behind StandardScaler / MinMaxScaler steps of a Pipeline.

Linear models (alone or behind the scalers) also answer a one-row request with plain Python
arithmetic on the decoded JSON numbers (``run_row``): for a single row every NumPy call costs more
than the arithmetic, so the row never becomes an array. It is held to the same tolerance on the
rows of the probe batch. Class predictions agree unless a row's decision score lies within
rounding error (about 1e-15 relative) of the decision boundary.

Everything else, and any model whose accelerated output disagrees with scikit-learn on a probe
batch at load time, is served by the ``sklearn`` path.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from operator import mul
from typing import Any

import numpy as np
from scipy.special import expit
from sklearn.utils.extmath import softmax

log = logging.getLogger("modelship.serving")

RTOL = 1e-9
ATOL = 1e-12
# Rows x nodes up to which the tree path evaluates every node's split at once.
_ALL_NODES_MAX = 50_000


@dataclass(frozen=True)
class Prediction:
    """One call's output: labels (or values), class indices (classifiers), probabilities."""

    labels: np.ndarray
    class_indices: np.ndarray | None
    proba: np.ndarray | None


class SklearnPath:
    """The reference path: the estimator's own predict / predict_proba."""

    name = "sklearn"

    def __init__(self, estimator: Any) -> None:
        self.estimator = estimator
        classes = getattr(estimator, "classes_", None)
        self._classes = np.asarray(classes) if classes is not None else None

    def run(self, features: np.ndarray, want_proba: bool) -> Prediction:
        labels = np.asarray(self.estimator.predict(features))
        indices = None
        if self._classes is not None and labels.ndim == 1:
            indices = np.searchsorted(self._classes, labels)
        proba = np.asarray(self.estimator.predict_proba(features)) if want_proba else None
        return Prediction(labels, indices, proba)

    def run_frame(self, frame: Any, want_proba: bool) -> Prediction:
        """The same on a pandas DataFrame (tabular models)."""
        return self.run(frame, want_proba)


@dataclass(frozen=True, slots=True)
class RowPrediction:
    """One row's output as Python values: the class index (classifiers), the label or value,
    and the class probabilities when asked for."""

    class_index: int | None
    label: Any
    proba: list[float] | None


# -- preprocessing steps ----------------------------------------------------------------------

Transform = Callable[[np.ndarray], np.ndarray]
RowTransform = Callable[[list[float]], list[float]]


def _standard_scaler_row(step: Any) -> RowTransform:
    mean = step.mean_.tolist() if step.with_mean else None
    scale = step.scale_.tolist() if step.with_std else None

    def transform(row: list[float]) -> list[float]:
        if mean is not None:
            row = [x - m for x, m in zip(row, mean, strict=True)]
        if scale is not None:
            row = [x / s for x, s in zip(row, scale, strict=True)]
        return row

    return transform


def _min_max_scaler_row(step: Any) -> RowTransform:
    scale, offset = step.scale_.tolist(), step.min_.tolist()
    low, high = (float(v) for v in step.feature_range)
    clip = bool(step.clip)

    def transform(row: list[float]) -> list[float]:
        out = [x * s + o for x, s, o in zip(row, scale, offset, strict=True)]
        if clip:
            out = [min(max(x, low), high) for x in out]
        return out

    return transform


def _standard_scaler(step: Any) -> Transform:
    mean, scale = step.mean_ if step.with_mean else None, step.scale_ if step.with_std else None

    def transform(x: np.ndarray) -> np.ndarray:
        x = np.array(x, dtype=np.float64, copy=True)
        if mean is not None:
            x -= mean
        if scale is not None:
            x /= scale
        return x

    return transform


def _min_max_scaler(step: Any) -> Transform:
    scale, offset, clip, low_high = step.scale_, step.min_, step.clip, step.feature_range

    def transform(x: np.ndarray) -> np.ndarray:
        x = np.array(x, dtype=np.float64, copy=True)
        x *= scale
        x += offset
        if clip:
            np.clip(x, low_high[0], low_high[1], out=x)
        return x

    return transform


_TRANSFORMS: dict[str, Callable[[Any], Transform]] = {
    "sklearn.preprocessing._data.StandardScaler": _standard_scaler,
    "sklearn.preprocessing._data.MinMaxScaler": _min_max_scaler,
}
_ROW_TRANSFORMS: dict[str, Callable[[Any], RowTransform]] = {
    "sklearn.preprocessing._data.StandardScaler": _standard_scaler_row,
    "sklearn.preprocessing._data.MinMaxScaler": _min_max_scaler_row,
}


def _qualname(obj: Any) -> str:
    return f"{type(obj).__module__}.{type(obj).__qualname__}"


# -- linear models ----------------------------------------------------------------------------

_LINEAR_REGRESSORS = {
    "sklearn.linear_model._base.LinearRegression",
    "sklearn.linear_model._ridge.Ridge",
    "sklearn.linear_model._coordinate_descent.Lasso",
    "sklearn.linear_model._coordinate_descent.ElasticNet",
    "sklearn.linear_model._stochastic_gradient.SGDRegressor",
}
_LINEAR_CLASSIFIERS = {
    "sklearn.linear_model._logistic.LogisticRegression",
    "sklearn.linear_model._ridge.RidgeClassifier",
    "sklearn.svm._classes.LinearSVC",
}


class _LinearHead:
    name = "numpy-linear"

    def __init__(self, est: Any) -> None:
        self.coef_t = np.ascontiguousarray(est.coef_).T
        self.intercept = np.asarray(est.intercept_, dtype=np.float64)
        self.classes = np.asarray(est.classes_) if hasattr(est, "classes_") else None
        self.logistic = _qualname(est) == "sklearn.linear_model._logistic.LogisticRegression"
        self.ravel = _qualname(est) == "sklearn.linear_model._stochastic_gradient.SGDRegressor"
        if self.logistic and len(self.classes) > 2:  # type: ignore[arg-type]
            if getattr(est, "multi_class", "deprecated") not in (
                "auto",
                "deprecated",
                "multinomial",
            ):
                raise NotImplementedError("one-vs-rest LogisticRegression")
            if getattr(est, "solver", "") == "liblinear":
                raise NotImplementedError("liblinear multiclass is one-vs-rest")
        # The same coefficients as Python floats, for run_row (one list per output or class).
        coef = np.asarray(est.coef_, dtype=np.float64)
        self.coef_rows: list[list[float]] = (
            [coef.tolist()] if coef.ndim == 1 else [list(c) for c in coef.tolist()]
        )
        self.intercepts: list[float] = np.broadcast_to(
            self.intercept, (len(self.coef_rows),)
        ).tolist()
        self.labels = self.classes.tolist() if self.classes is not None else None
        self.rows_supported = len(self.coef_rows) == 1 or (
            self.classes is not None and len(self.coef_rows) == len(self.classes)
        )

    def run_row(self, row: list[float], want_proba: bool) -> RowPrediction:
        if len(self.coef_rows) == 1:
            score = sum(map(mul, row, self.coef_rows[0])) + self.intercepts[0]
            if self.labels is None:
                return RowPrediction(None, score, None)
            index = 1 if score > 0 else 0
            proba = None
            if want_proba:
                p = _expit(score)
                proba = [1 - p, p]
            return RowPrediction(index, self.labels[index], proba)
        scores = [
            sum(map(mul, row, coef)) + b
            for coef, b in zip(self.coef_rows, self.intercepts, strict=True)
        ]
        top = max(scores)
        index = scores.index(top)
        proba = None
        if want_proba:
            exps = [math.exp(v - top) for v in scores]
            total = sum(exps)
            proba = [e / total for e in exps]
        assert self.labels is not None
        return RowPrediction(index, self.labels[index], proba)

    def run(self, x: np.ndarray, want_proba: bool) -> Prediction:
        scores = x @ self.coef_t + self.intercept
        if self.classes is None:
            if self.ravel:
                scores = scores.ravel()
            return Prediction(scores, None, None)
        if scores.ndim == 2 and scores.shape[1] == 1:
            scores = scores.ravel()
        binary = scores.ndim == 1
        indices = (scores > 0).astype(np.intp) if binary else scores.argmax(axis=1)
        proba = None
        if want_proba:
            if binary:
                p = expit(scores)
                proba = np.stack([1 - p, p], axis=1)
            else:
                proba = softmax(scores.copy(), copy=False)
        return Prediction(self.classes.take(indices, axis=0), indices, proba)


def _expit(x: float) -> float:
    """The logistic function, without overflow for large negative scores."""
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    e = math.exp(x)
    return e / (1.0 + e)


# -- tree ensembles ---------------------------------------------------------------------------

_TREE_CLASSIFIERS = {
    "sklearn.tree._classes.DecisionTreeClassifier",
    "sklearn.tree._classes.ExtraTreeClassifier",
    "sklearn.ensemble._forest.RandomForestClassifier",
    "sklearn.ensemble._forest.ExtraTreesClassifier",
}
_TREE_REGRESSORS = {
    "sklearn.tree._classes.DecisionTreeRegressor",
    "sklearn.tree._classes.ExtraTreeRegressor",
    "sklearn.ensemble._forest.RandomForestRegressor",
    "sklearn.ensemble._forest.ExtraTreesRegressor",
}


class _TreesHead:
    """All trees of a forest in flat arrays; leaves point at themselves so a fixed number of
    vectorised steps (the deepest tree's depth) lands every (row, tree) pair on its leaf."""

    name = "numpy-trees"

    def __init__(self, est: Any) -> None:
        self.single = not hasattr(est, "estimators_")
        trees = [est] if self.single else list(est.estimators_)
        if est.n_outputs_ != 1:
            raise NotImplementedError("multi-output trees")
        self.classifier = hasattr(est, "classes_")
        self.classes = np.asarray(est.classes_) if self.classifier else None
        n_classes = len(self.classes) if self.classes is not None else 1
        features, thresholds, lefts, rights, values, roots = [], [], [], [], [], []
        offset = 0
        for tree in trees:
            t = tree.tree_
            n = t.node_count
            ids = np.arange(n) + offset
            leaf = t.children_left == -1
            features.append(np.where(leaf, 0, t.feature).astype(np.intp))
            thresholds.append(np.where(leaf, 0.0, t.threshold))
            lefts.append(np.where(leaf, ids, t.children_left + offset).astype(np.intp))
            rights.append(np.where(leaf, ids, t.children_right + offset).astype(np.intp))
            values.append(t.value[:, 0, :n_classes])
            roots.append(offset)
            offset += n
        self.feature = np.concatenate(features)
        self.threshold = np.concatenate(thresholds)
        self.left = np.concatenate(lefts)
        self.right = np.concatenate(rights)
        self.value = np.ascontiguousarray(np.concatenate(values))
        self.roots = np.asarray(roots, dtype=np.intp)
        self.depth = max(tree.tree_.max_depth for tree in trees)
        self.n_trees = len(trees)
        self.n_nodes = offset

    def leaves(self, x: np.ndarray) -> np.ndarray:
        """Leaf node per (row, tree); features are compared as float32, as scikit-learn does."""
        x32 = np.ascontiguousarray(x, dtype=np.float32)
        if not np.isfinite(x32).all():
            raise ValueError("Input X contains infinity or a value too large for dtype('float32')")
        n_rows, n_features = x32.shape
        node = np.broadcast_to(self.roots, (n_rows, self.n_trees))
        if n_rows * self.n_nodes <= _ALL_NODES_MAX:
            # Few rows: decide every node's branch at once (two vectorised operations over all
            # nodes), then each level is a single gather.
            branch = np.where(x32[:, self.feature] <= self.threshold, self.left, self.right)
            if n_rows == 1:
                step = branch[0]
                for _ in range(self.depth):
                    node = step[node]
                return node
            flat = branch.ravel()
            base = (np.arange(n_rows, dtype=np.intp) * self.n_nodes)[:, None]
            for _ in range(self.depth):
                node = flat[base + node]
            return node
        # Many rows: walk level by level, touching only the nodes on each row's path.
        values = x32.ravel()
        base = (np.arange(n_rows, dtype=np.intp) * n_features)[:, None]
        feature, threshold, left, right = self.feature, self.threshold, self.left, self.right
        for _ in range(self.depth):
            go_left = values[base + feature[node]] <= threshold[node]
            node = np.where(go_left, left[node], right[node])
        return node

    def run(self, x: np.ndarray, want_proba: bool) -> Prediction:
        node = self.leaves(x)
        # (trees, rows, outputs): summed tree by tree in order, like scikit-learn's accumulation
        per_tree = self.value[node.T]
        if self.single:
            total = per_tree[0]
        else:
            total = np.cumsum(per_tree, axis=0)[-1]
            total /= self.n_trees
        if self.classes is None:
            return Prediction(total[:, 0], None, None)
        indices = total.argmax(axis=1)
        return Prediction(
            self.classes.take(indices, axis=0), indices, total if want_proba else None
        )


# -- composition and selection ----------------------------------------------------------------


class CompiledPath:
    """Preprocessing transforms followed by an accelerated head."""

    def __init__(
        self,
        transforms: list[Transform],
        head: Any,
        row_transforms: list[RowTransform] | None = None,
    ) -> None:
        self.transforms = transforms
        self.head = head
        self.name = head.name
        self.row_transforms = row_transforms or []
        #: Whether run_row covers this model (linear heads, scaler steps).
        self.rows_supported = bool(getattr(head, "rows_supported", False)) and len(
            self.row_transforms
        ) == len(transforms)

    def run_row(self, row: list[float], want_proba: bool) -> RowPrediction:
        """One row of plain Python numbers (only when ``rows_supported``)."""
        for transform in self.row_transforms:
            row = transform(row)
        return self.head.run_row(row, want_proba)  # type: ignore[no-any-return]

    def run(self, features: np.ndarray, want_proba: bool) -> Prediction:
        x = features
        for transform in self.transforms:
            x = transform(x)
        return self.head.run(x, want_proba)  # type: ignore[no-any-return]


def compile_estimator(estimator: Any) -> CompiledPath:
    """Build the accelerated path for ``estimator``; NotImplementedError when none covers it."""
    transforms: list[Transform] = []
    row_transforms: list[RowTransform] = []
    final = estimator
    if _qualname(estimator) == "sklearn.pipeline.Pipeline":
        *steps, (_, final) = estimator.steps
        for _, step in steps:
            if step in (None, "passthrough"):
                continue
            factory = _TRANSFORMS.get(_qualname(step))
            if factory is None:
                raise NotImplementedError(f"pipeline step {_qualname(step)}")
            transforms.append(factory(step))
            row_transforms.append(_ROW_TRANSFORMS[_qualname(step)](step))
    kind = _qualname(final)
    if kind in _LINEAR_CLASSIFIERS or kind in _LINEAR_REGRESSORS:
        return CompiledPath(transforms, _LinearHead(final), row_transforms)
    if kind in _TREE_CLASSIFIERS or kind in _TREE_REGRESSORS:
        return CompiledPath(transforms, _TreesHead(final))
    raise NotImplementedError(kind)


def probe_batch(estimator: Any, n_features: int, rows: int = 256) -> np.ndarray:
    """Inputs for the load-time agreement check: around zero, and spread across the split
    thresholds of tree models so many branches are taken."""
    rng = np.random.default_rng(0)
    batch = rng.normal(0.0, 3.0, size=(rows, n_features))
    final = estimator.steps[-1][1] if hasattr(estimator, "steps") else estimator
    trees = list(getattr(final, "estimators_", []) if hasattr(final, "estimators_") else [])
    if hasattr(final, "tree_"):
        trees = [final]
    if not trees or not all(hasattr(t, "tree_") for t in trees):
        return batch
    for column in range(n_features):
        cuts = np.concatenate([t.tree_.threshold[t.tree_.feature == column] for t in trees])
        if cuts.size:
            batch[:, column] = rng.uniform(cuts.min() - 1.0, cuts.max() + 1.0, size=rows)
    return batch


def agrees_with_sklearn(path: Any, reference: SklearnPath, batch: np.ndarray) -> bool:
    """Same class predictions, and values / probabilities within RTOL/ATOL."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        want_proba = callable(getattr(reference.estimator, "predict_proba", None)) and (
            getattr(reference.estimator, "classes_", None) is not None
        )
        try:
            expected = reference.run(batch, want_proba)
        except (AttributeError, ValueError):
            want_proba = False
            expected = reference.run(batch, False)
        got = path.run(batch, want_proba)
    if expected.labels.dtype.kind in "fc":
        same = np.allclose(got.labels, expected.labels, rtol=RTOL, atol=ATOL)
    else:
        same = bool(np.array_equal(got.labels, expected.labels))
    if want_proba and expected.proba is not None:
        same = same and np.allclose(got.proba, expected.proba, rtol=RTOL, atol=ATOL)
    if same and getattr(path, "rows_supported", False):
        same = rows_agree(path, expected, batch[:ROW_PROBES], want_proba)
    return bool(same)


ROW_PROBES = 64


def rows_agree(path: Any, expected: Prediction, batch: np.ndarray, want_proba: bool) -> bool:
    """``path.run_row`` on each row of ``batch`` matches scikit-learn's ``expected`` output."""
    labels = expected.labels.tolist()
    numeric = expected.labels.dtype.kind in "fc"
    for i, row in enumerate(batch.tolist()):
        got = path.run_row(row, want_proba)
        if numeric:
            if not math.isclose(got.label, labels[i], rel_tol=RTOL, abs_tol=ATOL):
                return False
        elif got.label != labels[i] or got.class_index is None:
            return False
        if (
            want_proba
            and expected.proba is not None
            and (
                got.proba is None
                or not np.allclose(got.proba, expected.proba[i], rtol=RTOL, atol=ATOL)
            )
        ):
            return False
    return True


def quiet_feature_name_warnings() -> None:
    """Models fitted on DataFrames warn on every ndarray call; the server validates names."""
    warnings.filterwarnings("ignore", message="X does not have valid feature names")


def choose_path(estimator: Any, mode: str, signature: Any = None) -> Any:
    """The fastest path that covers ``estimator`` and agrees with scikit-learn on a probe batch
    (``mode='sklearn'`` forces the reference path); tabular models (``signature.tabular``) get
    the numpy-tabular path (tabular_path.py) or scikit-learn on a DataFrame."""
    reference = SklearnPath(estimator)
    if mode == "sklearn":
        return reference
    if signature is not None and signature.tabular:
        from .tabular_path import choose_tabular_path

        return choose_tabular_path(estimator, reference, signature)
    try:
        compiled = compile_estimator(estimator)
    except NotImplementedError as exc:
        log.info("no accelerated inference path for %s; using scikit-learn", exc)
        return reference
    except (AttributeError, TypeError, ValueError) as exc:
        log.warning("cannot compile the accelerated path (%r); using scikit-learn", exc)
        return reference
    batch = probe_batch(estimator, int(estimator.n_features_in_))
    if not agrees_with_sklearn(compiled, reference, batch):
        log.warning(
            "the %s path disagrees with scikit-learn on a probe batch; using scikit-learn",
            compiled.name,
        )
        return reference
    return compiled
