"""One httpx client to the API server: authenticated JSON requests, patches, streams.

Every failure is an :class:`~modelship_kube.errors.ApiError` (a subclass per common
status); transport errors and timeouts are :class:`~modelship_kube.errors.Unavailable`
(status 0). A 401 makes the credentials fetch a fresh token and the request is sent once
more, so a token that rotated between two reads costs one round trip, not an error.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Mapping
from enum import StrEnum
from pathlib import Path
from types import TracebackType
from typing import Any, Final

import httpx

from modelship_kube import credentials as creds
from modelship_kube.errors import ApiError, api_error, from_response
from modelship_kube.paths import apply_params

#: Seconds for one ordinary request (lists of a few objects, small patches).
REQUEST_TIMEOUT: Final = 15.0
CONNECT_TIMEOUT: Final = 10.0
#: A watch's read timeout is the server-side timeout plus this much.
WATCH_SLACK_SECONDS: Final = 30.0


class PatchType(StrEnum):
    """The content types of a PATCH."""

    MERGE = "application/merge-patch+json"
    JSON = "application/json-patch+json"
    STRATEGIC = "application/strategic-merge-patch+json"
    APPLY = "application/apply-patch+yaml"


class Client:
    """Requests to one API server with one identity, over one httpx connection pool."""

    def __init__(
        self,
        credentials: creds.Credentials,
        *,
        timeout: float = REQUEST_TIMEOUT,
        transport: httpx.AsyncBaseTransport | None = None,
        limits: httpx.Limits | None = None,
    ) -> None:
        """``limits``: the connection pool (httpx's default, 100 connections, unless given;
        a watch holds one connection for as long as it runs)."""
        self.credentials = credentials
        self.server = credentials.server.rstrip("/")
        self.timeout = timeout
        verify: Any = credentials.tls.context() if self.server.startswith("https") else False
        self._http = httpx.AsyncClient(
            base_url=self.server,
            verify=verify,
            timeout=httpx.Timeout(timeout, connect=CONNECT_TIMEOUT),
            transport=transport,
            trust_env=False,
            limits=limits or httpx.Limits(max_connections=100, max_keepalive_connections=20),
        )

    @classmethod
    def connect(cls, kubeconfig: str | Path | None = None) -> Client:
        """``kubeconfig`` if given, else in-cluster, else ``$KUBECONFIG``/``~/.kube/config``."""
        return cls(creds.load(kubeconfig))

    async def close(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # --- plumbing --------------------------------------------------------------------------

    async def _headers(self, content_type: str | None) -> dict[str, str]:
        headers = {"accept": "application/json"}
        authorization = await self.credentials.authorization()
        if authorization:
            headers["authorization"] = authorization
        if content_type:
            headers["content-type"] = content_type
        return headers

    async def _send(
        self,
        method: str,
        path: str,
        params: Mapping[str, str] | None,
        content: bytes | None,
        content_type: str | None,
        timeouts: httpx.Timeout | None,
        stream: bool,
    ) -> httpx.Response:
        """Send once; after a 401, once more with freshly read credentials."""
        for attempt in (1, 2):
            request = self._http.build_request(
                method,
                path,
                params=params,
                content=content,
                headers=await self._headers(content_type),
                timeout=timeouts if timeouts is not None else httpx.USE_CLIENT_DEFAULT,
            )
            response = await self._http.send(request, stream=stream)
            if response.status_code != 401 or attempt == 2 or self.credentials.auth is None:
                return response
            await response.aclose()
            self.credentials.auth.expire()
        raise AssertionError("unreachable")

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        body: Any = None,
        content_type: str = "application/json",
        what: str | None = None,
    ) -> dict[str, Any]:
        """One request; its decoded JSON answer ({} when empty), or an ApiError."""
        what = what or f"{method} {path}"
        content = None if body is None else json.dumps(body).encode()
        try:
            response = await self._send(
                method, path, params, content, content_type if content else None, None, False
            )
        except httpx.HTTPError as exc:
            raise api_error(what, 0, type(exc).__name__, str(exc) or repr(exc)) from exc
        if response.status_code >= 300:
            raise from_response(what, response.status_code, response.content)
        if not response.content:
            return {}
        try:
            data = response.json()
        except ValueError as exc:
            raise ApiError(what, response.status_code, "BadResponse", "not JSON") from exc
        if not isinstance(data, dict):
            raise ApiError(what, response.status_code, "BadResponse", "not a JSON object")
        return data

    @contextlib.asynccontextmanager
    async def stream(
        self,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        read_timeout: float | None = None,
        what: str | None = None,
    ) -> AsyncIterator[httpx.Response]:
        """A GET whose body is read as it arrives (a watch); a non-2xx is an ApiError."""
        what = what or f"GET {path}"
        timeout = httpx.Timeout(self.timeout, connect=CONNECT_TIMEOUT, read=read_timeout)
        try:
            response = await self._send("GET", path, params, None, None, timeout, True)
        except httpx.HTTPError as exc:
            raise api_error(what, 0, type(exc).__name__, str(exc) or repr(exc)) from exc
        try:
            if response.status_code >= 300:
                raise from_response(what, response.status_code, await response.aread())
            yield response
        except httpx.HTTPError as exc:
            raise api_error(what, 0, type(exc).__name__, str(exc) or repr(exc)) from exc
        finally:
            await response.aclose()

    # --- verbs -----------------------------------------------------------------------------

    async def get(
        self, path: str, params: Mapping[str, str] | None = None, what: str | None = None
    ) -> dict[str, Any]:
        return await self.request("GET", path, params=params, what=what)

    async def get_or_none(self, path: str, what: str | None = None) -> dict[str, Any] | None:
        """The object, or None when it does not exist."""
        try:
            return await self.request("GET", path, what=what)
        except ApiError as exc:
            if exc.not_found:
                return None
            raise

    async def create(
        self, path: str, body: Mapping[str, Any], what: str | None = None
    ) -> dict[str, Any]:
        """POST to a collection."""
        return await self.request("POST", path, body=dict(body), what=what)

    async def replace(
        self, path: str, body: Mapping[str, Any], what: str | None = None
    ) -> dict[str, Any]:
        """PUT an object (409 if its ``metadata.resourceVersion`` is not the stored one)."""
        return await self.request("PUT", path, body=dict(body), what=what)

    async def patch(
        self,
        path: str,
        body: Any,
        patch_type: PatchType = PatchType.MERGE,
        *,
        params: Mapping[str, str] | None = None,
        what: str | None = None,
    ) -> dict[str, Any]:
        return await self.request(
            "PATCH", path, params=params, body=body, content_type=patch_type, what=what
        )

    async def apply(
        self,
        path: str,
        obj: Mapping[str, Any],
        field_manager: str,
        *,
        force: bool = True,
        what: str | None = None,
    ) -> dict[str, Any]:
        """Server-side apply ``obj`` at its object path (JSON is YAML: the apply content
        type takes it as is)."""
        return await self.patch(
            path,
            dict(obj),
            PatchType.APPLY,
            params=apply_params(field_manager, force),
            what=what,
        )

    async def scale(self, path: str, replicas: int, to: int, what: str | None = None) -> bool:
        """Set the replicas of the ``scale`` subresource at ``path`` from ``replicas`` to
        ``to``: read it, and patch it only if it runs ``replicas``, with its resourceVersion
        as a precondition. False (nothing written) when it ran another count, or changed
        between the read and the write: a count someone else set meanwhile is never undone.

        (Not a JSON patch ``test``: a Scale's ``spec.replicas`` is omitted at 0, so no
        ``test`` operation can say it is 0.)"""
        scale = await self.get(path, what=what)
        if int((scale.get("spec") or {}).get("replicas") or 0) != replicas:
            return False
        version = (scale.get("metadata") or {}).get("resourceVersion")
        body = {"metadata": {"resourceVersion": version}, "spec": {"replicas": to}}
        try:
            await self.patch(path, body, PatchType.MERGE, what=what)
        except ApiError as exc:
            if exc.conflict:
                return False
            raise
        return True

    async def delete(
        self,
        path: str,
        *,
        propagation: str | None = "Background",
        missing_ok: bool = True,
        what: str | None = None,
    ) -> None:
        """Delete an object (its dependents per ``propagation``); gone already is fine
        unless ``missing_ok`` is False."""
        body = {"propagationPolicy": propagation} if propagation else None
        try:
            await self.request("DELETE", path, body=body, what=what)
        except ApiError as exc:
            if not (missing_ok and exc.not_found):
                raise
