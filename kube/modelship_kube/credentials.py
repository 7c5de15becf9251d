"""Where the API server is and who we are to it: in-cluster ServiceAccount or kubeconfig.

In a pod, the ServiceAccount's projected token expires (an hour by default) and the
kubelet rewrites the token file before it does. :class:`TokenFile` therefore re-reads the
file whenever it changed (its stat differs) and at least every minute, and at once after a
401, so a long-running watch or a leader Lease never keeps using an expired token.

Outside a pod, a kubeconfig gives the server, the CA and one of: a client certificate, a
bearer token (inline or ``tokenFile``), basic auth, or an ``exec`` credential plugin (the
cloud providers' login helpers), whose token is cached until its expiry. Parsing a
kubeconfig (:func:`parse_kubeconfig`) is pure; reading the files is :func:`load`'s.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import ssl
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final, Protocol

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from modelship_kube.errors import ConfigurationError

SERVICE_ACCOUNT_DIR: Final = Path("/var/run/secrets/kubernetes.io/serviceaccount")
#: Seconds after which a token file is read again even if its stat did not change.
TOKEN_REFRESH_SECONDS: Final = 60.0
#: An exec credential is renewed this long before it expires.
EXEC_EXPIRY_MARGIN: Final = timedelta(seconds=30)
EXEC_TIMEOUT_SECONDS: Final = 60.0


# --- the Authorization header ------------------------------------------------------------


class Auth(Protocol):
    """A source of the ``Authorization`` header value."""

    async def header(self) -> str | None:
        """The value for the next request (None: send none)."""
        ...

    def expire(self) -> None:
        """The value was refused (401): the next :meth:`header` must fetch a fresh one."""
        ...


@dataclass
class StaticAuth:
    """A fixed header value: an inline token, basic auth."""

    value: str

    async def header(self) -> str | None:
        return self.value

    def expire(self) -> None:
        pass

    @classmethod
    def bearer(cls, token: str) -> StaticAuth:
        return cls(f"Bearer {token.strip()}")

    @classmethod
    def basic(cls, username: str, password: str) -> StaticAuth:
        pair = base64.b64encode(f"{username}:{password}".encode()).decode()
        return cls(f"Basic {pair}")


def _signature(path: Path) -> tuple[int, int, int] | None:
    try:
        st = path.stat()  # follows the kubelet's ..data symlink swap
    except OSError:
        return None
    return (st.st_ino, st.st_mtime_ns, st.st_size)


@dataclass
class TokenFile:
    """A bearer token read from a file, re-read when the file changes (token rotation).

    The file is stat'ed on every request (cheap) and read again when its inode, mtime or
    size changed, when ``refresh_seconds`` passed since the last read, or after a 401.
    If it cannot be read any more, the last token read is kept.
    """

    path: Path
    refresh_seconds: float = TOKEN_REFRESH_SECONDS
    clock: Callable[[], float] = time.monotonic
    _token: str | None = field(default=None, init=False, repr=False)
    _signature: tuple[int, int, int] | None = field(default=None, init=False, repr=False)
    _read_at: float = field(default=float("-inf"), init=False, repr=False)

    def token(self) -> str:
        signature = _signature(self.path)
        stale = self.clock() - self._read_at >= self.refresh_seconds
        if self._token is None or stale or signature != self._signature:
            try:
                text = self.path.read_text().strip()
            except OSError as exc:
                if self._token is None:
                    raise ConfigurationError(
                        f"cannot read the token file {self.path}: {exc}"
                    ) from None
            else:
                if text:
                    self._token, self._signature = text, signature
                    self._read_at = self.clock()
            if self._token is None:
                raise ConfigurationError(f"the token file {self.path} is empty")
        return self._token

    async def header(self) -> str | None:
        return f"Bearer {self.token()}"

    def expire(self) -> None:
        self._signature = None
        self._read_at = float("-inf")


class ExecConfig(BaseModel):
    """A kubeconfig ``user.exec`` entry (client.authentication.k8s.io)."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    command: str
    args: list[str] = Field(default_factory=list)
    env: list[dict[str, str]] | None = None
    api_version: str = Field(default="client.authentication.k8s.io/v1", alias="apiVersion")


