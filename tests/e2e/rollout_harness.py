"""Helpers for the rollout end-to-end tests: genuinely good and bad models in the cluster's
model store, bounded client traffic with ground-truth feedback (the demo's generator), and a
recorder of everything the rollout did, for assertions and failure messages.

The models (trained here, in seconds, on scikit-learn's bundled data):

- ``bc-1.0.0``, ``bc-2.0.0``: the demo's stable and better breast-cancer models (logistic
  regression on raw, then standardised features);
- ``bc-stump``: a one-split decision tree, a quick first model (about 90 % accurate against
  2.0.0's 98 %): the A/B test's stable, which 2.0.0 truly beats;
- ``bc-slow``: k-nearest neighbours over 80,000 jittered training rows with a Minkowski
  p=1.5 distance, brute force: every prediction computes 80,000 fractional-power distances
  (tens of ms), a genuinely expensive estimator no accelerated path covers;
- ``bc-inverted``: logistic regression trained on inverted labels: it disagrees with stable
  on nearly every input;
- ``diabetes-1.0.0`` and ``diabetes-2.0.0``: ridge regressors of disease progression; 2.0.0
  was trained on the target in half units (a rescaling whose inverse was never shipped):
  it answers every request, fast, and only its error against the true values shows it;
- ``wine-1.0.0`` and ``wine-2.0.0``: a three-class wine model, and the same model exported
  with its label map cut short (the last class lost): every input it assigns to that class
  fails inside scikit-learn (IndexError, HTTP 500), the others are answered. A genuinely
  broken artifact that fails on part of the input domain; nothing is injected.
"""

from __future__ import annotations

import itertools
import json
import os
import secrets
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import yaml
from modelship_demo.models import train as train_demo_models
from modelship_demo.traffic import TrafficStats, background_traffic
from modelship_serving.artifacts import save_model
from operator_harness import (
    Env,
    Operator,
    pod_ready,
    prometheus_query,
    router_url,
    serving,
    until,
)

#: Marks of every rollout test module (``pytestmark = ROLLOUT_MARKS``).
ROLLOUT_MARKS = [
    pytest.mark.cluster,
    pytest.mark.slow,
    pytest.mark.usefixtures("root"),
]


SEED = 7

#: The token clients post feedback with (spec.access.tokenSecret), new for every test run;
#: the ``rollout`` fixture stores it in the Secret ACCESS_SECRET of each test's namespace.
ACCESS_TOKEN = secrets.token_hex(32)
ACCESS_SECRET = "rollout-access"
ACCESS: dict[str, Any] = {"tokenSecret": {"name": ACCESS_SECRET}}


def access_secret(token: str = ACCESS_TOKEN) -> dict[str, Any]:
    """The Secret a user creates with ``kubectl create secret generic``."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": ACCESS_SECRET},
        "type": "Opaque",
        "stringData": {"token": token},
    }


@dataclass(frozen=True)
class Stored:
    """A model in the cluster's model store, with the rows its traffic sends."""

    version: str
    uri: str
    sha256: str
    features: np.ndarray
    labels: np.ndarray
    path: Path

    def ref(self, version: str | None = None) -> dict[str, str]:
        return {"version": version or self.version, "uri": self.uri, "sha256": self.sha256}


@dataclass(frozen=True)
class Rollout:
    """What every rollout test starts from (the ``rollout`` fixture): the cluster, the operator
    installed from manifests, the stored models, and a fresh restricted namespace."""

    env: Env
    operator: Operator
    models: dict[str, Stored]
    ns: str


def train_models(
    local_cluster: Any, folder: Path, only: set[str] | None = None
) -> dict[str, Stored]:
    """The rollout tests' models (``only``: those keys), stored in the cluster's model store."""
    files: dict[str, tuple[str, Path, np.ndarray, np.ndarray]] = {}
    want = (lambda key: True) if only is None else only.__contains__
    if any(want(k) for k in ("1.0.0", "2.0.0", "3.0.0", "stump", "slow", "inverted")):
        files.update(_breast_cancer_models(folder, want))
    if want("wine-1.0.0") or want("wine-2.0.0"):
        files.update(_wine_models(folder))
    if want("diabetes-1.0.0") or want("diabetes-2.0.0"):
        files.update(_diabetes_models(folder))
    tag = uuid.uuid4().hex[:8]
    stored = {}
    for key, (version, path, features, labels) in files.items():
        if want(key):
            entry = local_cluster.add_model(path, name=f"rollout-{tag}-{path.name}")
            stored[key] = Stored(version, entry.uri, entry.sha256, features, labels, entry.path)
    return stored


