"""Metric analysis of a rollout: Prometheus queries, verdicts, the step machine, A/B statistics
and shadow comparison.

Everything here except :mod:`.prometheus` and :mod:`.runner` is pure (no I/O, clock injected):
``queries`` builds PromQL, ``verdict`` judges one check, ``abtest`` gives the sequential
statistical verdict of an A/B test, ``shadow`` judges prediction agreement, and ``stepper``
decides the rollout's next state from all of them. See docs/analysis.md.
"""
