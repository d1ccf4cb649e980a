#!/usr/bin/env bash
# Wall time and metrics of the README's main job (train + test on the embedded data), with the machine and date.
#   bash benchmarks/quickstart_time.sh        (inside the project's virtual environment, from the repository root)
set -euo pipefail
cd "$(dirname "$0")/.."
python -c "import sys; sys.path.insert(0, 'benchmarks'); from machine import describe; import datetime; print(datetime.date.today(), describe())"
start=$(date +%s)
PYTHONWARNINGS=ignore anomalib train --config configs/model/ssim_ae.yaml --config configs/data/quickstart.yaml 2>&1 \
  | grep -E "│|anomalib_ssimae"
echo "wall time: $(( $(date +%s) - start )) s"
