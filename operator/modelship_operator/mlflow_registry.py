"""The MLflow model registry over its REST API: a ``models:/`` URI to the model's files.

Two calls name the version (``GET /api/2.0/mlflow/model-versions/get`` for a number,
``/registered-models/alias`` for an alias); a third finds where its files are when the
version's ``source`` is not a location itself: ``models:/m-<id>`` (a logged model, MLflow 3)
through ``/logged-models/<id>``, ``runs:/<run>/<path>`` through ``/runs/get``. When the
server proxies those files, its ``MLmodel`` is read (YAML) for the sklearn flavor's file,
and a skops file without a pin is streamed through sha256 (never loaded), so every pod of
the version is pinned to the bytes read here. Every failure is a
:class:`~modelship_operator.sources.RegistryError` whose message names the model, the server
and what to do; the decisions are in :mod:`modelship_operator.sources`.

Credentials are the operator's (MLflow's own variables, see :class:`Credentials`): the
operator reads no Secret, so one registry login serves every namespace it watches.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import httpx

from modelship_operator.sources import (
    ModelFile,
    RegistryError,
    RegistryRef,
    ResolvedVersion,
    artifact_location,
    parse_registry_uri,
    resolved_ref,
)
from modelship_operator.status import ModelRef

if TYPE_CHECKING:
    from modelship_operator.settings import OperatorSettings
    from modelship_operator.spec import ModelDeployment

API: Final = "/api/2.0/mlflow"
TIMEOUT_SECONDS: Final = 10.0
#: The serving pods' download limit without spec.model.maxSize (the server's default).
DEFAULT_MAX_BYTES: Final = 1 << 30
#: Longest the operator reads a skops model file to hash it (it streams; nothing is loaded).
HASH_TIMEOUT_SECONDS: Final = 300.0


@dataclass(frozen=True)
class Credentials:
    """How the operator authenticates to the tracking server: a bearer token
    (``MLFLOW_TRACKING_TOKEN``) or basic auth (``MLFLOW_TRACKING_USERNAME`` and
    ``MLFLOW_TRACKING_PASSWORD``), the variables MLflow's own client reads. A ``*_FILE``
    variant of each names a file to read instead (a mounted Secret), read at every call."""

    token: str | None = None
    username: str | None = None
    password: str | None = None

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> Credentials:
        values = os.environ if env is None else env

        def read(name: str) -> str | None:
            if values.get(name):
                return values[name]
            path = values.get(f"{name}_FILE")
            return Path(path).read_text().strip() if path else None

        return cls(
            token=read("MLFLOW_TRACKING_TOKEN"),
            username=read("MLFLOW_TRACKING_USERNAME"),
            password=read("MLFLOW_TRACKING_PASSWORD"),
        )

    def headers(self) -> dict[str, str]:
        if self.token:
            return {"Authorization": f"Bearer {self.token}"}
        return {}

    def auth(self) -> httpx.BasicAuth | None:
        if self.username and not self.token:
            return httpx.BasicAuth(self.username, self.password or "")
        return None

    @property
    def described(self) -> str:
        if self.token:
            return "MLFLOW_TRACKING_TOKEN"
        if self.username:
            return f"MLFLOW_TRACKING_USERNAME={self.username!r}"
        return "no credentials"


class MlflowRegistry:
    """Resolves registry URIs against one tracking server."""

    def __init__(
        self,
        tracking_uri: str,
        credentials: Credentials | None = None,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        self.tracking_uri = tracking_uri.rstrip("/")
        self.credentials = credentials or Credentials()
        self._client = client

    async def resolve_model(
        self, uri: str, *, version: str, sha256: str | None, max_size: str | None
    ) -> ModelRef:
        """What spec.model's registry URI stands for now: the version, its model file
        (hashed if skops and unpinned) or directory (:func:`~modelship_operator.sources.
        resolved_ref` decides); RegistryError with the cause otherwise."""
        from modelship_operator.spec import size_bytes

        ref = parse_registry_uri(uri)
        found = await self.resolve(ref)
        directory = artifact_location(found.artifact_uri, self.tracking_uri)
        limit = size_bytes(max_size) if max_size else DEFAULT_MAX_BYTES
        file = await self.model_file(ref, directory, sha256, limit)
        return resolved_ref(
            uri, found, self.tracking_uri, version=version, sha256=sha256, max_size=max_size,
            file=file,
        )  # fmt: skip

    async def resolve(self, ref: RegistryRef) -> ResolvedVersion:
        """The version ``ref`` names now and its model directory; RegistryError otherwise."""
        if ref.version is not None:
            what = f"version {ref.version} of registered model {ref.name!r}"
            answer = await self._get(
                "/model-versions/get", {"name": ref.name, "version": ref.version}, ref, what
            )
        else:
            what = f"alias {ref.alias!r} of registered model {ref.name!r}"
            answer = await self._get(
                "/registered-models/alias", {"name": ref.name, "alias": ref.alias or ""}, ref, what
            )
        version = answer.get("model_version") or {}
        number, source = str(version.get("version", "")), str(version.get("source", ""))
        if not number or not source:
            raise RegistryError(f"{ref}: the MLflow server at {self.tracking_uri} sent no {what}")
        status = version.get("status", "READY")
        if status != "READY":
            raise RegistryError(
                f"{ref}: version {number} is {status} in the registry at {self.tracking_uri}, "
                "not READY yet"
            )
        return ResolvedVersion(version=number, artifact_uri=await self._location(ref, source))

    async def model_file(
        self, ref: RegistryRef, directory: str, pinned: str | None, max_bytes: int
    ) -> ModelFile | None:
        """Read the MLmodel of a model directory this server serves (its proxied artifacts)
        and, for a skops file the user did not pin, its sha256 (streamed, never loaded);
        None for a directory elsewhere (S3: the operator holds no store credentials)."""
        from modelship_serving.errors import ModelLoadError
        from modelship_serving.mlflow_model import MLMODEL, child_uri, sklearn_flavor

        if not directory.startswith(f"{self.tracking_uri}/"):
            return None
        where = child_uri(directory, MLMODEL)
        async with self._session(TIMEOUT_SECONDS) as client:
            text = await self._download(client, ref, where, 1 << 20, hash_only=False)
        try:
            flavor = sklearn_flavor(text, where)
        except ModelLoadError as exc:
            raise RegistryError(f"{ref}: {exc}") from exc
        uri = child_uri(directory, flavor.file)
        if flavor.format != "skops" or pinned:
            return ModelFile(uri, flavor.format, None)
        async with self._session(HASH_TIMEOUT_SECONDS) as client:
            digest = await self._download(client, ref, uri, max_bytes, hash_only=True)
        return ModelFile(uri, flavor.format, digest.decode())

    def _session(self, timeout: float) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            timeout=timeout,
            headers=self.credentials.headers(),
            auth=self.credentials.auth(),
            follow_redirects=False,
        )

    async def _download(
        self, client: httpx.AsyncClient, ref: RegistryRef, url: str, max_bytes: int,
        *, hash_only: bool,
    ) -> bytes:  # fmt: skip
        """The file at URL (or, with hash_only, its hex sha256), at most MAX_BYTES."""
        import hashlib

        digest, body, size = hashlib.sha256(), bytearray(), 0
        try:
            async with client.stream("GET", url) as response:
                if response.status_code in (401, 403):
                    raise RegistryError(
                        f"{ref}: the MLflow server at {self.tracking_uri} refused the "
                        f"operator's credentials reading {url} (HTTP {response.status_code})"
                    )
                if response.status_code != 200:
                    raise RegistryError(
                        f"{ref}: reading {url} from the MLflow server answered HTTP "
                        f"{response.status_code}"
                    )
                async for chunk in response.aiter_bytes(1 << 20):
                    size += len(chunk)
                    if size > max_bytes:
                        raise RegistryError(
                            f"{ref}: {url} is over the limit of {max_bytes} bytes (raise "
                            "spec.model.maxSize)"
                        )
                    digest.update(chunk)
                    if not hash_only:
                        body += chunk
        except httpx.HTTPError as exc:
            raise RegistryError(
                f"{ref}: cannot read {url} from the MLflow server ({type(exc).__name__}: {exc})"
            ) from exc
        return digest.hexdigest().encode() if hash_only else bytes(body)

    async def _location(self, ref: RegistryRef, source: str) -> str:
        if source.startswith("models:/m-"):
            model_id = source.removeprefix("models:/").split("/", 1)[0]
            answer = await self._get(
                f"/logged-models/{model_id}", {}, ref, f"logged model {model_id}"
            )
            uri = (answer.get("model") or {}).get("info", {}).get("artifact_uri")
            if not uri:
                raise RegistryError(f"{ref}: logged model {model_id} has no artifact_uri")
            return str(uri)
        if source.startswith("runs:/"):
            run_id, _, path = source.removeprefix("runs:/").partition("/")
            answer = await self._get("/runs/get", {"run_id": run_id}, ref, f"run {run_id}")
            root = (answer.get("run") or {}).get("info", {}).get("artifact_uri")
            if not root:
                raise RegistryError(f"{ref}: run {run_id} has no artifact_uri")
            return f"{str(root).rstrip('/')}/{path}".rstrip("/")
        return source

    async def _get(
        self, path: str, params: dict[str, str], ref: RegistryRef, what: str
    ) -> dict[str, Any]:
        url = f"{self.tracking_uri}{API}{path}"
        client = self._client or httpx.AsyncClient(timeout=TIMEOUT_SECONDS)
        try:
            response = await client.get(
                url,
                params=params,
                headers=self.credentials.headers(),
                auth=self.credentials.auth() or httpx.USE_CLIENT_DEFAULT,
            )
        except httpx.HTTPError as exc:
            raise RegistryError(
                f"{ref}: cannot reach the MLflow server at {self.tracking_uri} "
                f"({type(exc).__name__}: {exc or 'no answer'})"
            ) from exc
        finally:
            if self._client is None:
                await client.aclose()
        if response.status_code in (401, 403):
            raise RegistryError(
                f"{ref}: the MLflow server at {self.tracking_uri} refused the operator's "
                f"credentials (HTTP {response.status_code}, {self.credentials.described}); "
                "set MLFLOW_TRACKING_TOKEN, or MLFLOW_TRACKING_USERNAME and "
                "MLFLOW_TRACKING_PASSWORD, in the operator's environment"
            )
        try:
            body = response.json()
        except ValueError:
            body = {}
        if not isinstance(body, dict):
            body = {}
        message = str(body.get("message") or "")
        if (
            response.status_code == 404
            or body.get("error_code") == "RESOURCE_DOES_NOT_EXIST"
            # an absent alias is INVALID_PARAMETER_VALUE "Registered model alias x not found."
            or (response.status_code == 400 and "not found" in message.lower())
        ):
            raise RegistryError(
                f"{ref}: no {what} in the MLflow registry at {self.tracking_uri}"
                + (f" ({body['message']})" if body.get("message") else "")
            )
        if response.status_code != 200:
            reason = body.get("message") or response.text[:200]
            raise RegistryError(
                f"{ref}: the MLflow server at {self.tracking_uri} answered HTTP "
                f"{response.status_code} for {what}: {reason}"
            )
        return body


def registry_for(
    md: ModelDeployment, settings: OperatorSettings, client: httpx.AsyncClient | None = None
) -> MlflowRegistry | None:
    """The registry of ``md``'s models:/ URI: spec.mlflow.trackingUri (without the
    operator's credentials, which go only to its own server) or the operator's setting;
    None when neither is set."""
    own = md.spec.mlflow.tracking_uri if md.spec.mlflow is not None else None
    if own is not None and own.rstrip("/") != (settings.mlflow_tracking_uri or "").rstrip("/"):
        return MlflowRegistry(own, Credentials(), client)
    if settings.mlflow_tracking_uri is None:
        return None
    return MlflowRegistry(settings.mlflow_tracking_uri, Credentials.from_env(), client)
