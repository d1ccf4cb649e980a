#!/usr/bin/env bash
# GPU check, one command on the lent device machine (benchmarks/gpu/README.md): installs the carried wheels (.whl/),
# runs the GPU-relevant tests, then the README's main job with --trainer.accelerator gpu. Logs go to $OUT.
# Environment: OUT (default /tmp/gpukit-out), PYTHON (python3), SITE (/tmp/site), WHEELS (.whl),
# BUDGET_S (480: the main job's trainer.max_time is cut to what is left of it after the tests),
# STEPS ("install info pytest main": a subset runs only those steps).
set -euo pipefail

cd "$(dirname "$0")/../.."  # the repository root
: "${OUT:=/tmp/gpukit-out}"
: "${PYTHON:=python3}"
: "${SITE:=/tmp/site}"
: "${WHEELS:=.whl}"
: "${BUDGET_S:=480}"
: "${STEPS:=install info pytest main}"
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
start=$SECONDS
has() { [[ " $STEPS " == *" $1 "* ]]; }
stamp() { echo "=== [$((SECONDS - start)) s] $*"; }

if has install; then
    stamp "install $(ls "$WHEELS"/*.whl | wc -l) wheels from $WHEELS into $SITE"
    "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" "$WHEELS"/*.whl
fi
export PYTHONPATH="$SITE:$PWD${PYTHONPATH:+:$PYTHONPATH}"

if has info; then
    stamp "machine"
    if command -v nvidia-smi >/dev/null 2>&1; then nvidia-smi || echo "nvidia-smi failed (rc $?)"; else echo "nvidia-smi: not found"; fi
    nproc || true
    "$PYTHON" - <<'EOF' 2>&1 | tee "$OUT/versions.log" || echo "version check failed"
import importlib.metadata as md, sys
print("python", sys.version.split()[0], sys.executable)
for name in ("torch", "torchvision", "lightning", "pytorch-lightning", "torchmetrics", "numpy", "scipy", "scikit-learn",
             "scikit-image", "tifffile", "einops", "timm", "tensorboard", "pytest", "anomalib", "FrEIA", "jsonargparse",
             "docstring-parser", "typeshed-client", "kornia", "kornia-rs", "omegaconf", "rich-argparse", "platformdirs"):
    try:
        print(f"  {name} {md.version(name)}")
    except md.PackageNotFoundError:
        print(f"  {name} MISSING")
import torch
print("torch", torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available(),
      torch.cuda.get_device_name(0) if torch.cuda.is_available() else "-")
import anomalib, anomalib.cli.cli, anomalib.engine, anomalib_ssimae
print("anomalib from", anomalib.__file__, "| anomalib_ssimae", anomalib_ssimae.__version__, "from", anomalib_ssimae.__file__)
EOF
fi

rc_pytest=0
if has pytest; then
    stamp "pytest"
    t0=$SECONDS
    set +e
    "$PYTHON" -m pytest -q tests/test_gpu.py tests/test_training_helpers.py tests/test_resume.py -rs --durations=15 \
        2>&1 | tee "$OUT/pytest.log"
    rc_pytest=${PIPESTATUS[0]}
    set -e
    echo "pytest: rc $rc_pytest, wall $((SECONDS - t0)) s" | tee -a "$OUT/pytest.log"
fi

rc_main=0
if has main; then
    # The README's main job; its config caps training at 7 minutes (trainer.max_time). Cut that cap to what is
    # left of BUDGET_S (less 60 s for the test phase after training), so that the logs come back in time.
    left=$((BUDGET_S - (SECONDS - start) - 60))
    cap=$((left < 420 ? left : 420))
    if ((cap < 30)); then
        echo "main job skipped: only $left s left of BUDGET_S=$BUDGET_S" | tee "$OUT/main_job.log"
        rc_main=1
    else
        max_time=$(printf "00:00:%02d:%02d" $((cap / 60)) $((cap % 60)))
        stamp "main job (trainer.max_time $max_time)"
        t0=$SECONDS
        set +e
        COLUMNS=200 "$PYTHON" "$SITE/bin/anomalib" train --config configs/model/ssim_ae.yaml \
            --config configs/data/quickstart.yaml --trainer.accelerator gpu --trainer.max_time "$max_time" \
            2>&1 | tee "$OUT/main_job.log"
        rc_main=${PIPESTATUS[0]}
        set -e
        echo "main job: rc $rc_main, wall $((SECONDS - t0)) s, max_time $max_time" | tee -a "$OUT/main_job.log"
        find results -path '*SsimAe*' -type f 2>/dev/null | sort | head -100 > "$OUT/main_job_files.txt" || true
    fi
fi

stamp "done: pytest rc $rc_pytest, main job rc $rc_main"
((rc_pytest == 0 && rc_main == 0))
