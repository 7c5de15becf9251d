"""gRPC serving benchmark: the Open Inference Protocol's ModelInfer, this model server side by
side with MLServer's gRPC server, in one run.

Same model (breast-cancer LogisticRegression, trained in each server's own environment by
bench/serving_train.py), same request: one row of 30 FP64 features as raw_input_contents
(what tritonclient sends), the ``predict`` output.

- modelship    modelship-serve (this repository), its gRPC port
- mlserver     MLServer 1.7.1 + mlserver-sklearn, default settings (parallel_workers: 1)
- mlserver-pw0 the same with parallel_workers: 0 (inference in the server process)

Every server runs pinned to core 0, the load generator (bench/grpc_load.py: grpc.aio, one
channel, closed loop, serialized request and response bytes) to core 1. Loopback only.
Concurrency 1 and 8; each point is the median of --runs runs of --duration seconds,
interleaved across servers. MLServer comes from the cached virtualenv bench/run_serving.py
makes (~/.cache/modelship/bench/mlserver-1.7.1/).

Usage: python bench/run_serving_grpc.py [--duration 4] [--runs 3] [--no-write-docs]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from modelship_serving.oip import grpc_predict_v2_pb2 as pb
from run_serving import (
    BENCH,
    CLIENT_CPU,
    SERVER_CPU,
    Target,
    ensure_mlserver,
    fmt_ms,
    free_port,
    median_point,
    mlserver_dir,
    say,
    session_cpu_seconds,
    spawn,
    stop,
    train,
    version_of,
    write_docs,
)

CONCURRENCY = (1, 8)
BEGIN, END = "<!-- bench:serving-grpc:begin -->", "<!-- bench:serving-grpc:end -->"
SERVERS = ("modelship", "mlserver", "mlserver-pw0")
GOAL = 3.0


def request_of(row: list[float]) -> bytes:
    request = pb.ModelInferRequest(model_name="logreg")
    request.inputs.add(name="input-0", datatype="FP64", shape=[1, len(row)])
    request.outputs.add(name="predict")
    request.raw_input_contents.append(np.asarray([row], dtype="<f8").tobytes())
    return request.SerializeToString()


def predict_once(target: str, body: bytes) -> pb.ModelInferResponse | None:
    import grpc

    with grpc.insecure_channel(target) as channel:
        call = channel.unary_unary(
            "/inference.GRPCInferenceService/ModelInfer",
            request_serializer=lambda b: b,
            response_deserializer=pb.ModelInferResponse.FromString,
        )
        try:
            return call(body, timeout=5)  # type: ignore[no-any-return]
        except grpc.RpcError:
            return None


def wait_grpc(target: Target, body: bytes, timeout: float = 180) -> None:
    log = target.log or Path("/dev/null")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if target.process is not None and target.process.poll() is not None:
            raise RuntimeError(f"{target.server} exited:\n{log.read_text()[-3000:]}")
        response = predict_once(target.url, body)
        if response is not None and response.outputs:
            return
        time.sleep(0.3)
    raise RuntimeError(f"{target.server} not ready after {timeout}s:\n{log.read_text()[-3000:]}")


def run_load(target: str, body_file: Path, c: int, duration: float) -> dict[str, float]:
    out = subprocess.run(
        [
            "taskset",
            "-c",
            CLIENT_CPU,
            sys.executable,
            str(BENCH / "grpc_load.py"),
            target,
            str(body_file),
            str(c),
            str(duration),
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(out.stdout)  # type: ignore[no-any-return]


def report(targets: list[Target]) -> tuple[str, list[str]]:
    by = {t.server: t for t in targets}
    lines = [
        "| server | c | req/s | p50 ms | p99 ms | server CPU ms/req |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for c in CONCURRENCY:
        for server in SERVERS:
            target = by.get(server)
            if target is None or c not in target.results:
                continue
            rps, p50, p99, cpu = median_point(target.results[c])
            lines.append(
                f"| {server} | {c} | {rps:,.0f} | {fmt_ms(p50)} | {fmt_ms(p99)} | "
                f"{cpu * 1000:.3f} |"
            )
    verdicts = []
    ours = by.get("modelship")
    theirs = [
        median_point(by[s].results[8])
        for s in ("mlserver", "mlserver-pw0")
        if s in by and 8 in by[s].results
    ]
    if ours is not None and 8 in ours.results and theirs:
        mine = median_point(ours.results[8])
        best = max(theirs, key=lambda p: p[0])
        ratio = mine[0] / best[0]
        verdicts.append(
            f"gRPC ModelInfer, c=8: modelship {ratio:.2f}x the throughput of MLServer's best "
            f"configuration (goal: at least {GOAL:g}x: {'met' if ratio >= GOAL else 'NOT met'}); "
            f"p50 {fmt_ms(mine[1])} ms vs {fmt_ms(best[1])} ms"
        )
    return "\n".join(lines), verdicts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=4, help="seconds per load run")
    parser.add_argument("--runs", type=int, default=3, help="runs per point (median)")
    parser.add_argument("--no-write-docs", action="store_true", help="do not update docs")
    args = parser.parse_args()
    if (os.cpu_count() or 1) < 2:
        raise SystemExit("needs 2 cores: server on core 0, load generator on core 1")
    started = time.monotonic()
    load_before = os.getloadavg()[0]
    mlserver_python = ensure_mlserver()
    work = Path(tempfile.mkdtemp(prefix="modelship-bench-grpc-"))
    ours = train(sys.executable, work / "ours", "skops")
    theirs = train(mlserver_python, work / "theirs", "joblib")
    body = request_of(ours["row"])
    body_file = work / "request.bin"
    body_file.write_bytes(body)
    serve = str(Path(sys.executable).with_name("modelship-serve"))
    mlserver_bin = str(mlserver_python.with_name("mlserver"))
    targets: list[Target] = []
    try:
        grpc_port = free_port()
        target = Target("modelship", "logreg", f"127.0.0.1:{grpc_port}")
        spawn(
            target,
            [
                serve,
                "--model-uri",
                Path(ours["logreg"]["path"]).as_uri(),
                "--sha256",
                ours["logreg"]["sha256"],
                "--name",
                "logreg",
                "--model-version",
                "1",
                "--host",
                "127.0.0.1",
                "--port",
                str(free_port()),
                "--grpc-port",
                str(grpc_port),
                "--log-level",
                "warning",
                "--drain-seconds",
                "0",
            ],
            work / "modelship.log",
        )
        targets.append(target)
        for pw0 in (False, True):
            folder, _ = mlserver_dir(work, "logreg", theirs["logreg"]["path"], pw0)
            settings = json.loads((folder / "settings.json").read_text())
            target = Target(
                "mlserver-pw0" if pw0 else "mlserver",
                "logreg",
                f"127.0.0.1:{settings['grpc_port']}",
            )
            spawn(target, [mlserver_bin, "start", str(folder)], folder / "log.txt", cwd=folder)
            targets.append(target)
        say(f"starting {len(targets)} servers on core {SERVER_CPU} (work dir {work})")
        for target in list(targets):
            try:
                wait_grpc(target, body)
            except RuntimeError as exc:
                say(f"{target.server} did not start: {exc}")
                stop(target)
                targets.remove(target)
        for target in targets:  # warm-up
            run_load(target.url, body_file, 8, 1)
        say(
            f"measuring: {args.runs * len(CONCURRENCY) * len(targets)} runs of "
            f"{args.duration:g}s, load generator pinned to core {CLIENT_CPU}"
        )
        for _ in range(args.runs):
            for c in CONCURRENCY:
                for target in targets:
                    sid = target.process.pid if target.process else 0
                    cpu_before = session_cpu_seconds(sid)
                    result = run_load(target.url, body_file, c, args.duration)
                    done = result["requests"]
                    cpu = (session_cpu_seconds(sid) - cpu_before) / done if done else float("nan")
                    rps = done / result["seconds"] if result["seconds"] else 0.0
                    if rps > 0:
                        target.results.setdefault(c, []).append(
                            (rps, result["p50"], result["p99"], cpu)
                        )
                    target.errors += int(result["errors"])
                    print(
                        f"  {target.server:13s} c={c:<2d} {rps:9,.0f} req/s "
                        f"p50 {fmt_ms(result['p50'])} ms p99 {fmt_ms(result['p99'])} ms "
                        f"errors {int(result['errors'])}",
                        flush=True,
                    )
    finally:
        for target in targets:
            stop(target)
    table, verdicts = report(targets)
    errors = {t.server: t.errors for t in targets if t.errors}
    footer = (
        f"modelship-serve (Python {platform.python_version()}, scikit-learn "
        f"{ours['sklearn_version']}, grpcio {version_of(sys.executable, 'grpcio')}); MLServer "
        f"{version_of(mlserver_python, 'mlserver')} + mlserver-sklearn "
        f"{version_of(mlserver_python, 'mlserver-sklearn')} (scikit-learn "
        f"{theirs['sklearn_version']}, grpcio {version_of(mlserver_python, 'grpcio')}); "
        f"{os.cpu_count()} cores, load average {load_before:.2f} before the run; "
        f"{args.runs} runs of {args.duration:g}s per point (median); "
        f"{time.monotonic() - started:.0f}s in all" + (f"; errors: {errors}" if errors else "")
    )
    section = "\n\n".join(
        [
            "Measured by `bench/run_serving_grpc.py` (one row, 30 FP64 features as raw "
            "contents, breast-cancer LogisticRegression; servers on core 0, the grpc.aio load "
            "generator on core 1):",
            table,
            *(f"**{v}**" for v in verdicts),
            footer,
        ]
    )
    print(section)
    if not args.no_write_docs:
        write_docs(section, BEGIN, END)
        say("docs/serving.md updated")


if __name__ == "__main__":
    main()
