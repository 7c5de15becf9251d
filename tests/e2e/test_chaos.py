"""Chaos: a whole canary rollout under constant client load while its parts fail at random
moments, on the local cluster.

One rollout of a better model (it deserves promotion) runs through many steps while a
chaos thread causes, in a random order (seed printed; MODELSHIP_CHAOS_SEED replays one) and
after a random pause each, every fault below, waiting for the system to be whole again
before the next:

* the operator SIGKILLed in its pod, 10 times (the kubelet restarts it);
* a router pod deleted (two run; the deleted one drains);
* a serving pod deleted, of stable and of the canary;
* Prometheus restarted (its pod deleted; the StatefulSet brings it back);
* kube-apiserver restarted (SIGTERM, then started again with the same arguments).

Then the rollout must have been promoted exactly once (one PromotionStarted in status and
in Events, one history entry, every recorded transition evented once), and the client
must have lost no request: every prediction and feedback answered 2xx. A table says what
each kind of fault cost.
"""

from __future__ import annotations

import os
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from operator_harness import deployment_settled, pod_ready, prometheus_query, until
from rollout_harness import (
    ROLLOUT_MARKS,
    Recorder,
    Rollout,
    deploy,
    event_count,
    every_transition_evented_once,
    explain,
    phase_is,
    steps_never_go_back,
    traffic,
    wait_for,
)

pytestmark = ROLLOUT_MARKS

NAME = "chaos"
#: Many short steps: the rollout outlasts the whole fault sequence.
STEPS = [5, 10, 15, 20, 30, 40, 50, 60, 70, 80, 90]
INTERVAL = "20s"
OPERATOR_KILLS = 10


@dataclass
class Fault:
    kind: str
    cause: Callable[[], None]
    whole: Callable[[], bool]
    limit: float = 120.0


@dataclass
class Tally:
    count: int = 0
    requests: int = 0
    lost: int = 0
    during: list[str] = field(default_factory=list)


class Chaos:
    """Causes FAULTS in order on a thread, each after a random pause, recording per kind
    how many requests the client sent and lost from the fault to the system being whole."""

    def __init__(self, faults: list[Fault], rng: random.Random, stats: Any, phase: Any) -> None:
        self.faults, self.rng, self.stats, self.phase = faults, rng, stats, phase
        self.tallies: dict[str, Tally] = {}
        self.error: BaseException | None = None
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, name="chaos", daemon=True)

    def _run(self) -> None:
        try:
            for fault in self.faults:
                time.sleep(self.rng.uniform(0.5, 4))
                sent, lost = self.stats.total, self.stats.non_2xx
                phase = self.phase()
                fault.cause()
                until(fault.whole, f"the system to recover from: {fault.kind}", fault.limit)
                tally = self.tallies.setdefault(fault.kind, Tally())
                tally.count += 1
                tally.requests += self.stats.total - sent
                tally.lost += self.stats.non_2xx - lost
                tally.during.append(phase)
        except BaseException as exc:  # re-raised by the test
            self.error = exc
        finally:
            self.done.set()

    def table(self) -> str:
        rows = [("FAULT", "COUNT", "REQUESTS", "LOST", "DURING")]
        for kind, t in self.tallies.items():
            phases = ",".join(sorted(set(t.during)))
            rows.append((kind, str(t.count), str(t.requests), str(t.lost), phases))
        widths = [max(len(r[i]) for r in rows) for i in range(5)]
        return "\n".join(
            "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows
        )


def ready_pods(env: Any, ns: str, selector: str) -> list[Any]:
    return [p for p in env.pods(ns, selector) if pod_ready(p)]


def available(env: Any, ns: str, deployment: str) -> bool:
    dep = env.apps.read_namespaced_deployment(deployment, ns)
    return bool(dep.spec.replicas) and deployment_settled(dep)


