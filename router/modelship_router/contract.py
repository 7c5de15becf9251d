"""The router's metrics contract: the metric and label names its /metrics exports.

``metrics.py`` builds its families with these names; the operator's shadow analysis, the
chart's alerts and its dashboard are written against them. No dependencies (the operator
imports this module). The router labels every per-variant series with the ModelDeployment
it routes for (its ``MODELSHIP_ROUTER_DEPLOYMENT`` setting, rendered by the operator) and
the variant that answered; a Kubernetes scrape adds ``namespace``. No label here is one a
Kubernetes scrape attaches to its targets (``endpoint``, ``pod``, ``job``, ...).
docs/metrics.md is the readable version.
"""

from __future__ import annotations

from typing import Final

# --- labels ------------------------------------------------------------------------------

#: The ModelDeployment the router routes for.
DEPLOYMENT: Final = "deployment"
#: The variant that answered (``stable``, ``canary``, or :data:`NO_VARIANT`).
VARIANT: Final = "variant"
#: The HTTP status code the client got, as digits.
CODE: Final = "code"
#: The variant whose request went to the fallback instead.
FROM_VARIANT: Final = "from_variant"
#: A shadow copy's outcome: one of :data:`MIRROR_OUTCOMES`.
OUTCOME: Final = "outcome"
#: A shadow comparison's result: :data:`AGREE` or :data:`DISAGREE`.
RESULT: Final = "result"
#: Why a shadow copy could not be compared: one of :data:`INCOMPARABLE_REASONS`.
REASON: Final = "reason"

# --- label values ------------------------------------------------------------------------

#: ``variant`` when a request was answered before any variant was chosen (e.g. 503).
NO_VARIANT: Final = "none"

MIRROR_OK: Final = "ok"  # the shadow answered 1xx-3xx
MIRROR_HTTP_4XX: Final = "http_4xx"
MIRROR_HTTP_5XX: Final = "http_5xx"
MIRROR_ERROR: Final = "error"  # connection failed or the response was unusable
MIRROR_TIMEOUT: Final = "timeout"
MIRROR_DROPPED: Final = "dropped"  # not sent: too many copies in flight or no shadow upstream
MIRROR_OUTCOMES: Final = (
    MIRROR_OK, MIRROR_HTTP_4XX, MIRROR_HTTP_5XX, MIRROR_ERROR, MIRROR_TIMEOUT, MIRROR_DROPPED
)  # fmt: skip

AGREE: Final = "agree"
DISAGREE: Final = "disagree"

# Why a pair of answers could not be compared.
NOT_JSON: Final = "not_json"  # one body is not JSON
NO_PREDICTIONS: Final = "no_predictions"  # JSON without V1 predictions or V2 outputs
PRIMARY_ERROR: Final = "primary_error"  # the client's answer was not 2xx (or never came)
SHADOW_ERROR: Final = "shadow_error"  # the shadow's answer was not 2xx (or never came)
INCOMPARABLE_REASONS: Final = (NOT_JSON, NO_PREDICTIONS, PRIMARY_ERROR, SHADOW_ERROR)

# How a request held for a variant scaled to zero ended (``outcome``).
ACTIVATED: Final = "activated"  # a pod got ready in time: the request was sent to it
ACTIVATION_TIMEOUT: Final = "timeout"  # none did: answered 503
ACTIVATION_OUTCOMES: Final = (ACTIVATED, ACTIVATION_TIMEOUT)

# --- metric families (as registered; a counter is scraped as NAME_total) -----------------

REQUESTS: Final = "modelship_router_requests"
UPSTREAM_DURATION_SECONDS: Final = "modelship_router_upstream_duration_seconds"
RETRIES: Final = "modelship_router_retries"
FALLBACKS: Final = "modelship_router_fallbacks"
MIRROR_REQUESTS: Final = "modelship_router_mirror_requests"
SHADOW_PREDICTIONS: Final = "modelship_router_shadow_predictions"
SHADOW_INCOMPARABLE: Final = "modelship_router_shadow_incomparable"
CONFIG_GENERATION: Final = "modelship_router_config_generation"
CONFIG_ERRORS: Final = "modelship_router_config_errors"
UPSTREAMS: Final = "modelship_router_upstreams"
ACTIVATIONS: Final = "modelship_router_activations"
ACTIVATION_WAIT_SECONDS: Final = "modelship_router_activation_wait_seconds"

#: Families that are counters (their samples are NAME_total).
COUNTERS: Final = frozenset(
    {REQUESTS, RETRIES, FALLBACKS, MIRROR_REQUESTS, SHADOW_PREDICTIONS, SHADOW_INCOMPARABLE,
     CONFIG_ERRORS, ACTIVATIONS}
)  # fmt: skip


def total(family: str) -> str:
    """The series name of a counter family in PromQL: ``modelship_router_requests_total``."""
    return f"{family}_total"
