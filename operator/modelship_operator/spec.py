"""The ModelDeployment spec: the typed, validated form of what a user asks for.

These models are the single source of truth of the API: ``modelship_operator.crd`` generates
the CRD's OpenAPI schema (descriptions, defaults, enums, bounds, CEL rules) from them, and the
operator parses every resource through them. Each CEL rule is declared once as a
:class:`~modelship_operator.validation.Rule` and checked by the matching validator here with
the same message.
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated, Any, Final, Literal, Self

from pydantic import Field, PrivateAttr, field_validator, model_validator

from modelship_operator.headers import check_headers
from modelship_operator.sources import REGISTRY_URI_MESSAGE, REGISTRY_URI_PATTERN
from modelship_operator.sources import SCHEME as REGISTRY_SCHEME
from modelship_operator.status import ModelDeploymentStatus, ModelRef
from modelship_operator.validation import (
    DURATION_PATTERN,
    ApiModel,
    DurationBounds,
    Matches,
    Quantity,
    Rule,
    cel,
    parse_duration,
)

GROUP: Final = "modelship.io"
VERSION: Final = "v1alpha2"
API_VERSION: Final = f"{GROUP}/{VERSION}"
KIND: Final = "ModelDeployment"
PLURAL: Final = "modeldeployments"

#: Longest ModelDeployment name: children are named ``<name>-stable``/``-canary``/``-router``
#: and Service names are DNS-1035 labels of at most 63 characters.
MAX_NAME_LENGTH: Final = 56

#: Annotation for one-shot manual actions (the ``kubectl modelship`` plugin writes it):
#: ``promote``, ``abort`` or ``retry``, optionally followed by ``/<nonce>`` so the same
#: action can be asked twice. The operator records the value it has handled in
#: ``status.lastHandledAction`` and acts once per distinct value.
ACTION_ANNOTATION: Final = "modelship.io/action"
ACTIONS: Final = ("promote", "abort", "retry")

Variant = Literal["stable", "canary"]
VARIANTS: Final[tuple[Variant, ...]] = ("stable", "canary")

# --- built-in metrics -----------------------------------------------------------------------

Better = Literal["Higher", "Lower"]

#: Built-in metrics, computed from the serving pods' own series, and which way is better.
BUILTIN_METRICS: Final[dict[str, Better]] = {
    "success-rate": "Higher",  # percent of requests answered without a 5xx, 0..100
    "latency-p99": "Lower",  # 99th percentile of request duration, seconds
    "accuracy": "Higher",  # percent of predictions confirmed by feedback, 0..100
    "mae": "Lower",  # mean absolute error of a regressor against feedback
    "rmse": "Lower",  # root mean squared error of a regressor against feedback
    "precision": "Higher",  # percent of predictions of spec'd className that were right
    "recall": "Higher",  # percent of className's true rows the model predicted as it
    "f1": "Higher",  # harmonic mean of precision and recall for className, percent
    "log-loss": "Lower",  # mean negative log of the probability given to the true class
    "roc-auc": "Higher",  # area under the ROC curve of className's probability, 0..1
    "drift": "Lower",  # worst input feature's PSI against the training profile
}
#: Built-in metrics about one class of a classifier: they need className.
CLASS_METRICS: Final = frozenset({"precision", "recall", "f1", "roc-auc"})
_BUILTIN_LIST = "[" + ", ".join(f"'{n}'" for n in BUILTIN_METRICS) + "]"

# --- string shapes --------------------------------------------------------------------------

_LABEL_VALUE = r"^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$"
_DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
_DNS_1035 = r"^[a-z]([-a-z0-9]*[a-z0-9])?$"
_DNS_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
_HEADER_NAME = r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$"
_COOKIE_NAME = _HEADER_NAME
_PRINTABLE = r"^[ -~]*$"

Version = Annotated[
    str,
    Matches(
        _LABEL_VALUE,
        "version must be 1-63 letters, digits, '-', '_' or '.', starting and ending with a "
        "letter or digit (it becomes the modelship.io/model-version label)",
        63,
    ),
]
ModelName = Annotated[
    str,
    Matches(
        _LABEL_VALUE,
        "model name must be 1-63 letters, digits, '-', '_' or '.', starting and ending with "
        "a letter or digit (it is the path segment of /v2/models/<name>)",
        63,
    ),
]
Uri = Annotated[
    str,
    Matches(
        r"^(file:///|https?://|s3://[a-z0-9][-a-z0-9.]*/|pvc://[a-z0-9]([-a-z0-9.]*[a-z0-9])?/"
        r"|models:/)[^\s]+$",
        "uri must be file:///path, http(s)://host/path, s3://bucket/key, pvc://claim/path or "
        "models:/name/version (models:/name@alias), without spaces",
        2048,
    ),
]
Sha256 = Annotated[
    str,
    Matches(
        r"^[0-9a-fA-F]{64}$",
        "sha256 must be 64 hexadecimal characters (the output of sha256sum)",
        64,
    ),
]
MetricName = Annotated[
    str,
    Matches(
        _DNS_LABEL,
        "metric name must be a DNS label: lowercase letters, digits and '-', at most 63",
        63,
    ),
]
HeaderName = Annotated[
    str, Matches(_HEADER_NAME, "header must be an HTTP header name, e.g. x-user-id", 128)
]
CookieName = Annotated[
    str, Matches(_COOKIE_NAME, "cookie must be a cookie name (an HTTP token), e.g. uid", 128)
]
HeaderValue = Annotated[
    str, Matches(_PRINTABLE, "value must be printable ASCII (it is compared to a header)", 256)
]
ClassLabel = Annotated[
    str,
    Matches(r"^[ -~]{1,128}$", "className must be 1-128 printable ASCII characters", 128),
]
PromQL = Annotated[str, Field(min_length=1, max_length=4096)]
Image = Annotated[
    str,
    Matches(r"^[^\s]+$", "image must be an image reference without spaces", 512),
]
ClaimName = Annotated[
    str,
    Matches(
        _DNS_SUBDOMAIN,
        "claimName must be a PersistentVolumeClaim name (lowercase DNS subdomain)",
        253,
    ),
]
MountPath = Annotated[
    str,
    Matches(r"^/[^:]*$", "mountPath must be an absolute path without ':'", 1024),
]
#: A download size limit: bytes, or with a binary suffix (Ki, Mi, Gi, Ti) as in 512Mi.
SIZE_UNITS: Final = {"": 1, "Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30, "Ti": 1 << 40}
ByteSize = Annotated[
    str,
    Matches(
        r"^[1-9][0-9]{0,12}(Ki|Mi|Gi|Ti)?$",
        "maxSize must be a whole number of bytes, optionally with Ki, Mi, Gi or Ti, e.g. 2Gi",
        16,
    ),
]


def size_bytes(size: str) -> int:
    """The bytes a ByteSize names ("2Gi" -> 2147483648)."""
    digits = size.rstrip("KMGTi")
    return int(digits) * SIZE_UNITS[size[len(digits) :]]


#: Where a pvc://claim/path model's claim is mounted in the serving pod (read-only).
PVC_MOUNT_ROOT: Final = "/mnt/pvc"


def pvc_location(uri: str) -> tuple[str, str] | None:
    """(claim, path inside it) of a pvc://claim/path URI; None for other schemes."""
    if not uri.startswith("pvc://"):
        return None
    claim, _, path = uri.removeprefix("pvc://").partition("/")
    return claim, path


