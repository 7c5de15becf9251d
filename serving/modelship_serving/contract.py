"""The model server's metrics contract: the metric and label names its /metrics exports.

The operator's analysis queries, the chart's alerts and its dashboard are written against
these names, so they are code, not matching strings: ``metrics.py`` registers its series
with them and ``modelship_operator.analysis.queries`` imports them. No dependencies (the
operator imports this module without the server's).

Every series carries the labels of :data:`BASE_LABELS`, set by the process itself (from
its settings, which the operator renders into the pod's environment). A Kubernetes scrape
adds ``namespace`` (and ``pod``, ``container``, ...); nothing else is assumed of the
Prometheus that scrapes it, so no relabelling is needed. No label here is one a
Kubernetes scrape attaches to its targets (``endpoint``, ``pod``, ``job``, ...): such a
clash would rename the server's label to ``exported_<name>`` under the Prometheus
Operator's default ``honorLabels: false``. docs/metrics.md is the readable version.
"""

from __future__ import annotations

import os
from typing import Final

# --- labels every series carries --------------------------------------------------------

#: The ModelDeployment the server belongs to (``MODELSHIP_DEPLOYMENT``; empty outside one).
DEPLOYMENT: Final = "deployment"
#: The model's name (``MODELSHIP_MODEL_NAME``).
MODEL: Final = "model"
#: The model version (``MODELSHIP_MODEL_VERSION``).
VERSION: Final = "version"
#: The rollout variant, ``stable`` or ``canary`` (``MODELSHIP_VARIANT``).
VARIANT: Final = "variant"
BASE_LABELS: Final = (DEPLOYMENT, MODEL, VERSION, VARIANT)

#: The environment variable naming the ModelDeployment (the operator sets it).
DEPLOYMENT_ENV: Final = "MODELSHIP_DEPLOYMENT"

# --- labels of some series --------------------------------------------------------------

#: Which handler answered: see :data:`INFERENCE_HANDLERS`; others are e.g. ``health``.
HANDLER: Final = "handler"
#: The HTTP status code, as digits. A gRPC call counts the HTTP code the same request would
#: have got over HTTP (200, 422, 404, 503, 500, ...), so one error-rate query covers both.
CODE: Final = "code"
#: A classifier's predicted class.
CLASS: Final = "class"
#: The class the ground truth (feedback) gives a predicted row (``other`` when it is none of
#: the model's classes, so clients cannot grow the series without bound).
TRUE_CLASS: Final = "true_class"
OTHER_CLASS: Final = "other"
#: An input feature's name (drift series).
FEATURE: Final = "feature"
#: The quantile of a windowed input feature quantile (drift series).
QUANTILE: Final = "quantile"
#: Why feedback was not joined to a prediction: ``expired`` or ``unknown``.
REASON: Final = "reason"
#: Whether a scored row's ground truth is the series' ``class``: ``true`` or ``false``
#: (``false`` too for a truth that is none of the model's classes).
POSITIVE: Final = "positive"
POSITIVE_VALUES: Final = ("true", "false")

#: ``handler`` values of inference requests (what the analysis counts).
V1_PREDICT: Final = "v1_predict"
V2_INFER: Final = "v2_infer"
#: ModelInfer of the gRPC service (inference.GRPCInferenceService).
GRPC_INFER: Final = "grpc_infer"
INFERENCE_HANDLERS: Final = (V1_PREDICT, V2_INFER, GRPC_INFER)

# --- metric families (as registered; a counter is scraped as NAME_total) -----------------

