"""Metric analysis of a rollout: Prometheus queries, verdicts, A/B statistics and shadow
comparison.

Everything here except :mod:`.prometheus` and :mod:`.runner` is pure (no I/O, clock injected):
``queries`` builds PromQL, ``verdict`` judges one check, ``abtest`` gives the sequential
statistical verdict of an A/B test, ``shadow`` judges prediction agreement, and ``results``
holds the query result types. The rollout decision made from them is
:mod:`modelship_operator.rollout`. See docs/analysis.md.
"""