PrometheusUrl = Annotated[
    str,
    Matches(
        r"^https?://[^\s]+$",
        "prometheus url must start with http:// or https://, e.g. http://prometheus:9090",
        2048,
    ),
]

# --- model sources --------------------------------------------------------------------------

ModelFormat = Literal["auto", "skops", "joblib", "pickle", "mlflow"]

RULE_MODEL_REGISTRY_URI: Final = Rule(
    rule=f"!self.uri.startsWith('{REGISTRY_SCHEME}') || "
    f"self.uri.matches(r'{REGISTRY_URI_PATTERN}')",
    message=REGISTRY_URI_MESSAGE,
    field_path=".uri",
)
RULE_MODEL_SHA256: Final = Rule(
    rule=f"has(self.sha256) || self.uri.startsWith('{REGISTRY_SCHEME}')",
    message="sha256 is required (sha256sum of the artifact) unless uri is a models:/ registry "
    "URI; a registered model saved with pickle or cloudpickle still needs it",
    field_path=".sha256",
)
RULE_MODEL_REGISTRY_FORMAT: Final = Rule(
    rule=f"!self.uri.startsWith('{REGISTRY_SCHEME}') || self.format in ['auto', 'mlflow']",
    message="a models:/ model's format is the one its MLmodel file names: leave format auto",
    field_path=".format",
)

RULE_MODEL_PVC_PATH: Final = Rule(
    rule=r"!self.uri.startsWith('pvc://') || !self.uri.matches('/[.][.]?(/|$)')",
    message="a pvc:// path must stay inside its claim: no '.' or '..' segments",
    field_path=".uri",
)


class ModelSource(ApiModel):
    """The desired model. The first one is deployed directly; a different one later is
    rolled out from the model serving now (status.stable) by spec.strategy."""

    model_config = ApiModel.model_config | {
        "json_schema_extra": cel(
            RULE_MODEL_REGISTRY_URI,
            RULE_MODEL_SHA256,
            RULE_MODEL_REGISTRY_FORMAT,
            RULE_MODEL_PVC_PATH,
        )
    }

    name: ModelName | None = Field(
        default=None,
        description="Name the model is served under (/v2/models/<name>/infer). Omitted: the "
        "ModelDeployment's name.",
    )
    version: Version = Field(
        description="Version of the model, e.g. 1.4.0. Labels every pod and metric, so "
        "stable and canary compare directly; must be a valid label value. Changing it (or "
        "uri, sha256, format) starts a rollout."
    )
    uri: Uri = Field(
        description="Where the serving pods load the artifact from: file:///path (a file "
        "visible in the pod, e.g. on spec.storage), http(s)://host/path, s3://bucket/key "
        "(credentials and endpoint in spec.s3), pvc://claim/path (a file on a "
        "PersistentVolumeClaim in the namespace, mounted read-only), or a version in the "
        "MLflow model registry: models:/<name>/<version> or models:/<name>@<alias> (see "
        "spec.mlflow). A registry URI is resolved once, when its rollout starts, to the "
        "version's model file; status records it (rollout.candidate, rolledOut.current: uri, "
        "format, sha256, resolvedFrom, registryVersion), so moving the alias later changes "
        "nothing that runs; a new version label resolves it again."
    )
    sha256: Sha256 | None = Field(
        default=None,
        description="sha256 of the artifact, hex (of the model file inside an MLflow model: "
        "the flavor's pickled_model, e.g. model.skops). The server refuses to load a file "
        "with any other hash, so an artifact is never unpickled unverified. Required, "
        "except for models:/ registry URIs: for a version saved with skops the operator "
        "records the hash of the file it read when resolving it (status sha256Source: "
        "operator) and every pod verifies it; one saved with pickle or cloudpickle is "
        "refused until it is pinned here.",
    )
    format: ModelFormat = Field(
        default="auto",
        description="Artifact format. auto: a skops file is detected by content, anything "
        "else is loaded as joblib/pickle (allowed only because sha256 is pinned); a "
        "models:/ URI is an MLflow model. mlflow: the URI is an MLflow model directory "
        "(MLmodel and the sklearn flavor's file, serialization_format skops, pickle or "
        "cloudpickle).",
    )
    max_size: ByteSize | None = Field(
        default=None,
        description="Largest artifact a serving pod downloads (http(s) and s3), e.g. 4Gi; a "
        "larger one is refused before it fills the pod's disk, and the status says so. "
        "Omitted: 1Gi.",
    )

    @model_validator(mode="after")
    def _rules(self) -> Self:
        registry = self.uri.startswith(REGISTRY_SCHEME)
        if registry and not re.fullmatch(REGISTRY_URI_PATTERN, self.uri):
            raise ValueError(f"{REGISTRY_URI_MESSAGE}, got {self.uri!r}")
        if self.sha256 is None and not registry:
            raise ValueError(RULE_MODEL_SHA256.message)
        if registry and self.format not in ("auto", "mlflow"):
            raise ValueError(RULE_MODEL_REGISTRY_FORMAT.message)
        if self.uri.startswith("pvc://") and re.search(r"/[.][.]?(/|$)", self.uri):
            raise ValueError(RULE_MODEL_PVC_PATH.message)
        return self


# --- resources ------------------------------------------------------------------------------


class ResourceList(ApiModel):
    """CPU and memory quantities, as in a container's resources."""

    cpu: Quantity | None = Field(default=None, description="CPU, e.g. 500m or 1.")
    memory: Quantity | None = Field(default=None, description="Memory, e.g. 256Mi or 1Gi.")


class Resources(ApiModel):
    """Requests and limits for each serving container."""

    requests: ResourceList = Field(
        default_factory=lambda: ResourceList(cpu="100m", memory="256Mi"),
        description="Resources the scheduler reserves for each pod.",
    )
    limits: ResourceList = Field(
        default_factory=lambda: ResourceList(memory="1Gi"),
        description="Most each pod may use; no CPU limit by default (avoids throttling).",
    )


