"""The report's chart: one horizontal bar per row, scitensor's speed against PyTorch."""

from __future__ import annotations

from pathlib import Path

MET_COLORS = {True: "#2e7d32", False: "#c62828", None: "#78909c"}


def write_chart(report: dict, path: Path) -> str | None:
    """Draw the speed of every compared row (log scale, a line at 1.0, target markers).

    Args:
        report: from :func:`benchmarks.report.build`.
        path: the PNG to write.

    Returns:
        None when written; otherwise why not (matplotlib missing, no row to draw).
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.lines import Line2D
        from matplotlib.patches import Patch
        from matplotlib.ticker import FixedFormatter, FixedLocator, NullFormatter
    except ImportError as e:
        return (f"matplotlib is not installed ({e}); pip install 'scitensor[bench]' "
                "for the chart")
    rows = [r for r in report["rows"] if isinstance(r.get("speed"), (int, float))
            and r["speed"] > 0]
    if not rows:
        return "no row has both a scitensor and a PyTorch time"
    labels = [f"{r['benchmark']} · {_short(str(r['case']))} · {r['dtype']} · {r['pass']}"
              for r in rows]
    speeds = [r["speed"] for r in rows]
    y = list(range(len(rows)))[::-1]  # first row at the top
    fig, ax = plt.subplots(figsize=(11, 1.6 + 0.24 * len(rows)))
    # bars grow from 1.0: right when scitensor is faster, left when slower
    ax.barh(y, [s - 1.0 for s in speeds], left=1.0, height=0.7,
            color=[MET_COLORS[r["met"]] for r in rows])
    for yi, r in zip(y, rows):
        if r.get("target"):
            ax.plot([r["target"]], [yi], marker="|", markersize=11, markeredgewidth=2.2,
                    color="black")
        faster = r["speed"] >= 1.0
        ax.text(r["speed"] * (1.03 if faster else 1 / 1.03), yi, f"{r['speed']:.2f}x",
                va="center", ha="left" if faster else "right", fontsize=7)
    for i in range(1, len(rows)):  # a rule between benchmarks
        if rows[i]["benchmark"] != rows[i - 1]["benchmark"]:
            ax.axhline(y[i] + 0.5, color="#bbbbbb", linewidth=0.6)
    ax.axvline(1.0, color="black", linewidth=1.0, linestyle="--")
    ax.set_xscale("log")
    lo = min(speeds + [r["target"] for r in rows if r.get("target")])
    hi = max(speeds + [r["target"] for r in rows if r.get("target")])
    ax.set_xlim(min(lo, 1.0) / 1.8, max(hi, 1.0) * 1.8)
    ticks = [t for t in (1 / 64, 1 / 32, 1 / 16, 1 / 8, 1 / 4, 1 / 2, 1, 2, 4, 8, 16, 32, 64)
             if min(lo, 1.0) / 1.8 <= t <= max(hi, 1.0) * 1.8]
    ax.xaxis.set_major_locator(FixedLocator(ticks))
    ax.xaxis.set_major_formatter(FixedFormatter([f"{t:g}x" for t in ticks]))
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_ylim(-0.7, len(rows) - 0.3)
    ax.set_yticks(y)
    ax.set_yticklabels(labels, fontsize=7)
    ax.set_xlabel("speed = PyTorch time / scitensor time (log scale; > 1: scitensor faster)")
    env = report["meta"]["environment"]
    where = "; ".join(v.get("gpu") or v.get("cpu") or k for k, v in env.items())
    ax.set_title(f"scitensor vs PyTorch, same process — {where}", fontsize=10)
    ax.legend(handles=[Patch(color=MET_COLORS[True], label="target met"),
                       Patch(color=MET_COLORS[False], label="target missed"),
                       Patch(color=MET_COLORS[None], label="no target"),
                       Line2D([], [], marker="|", color="black", linestyle="none",
                              markersize=10, markeredgewidth=2, label="target")],
              loc="lower right", fontsize=7)
    ax.grid(axis="x", which="both", alpha=0.25)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)
    return None


def _short(label: str, width: int = 44) -> str:
    return label if len(label) <= width else label[: width - 1] + "…"