REQUESTS: Final = "modelship_requests"
REQUEST_DURATION_SECONDS: Final = "modelship_request_duration_seconds"
REQUESTS_IN_FLIGHT: Final = "modelship_requests_in_flight"
PREDICTIONS: Final = "modelship_predictions"
PREDICTION_VALUE: Final = "modelship_prediction_value"
FEEDBACK: Final = "modelship_feedback"
FEEDBACK_CORRECT: Final = "modelship_feedback_correct"
FEEDBACK_ABSOLUTE_ERROR: Final = "modelship_feedback_absolute_error"
FEEDBACK_SQUARED_ERROR: Final = "modelship_feedback_squared_error"
FEEDBACK_CONFUSION: Final = "modelship_feedback_confusion"
#: Log loss of feedback (classifiers, ``MODELSHIP_FEEDBACK_LOG_LOSS``): ``_sum`` adds
#: ``-ln(max(p, LOG_LOSS_EPS))`` over scored rows, p the probability the model gave the
#: row's true class; ``_count`` counts them. Scored rows: unpinned, truth one of the model's
#: classes, probabilities remembered. sum / count is scikit-learn's ``log_loss`` on them.
FEEDBACK_LOG_LOSS: Final = "modelship_feedback_log_loss"
#: The probability the model gave ``class`` for each unpinned feedback row, by whether the
#: row's truth is that class (``positive``): a histogram over :data:`SCORE_BUCKETS` per
#: class named in ``MODELSHIP_FEEDBACK_SCORE_CLASSES``, from which the one-vs-rest ROC AUC
#: of that class is computed.
FEEDBACK_SCORE: Final = "modelship_feedback_score"
#: Rows of feedback for pinned predictions (a tester a routing match rule sent to this
#: variant, ``x-modelship-pinned: 1``): answered, but counted here instead of in the
#: variant's feedback series above, so testers never move A/B statistics or quality checks.
FEEDBACK_PINNED: Final = "modelship_feedback_pinned"
FEEDBACK_UNKNOWN: Final = "modelship_feedback_unknown"
FEEDBACK_UNJOINED: Final = "modelship_feedback_unjoined"
#: Units (users) whose first unpinned feedback this pod joined, each counted once: a
#: prediction the router marked with ``x-modelship-unit`` (a sticky key's hash) counts its
#: unit; one without a unit is a unit of its own. With a sticky key, A/B statistics count
#: these (users), not rows: one user's requests are not independent trials.
FEEDBACK_UNITS: Final = "modelship_feedback_units"
#: Those units whose counted feedback's first row matched the prediction (classifiers).
FEEDBACK_UNITS_CORRECT: Final = "modelship_feedback_units_correct"
MODEL_LOAD_SECONDS: Final = "modelship_model_load_seconds"
READY: Final = "modelship_ready"
MODEL_INFO: Final = "modelship_model_info"
INPUT_ROWS: Final = "modelship_input_rows"
INPUT_FEATURE_SUM: Final = "modelship_input_feature_sum"
INPUT_FEATURE_WINDOW_MEAN: Final = "modelship_input_feature_window_mean"
INPUT_FEATURE_WINDOW_QUANTILE: Final = "modelship_input_feature_window_quantile"
#: Population stability index of each feature's recent window against the reference
#: profile saved with the model (a gauge; only features with a reference, and only once the
#: window holds :data:`PSI_MIN_ROWS` non-missing values of the feature).
INPUT_FEATURE_PSI: Final = "modelship_input_feature_psi"
#: Fewest non-missing values of a feature in the window for its PSI to be exported (or the
#: whole window, when it is smaller). Sampling noise alone gives a PSI of about
#: (bins - 1) / n: 0.09 at 100 rows, and the worst of 30 features near 0.27, a false drift;
#: at 500 about 0.02, and the worst of 30 near 0.05.
PSI_MIN_ROWS: Final = 500

#: scikit-learn's clip of probabilities in ``log_loss`` (float64 machine epsilon): a true
#: class given probability 0 costs ``-ln(LOG_LOSS_EPS)`` (about 36), not infinity.
LOG_LOSS_EPS: Final = 2.220446049250313e-16
#: Most classes a model may have for its probabilities to be remembered (per stored row).
MAX_SCORED_CLASSES: Final = 32
#: Upper bounds of the score histogram's buckets (and +Inf): fine at both ends, where a
#: good model puts most of its scores, and every 0.05 between.
SCORE_BUCKETS: Final = (
    0.001, 0.002, 0.005, 0.01, 0.02, 0.05,
    0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5,
    0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95,
    0.98, 0.99, 0.995, 0.998, 0.999, 1.0,
)  # fmt: skip

#: Families that are counters (their samples are NAME_total).
COUNTERS: Final = frozenset(
    {REQUESTS, PREDICTIONS, FEEDBACK, FEEDBACK_CORRECT, FEEDBACK_SQUARED_ERROR, FEEDBACK_CONFUSION,
     FEEDBACK_PINNED, FEEDBACK_UNKNOWN, FEEDBACK_UNJOINED, INPUT_ROWS, INPUT_FEATURE_SUM,
     FEEDBACK_UNITS, FEEDBACK_UNITS_CORRECT}
)  # fmt: skip
#: Families that are summaries without quantiles (their samples are NAME_sum, NAME_count).
SUMMARIES: Final = frozenset({FEEDBACK_ABSOLUTE_ERROR, FEEDBACK_LOG_LOSS})
#: Families that are histograms (their samples are NAME_bucket, NAME_sum, NAME_count).
HISTOGRAMS: Final = frozenset({REQUEST_DURATION_SECONDS, PREDICTION_VALUE, FEEDBACK_SCORE})

#: The request header the router sets to a sticky request's unit (16 hex chars).
UNIT_HEADER: Final = "x-modelship-unit"
#: Longest unit a server remembers (a longer header value is no unit).
MAX_UNIT_LENGTH: Final = 64


def total(family: str) -> str:
    """The series name of a counter family in PromQL: ``modelship_requests_total``."""
    return f"{family}_total"


def summed(family: str) -> str:
    """The sum series of a summary or histogram family: ``..._error_sum``."""
    return f"{family}_sum"


def counted(family: str) -> str:
    """The count series of a summary or histogram family: ``..._error_count``."""
    return f"{family}_count"


def bucket(family: str) -> str:
    """The bucket series of a histogram family: ``..._seconds_bucket``."""
    return f"{family}_bucket"


def deployment_from_env() -> str:
    """The ModelDeployment this process serves, from ``MODELSHIP_DEPLOYMENT`` ("" if unset)."""
    return os.environ.get(DEPLOYMENT_ENV, "")
