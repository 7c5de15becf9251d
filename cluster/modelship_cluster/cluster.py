"""One local cluster: its state folder, and the order in which its parts start and stop."""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from modelship_cluster import binaries, controlplane, modelstore, node, pki, registry
from modelship_cluster.controlplane import ClusterConfig
from modelship_cluster.processes import ManagedProcess, ProcessDir, tail

# Stop order: the reverse of start order.
CONTROL_PLANE = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler")


def default_state_dir() -> Path:
    env = os.environ.get("MODELSHIP_CLUSTER_DIR")
    if env:
        return Path(env)
    state_home = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state_home) / "modelship" / "cluster"


def _say(message: str) -> None:
    print(f"==> {message}", file=sys.stderr, flush=True)


@dataclass(frozen=True)
class ComponentStatus:
    name: str
    pid: int | None
    running: bool


class Cluster:
    """Start, stop and inspect the local cluster whose state lives in `root`."""

    def __init__(self, root: Path | None = None, config: ClusterConfig | None = None) -> None:
        self.root = (root or default_state_dir()).resolve()
        saved = self.root / "cluster.json"
        if config is None and saved.exists():
            config = ClusterConfig.model_validate_json(saved.read_text())
        self.config = config or ClusterConfig()
        self.processes = ProcessDir(self.root)
        self.pki_dir = self.root / "pki"

    # -- paths a user needs -------------------------------------------------------------
    @property
    def kubeconfig(self) -> Path:
        return self.root / "admin.kubeconfig"

    @property
    def ca(self) -> Path:
        return self.pki_dir / "ca.crt"

    @property
    def admin_cert(self) -> pki.CertPair:
        return pki.CertPair(self.pki_dir / "admin.crt", self.pki_dir / "admin.key")

    @property
    def models_dir(self) -> Path:
        return self.root / "models"

    @property
    def model_store_url(self) -> str:
        return modelstore.base_url(self.config.apiserver_advertise)

    def add_model(self, source: Path, name: str | None = None) -> modelstore.StoredModel:
        """Put a model file in the model store; pods fetch it from the returned URI."""
        return modelstore.add(self.models_dir, source, self.config.apiserver_advertise, name)

    # -- lifecycle ----------------------------------------------------------------------
    def up(self, timeout: float = 120.0) -> None:
        """Start every component (idempotent: running ones are left alone)."""
        started = time.monotonic()
        tools = binaries.ensure_all()
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / "cluster.json").write_text(self.config.model_dump_json(indent=2))
        self._write_pki()
        cfg = self.config
        node.before_control_plane()  # the apiserver listens on the bridge's gateway

        self.start_healthy(
            "etcd",
            controlplane.etcd_args(tools, cfg, self.root / "etcd-data"),
            f"http://127.0.0.1:{cfg.etcd_client_port}/health",
            timeout,
        )
        self._start_apiserver(timeout)
        _say(f"kube-apiserver ready at {cfg.server_url}")
        manager = self.processes.start(
            "kube-controller-manager", controlplane.controller_manager_args(tools, cfg, self.root)
        )
        scheduler = self.processes.start(
            "kube-scheduler", controlplane.scheduler_args(tools, cfg, self.root)
        )
        for proc, port in ((manager, cfg.controller_manager_port), (scheduler, cfg.scheduler_port)):
            controlplane.wait_healthy(
                f"https://127.0.0.1:{port}/healthz",
                ca=None,
                client=None,
                timeout=timeout,
                alive=proc.alive,
                what=self._what(proc.name),
            )
        _say(f"control plane up in {time.monotonic() - started:.1f}s (state: {self.root})")
        node.start(self, timeout)  # containerd, kubelet, kube-proxy, CoreDNS, Prometheus
        if node.enabled():
            self.models_dir.mkdir(parents=True, exist_ok=True)
            self.models_dir.chmod(0o755)
            self.processes.start(
                "model-store", modelstore.server_args(self.models_dir, cfg.apiserver_advertise)
            )
            _say(f"model store at {self.model_store_url} (add files: modelship-cluster models add)")
        if node.enabled() and registry.enabled():
            if registry.installed():
                self._start_registry(timeout)
            else:
                _say(f"no model registry: {registry.mlflow_command()} is missing "
                     "(`make venv` installs mlflow with the dev dependencies)")  # fmt: skip

    @property
    def registry_dir(self) -> Path:
        return self.root / "mlflow"

    @property
    def registry_url(self) -> str:
        """The MLflow tracking server, as the host, the operator and the pods reach it."""
        return registry.tracking_uri(self.config.apiserver_advertise)

    def _start_registry(self, timeout: float) -> None:
        """The MLflow tracking server (SQLite backend store, proxied artifacts), on the pod
        network's gateway beside the model store."""
        self.registry_dir.mkdir(parents=True, exist_ok=True)
        proc = self.processes.start(
            registry.PROCESS,
            registry.server_args(self.registry_dir, self.config.apiserver_advertise),
            cwd=self.registry_dir,
        )
        try:
            # mlflow's first start creates its SQLite schema (a few seconds on two cores).
            registry.wait_ready(self.registry_url, max(timeout, 120.0), proc.alive)
        except RuntimeError as exc:
            raise RuntimeError(f"{exc}; {self._what(registry.PROCESS)}") from exc
        _say(f"model registry (MLflow) at {self.registry_url} (MODELSHIP_MLFLOW=0 skips it)")

    def restart_apiserver(self, timeout: float = 60.0) -> float:
        """Stop kube-apiserver (SIGTERM, as a control-plane upgrade does) and start it again
        with the same arguments; returns the seconds until it was ready again."""
        started = time.monotonic()
        self.processes.stop("kube-apiserver")
        self._start_apiserver(timeout)
        return time.monotonic() - started

    def _start_apiserver(self, timeout: float) -> None:
        self.start_healthy(
            "kube-apiserver",
            controlplane.apiserver_args(binaries.toolset(), self.config, self.pki_dir),
            f"{self.config.server_url}/readyz",
            timeout,
            tls=True,
        )

    def start_healthy(
        self, name: str, argv: Sequence[str], health_url: str, timeout: float, tls: bool = False
    ) -> ManagedProcess:
        """Start NAME (unless it runs) and wait until HEALTH_URL answers 200; with TLS, as
        the admin over the cluster CA. Fails with the process's log if it dies meanwhile."""
        proc = self.processes.start(name, argv)
        controlplane.wait_healthy(
            health_url,
            ca=self.ca if tls else None,
            client=self.admin_cert if tls else None,
            timeout=timeout,
            alive=proc.alive,
            what=self._what(name),
        )
        return proc

    def down(self, keep_data: bool = False) -> None:
        """Stop every component in reverse order; remove the state unless asked to keep it."""
        node.stop(self)  # the kubelet and every pod before containerd, while the API runs
        known = [p.name for p in self.processes.all()]
        order = [n for n in known if n not in CONTROL_PLANE] + [
            n for n in reversed(CONTROL_PLANE) if n in known
        ]
        for name in order:
            self.processes.stop(name)
        node.teardown(self)  # mounts, cgroups, kube-proxy's rules, the pod network
        if not keep_data and self.root.exists():
            shutil.rmtree(self.root)

    def status(self) -> list[ComponentStatus]:
        return [ComponentStatus(p.name, p.pid, p.alive()) for p in self.processes.all()]

    def is_up(self) -> bool:
        procs = {s.name: s.running for s in self.status()}
        return all(procs.get(name) for name in CONTROL_PLANE)

    # -- internals ----------------------------------------------------------------------
    def _what(self, name: str) -> str:
        log = self.processes.logs / f"{name}.log"
        return f"{name} (log {log}; last lines:\n{tail(log, 15)}\n)"

    def _write_pki(self) -> None:
        cfg = self.config
        ca = pki.create_ca(self.pki_dir)
        pki.create_service_account_key(self.pki_dir)
        # The aggregation layer's (controlplane.aggregation_args names these files).
        pki.create_front_proxy(self.pki_dir)
        pki.issue(
            ca,
            self.pki_dir,
            "apiserver",
            "kube-apiserver",
            dns_names=(
                "localhost",
                "kubernetes",
                "kubernetes.default",
                "kubernetes.default.svc",
                "kubernetes.default.svc.cluster.local",
            ),
            ip_addresses=tuple(
                dict.fromkeys(
                    (
                        "127.0.0.1",
                        cfg.apiserver_bind,
                        cfg.apiserver_advertise,
                        cfg.kubernetes_service_ip,
                    )
                )
            ),
            server=True,
        )
        identities = {
            "admin": ("kubernetes-admin", ("system:masters",)),
            "controller-manager": ("system:kube-controller-manager", ()),
            "scheduler": ("system:kube-scheduler", ()),
        }
        # The apiserver's identity towards the kubelet (logs, exec, port-forward).
        pki.issue(
            ca,
            self.pki_dir,
            "apiserver-kubelet-client",
            "kube-apiserver-kubelet-client",
            organizations=("system:masters",),
            client=True,
        )
        for basename, (common_name, groups) in identities.items():
            pair = pki.issue(
                ca, self.pki_dir, basename, common_name, organizations=groups, client=True
            )
            path = self.root / f"{basename}.kubeconfig"
            path.write_text(
                controlplane.kubeconfig_yaml(cfg.name, cfg.server_url, ca.cert, pair, basename)
            )
            path.chmod(0o600)

    def summary(self) -> dict[str, object]:
        return {
            "state": str(self.root),
            "kubeconfig": str(self.kubeconfig),
            "server": self.config.server_url,
            "registry": self.registry_url if self.processes.get(registry.PROCESS) else None,
            "components": {s.name: s.running for s in self.status()},
        }

    def summary_json(self) -> str:
        return json.dumps(self.summary(), indent=2)
