#!/usr/bin/env bash
# The figures and the claim-by-claim report of every committed study: the paper's grid, and the extended
# study beside it when it has results (then the report gains its "Beyond the paper" section).
# Run by paper_sweep.sh and extended_sweep.sh after their sweeps; rerun it alone to redraw.
set -euo pipefail
cd "$(dirname "$0")/.."
results=(experiments/results/paper)
if [ -f experiments/results/extended/results.csv ]; then
    results+=(experiments/results/extended)
fi
minicnn plot "${results[@]}" --out plots/paper
minicnn report "${results[@]}" --out experiments/results/REPORT.md --figures plots/paper
