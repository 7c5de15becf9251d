"""Helpers for the operator's end-to-end tests on the local cluster.

The operator is installed as a user would install it (``manifests/``: CRD, namespace, the
committed RBAC, the operator Deployment running the image ``modelship/operator:<version>``
under its own ServiceAccount, and ``manifests/monitoring/``: the PodMonitors through which
the test bed's Prometheus Operator configures scraping), models are real scikit-learn
estimators put in the cluster's model store, and everything is observed through the API,
the pods' logs and HTTP.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import yaml
from kubernetes import client
from modelship_operator.kinds import CHILD_KINDS, selector
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parents[2]
CRD = ROOT / "manifests/crds/modeldeployments.yaml"
RBAC = ROOT / "manifests/rbac/operator.yaml"
OPERATOR_DIR = ROOT / "manifests/operator"
#: The chart's PodMonitors and PrometheusRule: the test bed's Prometheus Operator turns
#: them into the scrape configuration, as on a kube-prometheus-stack cluster.
MONITORING = ROOT / "manifests/monitoring/prometheus-operator.yaml"
OPERATOR_NS = "modelship-system"
OPERATOR = "modelship-operator"
LEASE = "modelship-operator"
METRICS_PORT = 8081

Kubectl = Callable[..., subprocess.CompletedProcess[str]]


def serving(status: dict[str, Any], version: str) -> bool:
    """Whether status records ``version`` as the model stable serves on every pod."""
    return ((status.get("rolledOut") or {}).get("current") or {}).get("version") == version


def until(
    check: Callable[[], Any],
    what: str,
    limit: float = 90.0,
    diagnose: Callable[[], str] | None = None,
    interval: float = 0.5,
) -> Any:
    """Poll ``check`` until it returns something truthy (returned); fail with diagnostics."""
    deadline = time.monotonic() + limit
    last_error = ""
    while True:
        try:
            value = check()
        except (OSError, httpx.HTTPError, client.ApiException, KeyError, TypeError) as exc:
            value, last_error = None, repr(exc)
        if value:
            return value
        if time.monotonic() >= deadline:
            break
        time.sleep(interval)
    details = diagnose() if diagnose is not None else ""
    raise AssertionError(
        f"timed out after {limit:.0f}s waiting for {what}"
        + (f" (last error: {last_error})" if last_error else "")
        + (f"\n{details}" if details else "")
    )


# --- models --------------------------------------------------------------------------------


@dataclass
class Model:
    version: str
    uri: str
    sha256: str
    estimator: Any
    path: Path

    def ref(self) -> dict[str, str]:
        return {"version": self.version, "uri": self.uri, "sha256": self.sha256}


def training_data() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import make_classification

    X, y = make_classification(n_samples=300, n_features=4, random_state=7)
    return X, y


# --- the cluster ---------------------------------------------------------------------------


@dataclass
class Env:
    """The cluster as the tests see it: API clients, kubectl, pod logs."""

    api: Any
    kubectl: Kubectl
    state_dir: Path
    core: client.CoreV1Api = field(init=False)
    apps: client.AppsV1Api = field(init=False)
    custom: client.CustomObjectsApi = field(init=False)
    coordination: client.CoordinationV1Api = field(init=False)

    def __post_init__(self) -> None:
        self.core = client.CoreV1Api(self.api)
        self.apps = client.AppsV1Api(self.api)
        self.custom = client.CustomObjectsApi(self.api)
        self.coordination = client.CoordinationV1Api(self.api)

    # resources ---------------------------------------------------------------------------

    def apply(self, namespace: str | None, *docs: dict[str, Any], check: bool = True) -> Any:
        args = ["apply", "-f", "-"] if namespace is None else ["apply", "-n", namespace, "-f", "-"]
        return self.kubectl(*args, input=yaml.safe_dump_all(docs), check=check)

    def md(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            obj: dict[str, Any] = self.custom.get_namespaced_custom_object(
                "modelship.io", "v1alpha2", namespace, "modeldeployments", name
            )
        except client.ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return obj

    def condition(self, namespace: str, name: str, kind: str) -> dict[str, Any] | None:
        obj = self.md(namespace, name) or {}
        for condition in (obj.get("status") or {}).get("conditions", []):
            if condition["type"] == kind:
                return dict(condition)
        return None

    def pods(self, namespace: str, label_selector: str) -> list[Any]:
        return list(self.core.list_namespaced_pod(namespace, label_selector=label_selector).items)

    def _get(self, namespace: str, resources: str, label_selector: str) -> list[dict[str, Any]]:
        out = self.kubectl("-n", namespace, "get", resources, "-l", label_selector, "-o", "json")
        items: list[dict[str, Any]] = json.loads(out.stdout).get("items", [])
        return items

    def child_objects(self, namespace: str, name: str) -> list[dict[str, Any]]:
        """Every object of the managed kinds labelled as ``name``'s (as API dicts)."""
        plurals = ",".join(f"{k.plural}.{k.group}" if k.group else k.plural for k in CHILD_KINDS)
        return self._get(namespace, plurals, selector(name))

    def pod_dicts(self, namespace: str, label_selector: str) -> list[dict[str, Any]]:
        return self._get(namespace, "pods", label_selector)

    def children(self, namespace: str, name: str) -> list[tuple[str, str]]:
        """(kind, name) of every object the operator manages for ``name``, and its pods."""
        objects = self.child_objects(namespace, name) + self.pod_dicts(namespace, selector(name))
        return sorted((o["kind"], o["metadata"]["name"]) for o in objects)

    def events(self, namespace: str, name: str) -> list[Any]:
        return list(
            self.core.list_namespaced_event(
                namespace, field_selector=f"involvedObject.name={name}"
            ).items
        )

    # logs and diagnostics ------------------------------------------------------------------

    def logs(self, namespace: str, pod: str, previous: bool = False, tail: int = 40) -> str:
        args = ["-n", namespace, "logs", pod, "--all-containers", f"--tail={tail}"]
        if previous:
            args.append("--previous")
        result = self.kubectl(*args, check=False, timeout=30)
        text = result.stdout or result.stderr
        return "\n".join(text.splitlines()[-tail:])

    def describe(self, namespace: str, name: str | None = None, operator: bool = True) -> str:
        """Status, pods and log tails, for assertion messages."""
        out = []
        try:
            if name is not None:
                obj = self.md(namespace, name)
                status = (obj or {}).get("status")
                out.append(f"--- {namespace}/{name} status:\n{yaml.safe_dump(status)}")
            for pod in self.core.list_namespaced_pod(namespace).items:
                out.append(f"--- pod {pod.metadata.name}: {pod_summary(pod)}")
                out.append(self.logs(namespace, pod.metadata.name, tail=15))
            if operator:
                for pod in self.core.list_namespaced_pod(
                    OPERATOR_NS, label_selector=f"app.kubernetes.io/name={OPERATOR}"
                ).items:
                    out.append(f"--- operator pod {pod.metadata.name}: {pod_summary(pod)}")
                    if any(s.restart_count for s in pod.status.container_statuses or []):
                        out.append("(before the last restart:)")
                        out.append(self.logs(OPERATOR_NS, pod.metadata.name, True, tail=15))
                    out.append(self.logs(OPERATOR_NS, pod.metadata.name, tail=25))
        except Exception as exc:  # diagnostics must never hide the real failure
            out.append(f"(diagnostics failed: {exc!r})")
        return "\n".join(out)


