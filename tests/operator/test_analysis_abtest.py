"""The A/B test's sequential verdict, by simulation with fixed seeds (pure numpy).

The operator looks at the test at every interval, so these simulations look after every batch
too ("peeking") and stop at the first significant answer, as the operator would.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from modelship_operator.analysis.abtest import (
    ABResult,
    Counts,
    always_valid_p,
    clean,
    decide,
    likelihood_ratio,
    sample_ratio_p,
)

ALPHA = 0.05
RUNS = 500
LOOKS = 40
BATCH = 50  # trials per variant between two looks: 2000 per variant at the end
MIN_SAMPLES = 200


def cumulative(rng: np.random.Generator, rate: float) -> np.ndarray:
    return rng.binomial(BATCH, rate, size=(RUNS, LOOKS)).cumsum(axis=1)


def peek(stable: np.ndarray, canary: np.ndarray, alpha: float = ALPHA) -> dict[str, int]:
    """Run every simulated test look by look through decide(); count how each ended."""
    ends = {"canary-wins": 0, "stable-wins": 0, "no-difference": 0}
    for run in range(RUNS):
        p, winner, result = None, None, None
        for look in range(LOOKS):
            n = (look + 1) * BATCH
            result = decide(
                Counts(stable[run, look], n),
                Counts(canary[run, look], n),
                alpha=alpha,
                min_samples=MIN_SAMPLES,
                previous_p=p,
                previous_winner=winner,
                deadline_passed=look == LOOKS - 1,
            )
            p, winner = result.p_value, result.winner
            if result.decision != "undecided":
                break
        assert result is not None
        ends[result.decision] += 1
    return ends


@pytest.mark.parametrize(("rate", "seed"), [(0.7, 11), (0.5, 12), (0.95, 13), (0.03, 14)])
def test_equal_variants_rarely_name_a_winner(rate: float, seed: int) -> None:
    rng = np.random.default_rng(seed)
    ends = peek(cumulative(rng, rate), cumulative(rng, rate))
    false_winners = ends["canary-wins"] + ends["stable-wins"]
    assert false_winners <= 2 * ALPHA * RUNS, ends
    assert ends["no-difference"] >= RUNS - 2 * ALPHA * RUNS


def test_the_same_peeking_breaks_a_fixed_sample_z_test() -> None:
    """The harness can fail: a plain z-test checked at every look finds false winners far
    more often than alpha on the very same kind of sequences."""
    rng = np.random.default_rng(11)
    stable, canary = cumulative(rng, 0.7), cumulative(rng, 0.7)
    n = BATCH * np.arange(1, LOOKS + 1)
    pooled = (stable + canary) / (2 * n)
    z = (canary - stable) / n / np.sqrt(pooled * (1 - pooled) * 2 / n)
    false_winners = int((np.abs(z[:, MIN_SAMPLES // BATCH - 1 :]) > 1.96).any(axis=1).sum())
    assert false_winners > 2 * ALPHA * RUNS


@pytest.mark.parametrize(
    ("stable_rate", "canary_rate", "seed", "expected", "most"),
    [
        (0.70, 0.78, 21, "canary-wins", 0.95),
        (0.70, 0.75, 22, "canary-wins", 0.65),
        (0.80, 0.72, 23, "stable-wins", 0.95),
    ],
)
def test_a_truly_better_variant_wins(
    stable_rate: float, canary_rate: float, seed: int, expected: str, most: float
) -> None:
    rng = np.random.default_rng(seed)
    ends = peek(cumulative(rng, stable_rate), cumulative(rng, canary_rate))
    assert ends[expected] >= most * RUNS, ends
    wrong = "stable-wins" if expected == "canary-wins" else "canary-wins"
    assert ends[wrong] <= 2, ends


def test_nothing_is_concluded_before_min_samples() -> None:
    stable, canary = Counts(10, 100), Counts(100, 100)  # a huge difference on few trials
    result = decide(stable, canary, alpha=ALPHA, min_samples=200)
    assert result.decision == "undecided" and result.p_value is None
    assert "waiting for 200 trials" in result.message
    assert decide(stable, canary, alpha=ALPHA, min_samples=100).decision == "canary-wins"


def test_the_p_value_is_a_running_minimum() -> None:
    strong = always_valid_p(Counts(700, 1000), Counts(780, 1000))
    weaker_now = always_valid_p(Counts(740, 1000), Counts(745, 1000), previous=strong)
    assert weaker_now == strong
    assert always_valid_p(Counts(740, 1000), Counts(745, 1000)) > strong


def test_a_winner_once_named_stays() -> None:
    first = decide(Counts(700, 1000), Counts(800, 1000), alpha=ALPHA, min_samples=100)
    assert first.decision == "canary-wins" and first.winner == "canary"
    later = decide(
        Counts(900, 2000),
        Counts(800, 2000),
        alpha=ALPHA,
        min_samples=100,
        previous_p=first.p_value,
        previous_winner=first.winner,
    )
    assert later.decision == "canary-wins" and later.p_value == first.p_value


def test_deadline_without_significance_keeps_stable() -> None:
    result = decide(
        Counts(700, 1000), Counts(705, 1000), alpha=ALPHA, min_samples=100, deadline_passed=True
    )
    assert result.decision == "no-difference" and result.winner == "none"
    assert "keeping stable" in result.message and "no significant difference" in result.message
    starved = decide(
        Counts(7, 10), Counts(7, 10), alpha=ALPHA, min_samples=100, deadline_passed=True
    )
    assert starved.decision == "no-difference" and "fewer than 100 trials" in starved.message


@pytest.mark.parametrize(
    ("stable", "canary"),
    [
        (Counts(0, 0), Counts(5, 10)),
        (Counts(1000, 1000), Counts(1000, 1000)),
        (Counts(0, 1000), Counts(0, 1000)),
    ],
)
def test_no_information_is_no_evidence(stable: Counts, canary: Counts) -> None:
    assert likelihood_ratio(stable, canary) == 1.0


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (Counts(10.4, 20.6), Counts(10, 21)),
        (Counts(25.2, 24.9), Counts(25, 25)),  # successes counter scraped after trials
        (Counts(-1, 3), Counts(0, 3)),
        (Counts(math.nan, math.inf), Counts(0, 0)),
    ],
)
def test_counts_from_prometheus_are_cleaned(raw: Counts, expected: Counts) -> None:
    assert clean(raw) == expected


def test_status_winner_values() -> None:
    assert ABResult("undecided", None, "").winner is None
    assert ABResult("no-difference", 0.4, "").winner == "none"
    assert ABResult("stable-wins", 0.01, "").winner == "stable"


# --- sample-ratio mismatch ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("stable", "canary", "share"),
    [(5000, 5000, 0.5), (5100, 4900, 0.5), (5200, 4800, 0.5), (8000, 2000, 0.2),
     (7800, 2200, 0.2), (120, 80, 0.5), (3, 1, 0.25)],
)  # fmt: skip
def test_sample_ratio_p_is_scipys_chisquare(stable: int, canary: int, share: float) -> None:
    scipy_stats = pytest.importorskip("scipy.stats")
    total = stable + canary
    expected = scipy_stats.chisquare([stable, canary], [total * (1 - share), total * share])
    assert sample_ratio_p(stable, canary, share) == pytest.approx(expected.pvalue, rel=1e-9)


def test_a_skewed_split_pauses_the_test_instead_of_deciding() -> None:
    # Configured 50/50, observed 55/45 over 10,000 trials; the canary is clearly better,
    # but a verdict on a broken split is not trusted: undecided, even past the deadline.
    result = decide(
        Counts(3850, 5500),
        Counts(4050, 4500),
        alpha=ALPHA,
        min_samples=MIN_SAMPLES,
        deadline_passed=True,
        canary_share=0.5,
    )
    assert result.decision == "undecided" and result.mismatch
    assert "sample ratio mismatch: canary has 45.0% of the trials, 50% configured" in result.message
    assert result.p_value is None  # the sequential p-value did not move


def test_a_split_as_configured_decides_as_before() -> None:
    stable, canary = Counts(3500, 5000), Counts(4000, 5000)
    plain = decide(stable, canary, alpha=ALPHA, min_samples=MIN_SAMPLES)
    checked = decide(stable, canary, alpha=ALPHA, min_samples=MIN_SAMPLES, canary_share=0.5)
    assert checked.decision == plain.decision == "canary-wins"
    assert not checked.mismatch and checked.sample_ratio_p == pytest.approx(1.0)
    # A 20 % canary at its configured share is no mismatch either.
    small = decide(Counts(5600, 8000), Counts(1500, 2000), alpha=ALPHA, min_samples=MIN_SAMPLES,
                   canary_share=0.2)  # fmt: skip
    assert not small.mismatch and small.decision == "canary-wins"


def test_equal_variants_with_a_fair_split_rarely_pause() -> None:
    # Assignment as configured (binomial per trial): SRM fires about SRM_ALPHA of the time.
    rng = np.random.default_rng(7)
    paused = 0
    for _ in range(2000):
        canary_trials = int(rng.binomial(10_000, 0.3))
        stable_trials = 10_000 - canary_trials
        result = decide(
            Counts(stable_trials * 0.7, stable_trials),
            Counts(canary_trials * 0.7, canary_trials),
            alpha=ALPHA,
            min_samples=MIN_SAMPLES,
            canary_share=0.3,
        )
        paused += result.mismatch
    assert paused <= 10  # 2000 x 0.001 = 2 expected


def clustered(rng: np.random.Generator, users: int, requests: int) -> tuple[np.ndarray, ...]:
    """Equal variants with sticky users: each user's accuracy is their own (some users'
    inputs are easy, some hard: beta-distributed around 70 %), and all of a user's
    ``requests`` go to the variant the user is assigned. Cumulative (successes, trials) per
    look, counted by request and by user (the user's first request)."""
    per_look = users // LOOKS
    rates = rng.beta(2.1, 0.9, size=(RUNS, LOOKS, per_look))  # mean 0.7, wide spread
    right = rng.random((RUNS, LOOKS, per_look, requests)) < rates[..., None]
    by_request = right.sum(axis=(2, 3)).cumsum(axis=1)
    by_user = right[..., 0].sum(axis=2).cumsum(axis=1)
    return by_request, by_user


def peek_counts(stable: np.ndarray, canary: np.ndarray, per_look: int) -> dict[str, int]:
    ends = {"canary-wins": 0, "stable-wins": 0, "no-difference": 0}
    for run in range(RUNS):
        p, winner, result = None, None, None
        for look in range(LOOKS):
            n = (look + 1) * per_look
            result = decide(Counts(stable[run, look], n), Counts(canary[run, look], n),
                            alpha=ALPHA, min_samples=MIN_SAMPLES, previous_p=p,
                            previous_winner=winner, deadline_passed=look == LOOKS - 1,
                            unit="users")  # fmt: skip
            p, winner = result.p_value, result.winner
            if result.decision != "undecided":
                break
        assert result is not None
        ends[result.decision] += 1
    return ends


def test_counting_sticky_users_keeps_the_error_rate_that_counting_requests_loses() -> None:
    """Why the built-in metric counts users: with 20 correlated requests per sticky user,
    equal variants counted by request name a false winner far more often than alpha, while
    the same runs counted by user stay within it."""
    users, requests = 2000, 20
    rng = np.random.default_rng(31)
    stable_req, stable_user = clustered(rng, users, requests)
    canary_req, canary_user = clustered(rng, users, requests)
    per_look = users // LOOKS
    by_user = peek_counts(stable_user, canary_user, per_look)
    by_request = peek_counts(stable_req, canary_req, per_look * requests)
    assert by_user["canary-wins"] + by_user["stable-wins"] <= 2 * ALPHA * RUNS, by_user
    assert by_request["canary-wins"] + by_request["stable-wins"] > 4 * ALPHA * RUNS, by_request


def test_messages_name_what_a_trial_is() -> None:
    result = decide(Counts(10, 100), Counts(20, 100), alpha=ALPHA, min_samples=200, unit="users")
    assert "waiting for 200 users per variant" in result.message
    assert "of 100 users" in result.message
