"""The operator at scale: N ModelDeployments on one replica, the code before against now.

For each side (``before``: the operator of a git ref, ``--before``, default ``main``, taken
with ``git archive``; ``now``: this checkout), in one run and the same way:

1. a fresh bare kube-apiserver + etcd on loopback (``tests/operator/apiserver.py``: no
   nodes and no controllers, so no pod ever runs — what a cordoned node gives), the CRD,
   namespaces ``bench`` and ``modelship-system``;
2. one operator process with its defaults (leader election on), supervised like the
   kubelet would: restarted when it exits or when ``/healthz`` fails three times in a row
   (every 10 s); restarts are counted;
3. for each size of ``--sizes`` (cumulative: 100, then 400 more to 500, ...): create the
   ModelDeployments (16 at a time), then measure the time from the last create to all of
   them reconciled (``status.observedGeneration`` equal to ``metadata.generation`` *and*
   the stable Deployment present: a status alone may be written before the children), the
   child Deployments present, then ``--idle-seconds`` with nothing changing: the operator's
   CPU (share of one core, from /proc), RSS at the end, the API requests it made meanwhile
   (from the API server's ``apiserver_request_total``; the benchmark itself reads only
   /metrics then) and how many ModelDeployments were written; reconcile p50/p99 from the
   operator's own histogram over the size's window (bucket upper bounds);
4. at the largest size: ``--changes`` concurrent spec changes (``spec.replicas`` 1 -> 2):
   how many were acted on (status at the new generation and the stable Deployment at 2
   replicas) within 10 s, and when the last one was;
5. then ``--rollouts`` canary rollouts started at once, analysed for ``--rollout-seconds``
   against a real Prometheus: how late each analysis ran after its due time
   (``bench/operator_rollouts.py`` says what stands in for the pods a bare API server
   never runs).

Bounded: each wait for "all reconciled" stops after ``--timeout`` seconds (what was done by
then is reported), the spec changes after 60 s. Progress goes to stderr, the results (a
Markdown table with the ratios now/before, and JSON with ``--json``) to stdout.

Usage: .venv/bin/python bench/run_operator_scale.py [--sizes 100,500,1000] [--before main]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "operator"))

sys.path.insert(0, str(ROOT / "bench"))

import operator_rollouts  # noqa: E402
from apiserver import ADMIN_TOKEN, ApiServer, start_apiserver  # noqa: E402

NAMESPACE = "bench"
MDS = f"/apis/modelship.io/v1alpha2/namespaces/{NAMESPACE}/modeldeployments"
DEPLOYMENTS = f"/apis/apps/v1/namespaces/{NAMESPACE}/deployments"
CLK_TCK = os.sysconf("SC_CLK_TCK")
CONCURRENCY = 16
STABLE = "app.kubernetes.io/managed-by=modelship,modelship.io/variant=stable"


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def resource(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "modelship.io/v1alpha2",
        "kind": "ModelDeployment",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {
            "model": {
                "version": "1.4.0",
                "uri": f"file:///models/{name}-1.4.0.skops",
                "sha256": "a" * 64,
            }
        },
    }


# --- the operator process ------------------------------------------------------------------


class Operator:
    """One operator process from ``source``, restarted like a kubelet would."""

    def __init__(
        self, source: Path, kubeconfig: Path, logfile: Path, env: dict[str, str] | None = None
    ) -> None:
        self.source = source
        self.env = env or {}
        self.kubeconfig = kubeconfig
        self.logfile = logfile
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.restarts = 0
        self.reasons: list[str] = []
        self._failed_probes = 0

    def start(self) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("MODELSHIP_OPERATOR_")}
        env.update(
            PYTHONPATH=f"{self.source / 'operator'}:{self.source / 'kube'}",
            MODELSHIP_OPERATOR_HTTP_PORT=str(self.port),
            MODELSHIP_OPERATOR_LEASE_NAMESPACE="modelship-system",
            MODELSHIP_OPERATOR_LOG_LEVEL="warning",
            POD_NAME="bench-operator",
        )
        env.update(self.env)
        out = open(self.logfile, "ab")  # noqa: SIM115 - the process keeps it
        self.process = subprocess.Popen(
            [sys.executable, "-m", "modelship_operator.cli", "--kubeconfig", str(self.kubeconfig)],
            env=env,
            cwd=tempfile.gettempdir(),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        out.close()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)

    def supervise(self) -> None:
        """Called every 10 s: restart on exit or on three failed liveness probes."""
        assert self.process is not None
        code = self.process.poll()
        if code is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/healthz", timeout=5):
                    self._failed_probes = 0
            except OSError:
                self._failed_probes += 1
            if self._failed_probes < 3:
                return
            self.reasons.append("liveness")
            self.stop()
        else:
            self.reasons.append(f"exit {code}")
        self.restarts += 1
        self._failed_probes = 0
        log(f"operator restarted ({self.reasons[-1]})")
        self.start()

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK

    def rss_mb(self) -> float:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return 0.0

    def histogram(
        self, name: str = "modelship_operator_reconcile_duration_seconds"
    ) -> dict[float, float]:
        """Cumulative bucket counts of one of the operator's histograms."""
        url = f"http://127.0.0.1:{self.port}/metrics"
        try:
            with urllib.request.urlopen(url, timeout=10) as answer:
                text = answer.read().decode()
        except OSError:
            return {}
        buckets: dict[float, float] = {}
        pattern = rf'^{name}_bucket\{{le="([^"]+)"\}} (\S+)$'
        for match in re.finditer(pattern, text, re.M):
            buckets[float(match.group(1))] = float(match.group(2))
        return buckets


