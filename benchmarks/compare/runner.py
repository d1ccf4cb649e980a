"""The comparison's runner: every cell of a grid in a process of its own (``job.py``); finished cells are kept, so an
interrupted grid resumes, and every failure is listed. ``run.py`` is its command line."""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.compare.cells import (
    GRIDS,
    OURS,
    PEERS,
    REPO,
    budget,
    cell_path,
    cell_tier,
    provenance,
    read_cell,
    reference_steps,
    set_aside,
    siblings,
    starved,
    trains,
    write_json,
)

JOB = Path(__file__).resolve().with_name("job.py")  # one cell in its own process


def run_child(command: list[str], log, timeout: float) -> int | str:
    """Run a cell's process; if this runner is stopped (SIGTERM, Ctrl-C) or the cell overruns, the cell goes too, so
    a restarted grid never trains a second copy of it beside the first."""

    def stop(signum, frame):
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, stop)
    child = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    try:
        return child.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        return "timeout"
    finally:
        signal.signal(signal.SIGTERM, previous)
        if child.poll() is None:
            child.terminate()
            try:
                child.wait(timeout=30)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()


def run_grid(args: argparse.Namespace) -> int:
    grid = GRIDS[args.grid]
    models = args.models or grid["models"]
    datasets = args.datasets or grid["datasets"]
    seeds = args.seeds or grid["seeds"]
    missing = [d for d in datasets if not (args.data_root / d).is_dir()]
    if missing:  # one clear error, not a failed process per cell
        print(f"--data-root {args.data_root} lacks {', '.join(missing)} (MVTec AD layout: <root>/<dataset>/train/good)")
        return 2
    configs = [REPO / "configs/data" / f"{d}.yaml" for d in datasets]
    unconfigured = [str(c.relative_to(REPO)) for c in configs if not c.is_file()] if set(models) & set(OURS) else []
    if unconfigured:  # our variants take image size, channels and loss from the dataset's config
        print(f"our variants need a data config per dataset: {', '.join(unconfigured)} missing (copy one of "
              "configs/data/*.yaml and set image_size, in_channels and category)")  # fmt: skip
        return 2
    cells = [(d, m, s) for d in datasets for m in models for s in seeds]
    if args.match_steps:  # one clear error before anything runs, not a failed cell per seed
        paths = [cell_path(args.out, args.tier, d, m, s, bool(args.hf_cache) and m in PEERS)
                 for d, m, s in cells if trains(m)]  # fmt: skip
        records = {p: read_cell(p) for p in paths if p.exists()}
        unfinished = {p.parent for p in paths if p not in records or records[p]["status"] != "ok"
                      or (args.rerun_starved and starved(records[p], siblings(p.parent)))}  # fmt: skip
        lacking = sorted(str(f.relative_to(args.out / "cells" / args.tier)) for f in unfinished
                         if reference_steps(f) is None)  # fmt: skip
        if lacking:
            print(f"--match-steps: no wall-clock cell in {args.out / 'cells' / args.tier} to take the steps from for "
                  f"{', '.join(lacking)}; run those without --match-steps first")  # fmt: skip
            return 2
    failed = []
    for index, (dataset, model, seed) in enumerate(cells, 1):
        pretrained = bool(args.hf_cache) and model in PEERS
        tier = cell_tier(model, args.tier)
        path = cell_path(args.out, tier, dataset, model, seed, pretrained)
        name = (f"{model} (pretrained)" if pretrained else model) + (f" ({tier} tier)" if tier != args.tier else "")
        if path.exists():
            record = read_cell(path)
            stale = args.rerun_starved and starved(record, siblings(path.parent))
            if not stale and (record["status"] == "ok" or not args.rerun_failed):
                elsewhere = record.get("data_root") not in (None, str(args.data_root.resolve()))
                note = f" (it ran on {record['data_root']}: another --out for other data)" if elsewhere else ""
                print(
                    f"[{index}/{len(cells)}] {dataset} {name} seed {seed}: {record['status']}, kept{note}", flush=True
                )
                if record["status"] != "ok":
                    failed.append(f"{dataset} {name} seed {seed}: {record.get('error', '?')} (kept; --rerun-failed)")
                continue
            how = f"starved ({record['steps']} steps)" if stale else record["status"]
            kept = set_aside(path, "starved" if stale else "failed")
            print(f"[{index}/{len(cells)}] {dataset} {name} seed {seed}: {how}, kept as {kept.name}", flush=True)
        print(f"[{index}/{len(cells)}] {dataset} {name} seed {seed} ...", flush=True)
        log = path.with_suffix(".log")
        log.parent.mkdir(parents=True, exist_ok=True)
        command = [sys.executable, str(JOB), model, dataset, str(seed), tier]
        command += ["--data-root", str(args.data_root), "--out", str(args.out)]
        command += ["--hf-cache", str(args.hf_cache)] if args.hf_cache else []
        matched = args.match_steps and trains(model)
        command += ["--match-steps"] if matched else []
        limit = budget(tier) * (4 if matched else 1) + 1800  # a slower machine takes longer for the same steps
        start = time.time()
        with log.open("w") as handle:
            code = run_child(command, handle, limit)
        if not path.exists():  # the cell died before writing its record
            tail = log.read_text(errors="replace").strip().splitlines()[-15:]
            last = next(
                (line for line in reversed(tail) if "Error" in line or "error" in line), tail[-1] if tail else ""
            )
            if code == "timeout":
                how = f"timed out after {limit} s"
            else:
                how = f"killed by signal {-code}" if code < 0 else f"exit code {code}"
            error = f"{how}; log {log}: {last.strip() or 'no output'}"
            write_json(path, {"model": model, "dataset": dataset, "seed": seed, "tier": tier,
                              "pretrained": pretrained, "status": "failed", "error": error, "exit_code": code,
                              "log": log.name, **provenance()})  # fmt: skip
            failed.append(f"{dataset} {name} seed {seed}: {error}")
        record = read_cell(path)
        if record["status"] != "ok" and not any(line.startswith(f"{dataset} {name} seed {seed}:") for line in failed):
            failed.append(f"{dataset} {name} seed {seed}: {record['error']}")
        print(f"    {record['status']} in {time.time() - start:.0f} s", flush=True)
    for line in failed:
        print(f"FAILED {line}")
    return 1 if failed else 0
