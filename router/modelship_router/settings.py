"""Router settings, from environment variables prefixed ``MODELSHIP_ROUTER_`` (or CLI flags)."""

from __future__ import annotations

from pathlib import Path
from typing import Self

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

SERVICE_ACCOUNT_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


class RouterSettings(BaseSettings):
    """How the router listens, where its configuration comes from, and its upstream limits.

    Two modes: with ``config`` set, routing comes from that YAML/JSON file (re-read when it
    changes) and upstreams from its static addresses; otherwise the router watches the
    ConfigMap ``<deployment>-router`` and the variants' EndpointSlices through the
    Kubernetes API (in-cluster service account, or ``kubeconfig``).
    """

    model_config = SettingsConfigDict(env_prefix="MODELSHIP_ROUTER_", extra="ignore")

    host: str = Field(default="0.0.0.0", description="Address to listen on.")
    port: int = Field(default=8080, ge=0, le=65535, description="Port to listen on.")
    config: Path | None = Field(
        default=None, description="Static routing file (YAML or JSON); disables Kubernetes."
    )
    config_poll_interval: float = Field(
        default=0.1, gt=0, description="Seconds between checks of the config file for changes."
    )
    deployment: str | None = Field(
        default=None, description="ModelDeployment name (Kubernetes mode; required there)."
    )
    namespace: str | None = Field(
        default=None,
        description="Namespace to watch (default: the service account's namespace).",
    )
    configmap: str | None = Field(
        default=None, description="ConfigMap holding routing.json (default: <deployment>-router)."
    )
    kubeconfig: Path | None = Field(
        default=None, description="kubeconfig file to use instead of the in-cluster account."
    )
    connect_timeout: float = Field(
        default=1.0, gt=0, description="Seconds to open a connection to an upstream."
    )
    upstream_timeout: float = Field(
        default=30.0, gt=0, description="Seconds to wait for an upstream's full response."
    )
    upstream_idle_timeout: float = Field(
        default=4.0,
        gt=0,
        description="Seconds an idle pooled upstream connection is kept (below the "
        "upstream's own keep-alive timeout; uvicorn's is 5 s).",
    )
    max_idle_per_upstream: int = Field(
        default=64, ge=0, description="Idle keep-alive connections kept per upstream."
    )
    eject_seconds: float = Field(
        default=2.0,
        ge=0,
        description="Seconds an upstream that refused a connection is skipped.",
    )
    client_idle_timeout: float = Field(
        default=60.0, gt=0, description="Seconds an idle client keep-alive connection is kept."
    )
    max_body_bytes: int = Field(
        default=10 * 1024 * 1024, gt=0, description="Largest request body accepted (413 above)."
    )
    max_header_bytes: int = Field(
        default=64 * 1024, gt=0, description="Largest request head accepted (431 above)."
    )
    max_response_bytes: int = Field(
        default=64 * 1024 * 1024, gt=0, description="Largest upstream response relayed (502)."
    )
    mirror_timeout: float = Field(
        default=10.0, gt=0, description="Seconds a mirrored copy may take before it is dropped."
    )
    mirror_max_in_flight: int = Field(
        default=64, ge=1, description="Mirrored copies in flight at once; more are skipped."
    )
    token_file: Path | None = Field(
        default=None,
        description="File holding the access token that privileged match rules need "
        "(x-modelship-token; re-read at most once per second). Unset: they are refused.",
    )
    drain_seconds: float = Field(
        default=5.0,
        ge=0,
        le=300,
        description="After SIGTERM, seconds to keep accepting and answering while /readyz "
        "answers 503, so Kubernetes takes the pod out of its Service before it stops listening "
        "(clients kube-proxy still sends here meanwhile are answered, with Connection: close). "
        "A second signal ends the wait.",
    )
    log_level: str = Field(default="info", description="Log level (debug, info, warning, ...).")

    @model_validator(mode="after")
    def _mode(self) -> Self:
        if self.config is None and self.deployment is None:
            raise ValueError(
                "set --config FILE (static mode) or --deployment NAME "
                "(MODELSHIP_ROUTER_DEPLOYMENT, Kubernetes mode)"
            )
        return self

    def resolved_namespace(self) -> str:
        """The namespace to watch: the setting, else the service account's namespace."""
        if self.namespace:
            return self.namespace
        try:
            return SERVICE_ACCOUNT_NAMESPACE.read_text().strip()
        except OSError as exc:
            raise ValueError(
                "no namespace: set --namespace (MODELSHIP_ROUTER_NAMESPACE) outside a pod"
            ) from exc
