"""Table-driven tests of the pure routing core (no I/O)."""

from __future__ import annotations

import hashlib
import math
import random

import pytest
from modelship_router.config import BUCKETS, RoutingConfig
from modelship_router.routing import (
    NO_TOKEN_CONFIGURED,
    REASON_MATCH,
    REASON_REFUSED,
    REASON_STICKY,
    REASON_WEIGHT,
    Decision,
    build_table,
    decide,
    mirror_target,
    parse_cookies,
    resolve_available,
    sticky_bucket,
    variant_for_bucket,
)


def make_config(canary: float = 10.0, **extra: object) -> RoutingConfig:
    data: dict[str, object] = {
        "deployment": "churn",
        "variants": [
            {"name": "stable", "modelVersion": "1.0", "upstreams": ["127.0.0.1:9001"]},
            {
                "name": "canary",
                "modelVersion": "2.0",
                "upstreams": ["127.0.0.1:9002"],
                "weight": canary,
            },
        ],
    }
    data.update(extra)
    return RoutingConfig.model_validate(data)


def within_sigmas(count: int, n: int, p: float, sigmas: float = 4.5) -> bool:
    """Whether ``count`` successes out of ``n`` are within ``sigmas`` binomial sigmas of n*p."""
    return abs(count - n * p) <= sigmas * math.sqrt(n * p * (1 - p))


# --- sticky hash -------------------------------------------------------------------------


def test_sticky_bucket_is_the_documented_formula() -> None:
    digest = hashlib.sha256(b"churn\x00user-42").digest()
    assert sticky_bucket("churn", "user-42") == int.from_bytes(digest[:8], "big") % 10_000


@pytest.mark.parametrize("key", ["a", "user-1", "ü-unicode", "x" * 500])
def test_sticky_bucket_is_in_range_and_deterministic(key: str) -> None:
    first = sticky_bucket("churn", key)
    assert 0 <= first < BUCKETS
    assert sticky_bucket("churn", key) == first


def test_salt_makes_experiments_independent() -> None:
    keys = [f"user-{i}" for i in range(2000)]
    a = [sticky_bucket("churn", k) < 1000 for k in keys]
    b = [sticky_bucket("fraud", k) < 1000 for k in keys]
    both = sum(x and y for x, y in zip(a, b, strict=True))
    # Independent 10 % assignments overlap in ~1 % of keys (20 of 2000), not ~10 % (200).
    assert within_sigmas(both, len(keys), 0.01)


# --- bucket layout -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("canary", "bucket", "expected"),
    [
        (10, 0, "canary"),
        (10, 999, "canary"),
        (10, 1000, "stable"),
        (10, 9999, "stable"),
        (0, 0, "stable"),
        (100, 9999, "canary"),
        (0.01, 0, "canary"),
        (0.01, 1, "stable"),
        (33.33, 3332, "canary"),
        (33.33, 3333, "stable"),
    ],
)
def test_variant_for_bucket(canary: float, bucket: int, expected: str) -> None:
    assert variant_for_bucket(build_table(make_config(canary)), bucket) == expected


def test_three_variants_layout_in_declared_order_fallback_last() -> None:
    config = RoutingConfig.model_validate(
        {
            "deployment": "d",
            "variants": [
                {"name": "stable", "modelVersion": "1", "upstreams": ["h:1"], "weight": 50},
                {"name": "b", "modelVersion": "2", "upstreams": ["h:2"], "weight": 20},
                {"name": "c", "modelVersion": "3", "upstreams": ["h:3"], "weight": 30},
            ],
        }
    )
    table = build_table(config)
    assert table.ranges == ((2000, "b"), (5000, "c"), (10000, "stable"))


# --- decide ------------------------------------------------------------------------------

RULES = [
    {"header": "x-group", "value": "beta", "variant": "canary"},
    {"cookie": "pin", "value": "old", "variant": "stable"},
]


@pytest.mark.parametrize(
    ("canary", "headers", "draw", "expected"),
    [
        # Weighted draw only.
        (10, {}, 0, ("canary", REASON_WEIGHT)),
        (10, {}, 1000, ("stable", REASON_WEIGHT)),
        # A header rule overrides the weights, whatever the draw.
        (0, {"x-group": "beta"}, 9999, ("canary", REASON_MATCH)),
        # Values are exact and case-sensitive.
        (0, {"x-group": "Beta"}, 9999, ("stable", REASON_WEIGHT)),
        # A cookie rule, among other cookies.
        (100, {"cookie": "a=1; pin=old; b=2"}, 0, ("stable", REASON_MATCH)),
        # First matching rule wins.
        (50, {"x-group": "beta", "cookie": "pin=old"}, 0, ("canary", REASON_MATCH)),
    ],
)
def test_decide_rules_then_weights(
    canary: float, headers: dict[str, str], draw: int, expected: tuple[str, str]
) -> None:
    table = build_table(make_config(canary, match=RULES))
    decision = decide(table, headers, draw)
    assert (decision.variant, decision.reason) == expected