class RouterResources(Resources):
    """Requests and limits for each router container."""

    requests: ResourceList = Field(
        default_factory=lambda: ResourceList(cpu="50m", memory="64Mi"),
        description="Resources the scheduler reserves for each router pod.",
    )
    limits: ResourceList = Field(
        default_factory=lambda: ResourceList(memory="256Mi"),
        description="Most each router pod may use.",
    )


# --- analysis -------------------------------------------------------------------------------

RULE_MARGIN_ONE_OF: Final = Rule(
    rule="has(self.absolute) != has(self.relative)",
    message="margin takes exactly one of absolute or relative",
)


class Margin(ApiModel):
    """How much worse than stable the canary may be, measured over the same window."""

    model_config = ApiModel.model_config | {"json_schema_extra": cel(RULE_MARGIN_ONE_OF)}

    absolute: float | None = Field(
        default=None,
        ge=0,
        description="In the metric's own unit: success-rate 0.5 lets the canary be 0.5 "
        "percentage points below stable; latency-p99 0.05 lets it be 50 ms slower.",
    )
    relative: float | None = Field(
        default=None,
        ge=0,
        le=10,
        description="As a fraction of stable's value: 0.2 lets the canary be 20% worse.",
    )

    @model_validator(mode="after")
    def _one_of(self) -> Self:
        if (self.absolute is None) == (self.relative is None):
            raise ValueError(RULE_MARGIN_ONE_OF.message)
        return self


RULE_METRIC_BUILTIN_OR_QUERY: Final = Rule(
    rule=f"has(self.query) || self.name in {_BUILTIN_LIST}",
    message="a metric without a query must be a built-in one: " + ", ".join(BUILTIN_METRICS),
    field_path=".name",
)
RULE_METRIC_QUERY_NAME: Final = Rule(
    rule=f"!has(self.query) || !(self.name in {_BUILTIN_LIST})",
    message="a custom query needs its own name (these are built in: "
    + ", ".join(BUILTIN_METRICS)
    + ")",
    field_path=".name",
)
RULE_METRIC_MIN_BELOW_MAX: Final = Rule(
    rule="!has(self.min) || !has(self.max) || self.min < self.max",
    message="min must be below max",
    field_path=".min",
)
RULE_METRIC_HAS_CHECK: Final = Rule(
    rule="has(self.min) || has(self.max) || has(self.compareTo)",
    message="a metric check needs min, max or compareTo",
)
RULE_METRIC_COMPARE_NEEDS_MARGIN: Final = Rule(
    rule="!has(self.compareTo) || has(self.margin)",
    message="compareTo: stable needs a margin (absolute or relative)",
    field_path=".margin",
    reason="FieldValueRequired",
)
RULE_METRIC_MARGIN_NEEDS_COMPARE: Final = Rule(
    rule="!has(self.margin) || has(self.compareTo)",
    message="margin is only used with compareTo: stable",
    field_path=".margin",
    reason="FieldValueForbidden",
)
RULE_METRIC_CUSTOM_COMPARE_BETTER: Final = Rule(
    rule="!has(self.compareTo) || !has(self.query) || has(self.better)",
    message="a custom metric compared with stable needs better: Higher or Lower",
    field_path=".better",
    reason="FieldValueRequired",
)
_CLASS_LIST = "[" + ", ".join(f"'{n}'" for n in sorted(CLASS_METRICS)) + "]"
RULE_METRIC_CLASS_NAME: Final = Rule(
    rule=f"(self.name in {_CLASS_LIST}) == has(self.className)",
    message="className is needed by precision, recall, f1 and roc-auc (the class they are "
    'about, e.g. "1" or "churn") and by no other metric',
    field_path=".className",
)
METRIC_RULES: Final = (
    RULE_METRIC_BUILTIN_OR_QUERY,
    RULE_METRIC_QUERY_NAME,
    RULE_METRIC_MIN_BELOW_MAX,
    RULE_METRIC_HAS_CHECK,
    RULE_METRIC_COMPARE_NEEDS_MARGIN,
    RULE_METRIC_MARGIN_NEEDS_COMPARE,
    RULE_METRIC_CUSTOM_COMPARE_BETTER,
    RULE_METRIC_CLASS_NAME,
)


class MetricCheck(ApiModel):
    """One check run on the canary at every analysis interval.

    A built-in metric (success-rate in percent, latency-p99 in seconds, accuracy in percent
    from feedback) needs no query. A custom one gives PromQL that returns one number; it
    may use {{ namespace }}, {{ name }}, {{ variant }} and {{ interval }}. The check passes
    when the canary's value is within min/max and, with compareTo: stable, not worse than
    the stable variant's value over the same window by more than the margin.
    """

    model_config = ApiModel.model_config | {"json_schema_extra": cel(*METRIC_RULES)}

    name: MetricName = Field(
        description="A built-in metric: success-rate, latency-p99, accuracy, log-loss "
        "(classifiers with predict_proba), precision, recall, f1, roc-auc (classifiers, with "
        "className), mae or rmse (regressors), drift (inputs against the model's reference "
        "profile); any other name (unique in the list) for a custom query."
    )
    class_name: ClassLabel | None = Field(
        default=None,
        description="For precision, recall, f1 and roc-auc: the class they are about, as the "
        "model names it (a label of its classes_, e.g. 1 or churn, written as a string).",
    )
    query: PromQL | None = Field(
        default=None,
        description="PromQL returning one value for the variant being checked, e.g. "
        'sum(rate(my_errors_total{namespace="{{ namespace }}",variant="{{ variant }}"}'
        "[{{ interval }}])). Omitted: a built-in metric.",
    )
    min: float | None = Field(
        default=None, description="Lowest passing value (inclusive). NaN never passes."
    )
    max: float | None = Field(
        default=None, description="Highest passing value (inclusive). NaN never passes."
    )
    compare_to: Literal["stable"] | None = Field(
        default=None,
        description="stable: also compare with the live stable variant over the same window.",
    )
    margin: Margin | None = Field(
        default=None, description="With compareTo: how much worse than stable is tolerated."
    )
    better: Better | None = Field(
        default=None,
        description="Which direction is better, for comparing with stable: Higher or Lower. "
        "Built-in metrics know theirs; a custom metric with compareTo needs it.",
    )

    @model_validator(mode="after")
    def _rules(self) -> Self:
        builtin = self.name in BUILTIN_METRICS
        if self.query is None and not builtin:
            raise ValueError(RULE_METRIC_BUILTIN_OR_QUERY.message)
        if self.query is not None and builtin:
            raise ValueError(RULE_METRIC_QUERY_NAME.message)
        if self.min is not None and self.max is not None and not self.min < self.max:
            raise ValueError(RULE_METRIC_MIN_BELOW_MAX.message)
        if self.min is None and self.max is None and self.compare_to is None:
            raise ValueError(RULE_METRIC_HAS_CHECK.message)
        if self.compare_to is not None and self.margin is None:
            raise ValueError(RULE_METRIC_COMPARE_NEEDS_MARGIN.message)
        if self.margin is not None and self.compare_to is None:
            raise ValueError(RULE_METRIC_MARGIN_NEEDS_COMPARE.message)
        if self.compare_to is not None and self.query is not None and self.better is None:
            raise ValueError(RULE_METRIC_CUSTOM_COMPARE_BETTER.message)
        if (self.name in CLASS_METRICS) != (self.class_name is not None):
            raise ValueError(RULE_METRIC_CLASS_NAME.message)
        return self

    @property
    def is_builtin(self) -> bool:
        return self.query is None

    @property
    def direction(self) -> Better:
        """Which way is better: explicit, else the built-in's, else from min/max."""
        if self.better is not None:
            return self.better
        if self.name in BUILTIN_METRICS:
            return BUILTIN_METRICS[self.name]
        return "Lower" if self.max is not None and self.min is None else "Higher"


