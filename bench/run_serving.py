"""Serving benchmark: this model server side by side with MLServer and a bare HTTP floor.

Same models (breast-cancer LogisticRegression, 100-tree RandomForest), same Open Inference
Protocol V2 payload (one row, 30 FP64 features), in one run:

- modelship    modelship-serve (this repository)
- mlserver     MLServer 1.7.1 + mlserver-sklearn, default settings (parallel_workers: 1)
- mlserver-pw0 the same with parallel_workers: 0 (inference in the HTTP process)
- floor        a bare uvicorn ASGI endpoint that parses the same JSON and answers a constant

Every server runs pinned to core 0 and the load generator (wrk, one thread, a Lua script for the
POST body) to core 1 (taskset). Loopback only. Concurrency 1, 8 and 64; each point is the median
of 3 runs of --duration seconds, the runs interleaved across servers so background noise hits
all of them alike. MLServer is installed on first use into its own cached virtualenv under
~/.cache/modelship/bench/mlserver-1.7.1/ (its pins may clash with ours).

Usage: python bench/run_serving.py [--duration 4] [--runs 3] [--no-write-docs]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
BENCH = Path(__file__).resolve().parent
CACHE = Path.home() / ".cache" / "modelship" / "bench"
MLSERVER_VERSION = "1.7.1"
MLSERVER_VENV = CACHE / f"mlserver-{MLSERVER_VERSION}"
SERVER_CPU, CLIENT_CPU = "0", "1"
CONCURRENCY = (1, 8, 64)
DOCS = ROOT / "docs" / "serving.md"
BEGIN, END = "<!-- bench:serving:begin -->", "<!-- bench:serving:end -->"
LUA = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local f = io.open(os.getenv("MODELSHIP_BENCH_BODY"), "rb")
wrk.body = f:read("*a")
f:close()
"""


def say(message: str) -> None:
    print(f"[bench:serving] {message}", flush=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# -- setup ------------------------------------------------------------------------------------


def ensure_wrk() -> str:
    found = shutil.which("wrk")
    if found:
        return found
    if os.geteuid() != 0:
        raise SystemExit("wrk is missing: run `apt-get install -y wrk` (Debian) and retry")
    say("installing wrk (apt-get install -y wrk)")
    subprocess.run(["apt-get", "install", "-y", "wrk"], check=True, stdout=subprocess.DEVNULL)
    return shutil.which("wrk") or "wrk"


def ensure_mlserver() -> Path:
    python = MLSERVER_VENV / "bin" / "python"
    stamp = MLSERVER_VENV / ".installed"
    if stamp.exists():
        return python
    say(f"creating {MLSERVER_VENV} (first run only)")
    base = getattr(sys, "_base_executable", sys.executable)
    subprocess.run([base, "-m", "venv", str(MLSERVER_VENV)], check=True)
    say(
        f"installing mlserver=={MLSERVER_VERSION} mlserver-sklearn=={MLSERVER_VERSION}"
        " (a few minutes)"
    )
    subprocess.run(
        [
            str(python),
            "-m",
            "pip",
            "install",
            "--disable-pip-version-check",
            "-q",
            "--progress-bar",
            "off",
            f"mlserver=={MLSERVER_VERSION}",
            f"mlserver-sklearn=={MLSERVER_VERSION}",
            # MLServer 1.7.1's inference workers fail with uvloop >= 0.22 ("There is no current
            # event loop", SeldonIO/MLServer#2286); its default configuration needs the pin.
            "uvloop<0.22",
        ],
        check=True,
    )
    stamp.write_text("ok\n")
    return python


def version_of(python: Path | str, module: str) -> str:
    code = f"import importlib.metadata as m; print(m.version('{module}'))"
    out = subprocess.run([str(python), "-c", code], capture_output=True, text=True)
    return out.stdout.strip() or "?"


def train(python: Path | str, out: Path, fmt: str) -> dict:
    say(f"training models with {python} ({fmt})")
    result = subprocess.run(
        [str(python), str(BENCH / "serving_train.py"), str(out), fmt],
        check=True,
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    return json.loads(result.stdout)


# -- servers ----------------------------------------------------------------------------------


@dataclass
class Target:
    server: str
    model: str
    url: str
    process: subprocess.Popen | None = None
    log: Path | None = None
    # per concurrency: (req/s, p50 s, p99 s, server CPU seconds per request) for each run
    results: dict[int, list[tuple[float, float, float, float]]] = field(default_factory=dict)
    errors: int = 0


def spawn(target: Target, cmd: list[str], log: Path, cwd: Path | None = None) -> None:
    out = open(log, "w")  # noqa: SIM115 - lives as long as the server
    target.log = log
    target.process = subprocess.Popen(
        ["taskset", "-c", SERVER_CPU, *cmd],
        stdout=out,
        stderr=subprocess.STDOUT,
        cwd=cwd,
        start_new_session=True,
    )


def wait_ready(target: Target, body: bytes, timeout: float = 180) -> None:
    log = target.log or Path("/dev/null")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if target.process is not None and target.process.poll() is not None:
            raise RuntimeError(f"{target.server} exited:\n{log.read_text()[-3000:]}")
        try:
            response = httpx.post(
                target.url, content=body, timeout=5, headers={"content-type": "application/json"}
            )
            if response.status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.3)
    raise RuntimeError(f"{target.server} not ready after {timeout}s:\n{log.read_text()[-3000:]}")


def mlserver_dir(work: Path, name: str, joblib_path: str, pw0: bool) -> tuple[Path, int]:
    folder = work / f"mlserver-{name}-{'pw0' if pw0 else 'default'}"
    (folder / name).mkdir(parents=True)
    port = free_port()
    settings: dict = {
        "host": "127.0.0.1",
        "http_port": port,
        "grpc_port": free_port(),
        "metrics_port": free_port(),
    }
    if pw0:
        settings["parallel_workers"] = 0
    (folder / "settings.json").write_text(json.dumps(settings))
    (folder / name / "model-settings.json").write_text(
        json.dumps(
            {
                "name": name,
                "implementation": "mlserver_sklearn.SKLearnModel",
                "parameters": {"uri": joblib_path, "version": "1"},
            }
        )
    )
    return folder, port


def stop(target: Target) -> None:
    process = target.process
    if process is None or process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


# -- load -------------------------------------------------------------------------------------

_TICK = os.sysconf("SC_CLK_TCK")


def session_cpu_seconds(sid: int) -> float:
    """CPU time (user + system) of every process in a server's session (MLServer's workers too):
    a cost per request that background load on the machine barely disturbs."""
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[3]) == sid:  # fields after "(comm)": state ppid pgrp session ...
            total += int(fields[11]) + int(fields[12])
    return total / _TICK


