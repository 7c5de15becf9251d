"""A real Prometheus (Debian's binary) scraping small real metrics servers, for analysis tests.

Each :class:`Target` is a prometheus-client registry served over HTTP on 127.0.0.1 by a
thread of the test process, with the serving contract's metric and label names
(``modelship_serving.contract``); Prometheus scrapes every target once a second with only
the labels any Kubernetes scrape adds (``namespace``, ``pod``): no relabelled pod labels,
as on a user's Prometheus. Tests change the counters and wait (by polling, never by a
fixed sleep) until Prometheus has seen the change.
"""

from __future__ import annotations

import base64
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from wsgiref.simple_server import WSGIServer, make_server

import yaml
from modelship_cluster.binaries import toolset
from modelship_cluster.ports import free_port
from modelship_serving import contract as c
from prometheus_client import CollectorRegistry, Counter, Histogram, make_wsgi_app
from prometheus_client.exposition import ThreadingWSGIServer, _SilentHandler

SERVING_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


@dataclass
class Target:
    """One scrape target: a registry with the serving pod's series, served on a free port."""

    name: str
    labels: Mapping[str, str]
    metric_labels: Mapping[str, str]
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)
    port: int = 0
    server: WSGIServer | None = None

    def __post_init__(self) -> None:
        base = list(self.metric_labels)
        r = self.registry
        self.requests = Counter(c.REQUESTS, "requests", [*base, c.HANDLER, c.CODE], registry=r)
        self.duration = Histogram(
            c.REQUEST_DURATION_SECONDS,
            "latency",
            [*base, c.HANDLER],
            buckets=SERVING_LATENCY_BUCKETS,
            registry=r,
        )
        self.feedback = Counter(c.FEEDBACK, "feedback", base, registry=r)
        self.feedback_correct = Counter(c.FEEDBACK_CORRECT, "correct feedback", base, registry=r)
        self.units = Counter(c.FEEDBACK_UNITS, "units with feedback", base, registry=r)
        self.units_correct = Counter(c.FEEDBACK_UNITS_CORRECT, "units right", base, registry=r)
        self.predictions = Counter(c.PREDICTIONS, "predictions", [*base, c.CLASS], registry=r)

    def start(self) -> None:
        self.port = free_port()
        app = make_wsgi_app(self.registry)
        self.server = make_server(
            "127.0.0.1", self.port, app, ThreadingWSGIServer, handler_class=_SilentHandler
        )
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None

    # -- traffic ---------------------------------------------------------------------------

    def serve(
        self,
        count: int,
        code: int = 200,
        seconds: float = 0.003,
        endpoint: str = "v2_infer",
        **labels: str,
    ) -> None:
        values = {**self.metric_labels, **labels}
        self.requests.labels(**values, **{c.HANDLER: endpoint, c.CODE: str(code)}).inc(count)
        hist = self.duration.labels(**values, **{c.HANDLER: endpoint})
        for _ in range(count):
            hist.observe(seconds)

    def feedback_rows(
        self,
        rows: int,
        correct: int,
        units: int | None = None,
        units_correct: int | None = None,
        **labels: str,
    ) -> None:
        """Feedback rows (and of them, right); ``units`` (users, or requests without a
        sticky key) counted once each, by default one per row."""
        values = {**self.metric_labels, **labels}
        self.feedback.labels(**values).inc(rows)
        self.feedback_correct.labels(**values).inc(correct)
        self.units.labels(**values).inc(rows if units is None else units)
        self.units_correct.labels(**values).inc(correct if units_correct is None else units_correct)

    def predict_classes(self, counts: Mapping[str, int], **labels: str) -> None:
        values = {**self.metric_labels, **labels}
        for name, count in counts.items():
            self.predictions.labels(**values, **{c.CLASS: name}).inc(count)