Files = dict[str, tuple[str, Path, np.ndarray, np.ndarray]]


def _breast_cancer_models(folder: Path, want: Any) -> Files:
    from sklearn.datasets import load_breast_cancer
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import train_test_split
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.tree import DecisionTreeClassifier

    demo, holdout = train_demo_models(folder / "demo")
    files: Files = {m.version: (m.version, m.path, holdout.features, holdout.labels) for m in demo}
    # The demo's split, so the extra models learn from the same rows.
    X, y = load_breast_cancer(return_X_y=True)
    X_train, _, y_train, _ = train_test_split(X, y, test_size=0.4, random_state=SEED, stratify=y)
    extra: dict[str, Any] = {}
    if want("stump"):
        extra["stump"] = DecisionTreeClassifier(max_depth=1, random_state=0).fit(X_train, y_train)
    if want("slow"):
        rng = np.random.default_rng(SEED)
        picks = rng.integers(0, len(X_train), 80_000)
        jittered = X_train[picks] * rng.normal(1.0, 0.01, size=(len(picks), X.shape[1]))
        extra["slow"] = KNeighborsClassifier(n_neighbors=5, algorithm="brute", p=1.5).fit(
            jittered, y_train[picks]
        )
    if want("inverted"):
        extra["inverted"] = LogisticRegression(C=0.01, max_iter=10_000).fit(X_train, 1 - y_train)
    versions = {"stump": "0.9.0", "slow": "2.1.0", "inverted": "2.2.0"}
    for name, estimator in extra.items():
        path = folder / f"bc-{name}.skops"
        save_model(estimator, path)
        files[name] = (versions[name], path, holdout.features, holdout.labels)
    return files


def _diabetes_models(folder: Path) -> Files:
    from sklearn.datasets import load_diabetes
    from sklearn.linear_model import Ridge
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    X, y = load_diabetes(return_X_y=True)
    files: Files = {}
    for version, target in (("1.0.0", y), ("2.0.0", y / 2)):
        model = make_pipeline(StandardScaler(), Ridge(alpha=1.0)).fit(X, target)
        path = folder / f"diabetes-{version}.skops"
        save_model(model, path)
        files[f"diabetes-{version}"] = (version, path, X, y)
    return files


def _wine_models(folder: Path) -> Files:
    from sklearn.datasets import load_wine
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import RobustScaler

    Xw, yw = load_wine(return_X_y=True)
    wine = make_pipeline(RobustScaler(), LogisticRegression(max_iter=5000)).fit(Xw, yw)
    files: Files = {}
    path = folder / "wine-1.0.0.skops"
    save_model(wine, path)
    files["wine-1.0.0"] = ("1.0.0", path, Xw, yw)
    wine[-1].classes_ = wine[-1].classes_[:2]  # the export step that lost a class
    path = folder / "wine-2.0.0.skops"
    save_model(wine, path)
    files["wine-2.0.0"] = ("2.0.0", path, Xw, yw)
    return files


def model_deployment(name: str, model: dict[str, Any], strategy: dict[str, Any],
                     **spec: Any) -> dict[str, Any]:  # fmt: skip
    """The manifest a user keeps in git: ``model`` is the desired one; feedback is open
    to holders of ACCESS_TOKEN unless ``spec`` says otherwise."""
    return {
        "apiVersion": "modelship.io/v1alpha2",
        "kind": "ModelDeployment",
        "metadata": {"name": name},
        "spec": {"model": model, "strategy": strategy, "access": ACCESS, **spec},
    }


# --- deploying ----------------------------------------------------------------------------

STEPS = [20, 50, 80]


def strategy(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "type": "Canary",
        "steps": STEPS,
        "interval": "5s",
        "minSamples": 15,
        "maxFailedChecks": 1,
        "scaleDownDelay": "2s",
        "progressDeadline": "5m",
        "metrics": [{"name": "success-rate", "min": 99}, {"name": "latency-p99", "max": 0.25}],
    }
    return base | overrides


