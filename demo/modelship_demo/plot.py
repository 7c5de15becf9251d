"""A PNG per rollout: canary weight and the analysed metrics over time."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Timeline:
    """Samples of one rollout, seconds since it started."""

    title: str
    weight: list[tuple[float, int]] = field(default_factory=list)
    phase: list[tuple[float, str]] = field(default_factory=list)
    # metric name -> variant -> [(t, value)]
    metrics: dict[str, dict[str, list[tuple[float, float]]]] = field(default_factory=dict)
    thresholds: dict[str, str] = field(default_factory=dict)

    def add_metric(self, name: str, variant: str, t: float, value: float) -> None:
        self.metrics.setdefault(name, {}).setdefault(variant, []).append((t, value))


def write_png(timeline: Timeline, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")  # no display
    import matplotlib.pyplot as plt

    names = sorted(timeline.metrics)
    fig, axes = plt.subplots(
        1 + len(names), 1, figsize=(9, 2.4 * (1 + len(names))), sharex=True, squeeze=False
    )
    ax = axes[0][0]
    if timeline.weight:
        ts, ws = zip(*timeline.weight, strict=True)
        ax.step(ts, ws, where="post", color="tab:orange", linewidth=2, label="canary weight")
    ax.set_ylabel("canary %")
    ax.set_ylim(-5, 105)
    ax.set_title(timeline.title)
    last = None
    for t, phase in timeline.phase:
        if phase != last:
            ax.axvline(t, color="grey", linewidth=0.6, linestyle=":")
            ax.text(t, 100, f" {phase}", fontsize=7, va="top", rotation=90, color="grey")
            last = phase
    ax.legend(loc="center left", fontsize=8)
    colours = {"stable": "tab:blue", "canary": "tab:orange"}
    for row, name in enumerate(names, start=1):
        ax = axes[row][0]
        for variant, points in sorted(timeline.metrics[name].items()):
            ts, vs = zip(*points, strict=True)
            ax.plot(ts, vs, marker="o", markersize=3, label=variant, color=colours.get(variant))
        label = name + (f"  ({timeline.thresholds[name]})" if name in timeline.thresholds else "")
        ax.set_ylabel(name, fontsize=8)
        ax.set_title(label, fontsize=9, loc="left")
        ax.legend(loc="lower left", fontsize=8)
    axes[-1][0].set_xlabel("seconds since the rollout began")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
