"""Benchmark: latency the router adds, and its throughput, next to nginx on the same backends.

Three paths, measured side by side in the same run, each with wrk (Debian) on loopback:

  direct   client -> stable model server
  router   client -> modelship-router (90/10 split) -> stable / canary model servers
  nginx    client -> nginx (split_clients 90/10, keep-alive upstreams) -> same servers

Backends: the real model server (`modelship-serve`, a scikit-learn LogisticRegression on
iris trained here, skops format) answering POST /v1/models/iris:predict; if it cannot be
started, a minimal JSON uvicorn app (bench/router_backend.py) -- the output says which.

Pinning (2-core machines): backends and the proxy under test on core 0, wrk on core 1
(--proxy-core 1 puts the proxy on wrk's core instead, as if it had a CPU of its own).
Short measurements interleaved: --rounds rounds of --duration seconds per path and
concurrency (1 s warm-up in the first round; the order of the three paths rotates each
round), so a noisy neighbour hits all three alike; medians reported. Added latency = the
median over rounds of (proxied percentile - direct percentile), paired within a round.
Goals (issue 5): the router's added p50 and p99 at most 1.5x nginx's at concurrency 1
and 8; its throughput at concurrency 8 at least 80 % of nginx's.

Usage: .venv/bin/python bench/run_router.py [--rounds 12] [--duration 2]
Results are also written to bench/results/router-<time>.json.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from router_nginx import ensure_nginx, nginx_command, write_config  # noqa: E402

VENV_BIN = Path(sys.executable).parent
SERVER_CORE = "0"
#: Core of the proxy under test (router or nginx): the backends' core by default.
PROXY_CORE = ["0"]
CLIENT_CORE = "1"
CANARY_PERCENT = 10
BODY = '{"instances": [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]}'
PREDICT_PATH = "/v1/models/iris:predict"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def pinned(core: str, argv: list[str]) -> list[str]:
    return ["taskset", "-c", core, *argv] if PINNING else argv


PINNING = (os.cpu_count() or 1) >= 2 and shutil.which("taskset") is not None


class Processes:
    """Processes started by this benchmark, stopped by PID at the end."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> Any:
        log = (self.workdir / f"{name}.log").open("wb")
        proc = subprocess.Popen(
            argv, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})}
        )
        self.procs.append(proc)
        return proc

    def stop_all(self) -> None:
        for proc in reversed(self.procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def wait_ok(url: str, proc: Any, what: str, timeout: float = 60.0, post: bool = False) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}")
        try:
            data = BODY.encode() if post else None
            request = urllib.request.Request(
                url, data=data, headers={"content-type": "application/json"}
            )
            with urllib.request.urlopen(request, timeout=2) as resp:
                if resp.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{what} did not become ready at {url}")


def start_model_servers(procs: Processes, workdir: Path) -> tuple[list[str], str]:
    """Two real model servers (stable, canary); falls back to the minimal JSON app."""
    try:
        import skops.io as sio
        from sklearn.datasets import load_iris
        from sklearn.linear_model import LogisticRegression

        print("== training the benchmark model (iris, LogisticRegression)", flush=True)
        x, y = load_iris(return_X_y=True)
        model_path = workdir / "iris.skops"
        sio.dump(LogisticRegression(max_iter=500).fit(x, y), model_path)
        sha = hashlib.sha256(model_path.read_bytes()).hexdigest()
        addresses = []
        for variant, version in (("stable", "1.0.0"), ("canary", "2.0.0")):
            port = free_port()
            proc = procs.start(
                f"serve-{variant}",
                pinned(
                    SERVER_CORE,
                    [
                        str(VENV_BIN / "modelship-serve"),
                        f"--model-uri=file://{model_path}",
                        f"--sha256={sha}",
                        "--name=iris",
                        f"--model-version={version}",
                        f"--variant={variant}",
                        "--host=127.0.0.1",
                        f"--port={port}",
                        "--grpc-port=0",
                        "--log-level=warning",
                    ],
                ),
                env={"MODELSHIP_MODEL_CACHE_DIR": str(workdir / f"cache-{variant}")},
            )
            wait_ok(
                f"http://127.0.0.1:{port}{PREDICT_PATH}",
                proc,
                f"modelship-serve {variant}",
                post=True,
            )
            addresses.append(f"127.0.0.1:{port}")
        return addresses, "modelship-serve (iris LogisticRegression, V1 predict, 2 rows)"
    except Exception as exc:  # the model server is someone else's work in progress
        print(f"== modelship-serve unavailable ({exc}); using bench/router_backend.py", flush=True)
        procs.stop_all()
        procs.procs.clear()
        addresses = []
        for variant in ("stable", "canary"):
            port = free_port()
            proc = procs.start(
                f"backend-{variant}",
                pinned(
                    SERVER_CORE,
                    [
                        str(VENV_BIN / "uvicorn"),
                        "--app-dir",
                        str(HERE),
                        "router_backend:app",
                        "--host=127.0.0.1",
                        f"--port={port}",
                        "--log-level=warning",
                        "--no-access-log",
                    ],
                ),
            )
            wait_ok(f"http://127.0.0.1:{port}{PREDICT_PATH}", proc, "backend", post=True)
            addresses.append(f"127.0.0.1:{port}")
        return addresses, "minimal JSON uvicorn app (bench/router_backend.py)"