RULE_KEY_ONE_OF: Final = Rule(
    rule="has(self.header) != has(self.cookie)",
    message="set exactly one of header or cookie",
)


class RequestKey(ApiModel):
    """Where a request carries a value: exactly one of a header or a cookie."""

    model_config = ApiModel.model_config | {"json_schema_extra": cel(RULE_KEY_ONE_OF)}

    header: HeaderName | None = Field(
        default=None, description="HTTP header name (case-insensitive), e.g. x-user-id."
    )
    cookie: CookieName | None = Field(default=None, description="Cookie name (case-sensitive).")

    @model_validator(mode="after")
    def _one_of(self) -> Self:
        if (self.header is None) == (self.cookie is None):
            raise ValueError(RULE_KEY_ONE_OF.message)
        return self


class StickyKey(RequestKey):
    """The user key that pins each user to one variant for the whole test."""


class MatchRule(RequestKey):
    """Send requests whose header or cookie equals value to one variant, outside the split.

    Rules are checked in order before the sticky split; the first match wins. Requests
    routed by a rule are not counted in the test's statistics.
    """

    value: HeaderValue = Field(description="Exact value to match (case-sensitive).")
    variant: Variant = Field(default="canary", description="Variant these requests go to.")


RULE_BUSINESS_PAIR: Final = Rule(
    rule="has(self.successes) == has(self.trials)",
    message="successes and trials go together: give both queries or neither",
)
RULE_BUSINESS_BUILTIN: Final = Rule(
    rule="has(self.successes) || !has(self.name) || self.name == 'accuracy'",
    message="without successes and trials queries the business metric is the built-in accuracy",
    field_path=".name",
)


class BusinessMetric(ApiModel):
    """The rate the A/B test compares: successes / trials per variant.

    Built in: accuracy, from the feedback the application posts for each prediction,
    counting each user (the sticky key's; a request without one is its own user) once.
    Custom: two PromQL counters (templated like metric queries) counting successes and
    trials of the variant since the test began.
    """

    model_config = ApiModel.model_config | {
        "json_schema_extra": cel(RULE_BUSINESS_PAIR, RULE_BUSINESS_BUILTIN)
    }

    name: MetricName = Field(
        default="accuracy", description="accuracy (built in), or a name for the custom pair."
    )
    successes: PromQL | None = Field(
        default=None, description="PromQL: number of successes of {{ variant }}."
    )
    trials: PromQL | None = Field(
        default=None, description="PromQL: number of trials of {{ variant }}."
    )

    @model_validator(mode="after")
    def _rules(self) -> Self:
        if (self.successes is None) != (self.trials is None):
            raise ValueError(RULE_BUSINESS_PAIR.message)
        if self.successes is None and self.name != "accuracy":
            raise ValueError(RULE_BUSINESS_BUILTIN.message)
        return self


class ABTest(ApiModel):
    """A/B test: a fixed, sticky split and a statistical verdict on a business metric.

    The verdict is a sequential test that stays valid when looked at every interval; the
    better variant is promoted (promotion: Automatic) or reported (Manual). No significant
    difference by progressDeadline keeps stable and says so.
    """

    sticky_key: StickyKey = Field(
        default_factory=lambda: StickyKey(header="x-user-id"),
        description="Where the user key is read from; the same key always gets the same "
        "variant. Requests without the key are split at random.",
    )
    split: int = Field(
        default=50, ge=1, le=99, description="Percent of users assigned to the canary."
    )
    match: list[MatchRule] = Field(
        default_factory=list,
        max_length=16,
        description="Requests sent to a fixed variant outside the test (e.g. testers).",
    )
    metric: BusinessMetric = Field(
        default_factory=BusinessMetric, description="The rate the test compares."
    )
    significance: float = Field(
        default=0.05,
        gt=0,
        le=0.2,
        description="Significance level (false positive rate) of the verdict, e.g. 0.05.",
    )
    min_samples: int = Field(
        default=1000,
        ge=1,
        le=100_000_000,
        description="Trials each variant needs before any verdict is drawn.",
    )


class Shadow(ApiModel):
    """Shadow mode: the candidate sees mirrored traffic only; clients never see its answers.

    Its error rate and latency are checked with strategy.metrics (use compareTo: stable);
    it must also agree with stable on at least agreementThreshold of the mirrored requests.
    Passing moves it to the first canary step; failing rejects it.
    """

    mirror_percent: int = Field(
        default=100, ge=1, le=100, description="Percent of requests copied to the candidate."
    )
    agreement_threshold: float = Field(
        default=0.95,
        ge=0,
        le=1,
        description="Lowest fraction of mirrored requests on which the candidate's "
        "prediction equals stable's.",
    )


# --- strategy -------------------------------------------------------------------------------

Interval = Annotated[str, DurationBounds("1s", "24h", "interval")]
Deadline = Annotated[str, DurationBounds("1s", "720h", "progressDeadline")]
ScaleDownDelay = Annotated[str, DurationBounds("0s", "24h", "scaleDownDelay")]
FeedbackWindow = Annotated[str, DurationBounds("1s", "168h", "window")]

