#!/usr/bin/env bash
# Rebuild reports/digits/: the offline digits default (fair protocol, all defaults) over 5 seeds, then the report.
# Usage (from the repository root): bash reports/make_digits_report.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PY=$(realpath -s "${PY:-.venv/bin/python}")  # -s: keep the venv symlink
OUT=${OUT:-reports/digits}
# Timed runs hold one lock shared with the benchmarks, so no two timed jobs overlap on the machine.
LOCK=${HQCBENCH_TIMING_LOCK:-${XDG_CACHE_HOME:-$HOME/.cache}/hqcbench/timing.lock}
mkdir -p "$(dirname "$LOCK")"
mkdir -p "$OUT"
# A store of its own, so the report reads only these runs (mlflow.db and the ./mlruns artifacts are git-ignored).
export MLFLOW_TRACKING_URI=${MLFLOW_TRACKING_URI:-sqlite:///$(realpath -m "$OUT")/mlflow.db}
export MLFLOW_EXPERIMENT_NAME=digits MLFLOW_DISABLE_TELEMETRY=true
(cd "$OUT" && flock "$LOCK" "$PY" -m hqcbench run --seeds 0,1,2,3,4)  # timed: serialised
"$PY" -m hqcbench report --experiment digits --out "$OUT" --rebuild "bash reports/make_digits_report.sh" \
  --note "Timings were taken on the shared 2-core dev machine, no GPU (timed runs serialised with flock "$LOCK"; other work may have run beside them)."
