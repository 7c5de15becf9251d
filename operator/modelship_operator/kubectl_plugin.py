"""`kubectl modelship`: see and steer rollouts (the `kubectl-modelship` executable).

kubectl runs any `kubectl-<name>` on PATH as `kubectl <name>`; this one reads and patches
ModelDeployments with the same kubeconfig rules as kubectl (--kubeconfig, $KUBECONFIG,
--context, -n/--namespace, the context's namespace, in-cluster).

Commands:
  status NAME    phase, traffic, conditions, the models (with their source and sha256)
                 and the last analysis as a table
  history NAME   past rollouts and the versions rolled out
  promote NAME   skip the remaining analysis and promote the canary now
  abort NAME     roll the canary back now
  retry NAME     start a rolled-back or failed rollout again from its first step
  pause NAME     hold the rollout where it is (spec.paused=true)
  resume NAME    continue a paused rollout (spec.paused=false)
  undo NAME      set spec.model back to the model stable served before (status.rolledOut.previous);
                 with GitOps, revert the commit instead (the next sync would undo this undo)
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Sequence
from typing import Any

from modelship_kube.credentials import Credentials, from_kubeconfig, in_cluster
from modelship_kube.errors import ApiError, ConfigurationError
from modelship_kube.paths import object_path
from modelship_kube.request import Client, PatchType

from modelship_operator.sources import spec_model
from modelship_operator.spec import ACTION_ANNOTATION, GROUP, PLURAL, VERSION
from modelship_operator.statusview import (
    analysis_table,
    models_table,
    parse_status,
    summary,
    table,
)


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
        ("status", "phase, traffic, conditions, models and the last analysis"),
        ("history", "past rollouts and rolled-out versions"),
        ("promote", "promote the canary now, skipping the remaining analysis"),
        ("abort", "roll the canary back now"),
        ("retry", "restart a rolled-back or failed rollout from its first step"),
        ("pause", "hold the rollout where it is"),
        ("resume", "continue a paused rollout"),
        ("undo", "set spec.model back to the model stable served before"),
    ):
        command = sub.add_parser(name, help=text, description=text)
        command.add_argument("name", help="ModelDeployment name")
        command.add_argument("-n", "--namespace", dest="sub_namespace", help=argparse.SUPPRESS)
    return parser


class PluginError(Exception):
    """An error that is the user's to fix; printed without a traceback."""


def _credentials(args: argparse.Namespace) -> tuple[Credentials, str]:
    """The kubeconfig (``--kubeconfig``, else ``$KUBECONFIG`` or ``~/.kube/config``; its
    ``--context``), else in-cluster; and the namespace to use."""
    try:
        found = from_kubeconfig(args.kubeconfig, context=args.context)
    except ConfigurationError as kubeconfig_error:
        try:
            found = in_cluster()
        except ConfigurationError as error:
            raise PluginError(
                f"no usable kubeconfig ({kubeconfig_error}) or in-cluster configuration ({error})"
            ) from None
    return found, args.sub_namespace or args.namespace or found.namespace or "default"


def _api_error(error: ApiError, namespace: str, name: str) -> str:
    if error.not_found:
        return f'modeldeployment "{name}" not found in namespace "{namespace}"'
    if error.status == 403:
        return f"not allowed: {error.message} (ask for the modelship-edit role in {namespace})"
    if error.status == 0:
        return f"no answer from the API server: {error.message}"
    return f"the API server answered {error.status} {error.reason or error.message}"


async def _act(args: argparse.Namespace, client: Client, namespace: str) -> str:
    """Do the command; what to print."""
    name = args.name
    path = object_path(f"{GROUP}/{VERSION}", PLURAL, namespace, name)
    body = await client.get(path)
    if args.command == "status":
        return render_status(body)
    if args.command == "history":
        return render_history(body)
    if args.command in ("pause", "resume"):
        await client.patch(path, {"spec": {"paused": args.command == "pause"}}, PatchType.MERGE)
        return f"modeldeployment {namespace}/{name}: {args.command}d"
    if args.command == "undo":
        model = undo_patch(body)
        await client.patch(path, {"spec": {"model": model}}, PatchType.MERGE)
        return (
            f"modeldeployment {namespace}/{name}: spec.model set back to {model['version']} "
            "(a rollout of it starts; with GitOps, revert the commit in git as well)"
        )
    phase = (body.get("status") or {}).get("phase")
    if args.command in ("promote", "abort") and phase not in ("Progressing", "Paused"):
        raise PluginError(
            f"{namespace}/{name} has no rollout under way to {args.command} (phase {phase})"
        )
    # A nonce makes each request a new value, so asking twice acts twice.
    value = f"{args.command}/{time.time_ns()}"
    patch = {"metadata": {"annotations": {ACTION_ANNOTATION: value}}}
    await client.patch(path, patch, PatchType.MERGE)
    return f"modeldeployment {namespace}/{name}: {args.command} requested ({value})"


def undo_patch(body: dict[str, Any]) -> dict[str, Any]:
    """spec.model set to the model stable served before the current one (pure)."""
    status = parse_status(body)
    previous = status.rolled_out.previous if status.rolled_out is not None else None
    if previous is None:
        name = body["metadata"]["name"]
        raise PluginError(f"{name} has no previous model to go back to (status.rolledOut)")
    model: dict[str, Any] = dict((body.get("spec") or {}).get("model") or {})
    model.update(spec_model(previous))
    return model


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
    lines.append("models:")
    lines.append(models_table(status, indent="  "))
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
    found, namespace = _credentials(args)

    async def act() -> str:
        async with Client(found) as client:
            try:
                return await _act(args, client, namespace)
            except ApiError as error:
                raise PluginError(_api_error(error, namespace, args.name)) from None

    try:
        print(asyncio.run(act()))
    except ConfigurationError as error:  # e.g. an exec credential plugin that failed
        raise PluginError(str(error)) from None
    return 0


def main(argv: Sequence[str] | None = None) -> None:
    try:
        sys.exit(run(argv))
    except PluginError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(1)
