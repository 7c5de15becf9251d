"""The kopf wiring: login, the operator's kopf settings and the watch handlers.

kopf watches ModelDeployments and calls the ``on.event`` handler below for every change,
including the initial listing when the operator starts (that is the "resume"). The handler
only *pokes* the work queue (:mod:`modelship_operator.workqueue`), which runs the reconcile
(:mod:`modelship_operator.reconciler`). The children and pods are watched by
:mod:`modelship_operator.cache`, which pokes the same queue. Only ``on.event`` handlers are
registered, so kopf keeps no diff-base, progress or finalizer on the resource: a reconcile
that changes nothing makes no write at all.
"""

from __future__ import annotations

from typing import Any

import kopf
from modelship_kube import credentials

from modelship_operator.settings import OperatorSettings
from modelship_operator.spec import GROUP, PLURAL, VERSION
from modelship_operator.workqueue import WorkQueue


def kopf_settings(settings: OperatorSettings) -> kopf.OperatorSettings:
    """kopf without CRD scanning, peering or log-to-Event posting."""
    config = kopf.OperatorSettings()
    config.scanning.disabled = True  # no CRD listing, so no permission for it
    config.peering.standalone = True  # the Lease decides who acts
    config.posting.enabled = False  # the operator posts its own Events
    config.watching.server_timeout = 300
    config.watching.client_timeout = 330
    config.networking.request_timeout = 60
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

    return registry