def pod_summary(pod: Any) -> str:
    statuses = pod.status.container_statuses or []
    parts = [
        f"{s.name} ready={s.ready} restarts={s.restart_count} state={_state(s.state)}"
        for s in statuses
    ]
    return f"phase={pod.status.phase} ip={pod.status.pod_ip} " + "; ".join(parts)


def _state(state: Any) -> str:
    if state is None:
        return "?"
    if state.waiting:
        return f"waiting({state.waiting.reason}: {(state.waiting.message or '')[:200]})"
    if state.terminated:
        return f"terminated({state.terminated.reason}, {state.terminated.exit_code})"
    return "running"


def deployment_settled(dep: Any) -> bool:
    """The Deployment's controller saw its spec, and every pod it wants runs that
    template and is ready (no more, no fewer)."""
    status = dep.status
    return (
        (status.observed_generation or 0) >= dep.metadata.generation
        and (status.updated_replicas or 0) == dep.spec.replicas
        and (status.ready_replicas or 0) == dep.spec.replicas
        and (status.replicas or 0) == dep.spec.replicas
    )


def pod_ready(pod: Any) -> bool:
    return (
        any(c.type == "Ready" and c.status == "True" for c in (pod.status.conditions or []))
        and pod.metadata.deletion_timestamp is None
    )