def start_router(procs: Processes, workdir: Path, backends: list[str]) -> tuple[str, int]:
    port = free_port()
    config = workdir / "routing.json"
    config.write_text(
        json.dumps(
            {
                "deployment": "bench",
                "variants": [
                    {"name": "stable", "modelVersion": "1.0.0", "upstreams": [backends[0]]},
                    {
                        "name": "canary",
                        "modelVersion": "2.0.0",
                        "upstreams": [backends[1]],
                        "weight": CANARY_PERCENT,
                    },
                ],
            }
        )
    )
    proc = procs.start(
        "router",
        pinned(
            PROXY_CORE[0],
            [
                str(VENV_BIN / "modelship-router"),
                f"--config={config}",
                "--host=127.0.0.1",
                f"--port={port}",
                "--log-level=warning",
            ],
        ),
    )
    wait_ok(f"http://127.0.0.1:{port}/readyz", proc, "modelship-router")
    return f"127.0.0.1:{port}", proc.pid


def start_nginx(procs: Processes, workdir: Path, backends: list[str]) -> tuple[str, int]:
    binary = ensure_nginx()
    port = free_port()
    nginx_dir = workdir / "nginx"
    conf = write_config(nginx_dir, port, backends[0], backends[1], CANARY_PERCENT)
    proc = procs.start("nginx", pinned(PROXY_CORE[0], nginx_command(binary, conf, nginx_dir)))
    wait_ok(f"http://127.0.0.1:{port}{PREDICT_PATH}", proc, "nginx", post=True)
    return f"127.0.0.1:{port}", proc.pid


_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}


def _seconds(text: str) -> float:
    match = re.fullmatch(r"([0-9.]+)(us|ms|s|m)", text)
    if not match:
        raise ValueError(f"cannot parse wrk latency {text!r}")
    return float(match.group(1)) * _UNITS[match.group(2)]


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (taskset execs, so the pid is the server's)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_wrk(
    address: str, connections: int, duration: float, script: Path, pid: int | None = None
) -> dict[str, float]:
    argv = pinned(
        CLIENT_CORE,
        [
            "wrk",
            "-t1",
            f"-c{connections}",
            f"-d{max(1, round(duration))}s",
            "--latency",
            "-s",
            str(script),
            f"http://{address}{PREDICT_PATH}",
        ],
    )
    cpu_before = cpu_seconds(pid) if pid else 0.0
    out = subprocess.run(argv, capture_output=True, text=True, timeout=duration + 30).stdout
    cpu_used = cpu_seconds(pid) - cpu_before if pid else 0.0
    count = re.search(r"(\d+) requests in", out)
    p50 = re.search(r"^\s+50%\s+(\S+)", out, re.M)
    p99 = re.search(r"^\s+99%\s+(\S+)", out, re.M)
    rps = re.search(r"^Requests/sec:\s+([0-9.]+)", out, re.M)
    if not (p50 and p99 and rps):
        raise RuntimeError(f"unexpected wrk output:\n{out}")
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    failed = int(errors.group(1)) if errors else 0
    if sock:
        failed += sum(int(g) for g in sock.groups())
    requests = int(count.group(1)) if count else 0
    return {
        "p50": _seconds(p50.group(1)),
        "p99": _seconds(p99.group(1)),
        "rps": float(rps.group(1)),
        "errors": failed,
        # CPU time the server process spent per request (stable under noisy neighbours).
        "cpu": cpu_used / requests if requests else 0.0,
    }