def quantile(before: dict[float, float], after: dict[float, float], q: float) -> float | None:
    """The upper bound of the bucket holding quantile ``q`` of the observations between
    the two snapshots."""
    diff = {le: after.get(le, 0.0) - before.get(le, 0.0) for le in after}
    total = diff.get(float("inf"), 0.0)
    if total <= 0:
        return None
    for le in sorted(diff):
        if diff[le] >= q * total:
            return le
    return None


# --- the API ---------------------------------------------------------------------------------


def api_client(server: ApiServer) -> httpx.AsyncClient:
    text = server.kubeconfig.read_text()
    url = re.search(r"server: '([^']+)'", text)
    assert url is not None
    return httpx.AsyncClient(
        base_url=url.group(1),
        verify=False,
        headers={"authorization": f"Bearer {ADMIN_TOKEN}"},
        timeout=60,
        limits=httpx.Limits(max_connections=CONCURRENCY * 2),
    )


async def list_all(
    api: httpx.AsyncClient, path: str, params: dict[str, str] | None = None
) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    query = {**(params or {}), "limit": "500"}
    while True:
        page = (await api.get(path, params=query)).raise_for_status().json()
        items.extend(page.get("items") or [])
        token = page["metadata"].get("continue")
        if not token:
            return items
        query["continue"] = token


async def list_meta(api: httpx.AsyncClient, path: str, selector: str) -> list[dict[str, Any]]:
    """Only the metadata of a collection (PartialObjectMetadataList): light to poll."""
    items: list[dict[str, Any]] = []
    query = {"labelSelector": selector, "limit": "500"}
    headers = {"accept": "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1"}
    while True:
        page = (await api.get(path, params=query, headers=headers)).raise_for_status().json()
        items.extend(page.get("items") or [])
        token = page["metadata"].get("continue")
        if not token:
            return items
        query["continue"] = token


def child(md: dict[str, Any]) -> str:
    """The name of a ModelDeployment's stable Deployment."""
    return f"{md['metadata']['name']}-stable"


async def bounded(jobs: list[Any]) -> list[Any]:
    slots = asyncio.Semaphore(CONCURRENCY)

    async def one(job: Any) -> Any:
        async with slots:
            return await job

    return await asyncio.gather(*(one(j) for j in jobs))


async def create(api: httpx.AsyncClient, names: list[str]) -> None:
    async def post(name: str) -> None:
        for _attempt in range(5):
            answer = await api.post(MDS, json=resource(name))
            if answer.status_code in (201, 409):
                return
            await asyncio.sleep(1)
        answer.raise_for_status()

    await bounded([post(n) for n in names])


def reconciled(md: dict[str, Any]) -> bool:
    status = md.get("status") or {}
    return status.get("observedGeneration") == md["metadata"].get("generation")