def test_match_rule_overrides_sticky_key() -> None:
    table = build_table(make_config(0, match=RULES, sticky={"header": "x-user-id"}))
    decision = decide(table, {"x-user-id": "u1", "x-group": "beta"}, 0)
    assert decision.variant == "canary"
    assert decision.reason == REASON_MATCH


@pytest.mark.parametrize(
    ("sticky", "headers", "key"),
    [
        ({"header": "X-User-Id"}, {"x-user-id": "alice"}, "alice"),
        ({"cookie": "uid"}, {"cookie": "theme=dark; uid=bob"}, "bob"),
        ({"cookie": "uid"}, {"cookie": 'uid="carol"'}, "carol"),
    ],
)
def test_sticky_key_from_header_or_cookie(
    sticky: dict[str, str], headers: dict[str, str], key: str
) -> None:
    table = build_table(make_config(50, sticky=sticky))
    expected = variant_for_bucket(table, sticky_bucket("churn", key))
    for draw in (0, 5000, 9999):  # the draw is ignored when the key decides
        decision = decide(table, headers, draw)
        assert (decision.variant, decision.reason) == (expected, REASON_STICKY)


@pytest.mark.parametrize("headers", [{}, {"x-user-id": ""}, {"cookie": "uid=1"}])
def test_missing_sticky_key_falls_back_to_weighted_draw(headers: dict[str, str]) -> None:
    table = build_table(make_config(10, sticky={"header": "x-user-id"}))
    assert decide(table, headers, 0) == decide(table, {}, 0)
    assert decide(table, headers, 0).reason == REASON_WEIGHT


def test_header_names_lists_what_decisions_read() -> None:
    table = build_table(make_config(10, match=RULES, sticky={"header": "X-User-Id"}))
    assert table.header_names == {"x-group", "x-user-id", "cookie"}
    assert build_table(make_config(10)).header_names == frozenset()


# --- privileged rules and the shadow ---------------------------------------------------

FORCE = [
    {"header": "x-modelship-variant", "value": v, "variant": v, "privileged": True}
    for v in ("stable", "canary", "shadow")
]
TESTER = [{"header": "x-group", "value": v, "variant": v} for v in ("canary", "shadow")]


def shadow_config(canary: float = 10.0, **extra: object) -> RoutingConfig:
    """stable, canary (weight ``canary``) and a weightless shadow that receives copies."""
    data: dict[str, object] = {
        "deployment": "churn",
        "variants": [
            {"name": "stable", "modelVersion": "1.0", "upstreams": ["127.0.0.1:9001"]},
            {"name": "canary", "modelVersion": "2.0", "upstreams": ["127.0.0.1:9002"]},
            {"name": "shadow", "modelVersion": "3.0", "upstreams": ["127.0.0.1:9003"]},
        ],
        "mirror": {"variant": "shadow", "percent": 50},
        "match": TESTER + FORCE,
    }
    data["variants"][1]["weight"] = canary  # type: ignore[index]
    data.update(extra)
    return RoutingConfig.model_validate(data)


class FakeToken:
    """A token check that records whether it was asked."""

    def __init__(self, token: str | None) -> None:
        self.token = token
        self.asked = 0

    def valid(self, presented: bytes | str | None) -> bool:
        self.asked += 1
        return self.token is not None and presented == self.token

    def configured(self) -> bool:
        self.asked += 1
        return self.token is not None


NEEDS = "forcing variant {} needs a valid x-modelship-token"
SHADOW = "variant shadow is a shadow: it serves no client"