def wrk_script(workdir: Path) -> Path:
    script = workdir / "predict.lua"
    body = BODY.replace('"', '\\"')
    script.write_text(
        'wrk.method = "POST"\n'
        f'wrk.body = "{body}"\n'
        'wrk.headers["Content-Type"] = "application/json"\n'
    )
    return script


def busy_builds() -> str:
    out = subprocess.run(["pgrep", "-fa", "go build"], capture_output=True, text=True).stdout
    return out.strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=12)
    parser.add_argument("--duration", type=int, default=2, help="seconds per measurement")
    parser.add_argument(
        "--proxy-core",
        default="0",
        help="core for the router and nginx: 0 shares the backends' core (default, the "
        "proxy's CPU cost shows fully), 1 shares wrk's core",
    )
    args = parser.parse_args()
    PROXY_CORE[0] = args.proxy_core
    if shutil.which("wrk") is None:
        print("== installing wrk (Debian)", flush=True)
        subprocess.run(["apt-get", "update", "-qq"], check=True)
        subprocess.run(["apt-get", "install", "-y", "-qq", "wrk"], check=True)
    if busy_builds():
        print("!! a Go build is running: numbers will be noisy", flush=True)

    workdir = Path(tempfile.mkdtemp(prefix="modelship-bench-router-"))
    procs = Processes(workdir)
    try:
        backends, backend_kind = start_model_servers(procs, workdir)
        targets = {
            "direct": (backends[0], procs.procs[0].pid),
            "router": start_router(procs, workdir, backends),
            "nginx": start_nginx(procs, workdir, backends),
        }
        script = wrk_script(workdir)
        pinning = (
            f"backends pinned to core {SERVER_CORE}, router and nginx to core {PROXY_CORE[0]}, "
            f"wrk to core {CLIENT_CORE} (taskset)"
            if PINNING
            else "no pinning (fewer than 2 cores or no taskset)"
        )
        print(f"== backend: {backend_kind}")
        print(f"== {pinning}")
        print(
            f"== {args.rounds} rounds x {args.duration:g} s per point (1 s warm-up first), "
            "order rotated per round; medians"
        )
        samples: dict[tuple[str, int], list[dict[str, float]]] = {}
        names = list(targets)
        for round_no in range(1, args.rounds + 1):
            # Rotate the order each round so slow drifts do not favour one path.
            shift = (round_no - 1) % len(names)
            order = names[shift:] + names[:shift]
            for connections in (1, 8):
                for name in order:
                    address, pid = targets[name]
                    if round_no == 1:
                        run_wrk(address, connections, 1.0, script)  # warm-up
                    result = run_wrk(address, connections, args.duration, script, pid)
                    samples.setdefault((name, connections), []).append(result)
                    print(
                        f"   round {round_no} c={connections} {name:<6} "
                        f"p50 {result['p50'] * 1e6:7.0f} us  p99 {result['p99'] * 1e6:7.0f} us  "
                        f"{result['rps']:8.0f} req/s  cpu {result['cpu'] * 1e6:4.0f} us/req  "
                        f"errors {result['errors']:.0f}",
                        flush=True,
                    )
        report(samples, backend_kind, pinning, args, workdir)
    finally:
        procs.stop_all()
        shutil.rmtree(workdir, ignore_errors=True)


