"""`kubectl apply` of a ModelDeployment to its first 200 answer, on the local cluster's node.

Side by side in the same run with a reference: the very serving Deployment and Service the
operator renders (modelship_operator.render), applied directly with kubectl. The
difference is what the operator adds: its reaction to the resource, the router's pod and
the extra hop. The model is a LogisticRegression trained here and stored in the cluster's
model store; the images are the ones `make images` built, warm in containerd.

Needs the local cluster (started if it is not up, as root) and the operator installed with
the chart (installed here if missing). Prints the time to the first 200 of each repetition
and the ratio of the medians. Run: `.venv/bin/python bench/run_apply_to_answer.py [--runs N]`.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from modelship_cluster import binaries
from modelship_cluster.cluster import Cluster
from modelship_operator.render import service, serving_deployment, serving_selector, state_from_spec
from modelship_operator.settings import OperatorSettings
from modelship_operator.spec import ModelDeployment
from modelship_serving.artifacts import save_model
from sklearn.linear_model import LogisticRegression

REPO = Path(__file__).resolve().parents[1]
ROW = [0.5, -1.0, 2.0, 0.0]


def kubectl(cluster: Cluster, *args: str, input: str | None = None) -> str:
    cmd = [str(binaries.toolset().kubectl), f"--kubeconfig={cluster.kubeconfig}", *args]
    result = subprocess.run(cmd, input=input, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"kubectl {' '.join(args)}: {result.stderr.strip()}")
    return result.stdout


def install_operator(cluster: Cluster) -> None:
    helm = binaries.toolset().helm
    subprocess.run(
        [str(helm), "upgrade", "--install", "modelship", str(REPO / "charts" / "modelship"),
         "--namespace", "modelship-system", "--create-namespace",
         "--kubeconfig", str(cluster.kubeconfig), "--wait", "--timeout", "3m"],
        check=True, stdout=subprocess.DEVNULL,
    )  # fmt: skip


def cluster_ip(cluster: Cluster, namespace: str, name: str, deadline: float) -> str:
    while time.monotonic() < deadline:
        out = kubectl(cluster, "get", "svc", name, "-n", namespace, "-o", "json",
                      "--ignore-not-found")  # fmt: skip
        if out.strip():
            return str(json.loads(out)["spec"]["clusterIP"])
        time.sleep(0.05)
    raise TimeoutError(f"Service {namespace}/{name} never appeared")


def first_200(url: str, deadline: float) -> None:
    body = {"instances": [ROW]}
    with httpx.Client(timeout=2.0) as client:
        while time.monotonic() < deadline:
            try:
                if client.post(url, json=body).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.05)
    raise TimeoutError(f"no 200 from {url}")


def namespace(cluster: Cluster) -> str:
    name = f"bench-apply-{uuid.uuid4().hex[:6]}"
    labels = {"pod-security.kubernetes.io/enforce": "restricted"}
    doc = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels}}
    kubectl(cluster, "apply", "-f", "-", input=json.dumps(doc))
    return name


def resource(name: str, ns: str, uri: str, sha256: str) -> dict[str, Any]:
    return {
        "apiVersion": "modelship.io/v1alpha2",
        "kind": "ModelDeployment",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"model": {"name": name, "version": "1.0.0", "uri": uri, "sha256": sha256},
                 "replicas": 1},
    }  # fmt: skip


def time_model_deployment(cluster: Cluster, uri: str, sha256: str) -> float:
    ns = namespace(cluster)
    try:
        manifest = json.dumps(resource("churn", ns, uri, sha256))
        started = time.monotonic()
        deadline = started + 120
        kubectl(cluster, "apply", "-f", "-", input=manifest)
        ip = cluster_ip(cluster, ns, "churn-router", deadline)
        first_200(f"http://{ip}/v1/models/churn:predict", deadline)
        return time.monotonic() - started
    finally:
        kubectl(cluster, "delete", "namespace", ns, "--wait=false")


def time_plain_deployment(cluster: Cluster, uri: str, sha256: str) -> float:
    """The operator's own rendering of the stable Deployment and Service, applied directly."""
    ns = namespace(cluster)
    try:
        md = ModelDeployment.model_validate(resource("churn", ns, uri, sha256))
        plan = state_from_spec(md).stable
        settings = OperatorSettings()
        objects = [
            serving_deployment(md, plan, settings),
            service(md, "churn-stable", {"app": "churn"}, serving_selector(md, "stable")),
        ]
        for obj in objects:
            obj["metadata"].pop("ownerReferences", None)  # no ModelDeployment owns them here
        manifest = json.dumps({"apiVersion": "v1", "kind": "List", "items": objects})
        started = time.monotonic()
        deadline = started + 120
        kubectl(cluster, "apply", "-f", "-", input=manifest)
        ip = cluster_ip(cluster, ns, "churn-stable", deadline)
        first_200(f"http://{ip}/v1/models/churn:predict", deadline)
        return time.monotonic() - started
    finally:
        kubectl(cluster, "delete", "namespace", ns, "--wait=false")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3, help="repetitions of each (default 3)")
    args = parser.parse_args()
    cluster = Cluster()
    cluster.up()
    install_operator(cluster)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, len(ROW)))
    model = LogisticRegression().fit(x, (x[:, 0] + x[:, 2] > 0).astype(int))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"bench-apply-{uuid.uuid4().hex[:6]}.skops"
        save_model(model, path)
        stored = cluster.add_model(path)
    # One untimed round of each, so both start from the same warm node.
    time_plain_deployment(cluster, stored.uri, stored.sha256)
    time_model_deployment(cluster, stored.uri, stored.sha256)
    plain, operated = [], []
    for i in range(args.runs):
        plain.append(time_plain_deployment(cluster, stored.uri, stored.sha256))
        operated.append(time_model_deployment(cluster, stored.uri, stored.sha256))
        print(f"run {i + 1}: Deployment+Service {plain[-1]:.2f}s, "
              f"ModelDeployment {operated[-1]:.2f}s", flush=True)  # fmt: skip
    p, m = statistics.median(plain), statistics.median(operated)
    print(f"apply to first 200, median of {args.runs}: serving Deployment applied directly "
          f"{p:.2f}s, ModelDeployment through the operator and router {m:.2f}s "
          f"({m / p:.2f}x)")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
