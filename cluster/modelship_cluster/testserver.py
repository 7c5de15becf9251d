"""The `modelship/testserver` test image: a small HTTP server for the local cluster's tests.

Listens on 0.0.0.0:$PORT (default 8080). Endpoints:
  GET  /          JSON: pod name, namespace and IP (from the env), hostname
  GET  /healthz   200 "ok" (liveness)
  GET  /readyz    200 "ready", or 503 after POST /fail-ready until POST /recover
  GET  /metrics   Prometheus text: testserver_requests_total, testserver_ready
  GET  /fetch?url=URL  fetches URL from inside the pod; JSON {status, body} or {error}
  POST /exit?code=N    exits the process with code N (a crash on demand)
"""

from __future__ import annotations

import json
import os
import socket
import sys
import threading
import urllib.error
import urllib.parse
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class State:
    def __init__(self) -> None:
        self.ready = True
        self.requests: dict[str, int] = {}
        self.lock = threading.Lock()


STATE = State()


class Handler(BaseHTTPRequestHandler):
    server_version = "modelship-testserver"

    def _send(self, code: int, body: str | bytes, ctype: str = "text/plain") -> None:
        data = body.encode() if isinstance(body, str) else body
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _count(self, path: str) -> None:
        with STATE.lock:
            STATE.requests[path] = STATE.requests.get(path, 0) + 1

    def do_GET(self) -> None:
        url = urllib.parse.urlsplit(self.path)
        self._count(url.path)
        if url.path == "/healthz":
            self._send(200, "ok")
        elif url.path == "/readyz":
            self._send(200, "ready") if STATE.ready else self._send(503, "not ready")
        elif url.path == "/metrics":
            self._send(200, metrics(), "text/plain; version=0.0.4")
        elif url.path == "/fetch":
            target = urllib.parse.parse_qs(url.query).get("url", [""])[0]
            self._send(200, json.dumps(fetch(target)), "application/json")
        elif url.path == "/":
            info = {
                "pod": os.environ.get("POD_NAME", ""),
                "namespace": os.environ.get("POD_NAMESPACE", ""),
                "ip": os.environ.get("POD_IP", ""),
                "hostname": socket.gethostname(),
            }
            self._send(200, json.dumps(info), "application/json")
        else:
            self._send(404, "not found")

    def do_POST(self) -> None:
        url = urllib.parse.urlsplit(self.path)
        self._count(url.path)
        if url.path == "/fail-ready":
            STATE.ready = False
            self._send(200, "readiness now fails")
        elif url.path == "/recover":
            STATE.ready = True
            self._send(200, "ready again")
        elif url.path == "/exit":
            code = int(urllib.parse.parse_qs(url.query).get("code", ["1"])[0])
            self._send(200, f"exiting with {code}")
            self.wfile.flush()
            os._exit(code)
        else:
            self._send(404, "not found")

    def log_message(self, format: str, *args: object) -> None:
        sys.stdout.write(f"{self.address_string()} {format % args}\n")
        sys.stdout.flush()


def metrics() -> str:
    lines = [
        "# HELP testserver_requests_total Requests served, by path.",
        "# TYPE testserver_requests_total counter",
    ]
    with STATE.lock:
        for path, count in sorted(STATE.requests.items()):
            lines.append(f'testserver_requests_total{{path="{path}"}} {count}')
    lines += [
        "# HELP testserver_ready 1 while /readyz answers 200.",
        "# TYPE testserver_ready gauge",
        f"testserver_ready {int(STATE.ready)}",
    ]
    return "\n".join(lines) + "\n"


def fetch(url: str) -> dict[str, object]:
    if not url.startswith(("http://", "https://")):
        return {"error": "url must be http(s)"}
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return {"status": response.status, "body": response.read(4096).decode(errors="replace")}
    except urllib.error.HTTPError as error:
        return {"status": error.code, "body": error.read(4096).decode(errors="replace")}
    except OSError as error:
        return {"error": str(error)}


def main() -> None:
    port = int(os.environ.get("PORT", "8080"))
    server = ThreadingHTTPServer(("0.0.0.0", port), Handler)
    print(f"testserver listening on 0.0.0.0:{port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
