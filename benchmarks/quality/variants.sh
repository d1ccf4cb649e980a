#!/usr/bin/env bash
# The four variants with the same CPU budget per run (quality/README.md, "The four variants"): 7 minutes of fit on one pinned
# core each, short epochs (2560 crops) so the stop lands close to the budget, then anomalib's test. Appends to
# benchmarks/results/anomalib_cli.md. About 2 hours for three datasets on a 2-core machine (the other core stays free).
#   bash benchmarks/quality/variants.sh [dataset ...]   (default: mvtec_ad_grid_mini magnetic_tile mvtec3d_tire)
set -euo pipefail
cd "$(dirname "$0")/../.."
datasets=("${@:-mvtec_ad_grid_mini magnetic_tile mvtec3d_tire}")
for dataset in ${datasets[@]}; do
  for model in ssim_ae ssim_ae_extended ssim_dae ssim_dae_extended; do
    OMP_NUM_THREADS=1 taskset -c 1 python benchmarks/quality/anomalib_cli.py "$dataset" --model "$model" --epochs 1000 \
      --max-time 7 --crops-per-epoch 2560
  done
done