RULE_STEPS_INCREASING: Final = Rule(
    rule="self.isSorted() && self.all(x, self.exists_one(y, y == x))",
    message="steps must be strictly increasing canary weights in percent, e.g. [5, 25, 50]",
)
RULE_AB_ONLY_FOR_AB: Final = Rule(
    rule="!has(self.abTest) || (has(self.type) && self.type == 'ABTest')",
    message="abTest is only used with type: ABTest",
    field_path=".abTest",
    reason="FieldValueForbidden",
)
RULE_SHADOW_ONLY_FOR_SHADOW: Final = Rule(
    rule="!has(self.shadow) || (has(self.type) && self.type == 'Shadow')",
    message="shadow is only used with type: Shadow",
    field_path=".shadow",
    reason="FieldValueForbidden",
)
RULE_DEADLINE_AFTER_INTERVAL: Final = Rule(
    rule="!has(self.interval) || !has(self.progressDeadline) || "
    f"!self.interval.matches('{DURATION_PATTERN}') || "
    f"!self.progressDeadline.matches('{DURATION_PATTERN}') || "
    "duration(self.progressDeadline) >= duration(self.interval)",
    message="progressDeadline must be at least one interval",
    field_path=".progressDeadline",
)


def _default_metrics() -> list[MetricCheck]:
    return [MetricCheck(name="success-rate", min=99), MetricCheck(name="latency-p99", max=0.5)]


class Strategy(ApiModel):
    """How a canary is rolled out and analysed."""

    model_config = ApiModel.model_config | {
        "json_schema_extra": cel(
            RULE_AB_ONLY_FOR_AB, RULE_SHADOW_ONLY_FOR_SHADOW, RULE_DEADLINE_AFTER_INTERVAL
        )
    }

    type: Literal["Canary", "ABTest", "Shadow"] = Field(
        default="Canary",
        description="Canary: shift traffic step by step while metrics hold. ABTest: a fixed "
        "sticky split decided by a statistical test. Shadow: mirror traffic to the candidate, "
        "then continue as Canary if it agrees with stable.",
    )
    steps: list[Annotated[int, Field(ge=1, le=100, description="Canary weight, percent.")]] = Field(
        default_factory=lambda: [10, 25, 50],
        min_length=1,
        max_length=20,
        description="Canary weight in percent at each step, strictly increasing, each 1-100.",
        json_schema_extra=cel(RULE_STEPS_INCREASING),
    )
    interval: Interval = Field(
        default="30s",
        description="Time between analyses, and the window each analysis looks at.",
    )
    max_failed_checks: int = Field(
        default=3,
        ge=1,
        le=100,
        description="Failed analyses (in total for this rollout) at which it is rolled back. "
        "1 rolls back at the first failure.",
    )
    max_consecutive_errors: int = Field(
        default=4,
        ge=1,
        le=100,
        description="Analyses in a row that could not be run (Prometheus unreachable, bad "
        "query) after which the rollout pauses. Errors never promote and never roll back.",
    )
    min_samples: int = Field(
        default=100,
        ge=0,
        le=100_000_000,
        description="Requests the canary must receive in an interval for the analysis to "
        "count; fewer is Inconclusive (no promotion, no rollback).",
    )
    progress_deadline: Deadline = Field(
        default="10m",
        description="Longest a step (or the wait for a ready canary pod) may go without a "
        "decision, e.g. for lack of traffic. Then the rollout ends Failed, not RolledBack "
        "(could not tell, not found bad): traffic returns to stable and retry starts it "
        "again. An A/B test ends keeping stable (no winner). Time paused does not count.",
    )
    promotion: Literal["Automatic", "Manual"] = Field(
        default="Automatic",
        description="Automatic: promote after the last step passes. Manual: wait at the "
        "last step for `kubectl modelship promote`.",
    )
    scale_down_delay: ScaleDownDelay = Field(
        default="30s",
        description="After a rollback or promotion, how long the canary pods keep running "
        "(at 0% traffic) before they are scaled to zero.",
    )
    metrics: list[MetricCheck] = Field(
        default_factory=_default_metrics,
        max_length=16,
        description="Checks at every interval, keyed by name. Empty: steps advance on "
        "time and minSamples alone.",
        json_schema_extra={
            "x-kubernetes-list-type": "map",
            "x-kubernetes-list-map-keys": ["name"],
        },
    )
    sticky_key: StickyKey | None = Field(
        default=None,
        description="Canary (and Shadow, once it continues as Canary): the user key (header "
        "or cookie) that makes canary steps sticky. A user's place is a hash of the key "
        "salted per rollout, so a user in the canary at 10% stays in it at 20%, 50% and "
        "100%, and two rollouts assign users independently. Unset: each request is drawn "
        "at random. ABTest uses abTest.stickyKey.",
    )
    ab_test: ABTest | None = Field(
        default=None, description="A/B test settings (type: ABTest); defaults when omitted."
    )
    shadow: Shadow | None = Field(
        default=None, description="Shadow settings (type: Shadow); defaults when omitted."
    )

    @model_validator(mode="after")
    def _rules(self) -> Self:
        if any(b <= a for a, b in zip(self.steps, self.steps[1:], strict=False)):
            raise ValueError(RULE_STEPS_INCREASING.message)
        names = [m.name for m in self.metrics]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"metric names must be unique: {', '.join(duplicates)} repeats")
        if self.ab_test is not None and self.type != "ABTest":
            raise ValueError(RULE_AB_ONLY_FOR_AB.message)
        if self.shadow is not None and self.type != "Shadow":
            raise ValueError(RULE_SHADOW_ONLY_FOR_SHADOW.message)
        if parse_duration(self.progress_deadline) < parse_duration(self.interval):
            raise ValueError(RULE_DEADLINE_AFTER_INTERVAL.message)
        return self

    @property
    def interval_delta(self) -> timedelta:
        return parse_duration(self.interval)

    @property
    def progress_deadline_delta(self) -> timedelta:
        return parse_duration(self.progress_deadline)

    @property
    def scale_down_delay_delta(self) -> timedelta:
        return parse_duration(self.scale_down_delay)

    @property
    def ab_test_settings(self) -> ABTest:
        """The A/B settings in force (defaults when abTest is omitted)."""
        return self.ab_test if self.ab_test is not None else ABTest()

    @property
    def shadow_settings(self) -> Shadow:
        """The shadow settings in force (defaults when shadow is omitted)."""
        return self.shadow if self.shadow is not None else Shadow()


# --- router, prometheus, images, storage ----------------------------------------------------


class Feedback(ApiModel):
    """Ground truth sent after a prediction (POST /v1/models/<name>:feedback)."""

    window: FeedbackWindow = Field(
        default="10m",
        description="How long after a prediction its label is still joined to it (late "
        "labels within the window count). Later feedback is counted as not joined, reason "
        "expired (modelship_feedback_unjoined_total).",
    )

    @property
    def window_delta(self) -> timedelta:
        return parse_duration(self.window)


