"""Pure routing decisions: which variant serves a request, and whether to mirror it.

No I/O and no clock here; randomness comes in as an argument (a bucket draw in
``range(BUCKETS)``), so every decision is reproducible in table-driven tests.

Bucket layout. Every variant owns a contiguous range of the :data:`BUCKETS` buckets,
sized by its weight. Non-fallback variants come first, in the order they are declared,
starting at bucket 0; the fallback (stable) variant owns the top of the range. With one
canary, a key goes to the canary exactly when its bucket is below the canary's weight
(in buckets), so raising the canary's weight only ever moves keys from stable to canary.

Sticky hash (documented so other tools can reproduce an assignment)::

    bucket = int.from_bytes(sha256(f"{salt}\\x00{key}".encode()).digest()[:8], "big")
             % 10000

``salt`` is the config's ``salt`` (the deployment name when unset). The operator sets it
per rollout (deployment and candidate version), so two experiments split their users
independently, while within one rollout a key's bucket never changes: as the canary's
weight grows from 10% to 20%, 50% and 100% a user in the canary stays in it.

Unit. A request with a sticky key also carries its *unit*: the first 16 lower hex chars of
that same digest (``sha256(...).digest()[:8].hex()``; one hash gives both). The router
forwards it as ``x-modelship-unit`` (the raw key never leaves the router), serving pods
count A/B statistics per unit (user), and it chooses the user's pod within the variant
(:func:`modelship_router.replica.rendezvous`).

Refusals. A privileged match rule is honoured only when the request's
``x-modelship-token`` is valid; the check comes in as an argument (:class:`TokenCheck`),
asked only when such a rule matched, so requests no privileged rule matches never touch
the token. A match naming the shadow (the mirror variant, when its weight is 0) is refused
whatever the token: a shadow's answers are discarded, it serves no client.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

from modelship_router.access import TOKEN_HEADER
from modelship_router.config import BUCKETS, RoutingConfig, weight_to_buckets

#: Why a variant was chosen (also a log/debug detail).
REASON_MATCH = "match"
REASON_STICKY = "sticky"
REASON_WEIGHT = "weight"
#: A match rule named a variant this request may not force (see ``Decision.refusal``).
REASON_REFUSED = "refused"

#: Status of a refused decision.
REFUSED_STATUS = 403
#: Refusal reasons (the router's JSON error message).
NO_TOKEN_CONFIGURED = "variant forcing is off: no access token is configured"


def needs_token(variant: str) -> str:
    return f"forcing variant {variant} needs a valid x-modelship-token"


def is_shadow(variant: str) -> str:
    return f"variant {variant} is a shadow: it serves no client"


class TokenCheck(Protocol):
    """The access token, as routing needs it (:class:`modelship_router.access.AccessToken`)."""

    def valid(self, presented: bytes | str | None) -> bool: ...

    def configured(self) -> bool: ...


@dataclass(frozen=True, slots=True)
class Rule:
    """A compiled match rule: header (lowercase) or cookie name, exact value, variant."""

    header: str | None
    cookie: str | None
    value: str
    variant: str
    privileged: bool = False


@dataclass(frozen=True, slots=True)
class RoutingTable:
    """A RoutingConfig compiled for fast, pure per-request decisions."""

    salt: str
    #: (exclusive upper bucket, variant) in ascending order; empty ranges are dropped.
    ranges: tuple[tuple[int, str], ...]
    fallback: str
    sticky_header: str | None
    sticky_cookie: str | None
    rules: tuple[Rule, ...]
    mirror_variant: str | None
    #: Mirror a request when a draw in range(BUCKETS) is below this.
    mirror_buckets: int
    #: Lowercase header names a decision reads ("cookie" included when cookies matter,
    #: the token header when a rule is privileged).
    header_names: frozenset[str]
    #: The mirror variant when it has no weight: no match may send a client to it.
    shadow: str | None = None


@dataclass(frozen=True, slots=True)
class Decision:
    """The variant chosen for a request and why; or why the request is refused.

    ``refusal`` (a message for a 403) is set when a match rule named a variant the
    request may not force; ``variant`` is then that variant, not one to serve.
    ``pinned`` is set when a non-privileged match rule decided (a tester's request).
    ``unit`` is the request's sticky unit (16 hex chars) when the table has a sticky key and
    the request carries it, whatever decided the variant (None for a refused request).
    """

    variant: str
    reason: str
    refusal: str | None = None
    pinned: bool = False
    unit: str | None = None


def build_table(config: RoutingConfig) -> RoutingTable:
    """Compile ``config`` into a :class:`RoutingTable`."""
    buckets = config.buckets()
    order = [v.name for v in config.variants if v.name != config.fallback] + [config.fallback]
    ranges: list[tuple[int, str]] = []
    upper = 0
    for name in order:
        if buckets[name] > 0:
            upper += buckets[name]
            ranges.append((upper, name))
    rules = tuple(Rule(r.header, r.cookie, r.value, r.variant, r.privileged) for r in config.match)
    sticky_header = config.sticky.header if config.sticky else None
    sticky_cookie = config.sticky.cookie if config.sticky else None
    names = {r.header for r in rules if r.header is not None}
    if sticky_header is not None:
        names.add(sticky_header)
    if sticky_cookie is not None or any(r.cookie is not None for r in rules):
        names.add("cookie")
    if any(r.privileged for r in rules):
        names.add(TOKEN_HEADER)
    mirror = config.mirror
    shadow = mirror.variant if mirror is not None and buckets[mirror.variant] == 0 else None
    return RoutingTable(
        salt=config.salt if config.salt is not None else config.deployment,
        ranges=tuple(ranges),
        fallback=config.fallback,
        sticky_header=sticky_header,
        sticky_cookie=sticky_cookie,
        rules=rules,
        mirror_variant=mirror.variant if mirror is not None else None,
        mirror_buckets=weight_to_buckets(mirror.percent) if mirror is not None else 0,
        header_names=frozenset(names),
        shadow=shadow,
    )


def sticky_digest(salt: str, key: str) -> bytes:
    """The first 8 bytes of the salted sticky hash of ``key``: its bucket and its unit."""
    return hashlib.sha256(f"{salt}\x00{key}".encode()).digest()[:8]


def sticky_bucket(salt: str, key: str) -> int:
    """Stable bucket in ``range(BUCKETS)`` for ``key``, salted per rollout."""
    return int.from_bytes(sticky_digest(salt, key), "big") % BUCKETS


def sticky_unit(salt: str, key: str) -> str:
    """The unit of ``key``: 16 lower hex chars of the same digest as its bucket."""
    return sticky_digest(salt, key).hex()


def variant_for_bucket(table: RoutingTable, bucket: int) -> str:
    """The variant owning ``bucket`` in the table's layout."""
    for upper, name in table.ranges:
        if bucket < upper:
            return name
    # Unreachable with a valid config (ranges cover all buckets); stay total anyway.
    return table.fallback


def parse_cookies(header: str) -> dict[str, str]:
    """Parse a Cookie header (``a=1; b=2``); malformed pairs are skipped, first wins."""
    cookies: dict[str, str] = {}
    for part in header.split(";"):
        name, sep, value = part.strip().partition("=")
        if not sep or not name:
            continue
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] == '"':
            value = value[1:-1]
        cookies.setdefault(name, value)
    return cookies


