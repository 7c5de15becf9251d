"""`make demo`: the local cluster, the operator installed with Helm, three model versions,
live traffic, one canary promoted and one rolled back, with the analysis shown as it runs.

Everything it starts it stops again when it ends or is interrupted (Ctrl-C), unless
`--keep` leaves the cluster running to explore.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import secrets
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from modelship_cluster import binaries
from modelship_cluster.cluster import Cluster
from modelship_operator.generate import MONITORING_VALUES
from modelship_operator.status import TERMINAL_PHASES
from modelship_operator.statusview import analysis_table, parse_status, summary

from modelship_demo import models as demo_models
from modelship_demo.plot import Timeline, write_png
from modelship_demo.traffic import TrafficStats, background_traffic

REPO = Path(__file__).resolve().parents[2]
NAMESPACE = "demo"
NAME = "breast-cancer"
OPERATOR_NAMESPACE = "modelship-system"
#: The Secret holding the token the demo's application posts ground truth with.
ACCESS_SECRET = f"{NAME}-access"
STEPS = [20, 50, 80]
STRATEGY: dict[str, Any] = {
    "type": "Canary",
    "steps": STEPS,
    "interval": "10s",
    "minSamples": 20,
    "maxFailedChecks": 2,
    "scaleDownDelay": "5s",
    "progressDeadline": "3m",
    "metrics": [
        {"name": "success-rate", "min": 99},
        {"name": "latency-p99", "max": 0.5},
        {"name": "accuracy", "compareTo": "stable", "margin": {"absolute": 2}},
    ],
}


def say(message: str) -> None:
    print(f"\n\033[1m==> {message}\033[0m", flush=True)


def info(message: str) -> None:
    print(f"    {message}", flush=True)


@dataclass
class Demo:
    cluster: Cluster
    out_dir: Path
    rate: float
    #: New every run, as a user makes one: ``openssl rand -hex 32``.
    token: str = field(default_factory=lambda: secrets.token_hex(32))

    def __post_init__(self) -> None:
        from kubernetes import client, config

        self.api = config.new_client_from_config(  # type: ignore[no-untyped-call]
            config_file=str(self.cluster.kubeconfig)
        )
        self.custom = client.CustomObjectsApi(self.api)
        self.core = client.CoreV1Api(self.api)

    # -- kubernetes ---------------------------------------------------------------------
    def kubectl(self, *args: str, input: str | None = None) -> str:
        result = subprocess.run(
            [str(binaries.toolset().kubectl), f"--kubeconfig={self.cluster.kubeconfig}", *args],
            input=input,
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(f"kubectl {' '.join(args)}: {result.stderr.strip()}")
        return result.stdout

    def get(self) -> dict[str, Any]:
        body = self.custom.get_namespaced_custom_object(
            "modelship.io", "v1alpha2", NAMESPACE, "modeldeployments", NAME
        )
        assert isinstance(body, dict)
        return body

    def patch_spec(self, spec: dict[str, Any]) -> None:
        self.custom.patch_namespaced_custom_object(
            "modelship.io", "v1alpha2", NAMESPACE, "modeldeployments", NAME, {"spec": spec}
        )

    # -- steps --------------------------------------------------------------------------
    def install_operator(self) -> None:
        helm = binaries.toolset().helm
        subprocess.run(
            [
                str(helm),
                "upgrade",
                "--install",
                "modelship",
                str(REPO / "charts" / "modelship"),
                "--namespace",
                OPERATOR_NAMESPACE,
                "--create-namespace",
                "--kubeconfig",
                str(self.cluster.kubeconfig),
                "--set",
                "resyncSeconds=2",
                # The local cluster runs the Prometheus Operator: the chart's monitors are
                # what makes it scrape the operator, serving and router pods.
                *[arg for value in MONITORING_VALUES for arg in ("--set", value)],
                "--wait",
                "--timeout",
                "3m",
            ],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        info(f"helm release modelship in {OPERATOR_NAMESPACE}: operator ready")

    def deploy_stable(self, model: demo_models.DemoModel) -> None:
        manifest = {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {
                "name": NAMESPACE,
                "labels": {"pod-security.kubernetes.io/enforce": "restricted"},
            },
        }
        self.kubectl("apply", "-f", "-", input=json.dumps(manifest))
        # Only holders of this token may post feedback, which decides promotion.
        secret = {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": ACCESS_SECRET, "namespace": NAMESPACE},
            "type": "Opaque",
            "stringData": {"token": self.token},
        }
        self.kubectl("apply", "-f", "-", input=json.dumps(secret))
        # A clean start when an earlier run left its ModelDeployment behind (--keep).
        self.kubectl("delete", "mdep", NAME, "-n", NAMESPACE, "--ignore-not-found", "--wait")
        stored = self.cluster.add_model(model.path)
        resource = {
            "apiVersion": "modelship.io/v1alpha2",
            "kind": "ModelDeployment",
            "metadata": {"name": NAME, "namespace": NAMESPACE},
            "spec": {
                "model": {
                    "name": NAME,
                    "version": model.version,
                    "uri": stored.uri,
                    "sha256": stored.sha256,
                },
                "strategy": STRATEGY,
                "access": {"tokenSecret": {"name": ACCESS_SECRET}},
            },
        }
        self.kubectl("apply", "-f", "-", input=json.dumps(resource))
        info(f"ModelDeployment {NAMESPACE}/{NAME} with model {model.version} ({stored.uri})")
        self.wait(lambda body: _ready(body), "stable pods and the router to be ready", 180)

    def wait(self, done: Any, what: str, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            with contextlib.suppress(Exception):
                body = self.get()
                line = summary(NAME, parse_status(body), len(STEPS))
                if line != last:
                    info(line)
                    last = line
                if done(body):
                    return body
            time.sleep(0.5)
        raise TimeoutError(f"waited {timeout:.0f}s for {what}")

    def router_url(self) -> str:
        service = self.core.read_namespaced_service(f"{NAME}-router", NAMESPACE)
        spec = service.spec
        if spec is None or not spec.ports:
            raise RuntimeError(f"Service {NAME}-router has no ports")
        return f"http://{spec.cluster_ip}:{spec.ports[0].port}"

    def wait_routable(self, url: str, row: list[float], timeout: float = 60) -> None:
        """Ready pods are not yet a routable Service: wait until kube-proxy routes its address
        (otherwise the first requests of the traffic fail to connect)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                answer = httpx.post(f"{url}/v1/models/{NAME}:predict", json={"instances": [row]})
                if answer.status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"the router's Service {url} does not answer")
            time.sleep(0.2)

    def roll_out(self, model: demo_models.DemoModel, timeout: float = 240) -> tuple[str, Timeline]:
        stored = self.cluster.add_model(model.path)
        timeline = Timeline(f"canary {model.version}: {model.story}")
        for check in STRATEGY["metrics"]:
            timeline.thresholds[check["name"]] = _describe_check(check)
        # As a user's next commit does: spec.model names the new version; the operator rolls
        # it out from the one serving now and records the outcome in status.
        self.patch_spec(
            {"model": {"version": model.version, "uri": stored.uri, "sha256": stored.sha256}}
        )
        info(f"spec.model is now {model.version}")
        began = time.monotonic()
        deadline = began + timeout
        last_line, last_analysis = "", ""
        seen_rollout = False
        while time.monotonic() < deadline:
            time.sleep(0.5)
            try:
                body = self.get()
            except Exception:  # a moment of API unavailability: keep watching
                continue
            status = parse_status(body)
            t = time.monotonic() - began
            traffic = status.traffic
            timeline.weight.append((t, traffic.canary if traffic else 0))
            timeline.phase.append((t, status.phase or "Pending"))
            line = summary(NAME, status, len(STEPS))
            if line != last_line:
                info(f"[{t:5.1f}s] {line}")
                last_line = line
            table = analysis_table(status.last_analysis, indent="      ")
            if status.last_analysis and table != last_analysis:
                print(table, flush=True)
                last_analysis = table
                for result in status.last_analysis:
                    if result.value is not None:
                        timeline.add_metric(result.metric, result.variant, t, result.value)
                    if result.stable_value is not None:
                        timeline.add_metric(result.metric, "stable", t, result.stable_value)
            candidate = status.rollout.candidate if status.rollout else None
            if candidate is not None and candidate.version == model.version:
                seen_rollout = True
            if seen_rollout and status.phase in TERMINAL_PHASES:
                outcome = status.phase
                if outcome == "Promoted":
                    self.wait(
                        lambda b: _stable_version(b) == model.version and _ready(b),
                        "stable to run the promoted model",
                        120,
                    )
                    info(f"stable serves {model.version}: nothing left to edit in the spec")
                else:
                    info(f"{model.version} rejected; stable keeps serving {_stable_version(body)}")
                return outcome, timeline
        raise TimeoutError(f"the rollout of {model.version} did not finish in {timeout:.0f}s")