class Router(ApiModel):
    """The traffic router in front of the variants."""

    type: Literal["builtin", "none"] = Field(
        default="builtin",
        description="builtin: deploy modelship's router (<name>-router Service) and split "
        "traffic there. none: no router; clients call <name>-stable directly and canary "
        "weights are not enforced.",
    )
    replicas: int = Field(
        default=2,
        ge=1,
        le=10,
        description="Router pods. Two by default, spread over nodes where there are several, "
        "with a PodDisruptionBudget that keeps one up: a drain, an eviction or a restart of "
        "one router never leaves the model without a way in. 1 saves a pod where that is "
        "acceptable.",
    )
    resources: RouterResources = Field(
        default_factory=RouterResources, description="Router container resources."
    )


PrometheusHeaderValue = Annotated[
    str,
    Field(
        max_length=1024, pattern=r"^[ -~]*$", description="The header's value (printable ASCII)."
    ),
]


class Prometheus(ApiModel):
    """Where analysis queries go."""

    url: PrometheusUrl | None = Field(
        default=None,
        description="Prometheus base URL, e.g. http://prometheus.monitoring:9090. Omitted: "
        "the operator's MODELSHIP_OPERATOR_PROMETHEUS_URL.",
    )
    headers: dict[str, PrometheusHeaderValue] = Field(
        default_factory=dict,
        max_length=20,
        description="Extra HTTP headers of this ModelDeployment's queries, e.g. "
        "X-Scope-OrgID for a Mimir, Cortex or Thanos tenant; over the operator's "
        "MODELSHIP_OPERATOR_PROMETHEUS_HEADERS. Credentials are the operator's own and go "
        "only to its Prometheus URL, never to a url set here.",
    )

    @field_validator("headers")
    @classmethod
    def _check_headers(cls, value: dict[str, str]) -> dict[str, str]:
        return check_headers(value)


class Images(ApiModel):
    """Container images, when the operator's defaults do not fit."""

    serving: Image | None = Field(
        default=None, description="Model server image. Omitted: the operator's default."
    )
    router: Image | None = Field(
        default=None, description="Router image. Omitted: the operator's default."
    )
    pull_policy: Literal["Always", "IfNotPresent", "Never"] | None = Field(
        default=None, description="imagePullPolicy of both. Omitted: Kubernetes' default."
    )


class Storage(ApiModel):
    """A PersistentVolumeClaim holding model files, mounted read-only in serving pods."""

    claim_name: ClaimName = Field(description="Name of the PersistentVolumeClaim.")
    mount_path: MountPath = Field(
        default="/models",
        description="Where it is mounted; file:/// URIs refer to paths below it.",
    )


S3_SECRET_KEYS: Final = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
S3_OPTIONAL_SECRET_KEYS: Final = ("AWS_SESSION_TOKEN", "AWS_REGION", "AWS_ENDPOINT_URL")

S3Endpoint = Annotated[
    str,
    Matches(
        r"^https?://[^\s/]+(/[^\s]*)?$",
        "endpoint must be http(s)://host[:port], e.g. http://seaweedfs.storage:8333",
        2048,
    ),
]
S3Region = Annotated[
    str, Matches(r"^[a-z0-9-]+$", "region must be lowercase letters, digits and '-'", 64)
]
SecretName = Annotated[
    str,
    Matches(_DNS_SUBDOMAIN, "secretName must be a Secret name (lowercase DNS subdomain)", 253),
]
ServiceAccountName = Annotated[
    str,
    Matches(
        _DNS_SUBDOMAIN,
        "serviceAccountName must be a ServiceAccount name (lowercase DNS subdomain)",
        253,
    ),
]


class S3(ApiModel):
    """How serving pods read s3://bucket/key URIs (AWS S3 or an S3-compatible store).

    The operator never reads the Secret: the pods get its keys as environment variables."""

    secret_name: SecretName | None = Field(
        default=None,
        description="Secret in the ModelDeployment's namespace holding the access key: "
        "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (required), AWS_SESSION_TOKEN, "
        "AWS_REGION and AWS_ENDPOINT_URL (optional). Omitted: no access key (web identity "
        "through serviceAccountName, or anonymous requests).",
    )
    endpoint: S3Endpoint | None = Field(
        default=None,
        description="Endpoint of an S3-compatible store, e.g. http://seaweedfs.storage:8333. "
        "Omitted: AWS_ENDPOINT_URL from the Secret, else AWS S3.",
    )
    region: S3Region | None = Field(
        default=None,
        description="Region of the bucket. Omitted: AWS_REGION from the Secret, else us-east-1.",
    )
    addressing_style: Literal["auto", "path", "virtual"] = Field(
        default="auto",
        description="auto: path-style requests (endpoint/bucket/key) to a custom endpoint, "
        "virtual-hosted (bucket.endpoint/key) to AWS S3.",
    )
    service_account_name: ServiceAccountName | None = Field(
        default=None,
        description="ServiceAccount the serving pods run as, for web identity credentials "
        "(e.g. EKS IAM roles for service accounts injecting AWS_ROLE_ARN and "
        "AWS_WEB_IDENTITY_TOKEN_FILE). Omitted: the namespace's default.",
    )


TrackingUri = Annotated[
    str,
    Matches(
        r"^https?://[^\s]+$",
        "trackingUri must be http(s)://host[:port], e.g. http://mlflow.mlops.svc:5000",
        2048,
    ),
]


class Mlflow(ApiModel):
    """The MLflow tracking server that resolves models:/ URIs (its model registry)."""

    tracking_uri: TrackingUri | None = Field(
        default=None,
        description="Base URL of the MLflow tracking server, e.g. http://mlflow.mlops.svc:5000. "
        "Omitted: the operator's MODELSHIP_OPERATOR_MLFLOW_TRACKING_URI. The operator's "
        "registry credentials (MLFLOW_TRACKING_TOKEN, or MLFLOW_TRACKING_USERNAME and "
        "MLFLOW_TRACKING_PASSWORD, in its environment) are sent only to that URL, never to "
        "one set here.",
    )


# --- access ---------------------------------------------------------------------------------

SecretKey = Annotated[
    str,
    Matches(
        r"^[-._a-zA-Z0-9]+$",
        "key must be a Secret data key (letters, digits, '-', '_' and '.')",
        253,
    ),
]

TokenSecretName = Annotated[
    str,
    Matches(
        _DNS_SUBDOMAIN, "tokenSecret.name must be a Secret name (lowercase DNS subdomain)", 253
    ),
]

