"""Sticky canary steps, end to end on the local cluster: users keep their model version.

With ``strategy.stickyKey`` a user's place in the split is a hash of their key salted per
rollout (docs/rollouts.md). 200 users send their ``x-user-id`` on every request through the
router over a whole 20/50/80 % rollout and its promotion; each answer's ``x-model-version``
says which model served it. A user once served the candidate is never served the old model
again, the users in the canary at 20 % are about 20 % of them, and a second rollout (its own
salt) puts other users first: its 20 % shares with the first one's about what chance gives.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import httpx
from rollout_harness import (
    ROLLOUT_MARKS,
    Recorder,
    Rollout,
    deploy,
    explain,
    model_deployment,
    phase_is,
    strategy,
    wait_for,
)

pytestmark = ROLLOUT_MARKS

USERS = 200
KEY = "x-user-id"
#: Analysis interval: each step lasts at least this, a few rounds of every user's requests.
INTERVAL = "10s"


@dataclass
class Answers:
    """Each user's answers in order: (monotonic time sent, model version, status)."""

    by_user: dict[str, list[tuple[float, str, int]]] = field(
        default_factory=lambda: defaultdict(list)
    )
    errors: int = 0

    def flipped_back(self, old: str, new: str) -> list[str]:
        """Users answered by ``new`` and, by a request sent later, by ``old``."""
        back = []
        for user, seen in self.by_user.items():
            versions = [v for _, v, status in sorted(seen) if status == 200 and v in (old, new)]
            if new in versions and old in versions[versions.index(new) :]:
                back.append(user)
        return back

    def users_on(self, version: str, start: float, end: float) -> tuple[set[str], set[str]]:
        """(users answered by ``version``, users answered at all) by requests sent in
        [start, end)."""
        on, seen = set(), set()
        for user, answers in self.by_user.items():
            for sent, served, status in answers:
                if start <= sent < end and status == 200:
                    seen.add(user)
                    if served == version:
                        on.add(user)
        return on, seen


@contextmanager
def users(url: str, name: str, row: list[float], rate: float = 50) -> Iterator[Answers]:
    """Every user in turn sends one prediction with its key, ``rate`` requests a second in
    all, on a thread, until the block ends (or 10 minutes pass)."""
    answers = Answers()
    stop = threading.Event()

    async def run() -> None:
        limits = httpx.Limits(max_connections=16, max_keepalive_connections=16)
        async with httpx.AsyncClient(limits=limits, timeout=10) as client:
            tasks: set[asyncio.Task[None]] = set()

            async def one(user: str) -> None:
                sent = time.monotonic()
                try:
                    response = await client.post(
                        f"{url}/v1/models/{name}:predict",
                        json={"instances": [row]},
                        headers={KEY: user},
                    )
                except httpx.HTTPError:
                    answers.errors += 1
                    return
                version = response.headers.get("x-model-version", "?")
                answers.by_user[user].append((sent, version, response.status_code))

            deadline = time.monotonic() + 600
            next_at, i = time.monotonic(), 0
            while not stop.is_set() and time.monotonic() < deadline:
                task = asyncio.create_task(one(f"user-{i % USERS}"))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
                i += 1
                next_at += 1 / rate
                await asyncio.sleep(max(0.0, next_at - time.monotonic()))
            if tasks:
                await asyncio.wait(tasks, timeout=15)

    thread = threading.Thread(target=lambda: asyncio.run(run()), name="users", daemon=True)
    thread.start()
    try:
        yield answers
    finally:
        stop.set()
        thread.join(timeout=30)


def first_step(rec: Recorder, since: float) -> tuple[float, float]:
    """When the router applied the first step's weight (20) after ``since``, and when the
    next one; a second after each change is left out (requests in flight across it)."""
    changes = [(t, w.get("canary")) for t, _, w in rec.router if t >= since]
    start = next(t for t, w in changes if w == 20.0)
    end = next(t for t, w in changes if t > start and w != 20.0)
    return start + 1.0, end


def test_sticky_users_keep_their_version_over_a_whole_rollout(rollout: Rollout) -> None:
    env, models, ns = rollout.env, rollout.models, rollout.ns
    v1, v2 = models["1.0.0"], models["2.0.0"]
    sticky = {"stickyKey": {"header": KEY}, "interval": INTERVAL}
    url = deploy(env, ns, "sticky", v1, v2, **sticky)
    row = v1.features[0].tolist()
    with Recorder(env, ns, "sticky") as rec, users(url, "sticky", row) as seen:
        t0 = time.monotonic()
        done = wait_for(env, ns, "sticky", phase_is("Promoted", "RolledBack"),
                        "the sticky canary to be promoted", 240, rec)  # fmt: skip
        why = explain(env, ns, "sticky", rec)
        assert done["phase"] == "Promoted", why
        first = first_step(rec, t0)
        # A second rollout, 2.0.0 -> 3.0.0 (another file's name for v1's model): its own salt.
        t1 = time.monotonic()
        env.apply(ns, model_deployment("sticky", v1.ref("3.0.0"), strategy(**sticky)))
        wait_for(env, ns, "sticky", lambda s: (s.get("traffic") or {}).get("canary") == 50,
                 "the second rollout's second step", 180, rec)  # fmt: skip
        until_router = time.monotonic() + 30
        while time.monotonic() < until_router and not any(
            t >= t1 and w.get("canary") == 50.0 for t, _, w in rec.router
        ):
            time.sleep(0.2)
        second = first_step(rec, t1)
    why = explain(env, ns, "sticky", rec)
    assert seen.errors == 0, why
    answered = [a for user in seen.by_user.values() for a in user]
    assert all(status == 200 for _, _, status in answered), why
    assert len(seen.by_user) == USERS, why
    # No user served 2.0.0 was ever served 1.0.0 again, nor a 3.0.0 user 2.0.0.
    assert seen.flipped_back("1.0.0", "2.0.0") == [], why
    assert seen.flipped_back("2.0.0", "3.0.0") == [], why
    # No user is left on 1.0.0 at the end: the first rollout's promotion moved them all.
    last = {user: sorted(a)[-1][1] for user, a in seen.by_user.items()}
    assert set(last.values()) <= {"2.0.0", "3.0.0"}, why
    # At 20 % about a fifth of the users are in the canary (binomial sd 2.8 points).
    a, a_seen = seen.users_on("2.0.0", *first)
    b, b_seen = seen.users_on("3.0.0", *second)
    share_a, share_b = len(a) / len(a_seen), len(b) / len(b_seen)
    overlap = len(a & b)
    print(
        f"sticky users: first rollout at 20 %: {len(a)}/{len(a_seen)} in the canary, "
        f"second: {len(b)}/{len(b_seen)}, in both: {overlap} "
        f"(chance {len(a) * len(b) / USERS:.1f}, same salt {min(len(a), len(b))}); "
        f"{len(answered)} answers, 0 flipped back"
    )
    assert len(a_seen) >= 0.9 * USERS and len(b_seen) >= 0.9 * USERS, why
    assert 0.1 <= share_a <= 0.3 and 0.1 <= share_b <= 0.3, why
    # Independent salts: the overlap is what chance gives (8 of 40 for 20 % twice), far
    # from the whole set a shared salt would give.
    assert overlap < 0.5 * min(len(a), len(b)), why
