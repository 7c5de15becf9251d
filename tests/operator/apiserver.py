"""A bare Kubernetes API server (etcd + kube-apiserver on loopback) for API-level tests.

No controllers, nodes or network: only what admission needs (CRD validation, CEL, RBAC,
server-side apply, status subresource). It starts in a few seconds, uses the pinned
binaries the local cluster builds (``modelship_cluster.binaries``), binds 127.0.0.1 only and
stops with the test module. The full local cluster is for tests that need pods.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from modelship_cluster import binaries
from modelship_cluster.ports import free_port as _free_port

ADMIN_TOKEN = "modelship-test-admin"


@dataclass
class ApiServer:
    """A running API server and a kubectl bound to it."""

    kubeconfig: Path
    kubectl_path: Path

    def kubectl(
        self, *args: str, input: str | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [str(self.kubectl_path), f"--kubeconfig={self.kubeconfig}", *args],
            input=input,
            capture_output=True,
            text=True,
            timeout=60,
        )
        if check and result.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)}: {result.stderr}")
        return result


def _binary(name: str) -> Path:
    try:
        return binaries.toolset().path(name)
    except (FileNotFoundError, LookupError) as exc:
        if os.environ.get("CI"):
            raise
        pytest.skip(f"{name} is not built yet (make binaries): {exc}")
        raise  # unreachable; keeps type checkers content


def stop_process(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL if it has not exited in 15 s."""
    process.terminate()
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=5)


def start_apiserver(root: Path, service_cidr: str = "10.97.0.0/24") -> Iterator[ApiServer]:
    """Start etcd and kube-apiserver under ``root``; yield; stop both. ``service_cidr``
    bounds how many Services can exist (a /24: about 250)."""
    etcd, apiserver, kubectl = _binary("etcd"), _binary("kube-apiserver"), _binary("kubectl")
    subprocess.run(["openssl", "genrsa", "-out", str(root / "sa.key"), "2048"],
                   check=True, capture_output=True)  # fmt: skip
    subprocess.run(["openssl", "rsa", "-in", str(root / "sa.key"), "-pubout",
                    "-out", str(root / "sa.pub")], check=True, capture_output=True)  # fmt: skip
    (root / "tokens.csv").write_text(f"{ADMIN_TOKEN},admin,admin,system:masters\n")
    client, peer, secure = _free_port(), _free_port(), _free_port()
    etcd_log = open(root / "etcd.log", "wb")  # noqa: SIM115 - closed after the process ends
    etcd_proc = subprocess.Popen(
        [
            str(etcd),
            "--name=test",
            f"--data-dir={root / 'etcd'}",
            f"--listen-client-urls=http://127.0.0.1:{client}",
            f"--advertise-client-urls=http://127.0.0.1:{client}",
            f"--listen-peer-urls=http://127.0.0.1:{peer}",
            f"--initial-advertise-peer-urls=http://127.0.0.1:{peer}",
            f"--initial-cluster=test=http://127.0.0.1:{peer}",
            "--unsafe-no-fsync",
            "--log-level=error",
        ],
        stdout=etcd_log,
        stderr=subprocess.STDOUT,
    )
    api_log = open(root / "apiserver.log", "wb")  # noqa: SIM115
    api_proc = subprocess.Popen(
        [
            str(apiserver),
            f"--etcd-servers=http://127.0.0.1:{client}",
            "--bind-address=127.0.0.1",
            "--advertise-address=127.0.0.1",
            "--endpoint-reconciler-type=none",
            f"--secure-port={secure}",
            f"--cert-dir={root / 'certs'}",
            f"--token-auth-file={root / 'tokens.csv'}",
            "--authorization-mode=RBAC",
            f"--service-account-key-file={root / 'sa.pub'}",
            f"--service-account-signing-key-file={root / 'sa.key'}",
            "--service-account-issuer=https://kubernetes.default.svc",
            f"--service-cluster-ip-range={service_cidr}",
        ],
        stdout=api_log,
        stderr=subprocess.STDOUT,
    )
    kubeconfig = root / "kubeconfig"
    kubeconfig.write_text(
        "apiVersion: v1\nkind: Config\n"
        f"clusters: [{{name: t, cluster: {{server: 'https://127.0.0.1:{secure}', "
        "insecure-skip-tls-verify: true}}]\n"
        f"users: [{{name: admin, user: {{token: {ADMIN_TOKEN}}}}}]\n"
        "contexts: [{name: t, context: {cluster: t, user: admin}}]\ncurrent-context: t\n"
    )
    server = ApiServer(kubeconfig, kubectl)
    try:
        deadline = time.monotonic() + 120
        while server.kubectl("get", "--raw", "/readyz", check=False).returncode != 0:
            if api_proc.poll() is not None or etcd_proc.poll() is not None:
                log = (root / "apiserver.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"the API server exited:\n{log}")
            if time.monotonic() > deadline:
                raise RuntimeError("the API server did not become ready in 120 s")
            time.sleep(0.5)
        yield server
    finally:
        stop_process(api_proc)
        stop_process(etcd_proc)
        etcd_log.close()
        api_log.close()


ROOT = Path(__file__).resolve().parents[2]


def install_crd(server: ApiServer, *namespaces: str) -> None:
    """Apply the ModelDeployment CRD, wait until it is served, and create ``namespaces``."""
    server.kubectl("apply", "-f", str(ROOT / "manifests/crds/modeldeployments.yaml"))
    server.kubectl(
        "wait", "--for=condition=Established", "--timeout=60s",
        "crd/modeldeployments.modelship.io",
    )  # fmt: skip
    for namespace in namespaces:
        server.kubectl("create", "namespace", namespace)


def start_operator(
    name: str, kubeconfig: Path, logfile: Path, **settings: str
) -> subprocess.Popen[bytes]:
    """The operator process (this checkout's code) against ``kubeconfig``, logging to
    ``logfile``; ``settings`` are MODELSHIP_OPERATOR_<KEY> values (the Lease lives in
    modelship-system, the probes on a free port)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODELSHIP_OPERATOR_")}
    env.update(
        POD_NAME=name,
        MODELSHIP_OPERATOR_HTTP_PORT=str(_free_port()),
        MODELSHIP_OPERATOR_LEASE_NAMESPACE="modelship-system",
        **{f"MODELSHIP_OPERATOR_{key.upper()}": value for key, value in settings.items()},
    )
    with open(logfile, "wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "modelship_operator.cli", "--kubeconfig", str(kubeconfig)],
            env=env,
            cwd=tempfile.gettempdir(),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
