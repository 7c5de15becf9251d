"""A stand-in for the Kubernetes API server, for the faults a real one will not make on demand.

A real kube-apiserver answers 410 Gone only once etcd compacted past a watch's version,
fails with a 500 only when something is broken, and never lets a test rewrite the token
it accepts between two requests. This stdlib HTTP/1.1 server speaks the same wire format
the client reads (JSON bodies, ``Status`` objects on failure, watches as chunked JSON
lines with BOOKMARK and ERROR events) and answers from a script the test writes, so each
of those faults happens exactly when the test wants it. Every request is recorded
(method, path, query, headers, body) for the test to check what the client sent. It is a
named stand-in, not a mock: the client under test talks real HTTP to it over loopback,
optionally with TLS and client certificates.
"""

from __future__ import annotations

import json
import ssl
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit


@dataclass
class Recorded:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes
    #: The client certificate's subject common name, on a TLS server that asks for one.
    client_cn: str | None = None

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Reply:
    """A plain answer: ``status`` and a JSON ``body`` (or raw ``text``)."""

    status: int = 200
    body: Any = None
    text: str | None = None


@dataclass
class Stream:
    """A watch answer: chunked lines. An item is an event (a dict, sent as one JSON line),
    raw bytes (sent as they are), or a float (a pause of that many seconds). The stream
    ends (terminating chunk) after the last item, unless ``hold`` is set: then it stays
    open until the event is set or the client goes away."""

    items: list[dict[str, Any] | bytes | float] = field(default_factory=list)
    hold: threading.Event | None = None


Answer = Reply | Stream
Script = Callable[[Recorded], Answer]


def status(code: int, reason: str, message: str) -> dict[str, Any]:
    """A ``Status`` object as the API sends it."""
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": message, "reason": reason, "code": code}  # fmt: skip


def event(kind: str, name: str, version: str, **extra: Any) -> dict[str, Any]:
    """A watch event about a ConfigMap ``name`` at ``version``."""
    meta = {"name": name, "namespace": "ns", "resourceVersion": version}
    obj = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, **extra}
    return {"type": kind, "object": obj}


def bookmark(version: str) -> dict[str, Any]:
    return {"type": "BOOKMARK",
            "object": {"kind": "ConfigMap", "apiVersion": "v1",
                       "metadata": {"resourceVersion": version}}}  # fmt: skip


def expired(message: str = "too old resource version: 1 (5)") -> dict[str, Any]:
    """The ERROR event a real API server sends mid-watch when the version was compacted."""
    return {"type": "ERROR", "object": status(410, "Expired", message)}


def listing(version: str, *names: str, cont: str | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"resourceVersion": version}
    if cont:
        meta["continue"] = cont
    return {"kind": "ConfigMapList", "apiVersion": "v1", "metadata": meta,
            "items": [{"metadata": {"name": n, "namespace": "ns", "resourceVersion": version}}
                      for n in names]}  # fmt: skip


class Scripted:
    """Answers in order from per-route queues; the last answer of a queue repeats."""

    def __init__(self) -> None:
        self.routes: dict[tuple[str, bool], deque[Answer]] = {}

    def on(self, path: str, *answers: Answer, watch: bool = False) -> None:
        self.routes[(path, watch)] = deque(answers)

    def __call__(self, request: Recorded) -> Answer:
        queue = self.routes.get((request.path, request.query.get("watch") == "true"))
        if not queue:
            return Reply(404, status(404, "NotFound", f"nothing scripted for {request.path}"))
        return queue.popleft() if len(queue) > 1 else queue[0]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _handle(self) -> None:
        url = urlsplit(self.path)
        length = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(length) if length else b""
        cn = None
        if isinstance(self.connection, ssl.SSLSocket):
            peer = self.connection.getpeercert()
            for rdn in (peer or {}).get("subject", ()):
                for key, value in rdn:
                    if key == "commonName":
                        cn = value
        request = Recorded(
            self.command,
            url.path,
            dict(parse_qsl(url.query)),
            {k.lower(): v for k, v in self.headers.items()},
            body,
            cn,
        )
        self.server.requests.append(request)
        answer = self.server.script(request)
        if isinstance(answer, Reply):
            self._reply(answer)
        else:
            self._stream(answer)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _handle

    def _reply(self, reply: Reply) -> None:
        if reply.text is not None:
            data, ctype = reply.text.encode(), "text/plain"
        else:
            data, ctype = (
                json.dumps(reply.body if reply.body is not None else {}).encode(),
                "application/json",
            )
        self.send_response(reply.status)
        self.send_header("content-type", ctype)
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()

    def _stream(self, stream: Stream) -> None:
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("transfer-encoding", "chunked")
        self.end_headers()
        self.wfile.flush()
        try:
            for item in stream.items:
                if isinstance(item, float):
                    time.sleep(item)
                elif isinstance(item, bytes):
                    self._chunk(item)
                else:
                    self._chunk(json.dumps(item).encode() + b"\n")
            if stream.hold is not None:
                while not stream.hold.wait(0.05) and not self.server.stopping.is_set():
                    pass
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, script: Script) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.script = script
        self.requests: list[Recorded] = []
        self.stopping = threading.Event()


class ApiStandIn:
    """The server in a thread: ``url``, ``requests``, ``script``; a context manager."""

    def __init__(
        self,
        script: Script | None = None,
        *,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.scripted = Scripted()
        self._server = _Server(script or self.scripted)
        if tls is not None:
            self._server.socket = tls.wrap_socket(self._server.socket, server_side=True)
        host, port = self._server.server_address[:2]
        scheme = "https" if tls is not None else "http"
        self.url = f"{scheme}://{host!s}:{port}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def requests(self) -> list[Recorded]:
        return self._server.requests

    def matching(self, path: str, watch: bool | None = None) -> list[Recorded]:
        return [
            r
            for r in self.requests
            if r.path == path and (watch is None or (r.query.get("watch") == "true") == watch)
        ]

    def __enter__(self) -> ApiStandIn:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._server.stopping.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)


# --- certificates for the TLS tests ---------------------------------------------------------


@dataclass(frozen=True)
class Pki:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path

    def server_context(self) -> ssl.SSLContext:
        """TLS that proves the server and requires a client certificate from the CA."""
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(self.server_cert, self.server_key)
        ctx.load_verify_locations(self.ca)
        ctx.verify_mode = ssl.CERT_REQUIRED
        return ctx


def make_pki(root: Path, client_cn: str = "system:serviceaccount:ns:tester") -> Pki:
    """A CA, a server certificate for 127.0.0.1 and a client certificate, as PEM files,
    issued the way the local cluster issues its own (modelship_cluster.pki)."""
    from modelship_cluster import pki

    ca = pki.create_ca(root, name="test-ca")
    server = pki.issue(ca, root, "server", "apiserver", ip_addresses=("127.0.0.1",), server=True)
    client = pki.issue(ca, root, "client", client_cn, client=True)
    return Pki(
        ca=ca.cert,
        server_cert=server.cert,
        server_key=server.key,
        client_cert=client.cert,
        client_key=client.key,
    )
