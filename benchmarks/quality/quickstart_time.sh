#!/usr/bin/env bash
# Wall time and metrics of the README's main job (train + test on the embedded data), with the machine and date.
#   bash benchmarks/quality/quickstart_time.sh [ARGS]  (inside the project's virtual environment, from the repository root)
# ARGS go to anomalib train, e.g. --model.init_args.train_precision 32-true (a CPU without bf16 units trains so).
set -euo pipefail
cd "$(dirname "$0")/../.."
python -c "import datetime; from benchmarks.machine import describe; print(datetime.date.today(), describe())"
echo "args: $*"
start=$(date +%s)
PYTHONWARNINGS=ignore anomalib train --config configs/model/ssim_ae.yaml --config configs/data/quickstart.yaml "$@" 2>&1 \
  | grep -E "│|anomalib_ssimae"
echo "wall time: $(( $(date +%s) - start )) s"