async def request_counts(api: httpx.AsyncClient) -> dict[str, float]:
    """apiserver_request_total summed by verb (all clients)."""
    text = (await api.get("/metrics")).text
    counts: dict[str, float] = {}
    for match in re.finditer(r"^apiserver_request_total\{([^}]*)\} (\S+)$", text, re.M):
        verb = re.search(r'verb="([^"]+)"', match.group(1))
        if verb:
            counts[verb.group(1)] = counts.get(verb.group(1), 0.0) + float(match.group(2))
    return counts


# --- one side ---------------------------------------------------------------------------------


@dataclass
class SizeResult:
    n: int
    create_seconds: float
    reconciled: int
    seconds_to_reconciled: float | None
    deployments: int
    idle_cpu_percent: float
    rss_mb: float
    idle_requests_per_second: float
    idle_writes: float
    idle_md_written: int
    p50: float | None
    p99: float | None
    restarts: int


@dataclass
class SideResult:
    side: str
    sizes: list[SizeResult] = field(default_factory=list)
    changes: int = 0
    changes_in_10s: int = 0
    changes_last_seconds: float | None = None
    rollouts: operator_rollouts.RolloutsResult | None = None
    restarts: int = 0
    restart_reasons: list[str] = field(default_factory=list)


async def wait_reconciled(
    api: httpx.AsyncClient, operator: Operator, n: int, limit: float, since: float
) -> tuple[int, float | None]:
    deadline = time.monotonic() + limit
    last_report = 0.0
    done = 0
    next_probe = time.monotonic() + 10
    while True:
        items = await list_all(api, MDS)
        stable = {d["metadata"]["name"] for d in await list_meta(api, DEPLOYMENTS, STABLE)}
        done = sum(1 for md in items if reconciled(md) and child(md) in stable)
        now = time.monotonic()
        if done >= n:
            return done, now - since
        if now > deadline:
            return done, None
        if now - last_report > 15:
            log(f"  {done}/{n} reconciled after {now - since:.0f}s")
            last_report = now
        if now > next_probe:
            operator.supervise()
            next_probe = now + 10
        await asyncio.sleep(1)


async def idle(operator: Operator, seconds: float) -> None:
    end = time.monotonic() + seconds
    while (left := end - time.monotonic()) > 0:
        await asyncio.sleep(min(10, left))
        operator.supervise()


async def spec_changes(api: httpx.AsyncClient, names: list[str]) -> tuple[int, float | None]:
    """Patch ``spec.replicas`` of ``names`` at once; (acted on within 10 s, last one's s)."""
    patch = {"spec": {"replicas": 2}}
    headers = {"content-type": "application/merge-patch+json"}
    start = time.monotonic()
    answers = await bounded([api.patch(f"{MDS}/{n}", json=patch, headers=headers) for n in names])
    generation = {
        n: a.json()["metadata"]["generation"] for n, a in zip(names, answers, strict=True)
    }
    log(f"  {len(names)} spec changes sent in {time.monotonic() - start:.1f}s")
    done: dict[str, float] = {}

    async def check(name: str) -> None:
        md = (await api.get(f"{MDS}/{name}")).json()
        if (md.get("status") or {}).get("observedGeneration") != generation[name]:
            return
        dep = await api.get(f"{DEPLOYMENTS}/{name}-stable")
        if dep.status_code == 200 and dep.json()["spec"].get("replicas") == 2:
            done[name] = time.monotonic() - start

    while len(done) < len(names) and time.monotonic() - start < 60:
        await bounded([check(n) for n in names if n not in done])
        await asyncio.sleep(0.5)
    within = sum(1 for t in done.values() if t <= 10)
    return within, (round(max(done.values()), 1) if len(done) == len(names) else None)