def deploy(env: Env, ns: str, name: str, stable: Stored, canary: Stored | None,
           canary_version: str | None = None, spec: dict[str, Any] | None = None,
           **strategy_overrides: Any) -> str:  # fmt: skip
    """Apply a ModelDeployment of ``stable`` (``strategy()`` with the overrides, ``spec``'s
    other fields) and wait until it serves; then, with ``canary``, apply the same manifest
    with the canary's model as spec.model, which starts its rollout (as a user's next commit
    does). Returns the router's URL once it answers."""
    rollout = strategy(**strategy_overrides)
    extra = spec or {}
    env.apply(ns, model_deployment(name, stable.ref(), rollout, **extra))
    wait_for(env, ns, name, lambda s: serving(s, stable.version) and any(
             c["type"] == "Ready" and c["status"] == "True" for c in s.get("conditions", [])),
             f"{name} to serve {stable.version}", 150)  # fmt: skip
    url = router_url(env, ns, name)
    # Ready pods are not yet a routable Service: wait for kube-proxy to route its address.
    row = {"instances": [stable.features[0].tolist()]}

    def answers() -> bool:
        try:
            response = httpx.post(f"{url}/v1/models/{name}:predict", json=row, timeout=2)
        except httpx.HTTPError:
            return False
        return response.status_code == 200

    until(answers, f"{name}'s router to answer", 30, lambda: explain(env, ns, name), 0.2)
    if canary is not None:
        candidate = canary.ref(canary_version)
        env.apply(ns, model_deployment(name, candidate, rollout, **extra))
        # Returns once the operator has taken the rollout up, so what a test records next
        # starts from it (never from the Idle before it).
        wait_for(env, ns, name, lambda s: ((s.get("rollout") or {}).get("candidate") or {})
                 .get("version") == candidate["version"] and s.get("phase") == "Progressing",
                 f"the rollout of {candidate['version']} to start", 60)  # fmt: skip
    return url


def served_sha256(env: Env, ns: str, name: str, variant: str) -> dict[str, str]:
    """sha256 each ready pod of VARIANT reports for the model it loaded, by pod name."""
    found = {}
    for pod in env.pods(ns, f"modelship.io/deployment={name},modelship.io/variant={variant}"):
        ready = any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions or [])
        if ready and not pod.metadata.deletion_timestamp:
            meta = httpx.get(f"http://{pod.status.pod_ip}:8080/v2/models/{name}", timeout=5)
            found[pod.metadata.name] = meta.json()["parameters"]["sha256"]
    return found


def last_result(status: dict[str, Any], metric: str) -> dict[str, Any]:
    found = [a for a in status.get("lastAnalysis", []) if a["metric"] == metric]
    assert found, status_yaml(status)
    return found[0]


# --- traffic -------------------------------------------------------------------------------


@contextmanager
def traffic(
    url: str,
    model: str,
    data: Stored,
    rate: float = 30,
    seconds: float = 240,
    token: str | None = ACCESS_TOKEN,
    force: str | None = None,
) -> Iterator[TrafficStats]:
    """The demo's bounded traffic (each prediction followed by its true label as feedback,
    sent with ``token``; every prediction asking for variant ``force`` when given) on its
    own thread and event loop; stops when the block ends or by itself."""
    with background_traffic(
        url,
        model,
        data.features,
        data.labels,
        rate=rate,
        seconds=seconds,
        token=token,
        force=force,
    ) as stats:
        yield stats


# --- what the rollout did ------------------------------------------------------------------


