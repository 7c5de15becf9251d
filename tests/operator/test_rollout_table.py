"""The one transition table: docs/analysis.md shows exactly ``rollout.TRANSITIONS``, every row
is reachable, and every decision's Events and phase are its rows'."""

from __future__ import annotations

import ast
import re
from datetime import timedelta
from pathlib import Path
from typing import get_args

import pytest
from mdep_fixtures import base_resource
from modelship_operator import generate
from modelship_operator.observed import Observed
from modelship_operator.rollout import (
    TRANSITIONS,
    Step,
    TransitionName,
    track_rollout,
    transition,
    transitions_markdown,
)
from modelship_operator.rollout import (
    Rollout as Decided,
)
from modelship_operator.spec import ModelDeployment
from test_reconcile import cluster
from test_reconcile_analysis import Life
from test_reconcile_analysis import ok as good
from test_rollout_machine import (
    Rollout,
    ab,
    entered,
    error,
    failed,
    inconclusive,
    ok,
    strategy,
)

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "analysis.md"


def test_the_docs_table_is_the_code_table() -> None:
    text = DOC.read_text()
    assert generate.analysis_doc(text) == text, "docs/analysis.md is stale: run `make generate`"
    generated = text.split(generate.TABLE_BEGIN)[1].split(generate.TABLE_END)[0]
    assert generated == transitions_markdown()
    rows = [line for line in generated.splitlines() if re.match(r"^\| `", line)]
    assert [re.match(r"^\| `([a-z-]+)`", r).group(1) for r in rows] == [  # type: ignore[union-attr]
        t.name for t in TRANSITIONS
    ]


def test_a_stale_docs_table_is_caught() -> None:
    text = DOC.read_text().replace("| `StepAdvanced` |", "| `StepMoved` |")
    assert generate.analysis_doc(text) != text
    with pytest.raises(ValueError):
        generate.analysis_doc("no markers here")


def test_each_name_has_one_row_and_endings_name_their_phase_and_outcome() -> None:
    names = [t.name for t in TRANSITIONS]
    assert len(names) == len(set(names))
    assert set(names) == set(get_args(TransitionName))
    for t in TRANSITIONS:
        bold = re.match(r"^\*\*([A-Za-z]+)\*\*", t.to)
        assert (bold.group(1) if bold else None) == (t.phase if bold else None), t.name
        if t.action in ("rollback", "fail"):
            assert t.phase in ("RolledBack", "Failed") and t.outcome is not None, t.name
        assert all(kind in ("Normal", "Warning") and reason for kind, reason in t.events)


# --- every row is reached, and every decision is its rows' ---------------------------------


def checked(result: Step | Decided, before_phase: str | None = None) -> tuple[str, ...]:
    """``result``'s path, once its Events are exactly its rows' and its phase its last
    row's (when that row fixes one)."""
    path = result.path
    assert path, result
    expected = [reason for name in path for _kind, reason in transition(name).events]
    assert [e.reason for e in result.events] == expected, path
    assert [e.type for e in result.events] == [
        kind for name in path for kind, _reason in transition(name).events
    ]
    fixed = transition(path[-1]).phase
    phase = result.state.phase if isinstance(result, Step) else result.phase
    if fixed is not None:
        assert phase == fixed, path
    return path