class PrometheusProcess:
    """Prometheus (the one `make binaries` builds) on 127.0.0.1 with a temp TSDB,
    scraping ``targets`` every 1s."""

    def __init__(
        self,
        workdir: Path,
        targets: list[Target],
        *,
        basic_auth: tuple[str, str, str] | None = None,
        route_prefix: str = "",
    ) -> None:
        """BASIC_AUTH: (user, password, bcrypt hash of it) Prometheus' own --web.config.file
        requires of every request; ROUTE_PREFIX: the path its API lives under
        (--web.route-prefix)."""
        self.workdir = workdir
        self.targets = targets
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.basic_auth = basic_auth
        self.route_prefix = route_prefix.rstrip("/")
        #: Authorization header of the test's own requests (readiness, polling queries).
        self.auth_header: str | None = None
        if basic_auth is not None:
            pair = f"{basic_auth[0]}:{basic_auth[1]}".encode()
            self.auth_header = "Basic " + base64.b64encode(pair).decode()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{self.route_prefix}"

    def config(self) -> dict[str, Any]:
        return {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "scrape_configs": [
                {
                    "job_name": "pods",
                    "scrape_interval": "1s",
                    "scrape_timeout": "1s",
                    "static_configs": [
                        {"targets": [f"127.0.0.1:{t.port}"], "labels": dict(t.labels)}
                        for t in self.targets
                    ],
                }
            ],
        }

    def start(self) -> None:
        binary = str(toolset().path("prometheus"))  # `make binaries` builds it
        config = self.workdir / "prometheus.yml"
        config.write_text(yaml.safe_dump(self.config()))
        data = self.workdir / "data"
        data.mkdir(exist_ok=True)
        extra = []
        if self.basic_auth is not None:
            web = self.workdir / "web.yml"
            user, _, hashed = self.basic_auth
            web.write_text(yaml.safe_dump({"basic_auth_users": {user: hashed}}))
            extra.append(f"--web.config.file={web}")
        if self.route_prefix:
            extra.append(f"--web.route-prefix={self.route_prefix}")
            extra.append(f"--web.external-url=http://127.0.0.1:{self.port}{self.route_prefix}")
        log = open(self.workdir / "prometheus.log", "ab")  # noqa: SIM115 - owned by the process
        self.proc = subprocess.Popen(
            [
                binary,
                f"--config.file={config}",
                f"--storage.tsdb.path={data}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--storage.tsdb.retention.time=1h",
                "--log.level=warn",
                *extra,
            ],
            stdout=log,
            stderr=log,
        )
        log.close()
        self.wait(lambda: self._get("/-/ready") == 200, "ready", 60)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def _get(self, path: str) -> int:
        try:
            with urllib.request.urlopen(self._request(self.url + path), timeout=2) as response:
                return int(response.status)
        except (OSError, urllib.error.URLError):
            return 0

    def _request(self, url: str) -> urllib.request.Request:
        headers = {"Authorization": self.auth_header} if self.auth_header else {}
        return urllib.request.Request(url, headers=headers)

    def wait(self, ready: Callable[[], bool], what: str, timeout: float = 60) -> None:
        """Poll ``ready`` until true (a bound on waiting, not an assertion on speed)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                log = (self.workdir / "prometheus.log").read_text(errors="replace")
                raise RuntimeError(f"prometheus exited: {log[-2000:]}")
            if ready():
                return
            time.sleep(0.2)
        raise TimeoutError(f"prometheus: {what} not reached in {timeout:.0f}s")

    def instant(self, promql: str) -> list[dict[str, Any]]:
        """Synchronous query for the test's own polling (not the code under test)."""
        import json
        import urllib.parse

        query = urllib.parse.urlencode({"query": promql})
        try:
            with urllib.request.urlopen(
                self._request(f"{self.url}/api/v1/query?{query}"), timeout=2
            ) as r:
                payload = json.loads(r.read())
        except (OSError, urllib.error.URLError):
            return []
        result = payload.get("data", {}).get("result", [])
        return result if isinstance(result, list) else []

    def wait_value(
        self, promql: str, predicate: Callable[[float], bool], timeout: float = 60
    ) -> None:
        def check() -> bool:
            result = self.instant(promql)
            return len(result) == 1 and predicate(float(result[0]["value"][1]))

        self.wait(check, f"{promql} matching", timeout)


def start_all(workdir: Path, targets: list[Target], **options: Any) -> Iterator[PrometheusProcess]:
    """Start the targets and Prometheus (OPTIONS: see PrometheusProcess); yield; stop
    everything (for a pytest fixture)."""
    for target in targets:
        target.start()
    prom = PrometheusProcess(workdir, targets, **options)
    try:
        prom.start()
        prom.wait_value('count(up{job="pods"} == 1)', lambda v: v == len(targets))
        yield prom
    finally:
        prom.stop()
        for target in targets:
            target.stop()
