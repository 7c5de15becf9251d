"""``kubectl-modelship``: status, promote, abort, pause, resume, retry, history (to come)."""


def main() -> None:
    raise SystemExit("kubectl-modelship: not available yet; see docs/operator.md")
