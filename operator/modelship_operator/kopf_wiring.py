"""The kopf wiring: login, the operator's kopf settings and the watch handlers.

kopf watches ModelDeployments (and the Deployments the operator made) and calls the two
``on.event`` handlers below for every change, including the initial listing when the
operator starts (that is the "resume"). The handlers only *poke* the work queue
(:mod:`modelship_operator.workqueue`), which runs the reconcile
(:mod:`modelship_operator.reconciler`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import kopf
from modelship_kube import credentials

from modelship_operator import kinds
from modelship_operator.settings import OperatorSettings
from modelship_operator.spec import GROUP, PLURAL, VERSION
from modelship_operator.workqueue import WorkQueue


def kopf_settings(settings: OperatorSettings) -> kopf.OperatorSettings:
    """kopf without CRD scanning, peering or log-to-Event posting; child Deployments are
    watched with a server-side label selector."""
    config = kopf.OperatorSettings()
    config.scanning.disabled = True  # no CRD listing, so no permission for it
    config.peering.standalone = True  # the Lease decides who acts
    config.posting.enabled = False  # the operator posts its own Events
    config.watching.server_timeout = 300
    config.watching.client_timeout = 330
    config.networking.request_timeout = 60
    config.watching.label_selectors["apps", "deployments"] = (
        f"{kinds.LABEL_MANAGED_BY}={kinds.MANAGED_BY},{kinds.LABEL_DEPLOYMENT}"
    )
    return config


def connection_info(
    found: credentials.Credentials, authorization: str | None
) -> kopf.ConnectionInfo:
    """kopf's connection settings from the same credentials the operator's client uses."""
    scheme, _sep, token = (authorization or "").strip().partition(" ")
    tls = found.tls
    return kopf.ConnectionInfo(
        server=found.server,
        ca_path=str(tls.ca_file) if tls.ca_file else None,
        ca_data=tls.ca_data if not tls.ca_file else None,
        insecure=tls.insecure,
        scheme=scheme if token else None,
        token=token or None,
        certificate_path=str(tls.cert_file) if tls.cert_file else None,
        certificate_data=tls.cert_data if not tls.cert_file else None,
        private_key_path=str(tls.key_file) if tls.key_file else None,
        private_key_data=tls.key_data if not tls.key_file else None,
        default_namespace=found.namespace,
    )


def build_registry(queue: WorkQueue, kubeconfig: str | None = None) -> kopf.OperatorRegistry:
    """The handlers, on a registry of their own (nothing global)."""
    registry = kopf.OperatorRegistry()

    @kopf.on.login(registry=registry)
    async def login(**_: Any) -> kopf.ConnectionInfo:
        # Loaded afresh at every login: kopf logs in again on a 401, so a rotated
        # service-account token is picked up.
        found = credentials.load(kubeconfig)
        return connection_info(found, await found.authorization())

    @kopf.on.event(GROUP, VERSION, PLURAL, registry=registry)
    async def model_deployment_changed(
        *, event: kopf.RawEvent, body: kopf.Body, namespace: str | None, name: str, **_: Any
    ) -> None:
        if namespace is None:  # a namespaced resource always has one
            return
        if event.get("type") == "DELETED":
            queue.forget(namespace, name)
            return
        version = body.get("metadata", {}).get("resourceVersion")
        queue.poke(namespace, name, resource_version=version, urgent=True)

    @kopf.on.event(
        "apps",
        "v1",
        "deployments",
        labels={kinds.LABEL_MANAGED_BY: kinds.MANAGED_BY, kinds.LABEL_DEPLOYMENT: kopf.PRESENT},
        registry=registry,
    )
    async def child_changed(
        *, event: kopf.RawEvent, namespace: str | None, labels: Mapping[str, str], **_: Any
    ) -> None:
        if event.get("type") is None or namespace is None:
            return  # the initial listing: the owners are being listed (and poked) too
        queue.poke(namespace, labels[kinds.LABEL_DEPLOYMENT], urgent=False)

    return registry
