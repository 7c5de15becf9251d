"""``modelship-operator``: the operator process.

Start-up order: read the settings (a bad value stops here, naming the variable), serve
/metrics, /healthz and /readyz, then — with leader election — wait for the Lease, and only
while holding it run kopf with the reconcile handlers. Losing the Lease stops the process
(the Deployment restarts it as a standby); SIGTERM stops kopf, releases the Lease and exits 0.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import signal
import sys
import textwrap
import time
from collections.abc import Sequence
from typing import Any

from pydantic import ValidationError

from modelship_operator.settings import OperatorSettings

log = logging.getLogger("modelship_operator")

#: How long kopf may take to stop before the process exits anyway.
STOP_TIMEOUT = 20.0
CRD_RETRY_SECONDS = 10.0
#: How long the clean-up after losing the Lease may take before the process ends anyway.
EXIT_GRACE_SECONDS = 2.0


def _settings_help() -> str:
    lines = ["environment (prefix MODELSHIP_OPERATOR_; see docs/operator.md):"]
    for name, info in OperatorSettings.model_fields.items():
        env = f"MODELSHIP_OPERATOR_{name.upper()}"
        text = textwrap.fill(
            info.description or "", width=76, initial_indent="      ", subsequent_indent="      "
        )
        lines.append(f"  {env}\n{text}")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="modelship-operator",
        description=(
            "Run the ModelDeployment operator: for each ModelDeployment, a serving Deployment "
            "per model version, Services, a router and its routing config, status and Events. "
            "Configured through MODELSHIP_OPERATOR_* environment variables (below). Serves "
            "/metrics, /healthz and /readyz on MODELSHIP_OPERATOR_HTTP_PORT."
        ),
        epilog=_settings_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--kubeconfig",
        help="kubeconfig to use (default: the pod's service account, else $KUBECONFIG or "
        "~/.kube/config)",
    )
    parser.add_argument(
        "--healthcheck",
        metavar="URL",
        help="GET URL, exit 0 if it answers 2xx, else 1 (what `helm test` runs), and exit",
    )
    parser.add_argument(
        "--check-config",
        action="store_true",
        help="validate the settings, print them as JSON and exit",
    )
    return parser


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message (and the exception)."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def configure_logging(settings: OperatorSettings) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if settings.log_json:
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    level = getattr(logging, settings.log_level.upper())
    root.setLevel(level)
    # kopf and the HTTP clients narrate every watch at INFO; keep them to what matters.
    quiet = level if level == logging.DEBUG else max(level, logging.WARNING)
    for name in ("kopf", "httpx", "httpcore", "aiohttp.access"):
        logging.getLogger(name).setLevel(quiet)


def describe_settings_error(exc: ValidationError) -> str:
    problems = []
    for error in exc.errors():
        field = ".".join(str(p) for p in error["loc"])
        env = f"MODELSHIP_OPERATOR_{field.upper()}" if field else "settings"
        problems.append(f"{env}: {error['msg']}")
    return "; ".join(problems)


async def run(settings: OperatorSettings, kubeconfig: str | None = None) -> int:
    """Run until stopped; the process exit code."""
    import kopf

    from modelship_operator.cache import ChildCache
    from modelship_operator.kinds import CHILD_KINDS
    from modelship_operator.kopf_wiring import build_registry, kopf_settings
    from modelship_operator.kube import Kube
    from modelship_operator.leader import LeaderElector, LostLeadership, own_identity, own_namespace
    from modelship_operator.metrics import HealthState, OperatorMetrics, http_app, serve_http
    from modelship_operator.reconciler import Reconciler
    from modelship_operator.workqueue import WorkQueue

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)

    identity = own_identity()
    metrics = OperatorMetrics()
    health = HealthState(stale_after=30.0)
    runner = await serve_http(http_app(metrics, health), "0.0.0.0", settings.http_port)
    log.info(
        "modelship-operator %s starting as %s; /metrics, /healthz, /readyz on port %d",
        _version(),
        identity,
        settings.http_port,
    )
    # Sized for the work queue: every running reconcile may hold a connection, and every
    # watch of the cache holds one for as long as it runs.
    watches = (len(CHILD_KINDS) + 1) * max(1, len(settings.namespaces))
    kube = Kube.connect(kubeconfig, connections=settings.max_concurrent_reconciles + watches + 4)
    # The Lease has a client of its own: a busy reconcile pool never delays a renewal.
    lease_kube = Kube.connect(kubeconfig, connections=2)
    elector: LeaderElector | None = None
    cache: ChildCache | None = None
    reconciler: Reconciler | None = None
    queue: WorkQueue | None = None
    beat_task = asyncio.create_task(_heartbeat(health))
    try:
        if settings.leader_election:

            def leading(value: bool) -> None:
                health.leader = value
                metrics.leader.set(1 if value else 0)

            namespace = settings.lease_namespace or own_namespace()
            elector = LeaderElector(
                lease_kube,
                namespace,
                settings.lease_name,
                identity,
                settings.lease_duration_seconds,
                on_change=leading,
            )
            health.started = True
            log.info("waiting for lease %s/%s", namespace, settings.lease_name)
            if not await _first(elector.acquire(), stop.wait()):
                return 0  # stopped while standing by
        else:
            health.leader = True
            metrics.leader.set(1)
        health.started = True

        if not await _first(_wait_for_crd(kube), stop.wait()):
            return 0
        reconciler = Reconciler(kube, settings, metrics, identity)
        queue = WorkQueue(
            reconciler.reconcile,
            metrics,
            settings.max_concurrent_reconciles,
            on_forget=reconciler.forget,
        )
        health.queue = queue
        poke_child = queue.poke
        cache = ChildCache(
            kube.client,
            None if settings.cluster_wide else settings.namespaces,
            lambda namespace, name: poke_child(namespace, name, urgent=False),
            reconciler.is_own,
        )
        reconciler.cache = cache
        cache.start()
        if not await _first(cache.wait_synced(), stop.wait()):
            return 0
        log.info("children and pods listed; watching them")
        kopf_stop = asyncio.Event()
        kopf_ready = asyncio.Event()
        operator = asyncio.create_task(
            kopf.operator(
                registry=build_registry(queue, kubeconfig),
                settings=kopf_settings(settings),
                clusterwide=settings.cluster_wide,
                namespaces=settings.namespaces,
                standalone=True,
                # Given, so kopf never asks the password database (uid 65532 may have no
                # entry in a distroless image).
                identity=identity,  # type: ignore[arg-type]
                stop_flag=kopf_stop,
                ready_flag=kopf_ready,
            ),
            name="kopf",
        )
        # kopf installs its own SIGTERM/SIGINT handlers as it starts; take them back, so a
        # stop goes through the order below (stop reconciling, stop kopf, release the Lease).
        reclaim = asyncio.create_task(_reclaim_signals(kopf_ready, stop), name="signals")
        waiters = {operator, asyncio.create_task(stop.wait(), name="stop")}
        holder = None
        if elector is not None:
            holder = asyncio.create_task(elector.hold(), name="lease")
            waiters.add(holder)
        log.info(
            "reconciling ModelDeployments in %s",
            "all namespaces" if settings.cluster_wide else ", ".join(settings.namespaces),
        )
        done, pending = await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        code = 0
        if holder is not None and holder in done:
            exc = holder.exception()
            if isinstance(exc, LostLeadership):
                log.error("%s: stopping (a restart makes this replica a standby)", exc)
            else:
                log.error("leader election failed: %r", exc)
            code = 1
            # Whatever the clean-up below meets (a connection that never answers), the
            # process ends within a second or two: it must not linger as a non-leader.
            _exit_soon(code, EXIT_GRACE_SECONDS)
        if stop.is_set():
            log.info("stopping on request")
        if operator in done and operator.exception() is not None:
            log.error("kopf stopped: %r", operator.exception())
            code = 1
        # Stop acting first: no reconcile may run once the Lease could be someone else's.
        await queue.close()
        kopf_stop.set()
        with contextlib.suppress(Exception):
            # After losing the Lease there is nothing to wind down: exit at once.
            await asyncio.wait_for(asyncio.shield(operator), 0 if code else STOP_TIMEOUT)
        for task in (*pending, reclaim):
            task.cancel()
        return code
    finally:
        if queue is not None:
            await queue.close()
        if cache is not None:
            await cache.close()
        if reconciler is not None:
            await reconciler.close()
        if elector is not None:
            await elector.release()
        beat_task.cancel()
        await kube.close()
        await lease_kube.close()
        await runner.cleanup()
        log.info("modelship-operator stopped")


def _exit_soon(code: int, after: float) -> None:
    """End the process ``after`` seconds from now unless it ended by then."""
    import os
    import threading

    def end() -> None:
        logging.shutdown()
        os._exit(code)

    timer = threading.Timer(after, end)
    timer.daemon = True
    timer.start()


async def _reclaim_signals(kopf_ready: asyncio.Event, stop: asyncio.Event) -> None:
    await kopf_ready.wait()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)


async def _wait_for_crd(kube: Any) -> None:
    """kopf resolves its resources once (CRD scanning is off, so it needs no permission on
    CRDs): wait here until the API serves ModelDeployments, saying what to do meanwhile."""
    from modelship_kube.errors import ApiError

    from modelship_operator.spec import API_VERSION, PLURAL

    while True:
        try:
            if await kube.serves(API_VERSION, PLURAL):
                return
            log.error(
                "the API does not serve %s %s: install the CRD "
                "(kubectl apply -f manifests/crds/modeldeployments.yaml); checking every 10s",
                API_VERSION,
                PLURAL,
            )
        except ApiError as exc:
            log.warning("checking for the ModelDeployment CRD: %s", exc)
        await asyncio.sleep(CRD_RETRY_SECONDS)


async def _heartbeat(health: Any) -> None:
    """The event loop turns: liveness fails only if the process hangs."""
    while True:
        health.beat()
        await asyncio.sleep(5)


async def _first(wanted: Any, stopper: Any) -> bool:
    """Await ``wanted`` unless ``stopper`` finishes first; True if ``wanted`` finished."""
    task = asyncio.ensure_future(wanted)
    other = asyncio.ensure_future(stopper)
    done, pending = await asyncio.wait({task, other}, return_when=asyncio.FIRST_COMPLETED)
    for p in pending:
        p.cancel()
    if task in done:
        task.result()
        return True
    return False


def _version() -> str:
    from modelship_operator.settings import package_version

    return package_version()


def healthcheck(url: str, timeout: float = 5.0) -> int:
    """One GET; 0 on 2xx. Retries briefly, since a Service may take a moment to route."""
    import urllib.error
    import urllib.request

    deadline = time.monotonic() + 30
    while True:
        try:
            with urllib.request.urlopen(url, timeout=timeout) as response:
                print(f"{url}: {response.status}")
                return 0 if 200 <= response.status < 300 else 1
        except (urllib.error.URLError, OSError) as error:
            if time.monotonic() > deadline:
                print(f"{url}: {error}", file=sys.stderr)
                return 1
            time.sleep(1)


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    if args.healthcheck:
        raise SystemExit(healthcheck(args.healthcheck))
    try:
        settings = OperatorSettings()
    except ValidationError as exc:
        message = f"modelship-operator: invalid setting: {describe_settings_error(exc)}"
        raise SystemExit(message) from None
    if args.check_config:
        print(settings.model_dump_json(indent=2))
        return
    configure_logging(settings)
    raise SystemExit(asyncio.run(run(settings, args.kubeconfig)))


if __name__ == "__main__":
    main()
