"""The NetworkPolicies the operator renders, enforced on the node by the test bed's policy
agent (kube-router's controller): a pod anywhere but the model's router cannot reach its
serving pods, the router still answers clients from any namespace, and Prometheus still
scrapes.

The clients are pods (the serving image's Python, run as a one-off command, restricted
profile) in the model's namespace and in another one, each trying every address with a
short timeout and printing what happened as JSON. The test on the host cannot serve as the
client: the node's own connections are never subject to NetworkPolicy.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

from modelship_cluster.images import SERVING
from modelship_cluster.pytest_plugin import create_namespace
from modelship_operator.render import container_security_context, pod_security_context
from operator_harness import label_restricted, prometheus_query, until
from rollout_harness import ROLLOUT_MARKS, Rollout, deploy, explain

pytestmark = ROLLOUT_MARKS

NAME = "fenced"

#: Tries each URL (GET) with a 3 s connect timeout, twice, and prints {url: status|error}.
PROBE = """
import json, sys, urllib.request, urllib.error
seen = {}
for url in sys.argv[1:]:
    for attempt in range(2):
        try:
            with urllib.request.urlopen(url, timeout=3) as answer:
                seen[url] = answer.status
            break
        except urllib.error.HTTPError as error:
            seen[url] = error.code
            break
        except Exception as error:
            seen[url] = type(error).__name__ + ": " + str(error)
print(json.dumps(seen))
"""


def probe_pod(name: str, urls: list[str]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": "netpol-probe"}},
        "spec": {
            "restartPolicy": "Never",
            "securityContext": pod_security_context(),
            "automountServiceAccountToken": False,
            "containers": [
                {
                    "name": "probe",
                    "image": SERVING,
                    "imagePullPolicy": "Never",
                    "command": ["python", "-c", PROBE, *urls],
                    "securityContext": container_security_context(),
                    "resources": {"requests": {"cpu": "10m", "memory": "32Mi"}},
                }
            ],
        },
    }


def run_probe(rollout: Rollout, namespace: str, urls: list[str]) -> dict[str, Any]:
    env = rollout.env
    name = f"probe-{uuid.uuid4().hex[:6]}"
    env.apply(namespace, probe_pod(name, urls))

    def finished() -> Any:
        pod = env.core.read_namespaced_pod(name, namespace)
        return pod if pod.status.phase in ("Succeeded", "Failed") else None

    pod = until(finished, f"probe pod {namespace}/{name} to finish", 90,
                lambda: env.describe(namespace, operator=False), 1)  # fmt: skip
    log = env.logs(namespace, name, tail=5)
    assert pod.status.phase == "Succeeded", log
    seen: dict[str, Any] = json.loads(log.strip().splitlines()[-1])
    return seen


def refused(result: Any) -> bool:
    """A connection the policy refused: rejected (the agent answers a reset or an ICMP
    unreachable) or dropped (it times out). The same pods answer the router meanwhile, so
    neither means the server is down."""
    text = result.lower() if isinstance(result, str) else ""
    return "connection refused" in text or "timed out" in text


def test_only_the_router_reaches_serving_pods_and_any_client_reaches_the_router(
    rollout: Rollout,
) -> None:
    env, ns = rollout.env, rollout.ns
    v1 = rollout.models["1.0.0"]
    deploy(env, ns, NAME, v1, None, spec={"router": {"replicas": 1}})
    why = lambda: explain(env, ns, NAME)  # noqa: E731
    kinds = {(o["kind"], o["metadata"]["name"]) for o in env.child_objects(ns, NAME)}
    assert {("NetworkPolicy", f"{NAME}-serving"), ("NetworkPolicy", f"{NAME}-router")} <= kinds

    (pod,) = [p for p in env.pods(ns, f"modelship.io/deployment={NAME},modelship.io/variant=stable")
              if not p.metadata.deletion_timestamp]  # fmt: skip
    router = f"http://{NAME}-router.{ns}.svc/readyz"
    service = f"http://{NAME}-stable.{ns}.svc/readyz"
    direct = f"http://{pod.status.pod_ip}:8080/readyz"
    grpc = f"http://{pod.status.pod_ip}:8081/"

    other = create_namespace(env.core, f"netpol-other-{uuid.uuid4().hex[:6]}")
    try:
        label_restricted(env, other)
        started = time.monotonic()
        elsewhere = run_probe(rollout, other, [router, service, direct, grpc])
        beside = run_probe(rollout, ns, [router, service, direct])
        print(f"probes from {other} and {ns} ({time.monotonic() - started:.0f} s): "
              f"{json.dumps(elsewhere)} {json.dumps(beside)}")  # fmt: skip
    finally:
        env.core.delete_namespace(other, propagation_policy="Background")

    # The router admits clients from any namespace; it reaches the serving pods itself.
    assert elsewhere[router] == 200, (elsewhere, why())
    assert beside[router] == 200, (beside, why())
    # Nothing else reaches a serving pod: not through its Service, not at its address, not
    # on its gRPC port; not even from a pod in the model's own namespace.
    for seen in (elsewhere, beside):
        for url in (service, direct):
            assert refused(seen[url]), (url, seen, why())
    assert refused(elsewhere[grpc]), (elsewhere, why())

    # Prometheus (in monitoring, labelled as the Prometheus Operator labels it) still scrapes.
    def scraped() -> bool:
        up = prometheus_query(f'up{{namespace="{ns}",pod="{pod.metadata.name}"}}')
        return bool(up) and all(float(s["value"][1]) == 1 for s in up)

    until(scraped, f"Prometheus to scrape {pod.metadata.name} through the policy", 60, why, 2)
