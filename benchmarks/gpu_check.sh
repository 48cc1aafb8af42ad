#!/usr/bin/env bash
# The GPU check: one command on a CUDA machine, a few minutes after ./install.sh.
#
#   benchmarks/gpu_check.sh [DATA_DIR]        # DATA_DIR holds MNIST/raw (default: $HQCBENCH_DATA_DIR)
#
# 1. the CUDA tests (pytest -m cuda) with skips turned into failures (HQCBENCH_REQUIRE_CUDA=1);
# 2. the quantum-layer benchmark on CUDA at 4-20 qubits (fused vs TorchQuantum);
# 3. one MNIST training epoch of every arm on CUDA, under both protocols;
# and writes everything to benchmarks/results/gpu_check-<gpu>-torch<version>.md.
# Without a CUDA device it exits 2 with "no CUDA device" (a CPU test checks that), before any work.
# Each step's own exit status is kept; the script exits 1 if any step failed.
set -uo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python}

if ! "$PYTHON" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 3)' 2>/dev/null; then
  echo "gpu_check: no CUDA device (torch.cuda.is_available() is False); nothing to check on this machine" >&2
  exit 2
fi

DATA_DIR=${1:-${HQCBENCH_DATA_DIR:-}}
GPU=$("$PYTHON" -c 'import torch; print(torch.cuda.get_device_name(0))')
SLUG=$("$PYTHON" -c 'import re, sys, torch; n = torch.cuda.get_device_name(0); print(re.sub(r"[^a-z0-9]+", "-", n.lower()).strip("-") + "-torch" + torch.__version__.split("+")[0])')
OUT="benchmarks/results/gpu_check-${SLUG}.md"
mkdir -p benchmarks/results
failed=0

section() { printf '\n## %s\n\n```\n' "$1" >> "$OUT"; }
end_section() { printf '```\n' >> "$OUT"; }
step() {  # step TITLE COMMAND...: run, tee into the results file, remember a failure
  local title=$1; shift
  echo "== gpu_check: $title"
  section "$title"
  local start=$SECONDS
  "$@" 2>&1 | tee -a "$OUT"
  local rc=${PIPESTATUS[0]}
  end_section
  printf '\nexit status %s, %s s\n' "$rc" "$(( SECONDS - start ))" >> "$OUT"
  [ "$rc" -eq 0 ] || failed=1
}

{
  echo "# GPU check: $GPU"
  echo
  echo "Date: $(date -u +%Y-%m-%d), $("$PYTHON" -c 'import torch; print("torch", torch.__version__, "CUDA", torch.version.cuda)')."
  echo "Command: \`benchmarks/gpu_check.sh\`."
} > "$OUT"

step "CUDA tests (skips fail)" env HQCBENCH_REQUIRE_CUDA=1 "$PYTHON" -m pytest -q -m cuda -p no:cacheprovider tests
step "quantum layer on CUDA, 4-20 qubits" "$PYTHON" benchmarks/quantum_layer.py --device cuda \
  --qubits 4 8 12 16 20 --depths 2 6 --batches 32 256 --engines fused tq_dynamic \
  --budget-s 2 --min-rounds 2 --no-memory --no-save --note "gpu_check on $GPU"
if [ -n "$DATA_DIR" ] && [ -d "$DATA_DIR/MNIST" ]; then
  step "one MNIST epoch per arm on CUDA" "$PYTHON" benchmarks/epoch_time.py --device cuda --epochs 1 \
    --data-dir "$DATA_DIR" --no-save
else
  echo "== gpu_check: MNIST epoch skipped: no MNIST/ under DATA_DIR ('${DATA_DIR}'); pass the data folder as the first argument"
  printf '\n## one MNIST epoch per arm on CUDA\n\nnot run: no MNIST/ under the data folder given\n' >> "$OUT"
  failed=1
fi

echo "gpu_check: results in $OUT"
exit "$failed"