def test_a_rollout_under_faults_is_promoted_once_and_loses_no_request(
    rollout: Rollout, local_cluster: Any
) -> None:
    env, models, ns, operator = rollout.env, rollout.models, rollout.ns, rollout.operator
    v1, v2 = models["1.0.0"], models["2.0.0"]
    seed = int(os.environ.get("MODELSHIP_CHAOS_SEED") or random.SystemRandom().randrange(10**6))
    rng = random.Random(seed)
    print(f"chaos seed {seed} (MODELSHIP_CHAOS_SEED={seed} replays this order)")

    # Two stable pods: a deleted serving pod always leaves a healthy upstream.
    base = deploy(env, ns, NAME, v1, v2, spec={"replicas": 2}, steps=STEPS, interval=INTERVAL,
                  progressDeadline="10m", maxConsecutiveErrors=10)  # fmt: skip
    stable_generation = env.apps.read_namespaced_deployment(
        f"{NAME}-stable", ns
    ).metadata.generation

    def phase() -> str:
        return str(((env.md(ns, NAME) or {}).get("status") or {}).get("phase"))

    def kill_operator() -> Fault:
        before: dict[str, Any] = {}

        def cause() -> None:
            leader = until(operator.leader, "an operator leader", 60, operator.describe)
            before.update(pod=leader, restarts=operator.restarts(leader))
            operator.kill(leader)

        def whole() -> bool:
            now = operator.leader()
            return now is not None and (
                now != before["pod"] or operator.restarts(before["pod"]) > before["restarts"]
            )

        return Fault("operator SIGKILL", cause, whole)

    def delete_pod(kind: str, selector: str, deployment: str) -> Fault:
        deleted: list[str] = []

        def cause() -> None:
            # A pod that is serving: the canary's first pod may still be starting.
            pods = until(lambda: ready_pods(env, ns, selector), f"a ready pod for {selector}", 120)
            victim = rng.choice(pods).metadata.name
            env.core.delete_namespaced_pod(victim, ns)
            deleted.append(victim)

        def whole() -> bool:  # the deleted pod gone (drained and stopped), its replacement up
            names = {p.metadata.name for p in env.pods(ns, selector)}
            return deleted[-1] not in names and available(env, ns, deployment)

        return Fault(kind, cause, whole)

    def restart_prometheus() -> Fault:
        def cause() -> None:
            env.core.delete_namespaced_pod("prometheus-modelship-0", "monitoring")
            time.sleep(1)

        def whole() -> bool:
            return bool(prometheus_query("vector(1)"))

        return Fault("Prometheus restarted", cause, whole, limit=180)

    def restart_apiserver() -> Fault:
        def cause() -> None:
            local_cluster.restart_apiserver()

        def whole() -> bool:
            return operator.leader() is not None

        return Fault("kube-apiserver restarted", cause, whole)

    faults = [kill_operator() for _ in range(OPERATOR_KILLS)] + [
        delete_pod("router pod deleted", f"modelship.io/deployment={NAME},"
                   "app.kubernetes.io/component=router", f"{NAME}-router"),
        delete_pod("stable pod deleted", f"modelship.io/deployment={NAME},"
                   "modelship.io/variant=stable", f"{NAME}-stable"),
        delete_pod("canary pod deleted", f"modelship.io/deployment={NAME},"
                   "modelship.io/variant=canary", f"{NAME}-canary"),
        restart_prometheus(),
        restart_apiserver(),
    ]  # fmt: skip
    rng.shuffle(faults)

    with Recorder(env, ns, NAME) as rec, traffic(base, NAME, v1, seconds=900) as stats:
        chaos = Chaos(faults, rng, stats, phase)
        chaos.thread.start()
        until(chaos.done.is_set, "the chaos sequence to end", 800,
              lambda: explain(env, ns, NAME, rec, stats), 1)  # fmt: skip
        if chaos.error is not None:
            raise AssertionError(f"{chaos.error}\n{explain(env, ns, NAME, rec, stats)}")
        done = wait_for(env, ns, NAME, phase_is("Promoted", "RolledBack", "Failed"),
                        "the rollout to finish", 400, rec, stats)  # fmt: skip
    table = chaos.table()
    print(f"chaos, seed {seed}:\n{table}\nclient: {stats.total} requests, {stats.non_2xx} lost, "
          f"{stats.abandoned} abandoned; outcome {done['phase']}")  # fmt: skip
    why = explain(env, ns, NAME, rec, stats) + "\n" + table

    # Every fault happened while the rollout ran (not after it had ended).
    ended = {"Promoted", "RolledBack", "Failed", "Idle"}
    late = [k for k, t in chaos.tallies.items() if set(t.during) & ended]
    assert not late, f"faults after the rollout ended: {late}\n{why}"
    assert chaos.tallies["operator SIGKILL"].count == OPERATOR_KILLS, why
    # The right end, reached once.
    assert done["phase"] == "Promoted", why
    assert [h["outcome"] for h in done["history"]] == ["Promoted"], why
    assert event_count(env, ns, NAME, "PromotionStarted") == 1, why
    recorded = [t["reason"] for t in env.md(ns, NAME)["status"]["transitions"]]
    assert recorded.count("PromotionStarted") == 1, why
    assert steps_never_go_back(rec), why
    starts = {(s.get("rollout") or {}).get("startedAt") for _, s in rec.statuses}
    assert len(starts - {None}) == 1, why
    until(lambda: not every_transition_evented_once(env, ns, NAME),
          "the Event of every recorded transition", 60,
          lambda: every_transition_evented_once(env, ns, NAME) + "\n" + why)  # fmt: skip
    # The stable Deployment's pod template changed exactly once: to the canary's model.
    generation = env.apps.read_namespaced_deployment(f"{NAME}-stable", ns).metadata.generation
    assert generation == stable_generation + 1, why
    # Nothing lost to the faults or the rollout's own mechanics.
    assert stats.non_2xx == 0, why
    assert stats.abandoned == 0, why
