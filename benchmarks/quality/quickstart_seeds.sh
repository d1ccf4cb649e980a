#!/usr/bin/env bash
# The README's main job three times, with model seeds 42, 43, 44 (same data split), each timed; then a table of the
# test metrics and wall times in benchmarks/results/quickstart_seeds.md, stamped with machine, date and commit.
#   bash benchmarks/quality/quickstart_seeds.sh            (run from the repository root, in the activated environment)
set -euo pipefail
cd "$(dirname "$0")/../.."
out=results/quickstart_seeds/$(date +%Y%m%d-%H%M%S)
for seed in 42 43 44; do
  mkdir -p "$out/seed$seed"
  start=$(date +%s)
  anomalib train --config configs/model/ssim_ae.yaml --config configs/data/quickstart.yaml \
    --model.init_args.seed "$seed" --default_root_dir "$out/seed$seed" > "$out/seed$seed/stdout.log" 2>&1
  echo "$(( $(date +%s) - start ))" > "$out/seed$seed/wall_s"
done
python benchmarks/quality/quickstart_table.py "$out"
