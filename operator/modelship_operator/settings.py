"""Operator settings, from ``MODELSHIP_OPERATOR_*`` environment variables.

Everything that differs between installations lives here (which namespaces to watch, the
images to run, where Prometheus is); everything that differs between models lives in the
ModelDeployment spec, which may override the images and the Prometheus URL.
"""

from __future__ import annotations

import re
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from modelship_operator.headers import check_headers


def package_version() -> str:
    """The installed modelship version: the tag of the default images."""
    try:
        return version("modelship")
    except PackageNotFoundError:  # running from a source tree without an install
        return "0.0.0"


_NAMESPACE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


def _namespace_name(name: str) -> str:
    if len(name) > 63 or not _NAMESPACE.match(name):
        raise ValueError(f"{name!r} is not a namespace name")
    return name


class OperatorSettings(BaseSettings):
    """How the operator runs; each field is also ``MODELSHIP_OPERATOR_<FIELD>``."""

    model_config = SettingsConfigDict(env_prefix="MODELSHIP_OPERATOR_", extra="ignore", frozen=True)

    namespaces: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Namespaces to watch, comma separated. Empty: every namespace "
        "(needs the ClusterRole; a list works with per-namespace Roles).",
    )
    serving_image: str = Field(
        default_factory=lambda: f"modelship/serving:{package_version()}",
        min_length=1,
        description="Model server image, unless a ModelDeployment sets spec.images.serving.",
    )
    router_image: str = Field(
        default_factory=lambda: f"modelship/router:{package_version()}",
        min_length=1,
        description="Router image, unless a ModelDeployment sets spec.images.router.",
    )
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] | None = Field(
        default=None, description="imagePullPolicy for both images. Unset: Kubernetes' default."
    )
    prometheus_url: str = Field(
        default="http://prometheus.monitoring.svc:9090",
        pattern=r"^https?://\S+$",
        description="Prometheus base URL, unless a ModelDeployment sets spec.prometheus.url.",
    )
    mlflow_tracking_uri: str | None = Field(
        default=None,
        pattern=r"^https?://\S+$",
        description="MLflow tracking server that resolves models:/ URIs, unless a "
        "ModelDeployment sets spec.mlflow.trackingUri. Its credentials are MLflow's own "
        "variables in the operator's environment: MLFLOW_TRACKING_TOKEN, or "
        "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD (each also as *_FILE).",
    )
    prometheus_headers: dict[str, str] = Field(
        default_factory=dict,
        description="Extra HTTP headers of every Prometheus query, as JSON, e.g. "
        '{"X-Scope-OrgID": "team-a"} for a Mimir, Cortex or Thanos tenant.',
    )
    prometheus_bearer_token_file: Path | None = Field(
        default=None,
        description="File holding a bearer token sent to MODELSHIP_OPERATOR_PROMETHEUS_URL "
        "(read at every query, so a rotated Secret takes effect). Not sent to a "
        "ModelDeployment's own spec.prometheus.url.",
    )
    prometheus_basic_auth_username: str | None = Field(
        default=None,
        min_length=1,
        description="Basic auth user for MODELSHIP_OPERATOR_PROMETHEUS_URL; the password "
        "comes from MODELSHIP_OPERATOR_PROMETHEUS_BASIC_AUTH_PASSWORD_FILE.",
    )
    prometheus_basic_auth_password_file: Path | None = Field(
        default=None, description="File holding the basic auth password (read at every query)."
    )
    prometheus_ca_file: Path | None = Field(
        default=None,
        description="PEM bundle of CAs trusted for an https Prometheus, besides the system's.",
    )
    prometheus_namespace_label: str = Field(
        default="namespace",
        pattern=r"^[a-zA-Z_][a-zA-Z0-9_]*$",
        description="Label in which your Prometheus' scrape puts the pod's namespace "
        "(namespace with the Prometheus Operator, the prometheus-community chart and most "
        "managed ones). The analysis selects by it and by labels the pods export themselves.",
    )
    network_policies: bool = Field(
        default=True,
        description="Render a NetworkPolicy per ModelDeployment with the builtin router: its "
        "serving pods admit only its router pods (HTTP and gRPC) and the scrapers below "
        "(metrics, on the HTTP port); another per router admitting any client on its port, "
        "so the model stays reachable in a namespace whose default denies ingress. They take "
        "effect where the cluster's network enforces NetworkPolicy; traffic from the node "
        "itself (kubelet probes) is never subject to them.",
    )
    scraper_namespace: str | None = Field(
        default=None,
        description="Namespace of the Prometheus that scrapes the serving pods (e.g. "
        "monitoring), admitted by the serving pods' NetworkPolicy. Unset: pods with "
        "scraper_pod_labels in any namespace.",
    )
    scraper_pod_labels: dict[str, str] = Field(
        default_factory=lambda: {"app.kubernetes.io/name": "prometheus"},
        description="Labels of the Prometheus pods admitted to scrape, as JSON (the "
        "Prometheus Operator and kube-prometheus-stack label theirs "
        '{"app.kubernetes.io/name": "prometheus"}); {} admits every pod of '
        "scraper_namespace.",
    )
    log_level: Literal["debug", "info", "warning", "error"] = Field(
        default="info", description="Least severe level logged."
    )
    log_json: bool = Field(default=False, description="One JSON object per log line.")
    field_manager: str = Field(
        default="modelship-operator",
        min_length=1,
        max_length=128,
        description="Field manager name of every server-side apply.",
    )
    resync_seconds: float = Field(
        default=300.0,
        gt=0,
        le=3600,
        description="Seconds between timer reconciles of each ModelDeployment, in addition "
        "to reacting at once to every change of it, its children and its pods (watched) and "
        "to what a rollout asks for (its next analysis, a scale-down). A safety net only.",
    )
    max_concurrent_reconciles: int = Field(
        default=16,
        ge=1,
        le=256,
        description="Reconciles running at the same time (across all ModelDeployments; one "
        "at a time per ModelDeployment). The API client's connection pool is sized for it.",
    )
    http_port: int = Field(
        default=8081, ge=1, le=65535, description="Port of /metrics and /healthz."
    )
    leader_election: bool = Field(
        default=True, description="Only the holder of the Lease acts (run 2 replicas safely)."
    )
    lease_name: str = Field(
        default="modelship-operator", min_length=1, description="Name of the leader Lease."
    )
    lease_namespace: str | None = Field(
        default=None,
        description="Namespace of the Lease. Unset: the operator pod's own namespace.",
    )
    lease_duration_seconds: float = Field(
        default=15.0, gt=1, le=300, description="How long a leader's claim lasts unrenewed."
    )

    @field_validator("namespaces", mode="before")
    @classmethod
    def _split(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("namespaces")
    @classmethod
    def _check_namespaces(cls, value: list[str]) -> list[str]:
        return sorted({_namespace_name(name) for name in value})

    @field_validator("scraper_namespace")
    @classmethod
    def _check_scraper_namespace(cls, value: str | None) -> str | None:
        return None if value is None else _namespace_name(value)

    @model_validator(mode="after")
    def _check_scrapers(self) -> OperatorSettings:
        if self.network_policies and not self.scraper_pod_labels and not self.scraper_namespace:
            raise ValueError(
                "an empty MODELSHIP_OPERATOR_SCRAPER_POD_LABELS needs "
                "MODELSHIP_OPERATOR_SCRAPER_NAMESPACE: it would admit every pod of the cluster"
            )
        return self

    @field_validator("prometheus_headers")
    @classmethod
    def _check_headers(cls, value: dict[str, str]) -> dict[str, str]:
        return check_headers(value)

    @model_validator(mode="after")
    def _check_prometheus_auth(self) -> OperatorSettings:
        user, password = (
            self.prometheus_basic_auth_username,
            self.prometheus_basic_auth_password_file,
        )
        if (user is None) != (password is None):
            raise ValueError(
                "prometheus basic auth needs both MODELSHIP_OPERATOR_PROMETHEUS_BASIC_AUTH_"
                "USERNAME and MODELSHIP_OPERATOR_PROMETHEUS_BASIC_AUTH_PASSWORD_FILE"
            )
        if user is not None and self.prometheus_bearer_token_file is not None:
            raise ValueError("set either a Prometheus bearer token file or basic auth, not both")
        return self

    @property
    def cluster_wide(self) -> bool:
        """True when every namespace is watched."""
        return not self.namespaces