def decide(
    table: RoutingTable,
    headers: Mapping[str, str],
    draw: int,
    token: TokenCheck | None = None,
) -> Decision:
    """Choose the variant for a request.

    ``headers`` maps lowercase header names to values (only ``table.header_names`` are
    read); ``draw`` is a uniform random integer in ``range(BUCKETS)`` used when neither a
    match rule nor a sticky key decides. ``token`` checks the request's
    ``x-modelship-token`` when a privileged rule matched (None: no token is configured).
    """
    cookies: dict[str, str] | None = None
    for rule in table.rules:
        if rule.header is not None:
            if headers.get(rule.header) == rule.value:
                return _matched(table, rule, headers, token)
        else:
            if cookies is None:
                cookies = parse_cookies(headers.get("cookie", ""))
            if cookies.get(rule.cookie or "") == rule.value:
                return _matched(table, rule, headers, token)
    key = sticky_key(table, headers, cookies)
    if key:
        digest = sticky_digest(table.salt, key)
        bucket = int.from_bytes(digest, "big") % BUCKETS
        return Decision(variant_for_bucket(table, bucket), REASON_STICKY, unit=digest.hex())
    return Decision(variant_for_bucket(table, draw), REASON_WEIGHT)


def sticky_key(
    table: RoutingTable, headers: Mapping[str, str], cookies: dict[str, str] | None = None
) -> str | None:
    """The request's sticky key (header or cookie, as the table says), if it has one."""
    if table.sticky_header is not None:
        return headers.get(table.sticky_header)
    if table.sticky_cookie is not None:
        if cookies is None:
            cookies = parse_cookies(headers.get("cookie", ""))
        return cookies.get(table.sticky_cookie)
    return None


def _matched(
    table: RoutingTable, rule: Rule, headers: Mapping[str, str], token: TokenCheck | None
) -> Decision:
    """The decision of a matching rule: the forced variant, or why it is refused."""
    variant = rule.variant
    if rule.privileged:
        if token is None or not token.configured():
            return Decision(variant, REASON_REFUSED, NO_TOKEN_CONFIGURED)
        if not token.valid(headers.get(TOKEN_HEADER)):
            return Decision(variant, REASON_REFUSED, needs_token(variant))
    if variant == table.shadow:
        return Decision(variant, REASON_REFUSED, is_shadow(variant))
    key = sticky_key(table, headers)
    unit = sticky_unit(table.salt, key) if key else None
    return Decision(variant, REASON_MATCH, pinned=not rule.privileged, unit=unit)


def mirror_target(table: RoutingTable, served: str, draw: int) -> str | None:
    """Variant to send a shadow copy to, or None.

    ``draw`` is uniform in ``range(BUCKETS)``. A request the shadow variant serves itself
    is not copied to it again.
    """
    if table.mirror_variant is None or table.mirror_variant == served:
        return None
    return table.mirror_variant if draw < table.mirror_buckets else None


def resolve_available(
    chosen: str, fallback: str, has_upstream: Callable[[str], bool]
) -> tuple[str | None, bool]:
    """Apply the fallback rule: ``(variant to use or None, whether it fell back)``.

    A chosen variant with no ready upstream falls back to ``fallback``; if that has none
    either, there is nothing to route to (None).
    """
    if has_upstream(chosen):
        return chosen, False
    if chosen != fallback and has_upstream(fallback):
        return fallback, True
    return None, chosen != fallback
