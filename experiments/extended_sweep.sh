#!/usr/bin/env bash
# Beyond the paper, on the full CIFAR-10: the paper's model and baselines, fine-tuned at lr 0.01 for 10
# epochs per step, with criteria magnitude / random / gradmag x schedules oneshot / iterative / agp / lth
# (lth rewinding to the initial weights) x the paper's 12 amounts x unstructured and structured pruning
# x seeds 0, 1, 2; then each layer's sensitivity (seed 0's baseline, unstructured magnitude, no
# fine-tuning), and the figures and the report of this study merged with the paper's (experiments/report.sh).
# Resumable: rerun it after an interruption and it continues where it stopped; more --seeds extend it.
#
#   MINICNN_DATA=path/to/cifar-10-binary.tar.gz experiments/extended_sweep.sh [--seeds 0,1,2,3] [--jobs 2]
set -euo pipefail
cd "$(dirname "$0")/.."
out=experiments/results/extended
minicnn sweep --out "$out" --schedules oneshot,iterative,agp,lth --methods unstructured,structured \
    --criteria magnitude,random,gradmag --lrs 0.01 --seeds 0,1,2 --jobs 2 "$@"
minicnn sensitivity "$out/baselines/seed0.h5" --out "$out/sensitivity"
experiments/report.sh