#: Built-in checks computed from ground truth (feedback), and so useless without it.
FEEDBACK_METRICS: Final = frozenset(
    {"accuracy", "mae", "rmse", "precision", "recall", "f1", "log-loss", "roc-auc"}
)
#: Built-in metrics scored from the class probabilities the serving pods remember.
PROBABILITY_METRICS: Final = frozenset({"log-loss", "roc-auc"})
_FEEDBACK_LIST = "[" + ", ".join(f"'{n}'" for n in sorted(FEEDBACK_METRICS)) + "]"

RULE_FEEDBACK_NEEDS_ACCESS: Final = Rule(
    rule="has(self.access) || !has(self.strategy) || ("
    "(!has(self.strategy.metrics) || !self.strategy.metrics.exists(m, !has(m.query) && "
    f"m.name in {_FEEDBACK_LIST})) && "
    "(!has(self.strategy.type) || self.strategy.type != 'ABTest' || "
    "(has(self.strategy.abTest) && has(self.strategy.abTest.metric) && "
    "has(self.strategy.abTest.metric.successes))))",
    message="built-in checks from ground truth (accuracy, precision, recall, f1, log-loss, "
    "roc-auc, mae, rmse, and the A/B test's built-in accuracy) need feedback, which clients "
    "post with a token: set access.tokenSecret to a Secret holding it (kubectl create "
    "secret generic <name>-access --from-literal=token=$(openssl rand -hex 32))",
    field_path=".access",
    reason="FieldValueRequired",
)


class SecretKeyRef(ApiModel):
    """A key of a Secret in the ModelDeployment's namespace."""

    name: TokenSecretName = Field(description="Name of the Secret.")
    key: SecretKey = Field(default="token", description="Key of the Secret holding the value.")


class Access(ApiModel):
    """Who may use the privileged paths: posting feedback and forcing a variant.

    The operator never reads the Secret: the kubelet mounts its key as a file in the router
    and serving pods, and replaces the file when the Secret changes (about a minute), so a
    token is rotated by editing the Secret, without a restart."""

    token_secret: SecretKeyRef = Field(
        description="Secret key holding the token clients send in the x-modelship-token "
        "header to post feedback (POST /v1/models/<name>:feedback) and to pick a variant "
        "(x-modelship-variant, which feedback sends to reach the variant that predicted). "
        "Without spec.access both are off: feedback is refused (403) and a request that "
        "names a variant is refused by the router (403)."
    )


# --- autoscaling ----------------------------------------------------------------------------

ScaleDownStabilization = Annotated[str, DurationBounds("0s", "1h", "scaleDownStabilization")]
ScaleToZeroAfter = Annotated[str, DurationBounds("10s", "24h", "scaleToZeroAfter")]
ActivationTimeout = Annotated[str, DurationBounds("1s", "5m", "activationTimeout")]

RULE_AUTOSCALING_MIN_BELOW_MAX: Final = Rule(
    rule="!has(self.minReplicas) || self.minReplicas <= self.maxReplicas",
    message="autoscaling.minReplicas must not exceed maxReplicas",
    field_path=".minReplicas",
)
RULE_SCALE_TO_ZERO_NEEDS_ROUTER: Final = Rule(
    rule="!has(self.autoscaling) || !has(self.autoscaling.minReplicas) || "
    "self.autoscaling.minReplicas > 0 || !has(self.router) || !has(self.router.type) || "
    "self.router.type == 'builtin'",
    message="autoscaling.minReplicas 0 (scale to zero) needs router.type builtin: the "
    "router starts a pod when a request comes for a variant that has none",
    field_path=".autoscaling.minReplicas",
)
RULE_AUTOSCALING_NEEDS_CPU_REQUEST: Final = Rule(
    rule="!has(self.autoscaling) || !has(self.resources) || !has(self.resources.requests) "
    "|| has(self.resources.requests.cpu)",
    message="autoscaling scales on CPU utilisation, a share of resources.requests.cpu: "
    "set resources.requests.cpu (e.g. 500m)",
    field_path=".resources.requests.cpu",
    reason="FieldValueRequired",
)


class Autoscaling(ApiModel):
    """A HorizontalPodAutoscaler per variant, on CPU utilisation (needs metrics-server);
    with ``minReplicas: 0``, stable is also scaled to zero when idle."""

    model_config = ApiModel.model_config | {
        "json_schema_extra": cel(RULE_AUTOSCALING_MIN_BELOW_MAX)
    }

    min_replicas: int = Field(
        default=1,
        ge=0,
        le=100,
        description="Fewest stable pods the autoscaler keeps. 0: scale to zero (opt-in): "
        "after scaleToZeroAfter without a request stable runs no pod, and the router "
        "starts one on the next request, holding it until the pod is ready (up to "
        "activationTimeout). Needs the builtin router and Prometheus scraping it.",
    )
    max_replicas: int = Field(ge=1, le=100, description="Most stable pods the autoscaler adds.")
    target_cpu_utilization: int = Field(
        default=80,
        alias="targetCPUUtilization",
        ge=10,
        le=100,
        description="Average CPU use the autoscaler holds the pods at, in percent of "
        "resources.requests.cpu.",
    )
    scale_down_stabilization: ScaleDownStabilization = Field(
        default="5m",
        description="How long the load must stay low before pods are removed (the "
        "HorizontalPodAutoscaler's scaleDown stabilizationWindowSeconds).",
    )
    scale_to_zero_after: ScaleToZeroAfter = Field(
        default="5m",
        description="With minReplicas 0: how long stable must go without a request (as "
        "the router's metrics in Prometheus show) before its last pod is removed. No "
        "rollout is running then.",
    )
    activation_timeout: ActivationTimeout = Field(
        default="30s",
        description="With minReplicas 0: how long the router holds a request while stable "
        "starts from zero; a request still waiting then is answered 503 with the reason.",
    )

    @model_validator(mode="after")
    def _bounds(self) -> Self:
        if self.min_replicas > self.max_replicas:
            raise ValueError(RULE_AUTOSCALING_MIN_BELOW_MAX.message)
        return self

    @property
    def scale_down_stabilization_seconds(self) -> int:
        return int(parse_duration(self.scale_down_stabilization).total_seconds())

    @property
    def scales_to_zero(self) -> bool:
        return self.min_replicas == 0

    @property
    def scale_to_zero_after_seconds(self) -> float:
        return parse_duration(self.scale_to_zero_after).total_seconds()

    @property
    def activation_timeout_seconds(self) -> float:
        return parse_duration(self.activation_timeout).total_seconds()


# --- the spec -------------------------------------------------------------------------------


