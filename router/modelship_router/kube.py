"""A minimal asyncio Kubernetes API client: list and watch, nothing else.

Connection settings (server, CA, client certificate, bearer token, token refresh) come
from the ``kubernetes`` package's loaders, so in-cluster service accounts and every
kubeconfig flavour work; the requests themselves go through httpx on the router's event
loop, so a watch is cancelled instantly and never blocks a thread. This is off the hot
path: the proxy never touches it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx

log = logging.getLogger(__name__)

WATCH_SECONDS = 240


class KubeError(Exception):
    """An API request failed; ``status`` is the HTTP status (0 for transport errors)."""

    def __init__(self, message: str, status: int = 0) -> None:
        super().__init__(message)
        self.status = status


class Gone(KubeError):
    """The watch's resourceVersion is too old (HTTP 410): list again."""


class KubeApi:
    """List and watch resources over one httpx client."""

    def __init__(
        self,
        server: str,
        ssl_context: ssl.SSLContext | bool,
        authorization: Callable[[], str | None],
    ) -> None:
        self.server = server.rstrip("/")
        self._authorization = authorization
        self._client = httpx.AsyncClient(
            base_url=self.server,
            verify=ssl_context,
            timeout=httpx.Timeout(10.0, read=WATCH_SECONDS + 30.0),
        )

    @classmethod
    def connect(cls, kubeconfig: Path | None = None) -> KubeApi:
        """From a kubeconfig file, else the pod's service account (in-cluster)."""
        from kubernetes import client, config

        cfg = client.Configuration()
        if kubeconfig is not None:
            config.load_kube_config(config_file=str(kubeconfig), client_configuration=cfg)
        else:
            config.load_incluster_config(client_configuration=cfg)
        return cls.from_configuration(cfg)

    @classmethod
    def from_configuration(cls, cfg: Any) -> KubeApi:
        """From a ``kubernetes.client.Configuration`` (or an ApiClient's configuration)."""
        context = ssl.create_default_context(cafile=cfg.ssl_ca_cert)
        if not cfg.verify_ssl:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        if cfg.cert_file:
            context.load_cert_chain(cfg.cert_file, cfg.key_file)

        def authorization() -> str | None:
            # auth_settings() runs the in-cluster token refresh hook (rotated tokens).
            setting = cfg.auth_settings().get("BearerToken")
            return setting["value"] if setting else None

        return cls(cfg.host, context, authorization)

    def _headers(self) -> dict[str, str]:
        headers = {"accept": "application/json"}
        token = self._authorization()
        if token:
            headers["authorization"] = token
        return headers

    async def get(self, path: str, params: dict[str, str] | None = None) -> dict[str, Any]:
        """GET a resource or a list."""
        try:
            resp = await self._client.get(path, params=params, headers=self._headers())
        except httpx.HTTPError as exc:
            raise KubeError(f"GET {path}: {exc!r}") from exc
        if resp.status_code != 200:
            raise KubeError(f"GET {path}: {resp.status_code} {resp.text[:300]}", resp.status_code)
        data: dict[str, Any] = resp.json()
        return data

    async def watch(self, path: str, params: dict[str, str]) -> AsyncIterator[dict[str, Any]]:
        """Stream watch events ({"type", "object"}) until the server ends the watch."""
        query = {
            **params,
            "watch": "true",
            "allowWatchBookmarks": "true",
            "timeoutSeconds": str(WATCH_SECONDS),
        }
        try:
            async with self._client.stream(
                "GET", path, params=query, headers=self._headers()
            ) as resp:
                if resp.status_code == 410:
                    raise Gone(f"watch {path}: resource version expired", 410)
                if resp.status_code != 200:
                    body = (await resp.aread())[:300].decode(errors="replace")
                    raise KubeError(f"watch {path}: {resp.status_code} {body}", resp.status_code)
                async for line in resp.aiter_lines():
                    if not line:
                        continue
                    event: dict[str, Any] = json.loads(line)
                    if event.get("type") == "ERROR":
                        status = event.get("object", {})
                        code = int(status.get("code", 0))
                        message = f"watch {path}: {status.get('message', status)}"
                        raise Gone(message, code) if code == 410 else KubeError(message, code)
                    yield event
        except httpx.HTTPError as exc:
            raise KubeError(f"watch {path}: {exc!r}") from exc

    async def close(self) -> None:
        await self._client.aclose()


Handler = Callable[[str, dict[str, Any]], None]


async def list_and_watch(
    api: KubeApi,
    path: str,
    params: dict[str, str],
    on_list: Callable[[list[dict[str, Any]]], None],
    on_event: Handler,
    what: str,
) -> None:
    """Keep a view of a collection current: list, then watch from that version, forever.

    ``on_list`` receives the full list after every (re)list; ``on_event`` each ADDED,
    MODIFIED or DELETED event. Errors are logged and retried with back-off; an expired
    resourceVersion leads to a fresh list.
    """
    delay = 0.2
    failing = False
    while True:
        try:
            listing = await api.get(path, params)
            version = listing["metadata"]["resourceVersion"]
            on_list(listing.get("items") or [])
            if failing:
                log.info("watching %s again", what)
                failing = False
            delay = 0.2
            while True:
                async for event in api.watch(path, {**params, "resourceVersion": version}):
                    obj = event.get("object") or {}
                    version = obj.get("metadata", {}).get("resourceVersion", version)
                    if event.get("type") in ("ADDED", "MODIFIED", "DELETED"):
                        on_event(str(event["type"]), obj)
        except asyncio.CancelledError:
            raise
        except Gone:
            log.debug("watch of %s expired: listing again", what)
            continue
        except Exception as exc:
            if not failing:
                log.warning("watch of %s failed (retrying): %s", what, exc)
                failing = True
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)