# --- the operator --------------------------------------------------------------------------


@dataclass
class Operator:
    """The operator installed from manifests/ into modelship-system.

    One test module at a time may have it installed on a cluster: ``install`` waits for an
    exclusive lock (next to the cluster's state folder) that ``uninstall``, or the end of the
    test process, releases; test sessions running at once take turns instead of removing
    each other's operator.
    """

    env: Env
    created_namespace: bool = False
    _lock: Any = None

    def install(self) -> None:
        """Apply the manifests (the CRD stays afterwards: other tests may use it)."""
        import fcntl

        env = self.env
        lock_path = env.state_dir.parent.parent / f".{env.state_dir.parent.name}-operator.lock"
        self._lock = open(lock_path, "w")  # noqa: SIM115 - held until uninstall
        fcntl.flock(self._lock, fcntl.LOCK_EX)
        try:
            self._install()
        except BaseException:
            self._release()  # a failed install must not block the next module
            raise

    def _release(self) -> None:
        if self._lock is not None:
            self._lock.close()  # releases the flock
            self._lock = None

    def _install(self) -> None:
        env = self.env
        env.kubectl("apply", "-f", str(CRD))
        env.kubectl("wait", "--for=condition=Established", "--timeout=60s",
                    "crd/modeldeployments.modelship.io")  # fmt: skip

        def settled() -> bool:  # not in the middle of being deleted (an earlier module's)
            found = env.kubectl("get", "namespace", OPERATOR_NS, "-o",
                                "jsonpath={.status.phase}", check=False)  # fmt: skip
            return found.returncode != 0 or found.stdout != "Terminating"

        until(settled, f"namespace {OPERATOR_NS} to finish terminating", 120)
        existed = env.kubectl("get", "namespace", OPERATOR_NS, check=False).returncode == 0
        self.created_namespace = not existed
        deployment_existed = (
            env.kubectl("-n", OPERATOR_NS, "get", "deployment", OPERATOR, check=False).returncode
            == 0
        )
        env.kubectl("apply", "-f", str(OPERATOR_DIR / "namespace.yaml"))
        env.kubectl("apply", "-f", str(RBAC))
        env.kubectl("apply", "-f", str(OPERATOR_DIR))
        env.kubectl("apply", "-f", str(MONITORING))
        if deployment_existed:
            # Left by an earlier run: restart it so the pods run the code under test.
            env.kubectl("-n", OPERATOR_NS, "rollout", "restart", f"deployment/{OPERATOR}")
        self.wait_available()

    def wait_available(self, limit: float = 120.0) -> None:
        def available() -> bool:
            return deployment_settled(
                self.env.apps.read_namespaced_deployment(OPERATOR, OPERATOR_NS)
            )

        until(available, "the operator Deployment to be available", limit,
              lambda: self.env.describe(OPERATOR_NS, operator=False))  # fmt: skip
        until(self.leader, "an operator replica to hold the Lease", 60, self.describe)

    def uninstall(self) -> None:
        env = self.env
        try:
            env.kubectl("delete", "-f", str(OPERATOR_DIR / "deployment.yaml"),
                        "-f", str(OPERATOR_DIR / "service.yaml"), "-f", str(MONITORING),
                        "--ignore-not-found",
                        "--wait=true", timeout=120)  # fmt: skip
            if self.created_namespace:
                env.kubectl("delete", "namespace", OPERATOR_NS, "--wait=true", check=False,
                            timeout=120)  # fmt: skip
        finally:
            self._release()

    def pods(self) -> list[Any]:
        return [
            p
            for p in self.env.pods(OPERATOR_NS, f"app.kubernetes.io/name={OPERATOR}")
            if p.metadata.deletion_timestamp is None
        ]

    def leader(self) -> str | None:
        """The pod holding the Lease, if it is one of the running replicas."""
        try:
            lease = self.env.coordination.read_namespaced_lease(LEASE, OPERATOR_NS)
        except client.ApiException:
            return None
        holder = lease.spec.holder_identity
        names = {p.metadata.name for p in self.pods() if pod_ready(p)}
        return holder if holder in names else None

    def pod(self, name: str) -> Any:
        return self.env.core.read_namespaced_pod(name, OPERATOR_NS)

    def metrics(self, pod_name: str) -> Metrics:
        """Scrape /metrics of one replica by its pod IP."""
        ip = self.pod(pod_name).status.pod_ip
        response = httpx.get(f"http://{ip}:{METRICS_PORT}/metrics", timeout=10)
        response.raise_for_status()
        return Metrics(response.text)

    def healthz(self, pod_name: str) -> int:
        ip = self.pod(pod_name).status.pod_ip
        return httpx.get(f"http://{ip}:{METRICS_PORT}/healthz", timeout=10).status_code

    def process_id(self, pod_name: str) -> int:
        """Host PID of the operator container's process (from the node's runtime)."""
        from modelship_cluster import node

        (status,) = self.pod(pod_name).status.container_statuses
        return node.container_pid(status.container_id)

    def kill(self, pod_name: str) -> None:
        os.kill(self.process_id(pod_name), signal.SIGKILL)

    def restarts(self, pod_name: str) -> int:
        statuses = self.pod(pod_name).status.container_statuses or []
        return sum(s.restart_count for s in statuses)

    def describe(self) -> str:
        return self.env.describe(OPERATOR_NS, operator=False)


