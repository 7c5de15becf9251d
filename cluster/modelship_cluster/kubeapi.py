"""A small async client of the Kubernetes REST API: plain dicts in and out, list+watch.

The node agent works on the API's own JSON (camelCase, as the kubelet sees it), so it
talks REST through httpx instead of the generated client's model classes. Credentials come
from a kubeconfig (client certificate, or a bearer token).
"""

from __future__ import annotations

import base64
import json
import ssl
import tempfile
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import httpx
import yaml


class ApiError(Exception):
    def __init__(self, status: int, body: str) -> None:
        super().__init__(f"HTTP {status}: {body[:300]}")
        self.status = status
        self.body = body


class WatchExpired(Exception):
    """The watch's resourceVersion is too old (HTTP 410): list again."""


def _material(entry: Mapping[str, Any], key: str, tmp: Path) -> str | None:
    """Path of a kubeconfig credential given as `key` (file) or `key-data` (base64)."""
    if entry.get(f"{key}-data"):
        path = tmp / key
        path.write_bytes(base64.b64decode(entry[f"{key}-data"]))
        path.chmod(0o600)
        return str(path)
    value = entry.get(key)
    return str(value) if value else None


class KubeClient:
    def __init__(self, kubeconfig: Path, timeout: float = 30.0) -> None:
        doc = yaml.safe_load(kubeconfig.read_text())
        ctx_name = doc.get("current-context")
        ctx = next(c["context"] for c in doc["contexts"] if c["name"] == ctx_name)
        cluster = next(c["cluster"] for c in doc["clusters"] if c["name"] == ctx["cluster"])
        user = next(u["user"] for u in doc["users"] if u["name"] == ctx["user"])
        self._tmp = tempfile.TemporaryDirectory(prefix="modelship-nodeagent-")
        tmp = Path(self._tmp.name)
        ca = _material(cluster, "certificate-authority", tmp)
        context = ssl.create_default_context(cafile=ca)
        cert = _material(user, "client-certificate", tmp)
        key = _material(user, "client-key", tmp)
        if cert and key:
            context.load_cert_chain(cert, key)
        headers = {"Accept": "application/json", "User-Agent": "modelship-node-agent"}
        if user.get("token"):
            headers["Authorization"] = f"Bearer {user['token']}"
        self.server = cluster["server"]
        self.http = httpx.AsyncClient(
            base_url=self.server, verify=context, headers=headers, timeout=timeout
        )

    async def close(self) -> None:
        await self.http.aclose()
        self._tmp.cleanup()

    async def request(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        params: Mapping[str, Any] | None = None,
        content_type: str = "application/json",
    ) -> dict[str, Any]:
        content = None if body is None else json.dumps(body).encode()
        response = await self.http.request(
            method,
            path,
            content=content,
            params=params,
            headers={"Content-Type": content_type} if content is not None else None,
        )
        if response.status_code >= 400:
            raise ApiError(response.status_code, response.text)
        return response.json() if response.content else {}

    async def get(self, path: str, **params: Any) -> dict[str, Any]:
        return await self.request("GET", path, params=params or None)

    async def get_or_none(self, path: str) -> dict[str, Any] | None:
        try:
            return await self.get(path)
        except ApiError as error:
            if error.status == 404:
                return None
            raise

    async def create(self, path: str, body: Any) -> dict[str, Any]:
        return await self.request("POST", path, body=body)

    async def patch(self, path: str, body: Any, strategic: bool = True) -> dict[str, Any]:
        ctype = (
            "application/strategic-merge-patch+json"
            if strategic
            else "application/merge-patch+json"
        )
        return await self.request("PATCH", path, body=body, content_type=ctype)

    async def put(self, path: str, body: Any) -> dict[str, Any]:
        return await self.request("PUT", path, body=body)

    async def delete(self, path: str, body: Any = None) -> dict[str, Any]:
        return await self.request("DELETE", path, body=body)

    async def watch(
        self, path: str, resource_version: str, **params: Any
    ) -> AsyncIterator[dict[str, Any]]:
        """Events of one watch call (ends when the server closes it)."""
        query = {
            **params,
            "watch": "true",
            "resourceVersion": resource_version,
            "allowWatchBookmarks": "true",
            "timeoutSeconds": "300",
        }
        async with self.http.stream("GET", path, params=query, timeout=None) as response:
            if response.status_code == 410:
                raise WatchExpired(path)
            if response.status_code >= 400:
                raise ApiError(response.status_code, (await response.aread()).decode())
            async for line in response.aiter_lines():
                if not line.strip():
                    continue
                event = json.loads(line)
                if event.get("type") == "ERROR":
                    if event.get("object", {}).get("code") == 410:
                        raise WatchExpired(path)
                    raise ApiError(int(event.get("object", {}).get("code", 500)), line)
                yield event