def _describe_check(check: dict[str, Any]) -> str:
    if "min" in check:
        return f">= {check['min']}"
    if "max" in check:
        return f"<= {check['max']}"
    margin = check.get("margin", {})
    return f"stable - {margin.get('absolute', margin.get('relative'))}"


def _ready(body: dict[str, Any]) -> bool:
    conditions = (body.get("status") or {}).get("conditions") or []
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


def _stable_version(body: dict[str, Any]) -> str | None:
    return ((body.get("status") or {}).get("stable") or {}).get("version")


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="modelship-demo",
        description="A canary promoted and a canary rolled back, live, on the local cluster.",
    )
    parser.add_argument("--keep", action="store_true", help="leave the cluster running at the end")
    parser.add_argument(
        "--out", type=Path, default=REPO / "demo-output", help="where the charts go"
    )
    parser.add_argument("--rate", type=float, default=25.0, help="predictions per second")
    args = parser.parse_args(argv)

    # Ctrl-C and SIGTERM both end the demo through the clean-up below, even when the
    # process was started with SIGINT ignored (as a background job of a script is).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _interrupt)
    started = time.monotonic()
    cluster = Cluster()
    started_cluster = not cluster.is_up()
    outcomes: list[tuple[demo_models.DemoModel, str, Path]] = []
    stats: TrafficStats | None = None
    try:
        say("Starting the local Kubernetes cluster")
        cluster.up()
        say("Installing the modelship operator with Helm")
        demo = Demo(cluster, args.out, args.rate)
        demo.install_operator()
        say("Training three versions of a breast-cancer classifier (scikit-learn, skops)")
        trained, holdout = demo_models.train(args.out / "models")
        for m in trained:
            info(f"{m.version}: {m.story}; hold-out accuracy {m.holdout_accuracy:.3f}")
        stable, better, faulty = trained
        say(f"Deploying {stable.version} as the stable version")
        demo.deploy_stable(stable)
        url = demo.router_url()
        demo.wait_routable(url, holdout.features[0].tolist())
        info(f"router at {url}; sending {args.rate:.0f} predictions/s with ground-truth feedback")
        with background_traffic(
            url,
            NAME,
            holdout.features,
            holdout.labels,
            rate=args.rate,
            seconds=480,
            join_timeout=20,
            token=demo.token,
        ) as stats:
            time.sleep(5)
            for model, expectation in ((better, "promoted"), (faulty, "rolled back")):
                say(f"Rolling out {model.version} ({model.story}): expect it to be {expectation}")
                outcome, timeline = demo.roll_out(model)
                png = write_png(timeline, args.out / f"rollout-{model.version}.png")
                outcomes.append((model, outcome, png))
                info(f"{model.version}: {outcome}; chart {png}")
        say("Summary")
        for model, outcome, png in outcomes:
            info(f"{model.version:<6} {outcome:<11} {model.story}  ({png})")
        served = ", ".join(f"{v} {n}" for v, n in sorted(stats.by_variant().items()))
        info(
            f"client: {stats.total} predictions ({served}), {stats.non_2xx} not 2xx, "
            f"{stats.feedback_sent} feedback"
        )
        print(demo.kubectl("get", "mdep", "-n", NAMESPACE), end="", flush=True)
        if args.keep:
            info("the cluster keeps running; explore with:")
            info(f'  eval "$({REPO}/.venv/bin/modelship-cluster env)"')
            info(f"  kubectl get mdep -n {NAMESPACE}")
            info(f"  kubectl modelship status {NAME} -n {NAMESPACE}")
            info("  make cluster-down   # when done")
        else:
            info("explore it live: make demo DEMO_ARGS=--keep, then")
            info(
                f"  kubectl get mdep -n {NAMESPACE}; kubectl modelship status {NAME} -n {NAMESPACE}"
            )
        return 0 if [o for _, o, _ in outcomes] == ["Promoted", "RolledBack"] else 1
    except KeyboardInterrupt:
        print("\ninterrupted: cleaning up", file=sys.stderr)
        return 130
    finally:
        if started_cluster and not args.keep:
            say("Stopping the local cluster")
            cluster.down()
        print(f"\ndemo finished in {time.monotonic() - started:.0f}s", flush=True)


if __name__ == "__main__":
    sys.exit(main())