class Metrics:
    """Samples of one scrape."""

    def __init__(self, text: str) -> None:
        self.samples = [
            (s.name, dict(s.labels), s.value)
            for family in text_string_to_metric_families(text)
            for s in family.samples
        ]

    def value(self, name: str, **labels: str) -> float | None:
        """Sum of the samples of ``name`` whose labels include ``labels`` (None: no sample)."""
        found = [
            v for n, lab, v in self.samples
            if n == name and all(lab.get(k) == val for k, val in labels.items())
        ]  # fmt: skip
        return sum(found) if found else None


def set_prometheus_replicas(env: Env, replicas: int, limit: float = 180) -> None:
    """Scale the test bed's Prometheus (its Prometheus resource, as a user of the Prometheus
    Operator would) and wait until that many of its pods are ready (0: all gone)."""
    from modelship_cluster import monitoring

    patch = json.dumps({"spec": {"replicas": replicas}})
    env.kubectl("-n", monitoring.NAMESPACE, "patch", "prometheus", monitoring.PROMETHEUS,
                "--type=merge", "-p", patch)  # fmt: skip
    selector = ",".join(f"{k}={v}" for k, v in monitoring.PROMETHEUS_POD_LABELS.items())

    def settled() -> bool:
        pods = env.pods(monitoring.NAMESPACE, selector)
        if replicas == 0:
            return not pods
        ready = [p for p in pods if p.metadata.deletion_timestamp is None and pod_ready(p)]
        return len(ready) == replicas and bool(prometheus_query("vector(1)"))

    until(settled, f"{replicas} Prometheus pod(s) ready", limit,
          lambda: env.describe(monitoring.NAMESPACE, operator=False))  # fmt: skip


def prometheus_query(query: str) -> list[dict[str, Any]]:
    from modelship_cluster.node import prometheus_url

    url = f"{prometheus_url()}/api/v1/query?" + urllib.parse.urlencode({"query": query})
    # Raises for a non-2xx answer (a starting Prometheus says 503 in plain text): polling
    # callers (until) retry on httpx errors.
    answer = httpx.get(url, timeout=10).raise_for_status().json()
    result: list[dict[str, Any]] = answer["data"]["result"]
    return result


# --- clients of a model ----------------------------------------------------------------------


def router_url(env: Env, namespace: str, name: str) -> str:
    svc = env.core.read_namespaced_service(f"{name}-router", namespace)
    return f"http://{svc.spec.cluster_ip}:{svc.spec.ports[0].port}"


