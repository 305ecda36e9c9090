#!/usr/bin/env bash
# The paper's whole study on the full CIFAR-10: 2 schedules x 2 methods x 3 learning rates x 12 amounts,
# 10 fine-tuning epochs per step, one baseline per seed; then the figures and the claim-by-claim report
# (experiments/report.sh).
# Resumable: rerun it after an interruption and it continues where it stopped.
#
#   MINICNN_DATA=path/to/cifar-10-binary.tar.gz experiments/paper_sweep.sh [--seeds 0,1,2,3] [--jobs 2]
set -euo pipefail
cd "$(dirname "$0")/.."
out=experiments/results/paper
minicnn sweep --out "$out" --seeds 0,1,2 --jobs 2 "$@"
experiments/report.sh