@pytest.mark.parametrize(
    ("token", "headers", "expected"),
    [
        # A privileged rule with the right token: forced, not pinned.
        ("s3cret", {"x-modelship-variant": "canary", "x-modelship-token": "s3cret"},
         Decision("canary", REASON_MATCH)),
        ("s3cret", {"x-modelship-variant": "stable", "x-modelship-token": "s3cret"},
         Decision("stable", REASON_MATCH)),
        # Without a token, or a wrong one: refused, naming the variant.
        ("s3cret", {"x-modelship-variant": "canary"},
         Decision("canary", REASON_REFUSED, NEEDS.format("canary"))),
        ("s3cret", {"x-modelship-variant": "canary", "x-modelship-token": "S3cret"},
         Decision("canary", REASON_REFUSED, NEEDS.format("canary"))),
        ("s3cret", {"x-modelship-variant": "canary", "x-modelship-token": ""},
         Decision("canary", REASON_REFUSED, NEEDS.format("canary"))),
        # No token configured at all: variant forcing is off.
        (None, {"x-modelship-variant": "canary", "x-modelship-token": "s3cret"},
         Decision("canary", REASON_REFUSED, NO_TOKEN_CONFIGURED)),
        # The shadow is refused even with the token, and to testers too.
        ("s3cret", {"x-modelship-variant": "shadow", "x-modelship-token": "s3cret"},
         Decision("shadow", REASON_REFUSED, SHADOW)),
        (None, {"x-group": "shadow"}, Decision("shadow", REASON_REFUSED, SHADOW)),
        # A tester rule needs no token; its requests are pinned.
        (None, {"x-group": "canary"}, Decision("canary", REASON_MATCH, pinned=True)),
        # The first matching rule decides: here the tester rule, before the forcing one.
        (None, {"x-group": "canary", "x-modelship-variant": "stable"},
         Decision("canary", REASON_MATCH, pinned=True)),
        # An unknown forced value matches no rule: the weights decide (draw 0: canary).
        (None, {"x-modelship-variant": "blue"}, Decision("canary", REASON_WEIGHT)),
    ],
)  # fmt: skip
def test_privileged_rules_and_the_shadow(
    token: str | None, headers: dict[str, str], expected: Decision
) -> None:
    table = build_table(shadow_config())
    assert decide(table, headers, 0, FakeToken(token)) == expected


def test_no_token_check_refuses_privileged_rules() -> None:
    table = build_table(shadow_config())
    decision = decide(table, {"x-modelship-variant": "canary", "x-modelship-token": "t"}, 0)
    assert decision == Decision("canary", REASON_REFUSED, NO_TOKEN_CONFIGURED)


@pytest.mark.parametrize(
    "headers", [{}, {"x-group": "canary"}, {"x-modelship-token": "s3cret"}, {"cookie": "a=b"}]
)
def test_token_is_checked_only_when_a_privileged_rule_matched(headers: dict[str, str]) -> None:
    table = build_table(shadow_config())
    token = FakeToken("s3cret")
    decide(table, headers, 0, token)
    assert token.asked == 0


def test_shadow_is_the_weightless_mirror_variant() -> None:
    assert build_table(shadow_config()).shadow == "shadow"
    # A mirror target that also serves a share of traffic is no shadow.
    weighted = shadow_config(mirror={"variant": "canary", "percent": 100})
    assert build_table(weighted).shadow is None
    assert build_table(shadow_config(0, mirror={"variant": "canary"})).shadow == "canary"
    assert build_table(make_config(10)).shadow is None
    # A rule naming a shadow that is not a mirror target is a plain weightless variant.
    unmirrored = build_table(make_config(0, match=[TESTER[0]]))
    assert decide(unmirrored, {"x-group": "canary"}, 0) == Decision(
        "canary", REASON_MATCH, pinned=True
    )


def test_token_header_is_read_only_with_privileged_rules() -> None:
    assert "x-modelship-token" in build_table(shadow_config()).header_names
    assert "x-modelship-token" not in build_table(shadow_config(match=TESTER)).header_names


# --- statistics --------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_weighted_draws_hold_ten_percent(seed: int) -> None:
    """10 % over 20,000 draws stays within 4.5 sigma (±190 requests, i.e. 9.05 %..10.95 %)."""
    table = build_table(make_config(10))
    rng = random.Random(seed)
    n = 20_000
    canary = sum(decide(table, {}, rng.randrange(BUCKETS)).variant == "canary" for _ in range(n))
    assert within_sigmas(canary, n, 0.10), canary


def test_sticky_keys_hold_ten_percent() -> None:
    table = build_table(make_config(10, sticky={"header": "x-user-id"}))
    n = 20_000
    canary = sum(decide(table, {"x-user-id": f"user-{i}"}, 0).variant == "canary" for i in range(n))
    assert within_sigmas(canary, n, 0.10), canary


