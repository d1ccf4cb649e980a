"""The benchmark scripts run from the tests as their users run them: ``python benchmarks/<folder>/<script>.py`` from
the repository root, each in a process of its own, so that no test imports anything from ``benchmarks/`` (nor puts it
on ``sys.path``). The few checks of a benchmark's functions that no command shows (which cells count as starved, the
step count ``--match-steps`` replays, a runner whose cell dies) run in a fresh interpreter at the repository root too,
where ``benchmarks.<folder>.<module>`` imports as it does in the scripts (:func:`run_code`, :func:`call`)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from .helpers import REPO

BEGIN, END = "<!-- compare:begin -->", "<!-- compare:end -->"  # the comparison's section of a README
SUMMARY_BEGIN, SUMMARY_END = "<!-- compare-summary:begin -->", "<!-- compare-summary:end -->"  # its compact table


def benchmark(script: str, *args: object, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``python benchmarks/<script> ARGS`` from the repository root; output captured, exit code returned, not checked."""
    command = [sys.executable, str(REPO / "benchmarks" / script), *map(str, args)]
    return subprocess.run(command, cwd=REPO, capture_output=True, text=True, env=env, timeout=900, check=False)


def run_code(code: str, *args: object, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``python -c CODE ARGS`` from the repository root (``benchmarks.*`` imports as in the scripts)."""
    command = [sys.executable, "-c", code, *map(str, args)]
    return subprocess.run(command, cwd=REPO, capture_output=True, text=True, env=env, timeout=900, check=False)


CALL = """
import json, sys
from importlib import import_module
from pathlib import Path

def decode(value):
    if isinstance(value, dict) and set(value) == {"__path__"}:
        return Path(value["__path__"])
    return [decode(v) for v in value] if isinstance(value, list) else value

module = import_module("benchmarks." + sys.argv[1])
results = [getattr(module, name)(*decode(args)) for name, *args in json.loads(sys.argv[2])]
print(json.dumps(results, default=str))
"""


def call(module: str, *calls: tuple, env: dict[str, str] | None = None) -> tuple[list, str]:
    """Call functions of ``benchmarks.<module>`` in a fresh interpreter at the repository root, in order:
    ``calls`` are ``(name, *args)``, a :class:`~pathlib.Path` argument arrives as one. Returns their results (through
    JSON: tuples become lists, paths text) and what the calls printed."""

    def encode(value: object) -> object:
        if isinstance(value, Path):
            return {"__path__": str(value)}
        return [encode(v) for v in value] if isinstance(value, list | tuple) else value

    result = run_code(CALL, module, json.dumps([[name, *encode(args)] for name, *args in calls]), env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    *printed, last = result.stdout.splitlines()
    return json.loads(last), "\n".join(printed)


def write_cell(out: Path, record: dict, tier: str | None = None) -> Path:
    """A cell's record where the comparison stores it, ``<out>/cells/<tier>/<dataset>/<model>[-pretrained]/seed<seed>
    .json`` (the layout the committed records keep); ``tier`` defaults to the record's."""
    model = record["model"] + ("-pretrained" if record.get("pretrained") else "")
    path = out / "cells" / (tier or record["tier"]) / record["dataset"] / model / f"seed{record['seed']}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=1))
    return path
