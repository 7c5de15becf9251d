"""`modelship-cluster`: build, start, stop and inspect the local Kubernetes cluster."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from modelship_cluster import binaries, modelstore, node
from modelship_cluster.cluster import Cluster, default_state_dir


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="modelship-cluster",
        description=(
            "A real Kubernetes control plane on this machine (etcd, kube-apiserver, "
            "kube-controller-manager, kube-scheduler built from Kubernetes' Go modules), "
            "for modelship's tests and demo. Everything listens on this machine only."
        ),
    )
    parser.add_argument(
        "--state-dir",
        type=Path,
        default=None,
        help=f"where the cluster keeps certificates, data, logs and pids "
        f"(default: $MODELSHIP_CLUSTER_DIR or {default_state_dir()})",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    sub.add_parser(
        "build",
        help="build missing binaries into the cache "
        f"(Kubernetes v{binaries.KUBERNETES_VERSION}, etcd v{binaries.ETCD_VERSION}, "
        f"helm v{binaries.HELM_VERSION}, Prometheus v{binaries.PROMETHEUS_VERSION}, "
        f"Prometheus Operator v{binaries.PROMETHEUS_OPERATOR_VERSION})",
    )
    up = sub.add_parser("up", help="start the cluster (builds binaries first if missing)")
    up.add_argument("--timeout", type=float, default=120.0, help="seconds to wait per component")
    down = sub.add_parser("down", help="stop every component and remove the cluster's data")
    down.add_argument("--keep-data", action="store_true", help="keep certificates and etcd data")
    sub.add_parser("status", help="show which components run and where the kubeconfig is")
    sub.add_parser("kubeconfig", help="print the admin kubeconfig's path")
    sub.add_parser("env", help="print shell exports (KUBECONFIG, PATH with kubectl and helm)")
    models = sub.add_parser(
        "models", help="the model store pods download models from (http://10.244.0.1:8000/)"
    )
    models_sub = models.add_subparsers(dest="models_command", required=True, metavar="ACTION")
    add = models_sub.add_parser("add", help="copy a model file in; prints its URI and sha256")
    add.add_argument("file", type=Path, help="model file (e.g. a .skops artifact)")
    add.add_argument("--name", help="file name in the store (default: the file's own name)")
    models_sub.add_parser("list", help="list stored models with their URIs and sha256")
    _images_parser(sub)
    return parser


def _images_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from modelship_cluster import images

    names = ", ".join(images.IMAGES)
    parser = sub.add_parser(
        "images",
        help="build (or reuse) the container images: modelship's and the test bed's",
        description=(
            "Build the project's container images without a container daemon: buildah on a "
            "Debian base made with debootstrap, Python packages from requirements/lock.txt. "
            "Each image is rebuilt only when its inputs change and exported as a "
            "docker-archive for `ctr -n k8s.io images import`, with its SBOM beside it, "
            f"under {images.cache_dir()} ($MODELSHIP_CACHE/images). Needs root and the "
            "tools of `make system-deps`. Without an action: build."
        ),
    )
    actions = parser.add_subparsers(dest="images_command", metavar="ACTION")
    for action, text in (
        ("build", "build what is missing or stale; print each image's ref, size and archive"),
        ("list", "show each image's ref, key and archive, and whether it is built; builds nothing"),
    ):
        p = actions.add_parser(action, help=text, description=text)
        p.add_argument("names", nargs="*", metavar="NAME", help=f"images (default: all of {names})")
    parser.set_defaults(names=[])


def _images(args: argparse.Namespace) -> int:
    from modelship_cluster import images

    try:
        if args.images_command == "list":
            for spec, key, built in images.list_images(args.names or None):
                state = (
                    f"built  {built.size_bytes / 1e6:6.1f} MB  {built.archive}"
                    if built
                    else "not built"
                )
                print(f"{spec.name:<9} {spec.ref:<48} {key[:16]}  {state}")
            return 0
        started = time.monotonic()
        result = images.ensure_images(args.names or None)
    except (ValueError, images.ImageToolError, images.ImageBuildError, FileNotFoundError) as error:
        print(f"modelship-cluster images: {error}", file=sys.stderr)
        return 1
    for built in result:
        how = "cached" if built.cached else f"built in {built.seconds:.0f}s"
        print(f"{built.ref:<48} {built.size_bytes / 1e6:6.1f} MB  {how:<14} {built.archive}")
    print(f"images ready in {time.monotonic() - started:.1f}s", file=sys.stderr)
    return 0


def _exports(cluster: Cluster) -> str:
    bin_dirs = ":".join(str(d) for d in binaries.toolset().bin_dirs)
    return (
        f"export KUBECONFIG={cluster.kubeconfig}\n"
        f"export CONTAINER_RUNTIME_ENDPOINT={node.CRI_ENDPOINT}\n"
        f'export PATH="{bin_dirs}:$PATH"'
    )


def _models(cluster: Cluster, args: argparse.Namespace) -> int:
    if args.models_command == "add":
        try:
            stored = cluster.add_model(args.file, args.name)
        except (FileNotFoundError, ValueError) as error:
            print(f"modelship-cluster: {error}", file=sys.stderr)
            return 1
        print(f"uri:    {stored.uri}\nsha256: {stored.sha256}")
        return 0
    files = sorted(cluster.models_dir.glob("*")) if cluster.models_dir.exists() else []
    for path in files:
        print(f"{cluster.model_store_url}/{path.name}  {modelstore.sha256_of(path)}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "images":
        return _images(args)
    cluster = Cluster(args.state_dir)
    if args.command == "build":
        started = time.monotonic()
        tools = binaries.ensure_all()
        for d in tools.bin_dirs:
            for f in sorted(d.iterdir()):
                print(f)
        print(f"binaries ready in {time.monotonic() - started:.1f}s", file=sys.stderr)
        return 0
    if args.command == "up":
        was_running = cluster.is_up()
        try:
            cluster.up(timeout=args.timeout)
        except (RuntimeError, TimeoutError, FileNotFoundError) as error:
            print(f"modelship-cluster: {error}", file=sys.stderr)
            if was_running:
                # Others may be using it: leave it as it is.
                print(
                    "the cluster was already running; `modelship-cluster status` shows what runs",
                    file=sys.stderr,
                )
            else:
                print("stopping what started; run `modelship-cluster up` again", file=sys.stderr)
                cluster.down(keep_data=True)
            return 1
        if node.enabled():
            print(f"# Prometheus: {node.prometheus_url()}")
            print(f"# model store: {cluster.model_store_url} (modelship-cluster models add FILE)")
            print("# pods: kubectl logs/exec/port-forward; the node's runtime: crictl")
            print(f"export CONTAINER_RUNTIME_ENDPOINT={node.CRI_ENDPOINT}")
        print("# kubectl and helm for this cluster:")
        print(f'export PATH="{":".join(str(d) for d in binaries.toolset().bin_dirs)}:$PATH"')
        print(f"export KUBECONFIG={cluster.kubeconfig}")
        return 0
    if args.command == "down":
        cluster.down(keep_data=args.keep_data)
        print("cluster stopped" + (" (data kept)" if args.keep_data else " and its data removed"))
        return 0
    if args.command == "status":
        if not cluster.status():
            print(f"no cluster at {cluster.root}")
            return 1
        for s in cluster.status():
            print(f"{s.name:<26} {'running' if s.running else 'STOPPED':<8} pid {s.pid}")
        print(f"kubeconfig: {cluster.kubeconfig}")
        print(f"server:     {cluster.config.server_url}")
        return 0 if cluster.is_up() else 1
    if args.command == "kubeconfig":
        print(cluster.kubeconfig)
        return 0
    if args.command == "env":
        print(_exports(cluster))
        return 0
    if args.command == "models":
        return _models(cluster, args)
    if args.command == "images":
        return _images(args)
    return 2


if __name__ == "__main__":
    sys.exit(main())
