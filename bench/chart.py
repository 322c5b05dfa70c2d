"""Draw bench/ratios.png from bench/results/latest.json: each tool's time as a multiple of plain psql.

    bench/.venv/bin/python bench/chart.py [results.json] [out.png]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

BENCH = Path(__file__).resolve().parent
COLOURS = {"dbctl": "#1f77b4", "dbmate": "#2ca02c", "yoyo": "#ff7f0e", "sqitch": "#9467bd"}


def main() -> None:
    source = Path(sys.argv[1]) if len(sys.argv) > 1 else BENCH / "results" / "latest.json"
    target = Path(sys.argv[2]) if len(sys.argv) > 2 else BENCH / "ratios.png"
    results = json.loads(source.read_text())
    workloads = list(results["workloads"])
    # Before/after runs: README only; the floor rows (python, ...) have no apply workloads.
    tools = [t for t in results["tools"] if t != "psql" and "@" not in t
             and all(t in results["workloads"][w] for w in workloads)]
    fig, ax = plt.subplots(figsize=(10, 5.2), dpi=110)
    width = 0.8 / len(tools)
    for i, tool in enumerate(tools):
        xs = [w + (i - (len(tools) - 1) / 2) * width for w in range(len(workloads))]
        ratios = [results["workloads"][name][tool]["ratio"] for name in workloads]
        bars = ax.bar(xs, ratios, width, label=tool, color=COLOURS.get(tool, "#7f7f7f"))
        for bar, ratio in zip(bars, ratios):
            ax.annotate(f"{ratio:.2f}×", (bar.get_x() + bar.get_width() / 2, ratio), ha="center", va="bottom",
                        fontsize=7.5, xytext=(0, 2), textcoords="offset points")
    ax.axhline(1.0, color="black", linewidth=1, linestyle="--")
    ax.text(len(workloads) - 0.5, 1.0, " psql = 1×", va="bottom", ha="right", fontsize=8)
    ax.set_yscale("log")
    ax.set_ylabel("median wall time ÷ psql's, paired by round (log scale; lower is better)")
    labels = []
    for name in workloads:
        floor = results["workloads"][name]["psql"]["wall_s"]
        labels.append(f"{name}\n(psql {floor:.2f} s)" if floor >= 0.1 else f"{name}\n(psql {floor * 1000:.0f} ms)")
    ax.set_xticks(range(len(workloads)), labels)
    rounds = f"{results['rounds']} rounds ({results.get('kiro_rounds', '?')} for Kiro)"
    ax.set_title(f"dbctl and its peers against plain psql, one durable PostgreSQL, {rounds}")
    ax.legend(ncols=len(tools), loc="upper left", frameon=False)
    ax.set_ylim(top=ax.get_ylim()[1] * 2)
    fig.tight_layout()
    fig.savefig(target)
    print(f"wrote {target}")


if __name__ == "__main__":
    main()