def report(
    samples: dict[tuple[str, int], list[dict[str, float]]],
    backend_kind: str,
    pinning: str,
    args: argparse.Namespace,
    workdir: Path,
) -> None:
    med = {
        key: {
            m: statistics.median(r[m] for r in runs) for m in ("p50", "p99", "rps", "errors", "cpu")
        }
        for key, runs in samples.items()
    }

    def added(name: str, c: int, q: str) -> float:
        """Median over rounds of (proxied - direct), paired within each round."""
        pairs = zip(samples[(name, c)], samples[("direct", c)], strict=True)
        return statistics.median(p[q] - d[q] for p, d in pairs)

    rows = []
    verdicts: list[tuple[str, bool | None]] = []
    for c in (1, 8):
        direct, router, nginx = med[("direct", c)], med[("router", c)], med[("nginx", c)]
        for q in ("p50", "p99"):
            added_router = added("router", c, q)
            added_nginx = added("nginx", c, q)
            # A proxied path measured faster than the direct one means noise swamped the
            # difference: no ratio then, rather than a meaningless one.
            conclusive = added_nginx > 0 and added_router >= 0
            ratio = added_router / added_nginx if conclusive else None
            rows.append((c, q, direct[q], router[q], nginx[q], added_router, added_nginx, ratio))
            if ratio is None:
                text = f"added {q} at c={c}: inconclusive (an added latency <= 0: noise)"
                verdicts.append((text, None))
            else:
                text = f"added {q} at c={c}: router/nginx = {ratio:.2f} (goal <= 1.5)"
                verdicts.append((text, ratio <= 1.5))
    tput = med[("router", 8)]["rps"] / med[("nginx", 8)]["rps"]
    verdicts.append((f"throughput at c=8: router/nginx = {tput:.2f} (goal >= 0.80)", tput >= 0.8))

    print()
    print(f"Backend: {backend_kind}. {pinning}.")
    print("Latencies: medians over rounds; added = median of per-round (proxied - direct).")
    print("| c | pct | direct | router | nginx | added: router | added: nginx | router/nginx |")
    print("|---|-----|-------:|-------:|------:|--------------:|-------------:|-------------:|")
    for c, q, d, r, n, ar, an, ratio in rows:
        print(
            f"| {c} | {q} | {d * 1e6:.0f} us | {r * 1e6:.0f} us | {n * 1e6:.0f} us | "
            f"{ar * 1e6:.0f} us | {an * 1e6:.0f} us | "
            f"{'n/a' if ratio is None else f'{ratio:.2f}'} |"
        )
    print()
    print("| c | direct req/s | router req/s | nginx req/s | router/nginx |")
    print("|---|-------------:|-------------:|------------:|-------------:|")
    for c in (1, 8):
        d, r, n = (med[(k, c)]["rps"] for k in ("direct", "router", "nginx"))
        print(f"| {c} | {d:.0f} | {r:.0f} | {n:.0f} | {r / n:.2f} |")
    print()
    print("CPU time per request of the server process (user + system, median over rounds):")
    print("| c | direct (model server) | router | nginx | router/nginx |")
    print("|---|----------------------:|-------:|------:|-------------:|")
    for c in (1, 8):
        d, r, n = (med[(k, c)]["cpu"] for k in ("direct", "router", "nginx"))
        ratio = r / n if n else float("inf")
        print(f"| {c} | {d * 1e6:.0f} us | {r * 1e6:.0f} us | {n * 1e6:.0f} us | {ratio:.2f} |")
    errors = sum(v["errors"] for v in med.values())
    print(f"\nerrors (non-2xx + socket, medians summed): {errors:.0f}")
    for text, ok in verdicts:
        print(f"{'----' if ok is None else 'PASS' if ok else 'MISS'}  {text}")

    results = HERE / "results"
    results.mkdir(exist_ok=True)
    out = results / f"router-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(
        json.dumps(
            {
                "backend": backend_kind,
                "pinning": pinning,
                "rounds": args.rounds,
                "duration": args.duration,
                "medians": {f"{k[0]}-c{k[1]}": v for k, v in med.items()},
                "samples": {f"{k[0]}-c{k[1]}": v for k, v in samples.items()},
                "verdicts": {text: ok for text, ok in verdicts},
            },
            indent=1,
        )
    )
    print(f"results: {out}")


if __name__ == "__main__":
    main()