async def run_side(
    side: str,
    source: Path,
    server: ApiServer,
    sizes: list[int],
    args: argparse.Namespace,
    logdir: Path,
    prometheus_url: str | None = None,
) -> SideResult:
    result = SideResult(side)
    env = {"MODELSHIP_OPERATOR_PROMETHEUS_URL": prometheus_url} if prometheus_url else {}
    operator = Operator(source, server.kubeconfig, logdir / f"operator-{side}.log", env)
    operator.start()
    api = api_client(server)
    try:
        made = 0
        for n in sizes:
            names = [f"md-{i:04d}" for i in range(made, n)]
            log(f"{side}: creating {len(names)} ModelDeployments (to {n})")
            hist0 = operator.histogram()
            t0 = time.monotonic()
            await create(api, names)
            last_create = time.monotonic()
            made = n
            log(f"{side}: created in {last_create - t0:.0f}s; waiting for all reconciled")
            done, elapsed = await wait_reconciled(api, operator, n, args.timeout, last_create)
            deployments = len(await list_meta(api, DEPLOYMENTS, "app.kubernetes.io/managed-by"))
            log(f"{side}: N={n}: {done} reconciled in {elapsed}s, {deployments} Deployments")
            if args.settle_seconds:
                log(f"{side}: settling {args.settle_seconds:.0f}s before the idle window")
                await idle(operator, args.settle_seconds)
            mds0 = {
                md["metadata"]["name"]: md["metadata"]["resourceVersion"]
                for md in await list_all(api, MDS)
            }
            requests0 = await request_counts(api)
            cpu0, w0 = operator.cpu_seconds(), time.monotonic()
            await idle(operator, args.idle_seconds)
            cpu1, w1 = operator.cpu_seconds(), time.monotonic()
            requests1 = await request_counts(api)
            mds1 = {
                md["metadata"]["name"]: md["metadata"]["resourceVersion"]
                for md in await list_all(api, MDS)
            }
            hist1 = operator.histogram()
            delta = {v: requests1.get(v, 0.0) - requests0.get(v, 0.0) for v in requests1}
            # The benchmark's own reads in the window: two GETs of /metrics per side.
            total = sum(delta.values()) - 2
            writes = sum(delta.get(v, 0.0) for v in ("POST", "PUT", "PATCH", "APPLY", "DELETE"))
            size = SizeResult(
                n=n,
                create_seconds=round(last_create - t0, 1),
                reconciled=done,
                seconds_to_reconciled=None if elapsed is None else round(elapsed, 1),
                deployments=deployments,
                idle_cpu_percent=round(100 * (cpu1 - cpu0) / (w1 - w0), 1),
                rss_mb=round(operator.rss_mb(), 1),
                idle_requests_per_second=round(max(total, 0) / (w1 - w0), 2),
                idle_writes=writes,
                idle_md_written=sum(1 for k, v in mds1.items() if mds0.get(k) != v),
                p50=quantile(hist0, hist1, 0.5),
                p99=quantile(hist0, hist1, 0.99),
                restarts=operator.restarts,
            )
            log(f"{side}: {asdict(size)}")
            result.sizes.append(size)
        if args.changes:
            names = [f"md-{i:04d}" for i in range(0, made, max(1, made // args.changes))][
                : args.changes
            ]
            log(f"{side}: {len(names)} concurrent spec changes at N={made}")
            within, last = await spec_changes(api, names)
            result.changes, result.changes_in_10s, result.changes_last_seconds = (
                len(names),
                within,
                last,
            )
            log(f"{side}: {within}/{len(names)} acted on within 10 s; all after {last}s")
        if args.rollouts:
            names = rollout_names(made, args.rollouts)
            log(f"{side}: {len(names)} rollouts at once at N={made}, {args.rollout_seconds:.0f}s")
            delay = "modelship_operator_analysis_delay_seconds"
            hist0, late0 = operator.histogram(), operator.histogram(delay)
            result.rollouts = await operator_rollouts.run(
                api, MDS, DEPLOYMENTS, names, args.rollout_seconds, log
            )
            hist1, late1 = operator.histogram(), operator.histogram(delay)
            result.rollouts.reconcile_p50 = quantile(hist0, hist1, 0.5)
            result.rollouts.reconcile_p99 = quantile(hist0, hist1, 0.99)
            result.rollouts.delay_p99_bucket = quantile(late0, late1, 0.99)
            log(f"{side}: {asdict(result.rollouts)}")
        result.restarts = operator.restarts
        result.restart_reasons = operator.reasons
        return result
    finally:
        await api.aclose()
        operator.stop()


def rollout_names(n: int, k: int) -> list[str]:
    """K resources spread over the N (offset from the ones the spec changes touch)."""
    step = max(1, n // k)
    return [f"md-{i:04d}" for i in range(step // 2, n, step)][:k]


@contextlib.contextmanager
def before_source(ref: str) -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="modelship-before-") as tmp:
        archive = subprocess.run(
            ["git", "-C", str(ROOT), "archive", ref, "operator", "kube"],
            check=True,
            capture_output=True,
        ).stdout
        subprocess.run(["tar", "-x", "-C", tmp], input=archive, check=True)
        yield Path(tmp)


def prepare(server: ApiServer) -> None:
    server.kubectl("apply", "-f", str(ROOT / "manifests/crds/modeldeployments.yaml"))
    server.kubectl(
        "wait", "--for=condition=Established", "--timeout=60s", "crd/modeldeployments.modelship.io"
    )
    for namespace in (NAMESPACE, "modelship-system"):
        server.kubectl("create", "namespace", namespace)


def ratio(now: float | None, before: float | None) -> str:
    if now is None or before is None or before == 0:
        return "-"
    return f"{now / before:.2f}"


def fmt(value: Any, unit: str = "") -> str:
    return "-" if value is None else f"{value}{unit}"


def took(s: SizeResult, timeout: float) -> str:
    if s.seconds_to_reconciled is None:
        return f"> {timeout:.0f} s ({s.reconciled}/{s.n})"
    return f"{s.seconds_to_reconciled} s"


def table(before: SideResult, now: SideResult, timeout: float) -> str:
    rows = ["| N | metric | before | now | now/before |", "| --- | --- | --- | --- | --- |"]

    def row(n: int, what: str, old: str, new: str, r: str = "") -> None:
        rows.append(f"| {n} | {what} | {old} | {new} | {r} |")

    for b, n in zip(before.sizes, now.sizes, strict=True):
        row(
            b.n,
            "last create → all reconciled",
            took(b, timeout),
            took(n, timeout),
            ratio(n.seconds_to_reconciled, b.seconds_to_reconciled),
        )
        row(b.n, "child Deployments present", str(b.deployments), str(n.deployments))
        row(b.n, "operator RSS", f"{b.rss_mb} MB", f"{n.rss_mb} MB", ratio(n.rss_mb, b.rss_mb))
        row(
            b.n,
            "CPU over the idle window (share of one core)",
            f"{b.idle_cpu_percent} %",
            f"{n.idle_cpu_percent} %",
            ratio(n.idle_cpu_percent, b.idle_cpu_percent),
        )
        row(
            b.n,
            "API requests/s while idle",
            str(b.idle_requests_per_second),
            str(n.idle_requests_per_second),
            ratio(n.idle_requests_per_second, b.idle_requests_per_second),
        )
        row(
            b.n,
            "API writes while idle (ModelDeployments written)",
            f"{b.idle_writes:.0f} ({b.idle_md_written})",
            f"{n.idle_writes:.0f} ({n.idle_md_written})",
        )
        row(
            b.n,
            "reconcile p50 / p99 (histogram bucket bound)",
            f"{fmt(b.p50, ' s')} / {fmt(b.p99, ' s')}",
            f"{fmt(n.p50, ' s')} / {fmt(n.p99, ' s')}",
            ratio(n.p99, b.p99) + " (p99)",
        )
        row(b.n, "operator restarts so far", str(b.restarts), str(n.restarts))
    if now.changes:
        row(
            now.sizes[-1].n,
            f"{now.changes} concurrent spec changes: acted on within 10 s (all after)",
            f"{before.changes_in_10s} ({fmt(before.changes_last_seconds, ' s')})",
            f"{now.changes_in_10s} ({fmt(now.changes_last_seconds, ' s')})",
        )
    if now.rollouts is not None:
        old, new = before.rollouts, now.rollouts
        n = now.sizes[-1].n

        def late(r: operator_rollouts.RolloutsResult | None) -> str:
            if r is None:
                return "-"
            return (
                f"{r.within_2s}/{r.analyses} ({fmt(r.lateness_p50, ' s')} / "
                f"{fmt(r.lateness_p99, ' s')} / {fmt(r.lateness_max, ' s')})"
            )

        row(n, f"{new.rollouts} rollouts at once: canaries in their first step",
            str(old.entered) if old else "-", str(new.entered))  # fmt: skip
        row(n, "analyses within 2 s of due (lateness p50 / p99 / max)", late(old), late(new))
        row(
            n,
            "analysis delay p99, the operator's histogram (bucket bound)",
            fmt(old.delay_p99_bucket, " s") if old else "-",
            fmt(new.delay_p99_bucket, " s"),
        )
        row(n, "reconcile p50 / p99 meanwhile (histogram bucket bound)",
            f"{fmt(old.reconcile_p50, ' s')} / {fmt(old.reconcile_p99, ' s')}" if old else "-",
            f"{fmt(new.reconcile_p50, ' s')} / {fmt(new.reconcile_p99, ' s')}")  # fmt: skip
    return "\n".join(rows)


async def main_async(args: argparse.Namespace) -> int:
    sizes = sorted(int(s) for s in args.sizes.split(","))
    results: dict[str, SideResult] = {}
    with (
        tempfile.TemporaryDirectory(prefix="modelship-scale-") as tmp,
        before_source(args.before) as old,
        contextlib.ExitStack() as stack,
    ):
        logdir = Path(args.logs or tmp)
        os.makedirs(logdir, exist_ok=True)
        prometheus_url = None
        if args.rollouts:
            names = rollout_names(sizes[-1], args.rollouts)
            scraped = operator_rollouts.targets(
                names, NAMESPACE, resource("-")["spec"]["model"]["version"]
            )
            log(f"starting Prometheus and {len(scraped)} scrape targets")
            prom = operator_rollouts.start_prometheus(Path(tmp), scraped)
            stack.callback(operator_rollouts.stop_prometheus, prom)
            stack.enter_context(operator_rollouts.Traffic(scraped))
            prometheus_url = prom.url
        for side, source in (("before", old), ("now", ROOT)):
            if side not in args.sides.split(","):
                continue
            root = Path(tmp) / side
            os.makedirs(root)
            # Two Services per ModelDeployment: room for 30,000.
            for server in start_apiserver(root, service_cidr="10.96.0.0/16"):
                prepare(server)
                results[side] = await run_side(
                    side, source, server, sizes, args, logdir, prometheus_url
                )
    report = {
        "command": " ".join(sys.argv),
        "before": args.before,
        "sides": {k: asdict(v) for k, v in results.items()},
    }
    if args.json:
        with open(args.json, "w") as out:  # noqa: ASYNC230 - once, at the end
            json.dump(report, out, indent=2)
    if len(results) == 2:
        print(table(results["before"], results["now"], args.timeout))
    else:
        for result in results.values():
            print(json.dumps(asdict(result), indent=2))
    return 0


def _terminate(_signum: int, _frame: Any) -> None:
    raise KeyboardInterrupt  # so every process started here is stopped on the way out


def main() -> None:
    signal.signal(signal.SIGTERM, _terminate)
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="100,500,1000", help="comma-separated N (cumulative)")
    parser.add_argument("--before", default="main", help="git ref of the code before")
    parser.add_argument("--idle-seconds", type=float, default=60.0)
    parser.add_argument("--timeout", type=float, default=300.0, help="per size, for all reconciled")
    parser.add_argument("--changes", type=int, default=100, help="spec changes at the largest N")
    parser.add_argument(
        "--settle-seconds",
        type=float,
        default=0.0,
        help="wait this long after all reconciled before the idle window",
    )
    parser.add_argument(
        "--rollouts", type=int, default=20, help="rollouts at once at the largest N (0: none)"
    )
    parser.add_argument(
        "--rollout-seconds", type=float, default=120.0, help="how long the rollouts are timed"
    )
    parser.add_argument("--sides", default="before,now", help="which sides to run")
    parser.add_argument("--json", help="write the results as JSON here")
    parser.add_argument("--logs", help="keep the operator logs in this directory")
    raise SystemExit(asyncio.run(main_async(parser.parse_args())))


if __name__ == "__main__":
    main()
