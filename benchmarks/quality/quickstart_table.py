"""Table of the quickstart's test metrics and wall times over seeds, from the logs of ``quickstart_seeds.sh``.

    python benchmarks/quality/quickstart_table.py results/quickstart_seeds/<stamp>

Writes ``benchmarks/results/quickstart_seeds.md`` (machine, date, commit, one row per seed, mean and range).
"""

from __future__ import annotations

import re
import sys
from datetime import date
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root: imports as benchmarks.<folder>
from benchmarks.machine import commit, describe

METRICS = ("image_AUROC", "pixel_AUROC", "pixel_AUPRO", "image_F1Max", "pixel_F1Score")


def metrics(log: str) -> dict[str, float]:
    """The test metrics of anomalib's printed table."""
    table = log.rsplit("Test metric", 1)[-1]
    return {k: float(v) for k, v in re.findall(r"│\s*(\w+)\s*│\s*([-0-9.eE+]+)\s*│", table)}


def main() -> None:
    folder = Path(sys.argv[1])
    rows = []
    for run in sorted(folder.glob("seed*")):
        values = metrics((run / "stdout.log").read_text())
        wall = int((run / "wall_s").read_text()) if (run / "wall_s").exists() else float("nan")
        rows.append((run.name.removeprefix("seed"), values, wall))
    header = (
        f"# Quickstart over seeds\n\n`bash benchmarks/quality/quickstart_seeds.sh` · {date.today()} · commit {commit()} · "
        f"{describe()}\n"
    )
    lines = [header, "| seed | " + " | ".join(METRICS) + " | wall (train + test) |", "|---" * (len(METRICS) + 2) + "|"]
    for seed, values, wall in rows:
        cells = [f"{values.get(m, float('nan')):.3f}" for m in METRICS]
        lines.append(f"| {seed} | " + " | ".join(cells) + f" | {wall // 60} min {wall % 60} s |")
    summary = []
    for m in METRICS:
        found = [v[m] for _, v, _ in rows if m in v]
        summary.append(f"{sum(found) / len(found):.3f} ({min(found):.3f}–{max(found):.3f})" if found else "n/a")
    walls = [w for *_, w in rows]
    lines.append("| mean (range) | " + " | ".join(summary) + f" | up to {max(walls) // 60} min {max(walls) % 60} s |")
    text = "\n".join(lines) + "\n"
    (Path(__file__).resolve().parents[1] / "results" / "quickstart_seeds.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
