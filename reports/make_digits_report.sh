#!/usr/bin/env bash
# Rebuild reports/digits/: the offline digits default (fair protocol, all defaults) over 5 seeds, then the report.
# Usage (from the repository root): bash reports/make_digits_report.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PY=$(realpath -s "${PY:-.venv/bin/python}")  # -s: keep the venv symlink
OUT=${OUT:-reports/digits}
mkdir -p "$OUT"
# A store of its own, so the report reads only these runs (mlflow.db and the ./mlruns artifacts are git-ignored).
export MLFLOW_TRACKING_URI=${MLFLOW_TRACKING_URI:-sqlite:///$(realpath -m "$OUT")/mlflow.db}
export MLFLOW_EXPERIMENT_NAME=digits MLFLOW_DISABLE_TELEMETRY=true
(cd "$OUT" && flock /tmp/hqcbench-bench.lock "$PY" -m hqcbench run --seeds 0,1,2,3,4)  # timed: serialised
"$PY" -m hqcbench report --experiment digits --out "$OUT" --rebuild "bash reports/make_digits_report.sh" \
  --note "Timings were taken on the shared 2-core dev machine, no GPU (timed runs serialised with flock /tmp/hqcbench-bench.lock; other work may have run beside them)."
