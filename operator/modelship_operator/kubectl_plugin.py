"""`kubectl modelship`: see and steer rollouts (the `kubectl-modelship` executable).

kubectl runs any `kubectl-<name>` on PATH as `kubectl <name>`; this one reads and patches
ModelDeployments with the same kubeconfig rules as kubectl (--kubeconfig, $KUBECONFIG,
--context, -n/--namespace, the context's namespace, in-cluster).

Commands:
  status NAME    phase, traffic, conditions and the last analysis as a table
  history NAME   past rollouts and the versions rolled out
  promote NAME   skip the remaining analysis and promote the canary now
  abort NAME     roll the canary back now
  retry NAME     start a rolled-back or failed rollout again from its first step
  pause NAME     hold the rollout where it is (spec.paused=true)
  resume NAME    continue a paused rollout (spec.paused=false)
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from typing import Any

from modelship_operator.spec import ACTION_ANNOTATION, GROUP, PLURAL
from modelship_operator.statusview import analysis_table, parse_status, summary, table

VERSION = "v1alpha1"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kubectl modelship",
        description="See and steer modelship rollouts.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("Commands:", 1)[1] if __doc__ else None,
    )
    parser.add_argument("-n", "--namespace", help="namespace (default: the context's)")
    parser.add_argument(
        "--kubeconfig", help="kubeconfig file (default: $KUBECONFIG or ~/.kube/config)"
    )
    parser.add_argument("--context", help="kubeconfig context")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, text in (
        ("status", "phase, traffic, conditions and the last analysis"),
        ("history", "past rollouts and rolled-out versions"),
        ("promote", "promote the canary now, skipping the remaining analysis"),
        ("abort", "roll the canary back now"),
        ("retry", "restart a rolled-back or failed rollout from its first step"),
        ("pause", "hold the rollout where it is"),
        ("resume", "continue a paused rollout"),
    ):
        command = sub.add_parser(name, help=text, description=text)
        command.add_argument("name", help="ModelDeployment name")
        command.add_argument("-n", "--namespace", dest="sub_namespace", help=argparse.SUPPRESS)
    return parser


class PluginError(Exception):
    """An error that is the user's to fix; printed without a traceback."""


def _api(args: argparse.Namespace) -> tuple[Any, str]:
    from kubernetes import client, config
    from kubernetes.config.config_exception import ConfigException

    try:
        api = config.new_client_from_config(config_file=args.kubeconfig, context=args.context)
        _, active = config.list_kube_config_contexts(config_file=args.kubeconfig)
        if args.context:
            contexts, _ = config.list_kube_config_contexts(config_file=args.kubeconfig)
            active = next((c for c in contexts if c["name"] == args.context), active)
        default_ns = (active or {}).get("context", {}).get("namespace") or "default"
    except (ConfigException, FileNotFoundError, TypeError):
        try:
            config.load_incluster_config()
        except ConfigException as error:
            raise PluginError(
                f"no usable kubeconfig or in-cluster configuration: {error}"
            ) from None
        api = client.ApiClient()
        default_ns = "default"
    return api, args.sub_namespace or args.namespace or default_ns


def _get(custom: Any, namespace: str, name: str) -> dict[str, Any]:
    from kubernetes.client.rest import ApiException

    try:
        return custom.get_namespaced_custom_object(  # type: ignore[no-any-return]
            GROUP, VERSION, namespace, PLURAL, name
        )
    except ApiException as error:
        raise PluginError(_api_error(error, namespace, name)) from None


def _patch(custom: Any, namespace: str, name: str, body: dict[str, Any]) -> None:
    from kubernetes.client.rest import ApiException

    try:
        custom.patch_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name, body)
    except ApiException as error:
        raise PluginError(_api_error(error, namespace, name)) from None


def _api_error(error: Any, namespace: str, name: str) -> str:
    if error.status == 404:
        return f'modeldeployment "{name}" not found in namespace "{namespace}"'
    if error.status == 403:
        return f"not allowed: {error.reason} (ask for the modelship-edit role in {namespace})"
    return f"the API server answered {error.status} {error.reason}"


def render_status(body: dict[str, Any]) -> str:
    status = parse_status(body)
    spec = body.get("spec") or {}
    steps = len((spec.get("strategy") or {}).get("steps") or []) or None
    lines = [summary(body["metadata"]["name"], status, steps)]
    if status.rollout is not None:
        rollout = status.rollout
        candidate = f"candidate {rollout.candidate.version}" if rollout.candidate else ""
        lines.append(f"rollout: {candidate}  started {rollout.started_at:%Y-%m-%d %H:%M:%S}Z")
    lines.append(
        f"failed checks: {status.failed_checks}  errors in a row: {status.consecutive_errors}"
    )
    if status.ab_test is not None:
        ab = status.ab_test
        lines.append(
            f"A/B: stable {ab.stable.successes:.0f}/{ab.stable.trials:.0f}  "
            f"canary {ab.canary.successes:.0f}/{ab.canary.trials:.0f}  "
            f"p-value {'-' if ab.p_value is None else f'{ab.p_value:.4f}'}  "
            f"winner {ab.winner or '-'}"
        )
    lines.append("")
    lines.append("conditions:")
    lines.append(
        table(
            ("TYPE", "STATUS", "REASON", "MESSAGE"),
            [(c.type, c.status, c.reason, c.message) for c in status.conditions],
            indent="  ",
        )
        if status.conditions
        else "  (none yet)"
    )
    lines.append("")
    lines.append("last analysis:")
    lines.append(analysis_table(status.last_analysis, indent="  "))
    return "\n".join(lines)


def render_history(body: dict[str, Any]) -> str:
    status = parse_status(body)
    lines = []
    if status.rolled_out is not None:
        current, previous = status.rolled_out.current, status.rolled_out.previous
        lines.append(f"rolled out: {current.version if current else '-'}")
        lines.append(f"previous:   {previous.version if previous else '-'}")
        lines.append("")
    rows = [
        (h.at.strftime("%Y-%m-%d %H:%M:%S"), h.version, h.outcome, h.reason or "")
        for h in status.history
    ]
    lines.append(
        table(("WHEN", "VERSION", "OUTCOME", "REASON"), rows) if rows else "(no rollouts yet)"
    )
    return "\n".join(lines)


def run(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from kubernetes import client

    api, namespace = _api(args)
    custom = client.CustomObjectsApi(api)
    name = args.name
    if args.command == "status":
        print(render_status(_get(custom, namespace, name)))
        return 0
    if args.command == "history":
        print(render_history(_get(custom, namespace, name)))
        return 0
    body = _get(custom, namespace, name)
    if args.command in ("pause", "resume"):
        _patch(custom, namespace, name, {"spec": {"paused": args.command == "pause"}})
        print(f"modeldeployment {namespace}/{name}: {args.command}d")
        return 0
    if args.command in ("promote", "abort") and not (body.get("spec") or {}).get("canary"):
        raise PluginError(f"{namespace}/{name} has no canary to {args.command}")
    # A nonce makes each request a new value, so asking twice acts twice.
    value = f"{args.command}/{time.time_ns()}"
    _patch(custom, namespace, name, {"metadata": {"annotations": {ACTION_ANNOTATION: value}}})
    print(f"modeldeployment {namespace}/{name}: {args.command} requested ({value})")
    return 0


def main(argv: Sequence[str] | None = None) -> None:
    try:
        sys.exit(run(argv))
    except PluginError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(1)
