"""Scale to zero end to end: with autoscaling.minReplicas 0, an idle stable runs no pod,
and the next request starts one through the router, which holds it until the pod is
ready. The idleness is the router's request counter in the test bed's Prometheus; the wake
is the router's own patch of the Deployment's scale subresource, on its ServiceAccount.
"""

from __future__ import annotations

import concurrent.futures
import time
from typing import Any

import httpx
from operator_harness import until
from rollout_harness import ROLLOUT_MARKS, Rollout, deploy, explain, reasons

pytestmark = ROLLOUT_MARKS

NAME = "sleepy"
IDLE = 20
SPEC = {
    "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}},
    "autoscaling": {
        "minReplicas": 0,
        "maxReplicas": 2,
        "scaleToZeroAfter": f"{IDLE}s",
        "activationTimeout": "60s",
    },
}
#: Requests sent at once at a stable with no pod: each must be answered by the pod it wakes.
BURST = 8


def test_an_idle_stable_scales_to_zero_and_the_next_requests_wake_it(rollout: Rollout) -> None:
    env, models, ns = rollout.env, rollout.models, rollout.ns
    v1 = models["1.0.0"]
    base = deploy(env, ns, NAME, v1, None, spec=SPEC)
    why = lambda: explain(env, ns, NAME)  # noqa: E731
    stable = f"modelship.io/deployment={NAME},modelship.io/variant=stable"

    def desired() -> int:
        return int(env.apps.read_namespaced_deployment(f"{NAME}-stable", ns).spec.replicas or 0)

    def ready() -> dict[str, Any]:
        status = (env.md(ns, NAME) or {}).get("status") or {}
        found = [c for c in status.get("conditions", []) if c["type"] == "Ready"]
        return found[0] if found else {}

    # Idle since deploy's last request: scaled to zero once the window has passed.
    idle_from = time.monotonic()
    until(lambda: desired() == 0 and not env.pods(ns, stable), "stable to be scaled to zero",
          IDLE + 150, why, 1)  # fmt: skip
    slept_after = time.monotonic() - idle_from
    condition = ready()
    assert condition.get("status") == "True" and condition.get("reason") == "ScaledToZero", why()

    # A burst at a stable with no pod: held by the router, all answered by the woken pod.
    row = {"instances": [v1.features[0].tolist()]}

    def predict(_: int) -> tuple[int, float, str]:
        sent = time.monotonic()
        answer = httpx.post(f"{base}/v1/models/{NAME}:predict", json=row, timeout=90)
        return answer.status_code, time.monotonic() - sent, answer.text

    with concurrent.futures.ThreadPoolExecutor(BURST) as pool:
        answers = list(pool.map(predict, range(BURST)))
    assert [code for code, _, _ in answers] == [200] * BURST, (answers, why())
    cold = max(seconds for _, seconds, _ in answers)
    assert desired() >= 1, why()
    metrics = router_metrics(env, ns)
    assert 'modelship_router_activations_total{deployment="sleepy",outcome="activated"' in (
        metrics
    ), metrics

    # Just woken, it is not put back to sleep before a whole idle window has passed...
    woken = time.monotonic()
    until(lambda: ready().get("reason") == "Available", "Ready to say Available again", 60, why)
    time.sleep(max(0.0, IDLE / 2 - (time.monotonic() - woken)))
    assert desired() >= 1, why()
    # ...and is once it has.
    until(lambda: desired() == 0, "stable to be scaled to zero again", IDLE + 150, why, 1)
    assert {"ScaledToZero", "ScaledFromZero"} <= set(reasons(env, ns, NAME)), why()
    print(
        f"scale to zero: idle -> 0 pods {slept_after:.0f} s after the last request "
        f"(scaleToZeroAfter {IDLE}s); from zero, {BURST} requests answered by the woken pod "
        f"in {cold:.2f} s at most (cold start); back to 0 "
        f"{time.monotonic() - woken:.0f} s after"
    )


def router_metrics(env: Any, ns: str) -> str:
    """Every router pod's /metrics, joined."""
    texts = []
    for pod in env.pods(ns, f"modelship.io/deployment={NAME},app.kubernetes.io/component=router"):
        if pod.status.pod_ip and not pod.metadata.deletion_timestamp:
            texts.append(httpx.get(f"http://{pod.status.pod_ip}:8080/metrics", timeout=5).text)
    return "\n".join(texts)