def parse_exec_credential(text: str, now: datetime) -> tuple[str, datetime | None]:
    """The token and expiry (None: never) an exec plugin printed (an ExecCredential)."""
    try:
        status = json.loads(text)["status"]
        token = str(status["token"])
    except (ValueError, KeyError, TypeError) as exc:
        raise ConfigurationError(f"the exec credential plugin printed no token: {exc}") from None
    expiry = status.get("expirationTimestamp")
    if not expiry:
        return token, None
    when = datetime.fromisoformat(str(expiry).replace("Z", "+00:00"))
    return token, when if when.tzinfo else when.replace(tzinfo=UTC)


@dataclass
class ExecAuth:
    """A token from a credential plugin, run again when the last token (nearly) expired."""

    config: ExecConfig
    now: Callable[[], datetime] = lambda: datetime.now(UTC)
    _token: str | None = field(default=None, init=False, repr=False)
    _expiry: datetime | None = field(default=None, init=False, repr=False)
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock, init=False, repr=False)

    def _valid(self) -> bool:
        if self._token is None:
            return False
        return self._expiry is None or self.now() < self._expiry - EXEC_EXPIRY_MARGIN

    async def header(self) -> str | None:
        async with self._lock:
            if not self._valid():
                self._token, self._expiry = await self._run()
        return f"Bearer {self._token}"

    def expire(self) -> None:
        self._token = None

    async def _run(self) -> tuple[str, datetime | None]:
        env = dict(os.environ)
        for var in self.config.env or []:
            env[var.get("name", "")] = var.get("value", "")
        info = {
            "apiVersion": self.config.api_version,
            "kind": "ExecCredential",
            "spec": {"interactive": False},
        }
        env["KUBERNETES_EXEC_INFO"] = json.dumps(info)
        try:
            process = await asyncio.create_subprocess_exec(
                self.config.command,
                *self.config.args,
                env=env,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
            out, err = await asyncio.wait_for(process.communicate(), EXEC_TIMEOUT_SECONDS)
        except (OSError, TimeoutError) as exc:
            raise ConfigurationError(f"exec credential {self.config.command}: {exc!r}") from exc
        if process.returncode != 0:
            raise ConfigurationError(
                f"exec credential {self.config.command} exited {process.returncode}: "
                f"{err.decode(errors='replace').strip()[:500]}"
            )
        return parse_exec_credential(out.decode(), self.now())


# --- TLS -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Tls:
    """How to trust the server and how to prove who we are (PEM files or PEM text)."""

    ca_file: Path | None = None
    ca_data: str | None = None
    insecure: bool = False
    cert_file: Path | None = None
    key_file: Path | None = None
    cert_data: str | None = None
    key_data: str | None = None

    def context(self) -> ssl.SSLContext:
        """An SSL context for httpx (reads the files named)."""
        ctx = ssl.create_default_context(
            cafile=str(self.ca_file) if self.ca_file else None, cadata=self.ca_data
        )
        if self.insecure:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        if self.cert_file is not None:
            ctx.load_cert_chain(self.cert_file, self.key_file)
        elif self.cert_data is not None:
            # ssl loads certificates from files only: a private file, removed at once.
            with tempfile.TemporaryDirectory(prefix="modelship-kube-") as tmp:
                cert, key = Path(tmp) / "client.crt", Path(tmp) / "client.key"
                cert.write_text(self.cert_data)
                key.touch(mode=0o600)
                key.write_text(self.key_data or "")
                ctx.load_cert_chain(cert, key if self.key_data else None)
        return ctx


# --- credentials -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Credentials:
    """Everything a client needs to talk to one API server."""

    server: str
    tls: Tls = Tls()
    auth: Auth | None = None
    #: The namespace of the kubeconfig context or of the ServiceAccount, if known.
    namespace: str | None = None
    #: Where these came from, for logs ("in-cluster", "kubeconfig /path (context x)").
    source: str = ""

    async def authorization(self) -> str | None:
        return await self.auth.header() if self.auth is not None else None


def in_cluster(
    root: Path = SERVICE_ACCOUNT_DIR, environ: Mapping[str, str] | None = None
) -> Credentials:
    """The pod's ServiceAccount: ``$KUBERNETES_SERVICE_HOST``, its token file (re-read as
    it rotates), its CA and its namespace."""
    env = os.environ if environ is None else environ
    host, port = env.get("KUBERNETES_SERVICE_HOST"), env.get("KUBERNETES_SERVICE_PORT")
    if not host or not port:
        raise ConfigurationError("not in a pod: KUBERNETES_SERVICE_HOST/PORT are not set")
    token = root / "token"
    if not token.is_file():
        raise ConfigurationError(f"no ServiceAccount token at {token}")
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    ca = root / "ca.crt"
    namespace_file = root / "namespace"
    namespace = namespace_file.read_text().strip() if namespace_file.is_file() else None
    return Credentials(
        server=f"https://{host}:{port}",
        tls=Tls(ca_file=ca if ca.is_file() else None),
        auth=TokenFile(token),
        namespace=namespace or None,
        source="in-cluster ServiceAccount",
    )


# --- kubeconfig ------------------------------------------------------------------------------


class _Hyphenated(BaseModel):
    model_config = ConfigDict(
        extra="ignore", populate_by_name=True, alias_generator=lambda s: s.replace("_", "-")
    )


class Cluster(_Hyphenated):
    server: str
    certificate_authority: str | None = None
    certificate_authority_data: str | None = None
    insecure_skip_tls_verify: bool = False


class User(_Hyphenated):
    token: str | None = None
    token_file: str | None = Field(default=None, alias="tokenFile")
    client_certificate: str | None = None
    client_certificate_data: str | None = None
    client_key: str | None = None
    client_key_data: str | None = None
    username: str | None = None
    password: str | None = None
    exec_: ExecConfig | None = Field(default=None, alias="exec")
    auth_provider: dict[str, Any] | None = None


class Context(_Hyphenated):
    cluster: str
    user: str = ""
    namespace: str | None = None


class _NamedCluster(_Hyphenated):
    name: str
    cluster: Cluster


class _NamedUser(_Hyphenated):
    name: str
    user: User | None = None


class _NamedContext(_Hyphenated):
    name: str
    context: Context


class Kubeconfig(_Hyphenated):
    clusters: list[_NamedCluster] | None = None
    users: list[_NamedUser] | None = None
    contexts: list[_NamedContext] | None = None
    current_context: str | None = None


def _path(value: str | None, base: Path) -> Path | None:
    if not value:
        return None
    path = Path(value).expanduser()
    return path if path.is_absolute() else base / path


def _pem(data: str | None, what: str) -> str | None:
    if data is None:
        return None
    try:
        return base64.b64decode(data, validate=False).decode()
    except (ValueError, UnicodeDecodeError) as exc:
        raise ConfigurationError(f"kubeconfig {what} is not base64 PEM: {exc}") from None


def parse_kubeconfig(
    documents: Sequence[tuple[str, Path]], context: str | None = None
) -> Credentials:
    """Credentials from kubeconfig texts, each with the file it came from (relative paths
    are relative to it). Several files merge as ``$KUBECONFIG`` does: the first to define a
    name or the current context wins. ``context`` overrides the current context."""
    clusters: dict[str, tuple[Cluster, Path]] = {}
    users: dict[str, tuple[User, Path]] = {}
    contexts: dict[str, Context] = {}
    current: str | None = None
    for text, file in documents:
        try:
            raw = yaml.safe_load(text) or {}
            config = Kubeconfig.model_validate(raw)
        except (yaml.YAMLError, ValidationError) as exc:
            raise ConfigurationError(f"kubeconfig {file} is not valid: {exc}") from None
        base = file.parent
        for c in config.clusters or []:
            clusters.setdefault(c.name, (c.cluster, base))
        for u in config.users or []:
            users.setdefault(u.name, (u.user or User(), base))
        for x in config.contexts or []:
            contexts.setdefault(x.name, x.context)
        current = current or config.current_context
    files = ", ".join(str(f) for _, f in documents)
    name = context or current
    if not name:
        raise ConfigurationError(f"kubeconfig {files}: no current-context and none given")
    if name not in contexts:
        raise ConfigurationError(f"kubeconfig {files}: no context {name!r}")
    ctx = contexts[name]
    if ctx.cluster not in clusters:
        raise ConfigurationError(f"kubeconfig {files}: context {name!r} names no known cluster")
    cluster, cluster_base = clusters[ctx.cluster]
    user, user_base = users.get(ctx.user, (User(), cluster_base))
    if user.auth_provider is not None:
        raise ConfigurationError(
            f"kubeconfig user {ctx.user!r}: auth-provider is not supported (use an exec plugin)"
        )
    auth: Auth | None = None
    if user.token:
        auth = StaticAuth.bearer(user.token)
    elif user.token_file:
        auth = TokenFile(_path(user.token_file, user_base) or Path(user.token_file))
    elif user.exec_ is not None:
        auth = ExecAuth(user.exec_)
    elif user.username and user.password:
        auth = StaticAuth.basic(user.username, user.password)
    tls = Tls(
        ca_file=_path(cluster.certificate_authority, cluster_base),
        ca_data=_pem(cluster.certificate_authority_data, "certificate-authority-data"),
        insecure=cluster.insecure_skip_tls_verify,
        cert_file=_path(user.client_certificate, user_base),
        key_file=_path(user.client_key, user_base),
        cert_data=_pem(user.client_certificate_data, "client-certificate-data"),
        key_data=_pem(user.client_key_data, "client-key-data"),
    )
    return Credentials(
        server=cluster.server.rstrip("/"),
        tls=tls,
        auth=auth,
        namespace=ctx.namespace,
        source=f"kubeconfig {files} (context {name})",
    )


def kubeconfig_files(environ: Mapping[str, str] | None = None) -> list[Path]:
    """``$KUBECONFIG``'s files (a path list), else ``~/.kube/config``."""
    env = os.environ if environ is None else environ
    listed = [Path(p).expanduser() for p in env.get("KUBECONFIG", "").split(os.pathsep) if p]
    return listed or [Path("~/.kube/config").expanduser()]


def from_kubeconfig(
    path: str | Path | None = None,
    context: str | None = None,
    environ: Mapping[str, str] | None = None,
) -> Credentials:
    """Credentials from ``path``, else from ``$KUBECONFIG`` or ``~/.kube/config``."""
    files = [Path(path).expanduser()] if path is not None else kubeconfig_files(environ)
    documents = []
    for file in files:
        try:
            documents.append((file.read_text(), file))
        except FileNotFoundError:
            if path is not None:
                raise ConfigurationError(f"no kubeconfig at {file}") from None
        except OSError as exc:
            raise ConfigurationError(f"cannot read kubeconfig {file}: {exc}") from None
    if not documents:
        raise ConfigurationError(f"no kubeconfig at {', '.join(str(f) for f in files)}")
    return parse_kubeconfig(documents, context)


def load(
    kubeconfig: str | Path | None = None, environ: Mapping[str, str] | None = None
) -> Credentials:
    """``kubeconfig`` if given, else the pod's ServiceAccount when in a pod, else
    ``$KUBECONFIG`` or ``~/.kube/config``."""
    if kubeconfig is not None:
        return from_kubeconfig(kubeconfig, environ=environ)
    env = os.environ if environ is None else environ
    if env.get("KUBERNETES_SERVICE_HOST") and (SERVICE_ACCOUNT_DIR / "token").is_file():
        return in_cluster(environ=env)
    return from_kubeconfig(environ=env)