@dataclass
class Recorder:
    """Polls a ModelDeployment's status and its router's applied configuration every
    ``period`` seconds on a thread, keeping each change (for assertions and messages)."""

    env: Env
    namespace: str
    name: str
    period: float = 0.25
    statuses: list[tuple[float, dict[str, Any]]] = field(default_factory=list)
    router: list[tuple[float, int | None, dict[str, float]]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> Recorder:
        self._thread = threading.Thread(target=self._run, name="recorder", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _run(self) -> None:
        with httpx.Client(timeout=2) as http:
            while not self._stop.is_set():
                self._sample(http)
                self._stop.wait(self.period)

    def _sample(self, http: httpx.Client) -> None:
        try:
            obj = self.env.md(self.namespace, self.name) or {}
        except Exception:  # a failed poll is retried next period
            return
        status = obj.get("status") or {}
        now = time.monotonic()
        key = _key(status)
        if not self.statuses or _key(self.statuses[-1][1]) != key:
            self.statuses.append((now, status))
        # What every ready router pod applies, asked of each pod: the router has applied a
        # configuration once all its replicas have (they may differ for a moment).
        selector = f"modelship.io/deployment={self.name},app.kubernetes.io/component=router"
        try:
            pods = [p for p in self.env.pods(self.namespace, selector) if pod_ready(p)]
            applied = {
                (ready.get("generation"), json.dumps(ready.get("variants") or {}, sort_keys=True))
                for ready in (
                    http.get(f"http://{pod.status.pod_ip}:8080/readyz").json() for pod in pods
                )
            }
        except Exception:
            return
        if len(applied) != 1:
            return
        ((generation, variants),) = applied
        weights = {k: float(v["weight"]) for k, v in json.loads(variants).items()}
        if not self.router or self.router[-1][1:] != (generation, weights):
            self.router.append((now, generation, weights))

    @property
    def last(self) -> dict[str, Any]:
        return self.statuses[-1][1] if self.statuses else {}

    def phases(self) -> list[str]:
        seen: list[str] = []
        for _, status in self.statuses:
            phase = status.get("phase")
            if phase and (not seen or seen[-1] != phase):
                seen.append(phase)
        return seen

    def canary_weights(self) -> list[int]:
        """Canary weights in status, in order, without repeats."""
        seen: list[int] = []
        for _, status in self.statuses:
            weight = (status.get("traffic") or {}).get("canary")
            if weight is not None and (not seen or seen[-1] != weight):
                seen.append(weight)
        return seen

    def router_canary_weights(self) -> list[float]:
        seen: list[float] = []
        for _, _gen, weights in self.router:
            weight = weights.get("canary")
            if weight is not None and (not seen or seen[-1] != weight):
                seen.append(weight)
        return seen

    def timeline(self) -> str:
        if not self.statuses:
            return "(no status recorded)"
        t0 = self.statuses[0][0]
        lines = []
        for t, status in self.statuses:
            lines.append(f"{t - t0:7.1f}s {_key(status)}")
        for t, generation, weights in self.router:
            lines.append(f"{t - t0:7.1f}s router generation {generation}: {weights}")
        return "\n".join(sorted(lines))


def _key(status: dict[str, Any]) -> tuple[Any, ...]:
    traffic = status.get("traffic") or {}
    analysis = tuple(
        (a.get("metric"), a.get("verdict"), a.get("value")) for a in status.get("lastAnalysis", [])
    )
    rollout = status.get("rollout") or {}
    return (status.get("phase"), status.get("step"), traffic.get("canary"), traffic.get("mirror"),
            status.get("failedChecks"), status.get("consecutiveErrors"),
            rollout.get("lastAnalysisTime"), rollout.get("pauseReason"), analysis)  # fmt: skip


# --- waiting -------------------------------------------------------------------------------


def explain(env: Env, namespace: str, name: str, recorder: Recorder | None = None,
            stats: TrafficStats | None = None) -> str:  # fmt: skip
    """Everything useful when a rollout test fails: status, events, pods and their logs,
    the operator's log, the rollout's timeline and what the client saw."""
    parts = [env.describe(namespace, name)]
    try:
        events = sorted(env.events(namespace, name), key=lambda e: str(e.last_timestamp))
        parts.append("--- events:\n" + "\n".join(
            f"{e.type} {e.reason}: {e.message}" for e in events))  # fmt: skip
    except Exception as exc:
        parts.append(f"(events: {exc!r})")
    parts.append(scrape_health(namespace))
    if recorder is not None:
        parts.append("--- timeline:\n" + recorder.timeline())
    if stats is not None:
        parts.append(
            f"--- client: answers {dict(stats.answers)} errors {dict(stats.errors)}"
            f" abandoned at the end {stats.abandoned}"
        )
    return "\n".join(parts)


def scrape_health(namespace: str) -> str:
    """What Prometheus scrapes in ``namespace`` (each target's health, last scrape and
    error) and since when it has run: analyses see only what it scraped."""
    from modelship_cluster.node import prometheus_url

    try:
        answer = httpx.get(f"{prometheus_url()}/api/v1/targets", timeout=10).json()
        runtime = httpx.get(f"{prometheus_url()}/api/v1/status/runtimeinfo", timeout=10).json()
    except Exception as exc:  # diagnostics only: say why there are none
        return f"--- prometheus: {exc!r}"
    rows = [
        f"{t['labels'].get('pod')} {t['labels'].get('job')}: {t.get('health')}, last scrape "
        f"{t.get('lastScrape')} ({t.get('lastScrapeDuration', 0):.3f}s) {t.get('lastError') or ''}"
        for t in answer["data"]["activeTargets"]
        if t["labels"].get("namespace") == namespace
    ]
    started = runtime.get("data", {}).get("startTime", "unknown")
    return f"--- prometheus (started {started}) targets in {namespace}:\n" + (
        "\n".join(rows) or "(none)"
    )


def wait_for(env: Env, namespace: str, name: str, predicate: Any, what: str, limit: float,
             recorder: Recorder | None = None,
             stats: TrafficStats | None = None) -> dict[str, Any]:  # fmt: skip
    """The status once ``predicate(status)`` holds (bounded), else fail with everything."""

    def check() -> dict[str, Any] | None:
        status = ((env.md(namespace, name) or {}).get("status")) or {}
        return status if predicate(status) else None

    found: dict[str, Any] = until(
        check, what, limit, lambda: explain(env, namespace, name, recorder, stats), 0.2
    )
    return found


def phase_is(*phases: str) -> Any:
    return lambda status: status.get("phase") in phases


def reasons(env: Env, namespace: str, name: str) -> list[str]:
    events = sorted(env.events(namespace, name), key=lambda e: str(e.first_timestamp))
    return [e.reason for e in events if e.source.component == "modelship-operator"]


def event_count(env: Env, namespace: str, name: str, reason: str) -> int:
    """Times the operator announced ``reason`` (Events are aggregated by count)."""
    return sum(
        (e.count or 1) for e in env.events(namespace, name)
        if e.reason == reason and e.source.component == "modelship-operator"
    )  # fmt: skip


def every_transition_evented_once(env: Any, ns: str, name: str) -> str:
    """What is wrong with the Events of the transitions ``status.transitions`` records ("" if
    nothing): each must have exactly one Event, named ``<name>.<uid[:8]>.<seq>``, with its
    reason, and ``lastEventedTransition`` must have reached the newest."""
    body = env.md(ns, name)
    status, uid = body["status"], body["metadata"]["uid"]
    transitions = status.get("transitions") or []
    if not transitions:
        return "no transitions recorded"
    if status.get("lastEventedTransition") != transitions[-1]["seq"]:
        return f"lastEventedTransition {status.get('lastEventedTransition')} behind {transitions}"
    ours = {e.metadata.name: e for e in env.events(ns, name)
            if e.source.component == "modelship-operator"}  # fmt: skip
    for t in transitions:
        event = ours.get(f"{name}.{uid[:8]}.{t['seq']}")
        if event is None:
            return f"no Event for transition {t}"
        if event.reason != t["reason"] or (event.count or 1) != 1:
            return f"Event {event.metadata.name}: {event.reason} x{event.count} for {t}"
    return ""


def steps_never_go_back(rec: Recorder) -> bool:
    """Recorded steps only ever increase within the rollout (no restart, no replay)."""
    steps = [s.get("step") for _, s in rec.statuses if s.get("step") is not None]
    return all(a <= b for a, b in itertools.pairwise(steps))


def status_yaml(status: dict[str, Any]) -> str:
    return str(yaml.safe_dump(status))


def kubectl_modelship(local_cluster: Any, namespace: str, *args: str) -> str:
    """Run ``kubectl modelship ...`` as a user would (the plugin found on PATH)."""
    import subprocess
    import sys

    from modelship_cluster.binaries import toolset

    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}:{env['PATH']}"
    env["KUBECONFIG"] = str(local_cluster.kubeconfig)
    result = subprocess.run(
        [str(toolset().kubectl), "modelship", "-n", namespace, *args],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, f"kubectl modelship {' '.join(args)}: {result.stderr}"
    return result.stdout


# --- the dashboard -------------------------------------------------------------------------

DASHBOARD = Path(__file__).resolve().parents[2] / "charts/modelship/files/dashboards/modelship.json"


def dashboard_queries(namespace: str, name: str) -> dict[str, str]:
    """Every query of the chart's Grafana dashboard for one ModelDeployment, by panel title,
    with Grafana's variables as a user's dashboard fills them in (rate windows wide enough
    for the operator's 30 s scrape)."""
    board = json.loads(DASHBOARD.read_text())
    values = {"$namespace": namespace, "$deployment": name, "$__rate_interval": "2m",
              "$accuracy_window": "5m"}  # fmt: skip
    queries = {}
    for panel in board["panels"]:
        for i, target in enumerate(panel.get("targets", [])):
            query = target["expr"]
            for variable, value in values.items():
                query = query.replace(variable, value)
            queries[f"{panel['title']} #{i + 1}"] = query
    return queries


def dashboard_without_data(namespace: str, name: str) -> list[str]:
    """The dashboard's queries that return no series from the cluster's Prometheus now."""
    return [
        f"{title}: {query}"
        for title, query in dashboard_queries(namespace, name).items()
        if not prometheus_query(query)
    ]
