"""Tabular serving benchmark: a mixed-type pipeline, this server side by side with MLServer's
pandas codec on the same model.

The model (bench/serving_train_tabular.py): ColumnTransformer (imputed one-hot on three string
columns, imputed and scaled numbers on three numeric ones) + LogisticRegression, fitted on a
DataFrame in each server's own environment. The request is the same Open Inference Protocol V2
body for every server: one input per column (BYTES for strings, INT64 and FP64 for numbers) and
``parameters.content_type: "pd"``, as MLServer's pandas codec and KServe expect it; 1 and 32
rows. Before measuring, every server's answer is checked against scikit-learn's predictions.

- modelship    modelship-serve (this repository; its numpy-tabular path)
- mlserver     MLServer 1.7.1 + mlserver-sklearn, default settings (parallel_workers: 1)
- mlserver-pw0 the same with parallel_workers: 0 (inference in the HTTP process)
- floor        a bare uvicorn ASGI endpoint that parses the same JSON and answers a constant

Servers pinned to core 0, wrk (one thread, Lua POST script) to core 1 (taskset); loopback only;
concurrency 1 and 8; each point the median of --runs runs of --duration seconds, interleaved
across servers. Reported as ratios. Shares its machinery with bench/run_serving.py.

Usage: python bench/run_serving_tabular.py [--duration 4] [--runs 3] [--no-write-docs]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run_serving import (
    CLIENT_CPU,
    LUA,
    SERVER_CPU,
    Target,
    ensure_mlserver,
    ensure_wrk,
    fmt_ms,
    free_port,
    median_point,
    mlserver_dir,
    run_wrk,
    session_cpu_seconds,
    spawn,
    stop,
    version_of,
    wait_ready,
    write_docs,
)

ROOT = Path(__file__).resolve().parent.parent
BENCH = Path(__file__).resolve().parent
CONCURRENCY = (1, 8)
ROWS = (1, 32)
DOCS = ROOT / "docs" / "serving.md"
BEGIN, END = "<!-- bench:serving-tabular:begin -->", "<!-- bench:serving-tabular:end -->"
STRINGS = ("plan", "region", "channel")
INTS = ("tenure", "tickets")
SERVERS = ("modelship", "mlserver", "mlserver-pw0", "floor")


def say(message: str) -> None:
    print(f"[bench:serving-tabular] {message}", flush=True)


def train(python: Path | str, out: Path, fmt: str) -> dict:
    say(f"training the tabular model with {python} ({fmt})")
    result = subprocess.run(
        [str(python), str(BENCH / "serving_train_tabular.py"), str(out), fmt],
        check=True,
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    return json.loads(result.stdout)


def body_of(rows: list[dict]) -> bytes:
    """The pandas-codec V2 request: one input per column."""
    inputs = []
    for name in rows[0]:
        values = [row[name] for row in rows]
        if name in STRINGS:
            datatype, parameters = "BYTES", {"content_type": "str"}
        elif name in INTS:
            datatype, parameters = "INT64", None
        else:
            datatype, parameters = "FP64", None
        tensor = {"name": name, "shape": [len(rows)], "datatype": datatype, "data": values}
        if parameters:
            tensor["parameters"] = parameters
        inputs.append(tensor)
    return json.dumps({"parameters": {"content_type": "pd"}, "inputs": inputs}).encode()


def predictions_of(url: str, body: bytes) -> list:
    response = httpx.post(
        url, content=body, timeout=10, headers={"content-type": "application/json"}
    )
    response.raise_for_status()
    return response.json()["outputs"][0]["data"]


def report(results: dict[tuple[str, int, int], list]) -> tuple[str, list[str]]:
    lines = [
        "| rows | c | server | req/s | p50 ms | p99 ms | server CPU µs/req "
        "| modelship req/s / this | p50 / floor p50 |",
        "|---:|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    verdicts = []

    def point(server: str, rows: int, c: int) -> tuple[float, ...] | None:
        found = results.get((server, rows, c))
        return median_point(found) if found else None

    for rows in ROWS:
        for c in CONCURRENCY:
            ours, floor = point("modelship", rows, c), point("floor", rows, c)
            for server in SERVERS:
                p = point(server, rows, c)
                if p is None:
                    lines.append(f"| {rows} | {c} | {server} | failed | | | | | |")
                    continue
                rps, p50, p99, cpu = p
                ratio = f"{ours[0] / rps:.2f}x" if ours else ""
                vs_floor = f"{p50 / floor[1]:.2f}" if floor else ""
                lines.append(
                    f"| {rows} | {c} | {server} | {rps:,.0f} | {fmt_ms(p50)} | {fmt_ms(p99)} "
                    f"| {cpu * 1e6:,.0f} | {ratio} | {vs_floor} |"
                )
            best = max(
                (p for s in ("mlserver", "mlserver-pw0") if (p := point(s, rows, c))),
                key=lambda p: p[0],
                default=None,
            )
            if ours and best:
                verdicts.append(
                    f"{rows} row{'s' if rows > 1 else ''}, c={c}: modelship "
                    f"{ours[0] / best[0]:.2f}x "
                    f"the throughput of MLServer's best configuration (CPU per request "
                    f"{best[3] / ours[3]:.1f}x lower); p99 {fmt_ms(ours[2])} ms vs "
                    f"{fmt_ms(best[2])} ms"
                )
    return "\n".join(lines), verdicts


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
    work = Path(tempfile.mkdtemp(prefix="modelship-bench-tabular-"))
    lua = work / "post.lua"
    lua.write_text(LUA)
    ours = train(sys.executable, work / "ours", "skops")
    theirs = train(mlserver_python, work / "theirs", "joblib")
    if ours["predictions"] != theirs["predictions"]:
        raise SystemExit("the two environments trained different models; compare their versions")
    bodies = {rows: body_of(ours["rows"][:rows]) for rows in ROWS}
    body_files = {}
    for rows, body in bodies.items():
        body_files[rows] = work / f"body-{rows}.json"
        body_files[rows].write_bytes(body)
    serve = str(Path(sys.executable).with_name("modelship-serve"))
    mlserver_bin = str(mlserver_python.with_name("mlserver"))
    targets: list[Target] = []
    results: dict[tuple[str, int, int], list] = {}
    errors: dict[str, int] = {}
    try:
        port = free_port()
        target = Target("modelship", "churn", f"http://127.0.0.1:{port}/v2/models/churn/infer")
        spawn(
            target,
            [
                serve,
                "--model-uri",
                Path(ours["path"]).as_uri(),
                "--sha256",
                ours["sha256"],
                "--name",
                "churn",
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
            work / "modelship.log",
        )
        targets.append(target)
        for pw0 in (False, True):
            folder, port = mlserver_dir(work, "churn", theirs["path"], pw0)
            target = Target(
                "mlserver-pw0" if pw0 else "mlserver",
                "churn",
                f"http://127.0.0.1:{port}/v2/models/churn/infer",
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
                wait_ready(target, bodies[1])
            except RuntimeError as exc:
                say(f"{target.server} did not start: {exc}")
                stop(target)
                targets.remove(target)
        for target in targets:
            if target.server == "floor":
                continue
            for rows, body in bodies.items():
                got = predictions_of(target.url, body)
                if [int(v) for v in got] != ours["predictions"][:rows]:
                    raise SystemExit(f"{target.server} answered {got} for {rows} rows")
        say("every server answers scikit-learn's predictions")
        for target in targets:  # warm-up
            run_wrk(wrk, lua, body_files[1], target.url, 8, 1)
        total = args.runs * len(CONCURRENCY) * len(ROWS) * len(targets)
        say(f"measuring: {total} wrk runs of {args.duration:g}s, wrk pinned to core {CLIENT_CPU}")
        for run in range(args.runs):
            for rows in ROWS:
                for c in CONCURRENCY:
                    for target in targets:
                        sid = target.process.pid if target.process else 0
                        cpu_before = session_cpu_seconds(sid)
                        rps, p50, p99, bad, done = run_wrk(
                            wrk, lua, body_files[rows], target.url, c, args.duration
                        )
                        cpu = (session_cpu_seconds(sid) - cpu_before) / done if done else 0.0
                        if rps > 0:
                            results.setdefault((target.server, rows, c), []).append(
                                (rps, p50, p99, cpu)
                            )
                        errors[target.server] = errors.get(target.server, 0) + bad
                        print(
                            f"  run {run + 1} rows={rows:<2} c={c} {target.server:>13}"
                            f" {rps:9,.0f} req/s  p50 {fmt_ms(p50):>7} ms  p99 {fmt_ms(p99):>8} ms"
                            f"  cpu {cpu * 1e6:7.0f} us/req" + (f"  ERRORS {bad}" if bad else ""),
                            flush=True,
                        )
    finally:
        for target in targets:
            stop(target)
        for target in targets:
            if errors.get(target.server) and target.log:
                tail = target.log.read_text()[-1500:]
                say(f"{target.server} had errors; its log ends with:\n{tail}")
    table, verdicts = report(results)
    wrk_version = subprocess.run([wrk, "-v"], capture_output=True, text=True).stdout.split("\n")[0]
    command = (
        "python bench/run_serving_tabular.py"
        + (f" --duration {args.duration:g}" if args.duration != 4 else "")
        + (f" --runs {args.runs}" if args.runs != 3 else "")
    )
    versions = (
        f"modelship-serve (Python {platform.python_version()}, scikit-learn "
        f"{ours['sklearn_version']}, pandas {version_of(sys.executable, 'pandas')}); MLServer "
        f"{version_of(mlserver_python, 'mlserver')} + mlserver-sklearn "
        f"{version_of(mlserver_python, 'mlserver-sklearn')} (scikit-learn "
        f"{theirs['sklearn_version']}, pandas {version_of(mlserver_python, 'pandas')}); "
        f"{wrk_version.strip()}; {os.cpu_count()} cores, Linux {platform.release()}"
    )
    section = "\n".join(
        [
            f"Command: `{command}` ({time.strftime('%Y-%m-%d')}). Servers pinned to core "
            f"{SERVER_CPU}, wrk (1 thread) pinned to core {CLIENT_CPU} with taskset; loopback; "
            "the same pandas-codec V2 request (one input per column, `content_type: pd`) to "
            f"every server; median of {args.runs} runs of {args.duration:g}s per point.",
            "",
            f"Versions: {versions}. Machine load (1-min average) {load_before:.1f} before and "
            f"{os.getloadavg()[0]:.1f} after.",
            "",
            table,
            "",
            *(f"- {v}" for v in verdicts),
        ]
    )
    print()
    print(section)
    if not args.no_write_docs:
        write_docs(section, BEGIN, END)
        say(f"wrote the table into {DOCS.relative_to(ROOT)}")
    shutil.rmtree(work, ignore_errors=True)
    say(f"done in {time.monotonic() - started:.0f}s")


if __name__ == "__main__":
    main()