def predict(base: str, model: str, rows: np.ndarray) -> tuple[int, list[Any], str]:
    """(status, predictions, x-model-version) of one V1 request."""
    response = httpx.post(
        f"{base}/v1/models/{model}:predict", json={"instances": rows.tolist()}, timeout=10
    )
    body = response.json() if response.status_code == 200 else {}
    return (
        response.status_code,
        body.get("predictions", []),
        response.headers.get("x-model-version", ""),
    )


@dataclass
class LoadResult:
    statuses: dict[int, int] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    first_errors: list[str] = field(default_factory=list)
    versions: list[str] = field(default_factory=list)
    requests: int = 0

    def failures(self) -> dict[str, Any]:
        bad: dict[str, Any] = {
            str(code): n for code, n in self.statuses.items() if not 200 <= code < 300
        }
        for error in self.errors:
            bad[error] = bad.get(error, 0) + 1
        if self.first_errors:
            bad["first errors"] = self.first_errors
        return bad


class ContinuousClient:
    """Sends predictions in a loop until stopped, at most ``max_requests`` or ``max_seconds``,
    recording every status code, transport error and answering version."""

    def __init__(
        self, base: str, model: str, rows: np.ndarray, max_seconds: float = 180,
        max_requests: int = 50_000,
    ) -> None:  # fmt: skip
        self.base, self.model, self.rows = base, model, rows
        self.max_seconds, self.max_requests = max_seconds, max_requests
        self.result = LoadResult()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> ContinuousClient:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()

    def stop(self) -> LoadResult:
        self._stop.set()
        self._thread.join(timeout=30)
        return self.result

    def _run(self) -> None:
        deadline = time.monotonic() + self.max_seconds
        body = json.dumps({"instances": self.rows.tolist()})
        headers = {"content-type": "application/json"}
        url = f"{self.base}/v1/models/{self.model}:predict"
        with httpx.Client(timeout=10) as http:
            while (
                not self._stop.is_set()
                and time.monotonic() < deadline
                and self.result.requests < self.max_requests
            ):
                self.result.requests += 1
                try:
                    response = http.post(url, content=body, headers=headers)
                except httpx.HTTPError as exc:
                    self.result.errors.append(type(exc).__name__)
                    if len(self.result.first_errors) < 3:
                        stamp = time.strftime("%H:%M:%S")
                        self.result.first_errors.append(f"{stamp} {exc!r}")
                    time.sleep(0.05)
                    continue
                code = response.status_code
                self.result.statuses[code] = self.result.statuses.get(code, 0) + 1
                self.result.versions.append(response.headers.get("x-model-version", ""))
                time.sleep(0.005)

    def latest_versions(self, n: int) -> list[str]:
        return self.result.versions[-n:]


def model_deployment(name: str, model: Model, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "modelship.io/v1alpha2",
        "kind": "ModelDeployment",
        "metadata": {"name": name},
        "spec": {"model": model.ref(), **spec},
    }


def label_restricted(env: Env, namespace: str) -> None:
    env.kubectl("label", "namespace", namespace, "--overwrite",
                "pod-security.kubernetes.io/enforce=restricted",
                "pod-security.kubernetes.io/enforce-version=latest")  # fmt: skip


def subset(expected: Any, actual: Any, path: str = "") -> list[str]:
    """Where ``expected`` is not contained in ``actual`` (dicts by key, lists by index)."""
    if isinstance(expected, dict):
        if not isinstance(actual, dict):
            return [f"{path}: expected a mapping, found {actual!r}"]
        problems = []
        for key, value in expected.items():
            problems += subset(value, actual.get(key), f"{path}.{key}")
        return problems
    if isinstance(expected, list):
        if not isinstance(actual, list) or len(actual) != len(expected):
            return [f"{path}: expected {expected!r}, found {actual!r}"]
        problems = []
        for i, (e, a) in enumerate(zip(expected, actual, strict=True)):
            problems += subset(e, a, f"{path}[{i}]")
        return problems
    return [] if expected == actual else [f"{path}: expected {expected!r}, found {actual!r}"]


def names(pods: Iterable[Any]) -> list[str]:
    return sorted(p.metadata.name for p in pods)