class ModelDeploymentSpec(ApiModel):
    """What to serve and how to roll out a new version."""

    model_config = ApiModel.model_config | {
        "json_schema_extra": cel(
            RULE_AUTOSCALING_NEEDS_CPU_REQUEST,
            RULE_FEEDBACK_NEEDS_ACCESS,
            RULE_SCALE_TO_ZERO_NEEDS_ROUTER,
        )
    }

    model: ModelSource = Field(
        description="The model to serve. The operator rolls a new one out from what serves "
        "now and records the outcome in status; it never edits the spec."
    )
    replicas: int = Field(
        default=1,
        ge=1,
        le=100,
        description="Stable serving pods (without autoscaling). A canary runs its traffic "
        "share of them, at least one.",
    )
    autoscaling: Autoscaling | None = Field(
        default=None,
        description="Scale each variant with its CPU use instead of spec.replicas: the "
        "operator renders a HorizontalPodAutoscaler per variant and leaves the Deployments' "
        "replicas to it. A canary's bounds are its traffic share of these, at least one.",
    )
    resources: Resources = Field(
        default_factory=Resources, description="Serving container resources."
    )
    strategy: Strategy = Field(
        default_factory=Strategy, description="How the canary is rolled out and analysed."
    )
    paused: bool = Field(
        default=False,
        description="true holds the rollout where it is (traffic unchanged, no analysis); "
        "false resumes it.",
    )
    router: Router = Field(default_factory=Router, description="Traffic router.")
    feedback: Feedback = Field(
        default_factory=Feedback, description="How ground truth is joined to predictions."
    )
    access: Access | None = Field(
        default=None,
        description="The token that opens feedback and variant forcing. Omitted: both are "
        "off (and checks from ground truth are refused).",
    )
    prometheus: Prometheus = Field(
        default_factory=Prometheus, description="Metrics source of the analysis."
    )
    images: Images = Field(default_factory=Images, description="Image overrides.")
    storage: Storage | None = Field(
        default=None, description="Volume with model files for file:/// URIs."
    )
    s3: S3 | None = Field(
        default=None,
        description="Credentials and endpoint for s3://bucket/key URIs (also for a "
        "models:/ version whose files are in S3).",
    )
    mlflow: Mlflow | None = Field(
        default=None, description="The MLflow model registry of models:/ URIs."
    )

    @model_validator(mode="after")
    def _autoscaling(self) -> Self:
        if self.autoscaling is not None and self.resources.requests.cpu is None:
            raise ValueError(RULE_AUTOSCALING_NEEDS_CPU_REQUEST.message)
        if self.scales_to_zero() and self.router.type != "builtin":
            raise ValueError(RULE_SCALE_TO_ZERO_NEEDS_ROUTER.message)
        if self.access is None and self.needs_feedback():
            raise ValueError(RULE_FEEDBACK_NEEDS_ACCESS.message)
        return self

    def scales_to_zero(self) -> bool:
        """Whether stable may be scaled to zero (autoscaling.minReplicas 0)."""
        return self.autoscaling is not None and self.autoscaling.scales_to_zero

    def needs_feedback(self) -> bool:
        """Whether a built-in check (or the A/B test's built-in metric) reads ground truth."""
        strategy = self.strategy
        if any(m.query is None and m.name in FEEDBACK_METRICS for m in strategy.metrics):
            return True
        return strategy.type == "ABTest" and strategy.ab_test_settings.metric.successes is None

    def needs_log_loss(self) -> bool:
        """Whether a built-in log-loss check needs the pods to remember probabilities."""
        return any(m.query is None and m.name == "log-loss" for m in self.strategy.metrics)

    def score_classes(self) -> list[str]:
        """The class whose probability the built-in roc-auc check ranks (metric names are
        unique, so at most one)."""
        found = (m.class_name for m in self.strategy.metrics if m.name == "roc-auc")
        return [c for c in found if c is not None]

    def desired_model(self) -> ModelRef:
        """spec.model as the artifact it names (what status records and compares)."""
        m = self.model
        return ModelRef(
            version=m.version,
            uri=m.uri,
            sha256=(m.sha256 or "").lower(),
            format=m.format,
            max_size=m.max_size,
        )


# --- the resource ---------------------------------------------------------------------------

RULE_NAME: Final = Rule(
    rule=f"size(self.metadata.name) <= {MAX_NAME_LENGTH} && "
    f"self.metadata.name.matches(r'{_DNS_1035}')",
    message=f"metadata.name must be a DNS-1035 label of at most {MAX_NAME_LENGTH} characters "
    "(lowercase letters, digits and '-', starting with a letter): it prefixes the names of "
    "Services like <name>-canary",
    field_path=".metadata.name",
)


class ObjectMeta(ApiModel):
    """The parts of metadata the operator uses."""

    model_config = ApiModel.model_config | {"extra": "ignore"}

    name: str
    namespace: str = "default"
    uid: str = ""
    generation: int = 0
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)


class ModelDeployment(ApiModel):
    """A ModelDeployment as read from the API: metadata, spec and status."""

    model_config = ApiModel.model_config | {"extra": "ignore"}

    metadata: ObjectMeta
    spec: ModelDeploymentSpec
    status: ModelDeploymentStatus = Field(default_factory=ModelDeploymentStatus)
    _resolved: ModelRef | None = PrivateAttr(default=None)

    def desired_model(self) -> ModelRef:
        """The artifact spec.model names: for a models:/ URI the one it was resolved to
        (:meth:`resolved_to`), else spec.model as written."""
        return self._resolved or self.spec.desired_model()

    def resolved_to(self, ref: ModelRef) -> ModelDeployment:
        """This resource with its models:/ URI resolved to ``ref`` (a copy)."""
        copy = self.model_copy()
        copy._resolved = ref
        return copy

    @model_validator(mode="after")
    def _name(self) -> Self:
        name = self.metadata.name
        if len(name) > MAX_NAME_LENGTH or not re.fullmatch(_DNS_1035, name):
            raise ValueError(RULE_NAME.message)
        return self

    @classmethod
    def from_api(cls, body: dict[str, Any]) -> ModelDeployment:
        """Parse an object from the API (raises pydantic.ValidationError with reasons).

        A status the operator cannot read (e.g. written by an older version) is dropped
        rather than blocking the resource: status is always recomputable.
        """
        data = dict(body)
        try:
            ModelDeploymentStatus.model_validate(data.get("status") or {})
        except ValueError:
            data["status"] = {}
        return cls.model_validate(data)

    @property
    def name(self) -> str:
        return self.metadata.name

    @property
    def namespace(self) -> str:
        return self.metadata.namespace

    @property
    def model_name(self) -> str:
        """The name the model is served under."""
        return self.spec.model.name or self.metadata.name