def test_raising_weight_never_moves_a_key_back_to_stable() -> None:
    keys = [f"user-{i}" for i in range(20_000)]
    before = build_table(make_config(10, sticky={"header": "x-user-id"}))
    after = build_table(make_config(50, sticky={"header": "x-user-id"}))
    moved_back = moved_forward = 0
    for key in keys:
        a = decide(before, {"x-user-id": key}, 0).variant
        b = decide(after, {"x-user-id": key}, 0).variant
        moved_back += a == "canary" and b == "stable"
        moved_forward += a == "stable" and b == "canary"
    assert moved_back == 0
    # Roughly 40 % of users move forward: the test would notice a frozen assignment.
    assert within_sigmas(moved_forward, len(keys), 0.40)


# --- mirror ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("percent", "served", "draw", "expected"),
    [
        (100, "stable", 9999, "canary"),
        (0, "stable", 0, None),
        (10, "stable", 999, "canary"),
        (10, "stable", 1000, None),
        (100, "canary", 0, None),  # never copy a request to the variant that served it
    ],
)
def test_mirror_target(percent: float, served: str, draw: int, expected: str | None) -> None:
    table = build_table(make_config(0, mirror={"variant": "canary", "percent": percent}))
    assert mirror_target(table, served, draw) == expected


def test_no_mirror_configured() -> None:
    assert mirror_target(build_table(make_config(10)), "stable", 0) is None


def test_mirror_sampling_rate() -> None:
    table = build_table(make_config(0, mirror={"variant": "canary", "percent": 25}))
    rng = random.Random(7)
    n = 20_000
    copies = sum(
        mirror_target(table, "stable", rng.randrange(BUCKETS)) is not None for _ in range(n)
    )
    assert within_sigmas(copies, n, 0.25)


# --- fallback ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ready", "chosen", "expected"),
    [
        ({"stable", "canary"}, "canary", ("canary", False)),
        ({"stable"}, "canary", ("stable", True)),
        ({"canary"}, "canary", ("canary", False)),
        ({"canary"}, "stable", (None, False)),
        (set(), "canary", (None, True)),
    ],
)
def test_resolve_available(ready: set[str], chosen: str, expected: tuple[str | None, bool]) -> None:
    assert resolve_available(chosen, "stable", ready.__contains__) == expected


# --- cookies -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("", {}),
        ("a=1", {"a": "1"}),
        ("a=1; b=2", {"a": "1", "b": "2"}),
        ("a=1;b=2;;junk; =x", {"a": "1", "b": "2"}),
        ("a=1; a=2", {"a": "1"}),
        ('a="quoted"', {"a": "quoted"}),
        ("a=x=y", {"a": "x=y"}),
    ],
)
def test_parse_cookies(header: str, expected: dict[str, str]) -> None:
    assert parse_cookies(header) == expected


def _canary_share(table_config: RoutingConfig, users: list[str]) -> set[str]:
    table = build_table(table_config)
    return {u for u in users if decide(table, {"x-user": u}, draw=0).variant == "canary"}


def test_sticky_canary_users_never_flip_back_over_a_whole_rollout() -> None:
    users = [f"user-{i}" for i in range(5000)]
    previous: set[str] = set()
    for weight in (10.0, 20.0, 50.0, 100.0):
        config = make_config(canary=weight, sticky={"header": "x-user"}, salt="churn/2.0/abc")
        in_canary = _canary_share(config, users)
        assert previous <= in_canary, f"users left the canary at {weight}%"
        assert abs(len(in_canary) / len(users) - weight / 100) < 0.03
        previous = in_canary
    assert previous == set(users)


def test_two_salts_assign_users_independently() -> None:
    users = [f"user-{i}" for i in range(20000)]
    first = _canary_share(make_config(canary=50.0, sticky={"header": "x-user"}, salt="a/1"), users)
    second = _canary_share(make_config(canary=50.0, sticky={"header": "x-user"}, salt="a/2"), users)
    p1, p2 = len(first) / len(users), len(second) / len(users)
    both = len(first & second) / len(users)
    # Independent assignment: the overlap is the product of the shares (0.25 here).
    assert abs(both - p1 * p2) < 0.02


def test_salt_defaults_to_the_deployment_name() -> None:
    table = build_table(make_config(sticky={"header": "x-user"}))
    assert table.salt == "churn"
    assert build_table(make_config(sticky={"header": "x-user"}, salt="churn/2")).salt == "churn/2"