_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}


def _seconds(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    if not match:
        raise ValueError(text)
    return float(match.group(1)) * _UNITS[match.group(2)]


def run_wrk(
    wrk: str, lua: Path, body_file: Path, url: str, connections: int, seconds: float
) -> tuple[float, float, float, int, int]:
    out = subprocess.run(
        [
            "taskset",
            "-c",
            CLIENT_CPU,
            wrk,
            "-t1",
            f"-c{connections}",
            f"-d{int(seconds)}s",
            "--latency",
            "--timeout",
            "10s",
            "-s",
            str(lua),
            url,
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "MODELSHIP_BENCH_BODY": str(body_file)},
        timeout=seconds + 30,
    ).stdout
    if "Requests/sec" not in out or " 50% " not in out:
        say(f"wrk gave no result for {url} (c={connections}):\n{out[-1500:]}")
        return 0.0, float("nan"), float("nan"), 1, 0
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p50 = _seconds(re.search(r"\s50%\s+(\S+)", out).group(1))  # type: ignore[union-attr]
    p99 = _seconds(re.search(r"\s99%\s+(\S+)", out).group(1))  # type: ignore[union-attr]
    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    errors = int(bad.group(1)) if bad else 0
    socket_errors = re.search(r"Socket errors:.*", out)
    if socket_errors and "timeout 0" not in socket_errors.group(0):
        errors += 1
    done = re.search(r"(\d+) requests in", out)
    return rps, p50, p99, errors, int(done.group(1)) if done else 0


# -- report -----------------------------------------------------------------------------------


def fmt_ms(seconds: float) -> str:
    return f"{seconds * 1000:.2f}"


def median_point(points: list[tuple[float, float, float, float]]) -> tuple[float, ...]:
    return tuple(statistics.median(p[i] for p in points) for i in range(4))


def report(targets: list[Target], models: dict[str, str]) -> tuple[str, list[str]]:
    by = {(t.server, t.model): t for t in targets}
    lines: list[str] = []
    verdicts: list[str] = []

    def point(server: str, model: str, c: int) -> tuple[float, ...] | None:
        t = by.get((server, "floor" if server == "floor" else model))
        return median_point(t.results[c]) if t is not None and t.results.get(c) else None

    for model, title in models.items():
        lines += [
            f"**{title}**",
            "",
            "| server | c | req/s | p50 ms | p99 ms | server CPU µs/req "
            "| modelship req/s / this | p50 / floor p50 | CPU/req / floor |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for c in CONCURRENCY:
            ours, floor = point("modelship", model, c), point("floor", model, c)
            for server in ("modelship", "mlserver", "mlserver-pw0", "floor"):
                p = point(server, model, c)
                if p is None:
                    lines.append(f"| {server} | {c} | failed | | | | | | |")
                    continue
                rps, p50, p99, cpu = p
                ratio = f"{ours[0] / rps:.2f}x" if ours else ""
                vs_floor = f"{p50 / floor[1]:.2f}" if floor else ""
                cpu_floor = f"{cpu / floor[3]:.2f}" if floor else ""
                errors = by[(server, "floor" if server == "floor" else model)].errors
                flag = " (errors)" if errors else ""
                lines.append(
                    f"| {server}{flag} | {c} | {rps:,.0f} | {fmt_ms(p50)} | {fmt_ms(p99)} "
                    f"| {cpu * 1e6:,.0f} | {ratio} | {vs_floor} | {cpu_floor} |"
                )
        ours8, floor8 = point("modelship", model, 8), point("floor", model, 8)
        best = max(
            (p for s in ("mlserver", "mlserver-pw0") if (p := point(s, model, 8))),
            key=lambda p: p[0],
            default=None,
        )
        if ours8 and best:
            verdict = (
                f"{title}, c=8: modelship {ours8[0] / best[0]:.2f}x the throughput of MLServer's "
                f"best configuration (CPU per request {best[3] / ours8[3]:.1f}x lower); p99 "
                f"{fmt_ms(ours8[2])} ms vs {fmt_ms(best[2])} ms"
            )
            if floor8:
                verdict += (
                    f"; p50 {ours8[1] / floor8[1]:.2f}x the HTTP floor's (CPU per request "
                    f"{ours8[3] * 1e6:.0f} µs vs {floor8[3] * 1e6:.0f} µs)"
                )
            verdicts.append(verdict)
        lines.append("")
    return "\n".join(lines), verdicts


def write_docs(section: str, begin: str = BEGIN, end: str = END, docs: Path = DOCS) -> None:
    """Put ``section`` between the ``begin`` and ``end`` markers of ``docs`` (appended with
    them when absent)."""
    text = docs.read_text() if docs.exists() else ""
    block = f"{begin}\n{section}\n{end}"
    if begin in text and end in text:
        text = text[: text.index(begin)] + block + text[text.index(end) + len(end) :]
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    docs.write_text(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=int, default=4, help="seconds per wrk run")
    parser.add_argument("--runs", type=int, default=3, help="runs per point (median)")
    parser.add_argument("--no-write-docs", action="store_true", help="do not update docs")
    args = parser.parse_args()
    if (os.cpu_count() or 1) < 2:
        raise SystemExit("needs 2 cores: server on core 0, load generator on core 1")
    started = time.monotonic()
    load_before = os.getloadavg()[0]
    wrk = ensure_wrk()
    mlserver_python = ensure_mlserver()
    work = Path(tempfile.mkdtemp(prefix="modelship-bench-serving-"))
    lua = work / "post.lua"
    lua.write_text(LUA)
    ours_models = train(sys.executable, work / "ours", "skops")
    theirs_models = train(mlserver_python, work / "theirs", "joblib")
    body = json.dumps(
        {
            "inputs": [
                {
                    "name": "input-0",
                    "shape": [1, 30],
                    "datatype": "FP64",
                    "data": ours_models["row"],
                }
            ]
        }
    ).encode()
    body_file = work / "body.json"
    body_file.write_bytes(body)
    models = {
        "logreg": "LogisticRegression (breast cancer)",
        "forest": "RandomForestClassifier, 100 trees (breast cancer)",
    }
    serve = str(Path(sys.executable).with_name("modelship-serve"))
    mlserver_bin = str(mlserver_python.with_name("mlserver"))
    targets: list[Target] = []
    try:
        for model in models:
            port = free_port()
            target = Target("modelship", model, f"http://127.0.0.1:{port}/v2/models/{model}/infer")
            spawn(
                target,
                [
                    serve,
                    "--model-uri",
                    Path(ours_models[model]["path"]).as_uri(),
                    "--sha256",
                    ours_models[model]["sha256"],
                    "--name",
                    model,
                    "--model-version",
                    "1",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(port),
                    "--grpc-port",
                    "0",
                    "--log-level",
                    "warning",
                    "--drain-seconds",
                    "0",
                ],
                work / f"modelship-{model}.log",
            )
            targets.append(target)
            for pw0 in (False, True):
                folder, port = mlserver_dir(work, model, theirs_models[model]["path"], pw0)
                target = Target(
                    "mlserver-pw0" if pw0 else "mlserver",
                    model,
                    f"http://127.0.0.1:{port}/v2/models/{model}/infer",
                )
                spawn(target, [mlserver_bin, "start", str(folder)], folder / "log.txt", cwd=folder)
                targets.append(target)
        port = free_port()
        floor = Target("floor", "floor", f"http://127.0.0.1:{port}/v2/models/floor/infer")
        spawn(
            floor, [sys.executable, str(BENCH / "serving_floor.py"), str(port)], work / "floor.log"
        )
        targets.append(floor)
        say(f"starting {len(targets)} servers on core {SERVER_CPU} (work dir {work})")
        for target in list(targets):
            try:
                wait_ready(target, body)
            except RuntimeError as exc:
                say(f"{target.server}/{target.model} did not start: {exc}")
                stop(target)
                targets.remove(target)
        for target in targets:  # warm-up
            run_wrk(wrk, lua, body_file, target.url, 8, 1)
        total = args.runs * len(CONCURRENCY) * len(targets)
        say(f"measuring: {total} wrk runs of {args.duration:g}s, wrk pinned to core {CLIENT_CPU}")
        for run in range(args.runs):
            for c in CONCURRENCY:
                for target in targets:
                    sid = target.process.pid if target.process else 0
                    cpu_before = session_cpu_seconds(sid)
                    rps, p50, p99, errors, done = run_wrk(
                        wrk, lua, body_file, target.url, c, args.duration
                    )
                    cpu = (session_cpu_seconds(sid) - cpu_before) / done if done else float("nan")
                    if rps > 0:
                        target.results.setdefault(c, []).append((rps, p50, p99, cpu))
                    target.errors += errors
                    print(
                        f"  run {run + 1} c={c:<3} {target.server:>13}/{target.model:<7}"
                        f" {rps:9,.0f} req/s  p50 {fmt_ms(p50):>7} ms  p99 {fmt_ms(p99):>8} ms"
                        f"  cpu {cpu * 1e6:7.0f} us/req" + (f"  ERRORS {errors}" if errors else ""),
                        flush=True,
                    )
    finally:
        for target in targets:
            stop(target)
        logs = {t.server + "/" + t.model: t.log for t in targets if t.errors and t.log}
        for name, log in logs.items():
            say(f"{name} had errors; its log ends with:\n{log.read_text()[-1500:]}")
        if sys.exc_info()[0] is not None:
            shutil.rmtree(work, ignore_errors=True)
    table, verdicts = report(targets, models)
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    wrk_version = subprocess.run([wrk, "-v"], capture_output=True, text=True).stdout.split("\n")[0]
    command = (
        "python bench/run_serving.py"
        + (f" --duration {args.duration:g}" if args.duration != 4 else "")
        + (f" --runs {args.runs}" if args.runs != 3 else "")
    )
    versions = (
        f"modelship-serve (Python {platform.python_version()}, scikit-learn "
        f"{ours_models['sklearn_version']}, numpy {version_of(sys.executable, 'numpy')}, uvicorn "
        f"{version_of(sys.executable, 'uvicorn')}); "
        f"MLServer {version_of(mlserver_python, 'mlserver')}"
        f" + mlserver-sklearn {version_of(mlserver_python, 'mlserver-sklearn')} (scikit-learn "
        f"{theirs_models['sklearn_version']}, uvicorn {version_of(mlserver_python, 'uvicorn')}); "
        f"{wrk_version.strip()}; {cpu}, {os.cpu_count()} cores, Linux {platform.release()}"
    )
    load_after = os.getloadavg()[0]
    section = "\n".join(
        [
            f"Command: `{command}` ({time.strftime('%Y-%m-%d')}). Servers pinned to core "
            f"{SERVER_CPU}, wrk (1 thread, Lua POST script) pinned to core {CLIENT_CPU} with "
            "taskset; loopback; one-row OIP V2 request (30 FP64 features) to "
            f"`/v2/models/<name>/infer`; median of {args.runs} runs of {args.duration:g}s "
            "per point.",
            "",
            f"Versions: {versions}.",
            "",
            f"Machine load (1-min load average) {load_before:.1f} before and {load_after:.1f} "
            "after the run: other work on the machine moves req/s and p99 from run to run; the "
            "server CPU time per request (all of a server's processes, from /proc) moves far less.",
            "",
            table,
            *(f"- {v}" for v in verdicts),
        ]
    )
    print()
    print(section)
    if not args.no_write_docs:
        write_docs(section)
        say(f"wrote the table into {DOCS.relative_to(ROOT)}")
    shutil.rmtree(work, ignore_errors=True)
    say(f"done in {time.monotonic() - started:.0f}s")


if __name__ == "__main__":
    main()
