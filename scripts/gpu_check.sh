#!/usr/bin/env bash
# The GPU check in one command: the tiny pipeline on DEVICE against the CPU, and one timed training step of every
# stage at the paper's sizes (nbs/12d_gpu_check.ipynb). Exit code 0: passed; 1: a row differs or a step failed;
# 2: bad input (e.g. a device this machine lacks).
# Usage: scripts/gpu_check.sh [DEVICE (default cuda)] [OUT (default runs/gpu_check)]
set -euo pipefail
python -m hyperclip_nb gpu-check --device "${1:-cuda}" --out "${2:-runs/gpu_check}"
