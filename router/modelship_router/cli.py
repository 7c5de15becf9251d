"""``modelship-router``: the A/B router's command line."""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import logging
import signal
import sys
from pathlib import Path
from typing import Any

import uvloop
from pydantic import ValidationError

from modelship_router.app import Router, create_router
from modelship_router.config import RoutingConfig
from modelship_router.settings import RouterSettings
from modelship_router.sources import ConfigError, describe_validation_error, load_config_file

DESCRIPTION = """\
Route one ModelDeployment's traffic between its variants (stable, canary, ...):
match rules first (a header or cookie value forces a variant), then sticky assignment
(a header or cookie key hashed into 10,000 buckets), then weights; optional mirroring
of a share of requests to a shadow variant. Every response carries x-modelship-variant
and x-model-version. The router also answers GET /healthz, /readyz and /metrics.

Two modes:
  static      --config FILE: routing from a YAML/JSON file with static upstream
              addresses, re-read whenever the file changes (local use and tests).
  Kubernetes  --deployment NAME: watches the ConfigMap NAME-router (key routing.json,
              written by the operator) and the EndpointSlices of each variant's Service,
              in-cluster or with --kubeconfig.
"""

EXAMPLE = """\
example routing file (YAML):
  deployment: churn
  variants:
    - {name: stable, modelVersion: "1.4.0", upstreams: ["127.0.0.1:9001"]}
    - {name: canary, modelVersion: "1.5.0", upstreams: ["127.0.0.1:9002"], weight: 10}
  sticky: {header: x-user-id}
  match: [{header: x-group, value: beta, variant: canary}]
  mirror: {variant: canary, percent: 100}
"""


def _env_help() -> str:
    lines = ["every setting (flags win over environment variables):"]
    for name, field in RouterSettings.model_fields.items():
        default = field.default
        shown = "-" if default is None else str(default)
        lines.append(f"  MODELSHIP_ROUTER_{name.upper():<26} {field.description} [{shown}]")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="modelship-router",
        description=DESCRIPTION,
        epilog=EXAMPLE + "\n" + _env_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config", type=Path, metavar="FILE", help="static routing file")
    parser.add_argument("--host", help="address to listen on [0.0.0.0]")
    parser.add_argument("--port", type=int, help="port to listen on [8080]")
    parser.add_argument("--deployment", help="ModelDeployment name (Kubernetes mode)")
    parser.add_argument("--namespace", help="namespace (default: the pod's own)")
    parser.add_argument("--configmap", help="ConfigMap to watch [DEPLOYMENT-router]")
    parser.add_argument("--kubeconfig", type=Path, help="kubeconfig instead of in-cluster")
    parser.add_argument("--upstream-timeout", type=float, help="seconds per upstream answer")
    parser.add_argument(
        "--token-file", type=Path, metavar="FILE", help="access token for privileged rules"
    )
    parser.add_argument("--log-level", help="debug, info, warning, error [info]")
    parser.add_argument(
        "--drain-seconds",
        type=float,
        help="after SIGTERM, seconds to keep answering with /readyz 503 before stopping [5]",
    )
    parser.add_argument(
        "--check",
        type=Path,
        metavar="FILE",
        help="validate a routing file, print the effective weights and exit",
    )
    parser.add_argument(
        "--print-schema", action="store_true", help="print the routing JSON schema and exit"
    )
    return parser


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    keys = (
        "config",
        "host",
        "port",
        "deployment",
        "namespace",
        "configmap",
        "kubeconfig",
        "upstream_timeout",
        "drain_seconds",
        "token_file",
        "log_level",
    )
    return {k: getattr(args, k) for k in keys if getattr(args, k) is not None}


def _check(path: Path) -> int:
    try:
        config = load_config_file(path)
    except ConfigError as exc:
        print(f"invalid: {exc}", file=sys.stderr)
        return 2
    print(json.dumps({"valid": True, "generation": config.generation, **config.weights()}))
    return 0


async def _serve(router: Router) -> None:
    await router.start()
    # Long-lived startup objects never become garbage: keep the collector off them.
    gc.collect()
    gc.freeze()
    signals = 0
    first, second = asyncio.Event(), asyncio.Event()
    loop = asyncio.get_running_loop()

    def on_signal() -> None:
        nonlocal signals
        signals += 1
        (first if signals == 1 else second).set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal)
    await first.wait()
    log = logging.getLogger(__name__)
    drain = router.settings.drain_seconds
    if drain > 0:
        log.info("draining: answering for %gs more with readiness false", drain)
        await router.drain(drain, second)
    log.info("stopping: finishing requests in flight")
    await router.stop()


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    if args.print_schema:
        print(json.dumps(RoutingConfig.model_json_schema(by_alias=True), indent=2))
        return
    if args.check is not None:
        raise SystemExit(_check(args.check))
    try:
        settings = RouterSettings(**_overrides(args))
    except ValidationError as exc:
        raise SystemExit(f"modelship-router: {describe_validation_error(exc)}") from None
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if settings.config is not None:
        # Fail fast on a broken file at start-up; later edits that break it are refused.
        try:
            load_config_file(settings.config)
        except ConfigError as exc:
            raise SystemExit(f"modelship-router: {exc}") from None
    try:
        router = create_router(settings)
    except Exception as exc:  # e.g. no kubeconfig / service account, no namespace
        raise SystemExit(f"modelship-router: cannot start: {exc}") from None
    uvloop.run(_serve(router))
