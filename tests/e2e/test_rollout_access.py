"""Feedback and variant forcing are open only to holders of spec.access's token, and a
shadow candidate serves no client, end to end on the local cluster.

The token is a Secret the test creates as a user does; the kubelet mounts it in the router
and serving pods. Every refusal is what a client sees through the router, and a serving
pod called directly (bypassing the router, as anything in the cluster can) refuses too.
Rotating the Secret rotates the token without a restart.
"""

from __future__ import annotations

import secrets
import time
from typing import Any

import httpx
from operator_harness import until
from rollout_harness import (
    ACCESS_TOKEN,
    ROLLOUT_MARKS,
    Rollout,
    access_secret,
    deploy,
    explain,
    wait_for,
)

pytestmark = ROLLOUT_MARKS

TOKEN = "x-modelship-token"
VARIANT = "x-modelship-variant"
REPLICA = "x-modelship-replica"


def predict(url: str, name: str, row: list[float], **headers: str) -> httpx.Response:
    return httpx.post(
        f"{url}/v1/models/{name}:predict", json={"instances": [row]}, headers=headers, timeout=10
    )


def feedback(url: str, name: str, answer: httpx.Response, **headers: str) -> httpx.Response:
    """Post the label of ``answer``'s prediction with ``headers`` (the prediction's variant
    and replica are sent unless ``headers`` say otherwise)."""
    sent = {VARIANT: answer.headers[VARIANT], REPLICA: answer.headers[REPLICA], **headers}
    sent = {k: v for k, v in sent.items() if v}
    label = answer.json()["predictions"][0]
    body = {"feedback": [{"request_id": answer.headers["x-request-id"], "label": label}]}
    return httpx.post(f"{url}/v1/models/{name}:feedback", json=body, headers=sent, timeout=10)


def error(response: httpx.Response) -> str:
    try:
        body: Any = response.json()
    except ValueError:
        return response.text
    return str(body.get("error", body)) if isinstance(body, dict) else str(body)


def test_feedback_and_forcing_need_the_token_and_a_shadow_serves_no_client(
    rollout: Rollout,
) -> None:
    env, models, ns = rollout.env, rollout.models, rollout.ns
    v1, v2 = models["1.0.0"], models["2.0.0"]
    row = v1.features[0].tolist()
    # A long interval: the candidate stays a shadow for the whole test.
    shadow = {"type": "Shadow", "interval": "5m", "progressDeadline": "10m",
              "shadow": {"mirrorPercent": 100}}  # fmt: skip
    url = deploy(env, ns, "guard", v1, v2, **shadow)
    why = lambda: explain(env, ns, "guard")  # noqa: E731

    def mirrored() -> bool:
        ready = httpx.get(f"{url}/readyz", timeout=2).json()
        return "canary" in ready.get("variants", {})

    wait_for(env, ns, "guard", lambda s: (s.get("traffic") or {}).get("mirror") == 100,
             "the shadow to take its mirrored copies", 120)  # fmt: skip
    until(mirrored, "the router to apply the shadow's configuration", 60, why, 0.2)

    answer = predict(url, "guard", row)
    assert answer.status_code == 200 and answer.headers[VARIANT] == "stable", why()

    # Spoofed feedback: no token, a wrong one, and the serving pod called directly.
    refused = feedback(url, "guard", answer)
    assert refused.status_code == 403, (refused.status_code, refused.text, why())
    assert "needs a valid x-modelship-token" in error(refused), why()
    anonymous = feedback(url, "guard", answer, **{VARIANT: "", REPLICA: ""})
    assert anonymous.status_code == 401, (anonymous.status_code, anonymous.text, why())
    assert "x-modelship-token" in error(anonymous), why()
    wrong = feedback(url, "guard", answer, **{TOKEN: secrets.token_hex(32)})
    assert wrong.status_code == 403, (wrong.status_code, wrong.text, why())
    (pod,) = [p for p in env.pods(ns, "modelship.io/deployment=guard,modelship.io/variant=stable")
              if not p.metadata.deletion_timestamp]  # fmt: skip
    direct = feedback(f"http://{pod.status.pod_ip}:8080", "guard", answer, **{VARIANT: ""})
    assert direct.status_code == 401, (direct.status_code, direct.text, why())

    # The token holder's feedback is joined to its prediction.
    accepted = feedback(url, "guard", answer, **{TOKEN: ACCESS_TOKEN})
    assert accepted.status_code == 200, (accepted.status_code, accepted.text, why())
    assert accepted.json()["matched"] == 1, accepted.text

    # The shadow serves no client: naming it needs the token (strangers learn nothing of
    # the variants), and even with the token it is refused.
    for headers, reason in (
        ({VARIANT: "canary"}, "needs a valid x-modelship-token"),
        ({VARIANT: "canary", TOKEN: ACCESS_TOKEN}, "variant canary is a shadow"),
    ):
        forced = predict(url, "guard", row, **headers)
        assert forced.status_code == 403, (headers, forced.status_code, forced.text, why())
        assert reason in error(forced), why()
    forced_stable = predict(url, "guard", row, **{VARIANT: "stable", TOKEN: ACCESS_TOKEN})
    assert forced_stable.status_code == 200, why()

    # Rotation: a new token in the Secret opens feedback in the pods, with no restart.
    new = secrets.token_hex(32)
    env.apply(ns, access_secret(new))
    started = time.monotonic()

    def rotated() -> bool:
        fresh = predict(url, "guard", row)
        return feedback(url, "guard", fresh, **{TOKEN: new}).status_code == 200

    until(rotated, "the rotated token to be accepted", 180, why, 2)
    print(f"token rotated in the pods {time.monotonic() - started:.0f} s after the Secret")
    # Router and serving pods re-read the file within a second of the kubelet's change.
    until(lambda: feedback(url, "guard", predict(url, "guard", row),
                           **{TOKEN: ACCESS_TOKEN}).status_code == 403,
          "the old token to be refused", 10, why, 0.5)  # fmt: skip
    restarts = [
        c.restart_count
        for p in env.pods(ns, "modelship.io/deployment=guard")
        for c in p.status.container_statuses or []
    ]
    assert restarts and not any(restarts), (restarts, why())