def machine_paths() -> list[tuple[str, ...]]:
    """Scenarios through the step machine, one or more rows each."""
    rollouts: list[Rollout] = []

    def new(r: Rollout) -> Rollout:
        rollouts.append(r)
        return r

    r = new(entered())  # begin, wait-ready, enter
    r.tick(after=1)  # wait
    r.tick(inconclusive(), after=30)  # hold
    r.tick(ok(), after=30)  # step-advanced
    r.tick(failed(), after=30)  # check-failed
    r.tick(after=1, paused=True)  # pause
    r.tick(after=1, paused=True)  # paused
    r.tick(after=1)  # resume
    r.tick(after=1, command="promote")  # promote
    r.tick(after=1, command="abort")  # ignored
    r.tick(after=1)  # done

    r = new(entered(strategy(type="ABTest")))  # enter-abtest
    r.tick(ok(), ab=ab("canary-wins"), after=30)  # ab-promote
    r = new(entered(strategy(type="ABTest", promotion="Manual")))
    r.tick(ok(), ab=ab("canary-wins"), after=30)  # ab-await
    r.tick(ok(), ab=ab("canary-wins"), after=30)  # awaiting
    r = new(entered(strategy(type="ABTest")))
    r.tick(ok(), ab=ab("stable-wins"), after=30)  # ab-stable-wins
    r = new(entered(strategy(type="ABTest")))
    r.tick(ok(), ab=ab("no-difference", 0.5), after=30)  # ab-no-winner

    r = new(entered(strategy(type="Shadow")))  # enter-shadow
    r.tick(ok(), after=30)  # shadow-accepted

    r = new(Rollout(strategy()))
    r.tick(ready=False)
    r.tick(after=300, ready=False)  # enter-deadline
    r.tick(after=1, command="retry")  # retry-rejected

    r = new(entered(strategy(steps=[10, 20])))
    r.tick(ok(), after=30)
    r.tick(ok(), after=30)  # promote-automatic
    r = new(entered(strategy(steps=[10, 20], promotion="Manual")))
    r.tick(ok(), after=30)
    r.tick(ok(), after=30)  # await-promotion

    r = new(entered(strategy(maxFailedChecks=1)))
    r.tick(failed(), after=30)  # rollback
    r = new(entered())
    r.tick(after=300)  # deadline
    r = new(entered())
    r.tick(after=1, command="abort")  # abort

    r = new(entered())
    r.tick(error(), after=30)  # error
    r.tick(error(), after=30)  # pause-errors
    r.tick(error(), after=30)  # still-erroring
    r.tick(after=1)  # paused
    r.tick(ok(), after=30)  # recovered, step-advanced
    r.tick(error(), after=30)
    r.tick(error(), after=30)
    r.tick(after=1, command="retry")  # retry-errors

    r = new(entered())
    r.key = "k2"
    r.tick(after=1)  # supersede, wait-ready

    return [checked(step) for rollout in rollouts for step in rollout.steps]


def spec_paths() -> list[tuple[str, ...]]:
    """What the spec asks against what serves, and the promotion."""
    fresh = ModelDeployment.from_api(base_resource())
    paths = [checked(track_rollout(fresh, Observed(), Life().now))]  # deploy
    life = Life(strategy={"steps": [10], "interval": "30s"}).entered()
    reverted = base_resource(strategy=life.strategy)
    assert life.last is not None
    reverted["status"] = life.last.status.to_api()
    back = ModelDeployment.from_api(reverted)
    paths.append(checked(track_rollout(back, cluster(life.last), life.now)))  # revert
    life.tick(good(), after=30)  # promote-automatic: Promoting
    life.now += timedelta(seconds=1)
    promoted = track_rollout(life.resource(), cluster(life.last), life.now)
    paths.append(checked(promoted))  # done, promoted
    life.tick()
    life.tick(after=60)
    served = base_resource(strategy=life.strategy)
    assert life.last is not None
    served["status"] = life.last.status.to_api()
    current = served["status"]["rolledOut"]["current"]
    served["spec"]["model"] = current
    same = ModelDeployment.from_api(served)
    paths.append(checked(track_rollout(same, cluster(life.last), life.now)))  # serving
    return paths


def test_every_row_is_reached_and_every_decision_is_its_rows() -> None:
    paths = machine_paths() + spec_paths()
    reached = {name for path in paths for name in path}
    assert reached == {t.name for t in TRANSITIONS}, {t.name for t in TRANSITIONS} - reached


# --- the pure modules stay pure -----------------------------------------------------------

IO_MODULES = ("modelship_operator.analysis.prometheus", "httpx", "kopf", "modelship_kube")
PURE = (
    "analysis/abtest.py",
    "analysis/queries.py",
    "analysis/results.py",
    "analysis/shadow.py",
    "analysis/verdict.py",
    "conditions.py",
    "events.py",
    "observed.py",
    "reconcile.py",
    "render.py",
    "rollout.py",
    "spec.py",
    "status.py",
)


@pytest.mark.parametrize("module", PURE)
def test_no_pure_module_imports_io(module: str) -> None:
    tree = ast.parse((ROOT / "operator" / "modelship_operator" / module).read_text())
    imported = [
        node.module if isinstance(node, ast.ImportFrom) else alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.Import | ast.ImportFrom)
        for alias in node.names
    ]
    assert not [name for name in imported if name and name.startswith(IO_MODULES)], (
        f"{module} imports I/O"
    )
