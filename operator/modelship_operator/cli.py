"""``modelship-operator``: the operator process (kopf handlers arrive with the cluster work)."""


def main() -> None:
    raise SystemExit(
        "modelship-operator: the reconcile handlers are not wired yet; see docs/operator.md"
    )
