"""`python -m modelship_cluster.nodeagent`: run the node agent, or show a container's log."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from pathlib import Path

from modelship_cluster import imagemap, podnet
from modelship_cluster.nodeagent.runtime import NodeSettings, container_log


def default_state_dir() -> Path:
    base = os.environ.get("MODELSHIP_CLUSTER_DIR")
    if base:
        return Path(base) / "node"
    state_home = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state_home) / "modelship" / "cluster" / "node"


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m modelship_cluster.nodeagent",
        description="The local cluster's node agent: registers a Node and runs the pods bound "
        "to it as local processes in their own network and mount namespaces.",
    )
    p.add_argument(
        "--state-dir",
        type=Path,
        default=None,
        help="the node's folder: pod volumes, logs, addresses "
        f"(default: $MODELSHIP_CLUSTER_DIR/node or {default_state_dir()})",
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    run = sub.add_parser("run", help="run the agent until SIGTERM/SIGINT (needs root)")
    run.add_argument("--kubeconfig", type=Path, required=True, help="the agent's credentials")
    run.add_argument(
        "--node-name", default="modelship-node", help="Node name (default %(default)s)"
    )
    run.add_argument(
        "--image-map",
        type=Path,
        default=None,
        help="image map YAML (default: the one shipped in modelship_cluster/images.yaml)",
    )
    run.add_argument(
        "--backoff-initial",
        type=float,
        default=1.0,
        help="first restart back-off in seconds, doubled per restart (default %(default)s)",
    )
    run.add_argument(
        "--backoff-max",
        type=float,
        default=60.0,
        help="longest restart back-off in seconds (default %(default)s)",
    )
    run.add_argument("--log-level", default="INFO", help="logging level (default %(default)s)")
    logs = sub.add_parser("logs", help="print a container's log")
    logs.add_argument("pod", help="pod name")
    logs.add_argument("-n", "--namespace", default="default", help="namespace (default: default)")
    logs.add_argument("-c", "--container", default=None, help="container (default: the only one)")
    logs.add_argument(
        "-p", "--previous", action="store_true", help="the log of the previous run (restarts)"
    )
    sub.add_parser(
        "leftovers",
        help="list what the cluster's node side left on this machine (exit 1 if anything)",
    )
    return p


def show_logs(
    state_dir: Path, namespace: str, pod: str, container: str | None, previous: bool
) -> int:
    matches = sorted((state_dir / "pods").glob(f"{namespace}_{pod}_*"))
    if not matches:
        print(f"pod {namespace}/{pod} is not running on this node", file=sys.stderr)
        return 1
    pod_dir = matches[-1]
    names = (
        sorted(p.name for p in (pod_dir / "logs").iterdir()) if (pod_dir / "logs").exists() else []
    )
    if container is None:
        if len(names) != 1:
            print(
                f"pod {namespace}/{pod} has containers {names}: choose one with -c", file=sys.stderr
            )
            return 1
        container = names[0]
    path = container_log(pod_dir, container, previous)
    if path is None:
        what = "previous log" if previous else "log"
        print(
            f"no {what} for container {container!r} of {namespace}/{pod} ({names})", file=sys.stderr
        )
        return 1
    sys.stdout.buffer.write(path.read_bytes())
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    state_dir = (args.state_dir or default_state_dir()).resolve()
    if args.command == "logs":
        return show_logs(state_dir, args.namespace, args.pod, args.container, args.previous)
    if args.command == "leftovers":
        from modelship_cluster.nodeagent.parts import leftovers

        found = leftovers()
        for line in found:
            print(line)
        return 1 if found else 0
    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)
    if os.geteuid() != 0:
        print("the node agent needs root (network namespaces, mounts)", file=sys.stderr)
        return 1
    from modelship_cluster.nodeagent.agent import NodeAgent
    from modelship_cluster.nodeagent.kubeapi import KubeClient

    settings = NodeSettings(
        state_dir=state_dir,
        node_name=args.node_name,
        images=imagemap.load(args.image_map),
        backoff_initial=args.backoff_initial,
        backoff_max=args.backoff_max,
    )
    podnet.ensure_bridge(settings.net)

    async def serve() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        client = KubeClient(args.kubeconfig)
        try:
            await NodeAgent(settings, client).run(stop)
        finally:
            await client.close()

    asyncio.run(serve())
    return 0
