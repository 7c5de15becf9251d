"""The statistical verdict of an A/B test, valid however often it is looked at.

The operator looks at the test every interval and stops at the first significant answer. A
classical fixed-sample test (a z-test at alpha 0.05) checked like that declares a false winner
far more often than 5 % of the time: every look is another chance for noise to cross the line.
So the verdict uses an **always-valid p-value** from a **mixture sequential probability ratio
test (mSPRT)**, as in Johari, Pekelis and Walsh, "Always Valid Inference: Continuous
Monitoring of A/B Tests" (Operations Research, 2022), the method behind commercial A/B
engines:

* the statistic is the difference of the two success rates, ``d = p_canary - p_stable``, with
  variance ``V = p(1-p) (1/n_stable + 1/n_canary)`` under "no difference" (``p`` pooled);
* the likelihood ratio of "the difference is drawn from N(0, tau^2)" against "no difference",
  integrated over that mixture, is
  ``L = sqrt(V / (V + tau^2)) * exp(tau^2 d^2 / (2 V (V + tau^2)))``;
* under "no difference" ``L`` is a martingale, so by Ville's inequality the chance that it
  *ever* exceeds ``1/alpha`` is at most ``alpha``; the always-valid p-value is
  ``p_n = min(p_{n-1}, 1/L_n)``, a running minimum kept in status (so it survives restarts);
* significant when ``p <= alpha``; the sign of ``d`` names the winner.

Why not a group-sequential design (O'Brien-Fleming, Pocock)? It needs the number and timing
of looks fixed in advance; here looks follow the interval timer, the traffic is whatever
arrives, and the test may run until a deadline, so the mSPRT's "any time, any number of looks"
guarantee fits. Its price is some power compared with a fixed-horizon test at the same sample
size; ``tau`` (the spread of effects the test is tuned to, default 0.05 = five percentage
points) sets where it is most sensitive.

Sample-ratio mismatch (SRM). Before any verdict the observed split of trials is checked
against the configured one with a chi-square goodness-of-fit test (one degree of freedom:
``chi2 = sum((observed - expected)^2 / expected)``, ``p = erfc(sqrt(chi2 / 2))``). A split
that far from the configured one (``p < SRM_ALPHA``, 0.001, the threshold experimentation
platforms use) means the assignment itself is broken (match rules or a bad sticky key
sending many users one way, pods of one variant failing, feedback sent for one variant
only), and a verdict on such data would be wrong in a way no p-value shows: the test is
paused, with the observed and configured shares in the message, and decides nothing (not
even "no difference" at the deadline) until the split recovers.

Assumptions to know: trials are independent (so the built-in metric counts one trial per
user, the unit assignment randomises, not one per request: a heavy user's requests all go
one way; :func:`..queries.business_queries`), and the normal approximation needs some data,
hence a minimum sample size per variant before any verdict.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final, Literal

DEFAULT_TAU: Final = 0.05
#: Below this p-value the observed split is a sample-ratio mismatch and the test pauses.
SRM_ALPHA: Final = 0.001

Decision = Literal["canary-wins", "stable-wins", "undecided", "no-difference"]
Winner = Literal["stable", "canary", "none"]


@dataclass(frozen=True)
class Counts:
    """Successes and trials of one variant since the test began."""

    successes: float
    trials: float

    @property
    def rate(self) -> float | None:
        return self.successes / self.trials if self.trials > 0 else None


@dataclass(frozen=True)
class ABResult:
    """Where the test stands after one look."""

    decision: Decision
    p_value: float | None
    message: str
    difference: float | None = None
    #: The sample-ratio test's p-value (None before there are trials in both variants).
    sample_ratio_p: float | None = None

    @property
    def mismatch(self) -> bool:
        """The observed split is too far from the configured one to trust any verdict."""
        return self.sample_ratio_p is not None and self.sample_ratio_p < SRM_ALPHA

    @property
    def winner(self) -> Winner | None:
        """For ``status.abTest.winner``: the better variant, none, or not yet known."""
        return {
            "canary-wins": "canary",
            "stable-wins": "stable",
            "no-difference": "none",
            "undecided": None,
        }[self.decision]


def clean(counts: Counts) -> Counts:
    """Counts as Prometheus gives them (``increase`` extrapolates to fractions, and a counter
    may lag its partner) made usable: non-negative whole numbers, successes <= trials."""
    trials = max(0, round(counts.trials)) if math.isfinite(counts.trials) else 0
    successes = max(0, round(counts.successes)) if math.isfinite(counts.successes) else 0
    return Counts(min(successes, trials), trials)


def likelihood_ratio(stable: Counts, canary: Counts, tau: float = DEFAULT_TAU) -> float:
    """The mixture likelihood ratio L of "some difference" against "none" (1: no evidence)."""
    if stable.trials <= 0 or canary.trials <= 0:
        return 1.0
    pooled = (stable.successes + canary.successes) / (stable.trials + canary.trials)
    variance = pooled * (1 - pooled) * (1 / stable.trials + 1 / canary.trials)
    if variance <= 0:
        return 1.0  # every trial succeeded (or none did) in both: nothing tells them apart
    difference = canary.successes / canary.trials - stable.successes / stable.trials
    t2 = tau * tau
    log_l = 0.5 * math.log(variance / (variance + t2)) + t2 * difference**2 / (
        2 * variance * (variance + t2)
    )
    return math.exp(min(log_l, 700.0))


def always_valid_p(
    stable: Counts, canary: Counts, previous: float | None = None, tau: float = DEFAULT_TAU
) -> float:
    """The always-valid p-value after this look: the running minimum of ``1/L``."""
    current = min(1.0, 1.0 / likelihood_ratio(stable, canary, tau))
    return current if previous is None else min(previous, current)


def sample_ratio_p(stable_trials: float, canary_trials: float, canary_share: float) -> float | None:
    """The chi-square goodness-of-fit p-value of the observed split against
    ``canary_share`` (0..1, exclusive); None without trials."""
    total = stable_trials + canary_trials
    if total <= 0 or not 0 < canary_share < 1:
        return None
    expected = (total * (1 - canary_share), total * canary_share)
    chi2 = sum(
        (observed - wanted) ** 2 / wanted
        for observed, wanted in zip((stable_trials, canary_trials), expected, strict=True)
    )
    return math.erfc(math.sqrt(chi2 / 2))


def _pct(rate: float | None) -> str:
    return "n/a" if rate is None else f"{100 * rate:.2f}%"


def decide(
    stable: Counts,
    canary: Counts,
    *,
    alpha: float,
    min_samples: int,
    previous_p: float | None = None,
    previous_winner: Winner | None = None,
    deadline_passed: bool = False,
    tau: float = DEFAULT_TAU,
    canary_share: float | None = None,
    unit: str = "trials",
) -> ABResult:
    """The verdict after one look at the counts.

    Once significant the answer is final (a later look keeps the winner it named). Before
    both variants have ``min_samples`` trials nothing is concluded and the p-value does not
    move. When ``deadline_passed`` and nothing is significant, the answer is no difference
    (keep stable). With ``canary_share`` (the configured split, 0..1) a sample-ratio
    mismatch pauses the test: undecided, whatever the deadline, until the split recovers.
    ``unit`` names what a trial is in the messages (``users`` for the built-in metric).
    """
    stable, canary = clean(stable), clean(canary)
    rates = (
        f"stable {_pct(stable.rate)} of {stable.trials:g} {unit}, "
        f"canary {_pct(canary.rate)} of {canary.trials:g} {unit}"
    )
    if previous_p is not None and previous_p <= alpha and previous_winner in ("stable", "canary"):
        decision: Decision = "canary-wins" if previous_winner == "canary" else "stable-wins"
        return ABResult(decision, previous_p, f"{previous_winner} won earlier (p={previous_p:.3g})")
    enough = min(stable.trials, canary.trials) >= min_samples
    difference = None if stable.rate is None or canary.rate is None else canary.rate - stable.rate
    srm = None
    if canary_share is not None and enough:
        srm = sample_ratio_p(stable.trials, canary.trials, canary_share)
        if srm is not None and srm < SRM_ALPHA:
            observed = canary.trials / (stable.trials + canary.trials)
            return ABResult(
                "undecided",
                previous_p,
                f"sample ratio mismatch: canary has {100 * observed:.1f}% of the {unit}, "
                f"{100 * canary_share:g}% configured (chi-square p={srm:.2g} < {SRM_ALPHA:g}); "
                "the test is paused and decides nothing until the split recovers: check the "
                "match rules, the sticky key and both variants' pods",
                difference,
                srm,
            )
    p_value = always_valid_p(stable, canary, previous_p, tau) if enough else previous_p
    if enough and p_value is not None and p_value <= alpha and difference not in (None, 0.0):
        assert difference is not None
        decision = "canary-wins" if difference > 0 else "stable-wins"
        better = "canary" if difference > 0 else "stable"
        return ABResult(
            decision,
            p_value,
            f"{better} is better ({rates}; always-valid p={p_value:.3g} <= {alpha:g})",
            difference,
            srm,
        )
    if deadline_passed:
        why = (
            f"fewer than {min_samples} {unit} per variant"
            if not enough
            else "no significant difference"
        )
        p_text = "n/a" if p_value is None else f"{p_value:.3g}"
        return ABResult(
            "no-difference",
            p_value,
            f"{why} by the deadline ({rates}; p={p_text}): keeping stable",
            difference,
            srm,
        )
    if not enough:
        return ABResult(
            "undecided",
            p_value,
            f"waiting for {min_samples} {unit} per variant ({rates})",
            difference,
        )
    return ABResult(
        "undecided",
        p_value,
        f"no significant difference yet ({rates}; p={p_value:.3g} > {alpha:g})",
        difference,
        srm,
    )
